"""The engine thread with a scripted model, a real tiny vocoder, and a fake sound device."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from engine.audio.capture import Recorder, RecorderOptions
from engine.audio.fake_device import FakeSoundDevice, FakeStream, fake_device
from engine.audio.playback import Player
from engine.audio.resample import resample
from engine.audio.vad import SpeechDetector
from engine.bench.event_log import EventLog
from engine.engine import Engine
from engine.errors import AudioDeviceError, ModelCorrupt, Reason
from engine.events import (
    AdapterChanged,
    AudioChunk,
    Cancel,
    CheckDevice,
    ChunkingOptions,
    ConversationReset,
    DeviceChecked,
    DevicesListed,
    EngineOptions,
    EngineState,
    Failed,
    ListDevices,
    Listening,
    LoadModel,
    LoadProgress,
    MicrophoneMuted,
    NewConversation,
    PlayAudio,
    Ready,
    RecordingLimitReached,
    SendText,
    SetAdapter,
    SetMicrophoneMuted,
    SetOptions,
    StartTurn,
    StateChanged,
    StopTurn,
    TextDelta,
    TurnFinished,
    TurnIgnored,
    TurnStarted,
)
from engine.vocoder.api import load_vocoder_runtime
from engine.vocoder.checkpoint import write_tiny_vocoder
from tests.engine.audio_fixtures import espeak_wav, read_wav
from tests.engine.engine_fixtures import ANSWER, ScriptedModel, tiny_vocoder_loader
from tests.waiting import wait_until

DEVICE_RATE_HZ = 48_000
SMALL_CHUNKS = ChunkingOptions(first_chunk_units=3, chunk_units=6, lookahead_units=2)


class Harness:
    def __init__(
        self,
        tmp_path: Path,
        model: ScriptedModel,
        recorder_options: RecorderOptions | None = None,
        no_devices: bool = False,
        chunking: ChunkingOptions = SMALL_CHUNKS,
    ) -> None:
        # The speaker plays in real time and keeps what it played; the test feeds the microphone.
        self.backend = FakeSoundDevice([] if no_devices else None, clocked="output", record=True)
        self.speaker = self.backend.speaker
        self.model = model
        self.log = EventLog()
        self.engine = Engine(
            self.log,
            model_loader=tiny_vocoder_loader(tmp_path, model),
            recorder_factory=lambda device, **kw: Recorder(
                device, backend=self.backend, options=recorder_options, **kw
            ),
            player_factory=lambda device: Player(device, backend=self.backend),
            speech_detector=SpeechDetector(use_model=False),
            options=EngineOptions(chunking=chunking),
            sound_backend=self.backend,
        )
        self.engine.start()

    def load(self) -> None:
        self.engine.send(LoadModel(model_dir=Path("unused")))
        self.log.wait_for(Ready)

    def press(self) -> None:
        """Press the talk key and wait until this press is listening (the mic stream stays open)."""
        mark = self.log.mark()
        self.engine.send(StartTurn())
        self.log.wait_for(StateChanged, lambda e: e.state is EngineState.LISTENING, since=mark)

    def input_stream(self, count: int = 1) -> FakeStream:
        """The newest live microphone stream, once ``count`` of them run."""
        wait_until(lambda: len(self.backend.live("input")) >= count, 10.0, "the engine to open the microphone")
        return self.backend.live("input")[-1]

    def close(self) -> None:
        self.engine.shutdown()
        self.backend.close()

    def engine_barrier(self) -> None:
        """Wait until the engine thread has handled every command sent so far (they run in order)."""
        mark = self.log.mark()
        self.engine.send(ListDevices())
        self.log.wait_for(DevicesListed, since=mark)

    def speaker_barrier(self, clip: np.ndarray) -> None:
        """Play ``clip`` as a replay and wait until it has been heard: every sound queued before it
        (earcons, answer chunks) has been handled by the speaker's worker by then. Not while listening."""
        mark = self.log.mark()
        self.engine.send(PlayAudio(clip))
        self.log.wait_for(StateChanged, lambda e: e.detail == "replay", since=mark)
        # The replay's end (a READY without detail; a Cancel sent just before ends in READY "cancelled").
        self.log.wait_for(StateChanged, lambda e: e.state is EngineState.READY and not e.detail, since=mark)

    def speak(self, audio16k: np.ndarray) -> None:
        """Feed a take through the fake microphone at its native rate, stereo."""
        stream = self.input_stream()
        native = resample(audio16k, 16_000, stream.rate_hz)
        stream.push(np.repeat(native[:, None], stream.channels, axis=1))


