"""Settings → Fine-tuning with a stand-in engine: the list, Use / Don't use (SetAdapter, no reload),
rename and delete (the adapter in use goes back to the base first), and the wizard's failure words."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox
from pytestqt.qtbot import QtBot

from app.application import Controller
from app.finetune_wizard.draft import Draft
from app.finetune_wizard.state import WizardState
from app.finetune_wizard.texts import (
    ADVANCED_BOX,
    CRASH_WORDS,
    LR_ROW,
    OPTIONS_PAGE,
    RANK_ROW,
    RESUME_BUTTON,
    START_AGAIN_BUTTON,
    error_words,
)
from app.settings import AppSettings, save
from app.words import FINETUNE_TAB
from engine.errors import Reason
from engine.events import AdapterChanged, Failed, LoadModel, Ready, SetAdapter, UnloadModel
from engine.paths import adapters_dir

from .fake_engine import FakeEngine


def _adapter(name: str, exact_before: float, exact_after: float) -> Path:
    folder = adapters_dir() / name
    folder.mkdir(parents=True)
    meta = {
        "format": "omnitalk-adapter", "format_version": 1, "created": "2026-12-01T10:00:00+00:00",
        "stages": [1], "base_model": {"fingerprint": "sha256:x", "name": "omni"},
        "data": {"usable": 12, "train": 11, "heldout": 1},
        "metrics": {"before": {"answers": {"exact_match": exact_before, "wer": 1.0}},
                    "after": {"answers": {"exact_match": exact_after, "wer": 0.0}}},
    }  # fmt: skip
    (folder / "omnitalk_adapter.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture
def controller(qtbot: QtBot, tmp_path: Path) -> tuple[Controller, FakeEngine]:
    engines: list[FakeEngine] = []

    def factory(on_event):  # type: ignore[no-untyped-def]
        engines.append(FakeEngine(on_event))
        return engines[-1]

    save(AppSettings(model_dir=str(tmp_path / "omni")), tmp_path / "settings.json")
    args = argparse.Namespace(settings=tmp_path / "settings.json", model=None, speech_encoder=None, vocoder=None,
                              adapter=None)  # fmt: skip
    c = Controller(args, engine_factory=factory)
    qtbot.addWidget(c.window)
    c.start()
    engines[0].emit(Ready("tiny"))
    qtbot.waitUntil(lambda: c.model_ready)
    return c, engines[0]


def test_use_rename_delete(qtbot: QtBot, controller: tuple[Controller, FakeEngine]) -> None:
    c, engine = controller
    faq = _adapter("faq", 0.0, 1.0)
    _adapter("persona", 0.25, 0.5)
    dialog = c.open_settings(FINETUNE_TAB)
    tab = dialog.finetune_tab
    rows = [[tab.tree.topLevelItem(i).text(col) for col in range(5)] for i in range(tab.tree.topLevelItemCount())]
    assert sorted(r[0] for r in rows) == ["faq", "persona"]
    made = datetime(2026, 12, 1, 10, tzinfo=timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M")
    assert ["faq", made, "12", "0% → 100%", ""] in rows
    assert not tab.base_button.isEnabled() and not tab.use_button.isEnabled()
    assert tab.unfinished_label.text() == ""
    state = WizardState(Path("omni"), Draft(), out=adapters_dir() / "Fine-tune stopped", train_flags=["--rank", "8"])
    state.save_run()
    tab.refresh()
    assert tab.unfinished_label.text() == ""  # no checkpoint yet: nothing to continue
    stopped = adapters_dir() / "Fine-tune stopped.training"
    stopped.mkdir()
    (stopped / "checkpoint.pt").write_bytes(b"")
    tab.refresh()
    assert "Fine-tune stopped" in tab.unfinished_label.text() and tab.tree.topLevelItemCount() == 2

    tab.select(faq)
    tab.use_button.click()
    assert engine.commands[-1] == SetAdapter(faq)
    assert sum(isinstance(cmd, LoadModel) for cmd in engine.commands) == 1  # switched, not reloaded
    engine.emit(AdapterChanged(faq, "tiny + faq"))
    qtbot.waitUntil(lambda: c.settings.adapter_dir == str(faq) and c._adapter_switch is None)
    assert tab.tree.findItems("faq", Qt.MatchFlag.MatchExactly)[0].text(4) == "✔"
    assert dialog.result_settings().adapter_dir == str(faq)  # OK keeps it

    # Renaming the adapter in use: the folder moves and the engine follows it.
    renamed = tab.rename(faq, "Shop FAQ")
    assert renamed == adapters_dir() / "Shop FAQ" and renamed.exists() and not faq.exists()
    assert engine.commands[-1] == SetAdapter(renamed) and c.settings.adapter_dir == str(renamed)
    engine.emit(AdapterChanged(renamed, "tiny + Shop FAQ"))
    assert tab.rename(renamed, "persona") is None and "exists already" in tab.status_label.text()

    # Deleting the adapter in use: back to the base model first, then the files go.
    assert tab.delete(renamed)
    assert engine.commands[-1] == SetAdapter(None) and not renamed.exists()
    assert c.settings.adapter_dir is None and [tab.tree.topLevelItem(0).text(0)] == ["persona"]
    dialog.reject()


def test_a_refused_switch_shows_the_adapter_still_in_use(
    qtbot: QtBot, controller: tuple[Controller, FakeEngine]
) -> None:
    c, engine = controller
    faq = _adapter("faq", 0.0, 1.0)
    dialog = c.open_settings(FINETUNE_TAB)
    tab = dialog.finetune_tab
    tab.select(faq)
    tab.use_button.click()
    engine.emit(Failed("model_incompatible", "The adapter was made for another model."))
    qtbot.waitUntil(lambda: tab.in_use is None)
    assert c.settings.adapter_dir is None and dialog.result_settings().adapter_dir is None
    dialog.reject()


def test_file_menu_opens_the_tab(qtbot: QtBot, controller: tuple[Controller, FakeEngine]) -> None:
    c, _engine = controller
    c.window.finetune_action.trigger()
    dialog = c._settings_dialog
    assert dialog is not None and dialog.tabs.tabText(dialog.tabs.currentIndex()) == FINETUNE_TAB
    dialog.reject()


def test_training_failures_name_the_wizards_controls() -> None:
    memory = error_words({"kind": "not_enough_memory", "message": "m", "reason": Reason.TRAINING_MEMORY_SHORT.value,
                          "facts": {"needed_bytes": 9e9, "free_bytes": 4e9}})  # fmt: skip
    assert "9.0 GB" in memory.text and OPTIONS_PAGE in (memory.fix or "") and RANK_ROW in (memory.fix or "")
    diverged = error_words({"kind": "bad_input", "message": "m", "reason": Reason.TRAINING_DIVERGED.value,
                            "facts": {"loss": "nan", "step": 3}})  # fmt: skip
    assert "nan" in diverged.text and LR_ROW in (diverged.fix or "") and ADVANCED_BOX in (diverged.fix or "")
    oom = error_words({"kind": "out_of_memory", "message": "Out of memory: CUDA", "fix": "--batch 1"})
    assert "--" not in (oom.fix or "") and RESUME_BUTTON in (oom.fix or "")
    resume = error_words({"kind": "bad_input", "message": "m", "reason": Reason.RESUME_IMPOSSIBLE.value})
    assert START_AGAIN_BUTTON in (resume.fix or "")
    internal = error_words({"kind": "internal", "message": "ZeroDivisionError: division by zero"})
    assert "ZeroDivisionError" not in internal.plain()
    assert error_words(None) is CRASH_WORDS and RESUME_BUTTON in (CRASH_WORDS.fix or "")


def test_the_wizard_unloads_and_reloads_the_model_through_the_controller(
    qtbot: QtBot, controller: tuple[Controller, FakeEngine]
) -> None:
    c, engine = controller
    wizard = c.finetune.open()
    assert wizard is not None  # a child of the window, deleted when closed
    wizard.unloadRequested.emit()
    assert isinstance(engine.commands[-1], UnloadModel) and not c.model_ready
    wizard.reloadRequested.emit()
    assert isinstance(engine.commands[-1], LoadModel) and engine.commands[-1].model_dir == Path(c.settings.model_dir)
    wizard.reject()


def test_quitting_while_training_asks_and_stops_it_with_a_checkpoint(
    qtbot: QtBot, controller: tuple[Controller, FakeEngine], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c, _engine = controller
    c.window.show()
    wizard = c.finetune.open()
    assert wizard is not None
    child = tmp_path / "fake-python"
    child.write_text("#!/bin/sh\nsleep 30\n", encoding="utf-8")
    child.chmod(0o755)
    process = wizard.train_page.process
    process._python = str(child)  # noqa: SLF001  (a stand-in for the training child)
    process.start(["finetune", "run"])
    qtbot.waitUntil(lambda: c.finetune.training_running())
    answers = [QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes]
    asked: list[str] = []

    def reply(_parent: object, _title: str, text: str, *_a: object) -> QMessageBox.StandardButton:
        asked.append(text)
        return answers.pop(0)

    monkeypatch.setattr(QMessageBox, "question", reply)
    assert not c.window.close() and c.window.isVisible()  # "No": the window stays, the training goes on
    assert "still training" in asked[0] and c.finetune.training_running()
    assert c.window.close()  # "Yes"
    c.shutdown()  # what the app does on quit: the child gets SIGTERM (checkpoint, then exit)
    assert not c.finetune.training_running()
