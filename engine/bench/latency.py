"""First audio after key release: the real engine, the real loader, a clocked sound device.

Per run: ``NewConversation`` (every run is the first turn of a conversation), ``StartTurn``, the
question is spoken into the microphone in real time, ``StopTurn`` (the key release, t = 0) at a
random phase of the microphone's block clock, then the answer plays on the speaker clock until
``TurnFinished``. Measured from the release:

    recording stopped   the engine has the take (Recorder.stop: last block, resampler flush)
    features, encoder   log-mel done, encoder + adapter done            (TurnMetrics)
    prefill             the prompt went through the LLM                  (the model's stage mark)
    first token         the first text token (and its units) reached the engine
    first chunk         the vocoder worker produced the first PCM chunk  (TurnMetrics)
    first audio         its first sample was handed to the sound device  (Player.first_sample_at)

Our overhead = first audio - model compute - vocoder compute for the first chunk, where model
compute is the time spent inside the model's generator until the token whose units completed the
first chunk (features, encoder, prefill, those tokens and their unit decoding), and the vocoder
compute is the first chunk's ``predict_durations`` + ``generate`` calls. It splits exactly into
the parts in :class:`TurnBreakdown`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from engine.audio.backend import SoundBackend
from engine.audio.capture import Recorder, RecorderOptions
from engine.audio.fake_device import FAKE_RATE_HZ, FakeSoundDevice
from engine.audio.playback import Player, PlayerOptions
from engine.audio.resample import MODEL_SAMPLE_RATE_HZ, resample
from engine.audio.vad import SpeechDetector
from engine.bench.event_log import EventLog
from engine.bench.probes import StepTiming, TimedBackend, TimedVocoder, VocoderCall
from engine.bench.questions import Question
from engine.bench.report import Table, fmt, median, p90
from engine.cpu_threads import ThreadPlan
from engine.engine import Engine
from engine.errors import EngineError
from engine.events import (
    Cancel,
    ChunkingOptions,
    ConversationReset,
    EngineOptions,
    EngineState,
    Event,
    Failed,
    LoadModel,
    NewConversation,
    Ready,
    SetOptions,
    StartTurn,
    StateChanged,
    StopTurn,
    TurnFinished,
    TurnIgnored,
    TurnMetrics,
)
from engine.model.omni import OmniModel
from engine.omni_backend import OmniBackend, load_omni
from engine.pipeline import LoadedModel, ProgressFn
from engine.vocoder.runtime import VocoderRuntime

logger = logging.getLogger(__name__)

OMEGAS = (10, 20, 40)
LOAD_TIMEOUT_S = 1800.0
TURN_TIMEOUT_S = 600.0
STEP_TIMEOUT_S = 30.0
SPOKEN_MARGIN_S = 5.0
POLL_S = 0.002
OVERHEAD_TARGET_MS = 50.0  # issue #5: our own overhead on CPU with the tiny model


class BenchError(EngineError):
    kind = "bench"


@dataclass(frozen=True, slots=True)
class Chunking:
    label: str
    options: ChunkingOptions


def chunkings() -> list[Chunking]:
    """Ω in OMEGAS (first chunk = later chunks = Ω), then the engine's adaptive default."""
    default = ChunkingOptions()
    fixed = [Chunking(f"Ω={omega}", ChunkingOptions(first_chunk_units=omega, chunk_units=omega)) for omega in OMEGAS]
    adaptive = Chunking(f"adaptive {default.first_chunk_units}→{default.chunk_units} (default)", default)
    return [*fixed, adaptive]


# ------------------------------------------------------------------------------------ one turn


@dataclass(frozen=True, slots=True)
class RawTurn:
    """What one run recorded; times are ``time.perf_counter()`` values."""

    released: float
    first_sample_at: float
    metrics: TurnMetrics
    started_at: float  # the engine asked the model for its first step
    steps: tuple[StepTiming, ...]
    stages: dict[str, float]
    vocoder_calls: tuple[VocoderCall, ...]
    chunking: ChunkingOptions
    first_sample_latency_s: float = 0.0  # the output latency inside first_sample_at
    turn_id: int = 0


