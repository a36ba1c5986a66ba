"""The ``llama_3`` prompt of LLaMA-Omni and its ``<speech>`` sentinel splice.

Reference (``omni_speech/conversation.py`` + ``datasets/preprocess.py::tokenizer_speech_token``):

    <|begin_of_text|><|start_header_id|>system<|end_header_id|>\\n\\n{SYSTEM}<|eot_id|>
    <|start_header_id|>user<|end_header_id|>\\n\\n<speech>\\n{INSTRUCTION}<|eot_id|>
    <|start_header_id|>assistant<|end_header_id|>\\n\\n

(no line breaks between the parts). The string is split on ``<speech>``, each chunk tokenized with
the tokenizer's BOS, the first chunk's BOS kept once and every chunk's first token dropped, and
``SPEECH_TOKEN_INDEX`` (-200) put between chunks. Because the template also writes
``<|begin_of_text|>`` literally, the ids start with two BOS tokens; the checkpoint was trained so.

For multi-turn use, ``PromptBuilder`` cuts the same ids into a system prefix and one piece per
turn; the cut is always at a special token, so the pieces concatenate to the reference's ids.

``PromptBuilder.user_turn_ids`` is the one place a user turn's ids are made: ``Conversation``
calls it for every spoken or typed turn, and fine-tuning (``first_turn_ids``) builds its training
prompts with it, so an adapter is trained on exactly the prompt it answers at inference.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.config import ConversationOptions
from engine.model.tokens import BOS_TEXT, END_HEADER_TEXT, EOT_TEXT, START_HEADER_TEXT, TextTokenizer

SPEECH_TOKEN = "<speech>"
SPEECH_TOKEN_INDEX = -200  # sentinel id replaced by the speech embeddings
USER_ROLE = "user"
ASSISTANT_ROLE = "assistant"
SYSTEM_ROLE = "system"


def _header(role: str) -> str:
    return f"{START_HEADER_TEXT}{role}{END_HEADER_TEXT}\n\n"


def llama3_prompt(system: str, messages: Sequence[tuple[str, str | None]]) -> str:
    """``Conversation.get_prompt()`` for ``SeparatorStyle.LLAMA_3``; a None message opens a reply."""
    out = BOS_TEXT + (f"{_header(SYSTEM_ROLE)}{system}{EOT_TEXT}" if system else "")
    for role, message in messages:
        out += _header(role)
        if message:
            out += message.strip() + EOT_TEXT
    return out


def tokenizer_speech_token(prompt: str, tokenizer: TextTokenizer) -> list[int]:
    """The reference's tokenization: per-chunk BOS handling and the -200 sentinel (see module doc)."""
    chunks = [tokenizer.encode(chunk) for chunk in prompt.split(SPEECH_TOKEN)]
    ids: list[int] = []
    offset = 0
    if chunks and chunks[0] and chunks[0][0] == tokenizer.special.bos_id:
        offset = 1
        ids.append(chunks[0][0])
    pieces: list[list[int]] = []
    for i, chunk in enumerate(chunks):
        if i > 0:
            pieces.append([SPEECH_TOKEN_INDEX] * (offset + 1))  # insert_separator in the reference
        pieces.append(chunk)
    for piece in pieces:
        ids.extend(piece[offset:])  # drops each chunk's BOS and the separator's extra copy
    return ids


class PromptBuilder:
    """Token ids of the system prefix and of each user turn (sentinel kept for speech)."""

    def __init__(self, tokenizer: TextTokenizer, options: ConversationOptions | None = None) -> None:
        self.tokenizer = tokenizer
        self.options = options or ConversationOptions()

    def system_ids(self) -> list[int]:
        """``[bos, bos, <header>system<header>\\n\\n SYSTEM <eot>]`` exactly as the reference builds it."""
        return tokenizer_speech_token(llama3_prompt(self.options.system_prompt, []), self.tokenizer)

    def speech_message(self) -> str:
        return f"{SPEECH_TOKEN}\n{self.options.speech_instruction}"

    def speech_turn_ids(self) -> list[int]:
        """User header, one ``SPEECH_TOKEN_INDEX``, the instruction, eot, the assistant header."""
        text = self._turn_text(self.speech_message())
        chunks = [self.tokenizer.encode(c, add_special_tokens=False) for c in text.split(SPEECH_TOKEN)]
        ids = list(chunks[0])
        for chunk in chunks[1:]:
            ids.append(SPEECH_TOKEN_INDEX)
            ids.extend(chunk)
        return ids

    def text_turn_ids(self, text: str) -> list[int]:
        """A typed turn: no sentinel; control-token spellings in ``text`` are neutralized."""
        message = self.tokenizer.neutralize_special_text(text)
        return self.tokenizer.encode(self._turn_text(message), add_special_tokens=False)

    def user_turn_ids(self, typed_question: str | None) -> list[int]:
        """A user turn up to the assistant header: spoken (None: one speech sentinel) or typed."""
        return self.speech_turn_ids() if typed_question is None else self.text_turn_ids(typed_question)

    def first_turn_ids(self, typed_question: str | None) -> list[int]:
        """What a new conversation's context holds when the first answer starts (system + turn)."""
        return self.system_ids() + self.user_turn_ids(typed_question)

    @staticmethod
    def _turn_text(message: str) -> str:
        return f"{_header(USER_ROLE)}{message.strip()}{EOT_TEXT}{_header(ASSISTANT_ROLE)}"
