"""UI responsiveness while the engine works: the largest gap of a 10 ms timer on the UI thread.

    .venv/bin/python bench/bench_ui.py [--size tiny|mid] [--turns 5] [--append]

Runs the real app pieces (EngineBridge -> Engine thread -> LLaMA-Omni random-weight model -> ONNX
vocoder) headless (QT_QPA_PLATFORM=offscreen) and types questions into the real MainWindow, so
every streamed token, audio chunk and state change goes through the queued signals and widgets.
Speech goes to the fake sound device in its clocked mode (``engine.audio.fake_device``: a real-time
speaker with no sound card needed), so the vocoder worker and the player run during every answer, as they
do in the app. Then (``--train-epochs``, 0 skips it) the fine-tune wizard's Train page runs a
training of 4 typed pairs in its subprocess (``python -m engine finetune run``) while its progress
bar and live loss curve update: the subprocess competes for the same cores, as in the app. Target:
largest gap < 50 ms.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PySide6.QtCore import QEventLoop, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from app.bridge import EngineBridge  # noqa: E402
from app.finetune_wizard.draft import Draft, Pair  # noqa: E402
from app.finetune_wizard.state import WizardState  # noqa: E402
from app.finetune_wizard.train_page import TrainPage  # noqa: E402
from app.main_window import MainWindow  # noqa: E402
from app.settings import AppSettings  # noqa: E402
from engine.audio.capture import Recorder  # noqa: E402
from engine.audio.fake_device import FakeSoundDevice  # noqa: E402
from engine.audio.playback import Player  # noqa: E402
from engine.engine import Engine  # noqa: E402
from engine.events import EngineOptions, TurnFinished  # noqa: E402

if TYPE_CHECKING:
    from engine.tiny import TinyPaths  # imports torch: the app imports it in the engine thread, so must we

TIMER_INTERVAL_MS = 10
CHECK_INTERVAL_MS = 50  # how often the driver checks whether a phase is over
TARGET_MAX_GAP_MS = 50.0
QUESTIONS = ("What is the capital of France?", "Tell me a joke about cats.", "How do plants grow?")
RESULTS = Path(__file__).with_name("RESULTS.md")
TRAIN_PAIRS = (
    Pair("What is 2 plus 2?", "Two plus two is four."),
    Pair("Thank you very much.", "You're welcome!"),
    Pair("Which river flows through Paris?", "The river Seine."),
    Pair("Count to three.", "One, two, three."),
)


class GapProbe:
    """Records the time between consecutive ticks of a 10 ms QTimer on the UI thread."""

    def __init__(self) -> None:
        self.timer = QTimer()
        self.timer.setInterval(TIMER_INTERVAL_MS)
        self.timer.timeout.connect(self._tick)
        self.gaps_ms: list[float] = []
        self._last: float | None = None

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.gaps_ms.append((now - self._last) * 1000.0)
        self._last = now

    def start(self) -> None:
        self.gaps_ms.clear()
        self._last = None
        self.timer.start()

    def stop(self) -> list[float]:
        self.timer.stop()
        return list(self.gaps_ms)


def _spin(app: QApplication, seconds: float, until=None) -> None:  # type: ignore[no-untyped-def]
    """Run Qt's event loop (as ``app.exec()`` does in the app, no polling) until ``until()`` or timeout."""
    loop = QEventLoop()
    deadline = time.monotonic() + seconds
    check = QTimer()
    check.setInterval(CHECK_INTERVAL_MS)
    check.timeout.connect(lambda: loop.quit() if time.monotonic() >= deadline or (until and until()) else None)
    check.start()
    loop.exec()
    check.stop()


def _write_model(root: Path, size: str) -> TinyPaths:
    """Write the random-weight set (``engine.bench.sizes``) in a child process, so that (as in the
    app) torch and transformers are first imported by the engine thread during the measured load."""
    from engine.bench.sizes import write_bench_set  # imports torch, but only the child calls it

    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(write_bench_set, size, root).result().paths


