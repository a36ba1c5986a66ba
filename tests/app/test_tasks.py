"""app.tasks: work runs off the UI thread, answers come back on it, failures are never lost."""

from __future__ import annotations

import sys
import threading
from types import TracebackType

import pytest
from PySide6.QtCore import QObject, QThread
from PySide6.QtWidgets import QApplication, QLabel
from pytestqt.qtbot import QtBot

from app.tasks import is_ui_thread, on_main, run_in_background, run_on_main, wait_for_background


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object, bool]] = []  # (what, value, ran on the UI thread)

    def __call__(self, what: str) -> object:
        return lambda value=None: self.calls.append((what, value, is_ui_thread()))


def test_result_is_delivered_on_the_ui_thread(qtbot: QtBot) -> None:
    recorder = _Recorder()
    worker_threads: list[bool] = []

    def work() -> int:
        worker_threads.append(QThread.currentThread() is QApplication.instance().thread())
        return 42

    run_in_background(work, recorder("done"), recorder("error"))
    qtbot.waitUntil(lambda: bool(recorder.calls))
    assert worker_threads == [False]  # fn ran in the pool
    assert recorder.calls == [("done", 42, True)]


def test_exception_reaches_on_error_on_the_ui_thread(qtbot: QtBot) -> None:
    recorder = _Recorder()

    def work() -> None:
        raise ValueError("boom")

    run_in_background(work, recorder("done"), recorder("error"))
    qtbot.waitUntil(lambda: bool(recorder.calls))
    (what, value, on_ui), = recorder.calls
    assert (what, on_ui) == ("error", True)
    assert isinstance(value, ValueError) and str(value) == "boom"


def test_exception_without_on_error_goes_to_the_excepthook(qtbot: QtBot, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[type[BaseException], bool]] = []

    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        seen.append((kind, is_ui_thread()))

    monkeypatch.setattr(sys, "excepthook", hook)
    run_in_background(lambda: 1 / 0, lambda _r: None)
    qtbot.waitUntil(lambda: bool(seen))
    assert seen == [(ZeroDivisionError, True)]


def test_the_ui_keeps_running_while_a_task_blocks(qtbot: QtBot) -> None:
    release = threading.Event()
    recorder = _Recorder()
    run_in_background(lambda: release.wait(10), recorder("done"))
    ticks: list[int] = []
    run_on_main(lambda: ticks.append(1))  # the event loop serves this while the task still waits
    qtbot.waitUntil(lambda: bool(ticks))
    assert recorder.calls == []
    release.set()
    qtbot.waitUntil(lambda: bool(recorder.calls))
    assert recorder.calls == [("done", True, True)]


def test_progress_from_a_worker_runs_on_the_ui_thread_in_order(qtbot: QtBot) -> None:
    recorder = _Recorder()
    progress = on_main(recorder("progress"))

    def work() -> str:
        for step in range(5):
            progress(step)
        return "finished"

    run_in_background(work, recorder("done"))
    qtbot.waitUntil(lambda: len(recorder.calls) == 6)
    assert recorder.calls == [("progress", i, True) for i in range(5)] + [("done", "finished", True)]


def test_run_on_main_from_a_plain_python_thread(qtbot: QtBot) -> None:
    recorder = _Recorder()
    thread = threading.Thread(target=lambda: run_on_main(lambda: recorder("ran")("x")))
    thread.start()
    thread.join()
    qtbot.waitUntil(lambda: bool(recorder.calls))
    assert recorder.calls == [("ran", "x", True)]


def test_answers_for_a_deleted_context_are_dropped(qtbot: QtBot) -> None:
    label = QLabel()
    release = threading.Event()
    delivered: list[str] = []
    run_in_background(
        lambda: release.wait(10) and "late", lambda r: delivered.append(label.text() + str(r)), context=label
    )
    progress = on_main(lambda text: label.setText(text), context=label)
    label.deleteLater()
    qtbot.waitUntil(lambda: not _alive(label))
    progress("too late")  # would raise "Internal C++ object already deleted" if delivered
    release.set()
    assert wait_for_background(10_000)
    marker: list[int] = []
    run_on_main(lambda: marker.append(1))  # queued after the job's answer
    qtbot.waitUntil(lambda: bool(marker))
    assert delivered == []


def _alive(obj: QObject) -> bool:
    import shiboken6

    return shiboken6.isValid(obj)
