"""Dataset loading and the validation report: every format, every problem, a stable split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.finetune.data import DataItem, heldout_split, load_dataset
from tests.engine.finetune_fixtures import espeak, write_wav


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return espeak("What time is it in Tokyo?", tmp_path_factory.mktemp("speech") / "q.wav")


def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())
    return dst


def _codes(report, item: str) -> set[str]:
    return {p.code for p in report.problems if p.item == item}


def test_every_format_mixed_in_one_folder(tmp_path: Path, speech_wav: Path) -> None:
    _copy(speech_wav, tmp_path / "pairs" / "tokyo.wav")
    (tmp_path / "pairs" / "tokyo.txt").write_text("It is nine in the evening.\n")
    _copy(speech_wav, tmp_path / "pairs" / "tokyo.answer.wav")
    (tmp_path / "typed.jsonl").write_text(
        json.dumps({"question": "What is 2+2?", "answer": "Four."}) + "\n\n"
        + json.dumps({"question": "Capital of Peru?", "answer": "Lima."}) + "\n"
    )  # fmt: skip
    (tmp_path / "more.csv").write_text("question,answer\nHow are you?,Fine thanks.\n")
    manifest = [
        {"id": "s2s-1", "speech": "pairs/tokyo.wav",
         "conversations": [{"from": "human", "value": "<speech>\nPlease answer."}, {"from": "gpt", "value": "Nine."}],
         "tgt_units": "12 7 993"},
        {"id": "s2s-2", "conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "Hi!"}],
         "units": [1, 2, 3]},
    ]  # fmt: skip
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    report = load_dataset(tmp_path)
    by_id = {i.id: i for i in report.items}
    assert set(by_id) == {"pairs/tokyo", "typed.jsonl#1", "typed.jsonl#3", "more.csv#2", "s2s-1", "s2s-2"}
    tokyo = by_id["pairs/tokyo"]
    assert tokyo.spoken and tokyo.answer == "It is nine in the evening." and tokyo.answer_audio is not None
    assert by_id["typed.jsonl#3"].question_text == "Capital of Peru?" and not by_id["typed.jsonl#3"].spoken
    assert by_id["s2s-1"].spoken and by_id["s2s-1"].units == (12, 7, 993) and by_id["s2s-1"].answer == "Nine."
    assert by_id["s2s-2"].question_text == "Say hi." and by_id["s2s-2"].units == (1, 2, 3)
    # Same recording, different answers: both kept, flagged.
    assert "conflicting_answer" in _codes(report, "s2s-1")
    assert "resampled" in _codes(report, "pairs/tokyo")  # espeak writes 22.05 kHz
    assert report.n_spoken == 2 and report.n_answer_speech == 3
    text = report.text()
    assert "6 usable (2 spoken, 4 typed" in text and "resampled to 16 kHz" in text


def test_bad_items_are_listed_and_skipped_never_a_crash(tmp_path: Path, speech_wav: Path) -> None:
    rate = 16_000
    _copy(speech_wav, tmp_path / "good.wav")
    (tmp_path / "good.txt").write_text("Fine.")
    write_wav(tmp_path / "silent.wav", np.zeros(rate * 2, np.float32), rate)
    (tmp_path / "silent.txt").write_text("Nothing.")
    write_wav(tmp_path / "empty.wav", np.zeros(0, np.float32), rate)
    (tmp_path / "empty.txt").write_text("Nothing.")
    long_audio = (0.3 * np.sin(np.arange(rate * 31) * 2 * np.pi * 220 / rate)).astype(np.float32)
    write_wav(tmp_path / "long.wav", long_audio, rate)
    (tmp_path / "long.txt").write_text("Too long.")
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00not really a wav")
    (tmp_path / "broken.txt").write_text("Broken.")
    _copy(speech_wav, tmp_path / "noanswer.wav")
    _copy(speech_wav, tmp_path / "blank.wav")
    (tmp_path / "blank.txt").write_text("   \n")
    (tmp_path / "orphan.txt").write_text("An answer without a question.")
    stereo = np.stack([long_audio[: rate * 2]] * 2, axis=1)
    write_wav(tmp_path / "stereo.wav", stereo, 44_100)
    (tmp_path / "stereo.txt").write_text("Two channels.")
    (tmp_path / "rows.jsonl").write_text('{"question": "Hi", "answer": "Hello"}\nnot json\n[1, 2]\n'
                                         '{"question": "Hi", "answer": "Hello"}\n{"foo": 1}\n')  # fmt: skip
    (tmp_path / "bad.csv").write_text("q,a\nx,y\n")
    report = load_dataset(tmp_path, count_tokens=lambda t: len(t.split()), max_answer_tokens=3)
    ids = {i.id for i in report.items}
    assert ids == {"good", "stereo", "rows.jsonl#1"}
    assert "silent_audio" in _codes(report, "silent")
    assert "empty_audio" in _codes(report, "empty")
    assert "too_long" in _codes(report, "long")
    assert "unreadable_audio" in _codes(report, "broken")
    assert "missing_answer" in _codes(report, "noanswer")
    assert "empty_answer" in _codes(report, "blank")
    assert "missing_question" in _codes(report, "orphan.txt")
    assert {"mixed_to_mono", "resampled"} <= _codes(report, "stereo")
    assert "bad_row" in _codes(report, "rows.jsonl#2") and "bad_row" in _codes(report, "rows.jsonl#3")
    assert "duplicate" in _codes(report, "rows.jsonl#4") and "bad_row" in _codes(report, "rows.jsonl#5")
    assert "bad_row" in _codes(report, "bad.csv")
    data = report.as_dict()
    assert data["usable"] == 3 and data["skipped"] >= 9 and data["token_limit_checked"]
    json.dumps(data)  # the wizard gets it as JSON


def test_answer_token_limit_and_bad_units(tmp_path: Path) -> None:
    rows = [
        {"question": "Short?", "answer": "one two three four"},
        {"id": "u", "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}],
         "tgt_units": [5, 2957, 7]},
    ]  # fmt: skip
    (tmp_path / "d.json").write_text(json.dumps(rows))
    report = load_dataset(tmp_path / "d.json", count_tokens=lambda t: len(t.split()), max_answer_tokens=3,
                          unit_vocab_size=1000)  # fmt: skip
    assert [i.id for i in report.items] == ["u"] and report.items[0].units is None
    assert "answer_too_long" in _codes(report, "d.json#0")
    assert "bad_units" in _codes(report, "u")  # CosyVoice tokens, not km1000 units


def test_missing_dataset_is_a_report_not_an_exception(tmp_path: Path) -> None:
    report = load_dataset(tmp_path / "nope")
    assert not report.items and report.errors[0].code == "not_found"


def test_heldout_split_is_stable_and_about_ten_percent() -> None:
    items = [DataItem(f"item{i}", "typed", "a", question_text=f"q{i}") for i in range(40)]
    split = heldout_split(items)
    assert len(split) == 4
    assert heldout_split(list(reversed(items))) == split  # order does not matter
    grown = heldout_split(items + [DataItem("extra", "typed", "a", question_text="x")])
    assert len(split & grown) >= 3  # adding a pair does not reshuffle the others
    assert len(heldout_split(items[:3])) == 1 and heldout_split(items[:1]) == frozenset()
    assert heldout_split(items[:2]) and len(heldout_split(items[:2])) == 1
