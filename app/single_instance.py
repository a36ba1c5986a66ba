"""One OmniTalk at a time: starting it again (a second click on the menu entry or the shortcut while
it runs) brings the running window forward instead of opening a second app that would load the
model a second time (it does not fit twice on a consumer GPU, and two apps would fight over the
microphone and the talk key).

The running app listens on a ``QLocalServer`` (a Unix socket or a Windows named pipe, this user
only) named after its settings folder, so portable installs and tests, each with their own
``OMNITALK_HOME``, never see each other. A new start first tries to connect; if it can, it asks the
running app to show its window and exits. A name left behind by a crash is reclaimed.
Owner: the UI thread (the server and its connections live there).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket
from PySide6.QtWidgets import QWidget

logger = logging.getLogger(__name__)

SERVER_PREFIX = "OmniTalk-"
CONNECT_TIMEOUT_MS = 1000
WRITE_TIMEOUT_MS = 1000
SHOW_REQUEST = b"show\n"


def server_name(settings_dir: Path) -> str:
    """A name per settings folder: ``OmniTalk-<16 hex digits>``."""
    digest = hashlib.sha256(str(settings_dir.expanduser().resolve()).encode("utf-8")).hexdigest()
    return SERVER_PREFIX + digest[:16]


def ask_running_instance(name: str) -> bool:
    """Ask an OmniTalk already running under ``name`` to show its window; False when none runs."""
    socket = QLocalSocket()
    socket.connectToServer(name)
    if not socket.waitForConnected(CONNECT_TIMEOUT_MS):
        return False
    socket.write(SHOW_REQUEST)
    delivered = socket.waitForBytesWritten(WRITE_TIMEOUT_MS)
    socket.disconnectFromServer()
    return delivered


def bring_to_front(window: QWidget) -> None:
    """Show ``window`` (restored if minimised) above the others and give it the focus."""
    window.setWindowState((window.windowState() & ~Qt.WindowState.WindowMinimized) | Qt.WindowState.WindowActive)
    window.show()
    window.raise_()
    window.activateWindow()


class InstanceServer(QObject):
    """Listens for later starts; ``showRequested`` when one asks for the window."""

    showRequested = Signal()

    def __init__(self, name: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self._server = QLocalServer(self)
        self._server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        self._server.newConnection.connect(self._accept)

    def listen(self) -> bool:
        """Start listening; reclaims a name a crashed OmniTalk left behind. False if that fails too."""
        if self._server.listen(self.name):
            return True
        QLocalServer.removeServer(self.name)  # nobody answered on it (we asked first): it is stale
        if self._server.listen(self.name):
            return True
        logger.warning("cannot listen for other starts of OmniTalk: %s", self._server.errorString())
        return False

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while (connection := self._server.nextPendingConnection()) is not None:
            # A bound slot of this QObject (not a lambda): Qt drops the connection when either side goes.
            connection.readyRead.connect(self._read)
            connection.disconnected.connect(connection.deleteLater)

    def _read(self) -> None:
        connection = self.sender()
        if isinstance(connection, QLocalSocket) and SHOW_REQUEST.strip() in bytes(connection.readAll().data()):
            logger.info("OmniTalk was started again: showing this window")
            self.showRequested.emit()
