"""The LLM's KV cache as a conversation holds it, and the one-token decode step.

Two kinds with one interface (``KvCache``): ``length`` counted on the host (reading it never waits
for the GPU), ``crop_to``, ``valid``, and ``hf``, what transformers' forward takes as ``cache=``.

- ``DynamicKv`` (the CPU's): transformers' ``DynamicCache``, grown by concatenation.
- ``StaticKv`` (CUDA's): a lease on the model's one ``StaticSlot``, a ``StaticCache`` allocated
  once for the whole context budget. Its addresses never change, so the one-token step can be
  replayed from a CUDA graph (``DecodeStep``), and its size is known before the first turn (the
  "llm kv cache" of the memory estimate). The model lends it to one conversation at a time:
  ``OmniModel.new_cache()`` takes it over at length 0, and an earlier holder sees ``valid`` turn
  False and rebuilds its context from its turn records.

``DecodeStep`` runs one token through the Llama layers against the slot. Its input and output sit
in fixed buffers, and the position and attention mask are computed on the device from the slot's
own counters, so the whole step (about 30 kernels per layer, seven of them bitsandbytes calls in
nf4) can be captured once and replayed as one CUDA graph launch per token. Where capture fails
(an op that syncs with the host, an old driver) or one replay differs from the eager step, the
same code runs eagerly and ``graph_error`` says why. On the CPU the step runs eagerly; it gives
the dynamic path's tokens (tests).

Owner: the ``OmniModel`` that created them; used from the engine thread only.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod

import torch
from transformers import Cache, DynamicCache, LlamaConfig, StaticCache
from transformers.cache_utils import StaticLayer
from transformers.models.llama.modeling_llama import LlamaModel

from engine.errors import BadInput
from engine.gpu import error_summary

logger = logging.getLogger(__name__)

GRAPH_WARMUP_STEPS = 2  # eager runs on a side stream before capture (lazy cuBLAS/bitsandbytes set-up)
# The same kernels on the same inputs: a replay matches the eager step to rounding, or it is wrong.
REPLAY_RTOL = 1e-2
REPLAY_ATOL = 1e-2


class KvCache(ABC):
    """Positions of one conversation held by the LLM's attention layers."""

    hf: Cache
    length: int
    capacity: int | None  # None: grows as needed

    @property
    def valid(self) -> bool:
        """False once the storage was handed to another conversation (rebuild from the records)."""
        return True

    @abstractmethod
    def crop_to(self, length: int) -> None:
        """Keep the first ``length`` positions (``length`` <= ``self.length``)."""

    def reserve(self, n_new: int) -> None:
        """Check that ``n_new`` more positions fit (before a forward writes them)."""
        if self.capacity is not None and self.length + n_new > self.capacity:
            raise BadInput(
                f"The conversation needs {self.length + n_new} context positions; the model was loaded for "
                f"{self.capacity}.",
                fix="Start a new conversation, or shorten the answer length.",
            )


class DynamicKv(KvCache):
    def __init__(self, config: LlamaConfig) -> None:
        self.hf = DynamicCache(config=config)
        self.length = 0
        self.capacity = None

    def crop_to(self, length: int) -> None:
        if length < self.length:
            self.hf.crop(length - self.length)
        self.length = length


class StaticSlot:
    """The model's preallocated KV storage: (1, kv_heads, capacity, head_dim) keys and values per layer."""

    def __init__(self, config: LlamaConfig, capacity: int, device: torch.device, dtype: torch.dtype) -> None:
        self.capacity = capacity
        self.cache = StaticCache(config=config, max_cache_len=capacity)
        heads, head_dim = int(config.num_key_value_heads or 0), int(config.head_dim or 0)
        self.cache.early_initialization(batch_size=1, num_heads=heads, head_dim=head_dim, dtype=dtype, device=device)
        self._layers = [layer for layer in self.cache.layers if isinstance(layer, StaticLayer)]
        assert len(self._layers) == len(self.cache.layers), "a Llama config gives full-attention static layers"
        self.lease = 0

    def position_counter(self) -> torch.Tensor:
        """int64 scalar on the device: positions written so far (the next token's position)."""
        return self._layers[0].cumulative_length

    def set_length(self, length: int) -> None:
        """Every layer writes its next keys at ``length`` (the device-side counters, in place)."""
        for layer in self._layers:
            layer.cumulative_length.fill_(length)

    def take(self) -> StaticKv:
        """A new lease, empty; earlier leases become invalid."""
        self.lease += 1
        self.set_length(0)
        return StaticKv(self, self.lease)


