"""What the user hears (``python -m engine bench-audio``): first audio through real sound devices, and
gaps when the PC is busy.

``python -m engine bench`` times first audio on a fake sound device with no output latency: a
component figure. This benchmark measures where the user is. Each **mode** loads the model set
into a fresh engine and runs spoken turns:

- **fake device**: the clocked fake device of the other benchmark (the component figure);
- **PulseAudio**: the real PortAudio backend on a private PulseAudio server with null sinks
  (``engine/bench/pulse.py``). The question is played into the virtual microphone with
  ``paplay``; the key is released 0.1 s after it ended; the speaker's monitor is recorded with
  timestamps, and **first audio = when the first answer sample was heard** there (found by
  correlating the answer the engine produced with the recording);
- **busy** variants of both: ``--busy N`` CPU-bound processes compete for the cores (one per core
  but one, at least one). The engine's decode rate in the turn is compared with the model's alone,
  on the same take under the same load (run right after the turn, while the engine is idle);
- "before" rows repeat a mode with what the app had before issue #18: the Player's 0.2 s output
  latency, or the libraries' default thread counts (torch: one per core; onnxruntime: spinning).

Earcons are on, as in the app. The stage accounting splits first audio (ms after the release)
into: the engine has the recording; model and vocoder until the first chunk; that chunk until its
first sample is handed to the device (queue, callback); the output latency the host reports for
it; and what the monitor heard beyond that estimate.
"""

from __future__ import annotations

import datetime
import functools
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from engine.audio.devices import default_backend
from engine.audio.playback import PlayerOptions
from engine.audio.resample import MODEL_SAMPLE_RATE_HZ
from engine.audio.vad import SpeechDetector
from engine.bench.busy import competing_processes
from engine.bench.latency import BenchError, EngineBench, RawTurn, Speak, TurnBreakdown, analyse
from engine.bench.pulse import (
    PulseServer,
    SpeakerMonitor,
    best_correlation,
    missing_tools,
    start_pulse_server,
    use_pulse_server,
    write_wav16k,
)
from engine.bench.questions import Question, make_questions
from engine.bench.report import (
    Table,
    device_description,
    fmt,
    git_revision,
    load_average,
    median,
    p90,
    publish,
    versions,
)
from engine.bench.run import omnitalk_home
from engine.bench.sizes import BenchSet, check_size_device, write_bench_set
from engine.cpu_threads import ThreadPlan, apply_torch
from engine.events import AudioChunk, EngineOptions, LoadModel, TurnStarted
from engine.model.events import TokenStep
from engine.pipeline import TurnRequest

logger = logging.getLogger(__name__)

BEFORE_OUTPUT_LATENCY_S = 0.2  # the Player's host buffering before issue #18
PULSE_SETTLE_S = 0.1  # the key is released this long after the question ended at the microphone
MONITOR_TAIL_S = 0.4  # the monitor keeps recording this long after the turn, for the answer's end
ALIGN_S = 0.5  # the answer's first and last half second locate it in the recording
SILENCE_LEVEL = 1e-3  # quieter samples count as silence when finding the answer's end
MIN_CORRELATION = 0.6  # below this the recording is not the answer (reported, not used)
MONITOR_START_TIMEOUT_S = 10.0
DEFAULT_RUNS = 5
QUICK_RUNS = 1


@dataclass(frozen=True, slots=True)
class HearSettings:
    device: str
    size: str
    runs: int
    quick: bool
    busy: int  # competing processes in the busy modes
    library_torch_threads: int  # torch's own default on this machine (the "before" rows)
    pulse: bool  # run the PulseAudio modes (needs the pulseaudio tools)
    max_new_tokens: int
    seed: int
    out: Path
    append: bool
    workdir: Path | None
    command: str


@dataclass(frozen=True, slots=True)
class Mode:
    label: str
    sound: str  # "fake" | "pulse"
    busy: int
    threads: ThreadPlan
    output_latency_s: float


