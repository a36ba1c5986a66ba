"""Page 5: before and after, side by side, on the questions kept aside; and a "try it" box.

The comparison comes from the run's ``eval`` events (greedy answers of the base model and of the
adapter to the held-out questions; a few general questions show whether it forgot things). The
try-it box asks the app's own engine: it switches the loaded model to the new adapter (SetAdapter,
no reload) and sends the typed question; the answer is spoken as usual. The wizard switches back
when it closes unless the user chose "Use it now".
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWizardPage,
)

from app.bridge import EngineBridge
from app.finetune_wizard.state import WizardState
from app.finetune_wizard.texts import RESULTS_PAGE
from engine.events import AdapterChanged, TurnFinished, TurnStarted


def _percent(value: Any) -> str:
    return f"{value:.0%}" if isinstance(value, int | float) else "–"


def _answers(event: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    rows = ((event or {}).get("answers") or {}).get("answers") or []
    return {r["id"]: r for r in rows}


class ResultsPage(QWizardPage):
    tryAnswered = Signal(str)  # the try-it box's answer, complete

    def __init__(self, state: WizardState, bridge: EngineBridge | None, model_ready: bool) -> None:
        super().__init__()
        self.state = state
        self.bridge = bridge
        self.model_ready = model_ready
        self.tried = False  # the engine was switched to the new adapter
        self.setTitle(RESULTS_PAGE)
        self.setSubTitle("The questions kept aside from training, answered before and after.")
        self.summary_label = QLabel()
        self.summary_label.setWordWrap(True)
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["Expected answer", "Before", "After"])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.forget_label = QLabel()
        self.forget_label.setWordWrap(True)
        self.try_edit = QLineEdit()
        self.try_edit.setPlaceholderText("Type a question to ask the fine-tuned model")
        self.try_button = QPushButton("Ask")
        self.try_answer = QLabel()
        self.try_answer.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary_label)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.forget_label)
        layout.addWidget(QLabel("Try it:"))
        ask_row = QHBoxLayout()
        ask_row.addWidget(self.try_edit, 1)
        ask_row.addWidget(self.try_button)
        layout.addLayout(ask_row)
        layout.addWidget(self.try_answer)
        self.try_button.clicked.connect(self.ask)
        self.try_edit.returnPressed.connect(self.ask)
        self._turn_id: int | None = None
        self._expect: str | None = None  # the question sent; its TurnStarted names the turn
        self._answer = ""
        self._waiting_for_adapter = False
        self._pending_question: str | None = None
        if bridge is not None:
            bridge.turnStarted.connect(self._on_turn_started)
            bridge.textDelta.connect(self._on_text)
            bridge.turnFinished.connect(self._on_turn_finished)
            bridge.adapterChanged.connect(self._on_adapter_changed)
            bridge.failed.connect(self._on_failed)

    def initializePage(self) -> None:
        before, after = self.state.eval_before, self.state.eval_after
        b, a = (before or {}).get("answers") or {}, (after or {}).get("answers") or {}
        if a.get("n"):
            self.summary_label.setText(
                f"Exactly right: {_percent(b.get('exact_match'))} before, {_percent(a.get('exact_match'))} after. "
                f"Words wrong: {_percent(b.get('wer'))} before, {_percent(a.get('wer'))} after."
            )
        else:
            self.summary_label.setText("No questions were kept aside (too few pairs), so there is nothing to compare.")
        rows_before, rows_after = _answers(before), _answers(after)
        self.table.setRowCount(0)
        for item_id, row in rows_after.items():
            r = self.table.rowCount()
            self.table.insertRow(r)
            for col, text in enumerate((row["target"], rows_before.get(item_id, {}).get("answer", ""), row["answer"])):
                self.table.setItem(r, col, QTableWidgetItem(text))
        changed = ((after or {}).get("forget") or {}).get("changed")
        asked = len(((after or {}).get("forget") or {}).get("questions") or [])
        self.forget_label.setText(
            f"General questions: {changed} of {asked} answers changed (fewer is better: it kept what it knew)."
            if changed is not None
            else ""
        )
        usable = self.bridge is not None and self.model_ready
        self.try_edit.setEnabled(usable)
        self.try_button.setEnabled(usable)
        if not usable:
            self.try_answer.setText("Load a model in OmniTalk to try the adapter here.")

    # ----------------------------------------------------------------------- try it

    def ask(self) -> None:
        question = self.try_edit.text().strip()
        if not question or self.bridge is None or self.state.adapter is None:
            return
        self.try_answer.setText("Thinking…")
        self._answer = ""
        if not self.tried:
            self.tried = True
            self._waiting_for_adapter = True
            self._pending_question = question
            self.bridge.set_adapter(self.state.adapter)
        elif self._waiting_for_adapter:
            self._pending_question = question
        else:
            self._send(question)

    def _send(self, question: str) -> None:
        assert self.bridge is not None
        self._turn_id = None
        self._expect = question
        self.bridge.send_text(question)

    def _on_adapter_changed(self, event: AdapterChanged) -> None:
        if self._waiting_for_adapter and event.adapter == self.state.adapter:
            self._waiting_for_adapter = False
            if self._pending_question:
                self._send(self._pending_question)
                self._pending_question = None

    def _on_failed(self, failed: Any) -> None:
        if self._waiting_for_adapter:
            self._waiting_for_adapter = False
            self.tried = False
            self.try_answer.setText(f"The adapter could not be used: {failed.message}")

    def _on_turn_started(self, started: TurnStarted) -> None:
        if started.source == "text" and started.user_text == self._expect:
            self._turn_id = started.turn_id

    def _on_text(self, turn_id: int, text: str) -> None:
        if turn_id == self._turn_id:
            self._answer += text
            self.try_answer.setText(self._answer)

    def _on_turn_finished(self, finished: TurnFinished) -> None:
        if finished.turn_id == self._turn_id:
            self.try_answer.setText(finished.text or self._answer or "(no answer)")
            self._turn_id = None
            self.tryAnswered.emit(finished.text)
