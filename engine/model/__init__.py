"""LLaMA-Omni model: loaders for the official files, encoder, adapter, LLM, unit decoder.

Public API (import from the submodules; this package stays import-light for the CLI):

    from engine.model.omni import OmniModel                  # load + building blocks
    from engine.model.conversation import Conversation      # multi-turn streaming (model.conversation())
    from engine.model.events import TokenStep, TurnDone     # what a turn yields
    from engine.config import DecodeOptions, ConversationOptions, QuantMode
    from engine.model.memory import estimate_memory, check_fits  # pre-flight (V)RAM check
    from engine.model.dims import read_dims                  # dims from the headers (no torch)

    model = OmniModel.load(model_dir, speech_encoder=None, device=None, quant=None,
                           on_progress=lambda fraction, message: ...)
    chat = model.conversation(ConversationOptions())
    for event in chat.respond_speech(audio, sample_rate_hz, decode=DecodeOptions(), should_stop=fn):
        ...  # TokenStep(text_delta, token_id, new_units) per token, then TurnDone(...)
    chat.respond_text("typed question")                     # same context
    chat.reset()                                             # new conversation

Modules: ``omni_config`` (config.json -> dims), ``safetensors_io`` (checked shard reading),
``encoder_loading`` (Whisper from shards / .pt / HF folder), ``pt_header`` (.pt structure without torch),
``dims`` (a folder's dims from headers), ``whisper_encoder`` (encoder + adapter),
``llm`` (transformers LlamaForCausalLM on meta), ``precision`` (what each part is stored as, per
mode), ``quant`` (device choice, precision plan, bitsandbytes), ``memory`` (estimates), ``kv_cache``
(the LLM's KV cache and the CUDA-graph decode step), ``unit_decoder`` (CTC decoder with KV cache),
``prompt`` / ``tokens``
(llama_3 template, tokenizer, streaming detokenizer), ``loader``, ``omni``, ``conversation``,
``sampling``, ``events``, ``cli`` (``respond``, ``make-tiny``).
"""
