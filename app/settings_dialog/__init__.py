"""Settings: ``SettingsDialog`` (dialog.py) and one module per tab (model, conversation, audio,
controls, appearance). A new tab is a QWidget with ``show_settings(settings)`` and ``changes()``.
"""

from app.settings_dialog.conversation_tab import LATENCY_PRESETS, LatencyPreset
from app.settings_dialog.dialog import SettingsDialog

__all__ = ["LATENCY_PRESETS", "LatencyPreset", "SettingsDialog"]
