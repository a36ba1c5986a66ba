"""One benchmark run: write the set, drive the engine, time the parts, then print and append the section."""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from engine.audio.vad import SpeechDetector
from engine.bench.decode import (
    PAPER_RATIO,
    PROMPT_POSITIONS,
    TARGET_RATIO,
    DecodeResult,
    decode_table,
    model_description,
    run_decode,
)
from engine.bench.latency import (
    EngineBench,
    LatencyResult,
    chunkings,
    latency_table,
    overhead_table,
    overhead_verdict,
    run_latency,
    turn_table,
)
from engine.bench.memory import (
    CPU_QUANTS,
    CUDA_QUANTS,
    LoadMemory,
    estimate_table,
    host_table,
    measure_load,
    vram_table,
)
from engine.bench.questions import make_questions
from engine.bench.report import (
    Table,
    device_description,
    fmt,
    git_revision,
    load_average,
    median,
    publish,
    versions,
)
from engine.bench.settings import BenchSettings
from engine.bench.sizes import BenchSet, check_size_device, full_dims, write_bench_set
from engine.bench.vocoder import measure_speed, random_units, rtf_table, snr_table
from engine.cpu_threads import ThreadPlan, apply_torch
from engine.events import ChunkingOptions, EngineOptions, LoadModel
from engine.paths import HOME_ENV
from engine.vocoder.api import load_vocoder_runtime
from engine.vocoder.receptive import exact_lookahead_units
from engine.vocoder.runtime import VocoderRuntime

EXTRA_LOOKAHEAD = 8  # between the engine's 2 and the exact bound: ~80 dB in bench/RESULTS.md


@dataclass(slots=True)
class _Progress:
    started: float = field(default_factory=time.perf_counter)
    loads: list[float] = field(default_factory=lambda: [load_average()])

    def say(self, message: str) -> None:
        print(f"[bench {time.perf_counter() - self.started:6.1f} s] {message}", file=sys.stderr, flush=True)

    def sample_load(self) -> None:
        self.loads.append(load_average())


@contextlib.contextmanager
def omnitalk_home(path: Path) -> Iterator[None]:
    """Point the engine's cache (the vocoder's ONNX export) at ``path`` instead of the user's folders."""
    before = os.environ.get(HOME_ENV)
    os.environ[HOME_ENV] = str(path)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(HOME_ENV, None)
        else:
            os.environ[HOME_ENV] = before


def run_bench(settings: BenchSettings) -> int:
    check_size_device(settings.size, settings.device)
    progress = _Progress()
    # The engine's thread plan (engine/cpu_threads.py), with --threads for torch's share.
    plan = ThreadPlan(torch_threads=settings.threads) if settings.threads is not None else ThreadPlan()
    apply_torch(plan)
    threads = torch.get_num_threads()
    if settings.workdir is not None:
        settings.workdir.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="omnitalk-bench-", dir=settings.workdir) as tmp,
        omnitalk_home(Path(tmp) / "home"),
    ):
        work = Path(tmp)
        bench_set = write_bench_set(settings.size, work / "set", settings.seed, progress.say)
        latency, decode, questions_note = _engine_sections(settings, bench_set, work, plan, progress)
        progress.sample_load()
        vocoder_md = _vocoder_sections(settings, bench_set, progress)
        progress.sample_load()
        memory_md = _memory_section(settings, bench_set, threads, progress)
        progress.sample_load()
    section = _compose(settings, bench_set, latency, decode, questions_note, vocoder_md, memory_md, threads, progress)
    publish(section, settings.out, settings.append)
    return 0


# --------------------------------------------------------------------------------- sections 1-3


