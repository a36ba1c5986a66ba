"""Words for engine values, in one place: what the user reads for a precision, and so on."""

from __future__ import annotations

from engine.config import QuantMode

# Quantizations the app offers, best quality first (bf16/fp32 stay selectable for power users).
QUANT_LABELS: dict[QuantMode, str] = {
    "nf4": "4-bit (nf4)",
    "int8": "8-bit (int8)",
    "fp16": "16-bit (fp16)",
    "bf16": "16-bit (bf16)",
    "fp32": "32-bit (fp32)",
}
