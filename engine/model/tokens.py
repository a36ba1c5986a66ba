"""The text tokenizer (Hugging Face ``tokenizer.json`` via the ``tokenizers`` library) and its ids.

Special ids are looked up by name in the tokenizer files and the model config, never hard-coded,
so the tiny test tokenizer and Llama-3.1's behave the same. ``encode(add_special_tokens=True)``
applies the tokenizer's post-processor, which for Llama-3 prepends ``<|begin_of_text|>`` exactly as
``AutoTokenizer`` does in the reference (the source of its double BOS).

``IncrementalDetokenizer`` turns a growing id list into text deltas that are safe to show: a
multi-byte character split over two byte-level tokens is held back until it is complete.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from engine.errors import ModelCorrupt, ModelIncompatible, ModelMissing

logger = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"

BOS_TEXT = "<|begin_of_text|>"
EOT_TEXT = "<|eot_id|>"
END_OF_TEXT = "<|end_of_text|>"
START_HEADER_TEXT = "<|start_header_id|>"
END_HEADER_TEXT = "<|end_header_id|>"
PAD_TEXT = "<|finetune_right_pad_id|>"
REPLACEMENT_CHAR = "\ufffd"


@dataclass(frozen=True, slots=True)
class SpecialTokens:
    bos_id: int
    eot_id: int  # closes every message in the llama_3 template
    eos_ids: frozenset[int]  # generation stops on any of these (eot included)
    pad_id: int
    start_header_id: int
    end_header_id: int


def _token_content(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _first(*values: int | None) -> int | None:
    """The first value that is not None (``or`` would skip a legitimate id 0)."""
    return next((v for v in values if v is not None), None)


def _read_optional_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelCorrupt(f"Cannot read {path.name}: {exc}", path=path, fix="Download the model again.") from exc
    return data if isinstance(data, dict) else {}


class TextTokenizer:
    """Thin, typed wrapper around ``tokenizers.Tokenizer`` with the ids LLaMA-Omni needs."""

    def __init__(self, tokenizer: Tokenizer, special: SpecialTokens) -> None:
        self._tok = tokenizer
        self.special = special
        self._special_strings = tuple(t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special)

    @classmethod
    def load(
        cls,
        folder: str | Path,
        *,
        config_eos_ids: Iterable[int] = (),
        config_bos_id: int | None = None,
        config_pad_id: int | None = None,
    ) -> TextTokenizer:
        folder = Path(folder)
        path = folder / TOKENIZER_FILE
        if not path.is_file():
            raise ModelMissing(f"{TOKENIZER_FILE} is missing.", path=path, fix="Download the model again.")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises a plain Exception for any parse error
            raise ModelCorrupt(
                f"Cannot read {TOKENIZER_FILE}: {exc}", path=path, fix="Download the model again."
            ) from exc
        tok_cfg = _read_optional_json(folder / TOKENIZER_CONFIG_FILE)
        tok_map = _read_optional_json(folder / SPECIAL_TOKENS_MAP_FILE)

        def named(key: str) -> str | None:
            return _token_content(tok_map.get(key)) or _token_content(tok_cfg.get(key))

        def lookup(text: str | None) -> int | None:
            return tok.token_to_id(text) if text else None

        bos_id = _first(lookup(named("bos_token")), lookup(BOS_TEXT), config_bos_id)
        eot_id = lookup(EOT_TEXT)
        start_id, end_id = lookup(START_HEADER_TEXT), lookup(END_HEADER_TEXT)
        if bos_id is None or eot_id is None or start_id is None or end_id is None:
            raise ModelIncompatible(
                "The tokenizer lacks the Llama-3 chat tokens (<|begin_of_text|>, <|eot_id|>, headers).",
                path=path,
                fix="Use the tokenizer files that came with Llama-3.1-8B-Omni.",
            )
        if config_bos_id is not None and config_bos_id != bos_id:
            logger.warning("config.json bos_token_id %d differs from the tokenizer's %d", config_bos_id, bos_id)
        eos = {eot_id, *config_eos_ids}
        eos_named = lookup(named("eos_token"))
        if eos_named is not None:
            eos.add(eos_named)
        pad_id = _first(lookup(named("pad_token")), lookup(PAD_TEXT), config_pad_id)
        special = SpecialTokens(
            bos_id=bos_id,
            eot_id=eot_id,
            eos_ids=frozenset(eos),
            pad_id=pad_id if pad_id is not None else eot_id,
            start_header_id=start_id,
            end_header_id=end_id,
        )
        return cls(tok, special)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, text: str) -> int | None:
        return self._tok.token_to_id(text)

    def neutralize_special_text(self, text: str) -> str:
        """Typed text must not smuggle in chat-control tokens: break up their literal spellings."""
        for special in self._special_strings:
            if special in text:
                text = text.replace(special, special[0] + "\u200b" + special[1:])
        return text


class IncrementalDetokenizer:
    """Text deltas for a growing token list; the deltas concatenate to ``decode(all_ids)``.

    The prefix/read-offset method: decode a small window of recent ids with and without the new
    ones and emit the difference, unless it ends in U+FFFD (an incomplete UTF-8 sequence from a
    byte-level token), in which case wait for the next token.
    """

    def __init__(self, tokenizer: TextTokenizer) -> None:
        self._tok = tokenizer
        self.ids: list[int] = []
        self.text = ""  # emitted so far
        self._prefix_offset = 0
        self._read_offset = 0

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        prefix_text = self._tok.decode(self.ids[self._prefix_offset : self._read_offset])
        new_text = self._tok.decode(self.ids[self._prefix_offset :])
        if len(new_text) > len(prefix_text) and not new_text.endswith(REPLACEMENT_CHAR):
            delta = new_text[len(prefix_text) :]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self.ids)
            self.text += delta
            return delta
        return ""

    def flush(self) -> str:
        """At the end of a turn: whatever is still held back (e.g. a truncated character)."""
        full = self._tok.decode(self.ids)
        delta = full[len(self.text) :] if full.startswith(self.text) else ""
        self.text += delta
        return delta
