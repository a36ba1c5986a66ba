"""A small byte-level BPE tokenizer carrying Llama-3's special tokens, built offline and deterministically.

Byte-level means every string round-trips (multi-byte characters split across tokens included),
which is what the streaming detokenizer must cope with. The post-processor prepends
``<|begin_of_text|>`` like Llama-3's, so the reference's double BOS shows up with it too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from engine.model.tokens import (
    BOS_TEXT,
    END_HEADER_TEXT,
    END_OF_TEXT,
    EOT_TEXT,
    PAD_TEXT,
    SPECIAL_TOKENS_MAP_FILE,
    START_HEADER_TEXT,
    TOKENIZER_CONFIG_FILE,
    TOKENIZER_FILE,
)

EOM_TEXT = "<|eom_id|>"
# Llama-3.1's order (128000..128009), appended after the BPE vocabulary.
LLAMA3_SPECIALS = (
    BOS_TEXT,
    END_OF_TEXT,
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    PAD_TEXT,
    "<|reserved_special_token_2|>",
    START_HEADER_TEXT,
    END_HEADER_TEXT,
    EOM_TEXT,
    EOT_TEXT,
)
TINY_BPE_VOCAB = 512

_TRAINING_TEXT = """\
You are a helpful language and speech assistant. You are able to understand the speech content that
the user provides, and assist the user with a variety of tasks using natural language.
Please directly answer the questions in the user's speech.
What is the capital of France? The capital of France is Paris, a city on the river Seine.
How do I boil an egg? Put the egg in boiling water for about seven minutes, then cool it in cold water.
Tell me a joke about computers. Why did the computer go to the doctor? Because it had a virus!
The quick brown fox jumps over the lazy dog. Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 2024.
Can you recommend a good book? I would suggest reading a classic novel, such as Pride and Prejudice.
Thank you very much. You're welcome! Is there anything else I can help you with today?
"""


def build_tiny_tokenizer(vocab_size: int = TINY_BPE_VOCAB) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(_TRAINING_TEXT.splitlines() * 4, trainer)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in LLAMA3_SPECIALS])
    bos = tok.token_to_id(BOS_TEXT)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TEXT} $A", pair=f"{BOS_TEXT} $A {BOS_TEXT} $B:1", special_tokens=[(BOS_TEXT, bos)]
    )
    return tok


def _token_entry(content: str) -> dict[str, Any]:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}


def write_tokenizer_files(folder: Path, tok: Tokenizer) -> None:
    """tokenizer.json, tokenizer_config.json and special_tokens_map.json as Llama-3.1 ships them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / TOKENIZER_FILE).write_text(tok.to_str(pretty=True), encoding="utf-8")
    added = {str(tok.token_to_id(s)): {**_token_entry(s), "special": True} for s in LLAMA3_SPECIALS}
    config = {
        "added_tokens_decoder": added,
        "bos_token": BOS_TEXT,
        "clean_up_tokenization_spaces": True,
        "eos_token": EOT_TEXT,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 131072,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    specials = {"bos_token": _token_entry(BOS_TEXT), "eos_token": _token_entry(EOT_TEXT)}
    (folder / TOKENIZER_CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    (folder / SPECIAL_TOKENS_MAP_FILE).write_text(json.dumps(specials, indent=2, sort_keys=True), encoding="utf-8")
