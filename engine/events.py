"""The engine's language with the outside world: commands in (verbs), events out (nouns).

The GUI (through its bridge), the CLI and tests talk to the engine only through these types.
All are frozen, slotted dataclasses; events carry the ``turn_id`` they belong to so a consumer can
drop stale ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path

import numpy as np

from engine.audio.backend import AudioDevice, Direction
from engine.config import QuantMode
from engine.errors import EngineError, Fact, Reason
from engine.vocoder.defaults import UNIT_S


class EngineState(str, Enum):
    """What the engine is doing; the GUI's status line mirrors it."""

    IDLE = "idle"  # no model loaded
    LOADING = "loading"
    READY = "ready"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    ERROR = "error"


# --------------------------------------------------------------------------------------- options


@dataclass(frozen=True, slots=True)
class ChunkingOptions:
    """Units per vocoder chunk: a small first chunk for latency, larger ones later for quality."""

    first_chunk_units: int = 10
    chunk_units: int = 40
    lookahead_units: int = 2

    @property
    def first_chunk_s(self) -> float:
        """Speech in the first chunk (the official vocoder's 20 ms per unit)."""
        return self.first_chunk_units * UNIT_S

    @property
    def chunk_s(self) -> float:
        return self.chunk_units * UNIT_S


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """Everything the user can change while the engine runs (SetOptions)."""

    system_prompt: str | None = None  # None: LLaMA-Omni's default system text
    temperature: float = 0.0  # 0 = greedy (the reference's default)
    top_p: float = 1.0
    max_new_tokens: int = 512
    chunking: ChunkingOptions = field(default_factory=ChunkingOptions)
    input_device: str | None = None  # device name; None = system default
    output_device: str | None = None
    speak_answers: bool = True
    earcons: bool = True  # short tones when listening starts and stops


# -------------------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class LoadModel:
    model_dir: Path
    speech_encoder: Path | None = None
    vocoder_dir: Path | None = None
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    quant: QuantMode | None = None  # None: nf4 on CUDA, fp32 on CPU
    adapter: Path | None = None  # a fine-tuned adapter folder (python -m engine finetune run)
    # The longest answer the memory pre-flight budgets for (the unit decoder's cache grows with it).
    # None: the engine's current EngineOptions.max_new_tokens.
    max_new_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class StartTurn:
    """Talk key pressed: start listening (interrupting any answer in progress)."""


@dataclass(frozen=True, slots=True)
class StopTurn:
    """Talk key released: stop listening and answer."""


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop whatever is happening (listening, generating, speaking) as fast as possible."""


@dataclass(frozen=True, slots=True)
class NewConversation:
    """Forget the conversation so far."""


@dataclass(frozen=True, slots=True)
class SendText:
    """A typed user turn."""

    text: str


@dataclass(frozen=True, slots=True)
class SetOptions:
    options: EngineOptions


@dataclass(frozen=True, slots=True)
class PlayAudio:
    """Play a clip on the speaker (replaying an answer or a question); a press interrupts it."""

    pcm: np.ndarray  # float32 (n_samples,) at 16 kHz


@dataclass(frozen=True, slots=True)
class CheckDevice:
    """Settings' Test buttons: ``kind`` "input" records a few seconds and plays it back; "output" plays a chime."""

    kind: Direction  # "input" records a few seconds and plays them back; "output" plays a chime
    device: str | None  # device key; None = system default


@dataclass(frozen=True, slots=True)
class ListDevices:
    """Settings' device lists. ``rescan`` looks for devices plugged in (or a sound server started)
    since: the engine closes its streams, has PortAudio scan again, and reopens them."""

    rescan: bool = False


@dataclass(frozen=True, slots=True)
class SetAdapter:
    """Switch the loaded model to a fine-tuned adapter (None: back to the base), without reloading it."""

    adapter: Path | None


@dataclass(frozen=True, slots=True)
class SetMicrophoneMuted:
    """Mute or unmute the microphone (tray, overlay, hands-free): while muted nothing the
    microphone hears is recorded; a talk-key press is ignored with a TurnIgnored("muted") hint."""

    muted: bool


@dataclass(frozen=True, slots=True)
class UnloadModel:
    """Free the model's memory (the fine-tune wizard makes room on the GPU for a training); the
    engine goes IDLE with detail "unloaded" and a later LoadModel brings it back."""


@dataclass(frozen=True, slots=True)
class RecordClip:
    """Record from the microphone without answering (the fine-tune wizard records questions): a
    press whose take comes back as ClipRecorded instead of becoming a turn; needs no model."""


@dataclass(frozen=True, slots=True)
class StopClip:
    """End the RecordClip take; the engine answers ClipRecorded."""


@dataclass(frozen=True, slots=True)
class Shutdown:
    pass


Command = (
    LoadModel
    | StartTurn
    | StopTurn
    | Cancel
    | NewConversation
    | SendText
    | SetOptions
    | PlayAudio
    | CheckDevice
    | ListDevices
    | SetAdapter
    | SetMicrophoneMuted
    | RecordClip
    | StopClip
    | UnloadModel
    | Shutdown
)


# ---------------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class StateChanged:
    state: EngineState
    detail: str = ""


