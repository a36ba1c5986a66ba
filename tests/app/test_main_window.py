"""The main window opens and closes headless (offscreen Qt) and shows what the user needs."""

from __future__ import annotations

import pytest
from pytestqt.qtbot import QtBot

from app.help_dialogs import about_text
from app.main_window import MainWindow
from app.settings import DEFAULT_TALK_KEY
from engine.events import ModelInfo
from engine.version import __version__


def test_main_window_opens_and_closes(qtbot: QtBot) -> None:
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    assert window.isVisible()
    assert window.windowTitle() == "OmniTalk"
    # Without a model the talk controls are visibly unavailable, and say why.
    assert not window.talk_button.isEnabled()
    assert DEFAULT_TALK_KEY in window.talk_button.text()
    assert window.status_label.text().startswith("No model loaded")
    window.quit_action.trigger()
    qtbot.waitUntil(lambda: not window.isVisible())


def test_about_lists_versions_gpu_and_providers() -> None:
    text = about_text()
    assert f"OmniTalk: {__version__}" in text
    for name in ("Python", "PySide6", "torch", "onnxruntime-gpu"):
        assert f"{name}: " in text
    assert "GPU: no NVIDIA GPU found" in text  # this machine has none; the line is still there
    assert "Model: not loaded" in text and "Audio: not checked yet" in text


def test_about_shows_what_is_in_use_not_what_the_wheel_offers() -> None:
    """The onnxruntime-gpu wheel offers TensorRT and CUDA on a PC without a GPU; About names only the
    providers the vocoder session uses, the torch device, the audio status and the model licence."""
    onnxruntime = pytest.importorskip("onnxruntime")
    assert "CUDAExecutionProvider" in onnxruntime.get_available_providers(), "test assumes the GPU wheel"
    info = ModelInfo("cpu", "fp32", "onnx", ("CPUExecutionProvider",), licence=None, official=True)
    text = about_text(info, "1 microphone(s), 1 speaker(s)", "LLaMA-Omni (32 layers) fp32 on cpu")
    assert "Voice (vocoder): onnxruntime on CPUExecutionProvider" in text
    assert "CUDAExecutionProvider" not in text and "Tensorrt" not in text
    assert "Model runs on: cpu, 32-bit (fp32)" in text
    assert "Audio: 1 microphone(s), 1 speaker(s)" in text
    assert "Model licence: LLaMA-Omni weights: academic, non-commercial use only" in text
    gpu = ModelInfo("cuda:0", "nf4", "onnx", ("CUDAExecutionProvider", "CPUExecutionProvider"), "apache-2.0", False)
    text = about_text(gpu, "the PortAudio sound library is missing")
    assert "Model runs on: cuda:0, 4-bit (nf4)" in text
    assert "onnxruntime on CUDAExecutionProvider, CPUExecutionProvider" in text
    assert "Model licence: apache-2.0 (from the model card)" in text
    assert "Audio: the PortAudio sound library is missing" in text
    no_voice = ModelInfo("cpu", "fp32", None, (), None, False)
    text = about_text(no_voice)
    assert "Voice (vocoder): none: answers are text-only" in text and "not stated in the model folder" in text


def test_window_screenshot_is_not_blank(qtbot: QtBot, tmp_path) -> None:  # type: ignore[no-untyped-def]
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    image = window.grab().toImage()
    assert image.width() > 300 and image.height() > 300
    colours = {image.pixel(x, y) for x in range(0, image.width(), 17) for y in range(0, image.height(), 17)}
    assert len(colours) > 3  # widgets were painted, not an empty frame
