"""Page 1: the questions and answers. Typed into a table, or files/folders added; both combine.

Recording: select a typed pair, hold "Hold to record" and say the question. The engine records it
(RecordClip/StopClip → ClipRecorded: the app's microphone and recorder, not a second audio stack);
the clip is saved at once as a spoken pair (question speech + the row's answer). Recording the same
question again replaces it; "Play" replays it through the engine.

Every edit is written to the draft at once (app/finetune_wizard/draft.py): closing the wizard
loses nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWizardPage,
)

from app.bridge import EngineBridge
from app.error_words import describe_failed
from app.finetune_wizard.draft import RECORDING_RATE_HZ, Draft, Pair, Recording, read_recording
from app.finetune_wizard.texts import ADD_FILE_BUTTON, ADD_FOLDER_BUTTON, DATA_PAGE
from app.widgets import ERROR_COLOUR, button_row, coloured
from engine.events import ClipRecorded, EngineState, Failed, StateChanged

logger = logging.getLogger(__name__)

EMPTY_ROWS = 3  # blank rows offered to type into
DATA_FILES_FILTER = "Questions and answers (*.jsonl *.json *.csv);;All files (*)"
RECORD_BUTTON = "Hold to record"
MIN_CLIP_S = 0.3  # shorter: a slip of the button, not a question


class DataPage(QWizardPage):
    def __init__(self, draft: Draft, bridge: EngineBridge | None = None) -> None:
        super().__init__()
        self.draft = draft
        self.bridge = bridge
        self._recording_for: Pair | None = None
        self.setTitle(DATA_PAGE)
        self.setSubTitle(
            "Teach OmniTalk your own answers: type questions with the answer you want, or add a file "
            "(JSONL/CSV with question and answer columns) or a folder of recorded pairs (NAME.wav + NAME.txt)."
        )
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["Question", "Answer"])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.add_row_button = QPushButton("Add a row")
        self.remove_row_button = QPushButton("Remove selected rows")
        self.add_file_button = QPushButton(ADD_FILE_BUTTON)
        self.add_folder_button = QPushButton(ADD_FOLDER_BUTTON)
        self.sources_list = QListWidget()
        self.sources_list.setMaximumHeight(80)
        self.remove_source_button = QPushButton("Remove")
        self.record_button = QPushButton(RECORD_BUTTON)
        self.record_button.setToolTip("Select a pair above, hold this button and say its question")
        self.play_button = QPushButton("Play")
        self.delete_recording_button = QPushButton("Delete recording")
        self.recordings_list = QListWidget()
        self.recordings_list.setMaximumHeight(80)
        self.record_label = QLabel()
        self.record_label.setWordWrap(True)
        self.count_label = QLabel()
        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        coloured(self.error_label, ERROR_COLOUR)

        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addWidget(button_row(self.add_row_button, self.remove_row_button))
        layout.addWidget(QLabel("Spoken questions (the answers come from the table):"))
        layout.addWidget(self.recordings_list)
        layout.addWidget(button_row(self.record_button, self.play_button, self.delete_recording_button))
        layout.addWidget(self.record_label)
        layout.addWidget(QLabel("Files and folders added:"))
        layout.addWidget(self.sources_list)
        layout.addWidget(button_row(self.add_file_button, self.add_folder_button, self.remove_source_button))
        layout.addWidget(self.count_label)
        layout.addWidget(self.error_label)

        self.add_row_button.clicked.connect(lambda: self._append_row(Pair("", "")))
        self.remove_row_button.clicked.connect(self._remove_rows)
        self.add_file_button.clicked.connect(self._choose_file)
        self.add_folder_button.clicked.connect(self._choose_folder)
        self.remove_source_button.clicked.connect(self._remove_source)
        self.table.itemChanged.connect(lambda _item: self._save())
        self.record_button.pressed.connect(self.start_recording)
        self.record_button.released.connect(self.stop_recording)
        self.play_button.clicked.connect(self._play_selected)
        self.delete_recording_button.clicked.connect(self._delete_recording)
        if bridge is not None:
            bridge.clipRecorded.connect(self._on_clip)
            bridge.stateChanged.connect(self._on_state)
            bridge.failed.connect(self._on_failed)
            bridge.turnIgnored.connect(lambda _reason, hint: self._on_ignored(hint))
        else:
            self.record_button.setEnabled(False)
            self.play_button.setEnabled(False)
            self.record_label.setText("Recording needs OmniTalk's microphone: open this wizard from Settings.")
        self.load()

    # ---------------------------------------------------------------- the draft <-> the page

    def load(self) -> None:
        """Show the draft (a continued draft, or a fresh one with a few empty rows)."""
        self.table.blockSignals(True)
        self.table.setRowCount(0)
        pairs = self.draft.pairs()
        for pair in pairs + [Pair("", "")] * max(0, EMPTY_ROWS - len(pairs)):
            self._append_row(pair, save=False)
        self.table.blockSignals(False)
        self.sources_list.clear()
        for path in self.draft.added():
            self.sources_list.addItem(path.name)
        self._show_recordings()
        self._update_count()

    def set_pairs(self, pairs: list[Pair]) -> None:
        self.table.blockSignals(True)
        self.table.setRowCount(0)
        for pair in pairs:
            self._append_row(pair, save=False)
        self.table.blockSignals(False)
        self._save()

    def pairs(self) -> list[Pair]:
        rows = []
        for row in range(self.table.rowCount()):
            cells = [self.table.item(row, col) for col in (0, 1)]
            q, a = (c.text().strip() if c is not None else "" for c in cells)
            if q or a:
                rows.append(Pair(q, a))
        return rows

    def _append_row(self, pair: Pair, *, save: bool = True) -> None:
        row = self.table.rowCount()
        self.table.insertRow(row)
        self.table.setItem(row, 0, QTableWidgetItem(pair.question))
        self.table.setItem(row, 1, QTableWidgetItem(pair.answer))
        if save:
            self._save()

    def _remove_rows(self) -> None:
        for row in sorted({i.row() for i in self.table.selectedIndexes()}, reverse=True):
            self.table.removeRow(row)
        self._save()

    def _save(self) -> None:
        try:
            self.draft.save_pairs(self.pairs())
            self.error_label.clear()
        except OSError as exc:
            logger.warning("Saving the fine-tune draft failed: %s", exc)
            self.error_label.setText(f"Your pairs could not be saved ({exc.strerror or exc}). Free some disk space.")
        self._update_count()

    def _update_count(self) -> None:
        complete = sum(1 for p in self.pairs() if p.question and p.answer)
        added = self.sources_list.count()
        spoken = self.recordings_list.count()
        self.count_label.setText(
            f"{complete} typed pair{'s' * (complete != 1)}, {spoken} spoken"
            + (f" and {added} file{'s' * (added != 1)} or folder{'s' * (added != 1)}" if added else "")
            + ". The next page checks them all."
        )
        self.completeChanged.emit()

    # ------------------------------------------------------------------------ recording

    def selected_pair(self) -> Pair | None:
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        if not rows:
            return None
        cells = [self.table.item(rows[0], col) for col in (0, 1)]
        q, a = (c.text().strip() if c is not None else "" for c in cells)
        return Pair(q, a) if q and a else None

    def start_recording(self) -> None:
        pair = self.selected_pair()
        if pair is None or self.bridge is None:
            self.record_label.setText("Select a pair with a question and an answer first.")
            return
        self._recording_for = pair
        self.record_label.setText("Opening the microphone…")
        self.bridge.record_clip()

    def _on_state(self, event: StateChanged) -> None:
        if self._recording_for is not None and event.state is EngineState.LISTENING:
            self.record_label.setText(f"Recording… say: “{self._recording_for.question}” and let go.")

    def _on_failed(self, failed: Failed) -> None:
        """No microphone, a busy one, a muted one: in the app's words, on this page."""
        if self._recording_for is not None:
            self._recording_for = None
            self.record_label.setText(describe_failed(failed).plain())

    def _on_ignored(self, hint: str) -> None:
        if self._recording_for is not None:  # the microphone is muted
            self._recording_for = None
            self.record_label.setText(hint)

    def stop_recording(self) -> None:
        if self._recording_for is not None and self.bridge is not None:
            self.bridge.stop_clip()

    def _on_clip(self, clip: ClipRecorded) -> None:
        pair, self._recording_for = self._recording_for, None
        if pair is None:
            return  # not ours (another window's take)
        if clip.pcm.size < MIN_CLIP_S * RECORDING_RATE_HZ:
            self.record_label.setText(f"Too short: hold “{RECORD_BUTTON}” while you say the question.")
            return
        try:
            self.draft.save_recording(pair.question, pair.answer, clip.pcm)
        except OSError as exc:
            reason = exc.strerror or exc
            self.record_label.setText(f"The recording could not be saved ({reason}). Free some disk space.")
            return
        seconds = clip.pcm.size / RECORDING_RATE_HZ
        self.record_label.setText(f"Saved ({seconds:.1f} s). Play it, or hold the button to record again.")
        self._show_recordings()
        self._update_count()

    def _show_recordings(self) -> None:
        self.recordings_list.clear()
        for recording in self.draft.recordings():
            item = QListWidgetItem(f"{recording.question} → {recording.answer}")
            item.setData(Qt.ItemDataRole.UserRole, recording)
            self.recordings_list.addItem(item)

    def _selected_recording(self) -> Recording | None:
        item = self.recordings_list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def _play_selected(self) -> None:
        recording = self._selected_recording()
        if recording is not None and self.bridge is not None:
            self.bridge.play(read_recording(recording.wav))

    def _delete_recording(self) -> None:
        recording = self._selected_recording()
        if recording is not None:
            self.draft.remove_recording(recording)
            self._show_recordings()
            self._update_count()

    # -------------------------------------------------------------------------- sources

    def add_source(self, path: Path) -> bool:
        try:
            copy = self.draft.add_source(path)
        except OSError as exc:
            self.error_label.setText(f"“{path}” could not be added: {exc.strerror or exc}.")
            return False
        self.error_label.clear()
        self.sources_list.addItem(copy.name)
        self._update_count()
        return True

    def _choose_file(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, ADD_FILE_BUTTON.rstrip("…"), str(Path.home()), DATA_FILES_FILTER)
        if name:
            self.add_source(Path(name))

    def _choose_folder(self) -> None:
        name = QFileDialog.getExistingDirectory(self, ADD_FOLDER_BUTTON.rstrip("…"), str(Path.home()))
        if name:
            self.add_source(Path(name))

    def _remove_source(self) -> None:
        item = self.sources_list.currentItem()
        if item is None:
            return
        self.draft.remove_source(self.draft.added_dir / item.text())
        self.sources_list.takeItem(self.sources_list.row(item))
        self._update_count()

    def isComplete(self) -> bool:
        return (
            any(p.question and p.answer for p in self.pairs())
            or self.sources_list.count() > 0
            or self.recordings_list.count() > 0
        )
