"""The engine thread: owns the model and the microphone; the speaker belongs to its SpeechOutput.

Owners: the engine thread owns the loaded model, the Recorder, the command loop and the CPU
thread plan (engine/cpu_threads.py, applied when a model loads);
:class:`engine.speech_out.SpeechOutput` (created here, its worker thread) owns the Player and the
vocoder stream; one turn is :func:`engine.pipeline.run_turn`.

Usage (the GUI's bridge, the CLI and tests do the same)::

    engine = Engine(on_event=callback)      # callback runs on engine/worker threads: marshal it
    engine.start()
    engine.send(LoadModel(model_dir=...))
    engine.send(StartTurn()); ...; engine.send(StopTurn())
    engine.shutdown()

Cancellation: ``Cancel`` and ``StartTurn`` (a press is "cancel, then listen") bump the cancel
generation and silence the speaker *in the caller's thread* (``SpeechOutput.cancel`` is safe from
any thread), so playback stops at once and the generation loop stops at its next token;
everything tagged with an older generation is dropped.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engine.audio.backend import SoundBackend
from engine.audio.capture import MIN_PRESS_S, Recorder
from engine.audio.devices import default_backend, list_devices, refresh_devices
from engine.audio.earcons import done_earcon, listening_earcon
from engine.audio.playback import Player
from engine.audio.resample import MODEL_SAMPLE_RATE_HZ
from engine.audio.vad import SpeechDetector
from engine.cpu_threads import ThreadPlan, apply_onnx, apply_torch
from engine.errors import AudioDeviceError, BadInput, EngineError, ModelMissing, Reason
from engine.events import (
    AdapterChanged,
    Cancel,
    CheckDevice,
    ClipRecorded,
    Command,
    ConversationReset,
    DeviceChecked,
    DevicesListed,
    EngineOptions,
    EngineState,
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
    Shutdown,
    StartTurn,
    StateChanged,
    StopClip,
    StopTurn,
    TurnIgnored,
    UnloadModel,
)
from engine.gpu import release_cuda_cache
from engine.heap import collector_paused, freeze_long_lived, import_long_lived, thaw
from engine.pipeline import LoadedModel, ModelLoader, TurnContext, TurnRequest, run_turn
from engine.speech_out import Clip, SpeechOutput

logger = logging.getLogger(__name__)

LEVEL_INTERVAL_S = 0.05  # Listening events while recording (meter refresh)
SHUTDOWN_TIMEOUT_S = 10.0
MIC_TEST_S = 3.0
MIC_TEST_QUIET_DBFS = -50.0
DEVICE_TEST_TIMEOUT_S = 5.0
DEVICE_OPEN_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class _LimitReached:
    gen: int


@dataclass(frozen=True, slots=True)
class _InputLost:
    error: AudioDeviceError


class Engine:
    """See the module docstring. Thread-safe entry points: ``send``, ``shutdown``, ``state``."""

    def __init__(
        self,
        on_event: Callable[[Event], None],
        *,
        model_loader: ModelLoader | None = None,
        recorder_factory: Callable[..., Recorder] | None = None,
        player_factory: Callable[..., Player] | None = None,
        speech_detector: SpeechDetector | None = None,
        options: EngineOptions | None = None,
        sound_backend: SoundBackend | None = None,
        threads: ThreadPlan | None = None,
    ) -> None:
        self._emit_raw = on_event
        self._load = model_loader or _default_loader
        self._make_recorder = recorder_factory or Recorder
        self._make_player = player_factory or Player
        self._detector = speech_detector or SpeechDetector()
        self._sound_backend = sound_backend
        self._threads = threads or ThreadPlan()
        self.options = options or EngineOptions()
        self._commands: queue.Queue[Command | _LimitReached | _InputLost] = queue.Queue()
        self._gen = 0
        self._gen_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="omnitalk-engine", daemon=True)
        self._state = EngineState.IDLE
        self._loaded: LoadedModel | None = None
        self._speech = SpeechOutput(self._make_player, self._emit, lambda: self._gen, self.options.output_device)
        self._recorder: Recorder | None = None
        self._recording_since: float | None = None
        self._replay: Clip | None = None  # a replay playing (the engine does not wait for it)
        self._turn_id = 0
        self._muted = False  # SetMicrophoneMuted: nothing the microphone hears is recorded
        self._clip = False  # the take being recorded is a RecordClip (ClipRecorded, no turn)

    # ------------------------------------------------------------------ any thread

    @property
    def state(self) -> EngineState:
        return self._state

    def start(self) -> None:
        self._speech.start()
        self._thread.start()

    def send(self, command: Command) -> None:
        if isinstance(command, Cancel | StartTurn):
            self._interrupt()
        self._commands.put(command)

    def shutdown(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        self.send(Cancel())
        self._commands.put(Shutdown())
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _interrupt(self) -> None:
        with self._gen_lock:
            self._gen += 1
        self._speech.cancel()

    # --------------------------------------------------------------- engine thread

    def _emit(self, event: Event) -> None:
        try:
            self._emit_raw(event)
        except Exception:  # a broken listener must not kill the engine
            logger.exception("Event listener failed on %r", type(event).__name__)

    def _set_state(self, state: EngineState, detail: str = "") -> None:
        self._state = state
        self._emit(StateChanged(state, detail))

    def _idle_state(self) -> EngineState:
        return EngineState.READY if self._loaded is not None else EngineState.IDLE

    def _run(self) -> None:
        while True:
            polling = self._recording_since is not None or self._replay is not None
            try:
                command = self._commands.get(timeout=LEVEL_INTERVAL_S if polling else None)
            except queue.Empty:
                self._report_level()
                self._check_replay()
                continue
            if isinstance(command, Shutdown):
                break
            try:
                self._handle(command)
            except EngineError as exc:
                logger.warning("%s failed: %s", type(command).__name__, exc)
                self._fail(exc)
            except Exception as exc:  # loop boundary: log, report, return to idle
                logger.exception("%s failed unexpectedly", type(command).__name__)
                self._emit(Failed("internal", f"{type(exc).__name__}: {exc}", "See the log for details."))
                self._set_state(self._idle_state())
        self._close_all()

    def _fail(self, exc: EngineError, turn_id: int | None = None) -> None:
        self._emit(Failed.of(exc, turn_id))
        self._set_state(self._idle_state(), exc.message)

    def _handle(self, command: Command | _LimitReached | _InputLost) -> None:
        if isinstance(command, LoadModel):
            self._load_model(command)
        elif isinstance(command, StartTurn):
            self._start_listening()
        elif isinstance(command, StopTurn | StopClip):
            self._stop_listening(limit=False)
        elif isinstance(command, RecordClip):
            self._start_listening(clip=True)
        elif isinstance(command, UnloadModel):
            self._discard_take("unloaded")
            self._unload()
            self._set_state(EngineState.IDLE, "unloaded")
        elif isinstance(command, _LimitReached):
            if command.gen == self._gen and self._recording_since is not None and self._recorder is not None:
                self._emit(RecordingLimitReached(self._recorder.max_recording_s))
                self._stop_listening(limit=True)
        elif isinstance(command, _InputLost):
            if self._recording_since is not None:
                self._recording_since = None
                self._close_recorder()
                self._fail(command.error)
        elif isinstance(command, Cancel):
            self._discard_take("cancelled")
            self._check_replay()
        elif isinstance(command, SetMicrophoneMuted):
            self._muted = command.muted
            if command.muted:
                self._discard_take("microphone muted")
            self._emit(MicrophoneMuted(command.muted))
        elif isinstance(command, SendText):
            text = command.text.strip()
            if not text:
                raise BadInput("The message is empty.", fix="Type a question first.")
            self._run_turn(TurnRequest(None, text, self.options), time.perf_counter(), None)
        elif isinstance(command, NewConversation):
            if self._loaded is not None:
                self._loaded.model.reset()
            self._emit(ConversationReset())
        elif isinstance(command, SetOptions):
            self._apply_options(command.options)
        elif isinstance(command, PlayAudio):
            self._start_replay(command.pcm)
        elif isinstance(command, CheckDevice):
            self._test_device(command)
        elif isinstance(command, ListDevices):
            self._list_devices(command.rescan)
        elif isinstance(command, SetAdapter):
            summary = self._require_model().model.set_adapter(command.adapter)
            self._emit(ConversationReset())
            self._emit(AdapterChanged(command.adapter, summary))

    # --------------------------------------------------------------------- loading

    def _load_model(self, command: LoadModel) -> None:
        self._set_state(EngineState.LOADING, str(command.model_dir))
        self._unload()

        def progress(fraction: float, message: str) -> None:
            self._emit(LoadProgress(min(max(fraction, 0.0), 1.0), message))

        if command.max_new_tokens is None:
            command = dataclasses.replace(command, max_new_tokens=self.options.max_new_tokens)
        apply_onnx(self._threads)  # before the vocoder's session is made
        loaded = self._load(command, progress)
        apply_torch(self._threads)  # after loading: the load's tensor conversions may use them all
        self._loaded = loaded
        self._speech.set_vocoder(loaded.vocoder)
        if not self._detector.uses_model:
            # silero-vad's first load imports its package and builds its model: as with the model
            # code (_default_loader), keep full collections from pausing the UI meanwhile.
            with collector_paused():
                if self._detector.preload():
                    freeze_long_lived("loading the speech detector")
        self._open_devices()
        self._emit(Ready(loaded.model.summary, loaded.info))
        self._set_state(EngineState.READY)

    def _open_devices(self) -> None:
        """Open the microphone and speaker ahead of the first press.

        A new input stream can take ~2 s to deliver its first block and a new output stream drops
        its first ~100 ms, so both stay open between turns. Failures are only logged here: the
        user hears about them, with what to do, when they press the talk key.
        """
        try:
            self._ensure_recorder().open()
        except AudioDeviceError as exc:
            logger.info("Microphone not opened ahead of time: %s", exc)
            self._close_recorder()
        if (self.options.speak_answers or self.options.earcons) and not self._speech.open().wait(DEVICE_OPEN_TIMEOUT_S):
            logger.info("The speaker is still opening; the first answer may start late")

    def _unload(self) -> None:
        self._speech.set_vocoder(None)
        if self._loaded is not None:
            self._loaded.model.close()
            self._loaded = None
            # The load froze the heap (engine/heap.py); the model's reference cycles must become
            # collectable again, or a model swap would keep the old weights in memory.
            thaw("unloading the model")
            # Then hand PyTorch's cached blocks back to the driver: the next load's pre-flight
            # (free VRAM from the driver) would otherwise count them as used and refuse.
            release_cuda_cache()

    def _apply_options(self, options: EngineOptions) -> None:
        old = self.options
        self.options = options
        if options.input_device != old.input_device:
            self._close_recorder()
        if options.output_device != old.output_device:
            self._speech.set_device(options.output_device)
        if self._loaded is not None and self._recording_since is None:
            self._open_devices()

    # ------------------------------------------------------------------- listening

    def _require_model(self) -> LoadedModel:
        if self._loaded is None:
            raise ModelMissing("No model is loaded.", fix="Load a model first.", reason=Reason.NO_MODEL_LOADED)
        return self._loaded

    def _ensure_recorder(self) -> Recorder:
        if self._recorder is None:
            # The generation at the time of the limit names the take (every press bumps it), so a
            # late limit from an earlier take cannot stop the next one.
            self._recorder = self._make_recorder(
                self.options.input_device,
                on_limit=lambda: self._commands.put(_LimitReached(self._gen)),
                on_error=lambda err: self._commands.put(_InputLost(err)),
            )
        return self._recorder

    def _close_recorder(self) -> None:
        if self._recorder is not None:
            self._recorder.close()
            self._recorder = None

    def _discard_take(self, detail: str) -> None:
        """Stop recording without answering (the take is dropped; the stream stays open)."""
        if self._recording_since is None:
            return
        self._recording_since = None
        if self._recorder is not None:
            self._recorder.stop()
        self._set_state(self._idle_state(), detail)

    def _start_listening(self, *, clip: bool = False) -> None:
        if not clip:
            self._require_model()
        if self._muted:
            self._ignore("muted", "The microphone is muted: unmute it to talk.")
            return
        recorder = self._ensure_recorder()
        try:
            if clip:
                # A clip is recorded to keep: with no model loaded the microphone is not open
                # yet, and a new stream delivers nothing for up to ~2 s. Open it (it stays open
                # for the next clip) and wait for sound before saying "listening".
                recorder.open()
                recorder.wait_ready(DEVICE_TEST_TIMEOUT_S)
            recorder.start()
        except AudioDeviceError:
            self._close_recorder()
            raise
        self._recording_since = time.perf_counter()
        self._clip = clip
        self._set_state(EngineState.LISTENING)
        self._report_level()
        self._earcon(listening_earcon())

    def _earcon(self, pcm: np.ndarray) -> None:
        """Play a short confirmation tone if enabled; a missing speaker is not worth an error here
        (the worker logs it; the answer reports it)."""
        if self.options.earcons:
            self._speech.earcon(self._gen, pcm)

    def _test_device(self, command: CheckDevice) -> None:
        """Record MIC_TEST_S and play it back, or play a chime; report in words, never raise."""
        gen = self._gen
        try:
            if command.kind == "output":
                player = self._make_player(command.device)
                try:
                    player.start()
                    chime = np.concatenate([listening_earcon(), done_earcon()])
                    player.write(chime * 2.0)
                    player.finish()
                    player.wait_done(DEVICE_TEST_TIMEOUT_S)
                finally:
                    player.stop()
                self._emit(DeviceChecked("output", True, "Played a test chime. Did you hear it?"))
                return
            recorder = self._make_recorder(command.device)
            try:
                recorder.open()
                if not recorder.wait_ready(DEVICE_TEST_TIMEOUT_S):
                    raise AudioDeviceError(
                        "The microphone delivered no sound.",
                        fix="Pick another microphone.",
                        reason=Reason.DEVICE_SILENT,
                    )
                recorder.start()
                peak = -120.0
                deadline = time.perf_counter() + MIC_TEST_S
                while time.perf_counter() < deadline and self._gen == gen:
                    peak = max(peak, recorder.level_dbfs)
                    time.sleep(LEVEL_INTERVAL_S)
                audio = recorder.stop()
            finally:
                recorder.close()
            if peak < MIC_TEST_QUIET_DBFS:
                self._emit(
                    DeviceChecked("input", False, f"Very quiet (peak {peak:.0f} dBFS): is the microphone muted?")
                )
            else:
                self._emit(DeviceChecked("input", True, f"Heard you (peak {peak:.0f} dBFS); playing it back."))
            if audio.size and self._gen == gen:
                self._start_replay(audio)
        except AudioDeviceError as exc:
            self._emit(DeviceChecked(command.kind, False, f"{exc.message} {exc.fix or ''}".strip(), Failed.of(exc)))

    def _list_devices(self, rescan: bool) -> None:
        """Answer ListDevices. PortAudio can only rescan with no stream open, so a rescan closes
        the microphone and speaker first and reopens them after (not while the user is talking:
        then the current list is the answer)."""
        backend = self._sound_backend or default_backend()
        rescan = rescan and self._recording_since is None
        try:
            if rescan:
                self._close_devices()
                devices = refresh_devices(backend)
            else:
                devices = list_devices(backend)
            answer = DevicesListed(tuple(devices), rescan)
        except AudioDeviceError as exc:
            logger.warning("Listing audio devices failed: %s", exc)
            answer = DevicesListed((), rescan, Failed.of(exc))
        if rescan and self._loaded is not None:
            self._open_devices()
        self._emit(answer)

    def _start_replay(self, pcm: np.ndarray) -> None:
        """Play a stored clip (an earlier answer or question) without waiting for it: a press or
        Cancel stops it at once, and a turn that starts meanwhile cuts it (SpeechOutput)."""
        self._replay = self._speech.play(self._gen, pcm)
        self._set_state(EngineState.SPEAKING, "replay")

    def _check_replay(self) -> None:
        """Back to idle once the replay has been heard, cancelled or cut by something else."""
        clip = self._replay
        if clip is None:
            return
        try:
            over = clip.gen != self._gen or self._speech.heard(clip)
        except AudioDeviceError as exc:
            self._replay = None
            self._fail(exc)
            return
        if over:
            self._replay = None
            if self._recording_since is None and self._state is EngineState.SPEAKING:
                self._set_state(self._idle_state())

    def _report_level(self) -> None:
        if self._recording_since is None or self._recorder is None:
            return
        elapsed = time.perf_counter() - self._recording_since
        remaining = max(0.0, self._recorder.max_recording_s - elapsed)
        self._emit(Listening(self._recorder.level_dbfs, elapsed, remaining))

    def _stop_listening(self, *, limit: bool) -> None:
        if self._recording_since is None or self._recorder is None:
            return
        self._recording_since = None
        try:
            audio = self._recorder.stop()
        except AudioDeviceError:
            self._close_recorder()
            raise
        released = time.perf_counter()
        self._earcon(done_earcon())
        if self._clip:
            self._clip = False
            self._emit(ClipRecorded(audio, limit))
            self._set_state(self._idle_state())
            return
        speech_s = audio.size / MODEL_SAMPLE_RATE_HZ
        if speech_s < MIN_PRESS_S and not limit:
            self._ignore("too_short", f"Hold the talk key while you speak ({speech_s:.1f} s was recorded).")
            return
        if not self._detector.is_speech(audio):
            self._ignore("no_speech", "No speech was heard. Check the microphone in Settings, or speak louder.")
            return
        self._run_turn(TurnRequest(audio, None, self.options), released, audio)

    def _ignore(self, reason: str, hint: str) -> None:
        self._emit(TurnIgnored(reason, hint))
        self._set_state(self._idle_state(), hint)

    # ------------------------------------------------------------------------ turn

    def _run_turn(self, request: TurnRequest, t0: float, user_audio: np.ndarray | None) -> None:
        loaded = self._require_model()
        self._replay = None  # the worker cuts a replay when the turn begins
        self._turn_id += 1
        speaks = loaded.vocoder is not None and self.options.speak_answers
        context = TurnContext(
            model=loaded.model,
            speech=self._speech if speaks else None,
            emit=self._emit,
            set_state=self._set_state,
            gen=self._gen,
            current_gen=lambda: self._gen,
        )
        run_turn(context, request, self._turn_id, t0, user_audio)
        if self._recording_since is None and self._state is not EngineState.LISTENING:
            self._set_state(self._idle_state())

    # --------------------------------------------------------------------- cleanup

    def _close_devices(self) -> None:
        """Close the microphone and the speaker now (they reopen when needed), e.g. for a rescan."""
        self._close_recorder()
        if not self._speech.release().wait(SHUTDOWN_TIMEOUT_S):
            logger.warning("The speaker was not released in time")

    def _close_all(self) -> None:
        self._recording_since = None
        self._close_recorder()
        self._speech.close()
        self._unload()


def _default_loader(command: LoadModel, progress: Callable[[float, str], None]) -> LoadedModel:
    # The first load imports torch, transformers and onnxruntime: hundreds of thousands of objects
    # that live as long as the app. Full collections over them would stall the UI thread for ~200 ms
    # each (engine/heap.py), so import them with the collector paused and freeze them.
    import_long_lived(
        "engine.omni_backend", "engine.vocoder.export_cache",
        optional=("engine.vocoder.runtime_onnx",),  # without onnxruntime the vocoder runs on PyTorch
    )
    from engine.omni_backend import load_omni

    loaded = load_omni(command, progress)
    freeze_long_lived("loading the model", collect_first=True)
    return loaded
