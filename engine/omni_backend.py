"""Adapts the LLaMA-Omni model (engine.model) and the vocoder to the engine thread's ModelBackend protocol."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from engine.config import ConversationOptions, DecodeOptions
from engine.events import LoadModel, ModelInfo
from engine.model.conversation import Conversation
from engine.model.events import TurnDone, TurnEvent
from engine.model.omni import OmniModel
from engine.model.omni_config import is_official, read_licence
from engine.pipeline import LoadedModel, ProgressFn, TurnRequest

logger = logging.getLogger(__name__)

MODEL_SHARE = 0.85  # of the load progress bar; the vocoder (export on first use) gets the rest
DEFAULT_MAX_NEW_TOKENS = 512  # what the pre-flight budgets for when LoadModel does not say
VOCODER_DIR_CANDIDATES = ("vocoder", "unit-vocoder")


def find_vocoder_dir(model_dir: Path) -> Path | None:
    """A vocoder folder next to (or inside) the model folder, as make-tiny and the downloader lay them out."""
    for base in (model_dir.parent, model_dir):
        for name in VOCODER_DIR_CANDIDATES:
            candidate = base / name
            if (candidate / "config.json").is_file():
                return candidate
    return None


class OmniBackend:
    """One model and its current conversation. Used only from the engine thread."""

    def __init__(self, model: OmniModel) -> None:
        self.model = model
        self.vocoder_summary = "no vocoder: answers are text only"
        self._system_prompt: str | None = None
        self._chat = model.conversation()

    @property
    def summary(self) -> str:
        return f"{self.model.describe()}; {self.vocoder_summary}"

    @property
    def conversation(self) -> Conversation:
        return self._chat

    def _ensure_prompt(self, system_prompt: str | None) -> None:
        """A different system prompt starts a new conversation (the prefix of the cache changes)."""
        if system_prompt == self._system_prompt:
            return
        options = ConversationOptions(system_prompt=system_prompt) if system_prompt else ConversationOptions()
        self._chat = self.model.conversation(options)
        self._system_prompt = system_prompt

    def respond(self, request: TurnRequest, should_stop: Callable[[], bool]) -> Iterator[TurnEvent]:
        opts = request.options
        self._ensure_prompt(opts.system_prompt)
        decode = DecodeOptions(max_new_tokens=opts.max_new_tokens, temperature=opts.temperature, top_p=opts.top_p)
        if request.audio is not None:
            events = self._chat.respond_speech(request.audio, decode=decode, should_stop=should_stop)
        else:
            events = self._chat.respond_text(request.text or "", decode=decode, should_stop=should_stop)
        for event in events:
            if isinstance(event, TurnDone):
                logger.debug("Turn done: %s, %s", event.finish_reason, event.timings)
            yield event

    def keep_spoken_prefix(self, n_tokens: int) -> None:
        self._chat.truncate_last_answer(n_tokens)

    def reset(self) -> None:
        self._chat.reset()

    def set_adapter(self, adapter: Path | None) -> str:
        """Swap the fine-tuned adapter in place (engine.model.adapter); the old context is dropped."""
        self.model.use_adapter(adapter)
        self._chat.reset()
        return self.summary

    def close(self) -> None:
        self._chat.reset()


def load_omni(command: LoadModel, progress: ProgressFn) -> LoadedModel:
    """LoadModel -> the model on the chosen device/quantization and the vocoder runtime (ONNX, cached)."""
    from engine.vocoder.api import load_vocoder_runtime

    device = None if command.device == "auto" else command.device
    vocoder_dir = command.vocoder_dir or find_vocoder_dir(Path(command.model_dir))
    model = OmniModel.load(
        command.model_dir,
        command.speech_encoder,
        device=device,
        quant=command.quant,
        on_progress=lambda f, m: progress(f * MODEL_SHARE, m),
        adapter=command.adapter,
        max_new_tokens=command.max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
        vocoder_on_device=vocoder_dir is not None,
    )
    vocoder = None
    if vocoder_dir is None:
        logger.warning("No vocoder folder given or found next to %s: answers will be text only", command.model_dir)
    else:
        # On the model's GPU, onnxruntime uses CUDA when its provider loads and the vocoder fits,
        # else the CPU (and logs why).
        cuda = model.device.type == "cuda"
        vocoder = load_vocoder_runtime(
            Path(vocoder_dir),
            device="auto" if cuda else "cpu",
            on_progress=lambda f, m: progress(MODEL_SHARE + f * (1 - MODEL_SHARE), m),
            backend="auto",
            export_in_subprocess=True,
            gpu_index=model.device.index or 0,
        )
    progress(1.0, "Ready")
    backend = OmniBackend(model)
    if vocoder is not None:
        backend.vocoder_summary = f"vocoder: {vocoder.backend} on {', '.join(vocoder.providers)}"
    info = ModelInfo(
        torch_device=str(model.device),
        quant=model.plan.quant,
        vocoder_backend=vocoder.backend if vocoder is not None else None,
        vocoder_providers=tuple(vocoder.providers) if vocoder is not None else (),
        licence=read_licence(Path(command.model_dir)),
        official=is_official(model.dims),
    )
    return LoadedModel(model=backend, vocoder=vocoder, info=info)
