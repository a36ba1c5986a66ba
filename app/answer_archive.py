"""``--save-answers DIR``: keep each spoken answer as a WAV file, to report or check what was said.

The audio is the engine's own output for the turn (its ``AudioChunk`` events, 16 kHz), written
when the turn finishes as ``turn-<id>-answer.wav``; the end-to-end test compares it with what
reached the speaker. Writing a few hundred kilobytes once per answer is quick enough for the UI
thread.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import soundfile as sf
from PySide6.QtCore import QObject

from app.bridge import EngineBridge
from engine.events import TurnFinished

logger = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16_000  # AudioChunk.pcm's rate


class AnswerArchive(QObject):
    """Collects each turn's speech from the bridge and writes it when the turn finishes."""

    def __init__(self, bridge: EngineBridge, folder: Path) -> None:
        super().__init__(bridge)
        self.folder = folder
        self._chunks: dict[int, list[np.ndarray]] = {}
        bridge.audioChunk.connect(self._on_chunk)
        bridge.turnFinished.connect(self._on_finished)

    def _on_chunk(self, turn_id: int, pcm: np.ndarray) -> None:
        self._chunks.setdefault(turn_id, []).append(pcm)

    def _on_finished(self, finished: TurnFinished) -> None:
        chunks = self._chunks.pop(finished.turn_id, [])
        if not chunks:
            return
        path = self.folder / f"turn-{finished.turn_id}-answer.wav"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), np.concatenate(chunks), SAMPLE_RATE_HZ, subtype="FLOAT")
        except OSError as exc:
            logger.warning("Could not save the answer audio to %s: %s", path, exc)
            return
        logger.info("Saved turn %d's answer audio to %s", finished.turn_id, path)