def modes(settings: HearSettings) -> list[Mode]:
    plan, latency = ThreadPlan(), PlayerOptions().latency_s
    library = ThreadPlan(torch_threads=settings.library_torch_threads, onnx_threads=None, onnx_spinning=True)
    fake = Mode("fake device", "fake", 0, plan, latency)
    pulse = Mode("PulseAudio", "pulse", 0, plan, latency)
    busy = settings.busy
    if settings.quick:
        chosen = [fake, pulse, replace(pulse, label=f"PulseAudio, {busy} busy", busy=busy)]
    else:
        chosen = [
            fake,
            replace(
                pulse,
                label=f"PulseAudio, output latency {BEFORE_OUTPUT_LATENCY_S} s (before)",
                output_latency_s=BEFORE_OUTPUT_LATENCY_S,
            ),
            pulse,
            replace(
                fake,
                label=f"fake device, {busy} busy, library thread defaults (before)",
                busy=busy,
                threads=library,
            ),
            replace(fake, label=f"fake device, {busy} busy", busy=busy),
            replace(pulse, label=f"PulseAudio, {busy} busy", busy=busy),
        ]
    return [m for m in chosen if settings.pulse or m.sound != "pulse"]


# ------------------------------------------------------------------------------------- one turn


@dataclass(frozen=True, slots=True)
class HeardTurn:
    """One run. Times in ms after the key release."""

    breakdown: TurnBreakdown
    handed_ms: float  # the first sample went to the device (the host's output latency not included)
    estimate_ms: float  # the engine's first audio: handed + the output latency the host reports
    heard_ms: float  # when the monitor heard it (the fake device: = estimate, its latency is 0)
    output_latency_ms: float
    correlation: float | None  # of the answer's start with the recording (PulseAudio only)
    heard_gap_s: float | None  # the answer's heard length minus its produced length (PulseAudio only)
    alone_tokens_per_s: float  # the model alone on the same take, same load
    gaps: int
    gap_s: float
    underruns: int
    dropouts: int
    slow: bool
    held_ms: float

    @property
    def stages_ms(self) -> tuple[float, ...]:
        b = self.breakdown
        return (
            b.stopped_ms,
            b.turn_start_part_ms,
            b.first_chunk_ms - b.stopped_ms - b.turn_start_part_ms,
            self.handed_ms - b.first_chunk_ms,
            self.output_latency_ms,
            self.heard_ms - self.estimate_ms,
        )


STAGES = (
    "release → engine has the recording (last block, resampler)",
    "→ model asked (done earcon queued, speech detection, events)",
    "→ first chunk vocoded (model + vocoder + hand-offs)",
    "→ first sample handed to the device (worker, queue, block)",
    "output latency the host reports",
    "heard at the speaker's monitor beyond that",
)


@dataclass(frozen=True, slots=True)
class Heard:
    at: float  # perf_counter when the answer's first sample was heard
    correlation: float
    gap_s: float


def listen(monitor: SpeakerMonitor, released: float, answer: np.ndarray) -> Heard:
    """Find ``answer`` (float32 16 kHz, what the engine produced) in what the monitor recorded
    after ``released``: when its first sample was heard, and how much longer it took to hear than
    to play (the gaps heard)."""
    start = monitor.index_at(released)
    end = monitor.index_at(time.perf_counter())
    recorded = monitor.audio(start, end)
    n = round(ALIGN_S * MODEL_SAMPLE_RATE_HZ)
    correlation, lag = best_correlation(answer[:n], recorded)
    # The end by level, not by correlation: random-weight answers repeat themselves, so their last
    # half second can match earlier places too. Nothing else plays after the answer.
    heard_end = _last_loud(recorded[lag:])
    return Heard(
        at=monitor.time_of(start + lag),
        correlation=correlation,
        gap_s=(heard_end - _last_loud(answer)) / MODEL_SAMPLE_RATE_HZ,
    )


def _last_loud(audio: np.ndarray) -> int:
    loud = np.flatnonzero(np.abs(audio) > SILENCE_LEVEL)
    return int(loud[-1]) if loud.size else 0


def alone_tokens_per_s(bench: EngineBench, take: np.ndarray, options: EngineOptions) -> float:
    """The model on its own (no vocoder, speaker or events), answering the same take; run on this
    thread while the engine is idle. The conversation is reset before and after."""
    model = bench.model.inner if bench.model is not None else None
    if model is None:
        raise BenchError("No model is loaded.")
    model.reset()
    times = [
        time.perf_counter()
        for event in model.respond(TurnRequest(take, None, options), lambda: False)
        if isinstance(event, TokenStep)
    ]
    model.reset()
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else float("nan")