@dataclass(frozen=True, slots=True)
class TurnBreakdown:
    """One run, in ms after the key release. ``overhead_ms`` = the six parts below it, summed."""

    stopped_ms: float
    features_ms: float
    encoder_ms: float
    prefill_ms: float
    first_token_ms: float
    first_chunk_ms: float
    first_audio_ms: float
    model_ms: float
    vocoder_ms: float
    overhead_ms: float
    stop_part_ms: float  # release -> the engine has the recording
    turn_start_part_ms: float  # -> the model is asked for its first step (speech detection, events)
    between_tokens_part_ms: float  # engine work between the model's steps (text events, unit hand-over)
    handoff_part_ms: float  # the chunk's last token -> the vocoder worker starts on it
    vocoder_other_part_ms: float  # in the worker between its runtime calls (windows, durations)
    to_device_part_ms: float  # last generate -> first sample at the device (cross-fade, resample, clock)
    tokens_to_first_chunk: int
    n_tokens: int
    n_units: int
    tokens_per_s: float
    audio_s: float
    underruns: int

    @property
    def parts_ms(self) -> tuple[float, ...]:
        return (
            self.stop_part_ms,
            self.turn_start_part_ms,
            self.between_tokens_part_ms,
            self.handoff_part_ms,
            self.vocoder_other_part_ms,
            self.to_device_part_ms,
        )


def first_chunk_step(steps: Sequence[StepTiming], chunking: ChunkingOptions) -> int:
    """Index of the step whose units let the vocoder start the first chunk (the last step if none did:
    then the first chunk came from the flush at the end of the answer)."""
    needed = chunking.first_chunk_units + chunking.lookahead_units
    total = 0
    for i, step in enumerate(steps):
        total += step.n_units
        if total >= needed:
            return i
    return len(steps) - 1


def analyse(raw: RawTurn) -> TurnBreakdown:
    m = raw.metrics
    if not raw.steps or m.features_ms is None or "features" not in raw.stages:
        raise BenchError("The turn produced no tokens or no stage marks; cannot break its latency down.")
    if m.encoder_ms is None or m.first_token_ms is None or m.first_chunk_ms is None:
        raise BenchError(f"The turn's metrics are incomplete: {m.as_dict()}")
    generates = [i for i, call in enumerate(raw.vocoder_calls) if call.kind == "generate"]
    if not generates:
        raise BenchError("The vocoder produced no audio in this turn.")
    t0 = raw.stages["features"] - m.features_ms / 1000.0  # the engine's own "released" mark

    def after_release(t: float) -> float:
        return (t - raw.released) * 1000.0

    k = first_chunk_step(raw.steps, raw.chunking)
    model_s = sum(step.seconds for step in raw.steps[: k + 1])
    chunk_calls = raw.vocoder_calls[: generates[0] + 1]
    vocoder_s = sum(call.seconds for call in chunk_calls)
    last_step_end = raw.steps[k].ended
    first_audio = after_release(raw.first_sample_at)
    stopped = after_release(t0)
    return TurnBreakdown(
        stopped_ms=stopped,
        features_ms=stopped + m.features_ms,
        encoder_ms=stopped + m.encoder_ms,
        prefill_ms=after_release(raw.stages.get("prefill", float("nan"))),
        first_token_ms=stopped + m.first_token_ms,
        first_chunk_ms=stopped + m.first_chunk_ms,
        first_audio_ms=first_audio,
        model_ms=model_s * 1000.0,
        vocoder_ms=vocoder_s * 1000.0,
        overhead_ms=first_audio - (model_s + vocoder_s) * 1000.0,
        stop_part_ms=stopped,
        turn_start_part_ms=(raw.started_at - t0) * 1000.0,
        between_tokens_part_ms=((last_step_end - raw.started_at) - model_s) * 1000.0,
        handoff_part_ms=(chunk_calls[0].started - last_step_end) * 1000.0,
        vocoder_other_part_ms=((chunk_calls[-1].ended - chunk_calls[0].started) - vocoder_s) * 1000.0,
        to_device_part_ms=(raw.first_sample_at - chunk_calls[-1].ended) * 1000.0,
        tokens_to_first_chunk=k + 1,
        n_tokens=m.n_tokens,
        n_units=m.n_units,
        tokens_per_s=m.tokens_per_s,
        audio_s=m.audio_s,
        underruns=m.underruns,
    )


