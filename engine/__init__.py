"""OmniTalk engine: model, audio, streaming and training. Never imports Qt."""

from __future__ import annotations

from engine.version import __version__

__all__ = ["__version__"]
