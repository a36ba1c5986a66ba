"""The settings dialog: every field round-trips, memory fit is honest, checks run in the background."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QDialogButtonBox
from pytestqt.qtbot import QtBot

from app.settings import _RANGES, AppSettings
from app.settings_dialog import LATENCY_PRESETS, SettingsDialog
from app.tasks import wait_for_background
from app.widgets import ERROR_COLOUR
from engine.audio.backend import AudioDevice
from engine.config import OFFICIAL_DIMS
from engine.errors import AudioDeviceError, ModelMissing
from engine.events import DevicesListed, Failed
from engine.gpu import GpuInfo
from engine.preflight import ModelCheck, ModelSize, SystemInfo, estimate_all, gb

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
GB = 1_000_000_000
MIC = AudioDevice(1, "USB Mic", "ALSA", 1, 0, 48000, is_default_input=True)
HEADSET = AudioDevice(2, "Headset", "ALSA", 1, 2, 48000)
SPEAKER = AudioDevice(3, "Speakers", "ALSA", 0, 2, 48000, is_default_output=True)
GPUS = (GpuInfo(0, "NVIDIA GeForce RTX 4070 Ti", 12 * GB, 10 * GB), GpuInfo(1, "NVIDIA RTX A4000", 16 * GB, 15 * GB))


def _system(gpus: tuple[GpuInfo, ...] = GPUS, ram: int | None = 30 * GB) -> SystemInfo:
    return SystemInfo(gpus=gpus, ram_free_bytes=ram)


@pytest.fixture(autouse=True)
def _no_leftover_tasks() -> object:
    yield
    assert wait_for_background(30_000)


def _dialog(
    qtbot: QtBot,
    settings: AppSettings,
    devices: Callable[[bool], list[AudioDevice]] = lambda _rescan: [MIC, HEADSET, SPEAKER],
    **kwargs: object,
) -> SettingsDialog:
    """The dialog as the app wires it, with ``devices(rescan)`` answering the engine's ListDevices."""
    kwargs.setdefault("probe", _system)
    dialog = SettingsDialog(settings, **kwargs)  # type: ignore[arg-type]

    def answer(rescan: bool) -> None:
        try:
            listed = DevicesListed(tuple(devices(rescan)), rescan)
        except AudioDeviceError as exc:
            listed = DevicesListed((), rescan, Failed(exc.kind, exc.message, exc.fix))
        QTimer.singleShot(0, lambda: dialog.show_devices(listed))  # the engine answers later, queued

    dialog.devicesRequested.connect(answer)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    qtbot.waitUntil(lambda: dialog.model_tab.fit_label.property("fits") != "pending", timeout=30_000)
    qtbot.waitUntil(lambda: dialog.audio_tab.input_combo.count() > 1)
    return dialog


NON_DEFAULT = AppSettings(
    model_dir="/models/omni",
    speech_encoder="/models/whisper/large-v3.pt",
    vocoder_dir="/models/vocoder",
    quant="int8",
    gpu="cuda:1",
    adapter_dir="/adapters/mine",
    licence_accepted=True,
    system_prompt="Answer like a pirate.",
    temperature=0.7,
    max_new_tokens=1024,
    first_chunk_units=15,
    chunk_units=55,
    input_device=HEADSET.key,
    output_device=SPEAKER.key,
    earcons=False,
    talk_key="Ctrl+Space",
    global_hotkey=True,
    hold_to_talk=False,
    theme="dark",
    window_geometry="AAAA",
)


def _no_check(model_dir: Path, encoder: Path | None, vocoder: Path | None) -> ModelCheck:
    raise ModelMissing("config.json is missing.", path=model_dir, fix="Choose the complete model folder.")


def test_unchanged_dialog_returns_the_same_settings(qtbot: QtBot) -> None:
    dialog = _dialog(qtbot, NON_DEFAULT, check_model=_no_check)
    assert dialog.result_settings() == NON_DEFAULT
    assert dialog.model_tab.gpu_combo.currentText().startswith("GPU 1: NVIDIA RTX A4000")
    assert dialog.audio_tab.input_combo.currentText() == "Headset"


