"""Default settings of the vocoder, in a module light enough for the CLI to import at start-up."""

from __future__ import annotations

# ONNX opset of the export; onnxruntime >= 1.14 runs it, and changing it invalidates the cache.
DEFAULT_OPSET = 18
# The paper's latency figure uses Omega = 10 units per chunk.
DEFAULT_CHUNK_UNITS = 10
# Two units (the duration predictor's right reach) keep every duration, hence the timing, identical
# to one-pass synthesis; with 0 the chunk-edge units are timed without their neighbours.
DEFAULT_LOOKAHEAD_UNITS = 2
# One unit frame (20 ms at 16 kHz) of overlap: long enough to hide a seam, short enough to add
# little latency (the tail is played one chunk later).
DEFAULT_CROSSFADE_SAMPLES = 320