# --------------------------------------------------------------------------------- the engine


class BenchEventLog(EventLog):
    """The engine's events; waits fail fast on ``Failed`` / ``TurnIgnored``, with BenchErrors."""

    def _check(self, event: Event, waiting_for: type) -> None:
        if isinstance(event, Failed):
            raise BenchError(f"The engine failed ({event.kind}): {event.message}")
        if isinstance(event, TurnIgnored) and waiting_for is not TurnIgnored:
            raise BenchError(f"The engine ignored the turn ({event.reason}): {event.hint}")

    def _timed_out(self, kind: type, timeout_s: float) -> Exception:
        return BenchError(f"No {kind.__name__} within {timeout_s:.0f} s.")


def _state_is(state: EngineState) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, StateChanged) and e.state is state


Speak = Callable[[], None]  # says the question into the microphone; returns once it was delivered


class EngineBench:
    """The engine with the real loader (wrapped in timing probes), on the clocked fake sound device
    (``sound=None``: output latency 0, so first audio = first sample handed to the device) or on
    ``sound``, e.g. the real PortAudio backend."""

    def __init__(
        self,
        options: EngineOptions,
        detector: SpeechDetector,
        seed: int = 0,
        *,
        sound: SoundBackend | None = None,
        player_options: PlayerOptions | None = None,
        threads: ThreadPlan | None = None,
    ) -> None:
        self.fake = FakeSoundDevice(clocked=True, latency_s=0.0) if sound is None else None
        self.sound: SoundBackend = self.fake if self.fake is not None else sound  # type: ignore[assignment]
        self._player_options = player_options
        self._rng = np.random.default_rng(seed)
        self.log = BenchEventLog()
        self.options = options
        self.model: TimedBackend | None = None
        self.vocoder: TimedVocoder | None = None
        self.player: Player | None = None
        self.load_s = 0.0
        self.summary = ""
        self.engine = Engine(
            self.log,
            model_loader=self._load,
            recorder_factory=lambda device, **kw: Recorder(device, backend=self.sound, **kw),
            player_factory=self._make_player,
            speech_detector=detector,
            options=options,
            threads=threads,
        )

    def _make_player(self, device: object) -> Player:
        self.player = Player(device, backend=self.sound, options=self._player_options)  # type: ignore[arg-type]
        return self.player

    def fake_speaker(self, clip: np.ndarray) -> Speak:
        """Speak ``clip`` (float32 16 kHz) into the fake microphone, in real time."""
        fake = self.fake
        assert fake is not None
        native = resample(clip, MODEL_SAMPLE_RATE_HZ, FAKE_RATE_HZ)

        def speak() -> None:
            fake.microphone.play(native)
            if not fake.microphone.wait_played(native.size / FAKE_RATE_HZ + SPOKEN_MARGIN_S):
                raise BenchError("The microphone clock did not deliver the question in time.")

        return speak

    def _load(self, command: LoadModel, progress: ProgressFn) -> LoadedModel:
        loaded = load_omni(command, progress)
        if not isinstance(loaded.vocoder, VocoderRuntime):
            raise BenchError("The model set has no vocoder; the latency benchmark needs one.")
        self.model = TimedBackend(loaded.model)
        self.vocoder = TimedVocoder(loaded.vocoder)
        return LoadedModel(model=self.model, vocoder=self.vocoder)

    @property
    def omni(self) -> OmniModel:
        """The loaded model itself (for the decode timings, while the engine is idle)."""
        inner = self.model.inner if self.model is not None else None
        if not isinstance(inner, OmniBackend):
            raise BenchError("No LLaMA-Omni model is loaded.")
        return inner.model

    def start(self, command: LoadModel) -> None:
        self.engine.start()
        mark = self.log.mark()
        started = time.perf_counter()
        self.engine.send(command)
        ready = self.log.wait_for(Ready, since=mark, timeout_s=LOAD_TIMEOUT_S)
        self.load_s = time.perf_counter() - started
        assert isinstance(ready, Ready)
        self.summary = ready.summary

    def set_chunking(self, chunking: ChunkingOptions) -> None:
        self.options = replace(self.options, chunking=chunking)
        self.engine.send(SetOptions(self.options))

    def turn(self, speak: Speak, play_out: bool, settle_s: float = 0.0) -> RawTurn:
        """One spoken turn: ``speak`` says the question while the key is held; the key is released
        ``settle_s`` after it was delivered, at a random phase of the microphone's block cycle.
        ``play_out=False`` stops the answer (Cancel) once it is generated and its first sample
        played, instead of listening to all of it."""
        assert self.model is not None and self.vocoder is not None
        log, engine = self.log, self.engine
        mark = log.mark()
        engine.send(NewConversation())
        log.wait_for(ConversationReset, since=mark, timeout_s=STEP_TIMEOUT_S)
        mark = log.mark()
        engine.send(StartTurn())
        log.wait_for(StateChanged, _state_is(EngineState.LISTENING), STEP_TIMEOUT_S, since=mark)
        speak()
        # A person lets go of the key at any point of the microphone's block cycle, not just after a block.
        time.sleep(settle_s + self._rng.uniform(0.0, RecorderOptions().block_s))
        released = time.perf_counter()
        engine.send(StopTurn())
        if play_out:
            finished = log.wait_for(TurnFinished, since=mark, timeout_s=TURN_TIMEOUT_S)
            first_sample = self.player.first_sample_at if self.player is not None else None
            latency_s = self.player.first_sample_latency_s if self.player is not None else 0.0
        else:
            log.wait_for(StateChanged, _state_is(EngineState.SPEAKING), TURN_TIMEOUT_S, since=mark)
            first_sample = self._wait_first_sample()
            latency_s = self.player.first_sample_latency_s if self.player is not None else 0.0
            engine.send(Cancel())
            finished = log.wait_for(TurnFinished, since=mark, timeout_s=TURN_TIMEOUT_S)
        assert isinstance(finished, TurnFinished)
        if first_sample is None or first_sample < released:
            raise BenchError("No answer audio reached the speaker.")
        return RawTurn(
            released=released,
            first_sample_at=first_sample,
            metrics=finished.metrics,
            started_at=self.model.started_at or float("nan"),
            steps=tuple(self.model.steps),
            stages=dict(self.model.stages),
            vocoder_calls=tuple(self.vocoder.calls_since(released)),
            chunking=self.options.chunking,
            first_sample_latency_s=latency_s,
            turn_id=finished.turn_id,
        )

    def settle(self, timeout_s: float = TURN_TIMEOUT_S) -> None:
        """After a failed run: wait until the engine is back to ready for the next one."""
        deadline = time.perf_counter() + timeout_s
        while self.engine.state is not EngineState.READY:
            if time.perf_counter() > deadline:
                raise BenchError(f"The engine did not become ready again within {timeout_s:.0f} s.")
            time.sleep(POLL_S)

    def _wait_first_sample(self) -> float | None:
        deadline = time.perf_counter() + TURN_TIMEOUT_S
        while time.perf_counter() < deadline:
            player = self.player
            first = player.first_sample_at if player is not None else None
            if first is not None:
                return first
            time.sleep(POLL_S)
        return None

    def close(self) -> None:
        self.engine.shutdown()
        if self.fake is not None:
            self.fake.close()


