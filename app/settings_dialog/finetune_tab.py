"""Settings → Fine-tuning: the installed adapters, which one is in use, and "New fine-tune…".

"Use" and "Don't use" act at once (``useAdapterRequested``: the controller switches the loaded
model with SetAdapter, no reload), not on OK: the dialog's OK keeps what this tab shows
(``changes``). Deleting the adapter in use switches back to the base model first. Listing reads
only small JSON files (engine/finetune/library.py), so it runs in the UI thread.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QHeaderView,
    QInputDialog,
    QLabel,
    QMessageBox,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.finetune_wizard.draft import Draft
from app.finetune_wizard.state import resumable_run
from app.settings import AppSettings
from app.widgets import ERROR_COLOUR, button_row, coloured, error_text
from app.words import NEW_FINETUNE_BUTTON
from engine.errors import EngineError
from engine.finetune.library import AdapterEntry, delete_adapter, list_adapters, rename_adapter
from engine.paths import adapters_dir

logger = logging.getLogger(__name__)

COLUMNS = ("Name", "Made", "Pairs", "Right before → after", "In use")
IN_USE_MARK = "✔"
PATH_ROLE = Qt.ItemDataRole.UserRole


def _percent(value: float | None) -> str:
    return f"{value:.0%}" if value is not None else "–"


def made_text(created: str | None) -> str:
    """The adapter's ISO 8601 UTC date, in local time."""
    if not created:
        return "–"
    try:
        return datetime.fromisoformat(created).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return created[:16]


def metrics_text(entry: AdapterEntry) -> str:
    if entry.problem:
        return "damaged"
    if entry.exact_after is None:
        return "–"
    return f"{_percent(entry.exact_before)} → {_percent(entry.exact_after)}"