def test_every_field_is_edited_through_its_widget(qtbot: QtBot) -> None:
    dialog = _dialog(qtbot, AppSettings())
    dialog.model_tab.model_dir_edit.setText("/data/omni")
    dialog.model_tab.encoder_edit.setText("")
    dialog.model_tab.vocoder_dir_edit.setText("/data/vocoder")
    dialog.model_tab.quant_buttons["fp16"].click()
    dialog.model_tab.gpu_combo.setCurrentIndex(dialog.model_tab.gpu_combo.findData("cuda:1"))
    dialog.conversation_tab.prompt_edit.setPlainText("  Be brief.  ")
    dialog.conversation_tab.temperature_spin.setValue(0.35)
    dialog.conversation_tab.max_tokens_spin.setValue(300)
    dialog.conversation_tab.latency_slider.setValue(3)  # "Best quality" preset
    dialog.audio_tab.input_combo.setCurrentIndex(dialog.audio_tab.input_combo.findData(MIC.key))
    dialog.audio_tab.output_combo.setCurrentIndex(dialog.audio_tab.output_combo.findData(HEADSET.key))
    dialog.audio_tab.earcons_check.setChecked(False)
    dialog.controls_tab.toggle_radio.setChecked(True)
    dialog.controls_tab.global_hotkey_check.setChecked(True)
    dialog.look_tab.theme_combo.setCurrentIndex(dialog.look_tab.theme_combo.findData("light"))
    best = LATENCY_PRESETS[3]
    assert dialog.result_settings() == AppSettings(
        model_dir="/data/omni",
        vocoder_dir="/data/vocoder",
        quant="fp16",
        gpu="cuda:1",
        system_prompt="Be brief.",
        temperature=0.35,
        max_new_tokens=300,
        first_chunk_units=best.first_chunk_units,
        chunk_units=best.chunk_units,
        input_device=MIC.key,
        output_device=HEADSET.key,
        earcons=False,
        hold_to_talk=False,
        global_hotkey=True,
        theme="light",
    )
    dialog.audio_tab.input_combo.setCurrentIndex(0)
    assert dialog.audio_tab.input_combo.currentText() == "System default"
    assert dialog.result_settings().input_device is None


def test_controls_cannot_leave_the_valid_ranges(qtbot: QtBot) -> None:
    dialog = _dialog(qtbot, AppSettings())
    for name, box in (
        ("temperature", dialog.conversation_tab.temperature_spin),
        ("max_new_tokens", dialog.conversation_tab.max_tokens_spin),
        ("first_chunk_units", dialog.conversation_tab.first_chunk_spin),
        ("chunk_units", dialog.conversation_tab.chunk_spin),
    ):
        low, high = _RANGES[name]
        box.setValue(high * 10)
        assert getattr(dialog.result_settings(), name) == high
        box.setValue(low - 1000)
        assert getattr(dialog.result_settings(), name) == low
    assert set(dialog.model_tab.quant_buttons) == {"auto", "nf4", "int8", "fp16", "bf16", "fp32"}


def test_latency_presets_and_custom_values(qtbot: QtBot) -> None:
    dialog = _dialog(qtbot, AppSettings())
    conversation = dialog.conversation_tab
    assert conversation.latency_slider.value() == 1 and conversation.latency_label.text().startswith("Balanced")
    dialog.conversation_tab.latency_slider.setValue(0)
    fastest = LATENCY_PRESETS[0]
    assert dialog.conversation_tab.first_chunk_spin.value() == fastest.first_chunk_units
    assert dialog.conversation_tab.chunk_spin.value() == fastest.chunk_units
    assert "0.1 s" in dialog.conversation_tab.latency_label.text()  # 5 units of 20 ms
    dialog.conversation_tab.chunk_spin.setValue(33)
    assert dialog.conversation_tab.latency_label.text().startswith("Custom")
    assert dialog.result_settings().chunk_units == 33


def test_memory_estimate_follows_the_quantization_and_turns_red(qtbot: QtBot) -> None:
    dialog = _dialog(qtbot, AppSettings(gpu="cuda:0"))
    need = estimate_all(OFFICIAL_DIMS, AppSettings().max_new_tokens)
    assert need[("cuda", "nf4")] < 10 * GB < need[("cuda", "int8")], "test assumes nf4 fits in 10 GB and int8 not"

    nf4_text = dialog.model_tab.fit_label.text()
    assert f"needs about {gb(need[('cuda', 'nf4')])} of GPU memory" in nf4_text
    assert "you have 10.0 GB free on NVIDIA GeForce RTX 4070 Ti" in nf4_text
    fit_label = dialog.model_tab.fit_label
    assert fit_label.property("fits") == "yes" and ERROR_COLOUR not in fit_label.styleSheet()
    assert gb(need[("cuda", "int8")]) in dialog.model_tab.quant_buttons["int8"].text()  # every mode shows its need

    dialog.model_tab.quant_buttons["int8"].click()
    assert f"needs about {gb(need[('cuda', 'int8')])}" in dialog.model_tab.fit_label.text()
    assert "does not fit" in dialog.model_tab.fit_label.text()
    assert fit_label.property("fits") == "no" and ERROR_COLOUR in fit_label.styleSheet()

    dialog.model_tab.gpu_combo.setCurrentIndex(dialog.model_tab.gpu_combo.findData("cuda:1"))  # 15 GB free
    assert dialog.model_tab.fit_label.property("fits") == "yes"
    dialog.model_tab.gpu_combo.setCurrentIndex(dialog.model_tab.gpu_combo.findData("cpu"))
    assert f"needs about {gb(need[('cpu', 'int8')])} of RAM" in dialog.model_tab.fit_label.text()
    assert "you have 30.0 GB free on CPU" in dialog.model_tab.fit_label.text()


