"""The fine-tune wizard with the tiny model, on the CPU, through the real subprocess and engine.

End to end: Settings → Fine-tuning → New fine-tune…, type 4 pairs, check, train (the loss curve
gets points), the results page and its try-it box answer a trained question with the trained
answer, finish with "Use it now", the main window then answers with the adapter, and deleting
the adapter in use switches the engine back to the base model. Also: stop + resume, a bad dataset
shows the check's report with the fix, the draft survives closing the wizard. Screenshots of every
page go to test-artifacts/wizard/.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtWidgets import QMessageBox, QWidget, QWizard
from pytestqt.qtbot import QtBot

from app.application import Controller
from app.bridge import EngineBridge
from app.finetune_wizard import FinetuneWizard
from app.finetune_wizard.draft import Draft, Pair, read_recording
from app.finetune_wizard.texts import BAD_DATA_FIX, RESUME_BUTTON
from app.finetune_wizard.wizard import PAGE_CHECK, PAGE_FINISH, PAGE_OPTIONS, PAGE_RESULTS, PAGE_TRAIN
from app.settings import AppSettings, save
from app.words import FINETUNE_TAB
from engine.events import AdapterChanged, ClipRecorded, PlayAudio, RecordClip, StopClip, TurnFinished
from engine.paths import adapters_dir
from engine.tiny import TinyPaths, TinySpec, write_tiny_set

from .fake_engine import FakeEngine

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "wizard"
TRAIN_TIMEOUT_MS = 240_000
LOAD_TIMEOUT_MS = 120_000
PAIRS = [
    Pair("What is 2 plus 2?", "Two plus two is four."),
    Pair("Thank you very much.", "You're welcome!"),
    Pair("Which river flows through Paris?", "The river Seine."),
    Pair("Count to three.", "One, two, three."),
]
FAST_LR_INDEX = 3  # "Very fast (1e-2)": the tiny random model learns 3 pairs in a few dozen steps


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyPaths:
    # As tests/engine/conftest.py's tiny_omni_ft: an encoder that follows the audio (for spoken pairs).
    return write_tiny_set(tmp_path_factory.mktemp("tiny"), seed=0, spec=TinySpec(encoder_conv_gain=4.0), vocoder=False)


def shot(widget: QWidget, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    widget.grab().save(str(ARTIFACTS / f"{name}.png"))


def _next(qtbot: QtBot, wizard: QWizard, page_id: int) -> None:
    qtbot.waitUntil(lambda: wizard.currentPage().isComplete(), timeout=TRAIN_TIMEOUT_MS)
    wizard.next()
    assert wizard.currentId() == page_id


def _fast_options(wizard: FinetuneWizard, epochs: int) -> None:
    page = wizard.options_page
    page.advanced_box.setChecked(True)
    page.epochs_spin.setValue(epochs)
    page.lr_combo.setCurrentIndex(FAST_LR_INDEX)


def test_walk_the_wizard_end_to_end(qtbot: QtBot, tmp_path: Path, tiny: TinyPaths) -> None:
    settings_path = tmp_path / "settings.json"
    save(AppSettings(model_dir=str(tiny.omni), gpu="cpu", earcons=False), settings_path)
    args = argparse.Namespace(settings=settings_path, model=None, speech_encoder=None, vocoder=None, adapter=None)
    controller = Controller(args)
    qtbot.addWidget(controller.window)
    controller.window.show()
    try:
        controller.start()
        qtbot.waitUntil(lambda: controller.model_ready, timeout=LOAD_TIMEOUT_MS)
        dialog = controller.open_settings(FINETUNE_TAB)
        assert dialog.tabs.tabText(dialog.tabs.currentIndex()) == FINETUNE_TAB
        tab = dialog.finetune_tab
        assert tab.tree.topLevelItemCount() == 0 and tab.new_button.isEnabled()
        shot(dialog, "0-settings-finetune-tab-empty")
        wizards: list[FinetuneWizard] = []
        dialog.finetuneRequested.connect(lambda: wizards.append(dialog.findChildren(FinetuneWizard)[-1]))
        tab.new_button.click()
        qtbot.waitUntil(lambda: bool(wizards))
        wizard = wizards[0]

        wizard.data_page.set_pairs(PAIRS)
        assert wizard.state.draft.pairs() == PAIRS  # saved as typed
        shot(wizard, "1-data")
        _next(qtbot, wizard, PAGE_CHECK)
        qtbot.waitUntil(wizard.check_page.isComplete, timeout=LOAD_TIMEOUT_MS)
        report = wizard.state.report
        assert report is not None and (report["usable"], report["train"], report["heldout"]) == (4, 3, 1)
        assert "3 will be used for training and 1 kept aside" in wizard.check_page.counts_label.text()
        shot(wizard, "2-check")
        _next(qtbot, wizard, PAGE_OPTIONS)
        assert "training steps" in wizard.options_page.quick_radio.text()
        _fast_options(wizard, epochs=30)
        assert wizard.button(QWizard.WizardButton.CommitButton).text() == "Start training"
        shot(wizard, "3-options")
        _next(qtbot, wizard, PAGE_TRAIN)
        train = wizard.train_page
        qtbot.waitUntil(lambda: len(train.curve.points) >= 3, timeout=TRAIN_TIMEOUT_MS)
        assert not wizard.button(QWizard.WizardButton.BackButton).isEnabled()  # the options are committed
        shot(wizard, "4-train-running")
        qtbot.waitUntil(train.isComplete, timeout=TRAIN_TIMEOUT_MS)
        assert len(train.curve.points) == train.curve.total_steps > 3
        assert train.curve.points[-1][1] < train.curve.points[0][1]  # it learnt
        shot(wizard, "5-train-done")

        _next(qtbot, wizard, PAGE_RESULTS)
        results = wizard.results_page
        assert results.table.rowCount() == 1 and "after" in results.summary_label.text()
        heldout_answer = results.table.item(0, 0).text()  # the expected answer of the held-out pair
        assert report["heldout_ids"] == [f"typed.jsonl#{[p.answer for p in PAIRS].index(heldout_answer) + 1}"]
        question, answer = next((p.question, p.answer) for p in PAIRS if p.answer != heldout_answer)
        results.try_edit.setText(question)
        with qtbot.waitSignal(results.tryAnswered, timeout=LOAD_TIMEOUT_MS) as answered:
            results.try_button.click()
        shot(wizard, "6-results")
        assert answered.args == [answer] and results.try_answer.text() == answer

        _next(qtbot, wizard, PAGE_FINISH)
        wizard.finish_page.name_edit.setText("My answers")
        shot(wizard, "7-finish")
        with qtbot.waitSignal(controller.bridge.adapterChanged, timeout=LOAD_TIMEOUT_MS) as changed:
            wizard.button(QWizard.WizardButton.FinishButton).click()
        adapter = adapters_dir() / "My answers"
        assert isinstance(changed.args[0], AdapterChanged) and changed.args[0].adapter == adapter
        assert controller.settings.adapter_dir == str(adapter)
        assert json.loads(settings_path.read_text())["adapter_dir"] == str(adapter)
        qtbot.waitUntil(lambda: tab.tree.topLevelItemCount() == 1)
        assert tab.tree.topLevelItem(0).text(0) == "My answers" and tab.tree.topLevelItem(0).text(4)
        shot(dialog, "8-settings-finetune-tab")

        # The main window answers with the adapter.
        window = controller.window
        with qtbot.waitSignal(controller.bridge.turnFinished, timeout=LOAD_TIMEOUT_MS) as finished:
            window.text_input.setText(question)
            window.send_typed()
        assert isinstance(finished.args[0], TurnFinished) and finished.args[0].text == answer

        # Deleting the adapter in use: the engine goes back to the base model, then the files go.
        with qtbot.waitSignal(controller.bridge.adapterChanged, timeout=LOAD_TIMEOUT_MS) as changed:
            assert tab.delete(adapter)
        assert changed.args[0].adapter is None and not adapter.exists()
        assert controller.settings.adapter_dir is None and tab.tree.topLevelItemCount() == 0
        with qtbot.waitSignal(controller.bridge.turnFinished, timeout=LOAD_TIMEOUT_MS) as finished:
            window.text_input.setText(question)
            window.send_typed()
        assert finished.args[0].text != answer  # the base model does not know it
        dialog.reject()
    finally:
        controller.shutdown()


def test_stop_then_resume_continues_where_it_stopped(qtbot: QtBot, tmp_path: Path, tiny: TinyPaths) -> None:
    wizard = FinetuneWizard(tiny.omni, device="cpu", draft=Draft(tmp_path / "draft"), ask=False)
    qtbot.addWidget(wizard)
    wizard.show()
    wizard.data_page.set_pairs(PAIRS)
    _next(qtbot, wizard, PAGE_CHECK)
    qtbot.waitUntil(wizard.check_page.isComplete, timeout=LOAD_TIMEOUT_MS)
    _next(qtbot, wizard, PAGE_OPTIONS)
    _fast_options(wizard, epochs=60)  # long enough to stop in the middle
    _next(qtbot, wizard, PAGE_TRAIN)
    train = wizard.train_page
    steps: list[int] = []
    train.process.received.connect(lambda e: steps.append(e["step"]) if e.get("event") == "step" else None)
    qtbot.waitUntil(lambda: len(steps) >= 3, timeout=TRAIN_TIMEOUT_MS)
    with qtbot.waitSignal(train.trainingFinished, timeout=TRAIN_TIMEOUT_MS) as finished:
        train.stop_button.click()
    assert finished.args == [False] and not train.isComplete()
    assert "Training stopped" in train.stage_label.text() and RESUME_BUTTON in train.message_label.text()
    assert train.resume_button.isVisibleTo(wizard) and train.again_button.isVisibleTo(wizard)
    shot(wizard, "4-train-stopped")
    stopped_at = steps[-1]
    steps.clear()

    # A new wizard (after a crash or a reboot) offers to continue the run.
    asked: list[str] = []

    def answer_yes(_parent: object, _title: str, text: str, *_a: object) -> QMessageBox.StandardButton:
        asked.append(text)
        return QMessageBox.StandardButton.Yes

    wizard.train_page.process.stop(0)
    wizard.done(0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(QMessageBox, "question", answer_yes)
        again = FinetuneWizard(tiny.omni, device="cpu", draft=Draft(tmp_path / "draft"))
    qtbot.addWidget(again)
    assert "stopped before it finished" in asked[0] and again.startId() == PAGE_TRAIN
    again.train_page.process.received.connect(lambda e: steps.append(e["step"]) if e.get("event") == "step" else None)
    again.show()
    qtbot.waitUntil(again.train_page.isComplete, timeout=TRAIN_TIMEOUT_MS)
    assert steps[0] == stopped_at + 1  # continued, not started over
    assert again.state.adapter is not None and again.state.adapter.exists()


def test_a_bad_dataset_shows_the_report_and_the_fix(qtbot: QtBot, tmp_path: Path, tiny: TinyPaths) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "faq.jsonl").write_text(
        json.dumps({"question": "Where is the station?", "answer": ""}) + "\n" + "{not json\n", encoding="utf-8"
    )
    (bad / "hello.wav").write_bytes(b"RIFF this is not audio")
    (bad / "hello.txt").write_text("Hello!", encoding="utf-8")
    wizard = FinetuneWizard(tiny.omni, device="cpu", draft=Draft(tmp_path / "draft"), ask=False)
    qtbot.addWidget(wizard)
    wizard.show()
    wizard.data_page.set_pairs([])
    assert not wizard.data_page.isComplete()
    assert wizard.data_page.add_source(bad)
    _next(qtbot, wizard, PAGE_CHECK)
    page = wizard.check_page
    qtbot.waitUntil(lambda: bool(page.error_label.text()), timeout=LOAD_TIMEOUT_MS)
    problems = [page.problems_list.item(i).text() for i in range(page.problems_list.count())]
    assert len(problems) >= 3 and all(p.startswith(("Skipped", "Check", "Note")) for p in problems)
    assert any("hello" in p for p in problems) and any("faq.jsonl" in p for p in problems)
    assert BAD_DATA_FIX in page.error_label.text() and "Traceback" not in page.error_label.text()
    assert not page.isComplete() and not wizard.button(QWizard.WizardButton.NextButton).isEnabled()
    shot(wizard, "2-check-bad-data")


def test_the_draft_survives_closing_and_can_be_dropped(
    qtbot: QtBot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    draft = Draft(tmp_path / "draft")
    first = FinetuneWizard(tmp_path / "omni", draft=draft, ask=False)
    qtbot.addWidget(first)
    first.data_page.set_pairs(PAIRS[:2])
    first.reject()
    replies = [QMessageBox.StandardButton.Yes, QMessageBox.StandardButton.No]
    asked: list[str] = []

    def reply(_parent: object, _title: str, text: str, *_a: object) -> QMessageBox.StandardButton:
        asked.append(text)
        return replies.pop(0)

    monkeypatch.setattr(QMessageBox, "question", reply)
    kept = FinetuneWizard(tmp_path / "omni", draft=Draft(tmp_path / "draft"))
    qtbot.addWidget(kept)
    assert "from last time (2 items)" in asked[0] and kept.data_page.pairs() == PAIRS[:2]
    dropped = FinetuneWizard(tmp_path / "omni", draft=Draft(tmp_path / "draft"))
    qtbot.addWidget(dropped)
    assert dropped.data_page.pairs() == [] and draft.is_empty()


def test_recording_a_question_through_the_engine(qtbot: QtBot, tmp_path: Path) -> None:
    """The Data page records with the engine (RecordClip/StopClip → ClipRecorded) and saves a
    spoken pair at once; replay goes through the engine too; reopening keeps it."""
    engine_box: list[FakeEngine] = []

    def factory(on_event):  # type: ignore[no-untyped-def]
        engine_box.append(FakeEngine(on_event))
        return engine_box[-1]

    bridge = EngineBridge(factory)
    engine = engine_box[0]
    draft = Draft(tmp_path / "draft")
    wizard = FinetuneWizard(tmp_path / "omni", bridge=bridge, draft=draft, ask=False)
    qtbot.addWidget(wizard)
    wizard.show()
    page = wizard.data_page
    page.set_pairs(PAIRS[:1])
    page.record_button.pressed.emit()  # nothing selected: says what to do, records nothing
    assert "Select a pair" in page.record_label.text() and engine.commands == []
    page.table.selectRow(0)
    page.record_button.pressed.emit()
    page.record_button.released.emit()
    assert [type(c) for c in engine.commands] == [RecordClip, StopClip]
    speech = (0.5 * np.sin(np.linspace(0, 2000, 16_000))).astype(np.float32)
    engine.emit(ClipRecorded(speech))
    qtbot.waitUntil(lambda: page.recordings_list.count() == 1)
    [recording] = draft.recordings()
    assert recording.question == PAIRS[0].question and recording.answer == PAIRS[0].answer
    assert recording.wav.with_suffix(".txt").read_text().strip() == PAIRS[0].answer
    assert np.allclose(read_recording(recording.wav), speech, atol=1e-4)
    page.recordings_list.setCurrentRow(0)
    page.play_button.click()
    assert isinstance(engine.commands[-1], PlayAudio) and engine.commands[-1].pcm.size == speech.size
    # Recorded again: replaced, not added; a slip of the button is refused in words.
    page.record_button.pressed.emit()
    page.record_button.released.emit()
    engine.emit(ClipRecorded(speech[:1000]))
    qtbot.waitUntil(lambda: "Too short" in page.record_label.text())
    page.record_button.pressed.emit()
    engine.emit(ClipRecorded(speech[::-1].copy()))
    qtbot.waitUntil(lambda: "Saved" in page.record_label.text())
    assert len(draft.recordings()) == 1
    assert np.allclose(read_recording(draft.recordings()[0].wav), speech[::-1], atol=1e-4)
    again = FinetuneWizard(tmp_path / "omni", bridge=bridge, draft=Draft(tmp_path / "draft"), ask=False)
    qtbot.addWidget(again)
    assert again.data_page.recordings_list.count() == 1 and again.data_page.isComplete()
    shot(wizard, "1-data-recorded")
    bridge.shutdown()