@pytest.fixture
def question(tmp_path: Path) -> np.ndarray:
    audio, rate = read_wav(espeak_wav("What is the capital of France?", tmp_path))
    assert rate == 16_000
    return audio


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path, ScriptedModel())
    yield h
    h.close()


def test_load_reports_progress_and_ready(harness: Harness) -> None:
    harness.load()
    assert [p.fraction for p in harness.log.of(LoadProgress)] == [0.5, 1.0]
    states = [e.state for e in harness.log.of(StateChanged)]
    assert states[:2] == [EngineState.LOADING, EngineState.READY]
    assert harness.engine.state is EngineState.READY


def test_typed_turn_streams_text_and_speaks(harness: Harness) -> None:
    harness.load()
    speaker = harness.speaker
    harness.engine.send(SendText("  What is the capital of France?  "))
    done = harness.log.wait_for(TurnFinished)
    assert harness.model.requests[0].text == "What is the capital of France?"
    started = harness.log.of(TurnStarted)[0]
    assert started.source == "text" and started.turn_id == done.turn_id
    assert "".join(d.text for d in harness.log.of(TextDelta)) == "The capital is Paris."
    assert done.text == "The capital is Paris." and not done.interrupted
    chunks = harness.log.of(AudioChunk)
    total_units = sum(len(u) for _, u in ANSWER)
    assert done.metrics.n_tokens == len(ANSWER) and done.metrics.n_units == total_units
    produced_s = sum(c.pcm.size for c in chunks) / 16_000
    assert produced_s == pytest.approx(done.metrics.audio_s) and produced_s > 0
    # Adaptive chunking: the first chunk covers fewer units (shorter) than the following ones.
    assert len(chunks) >= 3 and chunks[0].pcm.size < chunks[1].pcm.size
    # The speaker really received the speech (at the device rate), nothing lost.
    assert speaker.nonsilent_s(DEVICE_RATE_HZ) == pytest.approx(produced_s, abs=0.05)
    m = done.metrics
    assert m.first_token_ms is not None and m.first_chunk_ms is not None and m.first_audio_ms is not None
    assert m.first_token_ms <= m.first_chunk_ms <= m.total_ms  # type: ignore[operator]
    assert harness.engine.state is EngineState.READY


def test_speech_turn_records_resamples_and_answers(harness: Harness, question: np.ndarray) -> None:
    harness.load()
    harness.engine.send(StartTurn())
    harness.log.wait_for(StateChanged, lambda e: e.state is EngineState.LISTENING)
    harness.speak(question)
    harness.log.wait_for(Listening)
    harness.engine.send(StopTurn())
    done = harness.log.wait_for(TurnFinished)
    request = harness.model.requests[0]
    assert request.text is None and request.audio is not None
    assert request.audio.size == pytest.approx(question.size, rel=0.02)
    started = harness.log.of(TurnStarted)[0]
    assert started.source == "speech" and started.speech_s == pytest.approx(question.size / 16_000, rel=0.02)
    assert done.metrics.features_ms is not None and done.metrics.encoder_ms is not None


def test_short_and_silent_presses_are_ignored_without_a_model_call(harness: Harness) -> None:
    harness.load()
    harness.engine.send(StartTurn())
    harness.log.wait_for(StateChanged, lambda e: e.state is EngineState.LISTENING)
    harness.speak(np.full(1600, 0.3, dtype=np.float32))  # 0.1 s
    harness.engine.send(StopTurn())
    ignored = harness.log.wait_for(TurnIgnored)
    assert ignored.reason == "too_short" and "Hold the talk key" in ignored.hint

    harness.press()
    harness.speak(np.random.default_rng(0).normal(0, 1e-4, 16_000).astype(np.float32))  # 1 s of hiss
    harness.engine.send(StopTurn())
    ignored = harness.log.wait_for(TurnIgnored, lambda e: e.reason == "no_speech")
    assert "microphone" in ignored.hint
    assert harness.model.requests == []


