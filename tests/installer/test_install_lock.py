"""One launcher at a time installs into a folder; a second one says it waits, then goes on."""

from __future__ import annotations

import threading
from pathlib import Path

from installer.install_lock import WAITING, install_lock


def test_a_second_launcher_waits_for_the_first(tmp_path: Path) -> None:
    lock = tmp_path / ".omnitalk-install.lock"
    said: list[str] = []
    order: list[str] = []
    first_holds = threading.Event()
    second_waits = threading.Event()
    release_first = threading.Event()

    def first() -> None:
        with install_lock(lock, said.append):
            first_holds.set()
            release_first.wait(30)
            order.append("first done")

    def second() -> None:
        def say(message: str) -> None:
            said.append(message)
            second_waits.set()

        with install_lock(lock, say, poll_s=0.01):
            order.append("second in")

    one = threading.Thread(target=first)
    one.start()
    assert first_holds.wait(30)
    two = threading.Thread(target=second)
    two.start()
    assert second_waits.wait(30)  # it told the user instead of starting a second pip
    assert order == []
    release_first.set()
    one.join(30)
    two.join(30)
    assert order == ["first done", "second in"]
    assert said == [WAITING]


def test_an_uncontended_lock_says_nothing_and_can_be_taken_again(tmp_path: Path) -> None:
    said: list[str] = []
    for _ in range(2):
        with install_lock(tmp_path / "sub" / "x.lock", said.append):
            pass
    assert said == []
