"""Unit HiFi-GAN vocoder: PyTorch model, ONNX export, onnxruntime runtime, streaming synthesis.

Modules, from the files on disk to PCM chunks:

* ``config``       official ``config.json`` -> ``VocoderConfig`` (frozen dataclass, validated)
* ``checkpoint``   ``g_00500000`` -> ``UnitVocoder`` (weights_only load, weight norm folded);
                   ``write_tiny_vocoder`` / ``write_official_size_vocoder`` for tests and benchmarks
* ``model``        fairseq ``CodeGenerator`` in plain PyTorch (durations + generator halves)
* ``receptive``    context sizes computed from the config (durations +-2 units, generator +-23 frames)
* ``onnx_export``  two self-contained graphs + parity check; ``export_cache`` keeps them up to date
* ``runtime``      the backend interface; ``runtime_torch`` and ``runtime_onnx`` implement it
* ``streaming``    ``StreamingVocoder``: push units, get PCM that matches one-pass synthesis
* ``api``          ``load_vocoder_runtime`` and ``synthesize_units``; ``cli`` the two commands
* ``quality``      SNR of streamed vs one-pass audio (tests and bench/bench_vocoder.py)

Submodules are imported on demand so that ``python -m engine --help`` stays fast.
"""