# ------------------------------------------------------------------------------------- the runs


@dataclass(slots=True)
class LatencyResult:
    runs: dict[str, list[TurnBreakdown]] = field(default_factory=dict)  # chunking label -> runs
    load_s: float = 0.0
    summary: str = ""
    vocoder: str = ""
    speaker_late_blocks: int = 0
    speaker_callbacks: int = 0
    speaker_max_late_ms: float = 0.0
    mic_late_blocks: int = 0
    play_out: bool = True


def run_latency(
    bench: EngineBench,
    questions: Sequence[Question],
    runs: int,
    play_out: bool,
    say: Callable[[str], None] = lambda message: None,
) -> LatencyResult:
    """``runs`` turns per chunking (question i % len(questions)), after one warm-up turn."""
    speakers = [bench.fake_speaker(q.audio) for q in questions]
    result = LatencyResult(load_s=bench.load_s, summary=bench.summary, play_out=play_out)
    if bench.vocoder is not None:
        result.vocoder = f"{bench.vocoder.backend} on {bench.vocoder.device}"
    bench.set_chunking(ChunkingOptions())
    bench.turn(speakers[0], play_out)  # warm-up: lazy initialisation, allocator growth
    for chunking in chunkings():
        bench.set_chunking(chunking.options)
        turns = result.runs.setdefault(chunking.label, [])
        for i in range(runs):
            turns.append(analyse(bench.turn(speakers[i % len(speakers)], play_out)))
            say(f"{chunking.label} run {i + 1}/{runs}: first audio {turns[-1].first_audio_ms:.0f} ms")
    assert bench.fake is not None
    speaker = bench.fake.clock_stats("output")
    result.speaker_callbacks = speaker.callbacks
    result.speaker_late_blocks = speaker.late_blocks
    result.speaker_max_late_ms = speaker.max_late_s * 1000.0
    result.mic_late_blocks = bench.fake.clock_stats("input").late_blocks
    return result