def heard_turn(bench: EngineBench, raw: RawTurn, options: EngineOptions, monitor: SpeakerMonitor | None) -> HeardTurn:
    log = bench.log
    answer = np.concatenate([c.pcm for c in log.of(AudioChunk) if c.turn_id == raw.turn_id])
    take = next(e.user_audio for e in log.of(TurnStarted) if e.turn_id == raw.turn_id)
    breakdown = analyse(raw)
    estimate_ms = (raw.first_sample_at - raw.released) * 1000.0
    latency_ms = raw.first_sample_latency_s * 1000.0
    heard_ms, correlation, heard_gap = estimate_ms, None, None
    if monitor is not None:
        time.sleep(MONITOR_TAIL_S)  # the answer's last samples reach the monitor
        heard = listen(monitor, raw.released, answer)
        correlation, heard_gap = heard.correlation, heard.gap_s
        if heard.correlation >= MIN_CORRELATION:
            heard_ms = (heard.at - raw.released) * 1000.0
        else:
            heard_ms = float("nan")
            logger.warning("The monitor's recording does not match the answer (correlation %.2f)", correlation)
    m = raw.metrics
    assert take is not None
    return HeardTurn(
        breakdown=breakdown,
        handed_ms=estimate_ms - latency_ms,
        estimate_ms=estimate_ms,
        heard_ms=heard_ms,
        output_latency_ms=latency_ms,
        correlation=correlation,
        heard_gap_s=heard_gap,
        alone_tokens_per_s=alone_tokens_per_s(bench, take, options),
        gaps=m.gaps,
        gap_s=m.gap_s,
        underruns=m.underruns,
        dropouts=m.dropouts,
        slow=m.slow_device,
        held_ms=m.held_ms,
    )


# ------------------------------------------------------------------------------------ the modes


@dataclass(slots=True)
class ModeResult:
    mode: Mode
    turns: list[HeardTurn] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # runs the engine reported as failed
    load: list[float] = field(default_factory=list)  # 1-minute load average after each run
    late_blocks: int = 0  # the fake device's clocks
    output_latency_s: float = 0.0  # what the host reported for the stream


@dataclass(slots=True)
class Rig:
    """What the modes share: the model set, the questions, and (PulseAudio) the server and monitor."""

    bench_set: BenchSet
    questions: list[Question]
    wavs: list[Path]
    server: PulseServer | None = None
    monitor: SpeakerMonitor | None = None


def run_mode(mode: Mode, rig: Rig, settings: HearSettings, say: Callable[[str], None]) -> ModeResult:
    options = EngineOptions(max_new_tokens=settings.max_new_tokens, earcons=True)
    detector = SpeechDetector(use_model=rig.questions[0].source == "espeak-ng")
    pulse = mode.sound == "pulse"
    if pulse and (rig.server is None or rig.monitor is None):
        raise BenchError("The PulseAudio modes need the server.")
    bench = EngineBench(
        options,
        detector,
        settings.seed,
        sound=default_backend() if pulse else None,
        player_options=PlayerOptions(latency_s=mode.output_latency_s),
        threads=mode.threads,
    )
    result = ModeResult(mode)
    paths = rig.bench_set.paths
    try:
        bench.start(LoadModel(paths.omni, paths.speech_encoder_pt, paths.vocoder, settings.device, None))
        speakers: list[Speak]
        if pulse:
            server = rig.server
            assert server is not None
            speakers = [functools.partial(server.speak, wav) for wav in rig.wavs]
        else:
            speakers = [bench.fake_speaker(q.audio) for q in rig.questions]
        settle = PULSE_SETTLE_S if pulse else 0.0
        apply_torch(mode.threads)  # the model alone runs on this thread: the same plan as the engine's
        with competing_processes(mode.busy):
            bench.turn(speakers[0], play_out=True, settle_s=settle)  # warm-up, under the same load
            for i in range(settings.runs):
                try:
                    raw = bench.turn(speakers[i % len(speakers)], play_out=True, settle_s=settle)
                except BenchError as exc:  # the user would have seen this: count it, go on
                    result.failures.append(str(exc))
                    say(f"{mode.label} run {i + 1}/{settings.runs} failed: {exc}")
                    bench.settle()
                    continue
                turn = heard_turn(bench, raw, options, rig.monitor if pulse else None)
                result.turns.append(turn)
                result.load.append(load_average())
                say(
                    f"{mode.label} run {i + 1}/{settings.runs}: first audio heard {turn.heard_ms:.0f} ms, "
                    f"{raw.metrics.tokens_per_s:.0f} tokens/s (alone {turn.alone_tokens_per_s:.0f}), "
                    f"gaps {turn.gaps}"
                )
        if bench.player is not None:
            result.output_latency_s = bench.player.output_latency_s
        if bench.fake is not None:
            result.late_blocks = bench.fake.clock_stats("output").late_blocks
    finally:
        bench.close()
    return result


# ----------------------------------------------------------------------------------- the tables


