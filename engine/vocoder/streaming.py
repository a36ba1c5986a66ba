"""Streaming synthesis: units arrive in pieces, PCM chunks leave, and the result matches one pass.

The reference (LLaMA-Omni's Gradio server) vocodes every Omega units on their own and concatenates
the pieces: each piece starts and ends against zero padding, durations at the edges lose their
neighbours, and the joins click. Here every chunk is synthesised inside a window:

* **Durations.** Unit i's duration depends on units i-2..i+2 (``duration_context_units``). The
  predictor runs on the not-yet-committed units plus 2 committed ones on the left; a chunk's
  durations are committed when the chunk is vocoded and never change afterwards. With
  ``lookahead_units >= 2`` every committed duration has its real right neighbours, so durations
  equal whole-utterance durations. With less look-ahead the last units of a chunk are predicted
  against a zero-padded right edge (exactly what the reference does for *every* chunk edge), which
  can change their length: the stream is still smooth, but it drifts from the one-pass
  waveform (see bench/RESULTS.md).
* **Waveform.** The generator sees ``context_frames`` (23 for the official config, computed from
  config.json) real frames left of the chunk, and up to as many look-ahead frames right of it.
  Its output is cropped to the chunk. With full context on both sides the crop equals the
  one-pass output sample for sample.
* **Joins.** The last ``crossfade_samples`` of every chunk are held back and cross-faded with the
  start of the next chunk's window, which recomputes them with more right context. The fade is a
  raised cosine whose two weights sum to 1 (not equal-power): both sides estimate the same signal,
  so an exact stream stays exact and an approximate one blends without a level bump.

Latency: a chunk is vocoded once ``chunk_units + lookahead_units`` units beyond the previous chunk
have arrived; it then emits its audio minus the held-back cross-fade tail. ``lookahead_units`` is a
minimum: when a push brings several chunks' worth of units at once (one LLM token can carry a few
units), every unit already received serves as context, at no extra latency. ``flush()`` vocodes
the rest against the real end of the utterance, so the last chunk is exact.
``exact_lookahead_units(config)`` (25 for the official config) makes every chunk exact whatever the
durations; at about 2 frames per unit, 8 units already measured about 80 dB (bench/RESULTS.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from engine.vocoder.defaults import DEFAULT_CHUNK_UNITS, DEFAULT_CROSSFADE_SAMPLES, DEFAULT_LOOKAHEAD_UNITS
from engine.vocoder.receptive import duration_context_units, generator_context_frames
from engine.vocoder.runtime import VocoderRuntime, validate_units

logger = logging.getLogger(__name__)


def crossfade_weights(n_samples: int) -> np.ndarray:
    """Fade-in weights float32 (n_samples,) rising from ~0 to ~1; the fade-out is ``1 - weights``."""
    phase = (np.arange(n_samples, dtype=np.float64) + 0.5) / max(n_samples, 1)
    return (0.5 - 0.5 * np.cos(np.pi * phase)).astype(np.float32)


@dataclass(slots=True)
class StreamState:
    """What a stream remembers between pushes. Unit and frame indices are utterance-global.

    ``units[i]`` is unit ``base_unit + i``; ``durations`` are the committed durations of the first
    ``len(durations)`` kept units; ``base_frame`` is the first frame of ``units[0]``. Audio for units
    before ``done_units`` has been emitted, except ``tail``: the last samples of the previous chunk,
    held back for the cross-fade.
    """

    units: list[int] = field(default_factory=list)
    durations: list[int] = field(default_factory=list)
    base_unit: int = 0
    base_frame: int = 0
    done_units: int = 0
    tail: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    emitted_samples: int = 0

    @property
    def received_units(self) -> int:
        return self.base_unit + len(self.units)

    @property
    def committed_units(self) -> int:
        return self.base_unit + len(self.durations)

    def reset(self) -> None:
        self.units.clear()
        self.durations.clear()
        self.base_unit = 0
        self.base_frame = 0
        self.done_units = 0
        self.tail = np.zeros(0, dtype=np.float32)
        self.emitted_samples = 0


class StreamingVocoder:
    """Turns a growing unit sequence into PCM chunks (float32 (n_samples,), 16 kHz, in [-1, 1]).

    ``chunk_units`` and ``lookahead_units`` are plain attributes: change them between pushes (for
    example a small first chunk, larger ones later). One instance serves one utterance at a time;
    ``flush()`` ends it and ``reset()`` drops it. The runtime is borrowed, not owned.
    """

    def __init__(
        self,
        runtime: VocoderRuntime,
        *,
        chunk_units: int = DEFAULT_CHUNK_UNITS,
        lookahead_units: int = DEFAULT_LOOKAHEAD_UNITS,
        crossfade_samples: int = DEFAULT_CROSSFADE_SAMPLES,
        context_frames: int | None = None,
    ) -> None:
        self.runtime = runtime
        self.chunk_units = chunk_units
        self.lookahead_units = lookahead_units
        if crossfade_samples < 0:
            raise ValueError("crossfade_samples must be >= 0")
        self.crossfade_samples = crossfade_samples
        config = runtime.config
        self.hop = config.hop_samples
        self.duration_context = duration_context_units(config)
        self.context_frames = generator_context_frames(config) if context_frames is None else context_frames
        self.state = StreamState()

    @property
    def chunk_units(self) -> int:
        return self._chunk_units

    @chunk_units.setter
    def chunk_units(self, value: int) -> None:
        if int(value) < 1:
            raise ValueError("chunk_units must be >= 1")
        self._chunk_units = int(value)

    @property
    def lookahead_units(self) -> int:
        return self._lookahead_units

    @lookahead_units.setter
    def lookahead_units(self, value: int) -> None:
        if int(value) < 0:
            raise ValueError("lookahead_units must be >= 0")
        self._lookahead_units = int(value)

    @property
    def pending_units(self) -> int:
        """Units received whose audio has not been vocoded yet."""
        return self.state.received_units - self.state.done_units

    def push(self, units: Sequence[int] | np.ndarray, *, chunk_units: int | None = None) -> list[np.ndarray]:
        """Add units; return the PCM chunks that became ready (possibly none).

        ``chunk_units`` overrides the attribute for the chunks produced by this call only.
        Raises BadInput for ids outside the vocoder's range (nothing is added then).
        """
        array = validate_units(units, self.runtime.config.num_embeddings)
        self.state.units.extend(int(u) for u in array)
        omega = self.chunk_units if chunk_units is None else int(chunk_units)
        if omega < 1:
            raise ValueError("chunk_units must be >= 1")
        chunks: list[np.ndarray] = []
        while self.pending_units >= omega + self.lookahead_units:
            chunks += self._vocode(self.state.done_units + omega, final=False)
        return chunks

    def flush(self) -> list[np.ndarray]:
        """End the utterance: vocode what is left against the real end, emit the tail, reset."""
        chunks: list[np.ndarray] = []
        if self.pending_units > 0:
            chunks += self._vocode(self.state.received_units, final=True)
        elif self.state.tail.size:
            chunks.append(self.state.tail)
            self.state.emitted_samples += self.state.tail.size
        self.state.reset()
        return chunks

    def reset(self) -> None:
        """Drop everything (cancel): the next push starts a new utterance."""
        self.state.reset()

    # -------------------------------------------------------------------------------------- internals

    def _durations_through(self, end_unit: int, final: bool) -> np.ndarray:
        """Commit durations up to ``end_unit``; return durations of all kept units: int64 (n_kept,).

        Units after ``end_unit`` get provisional durations (used only as right context).
        """
        st = self.state
        first_new = st.committed_units
        received = st.received_units
        if first_new < received:
            left = max(st.base_unit, first_new - self.duration_context)
            window = np.asarray(st.units[left - st.base_unit :], dtype=np.int64)
            predicted = self.runtime.predict_durations(window)[first_new - left :]
        else:
            predicted = np.zeros(0, dtype=np.int64)
        n_commit = (received if final else end_unit) - first_new
        st.durations.extend(int(d) for d in predicted[:n_commit])
        return np.concatenate([np.asarray(st.durations, dtype=np.int64), predicted[n_commit:]])

    def _vocode(self, end_unit: int, final: bool) -> list[np.ndarray]:
        st = self.state
        hop, ctx = self.hop, self.context_frames
        durations = self._durations_through(end_unit, final)
        unit_start = st.base_frame + np.concatenate([[0], np.cumsum(durations)])  # frame where each unit starts

        def frame_of(unit: int) -> int:
            return int(unit_start[unit - st.base_unit])

        region_start = frame_of(st.done_units) * hop - st.tail.size  # samples, utterance-global
        region_end = frame_of(end_unit) * hop
        first_frame = max(st.base_frame, region_start // hop - ctx)
        last_frame = frame_of(st.received_units) if final else min(frame_of(end_unit) + ctx, int(unit_start[-1]))
        frame_units = np.repeat(np.asarray(st.units, dtype=np.int64), durations)
        wav = self.runtime.generate(frame_units[first_frame - st.base_frame : last_frame - st.base_frame])
        segment = wav[region_start - first_frame * hop : region_end - first_frame * hop].copy()

        if st.tail.size:
            fade_in = crossfade_weights(st.tail.size)
            segment[: st.tail.size] = st.tail * (1.0 - fade_in) + segment[: st.tail.size] * fade_in
        keep = 0 if final else min(self.crossfade_samples, segment.size)
        ready, st.tail = segment[: segment.size - keep], segment[segment.size - keep :]
        st.done_units = end_unit
        st.emitted_samples += ready.size
        self._trim()
        logger.debug(
            "vocoded units ..%d (%d window frames, %d samples out, tail %d)",
            end_unit, last_frame - first_frame, ready.size, st.tail.size,
        )
        return [ready] if ready.size else []

    def _trim(self) -> None:
        """Forget units no future window can reach (left context of frames and of durations)."""
        st = self.state
        if not st.durations:
            return
        starts = st.base_frame + np.concatenate([[0], np.cumsum(st.durations)])
        done_frame = int(starts[st.done_units - st.base_unit])
        earliest_frame = done_frame - math.ceil(self.crossfade_samples / self.hop) - self.context_frames
        # Keep whole units: the first kept unit must start at or before earliest_frame.
        by_frames = int(np.searchsorted(starts[: len(st.durations)], earliest_frame, side="right")) - 1
        by_durations = st.committed_units - self.duration_context - st.base_unit
        drop = max(0, min(by_frames, by_durations))
        if drop:
            st.base_frame = int(starts[drop])
            del st.units[:drop]
            del st.durations[:drop]
            st.base_unit += drop