def latency_table(result: LatencyResult) -> Table:
    table = Table(
        [
            "chunking",
            "first audio median",
            "first audio p90",
            "recording stopped",
            "features",
            "encoder",
            "prefill",
            "first token",
            "first unit chunk",
            "queue to device",
            "tokens before chunk",
        ]
    )
    for label, runs in result.runs.items():

        def med(get: Callable[[TurnBreakdown], float], runs: list[TurnBreakdown] = runs) -> str:
            return fmt(median([get(r) for r in runs]))

        first = [r.first_audio_ms for r in runs]
        table.add(
            label,
            fmt(median(first)),
            fmt(p90(first)),
            med(lambda r: r.stopped_ms),
            med(lambda r: r.features_ms),
            med(lambda r: r.encoder_ms),
            med(lambda r: r.prefill_ms),
            med(lambda r: r.first_token_ms),
            med(lambda r: r.first_chunk_ms),
            med(lambda r: r.first_audio_ms - r.first_chunk_ms),
            med(lambda r: float(r.tokens_to_first_chunk)),
        )
    return table


def _part(index: int) -> Callable[[TurnBreakdown], float]:
    return lambda run: run.parts_ms[index]


def overhead_table(result: LatencyResult) -> Table:
    table = Table(
        [
            "chunking",
            "first audio",
            "model compute",
            "vocoder, first chunk",
            "overhead median",
            "overhead p90",
            "stop recording",
            "turn start (VAD, events)",
            "engine between tokens",
            "hand-off to vocoder",
            "vocoder worker, other",
            "to device",
        ]
    )
    for label, runs in result.runs.items():

        def med(get: Callable[[TurnBreakdown], float], runs: list[TurnBreakdown] = runs) -> str:
            return fmt(median([get(r) for r in runs]), 1)

        overhead = [r.overhead_ms for r in runs]
        table.add(
            label,
            fmt(median([r.first_audio_ms for r in runs])),
            fmt(median([r.model_ms for r in runs])),
            med(lambda r: r.vocoder_ms),
            fmt(median(overhead), 1),
            fmt(p90(overhead), 1),
            *(med(_part(i)) for i in range(len(runs[0].parts_ms))),
        )
    return table


def overhead_verdict(result: LatencyResult) -> str:
    medians = {label: median([r.overhead_ms for r in runs]) for label, runs in result.runs.items()}
    met = [label for label, value in medians.items() if value < OVERHEAD_TARGET_MS]
    worst = max(medians.values()) if medians else float("nan")
    return (
        f"Issue #5 target, overhead < {OVERHEAD_TARGET_MS:.0f} ms: median met for {len(met)} of {len(medians)} "
        f"chunkings (largest median {worst:.1f} ms)."
    )


def turn_table(result: LatencyResult) -> Table:
    """Per chunking: answer size, the engine's decode speed while the vocoder runs, underruns."""
    table = Table(["chunking", "tokens", "units", "units / token", "answer audio s", "tokens/s in engine", "underruns"])
    for label, runs in result.runs.items():
        tokens = median([float(r.n_tokens) for r in runs])
        units = median([float(r.n_units) for r in runs])
        table.add(
            label,
            fmt(tokens),
            fmt(units),
            fmt(units / tokens if tokens else float("nan"), 2),
            fmt(median([r.audio_s for r in runs]), 2),
            fmt(median([r.tokens_per_s for r in runs]), 1),
            str(sum(r.underruns for r in runs)) if result.play_out else "- (not played out)",
        )
    return table
