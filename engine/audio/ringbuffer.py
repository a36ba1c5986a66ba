"""A preallocated single-producer / single-consumer ring of float32 frames.

The audio callbacks are one side of every ring (capture writes, playback reads), so neither side
allocates, locks or blocks. Positions are monotonic frame counters (``total_written``,
``total_read``) rather than wrapped indexes: full and empty can never be confused, and callers
can use them as marks ("discard everything written before position P"). Each counter is only
ever assigned by its own side, and CPython makes a single attribute store atomic, so the other
side sees either the old or the new value, never a torn one. The data is copied before the
counter moves, so a reader never sees a position whose frames are not there yet.
"""

from __future__ import annotations

import numpy as np


class RingBuffer:
    """Fixed-capacity FIFO of float32 frames: ``(capacity_frames, channels)``.

    Exactly one thread may call the producer methods (:meth:`write`) and exactly one thread at a
    time the consumer methods (:meth:`read_into`, :meth:`skip_to`, :meth:`clear`); the properties
    may be read from anywhere.
    """

    __slots__ = ("_buf", "_capacity", "_channels", "total_read", "total_written")

    def __init__(self, capacity_frames: int, channels: int = 1) -> None:
        if capacity_frames <= 0 or channels <= 0:
            raise ValueError(f"need capacity_frames > 0 and channels > 0, got {capacity_frames}, {channels}")
        self._capacity = int(capacity_frames)
        self._channels = int(channels)
        self._buf = np.zeros((self._capacity, self._channels), dtype=np.float32)
        self.total_written = 0
        self.total_read = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def available(self) -> int:
        """Frames written and not yet read."""
        return self.total_written - self.total_read

    @property
    def free(self) -> int:
        """Frames that can be written now without dropping any."""
        return self._capacity - (self.total_written - self.total_read)

    # --- producer side -------------------------------------------------------------------------
    def write(self, frames: np.ndarray) -> int:
        """Copy as many of ``frames`` (n, channels) or (n,) for mono as fit; return how many.

        Frames that do not fit are dropped (the caller counts that as an overflow); nothing is
        allocated.
        """
        n = min(frames.shape[0], self._capacity - (self.total_written - self.total_read))
        if n <= 0:
            return 0
        start = self.total_written % self._capacity
        first = min(n, self._capacity - start)
        if frames.ndim == 1:
            self._buf[start : start + first, 0] = frames[:first]
            if n > first:
                self._buf[: n - first, 0] = frames[first:n]
        else:
            self._buf[start : start + first] = frames[:first]
            if n > first:
                self._buf[: n - first] = frames[first:n]
        self.total_written += n
        return n

    # --- consumer side -------------------------------------------------------------------------
    def read_into(self, out: np.ndarray, limit: int | None = None) -> int:
        """Move up to ``len(out)`` frames (and at most up to position ``limit``) into ``out``.

        ``out`` is (n, channels), or (n,) for a mono ring. Returns the number of frames copied;
        the rest of ``out`` is left untouched. Nothing is allocated.
        """
        end = self.total_written if limit is None else min(limit, self.total_written)
        n = min(out.shape[0], end - self.total_read)
        if n <= 0:
            return 0
        start = self.total_read % self._capacity
        first = min(n, self._capacity - start)
        if out.ndim == 1:
            out[:first] = self._buf[start : start + first, 0]
            if n > first:
                out[first:n] = self._buf[: n - first, 0]
        else:
            out[:first] = self._buf[start : start + first]
            if n > first:
                out[first:n] = self._buf[: n - first]
        self.total_read += n
        return n

    def skip_to(self, position: int) -> int:
        """Drop unread frames up to absolute ``position`` (clamped to what was written); return count."""
        target = min(max(position, self.total_read), self.total_written)
        dropped = target - self.total_read
        self.total_read = target
        return dropped

    def clear(self) -> int:
        """Drop every unread frame; return how many were dropped."""
        return self.skip_to(self.total_written)