class StaticKv(KvCache):
    def __init__(self, slot: StaticSlot, lease: int) -> None:
        self.hf = slot.cache
        self.length = 0
        self.capacity = slot.capacity
        self._slot = slot
        self._lease = lease

    @property
    def valid(self) -> bool:
        return self._slot.lease == self._lease

    def crop_to(self, length: int) -> None:
        self._slot.set_length(length)
        self.length = length


class DecodeStep:
    """One token through the Llama layers against ``slot``, from fixed buffers (see module docstring)."""

    def __init__(self, model: LlamaModel, slot: StaticSlot, dtype: torch.dtype) -> None:
        device = slot.position_counter().device
        self._model = model
        self._slot = slot
        self._input = torch.zeros((1, 1, model.config.hidden_size), dtype=dtype, device=device)
        self._output = torch.zeros_like(self._input)
        self._key_positions = torch.arange(slot.capacity, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.graph_error: str | None = None

    def _body(self) -> None:
        position = self._slot.position_counter().reshape(1, 1).clone()  # read before the layers advance it
        mask = (self._key_positions <= position).view(1, 1, 1, -1)  # attend to positions 0..position
        cos_sin = self._model.rotary_emb(self._input, position)
        hidden = self._input
        for layer in self._model.layers:
            hidden = layer(hidden, attention_mask=mask, position_embeddings=cos_sin, cache=self._slot.cache)
        self._output.copy_(self._model.norm(hidden))

    def run(self, embed: torch.Tensor) -> torch.Tensor:
        """embed (1, 1, H) at the slot's next position -> post-norm hidden state (1, 1, H), a new tensor."""
        self._input.copy_(embed)
        if self.graph is not None:
            self.graph.replay()
        else:
            self._body()
        return self._output.clone()

    def capture(self) -> bool:
        """Record the step as a CUDA graph and check one replay against the eager step. Uses the
        slot (its length is 0 afterwards). False, with ``graph_error`` set and a warning logged,
        when capture fails or the replay differs; the step then runs eagerly."""
        device = self._input.device
        try:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(GRAPH_WARMUP_STEPS):
                    self._body()
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: the vocoder's thread may use CUDA while this one records.
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self._body()
        except RuntimeError as exc:
            torch.cuda.synchronize(device)
            self._slot.set_length(0)
            return self._no_graph(error_summary(exc))
        differs = self._replay_differs(graph)
        self._slot.set_length(0)
        if differs is not None:
            return self._no_graph(differs)
        self.graph = graph
        return True

    def _replay_differs(self, graph: torch.cuda.CUDAGraph) -> str | None:
        """One step at position 0 eagerly and replayed from ``graph``: why they differ, or None."""
        probe = torch.linspace(-1.0, 1.0, self._input.numel(), device=self._input.device).view_as(self._input)
        outputs = []
        for replay in (False, True):
            self._slot.set_length(0)
            self._output.zero_()
            self._input.copy_(probe.to(self._input.dtype))
            if replay:
                graph.replay()
            else:
                self._body()
            outputs.append(self._output.float().clone())
        eager, replayed = outputs
        if torch.allclose(replayed, eager, rtol=REPLAY_RTOL, atol=REPLAY_ATOL):
            return None
        return f"the replayed step differs from the eager one (max |diff| {float((replayed - eager).abs().max()):.3g})"

    def _no_graph(self, why: str) -> bool:
        self.graph = None
        self.graph_error = why
        logger.warning("decode step not captured as a CUDA graph (it runs eagerly): %s", why)
        return False
