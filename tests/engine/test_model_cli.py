"""``python -m engine respond`` and ``make-tiny`` end to end on the tiny set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.__main__ import main
from engine.config import DecodeOptions
from engine.model.events import TurnDone

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_make_tiny_writes_the_official_layouts(tmp_path: Path, capsys) -> None:
    assert main(["make-tiny", str(tmp_path / "t"), "--seed", "3", "--hf-encoder", "--encoder-in-shards"]) == 0
    out = capsys.readouterr().out
    root = tmp_path / "t"
    assert f"omni: {root / 'omni'}" in out
    cfg = json.loads((root / "omni" / "config.json").read_text())
    assert cfg["model_type"] == "omni_speech2s_llama" and cfg["ctc_decoder_config"] == "(2,64,4,128)"
    index = json.loads((root / "omni" / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) == 3 and all((root / "omni" / s).is_file() for s in shards)
    assert any(k.startswith("model.speech_encoder.blocks.") for k in index["weight_map"])
    assert any(k.startswith("speech_generator.layers.1.") for k in index["weight_map"])
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        assert (root / "omni" / name).is_file()
    assert (root / "speech_encoder" / "large-v3.pt").is_file()
    assert (root / "whisper-large-v3" / "config.json").is_file()
    assert (root / "vocoder" / "g_00500000").is_file() and (root / "vocoder" / "config.json").is_file()


def test_respond_writes_json_and_wav(tiny_omni, tiny_omni_model, speech_16k, tmp_path: Path) -> None:
    wav_in = tmp_path / "q.wav"
    sf.write(wav_in, np.stack([speech_16k, speech_16k], axis=1), 16_000)  # stereo input on purpose
    out_json, out_wav = tmp_path / "a.json", tmp_path / "a.wav"
    rc = main(
        [
            "respond",
            "--model",
            str(tiny_omni.omni),
            "--input",
            str(wav_in),
            "--out-json",
            str(out_json),
            "--out-wav",
            str(out_wav),
            "--vocoder-backend",
            "torch",
            "--device",
            "cpu",
            "--quant",
            "fp32",
            "--max-new-tokens",
            "6",
            "--quiet",
        ]
    )
    assert rc == 0
    result = json.loads(out_json.read_text())
    assert {"text", "text_token_ids", "units", "timings_ms"} <= set(result)
    assert len(result["text_token_ids"]) == 6 and result["finish_reason"] == "length"
    assert set(result["timings_ms"]) >= {"features", "encoder", "prefill", "first_token", "decode", "units", "total"}
    # Same answer as the Python API on the same audio (the file round-trip is 16-bit PCM).
    audio, _ = sf.read(wav_in, dtype="float32")
    events = list(tiny_omni_model.conversation().respond_speech(audio, decode=DecodeOptions(max_new_tokens=6)))
    done = events[-1]
    assert isinstance(done, TurnDone)
    assert result["text_token_ids"] == list(done.token_ids) and result["units"] == list(done.units)
    assert result["text"] == done.text.strip()
    spoken, rate = sf.read(out_wav, dtype="float32")
    assert rate == 16_000 and spoken.shape[0] >= 320 * len(result["units"]) > 0
    assert result["wav_s"] == round(spoken.shape[0] / 16_000, 3)
    assert np.abs(spoken).max() > 0.01


def test_respond_to_typed_text_prints_json(tiny_omni, capsys) -> None:
    rc = main(
        [
            "respond",
            "--model",
            str(tiny_omni.omni),
            "--text",
            "What is the capital of France?",
            "--max-new-tokens",
            "3",
            "--quiet",
        ]
    )
    assert rc == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(result["text_token_ids"]) == 3 and result["timings_ms"]["encoder"] == 0.0


def test_respond_reports_engine_errors(tmp_path: Path, capsys) -> None:
    wav = tmp_path / "q.wav"
    sf.write(wav, np.zeros(1600, np.float32), 16_000)
    assert main(["respond", "--model", str(tmp_path / "missing"), "--input", str(wav)]) == 2
    assert "error (model_missing)" in capsys.readouterr().err
    assert main(["respond", "--model", str(tmp_path), "--input", str(tmp_path / "nope.wav")]) == 2
    assert "error (bad_input)" in capsys.readouterr().err


def test_the_command_line_names_its_own_options_in_advice(tiny_omni, tmp_path: Path, capsys) -> None:
    """The engine's advice names no interface's controls; the CLI adds its options (engine/errors.py)."""
    omni = tmp_path / "omni"
    shutil.copytree(tiny_omni.omni, omni)  # without ../speech_encoder: no Whisper anywhere
    assert main(["respond", "--model", str(omni), "--text", "hi", "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error (model_missing): No Whisper speech encoder found" in err
    assert f"[file: {omni}]" in err and "Fix: Pass --speech-encoder PATH" in err
