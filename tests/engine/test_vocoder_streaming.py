"""Streaming synthesis equals one-pass synthesis when it has the context it needs."""

from __future__ import annotations

import numpy as np
import pytest

from engine.vocoder.checkpoint import load_torch_vocoder, write_tiny_vocoder
from engine.vocoder.quality import compare_stream, reference_chunked_synthesis, snr_db, streamed_synthesis
from engine.vocoder.receptive import exact_lookahead_units, generator_context_frames
from engine.vocoder.runtime_torch import TorchVocoderRuntime
from engine.vocoder.streaming import StreamingVocoder, StreamState, crossfade_weights

N_UNITS = 120
EXACT_MAX_DIFF = 1e-5


pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")  # tiny models are latency-bound


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> TorchVocoderRuntime:
    folder = write_tiny_vocoder(tmp_path_factory.mktemp("vocoder") / "tiny", seed=7)
    return TorchVocoderRuntime(load_torch_vocoder(folder), "cpu")


@pytest.fixture(scope="module")
def units() -> list[int]:
    return np.random.default_rng(11).integers(0, 1000, N_UNITS).tolist()


@pytest.fixture(scope="module")
def whole(runtime: TorchVocoderRuntime, units: list[int]) -> np.ndarray:
    return runtime.synthesize(units)


@pytest.mark.parametrize("omega", [10, 20, 40])
def test_stream_with_exact_lookahead_equals_whole(
    runtime: TorchVocoderRuntime, units: list[int], whole: np.ndarray, omega: int
) -> None:
    lookahead = exact_lookahead_units(runtime.config)
    result = compare_stream(runtime, units, chunk_units=omega, lookahead_units=lookahead, whole=whole)
    assert result.same_length
    assert result.max_abs_diff < EXACT_MAX_DIFF
    assert result.snr_db > 80
    assert result.n_chunks >= N_UNITS // omega - 2


@pytest.mark.parametrize("omega", [10, 40])
def test_duration_lookahead_keeps_timing_and_beats_independent_chunks(
    runtime: TorchVocoderRuntime, units: list[int], whole: np.ndarray, omega: int
) -> None:
    streamed = compare_stream(runtime, units, chunk_units=omega, lookahead_units=2, whole=whole)
    naive = snr_db(whole, reference_chunked_synthesis(runtime, units, omega))
    assert streamed.same_length  # durations see their +-2 neighbours, so timing is exact
    assert streamed.snr_db > 15
    assert streamed.snr_db > naive + 10


def test_zero_lookahead_first_audio_after_exactly_omega_units(runtime: TorchVocoderRuntime, units: list[int]) -> None:
    stream = StreamingVocoder(runtime, chunk_units=10, lookahead_units=0)
    for u in units[:9]:
        assert stream.push([u]) == []
    chunks = stream.push([units[9]])
    assert len(chunks) == 1
    durations = runtime.predict_durations(np.asarray(units[:10]))
    # Everything of the 10 units except the cross-fade tail, which waits for the next chunk.
    assert chunks[0].size == durations.sum() * runtime.hop_samples - stream.crossfade_samples
    assert chunks[0].dtype == np.float32


def test_any_push_pattern_is_exact_with_exact_lookahead(
    runtime: TorchVocoderRuntime, units: list[int], whole: np.ndarray
) -> None:
    lookahead = exact_lookahead_units(runtime.config)
    for push_sizes in ((1,), (3, 7, 2), (N_UNITS,)):
        stream = StreamingVocoder(runtime, chunk_units=12, lookahead_units=lookahead)
        streamed, _ = streamed_synthesis(stream, units, push_sizes)
        assert streamed.size == whole.size
        assert np.max(np.abs(streamed - whole)) < EXACT_MAX_DIFF


def test_units_already_received_are_used_as_extra_context(
    runtime: TorchVocoderRuntime, units: list[int], whole: np.ndarray
) -> None:
    # lookahead_units is a minimum: a burst of units (one LLM token's worth) gives later chunks of the
    # same push their real right context for free, so bursts are never worse than unit-by-unit.
    one_by_one = compare_stream(runtime, units, chunk_units=10, lookahead_units=0, whole=whole, push_sizes=(1,))
    bursts = compare_stream(runtime, units, chunk_units=10, lookahead_units=0, whole=whole, push_sizes=(N_UNITS,))
    assert bursts.same_length and bursts.max_abs_diff < EXACT_MAX_DIFF
    assert bursts.snr_db > one_by_one.snr_db
    again = compare_stream(runtime, units, chunk_units=10, lookahead_units=0, whole=whole, push_sizes=(1,))
    assert again == one_by_one  # deterministic for a given arrival pattern


