"""The one place the GUI meets the engine.

Engine events arrive on engine/worker threads; ``_received`` is emitted there and, because the bridge
lives in the UI thread, Qt queues it to the UI thread, where it is turned into typed signals. UI
actions become engine commands. Nothing here blocks: ``send`` only enqueues.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from PySide6.QtCore import QObject, Qt, Signal, Slot

from engine.config import QuantMode
from engine.events import (
    AdapterChanged,
    AudioChunk,
    Cancel,
    CheckDevice,
    ClipRecorded,
    Command,
    ConversationReset,
    DeviceChecked,
    DevicesListed,
    Direction,
    EngineOptions,
    Event,
    Failed,
    ListDevices,
    Listening,
    LoadModel,
    LoadProgress,
    MicrophoneMuted,
    NewConversation,
    PlayAudio,
    Ready,
    RecordClip,
    RecordingLimitReached,
    SendText,
    SetAdapter,
    SetMicrophoneMuted,
    SetOptions,
    SlowDevice,
    StartTurn,
    StateChanged,
    StopClip,
    StopTurn,
    TextDelta,
    TurnFinished,
    TurnIgnored,
    TurnStarted,
    UnloadModel,
)

logger = logging.getLogger(__name__)


class EngineLike(Protocol):
    def start(self) -> None: ...

    def send(self, command: Command) -> None: ...

    def shutdown(self, timeout_s: float = ...) -> None: ...


EngineFactory = Callable[[Callable[[Event], None]], EngineLike]


def _real_engine(on_event: Callable[[Event], None]) -> EngineLike:
    from engine.engine import Engine

    return Engine(on_event)


class EngineBridge(QObject):
    _received = Signal(object)

    stateChanged = Signal(object)  # StateChanged
    loadProgress = Signal(float, str)
    ready = Signal(object)  # Ready
    listening = Signal(float, float, float)  # level dBFS, elapsed s, remaining s
    recordingLimit = Signal(float)
    turnIgnored = Signal(str, str)  # reason, hint
    turnStarted = Signal(object)  # TurnStarted
    textDelta = Signal(int, str)
    audioChunk = Signal(int, object)  # turn id, float32 pcm 16 kHz
    slowDevice = Signal(object)  # SlowDevice: the answer is held back so it plays without gaps
    turnFinished = Signal(object)  # TurnFinished
    conversationReset = Signal()
    deviceTested = Signal(object)  # DeviceChecked
    devicesListed = Signal(object)  # DevicesListed
    microphoneMuted = Signal(bool)  # MicrophoneMuted
    adapterChanged = Signal(object)  # AdapterChanged: a fine-tuned adapter (or none) is now in use
    clipRecorded = Signal(object)  # ClipRecorded: a RecordClip take (the fine-tune wizard's questions)
    failed = Signal(object)  # Failed

    def __init__(self, engine_factory: EngineFactory | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._received.connect(self._dispatch, Qt.ConnectionType.QueuedConnection)
        self._engine = (engine_factory or _real_engine)(self._received.emit)
        self._engine.start()
        self._closed = False

    # ------------------------------------------------------------------ UI -> engine

    def send(self, command: Command) -> None:
        if not self._closed:
            self._engine.send(command)

    def load_model(
        self,
        model_dir: Path,
        speech_encoder: Path | None,
        vocoder_dir: Path | None,
        device: str = "auto",
        quant: QuantMode | None = None,
    ) -> None:
        self.send(LoadModel(model_dir, speech_encoder, vocoder_dir, device, quant))

    def press(self) -> None:
        self.send(StartTurn())

    def release(self) -> None:
        self.send(StopTurn())

    def cancel(self) -> None:
        self.send(Cancel())

    def new_conversation(self) -> None:
        self.send(NewConversation())

    def send_text(self, text: str) -> None:
        self.send(SendText(text))

    def set_options(self, options: EngineOptions) -> None:
        self.send(SetOptions(options))

    def play(self, pcm: object) -> None:
        self.send(PlayAudio(pcm))  # type: ignore[arg-type]

    def set_adapter(self, adapter: Path | None) -> None:
        self.send(SetAdapter(adapter))

    def unload_model(self) -> None:
        self.send(UnloadModel())

    def record_clip(self) -> None:
        self.send(RecordClip())

    def stop_clip(self) -> None:
        self.send(StopClip())

    def test_device(self, kind: Direction, device: str | None) -> None:
        self.send(CheckDevice(kind, device))

    def list_devices(self, rescan: bool) -> None:
        self.send(ListDevices(rescan))

    def set_microphone_muted(self, muted: bool) -> None:
        self.send(SetMicrophoneMuted(muted))

    def shutdown(self) -> None:
        if not self._closed:
            self._closed = True
            self._engine.shutdown()

    # ------------------------------------------------------------------ engine -> UI

    @Slot(object)
    def _dispatch(self, event: Event) -> None:
        if isinstance(event, StateChanged):
            self.stateChanged.emit(event)
        elif isinstance(event, LoadProgress):
            self.loadProgress.emit(event.fraction, event.message)
        elif isinstance(event, Ready):
            self.ready.emit(event)
        elif isinstance(event, Listening):
            self.listening.emit(event.level_dbfs, event.elapsed_s, event.remaining_s)
        elif isinstance(event, RecordingLimitReached):
            self.recordingLimit.emit(event.limit_s)
        elif isinstance(event, TurnIgnored):
            self.turnIgnored.emit(event.reason, event.hint)
        elif isinstance(event, TurnStarted):
            self.turnStarted.emit(event)
        elif isinstance(event, TextDelta):
            self.textDelta.emit(event.turn_id, event.text)
        elif isinstance(event, AudioChunk):
            self.audioChunk.emit(event.turn_id, event.pcm)
        elif isinstance(event, SlowDevice):
            self.slowDevice.emit(event)
        elif isinstance(event, TurnFinished):
            self.turnFinished.emit(event)
        elif isinstance(event, ConversationReset):
            self.conversationReset.emit()
        elif isinstance(event, DeviceChecked):
            self.deviceTested.emit(event)
        elif isinstance(event, DevicesListed):
            self.devicesListed.emit(event)
        elif isinstance(event, MicrophoneMuted):
            self.microphoneMuted.emit(event.muted)
        elif isinstance(event, AdapterChanged):
            self.adapterChanged.emit(event)
        elif isinstance(event, ClipRecorded):
            self.clipRecorded.emit(event)
        elif isinstance(event, Failed):
            self.failed.emit(event)
        else:
            logger.debug("Unhandled engine event %r", event)