def _summary(gaps: list[float]) -> tuple[float, float, float, int]:
    ordered = sorted(gaps)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return max(gaps), p99, statistics.mean(gaps), len(gaps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "mid"), default="tiny")
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--train-epochs", type=int, default=30, help="training phase: passes over 4 pairs (0: skip)")
    parser.add_argument("--append", action="store_true", help="append the table to --results")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results file (default: bench/RESULTS.md)")
    args = parser.parse_args()

    app = QApplication.instance() or QApplication(sys.argv[:1])
    probe = GapProbe()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("OMNITALK_HOME", str(Path(tmp) / "home"))
        tiny = _write_model(Path(tmp) / "model", args.size)
        sound = FakeSoundDevice(clocked=True)
        bridge = EngineBridge(
            lambda on_event: Engine(
                on_event,
                recorder_factory=lambda device, **kw: Recorder(device, backend=sound, **kw),
                player_factory=lambda device: Player(device, backend=sound),
            )
        )
        window = MainWindow(bridge, AppSettings(max_new_tokens=args.max_new_tokens))
        window.show()
        finished: list[TurnFinished] = []
        bridge.turnFinished.connect(finished.append)
        bridge.set_options(EngineOptions(max_new_tokens=args.max_new_tokens, earcons=False))

        probe.start()
        _spin(app, 1.0)
        idle = probe.stop()

        probe.start()
        bridge.load_model(tiny.omni, None, tiny.vocoder, device="cpu", quant="fp32")
        _spin(app, 300, until=lambda: window._model_ready)  # noqa: SLF001
        loading = probe.stop()

        probe.start()
        for i in range(args.turns):
            window.text_input.setText(QUESTIONS[i % len(QUESTIONS)])
            window.send_typed()
            _spin(app, 300, until=lambda n=i: len(finished) > n)
        _spin(app, 0.5)
        turns = probe.stop()

        training: list[float] = []
        trained: list[bool] = []
        steps = 0
        if args.train_epochs:
            state = WizardState(tiny.omni, Draft(Path(tmp) / "draft"), device="cpu")
            state.draft.save_pairs(list(TRAIN_PAIRS))
            state.train_flags = ["--epochs", str(args.train_epochs), "--lr", "1e-2", "--no-eval"]
            state.out = Path(tmp) / "adapter"
            page = TrainPage(state)
            page.trainingFinished.connect(trained.append)
            page.show()
            probe.start()
            page.start(resume=False)
            _spin(app, 900, until=lambda: bool(trained))
            training = probe.stop()
            steps = page.steps_seen
            page.close()
        bridge.shutdown()
        window.close()
        sound.close()

    tokens = sum(f.metrics.n_tokens for f in finished)
    spoken_s = sum(f.metrics.audio_s for f in finished)
    rows = [
        ("idle (1 s)", idle),
        ("model loading", loading),
        (f"{args.turns} typed turns ({tokens} tokens, {spoken_s:.1f} s spoken)", turns),
    ]
    if training:
        outcome = "done" if trained and trained[0] else "FAILED"
        rows.append((f"fine-tuning in its subprocess, Train page live ({steps} steps, {outcome})", training))
    lines = [
        f"### UI responsiveness: {args.size} model, CPU ({datetime.date.today().isoformat()})",
        "",
        f"Command: `.venv/bin/python bench/bench_ui.py --size {args.size} --turns {args.turns} "
        f"--train-epochs {args.train_epochs}`; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f}; Qt offscreen. Gap = time between ticks of a {TIMER_INTERVAL_MS} ms "
        f"UI-thread timer (target: largest < {TARGET_MAX_GAP_MS:.0f} ms).",
        "",
        "| phase | largest gap ms | p99 gap ms | mean gap ms | ticks |",
        "|---|---|---|---|---|",
    ]
    for name, gaps in rows:
        biggest, p99, mean, n = _summary(gaps)
        lines.append(f"| {name} | {biggest:.1f} | {p99:.1f} | {mean:.1f} | {n} |")
    table = "\n".join(lines)
    print(table)
    if args.append:
        with args.results.open("a", encoding="utf-8") as out:
            out.write("\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
