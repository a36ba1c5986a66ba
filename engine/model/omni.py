"""``OmniModel``: the loaded LLaMA-Omni (encoder, adapter, Llama, unit decoder, tokenizer).

It offers the building blocks one turn needs; ``Conversation`` (conversation.py) strings them
together. Shapes below are for batch 1, which is all a push-to-talk assistant needs.

Decoding on CUDA (``kv_cache``): the LLM's KV cache is one static slot sized for the context
budget, the one-token step is replayed from a CUDA graph captured at load, and each token's
embedding row goes to the GPU through a pinned staging row (an asynchronous copy) while the table
stays in host RAM. Long prompts are prefilled in chunks of ``PREFILL_CHUNK_TOKENS``. On the CPU
the cache is transformers' dynamic one and nothing is chunked, as before.

    model = OmniModel.load("models/Llama-3.1-8B-Omni", device="cuda", quant="nf4",
                           on_progress=lambda f, msg: print(f"{f:.0%} {msg}"))
    chat = model.conversation()
    for event in chat.respond_speech(audio_16k):
        ...
    model.use_adapter("adapters/my-voice")   # a fine-tuned adapter, swapped in place (adapter.py)
    model.use_adapter(None)                  # back to the base model, without reloading it

Naming: ``model.adapter`` is LLaMA-Omni's speech adapter (the projector module); a fine-tuned
*adapter folder* is what ``use_adapter`` applies.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from engine.audio.features import CHUNK_S, N_SAMPLES, speech_features
from engine.audio.resample import MODEL_SAMPLE_RATE_HZ
from engine.config import ConversationOptions, OmniDims
from engine.model.conversation import Conversation
from engine.model.kv_cache import DecodeStep, DynamicKv, KvCache, StaticKv, StaticSlot
from engine.model.loader import OmniParts, ProgressCallback, load_parts
from engine.model.memory import PREFILL_CHUNK_TOKENS
from engine.model.precision import PartPrecision
from engine.model.prompt import SPEECH_TOKEN_INDEX

if TYPE_CHECKING:
    from engine.model.adapter import ActiveAdapter, AdapterSlot

logger = logging.getLogger(__name__)


class OmniModel:
    def __init__(self, parts: OmniParts, *, static_kv: bool | None = None, cuda_graphs: bool | None = None) -> None:
        """``static_kv`` / ``cuda_graphs``: None chooses per device (both on CUDA, neither on the CPU)."""
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
        self._adapter_slot: AdapterSlot | None = None
        cuda = self.device.type == "cuda"
        self._slot: StaticSlot | None = None
        self._step: DecodeStep | None = None
        if cuda if static_kv is None else static_kv:
            self._slot = StaticSlot(self.llm.config, parts.context_tokens, self.device, self.plan.compute_dtype)
            self._step = DecodeStep(self.llm.model, self._slot, self.plan.compute_dtype)
            if cuda if cuda_graphs is None else cuda_graphs:
                with torch.inference_mode():
                    self._step.capture()
        self.prefill_chunk_tokens: int | None = PREFILL_CHUNK_TOKENS if cuda else None
        self._staging: tuple[torch.Tensor, torch.cuda.Event] | None = None
        if cuda and self.plan.embed_on_host:
            row = torch.empty((1, self.dims.llm.hidden_size), dtype=self.plan.compute_dtype, pin_memory=True)
            self._staging = (row, torch.cuda.Event())

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
        adapter: str | Path | None = None,
        parts: PartPrecision | None = None,
        vocoder_on_device: bool = True,
        static_kv: bool | None = None,
        cuda_graphs: bool | None = None,
    ) -> OmniModel:
        """Load an Omni folder. ``device``: None/"auto"/"cpu"/"cuda[:N]"; ``quant``: None (nf4 on
        CUDA, fp32 on CPU) or nf4/int8/fp16/bf16/fp32; ``max_new_tokens``: the longest answer the
        pre-flight budgets for; ``adapter``: a fine-tuned adapter folder to apply; ``parts``:
        per-part precisions instead of the policy's (benchmarks); ``vocoder_on_device``: the
        vocoder will share the GPU. Raises ``EngineError`` kinds."""
        model = cls(
            load_parts(
                model_dir,
                speech_encoder,
                device=device,
                quant=quant,
                on_progress=on_progress,
                max_new_tokens=max_new_tokens,
                parts=parts,
                vocoder_on_device=vocoder_on_device,
            ),
            static_kv=static_kv,
            cuda_graphs=cuda_graphs,
        )
        if adapter is not None:
            model.use_adapter(adapter)
        return model
        if adapter is not None:
            model.use_adapter(adapter)
        return model

    @property
    def device(self) -> torch.device:
        return self.plan.device

    @property
    def max_context_tokens(self) -> int | None:
        """Positions a conversation may hold (the static cache's size), None when unbounded."""
        return self._slot.capacity if self._slot is not None else None

    @property
    def decode_path(self) -> str:
        """How a token step runs: "cuda graph", "static cache, eager (<why no graph>)", "dynamic cache"."""
        if self._step is None:
            return "dynamic cache"
        if self._step.graph is not None:
            return "cuda graph"
        why = f" ({self._step.graph_error})" if self._step.graph_error else ""
        return f"static cache, eager{why}"

    def describe(self) -> str:
        p, llm = self.plan, self.dims.llm
        text = (
            f"LLaMA-Omni ({llm.n_layers} layers, hidden {llm.hidden_size}) {p.quant} on {p.device}; "
            f"encoder from {self.encoder_source.kind}; estimated {self.memory_estimate.total_bytes / 1e9:.1f} GB; "
            f"decode: {self.decode_path}"
        )
        active = self.active_adapter
        return text + (f"; {active.describe()}" if active is not None else "")

    # ------------------------------------------------------------------ fine-tuned adapters

    def use_adapter(self, path: str | Path | None) -> ActiveAdapter | None:
        """Apply a fine-tuned adapter folder (None: none) in place; see engine.model.adapter.

        Conversations started before keep KV caches computed with the old weights: start a new one.
        """
        from engine.model.adapter import AdapterSlot

        if self._adapter_slot is None:
            if path is None:
                return None
            self._adapter_slot = AdapterSlot(self)
        active = self._adapter_slot.apply(path)
        self._recapture_decode_step()
        return active

    def _recapture_decode_step(self) -> None:
        """A CUDA graph replays the kernels it recorded: after the LoRA layers changed (wrapped,
        swapped or switched off) it must be recorded again, or decoding would ignore the change."""
        if self._step is None or self._step.graph is None:
            return
        self._step.graph = None
        with torch.inference_mode():
            self._step.capture()

    @property
    def active_adapter(self) -> ActiveAdapter | None:
        return self._adapter_slot.active if self._adapter_slot is not None else None

    def base_fingerprint(self) -> str:
        """The base model's fingerprint (what adapters are checked against)."""
        from engine.model.adapter import AdapterSlot

        if self._adapter_slot is None:
            self._adapter_slot = AdapterSlot(self)
        return self._adapter_slot.fingerprint

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

    def new_cache(self) -> KvCache:
        """An empty context. On a static-cache model this takes the one slot over (see kv_cache)."""
        if self._slot is not None:
            return self._slot.take()
        return DynamicKv(self.llm.config)

    @torch.inference_mode()
    def forward(self, embeds: torch.Tensor, cache: KvCache | None) -> torch.Tensor:
        """embeds (1, T, H) appended after ``cache`` -> final post-RMSNorm hidden states (1, T, H)."""
        if cache is None:
            return self.llm.model(inputs_embeds=embeds, use_cache=False).last_hidden_state
        n_new = embeds.shape[1]
        cache.reserve(n_new)
        chunk = self.prefill_chunk_tokens or n_new
        outs = [
            self.llm.model(inputs_embeds=embeds[:, i : i + chunk], cache=cache.hf, use_cache=True).last_hidden_state
            for i in range(0, n_new, chunk)
        ]
        cache.length += n_new
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)

    @torch.inference_mode()
    def step(self, token: int, cache: KvCache) -> torch.Tensor:
        """One generated token appended to ``cache`` -> its post-RMSNorm hidden state (1, H)."""
        embed = self._embed_token(token)
        cache.reserve(1)
        if isinstance(cache, StaticKv) and self._step is not None:
            if not cache.valid:
                raise RuntimeError("this context's KV cache was handed to another conversation")
            hidden = self._step.run(embed)
        else:
            hidden = self.llm.model(inputs_embeds=embed, cache=cache.hf, use_cache=True).last_hidden_state
        cache.length += 1
        return hidden[:, -1]

    def _embed_token(self, token: int) -> torch.Tensor:
        """One token's embedding (1, 1, H) on the device; from a host table via the pinned row."""
        if self._staging is None:
            return self.embed_ids([token]).unsqueeze(0)
        row, copied = self._staging
        copied.synchronize()  # the previous step's copy has left the staging row
        table = self.llm.model.embed_tokens.weight
        torch.index_select(table, 0, torch.tensor([token]), out=row)
        on_device = row.to(self.device, non_blocking=True)
        copied.record()
        return on_device.view(1, 1, -1)

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (..., H) -> float32 logits (..., vocab)."""
        return self.llm.lm_head(hidden.to(self.plan.head_dtype)).float()
