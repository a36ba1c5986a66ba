"""Run the vocoder's ONNX export in a child process, so the app stays responsive while it runs.

``torch.onnx.export`` spends seconds in tracing and graph passes that hold the GIL for hundreds of
milliseconds at a time; run in the engine thread, that froze the UI thread for up to 0.8 s during
the first model load. In a child process the GIL is not shared.

Protocol: the child (``python -m engine.vocoder.export_process --vocoder DIR --out DIR --opset N``,
started through ``engine.subprocess_entry`` so it works from a frozen build too)
writes one line per event on stdout, each ``@omnitalk-export `` followed by JSON:
``{"progress": f, "message": m}``, then ``{"done": true}`` or
``{"error": {kind, message, path, fix, reason, facts}}``.
Anything else it prints (torch warnings) is logged at debug level and its tail is quoted if the
child dies without reporting. The child exits when its stdin closes, so it never outlives the app.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

from engine.errors import EngineError, NotEnoughMemory, error_from_kind
from engine.subprocess_entry import child_command, child_env
from engine.vocoder.defaults import DEFAULT_OPSET
from engine.vocoder.onnx_export import (
    DURATIONS_FILENAME,
    GENERATOR_FILENAME,
    OnnxExport,
    ProgressCallback,
    export_vocoder_onnx,
    read_manifest,
)

logger = logging.getLogger(__name__)

PREFIX = "@omnitalk-export "
_TAIL_LINES = 20
_EXIT_GRACE_S = 30.0


class ExportFailed(EngineError):
    """The export child process died without reporting an error (crash, killed, out of memory)."""


def export_in_subprocess(
    vocoder_dir: Path,
    out_dir: Path,
    *,
    opset: int = DEFAULT_OPSET,
    on_progress: ProgressCallback | None = None,
    fingerprint: dict[str, object] | None = None,
    python: str | None = None,
) -> OnnxExport:
    """Export ``vocoder_dir`` into ``out_dir`` (as ``export_vocoder_onnx``) in a child Python process.

    ``fingerprint`` is ``source_fingerprint(vocoder_dir, opset)`` if the caller already has it (the
    cache check does): the child then writes it to the manifest instead of hashing the files again.
    Progress is relayed to ``on_progress`` from this thread; the child's EngineErrors are raised
    here with their kind (DiskFull, ModelCorrupt, ...); a crash raises ExportFailed.
    """
    args = ["--vocoder", str(Path(vocoder_dir).resolve()), "--out", str(Path(out_dir).resolve()), "--opset", str(opset)]
    if fingerprint is not None:
        args += ["--fingerprint", json.dumps(fingerprint)]
    command = child_command("engine.vocoder.export_process", args, python=python)
    flags = subprocess.CREATE_NO_WINDOW if sys.platform == "win32" else 0  # type: ignore[attr-defined]
    logger.info("exporting the vocoder to ONNX in a child process: %s", command)
    try:
        child = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=child_env(), creationflags=flags, text=True, encoding="utf-8", errors="replace",
        )
    except OSError as exc:
        raise ExportFailed(
            f"Could not start the vocoder's ONNX export ({exc}).", fix="Reinstall OmniTalk with its launcher."
        ) from exc
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    reported: EngineError | None = None
    done = False
    assert child.stdout is not None
    try:
        for line in child.stdout:
            line = line.rstrip("\n")
            if not line.startswith(PREFIX):
                logger.debug("vocoder export: %s", line)
                tail.append(line)
                continue
            message = json.loads(line[len(PREFIX):])
            if "progress" in message and on_progress is not None:
                on_progress(float(message["progress"]), str(message["message"]))
            elif "error" in message:
                err = message["error"]
                reported = error_from_kind(
                    err["kind"],
                    err["message"],
                    path=err.get("path"),
                    fix=err.get("fix"),
                    reason=err.get("reason"),
                    facts=err.get("facts"),
                )
            elif message.get("done"):
                done = True
    finally:
        if child.stdin is not None:
            child.stdin.close()  # the child's cue to exit if we stopped reading early
        try:
            code = child.wait(timeout=_EXIT_GRACE_S)
        except subprocess.TimeoutExpired:
            child.kill()
            code = child.wait()
    if reported is not None:
        raise reported
    manifest = read_manifest(out_dir)
    if code != 0 or not done or manifest is None:
        details = " | ".join(tail) or "no output"
        raise ExportFailed(
            f"The vocoder's ONNX export stopped unexpectedly (exit code {code}): {details}",
            path=vocoder_dir,
            fix="Check the free memory and disk space, then load the model again; the log has the details.",
        )
    out_dir = Path(out_dir)
    return OnnxExport(out_dir, out_dir / DURATIONS_FILENAME, out_dir / GENERATOR_FILENAME, manifest)


# ----------------------------------------------------------------------------------------- child


def _send(message: dict[str, object]) -> None:
    sys.stdout.write(PREFIX + json.dumps(message) + "\n")
    sys.stdout.flush()


def _exit_when_parent_goes() -> None:
    try:
        sys.stdin.read()
    finally:
        os._exit(3)


def _send_error(error: EngineError) -> None:
    path = None if error.path is None else str(error.path)
    reason = None if error.reason is None else error.reason.value
    _send(
        {
            "error": {
                "kind": error.kind,
                "message": error.message,
                "path": path,
                "fix": error.fix,
                "reason": reason,
                "facts": dict(error.facts),
            }
        }
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.vocoder.export_process")
    parser.add_argument("--vocoder", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument("--fingerprint", type=json.loads, default=None, help="the parent's source_fingerprint, JSON")
    args = parser.parse_args(argv)
    threading.Thread(target=_exit_when_parent_goes, name="parent-watch", daemon=True).start()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        export_vocoder_onnx(
            args.vocoder, args.out, opset=args.opset, fingerprint=args.fingerprint,
            on_progress=lambda fraction, message: _send({"progress": fraction, "message": message}),
        )
    except EngineError as exc:
        _send_error(exc)
        return 1
    except MemoryError:
        _send_error(NotEnoughMemory(
            "Not enough memory to export the vocoder to ONNX.", fix="Close other programs and load the model again."
        ))
        return 1
    _send({"done": True})
    return 0

if __name__ == "__main__":
    sys.exit(main())
