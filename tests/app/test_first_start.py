"""First start without a usable GPU: a dialog says why and how to fix it, offers the CPU, and asks once."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtWidgets import QApplication, QMainWindow

from app.first_start import CONTINUE_TEXT, DeviceCheck, DeviceProblemDialog, accepted_keys, start_device_check
from app.main_window import MainWindow
from engine.version import __version__
from installer.cuda_check import TorchProbe
from installer.device_check import DeviceState
from installer.gpu import GpuInfo

RTX = GpuInfo(("NVIDIA GeForce RTX 4060",), "580.65", (13, 0), ((8, 9),))
CPU_TORCH_NEXT_TO_GPU = DeviceState(RTX, TorchProbe("2.13.0+cpu", None, False), True)
CUDA_WORKS = DeviceState(
    RTX, TorchProbe("2.13.0", "13.0", True, devices=(("NVIDIA GeForce RTX 4060", (8, 9)),), arch_list=("sm_89",)), True
)


@pytest.fixture()
def window(qtbot) -> QMainWindow:
    window = QMainWindow()
    qtbot.addWidget(window)
    window.show()
    return window


def _run(qtbot, window: QMainWindow, state: DeviceState, path: Path) -> DeviceCheck:
    check = DeviceCheck(window, probe_fn=lambda: state, state_path=path)
    with qtbot.waitSignal(check.checked, timeout=10_000):
        check.start()
    return check


def test_cpu_torch_next_to_a_gpu_asks_once_and_continue_is_remembered(qtbot, window, tmp_path: Path) -> None:
    path = tmp_path / "device-check.json"
    check = _run(qtbot, window, CPU_TORCH_NEXT_TO_GPU, path)
    dialog = check.dialog
    assert isinstance(dialog, DeviceProblemDialog) and dialog.isVisible()
    assert dialog.text() == "<b>PyTorch is the CPU-only build</b>"
    assert "RTX 4060" in dialog.informativeText() and "OMNITALK_TORCH=cuda" in dialog.informativeText()
    assert dialog.continue_button.text() == CONTINUE_TEXT
    with qtbot.waitSignal(check.answered) as answered:
        dialog.continue_button.click()
    assert answered.args == [True] and window.isVisible()
    assert accepted_keys(path) == {"cpu_torch"}
    again = _run(qtbot, window, CPU_TORCH_NEXT_TO_GPU, path)
    assert again.dialog is None  # the same situation is not asked about twice


def test_quit_closes_the_window_and_is_not_remembered(qtbot, window, tmp_path: Path) -> None:
    path = tmp_path / "device-check.json"
    check = _run(qtbot, window, CPU_TORCH_NEXT_TO_GPU, path)
    assert check.dialog is not None
    with qtbot.waitSignal(check.answered) as answered:
        check.dialog.quit_button.click()
    assert answered.args == [False]
    qtbot.waitUntil(lambda: not window.isVisible())
    assert accepted_keys(path) == set()


def test_working_cuda_shows_nothing(qtbot, window, tmp_path: Path) -> None:
    check = _run(qtbot, window, CUDA_WORKS, tmp_path / "s.json")
    assert check.dialog is None and QApplication.activeModalWidget() is None


def test_the_app_starts_the_check_unless_told_to_skip(qtbot, window, monkeypatch) -> None:
    assert start_device_check(window) is None  # the test suite's setting (tests/conftest.py)
    monkeypatch.setenv("OMNITALK_GPU_CHECK", "")
    check = start_device_check(window)
    assert isinstance(check, DeviceCheck) and check.parent() is window
    with qtbot.waitSignal(check.checked, timeout=60_000):
        pass  # the real probe: on this machine without a GPU it finds a problem
    if check.dialog is not None:
        check.dialog.continue_button.click()


def test_help_copies_a_diagnostic_report_without_the_conversation(qtbot, monkeypatch) -> None:
    import app.self_check as self_check

    no_gpu = self_check.Check("GPU", self_check.WARN, "No NVIDIA GPU found")
    monkeypatch.setattr(self_check, "gpu_check", lambda: no_gpu)
    window = MainWindow()
    qtbot.addWidget(window)
    window.model_summary = "tiny test model on cpu"
    assert window.copy_report_action in window.menuBar().actions()[-1].menu().actions()
    QApplication.clipboard().clear()
    window.copy_report_action.trigger()
    assert not window.copy_report_action.isEnabled()
    qtbot.waitUntil(lambda: "diagnostic report" in QApplication.clipboard().text(), timeout=60_000)
    report = QApplication.clipboard().text()
    assert f"OmniTalk {__version__} " in report
    for line in ("[  ok] torch", "[  ok] PySide6.QtWidgets", "[warn] GPU", "tiny test model on cpu", "--self-check"):
        assert line in report, report
    assert window.copy_report_action.isEnabled()
    assert "clipboard" in window.status_label.text()
