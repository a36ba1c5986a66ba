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

# The controls that error words and hints point the user to. The widgets take their labels from
# here, so the words never name a control that does not exist (tests/app/test_error_words.py).
SETTINGS_ACTION = "Settings…"  # File menu
SETUP_ACTION = "Set up model…"  # File menu: opens the setup wizard
LOGS_ACTION = "Show logs"  # Help menu
MODEL_TAB = "Model"
CONVERSATION_TAB = "Conversation"
AUDIO_TAB = "Audio"
FINETUNE_TAB = "Fine-tuning"
FINETUNE_ACTION = "Fine-tuning…"  # File menu: opens Settings → Fine-tuning
NEW_FINETUNE_BUTTON = "New fine-tune…"  # Settings → Fine-tuning: opens the wizard
RESCAN_BUTTON = "Look for devices again"  # Settings → Audio
DOWNLOAD_BUTTON = "Download…"  # Settings → Model: opens the setup wizard
ENCODER_ROW = "Whisper encoder"  # Settings → Model
RUN_ON_ROW = "Run on"  # Settings → Model
PRECISION_ROW = "Precision"  # Settings → Model
ANSWER_LENGTH_ROW = "Longest answer"  # Settings → Conversation


def settings_place(tab: str) -> str:
    """'File → Settings → Audio'."""
    return f"File → {SETTINGS_ACTION.rstrip('…')} → {tab}"
