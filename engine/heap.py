"""Keep Python's cyclic garbage collector from pausing every thread while the app runs.

A full (generation 2) collection walks every tracked object while holding the GIL. With torch,
transformers, onnxruntime and Qt loaded that is about 400,000 objects and 200 ms, during which the
UI thread cannot run: measured as the largest stall of the UI thread during the first model load
(``bench/bench_ui.py``). Almost all of those objects are modules, classes and functions that live
as long as the process, so after the heavy imports and after each model load we move everything
alive into the collector's permanent generation (``gc.freeze()``); later collections only walk
what was created since, which takes a few milliseconds.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

# Whether this module froze the heap. (gc.get_freeze_count() would tell too, but it walks the whole
# permanent generation under the GIL: ~40 ms with torch loaded.)
_frozen = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic collections inside the block (for a burst of imports); restores the previous state."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def freeze_long_lived(what: str, *, collect_first: bool = False) -> None:
    """Move every object alive now into the permanent generation (never scanned again).

    ``collect_first`` first frees what is already garbage among the young (not yet frozen)
    objects, so cycles left over from loading (tensors included) are released now rather than
    kept until the next ``thaw``; it walks only objects created since the last freeze, so it is quick.
    """
    global _frozen
    started = time.perf_counter()
    freed = gc.collect() if collect_first else 0
    gc.freeze()
    if not _frozen:
        _frozen = True
        # At exit the interpreter only finalises what the collector can see; extension modules
        # (nanobind's leak check) complain about objects left in the permanent generation.
        atexit.register(gc.unfreeze)
    logger.debug(
        "heap: froze the heap after %s (%d garbage objects freed) in %.1f ms",
        what, freed, (time.perf_counter() - started) * 1000.0,
    )


def import_long_lived(*names: str, optional: tuple[str, ...] = ()) -> None:
    """Import ``names`` (and ``optional`` ones, skipped if not installed) with the collector paused,
    then freeze what the imports created. A no-op for modules already imported.

    For any thread that may be first to import torch/transformers/onnxruntime while the UI runs.
    """
    wanted = [name for name in (*names, *optional) if name not in sys.modules]
    if not wanted:
        return
    with collector_paused():
        for name in wanted:
            try:
                importlib.import_module(name)
            except ImportError:
                if name not in optional:
                    raise
        # Frozen before the collector resumes: otherwise its first young-generation pass walks
        # everything the imports allocated.
        freeze_long_lived(f"importing {', '.join(wanted)}")


def thaw(what: str) -> None:
    """Undo ``freeze_long_lived`` before dropping a model, so its reference cycles can be freed.

    Runs one full collection (the whole heap: ~200 ms of GIL with torch loaded), so call it only
    where a pause is expected, e.g. while unloading a model. A no-op when nothing is frozen.
    """
    global _frozen
    if not _frozen:
        return
    _frozen = False
    started = time.perf_counter()
    gc.unfreeze()
    freed = gc.collect()
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    logger.debug("heap: thawed for %s, freed %d objects, in %.1f ms", what, freed, elapsed_ms)
