"""Settings → Audio: microphone and speaker (with test buttons), looking for devices again, earcons.

The engine owns the sound devices, so this tab never scans them itself: it asks through
``devicesRequested(rescan)`` (the dialog forwards it; the controller sends ``ListDevices`` to the
engine) and shows the engine's ``DevicesListed`` answer in :meth:`AudioTab.show_devices`.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.error_words import describe_failed
from app.settings import AppSettings
from app.widgets import ERROR_COLOUR, coloured
from app.words import RESCAN_BUTTON
from engine.events import AudioDevice, DevicesListed


class AudioTab(QWidget):
    devicesRequested = Signal(bool)  # rescan
    testMicrophoneRequested = Signal(object)  # device key or None (system default)
    testSpeakerRequested = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self._devices: tuple[AudioDevice, ...] | None = None  # None until the engine answers
        self.input_combo = QComboBox()
        self.output_combo = QComboBox()
        self.test_mic_button = QPushButton("Test")
        self.test_mic_button.setToolTip("Record a few seconds and play them back")
        self.test_mic_button.clicked.connect(lambda: self.testMicrophoneRequested.emit(self.input_combo.currentData()))
        self.test_speaker_button = QPushButton("Test")
        self.test_speaker_button.setToolTip("Play a short sound")
        self.test_speaker_button.clicked.connect(
            lambda: self.testSpeakerRequested.emit(self.output_combo.currentData())
        )
        self.rescan_button = QPushButton(RESCAN_BUTTON)
        self.rescan_button.clicked.connect(lambda: self.request_devices(rescan=True))
        self.audio_status = QLabel()
        self.audio_status.setWordWrap(True)
        self.earcons_check = QCheckBox("Play a short sound when listening starts and stops")
        devices = QGroupBox("Devices")
        form = QFormLayout(devices)
        for label, combo, button in (
            ("Microphone", self.input_combo, self.test_mic_button),
            ("Speaker", self.output_combo, self.test_speaker_button),
        ):
            row = QHBoxLayout()
            row.addWidget(combo, 1)
            row.addWidget(button)
            form.addRow(label, row)
        form.addRow(self.rescan_button)
        form.addRow(self.audio_status)
        layout = QVBoxLayout(self)
        layout.addWidget(devices)
        layout.addWidget(self.earcons_check)
        layout.addStretch(1)

    def show_settings(self, s: AppSettings) -> None:
        self._fill_device_combo(self.input_combo, s.input_device)
        self._fill_device_combo(self.output_combo, s.output_device)
        self.earcons_check.setChecked(s.earcons)

    def changes(self) -> dict[str, Any]:
        return {
            "input_device": self.input_combo.currentData(),
            "output_device": self.output_combo.currentData(),
            "earcons": self.earcons_check.isChecked(),
        }

    # ----------------------------------------------------------------------------- devices

    def request_devices(self, *, rescan: bool) -> None:
        self.rescan_button.setEnabled(False)
        self.audio_status.setText("Looking for audio devices…")
        coloured(self.audio_status, None)
        self.devicesRequested.emit(rescan)

    def _fill_device_combo(self, combo: QComboBox, chosen: str | None) -> None:
        is_input = combo is self.input_combo
        usable = [d for d in self._devices or () if (d.is_input if is_input else d.is_output)]
        names = [d.name for d in usable]
        combo.clear()
        combo.addItem("System default", None)
        for device in usable:
            # Windows lists one device under several host APIs: name the API only when it matters.
            label = device.name if names.count(device.name) == 1 else f"{device.name} ({device.host_api})"
            combo.addItem(label, device.key)
            combo.setItemData(combo.count() - 1, device.key, Qt.ItemDataRole.ToolTipRole)
        if chosen is not None and combo.findData(chosen) < 0:
            missing = "not connected" if self._devices is not None else "looking…"
            combo.addItem(f"{chosen} ({missing})", chosen)
        combo.setCurrentIndex(combo.findData(chosen) if chosen is not None else 0)

    def show_devices(self, listed: DevicesListed) -> None:
        """The engine's answer to ``devicesRequested``; a failed scan keeps the earlier list."""
        self.rescan_button.setEnabled(True)
        if listed.error is not None:
            self.audio_status.setText(describe_failed(listed.error).plain())
            coloured(self.audio_status, ERROR_COLOUR)
            return
        self._devices = listed.devices
        for combo in (self.input_combo, self.output_combo):
            self._fill_device_combo(combo, combo.currentData())
        n_in = sum(d.is_input for d in listed.devices)
        n_out = sum(d.is_output for d in listed.devices)
        if n_in and n_out:
            self.audio_status.setText(f"Found {n_in} microphone(s) and {n_out} speaker(s).")
            coloured(self.audio_status, None)
        else:
            missing = " or ".join(w for w, n in (("microphone", n_in), ("speaker", n_out)) if not n)
            self.audio_status.setText(f"No {missing} found. Connect one, then look again.")
            coloured(self.audio_status, ERROR_COLOUR)

    def show_audio_test_result(self, text: str, ok: bool) -> None:
        self.audio_status.setText(text)
        coloured(self.audio_status, None if ok else ERROR_COLOUR)
