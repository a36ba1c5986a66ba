"""Settings → Conversation: latency vs speech quality (vocoder chunk sizes), system prompt, sampling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.settings import _RANGES, AppSettings
from engine.config import DEFAULT_SYSTEM_PROMPT
from engine.events import ChunkingOptions


@dataclass(frozen=True, slots=True)
class LatencyPreset:
    name: str
    first_chunk_units: int  # units before the first audio plays
    chunk_units: int  # units per later piece


LATENCY_PRESETS = (
    LatencyPreset("Fastest reply", 5, 20),
    LatencyPreset("Balanced", AppSettings().first_chunk_units, AppSettings().chunk_units),
    LatencyPreset("Smoother", 20, 80),
    LatencyPreset("Best quality", 40, 160),
)


def _int_spin(name: str) -> QSpinBox:
    """A spin box limited to the range settings.py accepts for ``name``."""
    low, high = _RANGES[name]
    box = QSpinBox()
    box.setRange(int(low), int(high))
    box.setValue(int(getattr(AppSettings(), name)))
    return box


def _float_spin(name: str, decimals: int) -> QDoubleSpinBox:
    low, high = _RANGES[name]
    box = QDoubleSpinBox()
    box.setDecimals(decimals)
    box.setRange(low, high)
    box.setValue(float(getattr(AppSettings(), name)))
    return box


class ConversationTab(QWidget):
    def __init__(self) -> None:
        super().__init__()
        self.latency_slider = QSlider(Qt.Orientation.Horizontal)
        self.latency_slider.setRange(0, len(LATENCY_PRESETS) - 1)
        self.latency_slider.setTickPosition(QSlider.TickPosition.TicksBelow)
        self.latency_slider.setPageStep(1)
        self.latency_slider.valueChanged.connect(self._preset_chosen)
        self.latency_label = QLabel()
        self.latency_label.setWordWrap(True)
        self.first_chunk_spin = _int_spin("first_chunk_units")
        self.chunk_spin = _int_spin("chunk_units")
        for box in (self.first_chunk_spin, self.chunk_spin):
            box.setSuffix(" units")
            box.valueChanged.connect(self._chunks_changed)
        ends = QHBoxLayout()
        ends.addWidget(QLabel("Faster reply"))
        ends.addStretch(1)
        ends.addWidget(QLabel("Smoother speech"))
        latency = QGroupBox("Latency and speech quality")
        latency_form = QFormLayout(latency)
        latency_form.addRow(self.latency_slider)
        latency_form.addRow(ends)
        latency_form.addRow("First piece", self.first_chunk_spin)
        latency_form.addRow("Later pieces", self.chunk_spin)
        latency_form.addRow(self.latency_label)

        self.prompt_edit = QPlainTextEdit()
        self.prompt_edit.setPlaceholderText(f"Empty: the model's default —\n{DEFAULT_SYSTEM_PROMPT}")
        self.prompt_edit.setTabChangesFocus(True)
        self.prompt_edit.setMinimumHeight(80)
        self.prompt_reset = QPushButton("Reset")
        self.prompt_reset.setToolTip("Use the model's default system prompt")
        self.prompt_reset.clicked.connect(self.prompt_edit.clear)
        prompt_row = QHBoxLayout()
        prompt_row.addWidget(self.prompt_edit, 1)
        prompt_row.addWidget(self.prompt_reset, 0, Qt.AlignmentFlag.AlignTop)
        self.temperature_spin = _float_spin("temperature", decimals=2)
        self.temperature_spin.setSingleStep(0.05)
        self.temperature_spin.setSpecialValueText("0 (same answer every time)")
        self.max_tokens_spin = _int_spin("max_new_tokens")
        self.max_tokens_spin.setSingleStep(16)
        self.max_tokens_spin.setSuffix(" tokens")
        answers = QGroupBox("Answers")
        answers_form = QFormLayout(answers)
        answers_form.addRow("System prompt", prompt_row)
        answers_form.addRow("Temperature", self.temperature_spin)
        answers_form.addRow("Longest answer", self.max_tokens_spin)

        layout = QVBoxLayout(self)
        layout.addWidget(latency)
        layout.addWidget(answers)
        layout.addStretch(1)

    def show_settings(self, s: AppSettings) -> None:
        self.prompt_edit.setPlainText(s.system_prompt)
        self.temperature_spin.setValue(s.temperature)
        self.max_tokens_spin.setValue(s.max_new_tokens)
        self.first_chunk_spin.setValue(s.first_chunk_units)
        self.chunk_spin.setValue(s.chunk_units)
        self._chunks_changed()

    def changes(self) -> dict[str, Any]:
        return {
            "system_prompt": self.prompt_edit.toPlainText().strip(),
            "temperature": round(float(self.temperature_spin.value()), 2),
            "max_new_tokens": int(self.max_tokens_spin.value()),
            "first_chunk_units": int(self.first_chunk_spin.value()),
            "chunk_units": int(self.chunk_spin.value()),
        }

    def _preset_chosen(self, index: int) -> None:
        preset = LATENCY_PRESETS[index]
        for box, value in ((self.first_chunk_spin, preset.first_chunk_units), (self.chunk_spin, preset.chunk_units)):
            box.blockSignals(True)
            box.setValue(value)
            box.blockSignals(False)
        self._chunks_changed()

    def _chunks_changed(self) -> None:
        first, chunk = int(self.first_chunk_spin.value()), int(self.chunk_spin.value())
        presets = [(p.first_chunk_units, p.chunk_units) for p in LATENCY_PRESETS]
        match = presets.index((first, chunk)) if (first, chunk) in presets else None
        if match is not None:
            self.latency_slider.blockSignals(True)
            self.latency_slider.setValue(match)
            self.latency_slider.blockSignals(False)
        name = LATENCY_PRESETS[match].name if match is not None else "Custom"
        chunking = ChunkingOptions(first_chunk_units=first, chunk_units=chunk)
        self.latency_label.setText(
            f"{name}: speech starts after {chunking.first_chunk_s:.1f} s of generated audio, "
            f"then plays in {chunking.chunk_s:.1f} s pieces. Bigger pieces sound smoother on slow GPUs."
        )