def _med(turns: Sequence[HeardTurn], get: Callable[[HeardTurn], float | None], digits: int = 0) -> str:
    values = [v for v in (get(t) for t in turns) if v is not None and v == v]
    return fmt(median(values), digits) if values else "-"


def first_audio_table(results: Sequence[ModeResult]) -> Table:
    table = Table(
        [
            "mode",
            "first audio heard, median",
            "p90",
            "engine's estimate",
            "recording stopped",
            "first token",
            "first chunk",
            "handed to device",
            "output latency",
            "heard - estimate",
            "answer vs recording (correlation)",
        ]
    )
    for r in results:
        if r.mode.busy:
            continue
        t = r.turns
        heard = [x.heard_ms for x in t if x.heard_ms == x.heard_ms]
        table.add(
            r.mode.label,
            fmt(median(heard)),
            fmt(p90(heard)),
            _med(t, lambda x: x.estimate_ms),
            _med(t, lambda x: x.breakdown.stopped_ms),
            _med(t, lambda x: x.breakdown.first_token_ms),
            _med(t, lambda x: x.breakdown.first_chunk_ms),
            _med(t, lambda x: x.handed_ms),
            _med(t, lambda x: x.output_latency_ms),
            _med(t, lambda x: x.heard_ms - x.estimate_ms, 1),
            _med(t, lambda x: x.correlation, 3),
        )
    return table


def accounting_table(results: Sequence[ModeResult]) -> Table | None:
    """Per stage, the median ms in each idle mode and the difference to the fake device."""
    idle = [r for r in results if not r.mode.busy]
    fake = next((r for r in idle if r.mode.sound == "fake"), None)
    others = [r for r in idle if r is not fake]
    if fake is None or not others:
        return None
    headers = ["stage", fake.mode.label]
    for r in others:
        headers += [r.mode.label, "difference"]
    table = Table(headers)

    def stage(r: ModeResult, i: int) -> float:
        heard = [t for t in r.turns if t.heard_ms == t.heard_ms]
        return median([t.stages_ms[i] if i < len(STAGES) else t.heard_ms for t in heard])

    for i, name in enumerate([*STAGES, "first audio heard"]):
        base = stage(fake, i)
        cells = [name, fmt(base, 1)]
        for r in others:
            value = stage(r, i)
            cells += [fmt(value, 1), fmt(value - base, 1)]
        table.add(*cells)
    return table


def busy_table(results: Sequence[ModeResult]) -> Table:
    table = Table(
        [
            "mode",
            "load avg",
            "tokens/s in the app",
            "model alone",
            "alone / app",
            "first audio heard",
            "underruns",
            "dropouts",
            "gaps per answer",
            "gap s (all runs)",
            "heard gap s (all runs)",
            "slow-device turns",
            "held ms",
            "output latency at the end (ms)",
            "failed runs",
        ]
    )
    for r in results:
        t = r.turns
        app = median([x.breakdown.tokens_per_s for x in t])
        alone = median([x.alone_tokens_per_s for x in t])
        heard_gaps = [x.heard_gap_s for x in t if x.heard_gap_s is not None]
        table.add(
            r.mode.label,
            fmt(median(r.load), 1),
            fmt(app, 1),
            fmt(alone, 1),
            f"{alone / app:.2f}x" if app else "-",
            _med(t, lambda x: x.heard_ms),
            str(sum(x.underruns for x in t)),
            str(sum(x.dropouts for x in t)),
            fmt(float(np.mean([x.gaps for x in t])), 2),
            fmt(sum(x.gap_s for x in t), 2),
            fmt(round(sum(heard_gaps), 2) + 0.0, 2) if heard_gaps else "-",  # + 0.0: no "-0.00"
            f"{sum(x.slow for x in t)} of {len(t)}",
            _med(t, lambda x: x.held_ms),
            fmt(r.output_latency_s * 1000.0),
            str(len(r.failures)),
        )
    return table


# ------------------------------------------------------------------------------------- the run


def _say(message: str) -> None:
    print(f"[bench-audio] {message}", file=sys.stderr, flush=True)


