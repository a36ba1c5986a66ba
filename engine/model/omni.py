"""``OmniModel``: the loaded LLaMA-Omni (encoder, adapter, Llama, unit decoder, tokenizer).

It offers the building blocks one turn needs; ``Conversation`` (conversation.py) strings them
together. Shapes below are for batch 1, which is all a push-to-talk assistant needs.

    model = OmniModel.load("models/Llama-3.1-8B-Omni", device="cuda", quant="nf4",
                           on_progress=lambda f, msg: print(f"{f:.0%} {msg}"))
    chat = model.conversation()
    for event in chat.respond_speech(audio_16k):
        ...
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import DynamicCache

from engine.audio.features import CHUNK_S, N_SAMPLES, speech_features
from engine.audio.resample import MODEL_SAMPLE_RATE_HZ
from engine.config import ConversationOptions, OmniDims
from engine.model.conversation import Conversation
from engine.model.loader import OmniParts, ProgressCallback, load_parts
from engine.model.precision import PartPrecision
from engine.model.prompt import SPEECH_TOKEN_INDEX

logger = logging.getLogger(__name__)


class OmniModel:
    def __init__(self, parts: OmniParts) -> None:
        self.parts = parts
        self.config = parts.config
        self.dims: OmniDims = parts.dims
        self.plan = parts.plan
        self.tokenizer = parts.tokenizer
        self.llm = parts.llm
        self.encoder = parts.encoder
        self.adapter = parts.adapter
        self.unit_decoder = parts.unit_decoder
        self.encoder_source = parts.encoder_source
        self.memory_estimate = parts.memory

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        speech_encoder: str | Path | None = None,
        *,
        device: str | torch.device | None = None,
        quant: str | None = None,
        on_progress: ProgressCallback | None = None,
        max_new_tokens: int = 512,
        parts: PartPrecision | None = None,
        vocoder_on_device: bool = True,
    ) -> OmniModel:
        """Load an Omni folder. ``device``: None/"auto"/"cpu"/"cuda[:N]"; ``quant``: None (nf4 on
        CUDA, fp32 on CPU) or nf4/int8/fp16/bf16/fp32; ``max_new_tokens``: the longest answer the
        pre-flight budgets for; ``parts``: per-part precisions instead of the policy's (benchmarks);
        ``vocoder_on_device``: the vocoder will share the GPU. Raises ``EngineError`` kinds."""
        return cls(
            load_parts(
                model_dir,
                speech_encoder,
                device=device,
                quant=quant,
                on_progress=on_progress,
                max_new_tokens=max_new_tokens,
                parts=parts,
                vocoder_on_device=vocoder_on_device,
            )
        )

    @property
    def device(self) -> torch.device:
        return self.plan.device

    def describe(self) -> str:
        p, llm = self.plan, self.dims.llm
        return (
            f"LLaMA-Omni ({llm.n_layers} layers, hidden {llm.hidden_size}) {p.quant} on {p.device}; "
            f"encoder from {self.encoder_source.kind}; estimated {self.memory_estimate.total_bytes / 1e9:.1f} GB"
        )

    def conversation(self, options: ConversationOptions | None = None) -> Conversation:
        return Conversation(self, options)

    # ------------------------------------------------------------------ building blocks

    def speech_features(self, audio_16k: np.ndarray) -> torch.Tensor:
        """float32 mono 16 kHz (n_samples,) -> log-mel (n_mels, 3000) on the device, padded/trimmed to 30 s."""
        if audio_16k.shape[0] > N_SAMPLES:
            seconds = audio_16k.shape[0] / MODEL_SAMPLE_RATE_HZ
            logger.warning("audio is %.1f s; the encoder only hears the first %d s", seconds, CHUNK_S)
        return speech_features(audio_16k, n_mels=self.dims.encoder.n_mels, device=self.device)

    @torch.inference_mode()
    def encode_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (n_mels, 3000) -> speech embeddings (n_speech, llm_dim) in compute dtype (encoder + adapter)."""
        enc = self.encoder(mel.unsqueeze(0).to(self.plan.encoder_dtype))
        emb = self.adapter(enc.to(self.plan.adapter_dtype))
        return emb[0].to(self.plan.compute_dtype)

    def encode_speech(self, audio_16k: np.ndarray) -> torch.Tensor:
        """float32 mono 16 kHz (n_samples,) -> speech embeddings (n_speech, llm_dim) in compute dtype.

        Padded/trimmed to 30 s first, so n_speech is always ``dims.n_speech_embeddings`` (300).
        """
        return self.encode_mel(self.speech_features(audio_16k))

    def synchronize(self) -> None:
        """Wait for queued GPU work (stage timings on CUDA would otherwise measure kernel launches)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def embed_ids(self, ids: Sequence[int]) -> torch.Tensor:
        """Token ids -> (n, llm_dim) on the device (the table may live in host RAM, see quant.py)."""
        table = self.llm.model.embed_tokens
        idx = torch.tensor(list(ids), dtype=torch.long, device=table.weight.device)
        return table(idx).to(device=self.device, dtype=self.plan.compute_dtype)

    def build_embeds(self, ids: Sequence[int], speech: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        """Ids with ``SPEECH_TOKEN_INDEX`` sentinels -> (1, T, llm_dim); the k-th sentinel becomes speech[k]."""
        pieces: list[torch.Tensor] = []
        run: list[int] = []
        speech_iter = iter(speech)
        for token in ids:
            if token == SPEECH_TOKEN_INDEX:
                if run:
                    pieces.append(self.embed_ids(run))
                    run = []
                pieces.append(next(speech_iter))
            else:
                run.append(token)
        if run:
            pieces.append(self.embed_ids(run))
        return torch.cat(pieces, dim=0).unsqueeze(0)

    def new_cache(self) -> DynamicCache:
        return DynamicCache(config=self.llm.config)

    @torch.inference_mode()
    def forward(self, embeds: torch.Tensor, cache: DynamicCache | None) -> torch.Tensor:
        """embeds (1, T, H) appended after ``cache`` -> final post-RMSNorm hidden states (1, T, H)."""
        out = self.llm.model(inputs_embeds=embeds, past_key_values=cache, use_cache=cache is not None)
        return out.last_hidden_state

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (..., H) -> float32 logits (..., vocab)."""
        return self.llm.lm_head(hidden.to(self.plan.head_dtype)).float()
