"""Quantization modes on CPU (bitsandbytes NF4 / int8, bf16), precision policy, memory estimates."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from engine.config import WHISPER_LARGE_V3, AdapterDims, DecodeOptions, OmniDims
from engine.errors import BadInput, NotEnoughMemory
from engine.model.events import TurnDone
from engine.model.memory import (
    CUDA_CONTEXT_BYTES,
    GB,
    TARGET_NF4_BYTES,
    VOCODER_GPU_BYTES,
    check_fits,
    estimate_memory,
)
from engine.model.omni import OmniModel
from engine.model.omni_config import read_omni_config
from engine.model.precision import part_precisions
from engine.model.quant import make_plan

pytestmark = pytest.mark.usefixtures("one_torch_thread")

bnb = pytest.importorskip("bitsandbytes")

# The published config.json of ICTNLP/Llama-3.1-8B-Omni (the fields the engine reads).
OFFICIAL_CONFIG = {
    "architectures": ["OmniSpeech2SLlamaForCausalLM"],
    "model_type": "omni_speech2s_llama",
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 8.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "vocab_size": 128256,
    "speech_encoder": "models/speech_encoder/large-v3.pt",
    "speech_encoder_ds_rate": 5,
    "speech_encoder_hidden_size": 1280,
    "speech_encoder_type": "whisper",
    "speech_generator_type": "ctc",
    "ctc_decoder_config": "(2,4096,32,11008)",
    "ctc_upsample_factor": 25,
    "ctc_loss_weight": 1.0,
    "unit_vocab_size": 1000,
    "tokenizer_model_max_length": 2048,
    "torch_dtype": "float16",
}


@pytest.fixture(scope="module")
def real_dims(tmp_path_factory) -> OmniDims:
    folder = tmp_path_factory.mktemp("official-config")
    (folder / "config.json").write_text(json.dumps(OFFICIAL_CONFIG))
    cfg = read_omni_config(folder)
    adapter = AdapterDims(cfg.encoder_hidden_size, cfg.ds_rate, 2048, cfg.llm.hidden_size)
    return OmniDims(llm=cfg.llm, adapter=adapter, unit_decoder=cfg.unit_decoder, encoder=WHISPER_LARGE_V3)


def _first_token_logits(model: OmniModel, text: str) -> torch.Tensor:
    chat = model.conversation()
    ids = chat.system_ids + chat.prompts.text_turn_ids(text)
    hidden = model.forward(model.build_embeds(ids), None)[0, -1]
    return model.logits(hidden)


def _turn(model: OmniModel, audio) -> TurnDone:
    events = list(model.conversation().respond_speech(audio, decode=DecodeOptions(max_new_tokens=4)))
    done = events[-1]
    assert isinstance(done, TurnDone)
    return done


def test_official_config_parses_into_the_documented_dims(real_dims: OmniDims) -> None:
    llm, unit = real_dims.llm, real_dims.unit_decoder
    assert (llm.n_layers, llm.hidden_size, llm.n_kv_heads, llm.head_dim) == (32, 4096, 8, 128)
    assert (unit.n_layers, unit.dim, unit.n_heads, unit.ffn_dim, unit.upsample_factor) == (2, 4096, 32, 11008, 25)
    assert unit.blank_id == 1000 and unit.rope_scaling == llm.rope_scaling
    assert 8.0e9 < llm.n_params < 8.1e9  # Llama-3.1-8B: 8,030,261,248
    assert 420e6 < unit.n_params < 430e6  # the paper's 425M generator
    assert 630e6 < WHISPER_LARGE_V3.n_params < 640e6
    assert real_dims.n_speech_embeddings == 300


def test_memory_estimate_for_the_8b_model_is_sane(real_dims: OmniDims) -> None:
    est = {
        q: estimate_memory(real_dims, q, device_type="cuda", max_new_tokens=256)
        for q in ("nf4", "int8", "fp16", "bf16")
    }
    nf4, int8, fp16 = est["nf4"].total_bytes, est["int8"].total_bytes, est["fp16"].total_bytes
    # Weights: Llama layers in nf4 (3.6 GB), lm_head and Whisper's linears in int8 (0.53 + 0.65 GB),
    # adapter and unit decoder ~0.3 GB; then a 2048-token KV cache, the unit decoder's cache for 256
    # tokens, activations, the vocoder and the CUDA context.
    assert 4.9 * GB < est["nf4"].weight_bytes < 5.2 * GB
    assert 6.3 * GB < nf4 < 6.8 * GB
    assert nf4 < int8 < fp16
    assert 17 * GB < fp16 < 21 * GB  # ~18.2 GB of fp16 weights less the host-side embedding table, plus caches
    assert est["bf16"].total_bytes == fp16
    parts = dict(est["nf4"].parts)
    assert parts["speech encoder"] == pytest.approx(0.646 * GB, rel=0.01)  # int8 linears, fp16 convs and norms
    assert parts["lm_head"] == 128256 * 4096 + 128256 * 4  # int8 weights + one fp32 scale per row
    assert parts["vocoder"] == VOCODER_GPU_BYTES
    assert est["nf4"].host_bytes == 128256 * 4096 * 2  # the embedding table lives in host RAM
    cpu = estimate_memory(real_dims, "fp32", device_type="cpu")
    assert cpu.total_bytes > 36 * GB and cpu.host_bytes == 0 and cpu.part("vocoder") == 0
    with pytest.raises(NotEnoughMemory, match=r"needs about 6\.\d GB of GPU memory; 6\.0 GB is free"):
        check_fits(est["nf4"], 6 * GB)
    check_fits(est["nf4"], 8 * GB)
    # Measured in-process after CUDA started: our own context is already out of "free".
    with pytest.raises(NotEnoughMemory):
        check_fits(est["nf4"], nf4 - 2 * GB, context_allocated=True)
    check_fits(est["nf4"], nf4 - CUDA_CONTEXT_BYTES, context_allocated=True)
    assert "nf4 on cuda" in est["nf4"].describe()


def test_what_the_nf4_stack_needs_and_saves(real_dims: OmniDims) -> None:
    """Issue 17's goal: the 4-bit stack, vocoder included, at a 2048-token context."""

    def nf4(max_new_tokens: int, **kwargs: object) -> int:
        return estimate_memory(real_dims, "nf4", max_new_tokens=max_new_tokens, **kwargs).total_bytes  # type: ignore[arg-type]

    policy = part_precisions("nf4", cuda=True)
    before = replace(policy, head="fp16", encoder_linears="fp16", adapter="fp32")  # what nf4 loaded before
    assert nf4(512, parts=before) - nf4(512) == pytest.approx(1.21 * GB, rel=0.02)
    assert nf4(512) < TARGET_NF4_BYTES + 0.3 * GB
    # The unit decoder's cache follows the answer length, up to what the context can hold.
    per_token = 2 * 2 * 4096 * 25 * 2  # layers x (K, V) x width x frames per token x fp16
    assert nf4(512) - nf4(256) == 256 * per_token
    assert nf4(4096) == nf4(2048) == nf4(256) + (2048 - 256) * per_token
    without_vocoder = estimate_memory(real_dims, "nf4", vocoder_on_device=False).total_bytes
    assert nf4(512) - without_vocoder == VOCODER_GPU_BYTES


