"""Global push-to-talk hotkey: works while another application has focus (pynput).

pynput is imported lazily: it raises at import without a display, and some desktops (Wayland
sessions, locked-down Windows accounts) allow no global hook at all. Then ``start()`` returns
False and ``unavailable`` says why; the in-window hotkey keeps working.

pynput reports no auto-repeat flag, so repeats are removed here: a press of a key that is already
down is ignored. Modifiers must match exactly ("F9" does not fire on Ctrl+F9).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

logger = logging.getLogger(__name__)

MODIFIERS = ("ctrl", "shift", "alt", "meta")
HOOK_START_TIMEOUT_S = 3.0
# After stop(), when to check that pynput's thread has ended.
HOOK_STOP_CHECK_MS = 2000
_ALIASES = {
    "control": "ctrl",
    "cmd": "meta",
    "super": "meta",
    "win": "meta",
    "option": "alt",
    "alt_gr": "alt",
    "return": "enter",
    "esc": "escape",
    " ": "space",
}


def normalize(name: str) -> str:
    """Lower-case key name without side suffixes: 'Ctrl_L' -> 'ctrl', 'F9' -> 'f9'."""
    name = name.strip().lower()
    for suffix in ("_l", "_r"):
        if name.endswith(suffix) and name[: -len(suffix)] in (*MODIFIERS, "control", "cmd", "super", "alt_gr"):
            name = name[: -len(suffix)]
    return _ALIASES.get(name, name)


@dataclass(frozen=True, slots=True)
class HotkeySpec:
    key: str
    modifiers: frozenset[str]

    @classmethod
    def parse(cls, sequence: str) -> HotkeySpec:
        """'F9', 'Ctrl+Space', 'Ctrl+Shift+K' (Qt's portable text) -> spec."""
        parts = [normalize(p) for p in sequence.replace(" ", "").split("+") if p]
        if not parts:
            raise ValueError("empty hotkey")
        *mods, key = parts
        unknown = [m for m in mods if m not in MODIFIERS]
        if unknown or key in MODIFIERS:
            raise ValueError(f"not a single key with modifiers: {sequence!r}")
        return cls(key=key, modifiers=frozenset(mods))


class HotkeyMatcher:
    """Turns a stream of key names into talk presses/releases; pure logic, no OS hooks."""

    def __init__(self, spec: HotkeySpec) -> None:
        self.spec = spec
        self._held_modifiers: set[str] = set()
        self._down: set[str] = set()
        self.active = False  # the talk key is held (a press was reported)

    def press(self, name: str) -> str | None:
        """Returns "press" when the hotkey starts, else None."""
        key = normalize(name)
        if key in self._down:
            return None  # auto-repeat
        self._down.add(key)
        if key in MODIFIERS:
            self._held_modifiers.add(key)
            return None
        if key == self.spec.key and self._held_modifiers == set(self.spec.modifiers) and not self.active:
            self.active = True
            return "press"
        return None

    def release(self, name: str) -> str | None:
        """Returns "release" when the held hotkey ends, else None."""
        key = normalize(name)
        self._down.discard(key)
        if key in MODIFIERS:
            self._held_modifiers.discard(key)
            return None
        if key == self.spec.key and self.active:
            self.active = False
            return "release"
        return None


def _pynput_name(key: Any) -> str:
    name = getattr(key, "name", None)  # pynput.keyboard.Key members
    if name:
        return str(name)
    char = getattr(key, "char", None)  # KeyCode
    if char:
        return str(char)
    vk = getattr(key, "vk", None)
    return f"vk{vk}" if vk is not None else "unknown"


class GlobalHotkey(QObject):
    """Emits ``pressed``/``released`` on the UI thread (queued from pynput's listener thread)."""

    pressed = Signal()
    released = Signal()
    unavailable = Signal(str)

    def __init__(self, sequence: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.matcher = HotkeyMatcher(HotkeySpec.parse(sequence))
        self._listener: Any = None

    @property
    def running(self) -> bool:
        return self._listener is not None

    def start(self) -> bool:
        if self._listener is not None:
            return True
        if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
            return self._fail("no X11 display (a Wayland-only session has no global key hooks)")
        try:
            from pynput import keyboard

            listener = keyboard.Listener(on_press=self._on_press, on_release=self._on_release)
            listener.start()
        except Exception as exc:  # ImportError without a display, OSError without permission, ...
            return self._fail(f"{type(exc).__name__}: {exc}")
        # pynput's own wait() blocks forever when its thread dies during set-up: poll instead.
        deadline = time.monotonic() + HOOK_START_TIMEOUT_S
        while not listener.running and listener.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not listener.running:
            listener.stop()
            return self._fail("the keyboard hook could not be installed")
        self._listener = listener
        logger.info("Global hotkey active: %s", self.matcher.spec)
        return True

    def _fail(self, why: str) -> bool:
        reason = f"The global hotkey is not available here ({why})."
        logger.warning("%s", reason)
        self.unavailable.emit(reason)
        return False

    def stop(self) -> None:
        if self._listener is not None:
            listener, self._listener = self._listener, None
            listener.stop()
            _end_xrecord(listener)
            # The UI thread never joins threads: the listener (a daemon) ends on its own; say so if not.
            QTimer.singleShot(HOOK_STOP_CHECK_MS, lambda: _check_stopped(listener))
        if self.matcher.active:
            self.matcher.active = False
            self.released.emit()

    def _on_press(self, key: Any) -> None:
        if self.matcher.press(_pynput_name(key)) == "press":
            self.pressed.emit()

    def _on_release(self, key: Any) -> None:
        if self.matcher.release(_pynput_name(key)) == "release":
            self.released.emit()


def _check_stopped(listener: Any) -> None:
    if listener.is_alive():
        logger.warning("the global hotkey's listener thread has not stopped; it ends with the next key event")


def _end_xrecord(listener: Any) -> None:
    """Make pynput's X11 listener thread end now rather than at the next key event.

    pynput (1.8) disables its XRecord context on the connection that is blocked reading the
    recorded events, without flushing, so ``join`` waited until a key was pressed (3 s of frozen
    UI when the hotkey was switched off, a thread left over at exit). The X Record extension wants
    the disable sent on another ("control") connection, which pynput keeps as ``_display_stop``.
    Other platforms and pynput versions without those attributes are left alone.
    """
    control, context = getattr(listener, "_display_stop", None), getattr(listener, "_context", None)
    if control is None or context is None:
        return
    try:
        control.record_disable_context(context)
        control.flush()
    except Exception:  # the display may already be gone (session ending): the thread ends anyway
        logger.debug("could not disable the XRecord context", exc_info=True)