@dataclass(frozen=True, slots=True)
class LoadProgress:
    fraction: float  # 0..1
    message: str


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a loaded model runs on, as facts (for Help → About and the status tooltip)."""

    torch_device: str  # "cuda:0", "cpu"
    quant: str  # the precision in use (engine.config.QUANT_MODES)
    vocoder_backend: str | None  # "onnx" | "torch"; None: no vocoder, answers are text only
    vocoder_providers: tuple[str, ...]  # what the vocoder session uses ("CUDAExecutionProvider", ...)
    licence: str | None  # the model card's licence id (README.md front matter), if the folder has one
    official: bool  # the official Llama-3.1-8B-Omni's dimensions (its licence terms apply)


@dataclass(frozen=True, slots=True)
class Ready:
    """The model is loaded; ``summary`` describes it (device, quantization, memory) for the log."""

    summary: str
    info: ModelInfo | None = None  # None from backends that do not report it (test fakes)


@dataclass(frozen=True, slots=True)
class Listening:
    """Periodic while recording: input level for the meter and how long the user has spoken."""

    level_dbfs: float
    elapsed_s: float
    remaining_s: float


@dataclass(frozen=True, slots=True)
class RecordingLimitReached:
    """Recording stopped by itself at the encoder's 30 s window; the turn goes on with what was heard."""

    limit_s: float


@dataclass(frozen=True, slots=True)
class TurnIgnored:
    """A press too short or silent to be a question; nothing was sent to the model."""

    reason: str
    hint: str


@dataclass(frozen=True, slots=True)
class TurnStarted:
    turn_id: int
    source: str  # "speech" | "text"
    user_text: str  # the typed text; "" for speech
    speech_s: float  # duration of the user's recording (0 for typed turns)
    user_audio: np.ndarray | None = None  # float32 16 kHz, for replaying the question


@dataclass(frozen=True, slots=True)
class TextDelta:
    turn_id: int
    text: str


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """Speech the engine handed to the player (also kept by the GUI for replay)."""

    turn_id: int
    pcm: np.ndarray  # float32 (n_samples,) at 16 kHz


@dataclass(frozen=True, slots=True)
class TurnMetrics:
    """Per-turn latency breakdown (ms, from key release) and totals."""

    features_ms: float | None = None
    encoder_ms: float | None = None
    first_token_ms: float | None = None
    first_chunk_ms: float | None = None  # first unit chunk vocoded
    first_audio_ms: float | None = None  # first sample due at the speaker (output latency included)
    total_ms: float | None = None
    n_tokens: int = 0
    n_units: int = 0
    audio_s: float = 0.0
    tokens_per_s: float = 0.0
    underruns: int = 0  # times the speaker's queue ran dry before the answer's end was known
    dropouts: int = 0  # output blocks the sound device reported late (audible; the PC was too busy)
    gaps: int = 0  # silences inside the answer: it ran dry and the answer went on after
    gap_s: float = 0.0  # their total length
    output_latency_ms: float | None = None  # the device's share of first_audio_ms
    held_ms: float = 0.0  # how long finished speech was held back so a slow device plays without gaps
    slow_device: bool = False  # speech was made slower than real time (SlowDevice was sent)

    def as_dict(self) -> dict[str, float | int | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class SlowDevice:
    """This PC makes speech slower than it plays (``speed`` < 1: seconds of speech per second), so
    the answer is held back for about ``wait_s`` before it plays, to play without gaps."""

    turn_id: int
    speed: float
    wait_s: float


@dataclass(frozen=True, slots=True)
class TurnFinished:
    turn_id: int
    text: str
    interrupted: bool
    metrics: TurnMetrics


@dataclass(frozen=True, slots=True)
class ConversationReset:
    pass


@dataclass(frozen=True, slots=True)
class DeviceChecked:
    """Result of a CheckDevice command, in words for the settings pane."""

    kind: Direction
    ok: bool
    message: str
    error: Failed | None = None  # why it failed (the app words it); None when ok or merely quiet


@dataclass(frozen=True, slots=True)
class DevicesListed:
    """Answer to ListDevices: every device PortAudio knows, in its order. If the scan failed,
    ``error`` says why and ``devices`` is empty."""

    devices: tuple[AudioDevice, ...]
    rescanned: bool
    error: Failed | None = None


@dataclass(frozen=True, slots=True)
class AdapterChanged:
    """SetAdapter succeeded; the conversation was reset (its context came from the old weights)."""

    adapter: Path | None
    summary: str  # the model's description with the adapter now in use


@dataclass(frozen=True, slots=True)
class MicrophoneMuted:
    """The microphone's mute state changed (answer to SetMicrophoneMuted)."""

    muted: bool


@dataclass(frozen=True, slots=True)
class ClipRecorded:
    """A RecordClip take, as recorded (no check for speech: the caller decides)."""

    pcm: np.ndarray  # float32 (n_samples,) at 16 kHz
    limit: bool = False  # stopped by itself at the recording limit


@dataclass(frozen=True, slots=True)
class Failed:
    """Something went wrong; the engine is still running.

    ``kind``, ``reason``, ``path`` and ``facts`` are the EngineError's (engine/errors.py): the app
    turns them into words; ``message`` and ``fix`` are its interface-neutral words, for the log
    and for cases the app has no words of its own for.
    """

    kind: str
    message: str
    fix: str | None = None
    turn_id: int | None = None
    reason: Reason | None = None
    path: Path | None = None
    facts: Mapping[str, Fact] = field(default_factory=dict)

    @classmethod
    def of(cls, error: EngineError, turn_id: int | None = None) -> Failed:
        return cls(error.kind, error.message, error.fix, turn_id, error.reason, error.path, error.facts)


Event = (
    StateChanged
    | LoadProgress
    | Ready
    | Listening
    | RecordingLimitReached
    | TurnIgnored
    | TurnStarted
    | TextDelta
    | AudioChunk
    | SlowDevice
    | TurnFinished
    | ConversationReset
    | DeviceChecked
    | DevicesListed
    | AdapterChanged
    | MicrophoneMuted
    | ClipRecorded
    | Failed
)
