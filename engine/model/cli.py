"""``python -m engine respond`` (one turn, text + units, optional WAV) and ``make-tiny``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from engine.config import QUANT_MODES, DecodeOptions
from engine.errors import BadInput, ModelMissing

logger = logging.getLogger(__name__)

VOCODER_DIR_NAME = "vocoder"


def _print_progress(fraction: float, message: str) -> None:
    print(f"[{fraction:4.0%}] {message}", file=sys.stderr)


def _find_vocoder(model_dir: Path, given: str | None) -> Path:
    if given:
        return Path(given)
    for candidate in (model_dir.parent / VOCODER_DIR_NAME, model_dir / VOCODER_DIR_NAME):
        if candidate.is_dir():
            return candidate
    raise ModelMissing(
        "No unit vocoder found for --out-wav.",
        path=model_dir.parent / VOCODER_DIR_NAME,
        fix="Pass --vocoder DIR (the folder with g_00500000 and config.json).",
    )


def _respond(args: argparse.Namespace) -> int:
    from engine.audio.io import load_audio, save_audio
    from engine.model.events import TokenStep, TurnDone
    from engine.model.omni import OmniModel

    model_dir = Path(args.model)
    decode = DecodeOptions(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed
    )
    audio = load_audio(args.input) if args.input else None  # fail on a bad input before loading the model
    vocoder_dir = _find_vocoder(model_dir, args.vocoder) if args.out_wav else None
    model = OmniModel.load(
        model_dir,
        args.speech_encoder,
        device=args.device,
        quant=args.quant,
        on_progress=None if args.quiet else _print_progress,
        max_new_tokens=args.max_new_tokens,
        adapter=args.adapter,
    )
    chat = model.conversation()
    events = (
        chat.respond_speech(audio, decode=decode) if audio is not None else chat.respond_text(args.text, decode=decode)
    )
    done: TurnDone | None = None
    for event in events:
        if isinstance(event, TokenStep):
            if not args.quiet:
                print(event.text_delta, end="", flush=True)
        elif isinstance(event, TurnDone):
            done = event
    if not args.quiet:
        print()
    if done is None:
        raise BadInput("The turn produced no result.")
    result = {
        "text": done.text.strip(),
        "text_token_ids": list(done.token_ids),
        "units": list(done.units),
        "timings_ms": done.timings.as_dict(),
        "n_tokens": done.n_tokens,
        "n_units": done.n_units,
        "finish_reason": done.finish_reason,
        "audio_truncated": done.audio_truncated,
        "device": str(model.device),
        "quant": model.plan.quant,
        "speech_encoder": model.encoder_source.kind,
        "adapter": str(args.adapter) if args.adapter else None,
    }
    if vocoder_dir is not None:
        from engine.vocoder.api import synthesize_units

        units = list(done.units)
        wav = np.zeros(0, np.float32)
        if units:  # on the model's device: its GPU (falling back to the CPU as the app does), or the CPU
            cuda = model.device.type == "cuda"
            wav = synthesize_units(
                vocoder_dir,
                units,
                backend=args.vocoder_backend,
                device="auto" if cuda else "cpu",
                gpu_index=model.device.index or 0,
            )
        save_audio(args.out_wav, wav)
        result["wav"] = str(args.out_wav)
        result["wav_s"] = round(wav.shape[0] / 16000, 3)
    if args.out_json:
        out = Path(args.out_json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    elif args.quiet:
        print(json.dumps(result))
    return 0


def _make_tiny(args: argparse.Namespace) -> int:
    from engine.tiny import write_tiny_set

    paths = write_tiny_set(
        args.dir,
        args.seed,
        encoder_in_shards=args.encoder_in_shards,
        hf_encoder=args.hf_encoder,
        vocoder=not args.no_vocoder,
    )
    for name in ("omni", "speech_encoder_pt", "hf_encoder", "vocoder"):
        value = getattr(paths, name)
        if value is not None:
            print(f"{name}: {value}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("respond", help="answer one spoken (or typed) question: text, units, WAV")
    p.add_argument("--model", required=True, help="Omni folder (config.json, shards, tokenizer)")
    p.add_argument("--speech-encoder", help="Whisper large-v3.pt or HF whisper-large-v3 folder")
    p.add_argument("--vocoder", help="unit vocoder folder (default: <model>/../vocoder)")
    p.add_argument("--adapter", help="fine-tuned adapter folder (python -m engine finetune run)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="question audio (any rate/channels)")
    src.add_argument("--text", help="a typed question instead of audio")
    p.add_argument("--out-wav", help="write the spoken answer here (needs the vocoder)")
    p.add_argument("--vocoder-backend", choices=("auto", "onnx", "torch"), default="auto")
    p.add_argument("--out-json", help="write text, token ids, units and timings here")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")
    p.add_argument("--quant", choices=QUANT_MODES, default=None, help="default: the best precision that fits")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (the reference)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--quiet", action="store_true", help="no progress or streamed text on the console")
    p.set_defaults(func=_respond)

    t = subparsers.add_parser("make-tiny", help="write a tiny random LLaMA-Omni set in the official layouts")
    t.add_argument("dir", help="output folder (omni/, speech_encoder/, vocoder/)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--encoder-in-shards", action="store_true", help="also store Whisper as model.speech_encoder.*")
    t.add_argument("--hf-encoder", action="store_true", help="also write a Hugging Face whisper-large-v3 folder")
    t.add_argument("--no-vocoder", action="store_true")
    t.set_defaults(func=_make_tiny)
