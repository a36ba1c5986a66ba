"""First-run setup wizard: ``SetupWizard`` (wizard.py) and one module per page."""

from app.setup_wizard.page_ids import (
    PAGE_CHECK,
    PAGE_CHOICE,
    PAGE_DONE,
    PAGE_DOWNLOAD,
    PAGE_EXISTING,
    PAGE_LICENCE,
)
from app.setup_wizard.texts import progress_text, time_left
from app.setup_wizard.wizard import SetupWizard

__all__ = [
    "PAGE_CHECK",
    "PAGE_CHOICE",
    "PAGE_DONE",
    "PAGE_DOWNLOAD",
    "PAGE_EXISTING",
    "PAGE_LICENCE",
    "SetupWizard",
    "progress_text",
    "time_left",
]