def test_answer_length_changes_the_estimate(qtbot: QtBot) -> None:
    dialog = _dialog(qtbot, AppSettings())
    before = dialog.model_tab.quant_buttons["fp16"].text()
    with qtbot.waitSignal(dialog.model_tab.estimatesUpdated, timeout=10_000):
        dialog.conversation_tab.max_tokens_spin.setValue(4096)
    assert dialog.model_tab.quant_buttons["fp16"].text() != before
    assert "4096 tokens" in dialog.model_tab.estimate_source_label.text()


def test_missing_gpu_and_no_gpu_are_told(qtbot: QtBot) -> None:
    dialog = _dialog(qtbot, AppSettings(gpu="cuda:3"), probe=lambda: _system(gpus=()))
    assert dialog.model_tab.gpu_combo.currentText() == "GPU 3 (not found)"
    assert "unknown" in dialog.model_tab.fit_label.text()
    assert dialog.result_settings().gpu == "cuda:3"  # kept until the user picks another
    dialog.model_tab.gpu_combo.setCurrentIndex(dialog.model_tab.gpu_combo.findData("auto"))
    assert dialog.model_tab.gpu_combo.currentText() == "Automatic (CPU)"
    assert "of RAM" in dialog.model_tab.fit_label.text()


def test_validation_of_an_empty_folder_shows_message_and_fix(qtbot: QtBot, tmp_path: Path) -> None:
    dialog = _dialog(qtbot, AppSettings())
    dialog.model_tab.model_dir_edit.setText(str(tmp_path))
    with qtbot.waitSignal(dialog.model_tab.validationFinished, timeout=10_000) as finished:
        dialog.model_tab.validate_button.click()
    assert finished.args == [False]
    text = dialog.model_tab.validation_label.text()
    assert "config.json is missing." in text and "Choose the complete model folder." in text
    assert ERROR_COLOUR in dialog.model_tab.validation_label.styleSheet()
    assert dialog.model_tab.validate_button.isEnabled()


def test_validation_runs_in_the_background(qtbot: QtBot, tmp_path: Path) -> None:
    release = threading.Event()
    seen: list[tuple[Path, Path | None, Path | None]] = []

    def slow_check(model_dir: Path, encoder: Path | None, vocoder: Path | None) -> ModelCheck:
        seen.append((model_dir, encoder, vocoder))
        release.wait(10)
        dims = OFFICIAL_DIMS
        return ModelCheck(dims=dims, summary="LLaMA-Omni: 32 layers")

    def sizer(model_dir: Path | None, encoder: Path | None = None, vocoder: Path | None = None, *, max_new_tokens: int):
        return ModelSize(model_dir is not None, OFFICIAL_DIMS, 1_000_000, estimate_all(OFFICIAL_DIMS, max_new_tokens))

    dialog = _dialog(qtbot, AppSettings(), check_model=slow_check, sizer=sizer)
    dialog.model_tab.model_dir_edit.setText(str(tmp_path / "omni"))
    dialog.model_tab.vocoder_dir_edit.setText(str(tmp_path / "voc"))
    dialog.model_tab.validate_button.click()  # returns at once although the check blocks
    assert dialog.model_tab.validation_label.text() == "Checking the files…"
    assert not dialog.model_tab.validate_button.isEnabled()
    dialog.tabs.setCurrentIndex(1)  # the dialog still reacts
    assert dialog.tabs.currentIndex() == 1
    with (
        qtbot.waitSignal(dialog.model_tab.validationFinished, timeout=10_000) as finished,
        qtbot.waitSignal(dialog.model_tab.estimatesUpdated, timeout=10_000),  # re-estimated for the found model
    ):
        release.set()
    assert finished.args == [True]
    assert seen == [(tmp_path / "omni", None, tmp_path / "voc")]
    assert dialog.model_tab.validation_label.text() == "✓ Found LLaMA-Omni: 32 layers."
    assert f"the model in {tmp_path / 'omni'} (1.0 MB of files)" in dialog.model_tab.estimate_source_label.text()


def test_validation_with_no_folder_asks_for_one(qtbot: QtBot) -> None:
    dialog = _dialog(qtbot, AppSettings())
    with qtbot.waitSignal(dialog.model_tab.validationFinished) as finished:
        dialog.model_tab.validate_button.click()
    assert finished.args == [False]
    assert dialog.model_tab.validation_label.text() == "Choose the Omni model folder first."


