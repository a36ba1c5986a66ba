"""Typed configuration of the LLaMA-Omni model and of one answer.

Dimensions follow the official files: ``LlmDims`` / ``AdapterDims`` / ``UnitDecoderDims`` come from
the Omni ``config.json`` (plus shapes in the shard headers where the config is silent), and
``EncoderDims`` mirrors openai-whisper's ``ModelDimensions`` (audio side). Everything here is a
frozen, slotted dataclass with no torch dependency, so the app can read and show it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

QuantMode = Literal["nf4", "int8", "fp16", "bf16", "fp32"]
QUANT_MODES: tuple[QuantMode, ...] = ("nf4", "int8", "fp16", "bf16", "fp32")

# LLaMA-Omni's conversation template "llama_3" (omni_speech/conversation.py) and its fixed request.
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful language and speech assistant. You are able to understand the speech content "
    "that the user provides, and assist the user with a variety of tasks using natural language."
)
DEFAULT_SPEECH_INSTRUCTION = "Please directly answer the questions in the user's speech."


@dataclass(frozen=True, slots=True)
class RopeScaling:
    """Llama-3.1 ("llama3") frequency scaling of RoPE; ``rope_type="default"`` means none."""

    rope_type: str = "llama3"
    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass(frozen=True, slots=True)
class LlmDims:
    """The Llama language model (Llama-3.1-8B-Instruct in the release)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    max_position_embeddings: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: RopeScaling | None
    tie_word_embeddings: bool = False

    @property
    def n_params(self) -> int:
        """Parameter count (embedding and output head included)."""
        attn = self.hidden_size * self.head_dim * (2 * self.n_heads + 2 * self.n_kv_heads)
        mlp = 3 * self.hidden_size * self.intermediate_size
        layers = self.n_layers * (attn + mlp + 2 * self.hidden_size)
        embed = self.vocab_size * self.hidden_size
        return layers + embed * (1 if self.tie_word_embeddings else 2) + self.hidden_size


@dataclass(frozen=True, slots=True)
class EncoderDims:
    """Audio half of openai-whisper's ``ModelDimensions`` (large-v3: 128, 1500, 1280, 20, 32)."""

    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int

    @property
    def n_frames(self) -> int:
        """Mel frames the encoder demands (conv2 has stride 2)."""
        return 2 * self.n_audio_ctx

    @property
    def n_params(self) -> int:
        d = self.n_audio_state
        conv = self.n_mels * d * 3 + d + d * d * 3 + d
        block = 4 * d * d + 3 * d + 2 * 4 * d * d + 4 * d + d + 4 * d  # attn + mlp + 2 LayerNorms
        return conv + self.n_audio_ctx * d + self.n_audio_layer * block + 2 * d


WHISPER_LARGE_V3 = EncoderDims(n_mels=128, n_audio_ctx=1500, n_audio_state=1280, n_audio_head=20, n_audio_layer=32)
WHISPER_HEAD_DIM = 64  # every released Whisper size uses 64-dim heads; shard headers don't store heads


@dataclass(frozen=True, slots=True)
class AdapterDims:
    """``EncoderProjectorConcat``: concat ``ds_rate`` frames, Linear-ReLU-Linear."""

    encoder_dim: int
    ds_rate: int
    hidden_dim: int  # 2048 in the reference (hard-coded there); read from the weights here
    llm_dim: int

    @property
    def n_params(self) -> int:
        d_in = self.encoder_dim * self.ds_rate
        return d_in * self.hidden_dim + self.hidden_dim + self.hidden_dim * self.llm_dim + self.llm_dim


@dataclass(frozen=True, slots=True)
class UnitDecoderDims:
    """``SpeechGeneratorCTC``: ``ctc_decoder_config = "(n_layers,dim,n_heads,ffn_dim)"``."""

    n_layers: int
    dim: int
    n_heads: int
    ffn_dim: int
    upsample_factor: int  # λ: decoder frames per text token (25)
    unit_vocab_size: int  # 1000; the blank is the extra class ``unit_vocab_size``
    llm_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: RopeScaling | None

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def blank_id(self) -> int:
        return self.unit_vocab_size

    @property
    def n_layer_params(self) -> int:
        """Parameters of the transformer layers alone (the part that may be quantized)."""
        return self.n_layers * (4 * self.dim * self.dim + 3 * self.dim * self.ffn_dim + 2 * self.dim)

    @property
    def n_params(self) -> int:
        proj_in = self.llm_dim * self.dim + self.dim
        proj_out = self.dim * (self.unit_vocab_size + 1) + self.unit_vocab_size + 1
        return proj_in + self.n_layer_params + proj_out


@dataclass(frozen=True, slots=True)
class OmniDims:
    """Every part's dimensions; ``encoder`` is known once the encoder's source is located."""

    llm: LlmDims
    adapter: AdapterDims
    unit_decoder: UnitDecoderDims
    encoder: EncoderDims

    @property
    def n_speech_embeddings(self) -> int:
        """Speech positions spliced into the prompt per turn (300 for 30 s of padded audio)."""
        return self.encoder.n_audio_ctx // self.adapter.ds_rate


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    """How to pick text tokens. ``temperature == 0`` is greedy (the reference's default)."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None  # for sampling; None: nondeterministic

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_p must be in (0, 1]")


@dataclass(frozen=True, slots=True)
class ConversationOptions:
    """Prompt texts and the context budget of a multi-turn conversation."""

    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    speech_instruction: str = DEFAULT_SPEECH_INSTRUCTION
    # Oldest turns are dropped so that context + the new turn + max_new_tokens fit. None: the
    # model's ``tokenizer_model_max_length`` (2048 for the release, the length it was trained on).
    max_context_tokens: int | None = None


_LLAMA31_ROPE = RopeScaling(
    rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192
)
# LLaMA-Omni 8B as released (ICTNLP/Llama-3.1-8B-Omni): for memory estimates before any file exists.
OFFICIAL_DIMS = OmniDims(
    llm=LlmDims(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        n_layers=32,
        n_heads=32,
        n_kv_heads=8,
        head_dim=128,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        rope_scaling=_LLAMA31_ROPE,
    ),
    adapter=AdapterDims(encoder_dim=1280, ds_rate=5, hidden_dim=2048, llm_dim=4096),
    unit_decoder=UnitDecoderDims(
        n_layers=2,
        dim=4096,
        n_heads=32,
        ffn_dim=11008,
        upsample_factor=25,
        unit_vocab_size=1000,
        llm_dim=4096,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        rope_scaling=_LLAMA31_ROPE,
    ),
    encoder=WHISPER_LARGE_V3,
)