def _engine_sections(
    settings: BenchSettings, bench_set: BenchSet, work: Path, plan: ThreadPlan, progress: _Progress
) -> tuple[LatencyResult, tuple[DecodeResult, str], str]:
    questions, questions_note = make_questions(work / "questions", settings.n_questions)
    use_vad_model = questions[0].source == "espeak-ng"
    options = EngineOptions(max_new_tokens=settings.max_new_tokens, earcons=False)
    detector = SpeechDetector(use_model=use_vad_model)
    bench = EngineBench(options, detector, settings.seed, threads=plan)
    paths = bench_set.paths
    try:
        progress.say("loading the model set into the engine")
        bench.start(
            LoadModel(
                model_dir=paths.omni,
                speech_encoder=paths.speech_encoder_pt,
                vocoder_dir=paths.vocoder,
                device=settings.device,
                quant=settings.quant,
            )
        )
        progress.say(f"engine ready in {bench.load_s:.1f} s: {bench.summary}")
        if detector.uses_model:
            questions_note += "; speech detection: energy gate + silero-vad"
        elif use_vad_model:
            questions_note += "; speech detection: energy gate only (silero-vad could not be loaded)"
        else:
            questions_note += "; speech detection: energy gate only"
        latency = run_latency(bench, questions, settings.runs, settings.play_out, progress.say)
        omni = bench.omni
    finally:
        bench.close()
    progress.sample_load()
    progress.say(f"decode timing: {settings.decode_tokens} tokens, best of {settings.decode_repeats}")
    decode = run_decode(omni, settings.decode_tokens, settings.decode_repeats)
    description = model_description(omni, torch.get_num_threads())
    del omni, bench
    gc.collect()
    if settings.device == "cuda":
        torch.cuda.empty_cache()
    return latency, (decode, description), questions_note


# --------------------------------------------------------------------------------- sections 3, 5


def _vocoder_sections(settings: BenchSettings, bench_set: BenchSet, progress: _Progress) -> tuple[str, str]:
    """(the RTF part of section 3, section 5)."""
    vocoder_dir = bench_set.paths.vocoder
    assert vocoder_dir is not None
    cuda = settings.device == "cuda"
    progress.say("vocoder: real-time factor and streaming SNR")
    runtimes: dict[str, VocoderRuntime] = {
        "PyTorch": load_vocoder_runtime(vocoder_dir, "cuda" if cuda else "cpu", backend="torch"),
        "onnxruntime": load_vocoder_runtime(vocoder_dir, "auto" if cuda else "cpu", backend="onnx"),
    }
    try:
        ort = runtimes["onnxruntime"]
        units = random_units(ort, settings.vocoder_units, settings.seed)
        rows = [(c.label, c.options) for c in chunkings()]
        stream_labels = [f"stream {label}, look-ahead {opts.lookahead_units}" for label, opts in rows]
        speed = measure_speed(
            runtimes,
            units,
            list(zip(stream_labels, [opts for _, opts in rows], strict=True)),
            one_pass_repeats=settings.one_pass_repeats,
            stream_repeats=settings.stream_repeats,
        )
        names = list(runtimes)
        rtf = rtf_table(speed, names, f"one pass ({len(units)} units)", stream_labels)
        whole = ort.synthesize(units)
        engine_lookahead = ChunkingOptions().lookahead_units
        extra = () if settings.quick else (EXTRA_LOOKAHEAD,)
        lookaheads = sorted({0, engine_lookahead, *extra, exact_lookahead_units(ort.config)})
        by_label = dict(zip([label for label, _ in rows], stream_labels, strict=True))
        snr = snr_table(
            ort,
            units,
            whole,
            rows,
            lookaheads,
            row_header="chunking",
            done=lambda label, la: speed.streams[("onnxruntime", by_label[label])] if la == engine_lookahead else None,
        )
        providers = ", ".join(ort.providers)
        config = ort.config
    finally:
        for runtime in runtimes.values():
            runtime.close()
    rtf_md = f"""Vocoder ({bench_set.vocoder_kind}, hop {config.hop_samples}), {len(units)} random units
(seed {settings.seed}) = {speed.audio_s:.2f} s of audio; onnxruntime providers: {providers}.
Real-time factor = compute / audio, best of {settings.one_pass_repeats} one-pass and {settings.stream_repeats}
streaming runs; streaming pushes one unit at a time and includes the context every chunk recomputes;
"first chunk" is the compute of the push that returned the first audio.

{rtf.markdown()}
"""
    snr_md = f"""SNR in dB of the streamed vs the one-pass waveform (onnxruntime; "inf" = bit-identical;
* = different length because chunk-edge durations were predicted without their right neighbours;
the engine streams with look-ahead {engine_lookahead}; {exact_lookahead_units(config)} units is the exact bound):

{snr.markdown()}
"""
    return rtf_md, snr_md