class FinetuneTab(QWidget):
    useAdapterRequested = Signal(object)  # Path, or None for the base model
    newFinetuneRequested = Signal()

    def __init__(self, root: Path | None = None, draft: Draft | None = None) -> None:
        super().__init__()
        self._root = root
        self._draft = draft  # the wizard's draft (None: its usual place)
        self._in_use: Path | None = None
        self.can_train = False
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(list(COLUMNS))
        self.tree.setRootIsDecorated(False)
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.use_button = QPushButton("Use")
        self.base_button = QPushButton("Don't use")
        self.base_button.setToolTip("Answer with the model as it was downloaded")
        self.rename_button = QPushButton("Rename…")
        self.delete_button = QPushButton("Delete…")
        self.folder_button = QPushButton("Show folder")
        self.new_button = QPushButton(NEW_FINETUNE_BUTTON)
        self.new_button.setToolTip("Teach OmniTalk your own answers")
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.unfinished_label = QLabel()  # a training that stopped at a checkpoint
        self.unfinished_label.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Adapters change how OmniTalk answers; the model itself stays as it is."))
        layout.addWidget(self.tree, 1)
        layout.addWidget(button_row(self.use_button, self.base_button, self.rename_button, self.delete_button))
        layout.addWidget(button_row(self.folder_button, self.new_button))
        layout.addWidget(self.status_label)
        layout.addWidget(self.unfinished_label)
        self.tree.itemSelectionChanged.connect(self._update_buttons)
        self.use_button.clicked.connect(self._use_selected)
        self.base_button.clicked.connect(lambda: self.use(None))
        self.rename_button.clicked.connect(self._rename_selected)
        self.delete_button.clicked.connect(self._delete_selected)
        self.folder_button.clicked.connect(self._show_folder)
        self.new_button.clicked.connect(self.newFinetuneRequested)

    @property
    def root(self) -> Path:
        return self._root or adapters_dir()

    # ---------------------------------------------------------------- settings <-> tab

    def show_settings(self, s: AppSettings) -> None:
        self._in_use = Path(s.adapter_dir) if s.adapter_dir else None
        self.can_train = bool(s.model_dir)
        self.new_button.setEnabled(self.can_train)
        self.new_button.setToolTip("Teach OmniTalk your own answers" if self.can_train else "Set up a model first")
        self.refresh()

    def changes(self) -> dict[str, Any]:
        return {"adapter_dir": str(self._in_use) if self._in_use is not None else None}

    @property
    def in_use(self) -> Path | None:
        return self._in_use

    def refresh(self) -> None:
        selected = self.selected_path()
        self.tree.clear()
        for entry in list_adapters(self.root):
            in_use = self._in_use is not None and entry.path == self._in_use
            pairs = str(entry.usable_pairs) if entry.usable_pairs is not None else "–"
            made = made_text(entry.created)
            item = QTreeWidgetItem([entry.name, made, pairs, metrics_text(entry), IN_USE_MARK if in_use else ""])
            item.setData(0, PATH_ROLE, str(entry.path))
            if entry.problem:
                item.setToolTip(0, entry.problem)
            self.tree.addTopLevelItem(item)
            if entry.path == selected:
                item.setSelected(True)
        for column in range(1, len(COLUMNS)):
            self.tree.resizeColumnToContents(column)
        stopped = resumable_run(self._draft or Draft())
        self.unfinished_label.setText(
            f"A fine-tune stopped before it finished ({stopped[0].name}): "
            f"“{NEW_FINETUNE_BUTTON}” offers to continue it."
            if stopped is not None
            else ""
        )
        self._update_buttons()

    def selected_path(self) -> Path | None:
        items = self.tree.selectedItems()
        return Path(items[0].data(0, PATH_ROLE)) if items else None

    def select(self, path: Path) -> None:
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            if item is not None:
                item.setSelected(Path(item.data(0, PATH_ROLE)) == path)

    def _update_buttons(self) -> None:
        selected = self.selected_path()
        self.use_button.setEnabled(selected is not None and selected != self._in_use)
        self.base_button.setEnabled(self._in_use is not None)
        for button in (self.rename_button, self.delete_button, self.folder_button):
            button.setEnabled(selected is not None)
        self.status_label.setText(
            f"In use: {self._in_use.name}" if self._in_use is not None else "In use: none (the model as downloaded)."
        )
        coloured(self.status_label, None)

    # -------------------------------------------------------------------------- actions

    def use(self, path: Path | None) -> None:
        self._in_use = path
        self.useAdapterRequested.emit(path)
        self.refresh()

    def adapter_changed(self, path: Path | None) -> None:
        """The switch the controller asked for is done (or was refused): show what is in use."""
        self._in_use = path
        self.refresh()

    def _use_selected(self) -> None:
        selected = self.selected_path()
        if selected is not None:
            self.use(selected)

    def _rename_selected(self) -> None:
        selected = self.selected_path()
        if selected is None:
            return
        name, ok = QInputDialog.getText(self, "Rename adapter", "New name:", text=selected.name)
        if ok:
            self.rename(selected, name)

    def rename(self, path: Path, name: str) -> Path | None:
        try:
            new = rename_adapter(path, name)
        except (EngineError, OSError) as exc:
            self._error(exc)
            return None
        if self._in_use == path:
            self.use(new)  # the engine keeps its weights; the saved path must follow the folder
        self.refresh()
        self.select(new)
        return new

    def _delete_selected(self) -> None:
        selected = self.selected_path()
        if selected is None:
            return
        answer = QMessageBox.question(
            self,
            "Delete adapter",
            f"Delete “{selected.name}”? Its files are removed; this cannot be undone.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        if answer == QMessageBox.StandardButton.Yes:
            self.delete(selected)

    def delete(self, path: Path) -> bool:
        if self._in_use == path:
            self.use(None)  # back to the base model before its files go
        try:
            delete_adapter(path)
        except OSError as exc:
            self._error(exc)
            return False
        self.refresh()
        return True

    def _show_folder(self) -> None:
        selected = self.selected_path()
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(selected or self.root)))

    def _error(self, exc: BaseException) -> None:
        logger.warning("Adapter action failed: %s", exc)
        self.status_label.setText(error_text(exc))
        coloured(self.status_label, ERROR_COLOUR)
