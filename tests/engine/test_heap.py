"""engine.heap: full collections are kept off the UI thread's back, without leaking a swapped model."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from engine import heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector can free it


@pytest.fixture(autouse=True)
def _thawed() -> Iterator[None]:
    yield
    heap.thaw("test teardown")
    gc.enable()


def _collections_during(action) -> int:  # type: ignore[no-untyped-def]
    seen: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(count)
    try:
        action()
    finally:
        gc.callbacks.remove(count)
    return len(seen)


def test_collector_paused_stops_automatic_collections_and_restores_the_state() -> None:
    assert gc.isenabled()
    assert _collections_during(lambda: [Node() for _ in range(20_000)]) > 0  # the control
    with heap.collector_paused():
        assert not gc.isenabled()
        assert _collections_during(lambda: [Node() for _ in range(20_000)]) == 0
    assert gc.isenabled()
    gc.disable()
    with heap.collector_paused():
        pass
    assert not gc.isenabled()  # a caller's choice is kept


def test_freeze_hides_live_objects_from_later_collections() -> None:
    keep = [Node() for _ in range(1000)]
    heap.freeze_long_lived("test")
    assert gc.get_freeze_count() >= len(keep)
    tracked = len(gc.get_objects())  # the generations the collector still walks
    assert tracked < gc.get_freeze_count()


def test_collect_first_frees_garbage_instead_of_freezing_it() -> None:
    garbage = Node()
    gone = weakref.ref(garbage)
    del garbage
    heap.freeze_long_lived("test", collect_first=True)
    assert gone() is None


def test_thaw_frees_cycles_that_died_while_frozen() -> None:
    model = Node()
    alive = weakref.ref(model)
    heap.freeze_long_lived("test")
    del model
    gc.collect()
    assert alive() is not None  # frozen: not collectable, which is why unloading must thaw
    heap.thaw("test")
    assert alive() is None and gc.get_freeze_count() == 0
    heap.thaw("again")  # nothing frozen: a no-op