def test_precision_policy() -> None:
    cpu = torch.device("cpu")
    nf4 = make_plan("nf4", cpu)
    assert nf4.linear_quant == "nf4" and nf4.compute_dtype == nf4.adapter_dtype == nf4.head_dtype == torch.float32
    assert nf4.parts.head == nf4.parts.encoder_linears == "int8" and not nf4.embed_on_host
    assert make_plan("int8", cpu).parts == replace(nf4.parts, layers="int8")
    bf16 = make_plan("bf16", cpu)
    assert bf16.compute_dtype == bf16.encoder_dtype == torch.bfloat16 and bf16.linear_quant is None
    assert bf16.parts.head == bf16.parts.encoder_linears == "bf16"
    assert part_precisions("fp32", cuda=True).encoder_linears == "fp16"  # Whisper in fp16 on GPUs, as the reference
    with pytest.raises(BadInput):
        make_plan("q3", cpu)


def test_nf4_on_cpu_loads_and_generates(tiny_omni, tiny_omni_model, speech_16k) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = OmniModel.load(tiny_omni.omni, device="cpu", quant="nf4")
    layer = model.llm.model.layers[0]
    assert isinstance(layer.mlp.down_proj, bnb.nn.Linear4bit)
    assert layer.mlp.down_proj.weight.dtype == torch.uint8 and layer.mlp.down_proj.weight.bnb_quantized
    assert isinstance(model.unit_decoder.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    assert isinstance(model.llm.lm_head, bnb.nn.Linear8bitLt) and model.llm.lm_head.weight.dtype == torch.int8
    encoder_mlp = model.encoder.blocks[0].mlp[0]
    assert isinstance(encoder_mlp, bnb.nn.Linear8bitLt) and encoder_mlp.weight.dtype == torch.int8
    assert model.encoder.conv1.weight.dtype == torch.float32 and model.adapter.linear1.weight.dtype == torch.float32
    assert type(model.unit_decoder.output_proj) is nn.Linear
    done = _turn(model, speech_16k)
    assert done.n_tokens == 4 and all(0 <= t < model.dims.llm.vocab_size for t in done.token_ids)
    assert all(0 <= u < 1000 for u in done.units)
    q, ref = _first_token_logits(model, "Hello"), _first_token_logits(tiny_omni_model, "Hello")
    assert not torch.equal(q, ref)  # really quantized ...
    assert torch.nn.functional.cosine_similarity(q, ref, dim=0) > 0.9  # ... and still the same model


def test_int8_and_bf16_on_cpu(tiny_omni, tiny_omni_model, speech_16k) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        int8 = OmniModel.load(tiny_omni.omni, device="cpu", quant="int8")
    assert isinstance(int8.llm.model.layers[1].self_attn.o_proj, bnb.nn.Linear8bitLt)
    assert int8.llm.model.layers[1].self_attn.o_proj.weight.dtype == torch.int8
    bf16 = OmniModel.load(tiny_omni.omni, device="cpu", quant="bf16")
    assert bf16.llm.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert bf16.encoder.conv1.weight.dtype == torch.bfloat16
    ref = _first_token_logits(tiny_omni_model, "Hello")
    for model in (int8, bf16):
        assert _turn(model, speech_16k).n_tokens == 4
        sim = torch.nn.functional.cosine_similarity(_first_token_logits(model, "Hello"), ref, dim=0)
        assert sim > 0.95


def test_memory_estimate_of_a_loaded_model(tiny_omni_model) -> None:
    est = tiny_omni_model.memory_estimate
    assert est.quant == "fp32" and est.device_type == "cpu"
    parts = (tiny_omni_model.llm, tiny_omni_model.unit_decoder, tiny_omni_model.adapter, tiny_omni_model.encoder)
    tensors = [t for m in parts for t in (*m.parameters(), *m.buffers())]
    loaded = sum(t.numel() * t.element_size() for t in tensors)
    assert est.weight_bytes == pytest.approx(loaded, rel=0.01)


def test_estimate_is_exposed_without_loading(tiny_omni) -> None:
    from engine.model.dims import read_dims

    dims = read_dims(tiny_omni.omni)
    assert estimate_memory(dims, "nf4").weight_bytes < estimate_memory(dims, "fp16").weight_bytes
    assert Path(tiny_omni.omni).is_dir()


def test_no_precision_given_means_the_recommended_one(tiny_omni, monkeypatch) -> None:
    """LoadModel(quant=None) applies engine.preflight's rule, as the wizard and Settings → Automatic do."""
    from engine.model import loader
    from engine.model.dims import read_dims
    from engine.preflight import CONTEXT_TOKENS

    dims = read_dims(tiny_omni.omni)
    need = {q: estimate_memory(dims, q, device_type="cpu", context_tokens=CONTEXT_TOKENS, max_new_tokens=512)
            for q in ("fp32", "bf16")}
    between = (need["fp32"].total_bytes + need["bf16"].total_bytes) // 2  # bf16 fits, fp32 does not
    monkeypatch.setattr(loader, "available_memory", lambda device: between)
    model = OmniModel.load(tiny_omni.omni, device="cpu", quant=None)  # the tiny config: 2048 positions
    assert model.plan.quant == "bf16"
    monkeypatch.setattr(loader, "available_memory", lambda device: None)  # unknown: fp32 on the CPU
    assert OmniModel.load(tiny_omni.omni, device="cpu", quant=None).plan.quant == "fp32"


@pytest.mark.parametrize(("n_in", "n_out"), [(96, 64), (128, 50), (1376, 512)])
def test_nf4_on_cpu_for_widths_bitsandbytes_cannot_repack(n_in: int, n_out: int) -> None:
    """bitsandbytes' AVX512-BF16 CPU kernel repacks whole 64-wide blocks and 32-row tiles; other
    shapes (the mid benchmark's unit decoder, a tiny vocabulary's head) must still run."""
    from engine.model.quant import assign_tensor, quantized_linear

    cpu = torch.device("cpu")
    plan = make_plan("nf4", cpu)
    with torch.device("meta"):
        layer = quantized_linear(nn.Linear(n_in, n_out, bias=False), plan, "nf4")
    weight = torch.randn(n_out, n_in) / n_in**0.5
    assign_tensor(layer, "weight", weight.half(), cpu, plan.compute_dtype)
    layer.eval()  # as the loader leaves it: bitsandbytes repacks only for inference
    x = torch.randn(25, n_in)
    with torch.inference_mode():
        y = layer(x)
    dequantized = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
    torch.testing.assert_close(y, x @ dequantized.t(), rtol=1e-3, atol=1e-3)  # the product of what was stored
    # bitsandbytes' CPU quantizer is less exact for widths off the 64-wide block (~0.25 vs ~0.09).
    assert float((y - x @ weight.t()).norm() / (x @ weight.t()).norm()) < 0.35


def test_int8_one_row_never_waits_and_keeps_outliers_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """A decode step's lm_head: LLM.int8 would test ``outliers.any()`` (a host sync); the one-row
    path keeps the largest features in 16 bit with fixed shapes, and is as close to fp as LLM.int8."""
    from engine.model.quant import assign_tensor, quantized_linear

    cpu = torch.device("cpu")
    plan = make_plan("int8", cpu)
    n_in, n_out = 512, 1000
    with torch.device("meta"):
        layer = quantized_linear(nn.Linear(n_in, n_out, bias=True), plan, "int8")
    weight = torch.randn(n_out, n_in, generator=torch.Generator().manual_seed(0)) / n_in**0.5
    bias = torch.randn(n_out) * 0.1
    assign_tensor(layer, "weight", weight.half(), cpu, plan.compute_dtype)
    assign_tensor(layer, "bias", bias, cpu, plan.compute_dtype)
    layer.eval()
    x = torch.randn(1, n_in, generator=torch.Generator().manual_seed(1))
    x[0, :5] *= 40.0  # outlier features, as LLM hidden states have
    reference = x @ weight.t() + bias
    syncs = {"n": 0}
    real_bool = torch.Tensor.__bool__

    def counted_bool(self: torch.Tensor) -> bool:
        syncs["n"] += 1
        return real_bool(self)

    with torch.inference_mode():
        many = layer(torch.cat([x, x]))[:1]  # LLM.int8's own path
        monkeypatch.setattr(torch.Tensor, "__bool__", counted_bool)
        one = layer(x)
        monkeypatch.undo()
    assert syncs["n"] == 0
    error_one = float((one - reference).norm() / reference.norm())
    error_many = float((many - reference).norm() / reference.norm())
    assert error_one < 0.02 and error_one < 1.5 * error_many
