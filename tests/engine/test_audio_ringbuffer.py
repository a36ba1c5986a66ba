"""RingBuffer: wraparound, overflow, marks, chunked == whole, and a two-thread stress run."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from engine.audio.ringbuffer import RingBuffer


def test_wraparound_keeps_order_for_multichannel_frames() -> None:
    ring = RingBuffer(5, channels=2)
    data = np.arange(16, dtype=np.float32).reshape(8, 2)
    assert ring.write(data[:4]) == 4
    out = np.zeros((3, 2), dtype=np.float32)
    assert ring.read_into(out) == 3
    np.testing.assert_array_equal(out, data[:3])
    assert ring.write(data[4:8]) == 4  # wraps around the end of the storage
    out = np.zeros((5, 2), dtype=np.float32)
    assert ring.read_into(out) == 5
    np.testing.assert_array_equal(out, data[3:8])
    assert ring.available == 0 and ring.total_written == 8 and ring.total_read == 8


def test_full_ring_drops_what_does_not_fit() -> None:
    ring = RingBuffer(4)
    assert ring.write(np.ones(6, dtype=np.float32)) == 4
    assert ring.free == 0
    assert ring.write(np.ones(1, dtype=np.float32)) == 0


def test_mono_read_and_limit_and_skip() -> None:
    ring = RingBuffer(8)
    ring.write(np.arange(6, dtype=np.float32))
    out = np.full(4, -1.0, dtype=np.float32)
    assert ring.read_into(out, limit=2) == 2
    np.testing.assert_array_equal(out, [0, 1, -1, -1])  # the rest is left untouched
    assert ring.skip_to(4) == 2
    assert ring.read_into(out) == 2
    np.testing.assert_array_equal(out[:2], [4, 5])
    assert ring.skip_to(100) == 0  # clamped to what was written
    ring.write(np.ones(3, dtype=np.float32))
    assert ring.clear() == 3 and ring.available == 0


def test_chunked_writes_and_reads_equal_one_pass() -> None:
    rng = np.random.default_rng(0)
    data = rng.standard_normal((1000, 2)).astype(np.float32)
    ring = RingBuffer(37, channels=2)
    got, pos = [], 0
    while pos < data.shape[0] or ring.available:
        if pos < data.shape[0]:
            pos += ring.write(data[pos : pos + int(rng.integers(1, 30))])
        out = np.zeros((int(rng.integers(1, 30)), 2), dtype=np.float32)
        got.append(out[: ring.read_into(out)].copy())
    np.testing.assert_array_equal(np.concatenate(got), data)


@pytest.mark.timeout(30)
def test_producer_and_consumer_threads_see_every_frame_once() -> None:
    ring = RingBuffer(64)
    total = 50_000
    received = np.zeros(total, dtype=np.float32)

    def produce() -> None:
        sent = 0
        while sent < total:
            chunk = np.arange(sent, min(sent + 48, total), dtype=np.float32)
            written = ring.write(chunk)
            sent += written
            if not written:
                time.sleep(0)  # let the consumer run instead of spinning out the GIL interval

    producer = threading.Thread(target=produce)
    producer.start()
    got = 0
    out = np.zeros(40, dtype=np.float32)
    while got < total:
        n = ring.read_into(out)
        if not n:
            time.sleep(0)
        received[got : got + n] = out[:n]
        got += n
    producer.join()
    np.testing.assert_array_equal(received, np.arange(total, dtype=np.float32))