def test_hotkey_capture(qtbot: QtBot) -> None:
    dialog = _dialog(qtbot, AppSettings())
    dialog.tabs.setCurrentIndex(3)
    edit = dialog.controls_tab.talk_key_edit
    assert edit.keySequence().toString() == "F9"  # shows the current key
    edit.setFocus()
    qtbot.keyClick(edit, Qt.Key.Key_Space, Qt.KeyboardModifier.ControlModifier)
    assert dialog.result_settings().talk_key == "Ctrl+Space"
    qtbot.keyClick(edit, Qt.Key.Key_F10)
    assert dialog.result_settings().talk_key == "F10"
    qtbot.keyClick(edit, Qt.Key.Key_Escape)  # taken: Esc stops an answer
    assert dialog.result_settings().talk_key == "F10"
    assert "Esc is taken" in dialog.controls_tab.talk_key_note.text()
    dialog.controls_tab.talk_key_reset.click()
    assert dialog.result_settings().talk_key == "F9" and edit.keySequence().toString() == "F9"


def test_restore_defaults_keeps_the_model_folders(qtbot: QtBot) -> None:
    dialog = _dialog(qtbot, NON_DEFAULT, check_model=_no_check)
    dialog.button_box.button(QDialogButtonBox.StandardButton.RestoreDefaults).click()
    expected = AppSettings().replace(
        model_dir=NON_DEFAULT.model_dir,
        speech_encoder=NON_DEFAULT.speech_encoder,
        vocoder_dir=NON_DEFAULT.vocoder_dir,
        adapter_dir=NON_DEFAULT.adapter_dir,
        licence_accepted=True,
        window_geometry=NON_DEFAULT.window_geometry,
    )
    assert dialog.result_settings() == expected
    assert dialog.audio_tab.input_combo.count() == 3  # the scanned devices are still offered


def test_audio_tests_emit_the_chosen_device(qtbot: QtBot) -> None:
    dialog = _dialog(qtbot, AppSettings(input_device=MIC.key))
    with qtbot.waitSignal(dialog.testMicrophoneRequested) as mic:
        dialog.audio_tab.test_mic_button.click()
    assert mic.args == [MIC.key]
    with qtbot.waitSignal(dialog.testSpeakerRequested) as speaker:
        dialog.audio_tab.test_speaker_button.click()
    assert speaker.args == [None]  # system default
    dialog.audio_tab.show_audio_test_result("Could not open the speaker.", ok=False)
    assert ERROR_COLOUR in dialog.audio_tab.audio_status.styleSheet()


def test_unplugged_device_is_kept_and_marked(qtbot: QtBot) -> None:
    dialog = _dialog(qtbot, AppSettings(output_device="ALSA: Old USB speaker"), devices=lambda _rescan: [MIC])
    assert dialog.audio_tab.output_combo.currentText() == "ALSA: Old USB speaker (not connected)"
    assert dialog.result_settings().output_device == "ALSA: Old USB speaker"
    assert "No speaker found" in dialog.audio_tab.audio_status.text()


def test_rescan_failure_is_shown(qtbot: QtBot) -> None:
    def busy(rescan: bool) -> list[AudioDevice]:
        if rescan:
            raise AudioDeviceError("PortAudio could not be restarted.", fix="Stop talking first.")
        return [MIC, HEADSET, SPEAKER]

    dialog = _dialog(qtbot, AppSettings(), devices=busy)
    dialog.audio_tab.rescan_button.click()
    qtbot.waitUntil(lambda: "Stop talking first." in dialog.audio_tab.audio_status.text())
    assert dialog.audio_tab.input_combo.count() == 3  # the earlier list stays


def test_screenshots(qtbot: QtBot) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    dialog = _dialog(qtbot, NON_DEFAULT.replace(quant="int8", gpu="cuda:0"), check_model=_no_check)
    qtbot.waitUntil(lambda: "config.json is missing" in dialog.model_tab.validation_label.text())
    for index in range(dialog.tabs.count()):
        dialog.tabs.setCurrentIndex(index)
        QApplication.processEvents()  # let pending layout requests run before grabbing
        name = dialog.tabs.tabText(index).lower()
        image = dialog.grab().toImage()
        assert image.save(str(ARTIFACTS / f"settings_{index}_{name}.png"))
        # Every tab's content fits the dialog at its default size: nothing is squeezed or cut off.
        page = dialog.tabs.currentWidget()
        need, have = page.minimumSizeHint(), page.size()
        assert need.width() <= have.width() and need.height() <= have.height(), (name, need, have)