def test_barge_in_stops_speech_and_generation_and_keeps_what_was_heard(tmp_path: Path) -> None:
    steps = [(f" word{i}", (i % 900, (i + 1) % 900, (i + 2) % 900)) for i in range(60)]
    h = Harness(tmp_path, ScriptedModel(steps=steps, step_s=0.03))
    try:
        h.load()
        h.engine.send(SendText("Tell me a long story"))
        h.log.wait_for(AudioChunk)
        wait_until(lambda: h.speaker.nonsilent_s(DEVICE_RATE_HZ) > 0.1, 10, "the answer to be heard")
        pressed = time.perf_counter()
        h.engine.send(StartTurn())  # barge-in: the talk key pressed while it speaks
        done = h.log.wait_for(TurnFinished)
        h.log.wait_for(StateChanged, lambda e: e.state is EngineState.LISTENING)
        assert done.interrupted
        # Generation stopped at the next token: at most one more token after the press.
        assert sum(1 for t in h.model.yield_times if t > pressed) <= 1
        assert done.metrics.n_tokens < len(steps)
        # The conversation keeps only what the user heard (less than what was generated).
        (kept,) = h.model.kept_prefix
        assert 0 <= kept < done.metrics.n_tokens
        # Nothing more of the interrupted answer is vocoded once the turn has ended: the speaker's
        # worker has handled all its queued units by the time a later replay is heard.
        chunks_at_end = len([c for c in h.log.of(AudioChunk) if c.turn_id == done.turn_id])
        h.engine.send(Cancel())  # stop listening
        h.speaker_barrier(np.zeros(160, np.float32))
        assert len([c for c in h.log.of(AudioChunk) if c.turn_id == done.turn_id]) == chunks_at_end
    finally:
        h.close()


def test_cancel_while_listening_discards_the_take(harness: Harness, question: np.ndarray) -> None:
    harness.load()
    harness.engine.send(StartTurn())
    harness.log.wait_for(StateChanged, lambda e: e.state is EngineState.LISTENING)
    harness.speak(question)
    harness.engine.send(Cancel())
    harness.log.wait_for(StateChanged, lambda e: e.detail == "cancelled")
    harness.engine.send(StopTurn())  # a late key release after Esc does nothing
    harness.engine_barrier()
    assert harness.model.requests == [] and harness.log.of(TurnStarted) == []


def test_muting_drops_the_take_and_presses_until_unmuted(tmp_path: Path, question: np.ndarray) -> None:
    harness = Harness(tmp_path, ScriptedModel(), RecorderOptions(stall_timeout_s=120.0))
    try:
        _mute_and_unmute(harness, question)
    finally:
        harness.close()


def _mute_and_unmute(harness: Harness, question: np.ndarray) -> None:
    # The test feeds the microphone only while speaking: with the default stall timeout a busy
    # machine's pause between the two takes could count as an unplugged microphone.
    harness.load()
    harness.engine.send(StartTurn())
    harness.log.wait_for(StateChanged, lambda e: e.state is EngineState.LISTENING)
    harness.speak(question)
    harness.engine.send(SetMicrophoneMuted(True))  # mid-take: what was said is dropped
    assert harness.log.wait_for(MicrophoneMuted).muted
    harness.engine.send(StopTurn())
    harness.engine.send(StartTurn())  # muted: the press is ignored with a hint, not recorded
    ignored = harness.log.wait_for(TurnIgnored)
    assert ignored.reason == "muted"
    harness.engine.send(StopTurn())
    harness.engine_barrier()
    assert harness.model.requests == [] and harness.log.of(TurnStarted) == []
    assert harness.engine.state is EngineState.READY
    harness.engine.send(SetMicrophoneMuted(False))
    harness.log.wait_for(MicrophoneMuted, lambda e: not e.muted)
    harness.press()  # listening again (waits for this press, not the first one)
    harness.speak(question)
    harness.engine.send(StopTurn())
    assert harness.log.wait_for(TurnFinished).text == "The capital is Paris."


def test_talking_without_a_model_says_what_to_do(harness: Harness) -> None:
    harness.engine.send(StartTurn())
    failed = harness.log.wait_for(Failed)
    assert failed.kind == "model_missing" and failed.reason is Reason.NO_MODEL_LOADED  # the app words it
    assert harness.engine.state is EngineState.IDLE


