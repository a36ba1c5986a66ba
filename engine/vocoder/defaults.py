"""Default settings of the vocoder, in a module light enough for the CLI to import at start-up."""

from __future__ import annotations

# The official vocoder's output: 16 kHz, one unit frame = code_hop_size 320 samples = 20 ms. A loaded
# vocoder's config.json is authoritative; these describe the official one before any file is read.
OFFICIAL_SAMPLE_RATE_HZ = 16_000
OFFICIAL_HOP_SAMPLES = 320
UNIT_S = OFFICIAL_HOP_SAMPLES / OFFICIAL_SAMPLE_RATE_HZ

# ONNX opset of the export; onnxruntime >= 1.14 runs it, and changing it invalidates the cache.
DEFAULT_OPSET = 18
# The paper's latency figure uses Omega = 10 units per chunk.
DEFAULT_CHUNK_UNITS = 10
# Two units (the duration predictor's right reach) keep every duration, hence the timing, identical
# to one-pass synthesis; with 0 the chunk-edge units are timed without their neighbours.
DEFAULT_LOOKAHEAD_UNITS = 2
# One unit frame (20 ms at 16 kHz) of overlap: long enough to hide a seam, short enough to add
# little latency (the tail is played one chunk later).
DEFAULT_CROSSFADE_SAMPLES = OFFICIAL_HOP_SAMPLES
# The official vocoder folder: fairseq's generator checkpoint and its config.json.
CHECKPOINT_FILENAME = "g_00500000"
CONFIG_FILENAME = "config.json"