def run_hear(settings: HearSettings) -> int:
    check_size_device(settings.size, settings.device)
    started = time.perf_counter()
    load_start = load_average()
    if settings.workdir is not None:
        settings.workdir.mkdir(parents=True, exist_ok=True)
    pulse_note = ""
    if settings.pulse and missing_tools():
        pulse_note = f"PulseAudio modes skipped: {', '.join(missing_tools())} not installed."
        settings = replace(settings, pulse=False)
    with (
        tempfile.TemporaryDirectory(prefix="omnitalk-bench-audio-", dir=settings.workdir) as tmp,
        omnitalk_home(Path(tmp) / "home"),
    ):
        work = Path(tmp)
        bench_set = write_bench_set(settings.size, work / "set", settings.seed, _say)
        count = min(settings.runs, 5)
        questions, questions_note = make_questions(work / "questions", count)
        wavs = [write_wav16k(work / "questions" / f"q{i}-16k.wav", q.audio) for i, q in enumerate(questions)]
        rig = Rig(bench_set, questions, wavs)
        try:
            if settings.pulse:
                rig.server = start_pulse_server(Path(tempfile.mkdtemp(prefix="pa-", dir="/tmp")))
                use_pulse_server(rig.server)
                rig.monitor = SpeakerMonitor(rig.server, work / "monitor")
                rig.monitor.wait_started(MONITOR_START_TIMEOUT_S)
            results = []
            for mode in modes(settings):
                _say(f"mode: {mode.label}")
                results.append(run_mode(mode, rig, settings, _say))
        finally:
            if rig.monitor is not None:
                rig.monitor.stop()
            if rig.server is not None:
                rig.server.stop()
                os.environ.pop("PULSE_SERVER", None)
    took_s = time.perf_counter() - started
    publish(
        compose(settings, bench_set, results, questions_note, pulse_note, load_start, took_s),
        settings.out,
        settings.append,
    )
    return 0


def compose(
    settings: HearSettings,
    bench_set: BenchSet,
    results: Sequence[ModeResult],
    questions_note: str,
    pulse_note: str,
    load_start: float,
    took_s: float,
) -> str:
    revision = git_revision()
    accounting = accounting_table(results)
    loads = [value for r in results for value in r.load]
    pulse_idle = [r for r in results if r.mode.sound == "pulse" and not r.mode.busy]
    latencies = ", ".join(f"{r.mode.label}: {r.output_latency_s * 1000:.0f} ms" for r in pulse_idle)
    plan = ThreadPlan()
    method = " ".join(
        [
            "Each mode loads the model set into a fresh engine (real loader, vocoder worker, Recorder, Player) and",
            f"runs one warm-up and {settings.runs} spoken turn(s), earcons on, answers of up to",
            f"{settings.max_new_tokens} tokens played out. Fake device: the clocked fake device (output latency 0; the",
            "figure `python -m engine bench` reports). PulseAudio: the real PortAudio backend on a private server",
            "with null sinks; the question is played into the virtual microphone with paplay, the key released",
            f"{PULSE_SETTLE_S} s after it ended; first audio = when the answer's first sample was heard on the",
            "speaker's monitor (parec, timestamped; the answer located by correlating what the engine produced).",
            f"Busy: {settings.busy} `while True: pass` process(es) compete for the cores during the turns.",
            f"The engine's threads: {plan.describe()}; 'library thread defaults' = torch's",
            f"{settings.library_torch_threads} and onnxruntime's own count, spinning, as before issue #18.",
        ]
    )
    accounting_md = (
        f"""Where the difference goes (medians per stage, ms; each stage starts where the previous ended):

{accounting.markdown()}
"""
        if accounting is not None
        else ""
    )
    return f"""
## What the user hears: {settings.size} model on {settings.device} ({datetime.date.today().isoformat()})

- Command: `{settings.command}` (took {took_s:.0f} s)
- Device: {device_description(settings.device, plan.torch_threads or settings.library_torch_threads)}
- Versions: {versions()}{f"; git {revision}" if revision else ""}
- Machine load (1-minute load average; the busy modes add their own processes): {load_start:.2f} at the start,
  {max(loads) if loads else float("nan"):.2f} at most, sampled after each run
- Model set: {bench_set.describe()}
- Questions: {questions_note}
- Output latency the host granted: {latencies or "-"}{f"; {pulse_note}" if pulse_note else ""}

{method}

First audio after the key release (ms; idle machine):

{first_audio_table(results).markdown()}

{accounting_md}
Decode rate and gaps (tokens/s: the engine during spoken turns vs the model alone on the same take
under the same load; underruns = the speaker's queue ran dry; dropouts = output blocks the host
reported late (through PulseAudio's ALSA plugin each one restarts the stream: ~1.5 s of silence);
gaps = silences inside an answer, counted by the Player; heard gap = the answer's length at the
monitor minus its produced length; the output latency starts at the Player's 40 ms and doubles
after an answer with dropouts):

{busy_table(results).markdown()}
"""
