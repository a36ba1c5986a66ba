"""The main window opens and closes headless (offscreen Qt) and shows what the user needs."""

from __future__ import annotations

from pytestqt.qtbot import QtBot

from app.main_window import MainWindow, about_text
from app.settings import DEFAULT_TALK_KEY
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
    text = about_text("LLaMA-Omni nf4 on cuda:0; vocoder: onnx on CUDAExecutionProvider")
    assert f"OmniTalk: {__version__}" in text
    for name in ("Python", "PySide6", "torch", "onnxruntime-gpu"):
        assert f"{name}: " in text
    assert "GPU: no NVIDIA GPU found" in text  # this machine has none; the line is still there
    assert "CPUExecutionProvider" in text
    assert "Model: LLaMA-Omni nf4 on cuda:0; vocoder: onnx on CUDAExecutionProvider" in text
    assert "Model: not loaded" in about_text()


def test_window_screenshot_is_not_blank(qtbot: QtBot, tmp_path) -> None:  # type: ignore[no-untyped-def]
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    image = window.grab().toImage()
    assert image.width() > 300 and image.height() > 300
    colours = {image.pixel(x, y) for x in range(0, image.width(), 17) for y in range(0, image.height(), 17)}
    assert len(colours) > 3  # widgets were painted, not an empty frame
