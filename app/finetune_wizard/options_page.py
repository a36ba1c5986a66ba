"""Page 3: how hard to train. Two presets in plain words, with the steps and memory the engine's
plan (engine/finetune/plan.py, from the check) gives for this data and this PC; "Advanced" opens
the passes over the data, the learning rate, the LoRA rank and what to train.

Quick is the engine's own default plan; Thorough makes twice the passes with twice the rank.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
    QWizard,
    QWizardPage,
)

from app.finetune_wizard.state import WizardState
from app.finetune_wizard.texts import (
    ADVANCED_BOX,
    EPOCHS_ROW,
    LR_ROW,
    OPTIONS_PAGE,
    QUICK_PRESET,
    RANK_ROW,
    STAGE_ROW,
    THOROUGH_PRESET,
)

GB = 1_000_000_000
DEFAULT_RANK = 16  # engine.finetune.plan.DEFAULT_RANK
THOROUGH_FACTOR = 2
RANKS = (4, 8, 16, 32, 64)
LEARNING_RATES = (
    ("Automatic (2e-4)", None),
    ("Gentle (5e-5)", 5e-5),
    ("Fast (1e-3)", 1e-3),
    ("Very fast (1e-2)", 1e-2),
)
STAGES = (
    ("Text and voice (when the data has spoken answers)", "both"),
    ("Text answers only", "1"),
    ("Voice only", "2"),
)
MAX_EPOCHS = 200


def size_text(n_bytes: float) -> str:
    return f"{n_bytes / GB:.1f} GB" if n_bytes >= GB / 10 else f"{n_bytes / 1e6:.0f} MB"


class OptionsPage(QWizardPage):
    def __init__(self, state: WizardState) -> None:
        super().__init__()
        self.state = state
        self.setTitle(OPTIONS_PAGE)
        self.setSubTitle("How thoroughly should OmniTalk learn your answers?")
        self.setCommitPage(True)  # the training starts on Next; its page has no Back
        self.setButtonText(QWizard.WizardButton.CommitButton, "Start training")
        self.quick_radio = QRadioButton()
        self.thorough_radio = QRadioButton()
        self.quick_radio.setChecked(True)
        self.presets = QButtonGroup(self)
        self.presets.addButton(self.quick_radio)
        self.presets.addButton(self.thorough_radio)
        self.memory_label = QLabel()
        self.memory_label.setWordWrap(True)

        self.advanced_box = QGroupBox(ADVANCED_BOX)
        self.advanced_box.setCheckable(True)
        self.advanced_box.setChecked(False)
        self.advanced = QWidget()
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(0, MAX_EPOCHS)
        self.epochs_spin.setSpecialValueText("Automatic")
        self.lr_combo = QComboBox()
        for label, value in LEARNING_RATES:
            self.lr_combo.addItem(label, value)
        self.rank_combo = QComboBox()
        for rank in RANKS:
            self.rank_combo.addItem(str(rank), rank)
        self.rank_combo.setCurrentIndex(RANKS.index(DEFAULT_RANK))
        self.stage_combo = QComboBox()
        for label, stage in STAGES:
            self.stage_combo.addItem(label, stage)
        form = QFormLayout(self.advanced)
        form.addRow(EPOCHS_ROW, self.epochs_spin)
        form.addRow(LR_ROW, self.lr_combo)
        form.addRow(RANK_ROW, self.rank_combo)
        form.addRow(STAGE_ROW, self.stage_combo)
        box = QVBoxLayout(self.advanced_box)
        box.addWidget(self.advanced)
        self.advanced.setVisible(False)
        self.advanced_box.toggled.connect(self.advanced.setVisible)

        layout = QVBoxLayout(self)
        layout.addWidget(self.quick_radio)
        layout.addWidget(self.thorough_radio)
        layout.addWidget(self.memory_label)
        layout.addWidget(self.advanced_box)
        layout.addStretch(1)

    def initializePage(self) -> None:
        plan = self.state.plan or {}
        steps = sum(s["total_steps"] for s in plan.get("stages", []))
        epochs = max((s["epochs"] for s in plan.get("stages", [])), default=0)
        self.quick_radio.setText(
            f"{QUICK_PRESET} — {steps} training steps ({epochs:g} passes over your data). Enough for a few dozen pairs."
        )
        self.thorough_radio.setText(
            f"{THOROUGH_PRESET} — {steps * THOROUGH_FACTOR} steps, "
            f"a larger adapter (rank {DEFAULT_RANK * THOROUGH_FACTOR}): twice as long, for many or long answers."
        )
        needed, free = plan.get("memory_needed_bytes"), plan.get("memory_free_bytes")
        where = "the graphics card" if str(plan.get("device", "")).startswith("cuda") else "the computer's memory"
        text = f"Training needs about {size_text(needed)} of {where}" if needed else ""
        if needed and free:
            text += f"; {size_text(free)} is free."
            if needed > free:
                text += " That is not enough: close other programs."
        self.memory_label.setText(text)
        if epochs and not self.epochs_spin.value():
            self.epochs_spin.setToolTip(f"Automatic: {epochs:g}")

    def flags(self) -> list[str]:
        """The run's command-line flags for the chosen preset and advanced values."""
        plan = self.state.plan or {}
        epochs = max((int(round(s["epochs"])) for s in plan.get("stages", [])), default=0)
        thorough = self.thorough_radio.isChecked()
        rank = DEFAULT_RANK * THOROUGH_FACTOR if thorough else DEFAULT_RANK
        flags: list[str] = []
        if thorough and epochs:
            flags += ["--epochs", str(epochs * THOROUGH_FACTOR)]
        if self.advanced_box.isChecked():
            if self.epochs_spin.value():
                flags = ["--epochs", str(self.epochs_spin.value())]
            rank = int(self.rank_combo.currentData())
            lr: Any = self.lr_combo.currentData()
            if lr is not None:
                flags += ["--lr", f"{lr:g}"]
            flags += ["--stage", str(self.stage_combo.currentData())]
        return flags + ["--rank", str(rank)]

    def validatePage(self) -> bool:
        self.state.train_flags = self.flags()
        return True
