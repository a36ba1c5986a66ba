"""Recording questions in the fine-tune wizard through the real engine and a PulseAudio virtual
microphone: espeak-ng speaks two questions into it while "Hold to record" is held; the clips are
saved as spoken pairs, sound like what was played, and the engine's check counts them as spoken."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from PySide6.QtWidgets import QWizard
from pytestqt.qtbot import QtBot

from app.bridge import EngineBridge
from app.finetune_wizard import FinetuneWizard
from app.finetune_wizard.draft import Draft, Pair, read_recording
from app.finetune_wizard.wizard import PAGE_CHECK
from engine.bench.pulse import best_correlation
from engine.events import EngineState
from engine.tiny import write_tiny_set
from tests.engine.audio_fixtures import espeak_wav, read_wav
from tests.pulse import PulseServer, pulse_server, require_tools

__all__ = ["pulse_server"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "wizard"
SPOKEN = [Pair("What is the capital of France?", "Paris."), Pair("How many legs does a spider have?", "Eight.")]
TAIL_S = 0.3  # the tail of the question reaches the recorder after paplay returns
TIMEOUT_MS = 120_000


def test_record_two_questions_with_the_virtual_microphone(
    qtbot: QtBot, pulse_server: PulseServer, tmp_path: Path
) -> None:
    require_tools("paplay", "espeak-ng", "sox")
    tiny = write_tiny_set(tmp_path / "tiny", vocoder=False)
    bridge = EngineBridge()  # the real engine; no model loaded: RecordClip does not need one
    try:
        draft = Draft(tmp_path / "draft")
        wizard = FinetuneWizard(tiny.omni, bridge=bridge, draft=draft, device="cpu", ask=False)
        qtbot.addWidget(wizard)
        wizard.show()
        page = wizard.data_page
        page.set_pairs(SPOKEN)
        sources = []
        for row, pair in enumerate(SPOKEN):
            (tmp_path / f"q{row}").mkdir()
            spoken = espeak_wav(pair.question, tmp_path / f"q{row}")
            sources.append(spoken)
            page.table.selectRow(row)
            with qtbot.waitSignal(
                bridge.stateChanged, check_params_cb=lambda e: e.state is EngineState.LISTENING, timeout=TIMEOUT_MS
            ):
                page.record_button.pressed.emit()  # the button held down
            assert "Recording… say" in page.record_label.text()
            subprocess.run(["paplay", "-d", "micfeed", str(spoken)], env=pulse_server.env(), check=True, timeout=30)
            qtbot.wait(int(TAIL_S * 1000))
            with qtbot.waitSignal(bridge.clipRecorded, timeout=TIMEOUT_MS):
                page.record_button.released.emit()
            qtbot.waitUntil(lambda: "Saved" in page.record_label.text())
        shot = ARTIFACTS / "1-data-recorded-pulse.png"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        wizard.grab().save(str(shot))

        recordings = {r.question: r for r in draft.recordings()}
        assert set(recordings) == {p.question for p in SPOKEN}
        for row, pair in enumerate(SPOKEN):
            source, rate = read_wav(sources[row])
            assert rate == 16_000
            heard = read_recording(recordings[pair.question].wav)
            assert heard.size / 16_000 == pytest.approx(source.size / 16_000, abs=1.0)
            correlation, _lag = best_correlation(source, heard)
            assert correlation > 0.8, f"the recording of {pair.question!r} does not sound like what was played"
            assert recordings[pair.question].answer == pair.answer

        # The engine's check reads them as spoken pairs (next to the typed ones).
        wizard.next()
        assert wizard.currentId() == PAGE_CHECK
        qtbot.waitUntil(wizard.check_page.isComplete, timeout=TIMEOUT_MS)
        report = wizard.state.report
        assert report is not None and (report["spoken"], report["typed"]) == (2, 2)
        assert wizard.button(QWizard.WizardButton.NextButton).isEnabled()
    finally:
        bridge.shutdown()
