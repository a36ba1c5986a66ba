"""The fine-tune wizard (Settings → Fine-tuning → New fine-tune…): one module per page."""

from app.finetune_wizard.wizard import FinetuneWizard

__all__ = ["FinetuneWizard"]