def test_missing_microphone_is_reported_and_typing_still_works(tmp_path: Path) -> None:
    harness = Harness(tmp_path, ScriptedModel(), no_devices=True)  # no sound card at all
    harness.load()
    assert harness.backend.streams == []
    harness.engine.send(StartTurn())
    failed = harness.log.wait_for(Failed)
    assert failed.kind == "audio_device"
    harness.engine.send(SendText("hello"))
    done = harness.log.wait_for(TurnFinished)
    assert done.text == "The capital is Paris."
    # Without a speaker the answer still arrives as text, with a clear event about the speaker.
    assert any(f.kind == "audio_device" and f.turn_id == done.turn_id for f in harness.log.of(Failed))
    harness.close()


def test_microphone_unplugged_mid_turn(harness: Harness, question: np.ndarray) -> None:
    harness.load()
    harness.engine.send(StartTurn())
    harness.log.wait_for(StateChanged, lambda e: e.state is EngineState.LISTENING)
    harness.speak(question[:8000])
    harness.input_stream().die()
    failed = harness.log.wait_for(Failed)
    assert failed.kind == "audio_device"
    assert harness.model.requests == []
    # Plugged back in: the next press works.
    harness.engine.send(StartTurn())
    wait_until(
        lambda: sum(e.state is EngineState.LISTENING for e in harness.log.of(StateChanged)) >= 2,
        10,
        "the second press to start listening",
    )
    assert harness.input_stream().active


def test_recording_stops_at_the_limit_and_the_turn_goes_on(tmp_path: Path, question: np.ndarray) -> None:
    h = Harness(tmp_path, ScriptedModel(), recorder_options=RecorderOptions(max_recording_s=1.0))
    try:
        h.load()
        h.engine.send(StartTurn())
        h.log.wait_for(StateChanged, lambda e: e.state is EngineState.LISTENING)
        h.speak(np.concatenate([question, question]))
        level = h.log.wait_for(Listening)
        assert level.elapsed_s + level.remaining_s == pytest.approx(1.0, abs=0.1)  # this recorder's limit
        limit = h.log.wait_for(RecordingLimitReached)
        assert limit.limit_s == 1.0  # the recorder's limit, not the encoder's 30 s default
        h.log.wait_for(TurnFinished)
        assert h.model.requests[0].audio.size == 16_000  # type: ignore[union-attr]
    finally:
        h.close()


def test_failed_load_is_reported_and_engine_stays_up(tmp_path: Path) -> None:
    log = EventLog()

    def broken_loader(command: LoadModel, progress):  # type: ignore[no-untyped-def]
        raise ModelCorrupt("Shard is truncated.", path=command.model_dir, fix="Download the model again.")

    engine = Engine(log, model_loader=broken_loader, speech_detector=SpeechDetector(use_model=False))
    engine.start()
    try:
        engine.send(LoadModel(model_dir=tmp_path / "omni"))
        failed = log.wait_for(Failed)
        assert failed.kind == "model_corrupt" and failed.fix == "Download the model again."
        log.wait_for(StateChanged, lambda e: e.state is EngineState.IDLE)
        engine.send(NewConversation())
        log.wait_for(ConversationReset)
    finally:
        engine.shutdown()


def test_new_conversation_and_options(harness: Harness) -> None:
    harness.load()
    harness.engine.send(NewConversation())
    harness.log.wait_for(ConversationReset)
    assert harness.model.resets == 1
    options = replace(harness.engine.options, temperature=0.8, speak_answers=False)
    harness.engine.send(SetOptions(options))
    harness.engine.send(SendText("hi"))
    harness.log.wait_for(TurnFinished)
    assert harness.model.requests[-1].options.temperature == 0.8
    assert harness.log.of(AudioChunk) == []  # speech switched off: text only


def test_empty_typed_turn_is_refused(harness: Harness) -> None:
    harness.load()
    harness.engine.send(SendText("   "))
    failed = harness.log.wait_for(Failed)
    assert failed.kind == "bad_input"
    assert harness.model.requests == []


