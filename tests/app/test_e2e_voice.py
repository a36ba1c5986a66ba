"""End to end as a user does it: a real window under Xvfb, the hotkey held with xdotool while an
espeak-ng question plays into a PulseAudio virtual microphone, the tiny model answering, and the
answer's speech arriving at the virtual speaker, earcons on. What the speaker played must be the
answer the engine produced for that turn (``--save-answers``), not just something loud: the two
earcons alone are louder than silence for 0.2 s. Screenshots go to test-artifacts/."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine.bench.pulse import best_correlation
from engine.tiny import write_tiny_set
from tests.engine.audio_fixtures import QUESTION_TEXT, espeak_wav, read_wav
from tests.pulse import PulseServer, pulse_server, require_tools
from tests.xvfb import quit_with_ctrl_q, xvfb_display

__all__ = ["pulse_server", "xvfb_display"]

pytestmark = [pytest.mark.timeout(400), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
RATE_HZ = 16_000
LOUD = 1e-3
RECORDER_DRAIN_S = 0.5  # parecord writes what the monitor delivered a moment ago


def _wait_log(log: Path, pattern: str, proc: subprocess.Popen[bytes], timeout_s: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the app exited with {proc.returncode}"
        if log.exists():
            match = re.search(pattern, log.read_text(encoding="utf-8"))
            if match:
                return match
        time.sleep(0.2)
    tail = log.read_text(encoding="utf-8")[-3000:] if log.exists() else "(no log)"
    raise AssertionError(f"log never matched {pattern!r}; tail:\n{tail}")


def _window(env: dict[str, str], title: str) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = subprocess.run(
            ["xdotool", "search", "--onlyvisible", "--name", title], env=env, capture_output=True, text=True
        )
        if found.returncode == 0 and found.stdout.strip():
            return found.stdout.split()[0]
        time.sleep(0.2)
    raise AssertionError(f"no window {title}")


def _screenshot(env: dict[str, str], name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    subprocess.run(["import", "-window", "root", str(ARTIFACTS / name)], env=env, check=True, timeout=30)


def test_hold_hotkey_ask_and_hear_the_answer(pulse_server: PulseServer, xvfb_display: str, tmp_path: Path) -> None:
    require_tools("paplay", "parecord", "espeak-ng", "sox", "xdotool", "import")
    tiny = write_tiny_set(tmp_path / "models")
    question = espeak_wav(QUESTION_TEXT, tmp_path)
    settings = tmp_path / "settings.json"
    settings.write_text(
        json.dumps({"schema_version": 1, "quant": "fp32", "gpu": "cpu", "max_new_tokens": 40, "earcons": True})
    )
    answers = tmp_path / "answers"
    home = tmp_path / "home"
    env = pulse_server.env()
    env.update(DISPLAY=xvfb_display, QT_QPA_PLATFORM="xcb", OMNITALK_HOME=str(home))
    log = home / "logs" / "omnitalk.log"
    app = subprocess.Popen(
        [sys.executable, "main.py", "--model", str(tiny.omni), "--settings", str(settings)]
        + ["--save-answers", str(answers)],
        cwd=ROOT,
        env=env,
    )
    speaker = None
    try:
        window = _window(env, "^OmniTalk$")
        _wait_log(log, r"Model ready", app, 180)
        speaker = subprocess.Popen(
            [
                "parecord",
                "-d",
                "spk.monitor",
                f"--rate={RATE_HZ}",
                "--channels=1",
                "--file-format=wav",
                str(tmp_path / "speaker.wav"),
            ],
            env=env,
        )
        subprocess.run(["xdotool", "windowfocus", "--sync", window], env=env, check=True)
        time.sleep(0.5)
        subprocess.run(["xdotool", "keydown", "F9"], env=env, check=True)  # hold to talk
        subprocess.run(["paplay", "-d", "micfeed", str(question)], env=env, check=True, timeout=30)
        time.sleep(0.3)
        subprocess.run(["xdotool", "keyup", "F9"], env=env, check=True)
        done = _wait_log(log, r"Turn 1 done: (\{.*\})", app, 60)  # logged once the answer was played
        shown = _wait_log(log, r"Transcript turn 1 shows (\d+) characters", app, 10)
        _wait_log(log, r"Saved turn 1's answer audio", app, 10)
        _screenshot(env, "e2e_main_window_answer.png")
        time.sleep(RECORDER_DRAIN_S)
        speaker.send_signal(signal.SIGINT)
        speaker.wait(timeout=10)
        heard, _ = read_wav(tmp_path / "speaker.wav")
        answer, rate = read_wav(answers / "turn-1-answer.wav")

        assert int(shown.group(1)) > 0  # streamed text reached the transcript
        metrics = done.group(1)
        assert "'n_tokens': 0" not in metrics and "'first_audio_ms': None" not in metrics
        # The engine's answer is speech, not silence...
        assert rate == RATE_HZ and answer.size > RATE_HZ // 2 and np.sqrt(np.mean(answer**2)) > 0.01
        # ...and it is what the speaker played (earcons included in the recording), all of it.
        correlation, lag = best_correlation(answer[:RATE_HZ], heard)
        assert correlation > 0.9
        played = heard[lag:]
        loud_heard = np.flatnonzero(np.abs(played) > LOUD)
        loud_answer = np.flatnonzero(np.abs(answer) > LOUD)
        assert (loud_heard[-1] - loud_answer[-1]) / RATE_HZ == pytest.approx(0.0, abs=0.15)  # no gap, no cut

        subprocess.run(["xdotool", "key", "ctrl+comma"], env=env, check=True)  # File → Settings…
        _window(env, "^OmniTalk settings$")
        time.sleep(0.5)
        _screenshot(env, "e2e_settings_pane.png")
        subprocess.run(["xdotool", "key", "Escape"], env=env, check=True)
        time.sleep(0.5)
        assert quit_with_ctrl_q(env, window, app) == 0
    finally:
        if speaker is not None and speaker.poll() is None:
            speaker.kill()
        if app.poll() is None:
            app.kill()