# ------------------------------------------------------------------------------------- section 4


def _memory_section(settings: BenchSettings, bench_set: BenchSet, threads: int, progress: _Progress) -> str:
    paths = bench_set.paths
    cuda = settings.device == "cuda"
    modes = CUDA_QUANTS if cuda else (("fp32",) if settings.quick else CPU_QUANTS)
    loads: list[LoadMemory] = []
    failures: list[str] = []
    for mode in modes:
        progress.say(f"memory: loading in {mode} on {settings.device} in a fresh process")
        try:
            loads.append(
                measure_load(
                    paths.omni,
                    mode,
                    device=settings.device,
                    threads=threads,
                    speech_encoder=paths.speech_encoder_pt,
                    turn=cuda,
                )
            )
        except RuntimeError as exc:
            failures.append(f"- {mode}: could not be measured: {str(exc).strip().splitlines()[-1]}")
    shard_mb = sum(p.stat().st_size for p in paths.omni.glob("*.safetensors")) / 1e6
    lines = [
        f"Peak host RAM while loading the {bench_set.size} set ({shard_mb:,.0f} MB of fp16 shards + the encoder "
        'checkpoint) in a fresh process (VmHWM from /proc/self/status; "RSS before" = Python with torch and the '
        "engine imported):",
        "",
        host_table(loads).markdown(),
        *([""] + failures if failures else []),
        "",
    ]
    if cuda:
        lines += [
            "Peak VRAM per quantization (torch.cuda.max_memory_allocated / reserved after loading and after a "
            '32-token typed answer; "GPU used, driver" = total - free from cudaMemGetInfo, CUDA context included; '
            "estimate = engine.model.memory's pre-flight figure):",
            "",
            vram_table(loads).markdown(),
        ]
    else:
        lines += [
            "VRAM rows need a GPU (run `python -m engine bench --device cuda --size full`). Estimates only, from "
            "engine.model.memory.estimate_memory for the full 8B dimensions (Llama-3.1-8B, Whisper-large-v3, unit "
            "decoder (2,4096,32,11008)), 2048-token context, 512-token answers; not measured:",
            "",
            estimate_table(full_dims()).markdown(),
        ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------- composing


def _throughput_table(latency: LatencyResult, decode: DecodeResult) -> Table:
    table = Table(["LLM decode", "tokens / s"])
    table.add(
        f"text only, best of {decode.repeats} ({decode.n_tokens}-token answers)", fmt(decode.tokens_per_s("text"), 1)
    )
    table.add(
        f"text + units (incremental unit decoder), best of {decode.repeats}", fmt(decode.tokens_per_s("units"), 1)
    )
    in_engine = [r.tokens_per_s for runs in latency.runs.values() for r in runs]
    table.add(
        f"in the engine during spoken turns (vocoder and speaker running), median of {len(in_engine)}",
        fmt(median(in_engine), 1),
    )
    return table


def _compose(
    settings: BenchSettings,
    bench_set: BenchSet,
    latency: LatencyResult,
    decode_pair: tuple[DecodeResult, str],
    questions_note: str,
    vocoder_md: tuple[str, str],
    memory_md: str,
    threads: int,
    progress: _Progress,
) -> str:
    decode, decode_description = decode_pair
    took = time.perf_counter() - progress.started
    loads = [value for value in progress.loads if value == value]
    load_text = (
        f"{loads[0]:.2f} at the start, {max(loads):.2f} at most when sampled between sections, "
        f"{loads[-1]:.2f} at the end"
        if loads
        else "not available on this OS"
    )
    revision = git_revision()
    tiny_cpu = settings.size == "tiny" and settings.device == "cpu"
    playback = (
        "each answer played out on the speaker clock"
        if latency.play_out
        else "each answer stopped (Cancel) once generated and its first sample played (--quick)"
    )
    units_per_token = median([r.n_units / r.n_tokens for runs in latency.runs.values() for r in runs if r.n_tokens])
    verdict = (
        overhead_verdict(latency)
        if tiny_cpu
        else "Issue #5's target (overhead < 50 ms) is stated for the tiny model on CPU."
    )
    method = " ".join(
        [
            "Real engine, real loader (`load_omni`), real Recorder and Player on a fake sound device whose microphone",
            "and speaker run on real-time clocks (48 kHz; 20 ms input blocks, 10 ms output blocks; output latency 0,",
            'so "first audio" is the first answer sample handed to the device). Per run: NewConversation, StartTurn,',
            "the question spoken into the microphone in real time, StopTurn = key release = 0 ms (at a random phase",
            f"of the 20 ms input block); greedy answers of up to {settings.max_new_tokens} tokens; earcons off;",
            f"{playback}. {settings.runs} runs per chunking after one warm-up turn; medians, p90 by linear",
            "interpolation between runs. Columns are ms after the release at which each stage was done;",
            '"queue to device" = first audio - first unit chunk. Chunking = units in the first / later chunks,',
            f"look-ahead {ChunkingOptions().lookahead_units} units.",
        ]
    )
    overhead_method = " ".join(
        [
            "Our own overhead = first audio - model compute (time inside the model's generator up to the token whose",
            "units completed the first chunk: features, encoder, prefill, those tokens and their unit decoding) - the",
            "vocoder's compute for the first chunk. It splits exactly into the six parts on the right (medians of",
            "each, so they need not add up to the median overhead).",
        ]
    )
    clocks = " ".join(
        [
            f"Speaker clock: {latency.speaker_late_blocks} of {latency.speaker_callbacks} blocks more than one block",
            f"late (worst {latency.speaker_max_late_ms:.0f} ms); microphone: {latency.mic_late_blocks} late blocks.",
            f"The random-weight unit decoder emits {units_per_token:.2f} units per token, so the first chunk waits",
            "for about Ω + 2 tokens; a trained model emits several units per token and gets there in fewer tokens.",
        ]
    )
    return f"""
## Engine benchmark: {settings.size} model on {settings.device} ({datetime.date.today().isoformat()})

- Command: `{settings.command}` (took {took:.0f} s)
- Device: {device_description(settings.device, threads)}
- Versions: {versions()}{f"; git {revision}" if revision else ""}
- Machine load (1-minute load average, shared machine): {load_text}
- Model set: {bench_set.describe()}
- Engine: {latency.summary}; LoadModel to Ready {latency.load_s:.1f} s (first-use ONNX export included);
  vocoder worker: {latency.vocoder}
- Questions: {questions_note}

### 1. First audio after key release

{method}

{latency_table(latency).markdown()}

{overhead_method}

{overhead_table(latency).markdown()}

{verdict} {clocks}

### 2. Decode overhead of speech units

{decode_description}; prompt {PROMPT_POSITIONS} positions, {decode.n_tokens}-token answers, best of {decode.repeats}
(interleaved). Paper: {PAPER_RATIO}x text-only; target ≤ {TARGET_RATIO}x.

{decode_table(decode).markdown()}

### 3. Throughput

{_throughput_table(latency, decode).markdown()}

Per turn in the latency runs (medians; underruns = times the speaker queue ran dry mid-answer, summed over runs):

{turn_table(latency).markdown()}

{vocoder_md[0]}
### 4. Memory

{memory_md}
### 5. Streaming quality

{vocoder_md[1]}"""