def test_earcons_and_replay_reach_the_speaker(harness: Harness, question: np.ndarray) -> None:
    harness.load()
    speaker = harness.speaker
    harness.engine.send(StartTurn())
    harness.log.wait_for(StateChanged, lambda e: e.state is EngineState.LISTENING)
    wait_until(lambda: speaker.nonsilent_s(DEVICE_RATE_HZ) >= 0.05, 5, 'the "listening" earcon')
    harness.engine.send(Cancel())
    clip = (0.2 * np.sin(np.arange(16_000) * 2 * np.pi * 440 / 16_000)).astype(np.float32)
    before = speaker.nonsilent_s(DEVICE_RATE_HZ)
    mark = harness.log.mark()
    harness.engine.send(PlayAudio(clip))
    harness.log.wait_for(StateChanged, lambda e: e.detail == "replay", since=mark)
    harness.log.wait_for(
        StateChanged, lambda e: e.state is EngineState.READY and not e.detail, timeout_s=10, since=mark
    )
    assert speaker.nonsilent_s(DEVICE_RATE_HZ) - before == pytest.approx(1.0, abs=0.05)


def test_earcons_can_be_switched_off(harness: Harness) -> None:
    harness.load()
    harness.engine.send(SetOptions(replace(harness.engine.options, earcons=False)))
    speaker = harness.speaker
    harness.engine.send(StartTurn())
    harness.log.wait_for(StateChanged, lambda e: e.state is EngineState.LISTENING)
    harness.engine.send(Cancel())
    tone = (0.2 * np.sin(np.arange(1600) * 2 * np.pi * 440 / 16_000)).astype(np.float32)  # 0.1 s
    harness.speaker_barrier(tone)
    # Only the barrier's tone was heard: no earcon was queued before it.
    assert speaker.nonsilent_s(DEVICE_RATE_HZ) == pytest.approx(0.1, abs=0.01)


def test_speaker_and_microphone_tests_report_in_words(harness: Harness, question: np.ndarray) -> None:
    harness.load()
    speaker = harness.speaker
    harness.engine.send(CheckDevice("output", None))
    result = harness.log.wait_for(DeviceChecked, lambda e: e.kind == "output")
    assert result.ok and "chime" in result.message
    assert speaker.nonsilent_s(DEVICE_RATE_HZ) > 0.15

    harness.engine.send(CheckDevice("input", None))
    stream = harness.input_stream(count=2)  # the microphone test's own stream
    native = np.repeat(resample(question, 16_000, stream.rate_hz)[:, None], stream.channels, axis=1)
    block = stream.rate_hz // 50
    stop = threading.Event()

    def talk() -> None:  # a microphone delivers 20 ms blocks in real time
        i = 0
        while not stop.is_set() and stream.active:
            start = (i * block) % (native.shape[0] - block)
            stream.push(native[start : start + block])
            i += 1
            time.sleep(0.02)

    feeder = threading.Thread(target=talk, daemon=True)
    feeder.start()
    try:
        result = harness.log.wait_for(DeviceChecked, lambda e: e.kind == "input", timeout_s=15)
    finally:
        stop.set()
        feeder.join(5)
    assert result.ok and "Heard you" in result.message


def test_missing_speaker_test_says_what_is_wrong(tmp_path: Path) -> None:
    h = Harness(tmp_path, ScriptedModel(), no_devices=True)
    try:
        h.engine.send(CheckDevice("output", None))
        result = h.log.wait_for(DeviceChecked)
        assert not result.ok and result.message
    finally:
        h.close()


def test_devices_are_listed_and_rescanned_by_the_engine_with_its_streams_open(harness: Harness) -> None:
    harness.load()  # opens the microphone and the speaker ahead of the first press
    before = [s for s in harness.backend.streams if not s.closed]
    assert {s.direction for s in before} == {"input", "output"}

    harness.engine.send(ListDevices(rescan=False))
    listed = harness.log.wait_for(DevicesListed)
    assert listed.devices == tuple(harness.backend.devices) and listed.error is None and not listed.rescanned
    assert harness.backend.refreshes == 0

    headset = fake_device(1, "USB Headset")
    harness.backend.devices.append(headset)  # plugged in while the streams are open
    mark = harness.log.mark()
    harness.engine.send(ListDevices(rescan=True))
    listed = harness.log.wait_for(DevicesListed, since=mark)
    assert listed.rescanned and listed.error is None and headset in listed.devices
    assert harness.backend.refreshes == 1  # the fake refuses to rescan while a stream is open
    assert all(s.closed for s in before)
    reopened = [s for s in harness.backend.streams if not s.closed]
    assert {s.direction for s in reopened} == {"input", "output"}  # ready for the next press