def test_adaptive_chunk_sizes_stay_exact(
    runtime: TorchVocoderRuntime, units: list[int], whole: np.ndarray
) -> None:
    stream = StreamingVocoder(runtime, chunk_units=5, lookahead_units=exact_lookahead_units(runtime.config))
    out: list[np.ndarray] = []
    done_after: list[int] = []
    for i, u in enumerate(units):
        # Per-push override for one early push, then the attribute grows like adaptive chunking would.
        got = stream.push([u], chunk_units=7 if i == 40 else None)
        if got:
            done_after.append(stream.state.done_units)
            stream.chunk_units = min(40, stream.chunk_units * 2)
        out += got
    out += stream.flush()
    streamed = np.concatenate(out)
    assert done_after[:3] == [5, 15, 35]
    assert streamed.size == whole.size
    assert np.max(np.abs(streamed - whole)) < EXACT_MAX_DIFF


def test_flush_emits_everything_and_resets(runtime: TorchVocoderRuntime, units: list[int], whole: np.ndarray) -> None:
    stream = StreamingVocoder(runtime, chunk_units=10, lookahead_units=0)
    total = sum(c.size for c in stream.push(units)) + sum(c.size for c in stream.flush())
    assert total == whole.size
    assert stream.flush() == []
    assert stream.state.received_units == 0 and stream.state.emitted_samples == 0
    # The same instance serves the next utterance as a fresh one would.
    again, _ = streamed_synthesis(stream, units[:30])
    fresh, _ = streamed_synthesis(StreamingVocoder(runtime, chunk_units=10, lookahead_units=0), units[:30])
    assert np.array_equal(again, fresh)


def test_flush_with_only_a_tail_left(runtime: TorchVocoderRuntime, units: list[int]) -> None:
    stream = StreamingVocoder(runtime, chunk_units=10, lookahead_units=0, crossfade_samples=500)
    first = stream.push(units[:10])
    assert stream.pending_units == 0 and stream.state.tail.size == 500
    rest = stream.flush()
    assert [c.size for c in rest] == [500]
    one_pass = runtime.synthesize(units[:10])
    np.testing.assert_allclose(np.concatenate(first + rest), one_pass, atol=EXACT_MAX_DIFF)


def test_reset_mid_utterance_drops_state(runtime: TorchVocoderRuntime, units: list[int]) -> None:
    stream = StreamingVocoder(runtime, chunk_units=10)
    stream.push(units[:25])
    stream.reset()
    assert stream.state.received_units == 0 and stream.state.tail.size == 0
    again, _ = streamed_synthesis(stream, units[50:80])
    fresh, _ = streamed_synthesis(StreamingVocoder(runtime, chunk_units=10), units[50:80])
    assert np.array_equal(again, fresh)


def test_memory_stays_bounded_on_long_streams(runtime: TorchVocoderRuntime) -> None:
    stream = StreamingVocoder(runtime, chunk_units=10, lookahead_units=2)
    rng = np.random.default_rng(3)
    kept = []
    for _ in range(40):
        stream.push(rng.integers(0, 1000, 10))
        kept.append(len(stream.state.units))
    assert stream.state.received_units == 400
    # Left context (23 frames + tail) plus a chunk and its look-ahead, never the whole history.
    assert max(kept) <= generator_context_frames(runtime.config) + 2 + 10 + 2 + 2
    assert stream.state.base_unit > 300


def test_stream_state_reset() -> None:
    state = StreamState(units=[1, 2], durations=[3], base_unit=5, base_frame=9, done_units=6,
                        tail=np.ones(4, dtype=np.float32), emitted_samples=100)
    state.reset()
    assert state.units == [] and state.durations == [] and state.tail.size == 0
    assert (state.base_unit, state.base_frame, state.done_units, state.emitted_samples) == (0, 0, 0, 0)


def test_crossfade_weights_are_complementary_and_monotonic() -> None:
    fade_in = crossfade_weights(320)
    assert np.all(np.diff(fade_in) > 0)
    assert 0 < fade_in[0] < 0.01 and 0.99 < fade_in[-1] < 1
    np.testing.assert_allclose(fade_in + fade_in[::-1], 1.0, atol=1e-6)  # symmetric raised cosine


def test_settings_are_validated(runtime: TorchVocoderRuntime) -> None:
    stream = StreamingVocoder(runtime)
    with pytest.raises(ValueError):
        stream.chunk_units = 0
    with pytest.raises(ValueError):
        stream.lookahead_units = -1
    with pytest.raises(ValueError):
        StreamingVocoder(runtime, crossfade_samples=-5)
    assert stream.push([]) == []


def test_empty_synthesis(runtime: TorchVocoderRuntime) -> None:
    assert runtime.synthesize([]).shape == (0,)
    assert StreamingVocoder(runtime).flush() == []
