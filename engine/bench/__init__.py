"""``python -m engine bench``: latency, decode cost, throughput, memory and streaming quality.

One process drives the real engine (real model loader, real vocoder worker, real Recorder and
Player) against a sound device whose clocks run in real time, then times the model and the
vocoder on their own, and appends a dated section to ``bench/RESULTS.md``. The model sets are
random-weight, written on the fly in the official layouts (``engine.bench.sizes``): tiny, mid
(the 8B's layer ratio, scaled down) and full (the real dimensions; GPU only).

``python -m engine bench-audio`` (``hear``) measures what the user hears instead: first audio through
PulseAudio null sinks (``pulse``: the private server, the microphone feed, the timestamped speaker
monitor) next to the fake device, and decode rate, dropouts and gaps with competing processes (``busy``).

Modules: ``cli`` (arguments, orchestration), ``sizes`` (model sets), ``questions`` (espeak-ng
speech), ``probes`` (timing wrappers), ``latency``
(driving the engine, first-audio breakdown, our overhead), ``decode`` / ``vocoder`` / ``memory``
(the other measurements; ``bench/bench_decode.py`` and ``bench/bench_vocoder.py`` reuse them),
``report`` (tables, machine description, appending to the results file).
"""
