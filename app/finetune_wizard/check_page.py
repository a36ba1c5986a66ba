"""Page 2: the engine's check of the data (``python -m engine finetune check``), as a list.

Counts, what will be skipped and why, the held-out split, and the stages that will run. The check
runs in the subprocess (it reads audio and the tokenizer), so the page stays responsive.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtGui import QColor
from PySide6.QtWidgets import QLabel, QListWidget, QListWidgetItem, QVBoxLayout, QWizardPage

from app.finetune_wizard.process import FinetuneProcess
from app.finetune_wizard.state import WizardState
from app.finetune_wizard.texts import CHECK_PAGE, error_words
from app.widgets import ERROR_COLOUR, coloured

SEVERITY_WORDS = {"error": "Skipped", "warning": "Check", "note": "Note"}
SEVERITY_COLOURS = {"error": ERROR_COLOUR, "warning": "#ef6c00", "note": None}
STAGE_WORDS = {1: "the text answers (stage 1)", 2: "the spoken answers' voice units (stage 2)"}


def stages_text(plan: dict[str, Any]) -> str:
    stages = plan.get("stages") or []
    parts = [f"{STAGE_WORDS.get(s['stage'], s['stage'])}: {s['total_steps']} steps" for s in stages]
    return "It will train " + "; ".join(parts) + "." if parts else "Nothing can be trained."


class CheckPage(QWizardPage):
    def __init__(self, state: WizardState, python: str | None = None) -> None:
        super().__init__()
        self.state = state
        self.setTitle(CHECK_PAGE)
        self.setSubTitle("OmniTalk reads every pair and says what it will use.")
        self.process = FinetuneProcess(self, python=python)
        self.process.received.connect(self._on_event)
        self.process.finished.connect(self._on_finished)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.counts_label = QLabel()
        self.counts_label.setWordWrap(True)
        self.problems_list = QListWidget()
        self.problems_list.setWordWrap(True)
        self.stages_label = QLabel()
        self.stages_label.setWordWrap(True)
        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        coloured(self.error_label, ERROR_COLOUR)
        layout = QVBoxLayout(self)
        layout.addWidget(self.status_label)
        layout.addWidget(self.counts_label)
        layout.addWidget(self.problems_list, 1)
        layout.addWidget(self.stages_label)
        layout.addWidget(self.error_label)
        self._ok = False

    def initializePage(self) -> None:
        self._ok = False
        self.state.report = self.state.plan = None
        self.problems_list.clear()
        for label in (self.counts_label, self.stages_label, self.error_label):
            label.clear()
        self.status_label.setText("Checking your data…")
        self.process.start(self.state.check_args())
        self.completeChanged.emit()

    def cleanupPage(self) -> None:
        self.process.stop(0)

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "report":
            self.state.report = event
            self._show_report(event)
        elif kind == "plan":
            self.state.plan = event
            self.stages_label.setText(stages_text(event) + "".join(f"\n{n}" for n in event.get("notes", [])))

    def _show_report(self, report: dict[str, Any]) -> None:
        self.counts_label.setText(
            f"{report['found']} pairs found, {report['usable']} usable ({report['spoken']} spoken, "
            f"{report['typed']} typed); {report['skipped']} skipped.\n"
            f"{report['train']} will be used for training and {report['heldout']} kept aside to compare "
            "the answers before and after."
        )
        for problem in report.get("problems", []):
            severity = problem.get("severity", "note")
            words = SEVERITY_WORDS.get(severity, severity)
            item = QListWidgetItem(f"{words} — {problem['item']}: {problem['message']}")
            if SEVERITY_COLOURS.get(severity):
                item.setForeground(QColor(SEVERITY_COLOURS[severity]))
            self.problems_list.addItem(item)
        if not report.get("problems"):
            self.problems_list.addItem("No problems found.")

    def _on_finished(self, code: int, error: dict[str, Any] | None) -> None:
        self._ok = code == 0 and self.state.report is not None and self.state.report.get("train", 0) > 0
        if self._ok:
            self.status_label.setText("Your data is ready.")
        else:
            self.status_label.setText("Your data cannot be used yet.")
            self.error_label.setText(error_words(error).plain())
        self.completeChanged.emit()

    def isComplete(self) -> bool:
        return self._ok
