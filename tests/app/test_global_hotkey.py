"""Global hotkey: exact modifiers, auto-repeat removed, and a real X11 key hold seen by pynput."""

from __future__ import annotations

import os
import subprocess

import pytest
from pytestqt.qtbot import QtBot

from app.global_hotkey import GlobalHotkey, HotkeyMatcher, HotkeySpec, normalize
from tests.xvfb import xvfb_display  # noqa: F401  (fixture)


def test_parse_and_normalize() -> None:
    assert HotkeySpec.parse("F9") == HotkeySpec("f9", frozenset())
    assert HotkeySpec.parse("Ctrl+Shift+Space") == HotkeySpec("space", frozenset({"ctrl", "shift"}))
    assert normalize("ctrl_r") == "ctrl" and normalize("cmd") == "meta" and normalize("F9") == "f9"
    for bad in ("", "Ctrl+", "Ctrl+Shift", "Hyper+F9"):
        with pytest.raises(ValueError):
            HotkeySpec.parse(bad)


def test_auto_repeat_and_exact_modifiers() -> None:
    m = HotkeyMatcher(HotkeySpec.parse("F9"))
    assert m.press("f9") == "press"
    assert [m.press("f9") for _ in range(10)] == [None] * 10  # key repeat while held
    assert m.release("f9") == "release"
    assert m.press("ctrl_l") is None and m.press("f9") is None  # Ctrl+F9 is not F9
    assert m.release("f9") is None and m.release("ctrl_l") is None
    assert m.press("f9") == "press"

    combo = HotkeyMatcher(HotkeySpec.parse("Ctrl+Space"))
    assert combo.press("space") is None and combo.release("space") is None
    assert combo.press("ctrl_r") is None and combo.press("space") == "press"
    assert combo.release("ctrl_r") is None  # letting go of Ctrl first still ends on the key's release
    assert combo.release("space") == "release"


def test_pynput_sees_a_real_key_hold(xvfb_display: str, qtbot: QtBot, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("DISPLAY", xvfb_display)
    hotkey = GlobalHotkey("F9")
    assert hotkey.start(), "pynput could not hook the X display"
    env = dict(os.environ, DISPLAY=xvfb_display)
    try:
        with qtbot.waitSignal(hotkey.pressed, timeout=10_000):
            subprocess.run(["xdotool", "keydown", "F9"], env=env, check=True)
        with qtbot.waitSignal(hotkey.released, timeout=10_000):
            subprocess.run(["xdotool", "keyup", "F9"], env=env, check=True)
    finally:
        listener = hotkey._listener  # noqa: SLF001
        hotkey.stop()
    assert not hotkey.running
    # pynput alone would keep its thread until the next key event.
    qtbot.waitUntil(lambda: not listener.is_alive(), timeout=2000)
    assert hotkey.start()  # switching it back on works
    again = hotkey._listener  # noqa: SLF001
    hotkey.stop()
    qtbot.waitUntil(lambda: not again.is_alive(), timeout=2000)


def test_without_a_display_it_says_so(qtbot: QtBot, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    hotkey = GlobalHotkey("F9")
    with qtbot.waitSignal(hotkey.unavailable, timeout=5000) as blocker:
        assert hotkey.start() is False
    assert "not available" in blocker.args[0]