def test_a_failed_rescan_is_reported_with_its_kind(harness: Harness) -> None:
    def broken() -> None:
        raise AudioDeviceError("PortAudio could not be restarted.", fix="Restart the sound server.")

    harness.backend.refresh = broken  # type: ignore[method-assign]
    harness.engine.send(ListDevices(rescan=True))
    listed = harness.log.wait_for(DevicesListed)
    assert listed.devices == () and listed.error is not None
    assert listed.error.kind == "audio_device" and "could not be restarted" in listed.error.message


def test_speech_made_a_little_faster_than_real_time_plays_without_gaps(tmp_path: Path) -> None:
    """The engine's default chunking (10 units, then 40) with units arriving at 2.5x real time: a
    40-unit chunk takes longer to arrive than 10 units take to play, so the speaker ran dry after
    the first chunk (issue #18). Pacing vocodes what is pending in time instead."""
    runtime = load_vocoder_runtime(write_tiny_vocoder(tmp_path / "voc"), device="cpu", backend="torch")
    unit_s = runtime.synthesize(list(range(5, 45))).size / 40 / 16_000
    runtime.close()
    steps = [(f" w{i}", (5 + i % 40,)) for i in range(90)]
    h = Harness(tmp_path, ScriptedModel(steps=steps, step_s=unit_s / 2.5), chunking=ChunkingOptions())
    try:
        h.load()
        h.engine.send(SendText("Tell me something"))
        done = h.log.wait_for(TurnFinished, timeout_s=60)
        m = done.metrics
        assert m.n_units == 90 and m.audio_s > 2.0
        assert m.gaps == 0 and m.gap_s == 0.0 and m.underruns == 0
        chunks = [c.pcm.size for c in h.log.of(AudioChunk)]
        assert len(chunks) > 3  # not 10 + 40 + 40: smaller chunks while the queue was short
    finally:
        h.close()


def test_a_typed_question_cuts_a_replay_and_the_engine_does_not_wait_for_it(harness: Harness) -> None:
    harness.load()
    replay_level = 0.2
    mark = harness.log.mark()
    harness.engine.send(PlayAudio(np.full(5 * 16_000, replay_level, np.float32)))  # a 5 s replay
    harness.log.wait_for(StateChanged, lambda e: e.detail == "replay", since=mark)
    wait_until(lambda: harness.speaker.loud_frames() > DEVICE_RATE_HZ // 10, 10.0, "the replay to be heard")
    harness.engine.send(SendText("hi"))  # no Cancel first, as a script might do
    done = harness.log.wait_for(TurnFinished, since=mark, timeout_s=20)
    assert done.text == "The capital is Paris."
    played = harness.speaker.audio()
    replay_s = np.count_nonzero(np.isclose(played, replay_level, atol=0.005)) / DEVICE_RATE_HZ
    assert replay_s < 2.0  # cut when the turn began, not played to its end
    harness.log.wait_for(StateChanged, lambda e: e.state is EngineState.READY, since=harness.log.mark() - 1)


def test_set_adapter_switches_in_place_and_resets_the_conversation(harness: Harness, tmp_path: Path) -> None:
    harness.engine.send(SetAdapter(tmp_path / "mine"))
    failed = harness.log.wait_for(Failed)
    assert failed.kind == "model_missing"  # no model loaded yet: nothing to apply it to
    harness.load()
    resets = harness.model.resets
    harness.engine.send(SetAdapter(tmp_path / "mine"))
    changed = harness.log.wait_for(AdapterChanged)
    assert changed.adapter == tmp_path / "mine" and changed.summary.endswith("+ mine")
    assert harness.log.of(ConversationReset) and harness.model.resets == resets + 1
    mark = harness.log.mark()
    harness.engine.send(SetAdapter(None))
    assert harness.log.wait_for(AdapterChanged, since=mark).adapter is None
    assert harness.model.adapters == [tmp_path / "mine", None] and harness.model.closed is False
