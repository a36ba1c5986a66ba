"""The engine thread: owns the model, the microphone, the speaker and the vocoder worker.

Usage (the GUI's bridge, the CLI and tests do the same)::

    engine = Engine(on_event=callback)      # callback runs on engine/worker threads: marshal it
    engine.start()
    engine.send(LoadModel(model_dir=...))
    engine.send(StartTurn()); ...; engine.send(StopTurn())
    engine.shutdown()

Cancellation: ``Cancel`` and ``StartTurn`` (a press is "cancel, then listen") bump the cancel
generation and silence the speaker *in the caller's thread*, so playback stops at once and the
generation loop stops at its next token; everything tagged with an older generation is dropped.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engine.audio.capture import MAX_RECORDING_S, MIN_PRESS_S, Recorder
from engine.audio.earcons import done_earcon, listening_earcon
from engine.audio.playback import Player
from engine.audio.resample import MODEL_SAMPLE_RATE_HZ
from engine.audio.vad import SpeechDetector
from engine.errors import AudioDeviceError, BadInput, EngineError, ModelMissing
from engine.events import (
    AdapterChanged,
    Cancel,
    CheckDevice,
    Command,
    ConversationReset,
    DeviceChecked,
    EngineOptions,
    EngineState,
    Event,
    Failed,
    Listening,
    LoadModel,
    LoadProgress,
    NewConversation,
    PlayAudio,
    Ready,
    RecordingLimitReached,
    SendText,
    SetAdapter,
    SetOptions,
    Shutdown,
    StartTurn,
    StateChanged,
    StopTurn,
    TextDelta,
    TurnFinished,
    TurnIgnored,
    TurnMetrics,
    TurnStarted,
)
from engine.heap import collector_paused, freeze_long_lived, import_long_lived, thaw
from engine.pipeline import LoadedModel, ModelLoader, Stage, Step, TurnRequest
from engine.speech_out import SpeechOutput, TurnAudio

logger = logging.getLogger(__name__)

LEVEL_INTERVAL_S = 0.05  # Listening events while recording (meter refresh)
PLAYBACK_POLL_S = 0.02
PLAYBACK_DRAIN_TIMEOUT_S = 120.0
SHUTDOWN_TIMEOUT_S = 10.0
MIC_TEST_S = 3.0
MIC_TEST_QUIET_DBFS = -50.0
DEVICE_TEST_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class _LimitReached:
    gen: int


@dataclass(frozen=True, slots=True)
class _InputLost:
    error: AudioDeviceError


def _ms(start: float, end: float | None) -> float | None:
    return None if end is None else round((end - start) * 1000.0, 2)


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
    ) -> None:
        self._emit_raw = on_event
        self._load = model_loader or _default_loader
        self._make_recorder = recorder_factory or Recorder
        self._make_player = player_factory or Player
        self._detector = speech_detector or SpeechDetector()
        self.options = options or EngineOptions()
        self._commands: queue.Queue[Command | _LimitReached | _InputLost] = queue.Queue()
        self._gen = 0
        self._gen_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="omnitalk-engine", daemon=True)
        self._state = EngineState.IDLE
        self._loaded: LoadedModel | None = None
        self._speech: SpeechOutput | None = None
        self._recorder: Recorder | None = None
        self._player: Player | None = None
        self._recording_since: float | None = None
        self._turn_id = 0
        self._played_s_at_cancel: float | None = None

    # ------------------------------------------------------------------ any thread

    @property
    def state(self) -> EngineState:
        return self._state

    def start(self) -> None:
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
        player = self._player
        if player is not None:
            self._played_s_at_cancel = player.played_s
            player.cancel()

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
            recording = self._recording_since is not None
            try:
                command = self._commands.get(timeout=LEVEL_INTERVAL_S if recording else None)
            except queue.Empty:
                self._report_level()
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
        self._emit(Failed(exc.kind, exc.message, exc.fix, turn_id))
        self._set_state(self._idle_state(), exc.message)

    def _handle(self, command: Command | _LimitReached | _InputLost) -> None:
        if isinstance(command, LoadModel):
            self._load_model(command)
        elif isinstance(command, StartTurn):
            self._start_listening()
        elif isinstance(command, StopTurn):
            self._stop_listening(limit=False)
        elif isinstance(command, _LimitReached):
            if command.gen == self._gen and self._recording_since is not None:
                self._emit(RecordingLimitReached(MAX_RECORDING_S))
                self._stop_listening(limit=True)
        elif isinstance(command, _InputLost):
            if self._recording_since is not None:
                self._recording_since = None
                self._close_recorder()
                self._fail(command.error)
        elif isinstance(command, Cancel):
            if self._recording_since is not None:
                self._recording_since = None
                if self._recorder is not None:
                    self._recorder.stop()  # the take is discarded; the stream stays open
                self._set_state(self._idle_state(), "cancelled")
        elif isinstance(command, SendText):
            text = command.text.strip()
            if not text:
                raise BadInput("The message is empty.", fix="Type a question first.")
            self._run_turn(TurnRequest(None, text, self.options), time.perf_counter(), 0.0, None)
        elif isinstance(command, NewConversation):
            if self._loaded is not None:
                self._loaded.model.reset()
            self._emit(ConversationReset())
        elif isinstance(command, SetOptions):
            self._apply_options(command.options)
        elif isinstance(command, PlayAudio):
            self._replay(command.pcm)
        elif isinstance(command, CheckDevice):
            self._test_device(command)
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

        loaded = self._load(command, progress)
        self._loaded = loaded
        if loaded.vocoder is not None:
            self._speech = SpeechOutput(loaded.vocoder, None, self._emit, lambda: self._gen)  # type: ignore[arg-type]
        if not self._detector.uses_model:
            # silero-vad's first load imports its package and builds its model: as with the model
            # code (_default_loader), keep full collections from pausing the UI meanwhile.
            with collector_paused():
                if self._detector.preload():
                    freeze_long_lived("loading the speech detector")
        self._open_devices()
        self._emit(Ready(loaded.model.summary))
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
        if self._speech is not None and self.options.speak_answers:
            try:
                self._ensure_player()
            except AudioDeviceError as exc:
                logger.info("Speaker not opened ahead of time: %s", exc)

    def _unload(self) -> None:
        if self._speech is not None:
            self._speech.close()
            self._speech = None
        if self._loaded is not None:
            self._loaded.model.close()
            self._loaded = None
            # The load froze the heap (engine/heap.py); the model's reference cycles must become
            # collectable again, or a model swap would keep the old weights in memory.
            thaw("unloading the model")

    def _apply_options(self, options: EngineOptions) -> None:
        old = self.options
        self.options = options
        if options.input_device != old.input_device:
            self._close_recorder()
        if options.output_device != old.output_device and self._player is not None:
            self._player.stop()
            self._player = None
        if self._loaded is not None and self._recording_since is None:
            self._open_devices()

    # ------------------------------------------------------------------- listening

    def _require_model(self) -> LoadedModel:
        if self._loaded is None:
            raise ModelMissing("No model is loaded.", fix="Choose a model folder in Settings, or download one.")
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

    def _start_listening(self) -> None:
        self._require_model()
        recorder = self._ensure_recorder()
        try:
            recorder.start()
        except AudioDeviceError:
            self._close_recorder()
            raise
        self._recording_since = time.perf_counter()
        self._set_state(EngineState.LISTENING)
        self._report_level()
        self._earcon(listening_earcon())

    def _earcon(self, pcm: np.ndarray) -> None:
        """Play a short confirmation tone if enabled; a missing speaker is not worth an error here."""
        if not self.options.earcons:
            return
        try:
            player = self._ensure_player()
            player.write(pcm)
            player.finish()
        except AudioDeviceError as exc:
            logger.info("Earcon not played: %s", exc)

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
                    raise AudioDeviceError("The microphone delivered no sound.", fix="Pick another microphone.")
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
                self._replay(audio)
        except AudioDeviceError as exc:
            self._emit(DeviceChecked(command.kind, False, f"{exc.message} {exc.fix or ''}".strip()))

    def _replay(self, pcm: np.ndarray) -> None:
        """Play a stored clip (an earlier answer); a press or Cancel stops it at once."""
        gen = self._gen
        player = self._ensure_player()
        self._set_state(EngineState.SPEAKING, "replay")
        if player.write(np.asarray(pcm, dtype=np.float32)) and player.finish():
            while self._gen == gen and not player.wait_done(PLAYBACK_POLL_S):
                pass
        if self._recording_since is None:
            self._set_state(self._idle_state())

    def _report_level(self) -> None:
        if self._recording_since is None or self._recorder is None:
            return
        elapsed = time.perf_counter() - self._recording_since
        self._emit(Listening(self._recorder.level_dbfs, elapsed, max(0.0, MAX_RECORDING_S - elapsed)))

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
        speech_s = audio.size / MODEL_SAMPLE_RATE_HZ
        if speech_s < MIN_PRESS_S and not limit:
            self._ignore("too_short", f"Hold the talk key while you speak ({speech_s:.1f} s was recorded).")
            return
        if not self._detector.is_speech(audio):
            self._ignore("no_speech", "No speech was heard. Check the microphone in Settings, or speak louder.")
            return
        self._run_turn(TurnRequest(audio, None, self.options), released, speech_s, audio)

    def _ignore(self, reason: str, hint: str) -> None:
        self._emit(TurnIgnored(reason, hint))
        self._set_state(self._idle_state(), hint)

    # ------------------------------------------------------------------------ turn

    def _ensure_player(self) -> Player:
        if self._player is None or self._player.error is not None:
            if self._player is not None:
                self._player.stop()
            self._player = self._make_player(self.options.output_device)
            self._player.start()
        return self._player

    def _run_turn(self, request: TurnRequest, t0: float, speech_s: float, user_audio: np.ndarray | None) -> None:
        loaded = self._require_model()
        self._turn_id += 1
        turn_id, gen = self._turn_id, self._gen
        self._played_s_at_cancel = None
        source = "speech" if request.audio is not None else "text"
        self._emit(TurnStarted(turn_id, source, request.text or "", speech_s, user_audio))
        self._set_state(EngineState.THINKING)

        player_error: AudioDeviceError | None = None
        player: Player | None = None
        if self._speech is not None and self.options.speak_answers:
            try:
                player = self._ensure_player()
            except AudioDeviceError as exc:  # no speaker: answer in text, and say why
                player_error = exc
        speech = self._speech
        audio: TurnAudio | None = None
        if speech is not None and self.options.speak_answers:
            speech.player = player
            audio = speech.begin_turn(turn_id, gen, self.options.chunking)

        stages: dict[str, float] = {}
        first_token: float | None = None
        text_parts: list[str] = []
        units_after_token: list[int] = []
        n_units = 0
        stopped = lambda: self._gen != gen  # noqa: E731
        for out in loaded.model.respond(request, stopped):
            if isinstance(out, Stage):
                stages[out.name] = out.at if out.at is not None else time.perf_counter()
                continue
            assert isinstance(out, Step)
            if first_token is None:
                first_token = time.perf_counter()
            if out.text_delta:
                text_parts.append(out.text_delta)
                self._emit(TextDelta(turn_id, out.text_delta))
            n_units += len(out.units)
            units_after_token.append(n_units)
            if audio is not None and speech is not None:
                speech.push_units(gen, out.units)
            if stopped():
                break
        generated = time.perf_counter()
        interrupted = stopped()

        if audio is not None and speech is not None and not interrupted:
            speech.end_turn(gen)
            self._set_state(EngineState.SPEAKING)
            self._wait_spoken(audio, gen)
            interrupted = stopped()
        if interrupted:
            spoken = self._spoken_tokens(audio, units_after_token)
            loaded.model.keep_spoken_prefix(spoken)
        if audio is not None and audio.error is not None:
            err = audio.error
            player_error = err if isinstance(err, AudioDeviceError) else player_error
            if not isinstance(err, AudioDeviceError):
                self._emit(Failed("internal", f"Speech synthesis failed: {err}", "See the log.", turn_id))
        if player_error is not None:
            self._emit(Failed(player_error.kind, player_error.message, player_error.fix, turn_id))
            if self._player is not None:
                self._player.stop()
                self._player = None

        end = time.perf_counter()
        first_audio = player.first_sample_at if player is not None and audio is not None else None
        n_tokens = len(units_after_token)
        decode_s = generated - first_token if first_token is not None else 0.0
        metrics = TurnMetrics(
            features_ms=_ms(t0, stages.get("features")),
            encoder_ms=_ms(t0, stages.get("encoder")),
            first_token_ms=_ms(t0, first_token),
            first_chunk_ms=_ms(t0, audio.first_chunk_at if audio is not None else None),
            first_audio_ms=_ms(t0, first_audio) if first_audio is not None and first_audio >= t0 else None,
            total_ms=_ms(t0, end),
            n_tokens=n_tokens,
            n_units=n_units,
            audio_s=(audio.samples_out / MODEL_SAMPLE_RATE_HZ) if audio is not None else 0.0,
            tokens_per_s=(n_tokens - 1) / decode_s if n_tokens > 1 and decode_s > 0 else 0.0,
            underruns=(player.underruns - audio.underruns_at_start) if player is not None and audio else 0,
        )
        logger.info("Turn %d %s: %s", turn_id, "interrupted" if interrupted else "done", metrics.as_dict())
        self._emit(TurnFinished(turn_id, "".join(text_parts), interrupted, metrics))
        if self._recording_since is None and self._state is not EngineState.LISTENING:
            self._set_state(self._idle_state())

    def _wait_spoken(self, audio: TurnAudio, gen: int) -> None:
        """Wait for the vocoder worker and the speaker to finish, giving up at once on a cancel."""
        deadline = time.perf_counter() + PLAYBACK_DRAIN_TIMEOUT_S
        while not audio.done.wait(PLAYBACK_POLL_S):
            if self._gen != gen or time.perf_counter() > deadline:
                return
        player = self._speech.player if self._speech is not None else None
        while player is not None and self._gen == gen and time.perf_counter() < deadline:
            try:
                if player.wait_done(PLAYBACK_POLL_S):
                    return
            except AudioDeviceError as exc:
                audio.error = exc
                return

    def _spoken_tokens(self, audio: TurnAudio | None, units_after_token: list[int]) -> int:
        """How many answer tokens the user heard before interrupting (all generated ones if silent)."""
        if audio is None or audio.units_vocoded == 0 or audio.samples_out == 0:
            return len(units_after_token)
        played_s = (self._played_s_at_cancel or 0.0) - audio.played_s_at_start
        samples_per_unit = audio.samples_out / audio.units_vocoded
        heard_units = max(0.0, played_s) * MODEL_SAMPLE_RATE_HZ / samples_per_unit
        return sum(1 for count in units_after_token if count <= heard_units)

    # --------------------------------------------------------------------- cleanup

    def _close_all(self) -> None:
        self._recording_since = None
        self._close_recorder()
        if self._player is not None:
            self._player.stop()
            self._player = None
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
