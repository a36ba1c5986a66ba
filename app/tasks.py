"""The one background-task helper: run slow work off the UI thread, get the answer back on it.

``run_in_background(fn, on_done, on_error)`` runs ``fn()`` on a thread pool; ``on_done(result)``
or ``on_error(exc)`` then runs on the UI thread. ``run_on_main(fn)`` queues ``fn()`` onto the UI
thread from any thread, and ``on_main(callback)`` wraps a callback (a download's progress, say) so
that calling it from a worker runs it on the UI thread instead.

Delivery goes through a signal of a QObject that lives in the UI thread, with a queued connection.
``QTimer.singleShot`` is no substitute: called from a plain Python thread it never fires.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import shiboken6
from PySide6.QtCore import QCoreApplication, QObject, QRunnable, Qt, QThread, QThreadPool, Signal, Slot

logger = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

# Downloads hold a thread for as long as they run; validations, device scans and GPU probes must
# not queue behind them, so the pool is wider than the (often 2-4) CPU cores.
MAX_BACKGROUND_THREADS = 8


class _Dispatcher(QObject):
    """Lives in the UI thread; ``call`` carries a zero-argument callable to run there."""

    call = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.call.connect(self._run, Qt.ConnectionType.QueuedConnection)

    @Slot(object)
    def _run(self, fn: Callable[[], object]) -> None:
        fn()


_lock = threading.Lock()
_dispatcher: _Dispatcher | None = None
_pool: QThreadPool | None = None


def _ui_dispatcher() -> _Dispatcher:
    global _dispatcher
    with _lock:
        if _dispatcher is None:
            app = QCoreApplication.instance()
            if app is None:
                raise RuntimeError("Background tasks need a QApplication (create it first).")
            dispatcher = _Dispatcher()
            if dispatcher.thread() is not app.thread():
                dispatcher.moveToThread(app.thread())
            _dispatcher = dispatcher
        return _dispatcher


def _thread_pool() -> QThreadPool:
    global _pool
    with _lock:
        if _pool is None:
            _pool = QThreadPool()
            _pool.setMaxThreadCount(MAX_BACKGROUND_THREADS)
        return _pool


def is_ui_thread() -> bool:
    app = QCoreApplication.instance()
    return app is not None and QThread.currentThread() is app.thread()


def run_on_main(fn: Callable[[], object]) -> None:
    """Queue ``fn()`` to run on the UI thread (later, even when called from the UI thread)."""
    _ui_dispatcher().call.emit(fn)


def _deliver(context: QObject | None, fn: Callable[[], object]) -> None:
    # A dialog closed while its job ran is gone by the time the answer arrives: drop the answer.
    if context is None or shiboken6.isValid(context):
        fn()


def on_main(callback: Callable[P, object], *, context: QObject | None = None) -> Callable[P, None]:
    """``callback`` made safe to call from any thread: each call runs on the UI thread, in order.

    With ``context``, calls arriving after that QObject was deleted are dropped.
    """

    def marshalled(*args: P.args, **kwargs: P.kwargs) -> None:
        run_on_main(lambda: _deliver(context, lambda: callback(*args, **kwargs)))

    return marshalled


def _report_unhandled(exc: BaseException) -> None:
    """No ``on_error``: hand the failure to the app's excepthook (logs it, tells the user)."""
    sys.excepthook(type(exc), exc, exc.__traceback__)


class _Job(QRunnable):
    def __init__(
        self,
        fn: Callable[[], T],
        on_done: Callable[[T], object],
        on_error: Callable[[BaseException], object] | None,
        context: QObject | None,
    ) -> None:
        super().__init__()
        self.setAutoDelete(True)
        self._fn = fn
        self._on_done = on_done
        self._on_error = on_error
        self._context = context

    def run(self) -> None:
        # Closures below capture locals, not self: the runnable is deleted once run() returns.
        fn, on_done, on_error, context = self._fn, self._on_done, self._on_error, self._context
        try:
            result = fn()
        except BaseException as exc:  # the worker's boundary: every failure goes back to the UI
            error = exc  # `exc` is unbound when the except block ends; the lambdas run later
            if on_error is None:
                logger.error("Background task %r failed", fn, exc_info=error)
                run_on_main(lambda: _report_unhandled(error))
            else:
                logger.debug("Background task %r failed: %r", fn, error)
                run_on_main(lambda: _deliver(context, lambda: on_error(error)))
            return
        run_on_main(lambda: _deliver(context, lambda: on_done(result)))


def run_in_background(
    fn: Callable[[], T],
    on_done: Callable[[T], object],
    on_error: Callable[[BaseException], object] | None = None,
    *,
    context: QObject | None = None,
) -> None:
    """Run ``fn()`` on the pool; then ``on_done(result)`` or ``on_error(exc)`` on the UI thread.

    Without ``on_error`` an exception goes to ``sys.excepthook`` (never silently lost). With
    ``context`` (usually the widget that asked), nothing is delivered once it has been deleted.
    Call from the UI thread.
    """
    _ui_dispatcher()  # created here, in the UI thread, before any worker needs it
    _thread_pool().start(_Job(fn, on_done, on_error, context))


def wait_for_background(timeout_ms: int = -1) -> bool:
    """Block until every background task has finished (shutdown and tests); True if they all did."""
    return _thread_pool().waitForDone(timeout_ms)
