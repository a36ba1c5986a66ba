"""Target speech units for stage 2: mHuBERT-base layer-11 features + the km1000 k-means, deduplicated.

The official recipe (fairseq ``examples/textless_nlp/gslm/speech2unit``, ``--feature_type hubert
--layer 11``): 16 kHz mono audio (layer-normed first only if the checkpoint's task says
``normalize``) -> HuBERT's conv feature encoder -> LayerNorm -> projection -> convolutional
positional embedding -> LayerNorm -> transformer layers 1..11 (post-LN; the 12th is never run and
no final norm is applied) -> nearest of the 1000 k-means centroids per 20 ms frame -> consecutive
duplicates removed, which is what the CTC unit decoder predicts.

Files: ``mhubert_base_vp_en_es_fr_it3.pt`` (fairseq checkpoint) and
``mhubert_base_vp_en_es_fr_it3_L11_km1000.bin`` (a joblib-pickled sklearn ``MiniBatchKMeans``);
both are read with ``safe_pickle`` (no pickled code runs). The network is transformers'
``HubertModel`` truncated to the first ``layer`` layers, filled through ``fairseq_to_hf_name``.

    extractor = UnitExtractor.load(hubert_pt, kmeans_bin, device="cpu")
    units = extractor.units(audio, sample_rate_hz=22050)     # list[int], values 0..999
"""

from __future__ import annotations

import ast
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.audio.resample import MODEL_SAMPLE_RATE_HZ, resample, to_mono
from engine.errors import BadInput, ModelIncompatible
from engine.finetune.safe_pickle import InertRecord, load_joblib, load_torch_checkpoint

logger = logging.getLogger(__name__)

HUBERT_FILE = "mhubert_base_vp_en_es_fr_it3.pt"
KMEANS_FILE = "mhubert_base_vp_en_es_fr_it3_L11_km1000.bin"
UNIT_LAYER = 11
MAX_CHUNK_SAMPLES = 1_600_000  # fairseq's HubertFeatureReader runs long files in 100 s pieces
LAYER_NORM_EPS = 1e-5  # fairseq's LayerNorm default
WRONG_FILE_FIX = "Use mhubert_base_vp_en_es_fr_it3.pt and its L11 km1000 k-means from the fairseq release."


@dataclass(frozen=True, slots=True)
class HubertDims:
    """The fairseq ``HubertConfig`` fields the network needs (names as in fairseq)."""

    conv_layers: tuple[tuple[int, int, int], ...]  # (channels, kernel, stride) per conv layer
    conv_bias: bool
    embed_dim: int
    n_layers: int
    n_heads: int
    ffn_dim: int
    conv_pos: int
    conv_pos_groups: int
    normalize: bool  # task option: layer-norm the waveform first
    sample_rate_hz: int


def parse_conv_layers(text: str) -> tuple[tuple[int, int, int], ...]:
    """fairseq's ``conv_feature_layers`` string, e.g. ``"[(512,10,5)] + [(512,3,2)] * 4"``, without eval."""

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            return [value(e) for e in node.elts]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return value(node.left) + value(node.right)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            return value(node.left) * value(node.right)
        raise ValueError(f"unsupported expression {ast.dump(node)}")

    try:
        layers = value(ast.parse(text, mode="eval").body)
        return tuple((int(c), int(k), int(s)) for c, k, s in layers)
    except (SyntaxError, ValueError, TypeError) as exc:
        raise ModelIncompatible(f"conv_feature_layers {text!r} cannot be read: {exc}", fix=WRONG_FILE_FIX) from exc


def _config_sections(ckpt: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model options, task options) from a hydra ``cfg`` dict or a legacy ``args`` Namespace."""
    cfg = ckpt.get("cfg")
    if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict):
        task = cfg.get("task")
        return cfg["model"], task if isinstance(task, dict) else {}
    args = ckpt.get("args")
    if isinstance(args, InertRecord) and isinstance(args.state, dict):
        return args.state, args.state
    raise ModelIncompatible("The HuBERT checkpoint carries no model configuration.", fix=WRONG_FILE_FIX)


def _plain(value: Any) -> Any:
    """Enum-valued options pickled as records keep their value as the first argument."""
    if isinstance(value, InertRecord) and value.args:
        return value.args[0]
    return value


def hubert_dims(ckpt: dict[str, Any], path: Path | None = None) -> HubertDims:
    model, task = _config_sections(ckpt)
    mode = _plain(model.get("extractor_mode", "default"))
    if mode != "default" or bool(model.get("layer_norm_first", False)):
        raise ModelIncompatible(
            f"This HuBERT variant (extractor_mode={mode!r}, layer_norm_first={model.get('layer_norm_first')}) "
            "is not the mHuBERT-base layout the unit vocoder was trained on.",
            path=path,
            fix=WRONG_FILE_FIX,
        )
    if _plain(model.get("layer_type", "transformer")) != "transformer" or int(model.get("pos_conv_depth", 1)) != 1:
        raise ModelIncompatible("Only plain transformer HuBERT layers are supported.", path=path, fix=WRONG_FILE_FIX)
    try:
        return HubertDims(
            conv_layers=parse_conv_layers(
                str(model.get("conv_feature_layers", "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"))
            ),
            conv_bias=bool(model.get("conv_bias", False)),
            embed_dim=int(model.get("encoder_embed_dim", 768)),
            n_layers=int(model.get("encoder_layers", 12)),
            n_heads=int(model.get("encoder_attention_heads", 12)),
            ffn_dim=int(model.get("encoder_ffn_embed_dim", 3072)),
            conv_pos=int(model.get("conv_pos", 128)),
            conv_pos_groups=int(model.get("conv_pos_groups", 16)),
            normalize=bool(task.get("normalize", False)),
            sample_rate_hz=int(task.get("sample_rate", MODEL_SAMPLE_RATE_HZ)),
        )
    except (TypeError, ValueError) as exc:
        raise ModelIncompatible(f"The HuBERT configuration is malformed: {exc}", path=path, fix=WRONG_FILE_FIX) from exc


# fairseq HubertModel name -> transformers HubertModel name, as (regex, replacement).
_FAIRSEQ_TO_HF: tuple[tuple[str, str], ...] = (
    (r"^feature_extractor\.conv_layers\.(\d+)\.0\.", r"feature_extractor.conv_layers.\1.conv."),
    (r"^feature_extractor\.conv_layers\.0\.2\.", "feature_extractor.conv_layers.0.layer_norm."),
    (r"^layer_norm\.", "feature_projection.layer_norm."),
    (r"^post_extract_proj\.", "feature_projection.projection."),
    (r"^encoder\.pos_conv\.0\.weight_g$", "encoder.pos_conv_embed.conv.parametrizations.weight.original0"),
    (r"^encoder\.pos_conv\.0\.weight_v$", "encoder.pos_conv_embed.conv.parametrizations.weight.original1"),
    (r"^encoder\.pos_conv\.0\.bias$", "encoder.pos_conv_embed.conv.bias"),
    (r"^encoder\.layer_norm\.", "encoder.layer_norm."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.", r"encoder.layers.\1.attention.\2_proj."),
    (r"^encoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"encoder.layers.\1.layer_norm."),
    (r"^encoder\.layers\.(\d+)\.fc1\.", r"encoder.layers.\1.feed_forward.intermediate_dense."),
    (r"^encoder\.layers\.(\d+)\.fc2\.", r"encoder.layers.\1.feed_forward.output_dense."),
    (r"^encoder\.layers\.(\d+)\.final_layer_norm\.", r"encoder.layers.\1.final_layer_norm."),
)
# Pre-training heads and masking: not part of the feature path.
_UNUSED = re.compile(r"^(mask_emb|label_embs_concat|final_proj\.|label_embs\.)")


def fairseq_to_hf_name(name: str) -> str | None:
    """fairseq ``HubertModel`` state-dict name -> transformers ``HubertModel`` name; None if unused."""
    if _UNUSED.match(name):
        return None
    for pattern, repl in _FAIRSEQ_TO_HF:
        new, n = re.subn(pattern, repl, name)
        if n:
            return new
    return None


def _layer_index(hf_name: str) -> int | None:
    match = re.match(r"^encoder\.layers\.(\d+)\.", hf_name)
    return int(match.group(1)) if match else None


class HubertFeatures:
    """mHuBERT features at one layer: float32 audio (n,) at 16 kHz -> (n_frames, embed_dim)."""

    def __init__(self, model: Any, dims: HubertDims, layer: int, device: torch.device) -> None:
        self.model = model
        self.dims = dims
        self.layer = layer
        self.device = device

    @classmethod
    def load(cls, path: str | Path, *, layer: int = UNIT_LAYER, device: str | torch.device = "cpu") -> HubertFeatures:
        from transformers import HubertConfig, HubertModel

        path = Path(path)
        ckpt = load_torch_checkpoint(path)
        if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
            raise ModelIncompatible(
                "This is not a fairseq HuBERT checkpoint (no 'model').", path=path, fix=WRONG_FILE_FIX
            )
        dims = hubert_dims(ckpt, path)
        if not 1 <= layer <= dims.n_layers:
            raise ModelIncompatible(
                f"The checkpoint has {dims.n_layers} layers; layer {layer} was asked for.", path=path
            )
        config = HubertConfig(
            hidden_size=dims.embed_dim,
            num_hidden_layers=layer,  # the layers after the unit layer are never needed
            num_attention_heads=dims.n_heads,
            intermediate_size=dims.ffn_dim,
            hidden_act="gelu",
            feat_extract_activation="gelu",
            feat_extract_norm="group",
            conv_dim=[c for c, _, _ in dims.conv_layers],
            conv_kernel=[k for _, k, _ in dims.conv_layers],
            conv_stride=[s for _, _, s in dims.conv_layers],
            conv_bias=dims.conv_bias,
            num_conv_pos_embeddings=dims.conv_pos,
            num_conv_pos_embedding_groups=dims.conv_pos_groups,
            do_stable_layer_norm=False,
            feat_proj_layer_norm=True,
            layer_norm_eps=LAYER_NORM_EPS,
            apply_spec_augment=False,
            mask_time_prob=0.0,
            layerdrop=0.0,
            hidden_dropout=0.0,
            attention_dropout=0.0,
            activation_dropout=0.0,
            feat_proj_dropout=0.0,
        )
        model = HubertModel(config)
        expected = set(model.state_dict())
        state: dict[str, torch.Tensor] = {}
        for name, tensor in ckpt["model"].items():
            hf = fairseq_to_hf_name(name)
            if hf is None:
                continue
            index = _layer_index(hf)
            if index is not None and index >= layer:
                continue
            if not isinstance(tensor, torch.Tensor):
                raise ModelIncompatible(f"HuBERT weight {name} is not a tensor.", path=path, fix=WRONG_FILE_FIX)
            state[hf] = tensor.float()
        missing = sorted(expected - set(state))
        if missing:
            raise ModelIncompatible(
                f"The HuBERT checkpoint lacks {len(missing)} weights (e.g. {missing[0]}).",
                path=path,
                fix=WRONG_FILE_FIX,
            )
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelIncompatible(f"HuBERT weights do not fit: {exc}", path=path, fix=WRONG_FILE_FIX) from exc
        dev = torch.device(device)
        model.to(dev)  # type: ignore[arg-type]  # transformers' decorated .to() is typed too narrowly
        model.eval().requires_grad_(False)
        return cls(model, dims, layer, dev)

    @torch.inference_mode()
    def __call__(self, audio_16k: np.ndarray) -> np.ndarray:
        """float32 mono (n_samples,) at the checkpoint's rate -> float32 (n_frames, embed_dim)."""
        x = torch.from_numpy(np.ascontiguousarray(audio_16k, dtype=np.float32))
        if self.dims.normalize:
            x = torch.nn.functional.layer_norm(x, x.shape)
        pieces = []
        for start in range(0, x.shape[0], MAX_CHUNK_SAMPLES):
            chunk = x[start : start + MAX_CHUNK_SAMPLES].to(self.device).unsqueeze(0)
            pieces.append(self.model(chunk).last_hidden_state[0].float().cpu())
        return torch.cat(pieces).numpy()


class KMeansQuantizer:
    """Nearest-centroid labels, the math of sklearn's ``KMeans.predict`` (and fairseq's ApplyKmeans)."""

    def __init__(self, centers: np.ndarray) -> None:
        self.centers = np.asarray(centers, dtype=np.float32)  # (n_clusters, dim)
        self._center_norms = (self.centers.astype(np.float64) ** 2).sum(axis=1)

    @classmethod
    def load(cls, path: str | Path) -> KMeansQuantizer:
        path = Path(path)
        km = load_joblib(path)
        state = km.state if isinstance(km, InertRecord) else None
        centers = state.get("cluster_centers_") if isinstance(state, dict) else None
        if not isinstance(centers, np.ndarray) or centers.ndim != 2:
            raise ModelIncompatible(
                "This file holds no fitted k-means (cluster_centers_).", path=path, fix=WRONG_FILE_FIX
            )
        return cls(centers)

    @property
    def n_clusters(self) -> int:
        return int(self.centers.shape[0])

    def predict(self, features: np.ndarray) -> np.ndarray:
        """features: float32 (n_frames, dim) -> int64 (n_frames,) labels."""
        if features.shape[-1] != self.centers.shape[1]:
            raise ModelIncompatible(
                f"Feature width {features.shape[-1]} does not match the k-means ({self.centers.shape[1]}).",
                fix=WRONG_FILE_FIX,
            )
        x = features.astype(np.float64)
        dist = (x**2).sum(axis=1, keepdims=True) - 2.0 * x @ self.centers.astype(np.float64).T + self._center_norms
        return np.argmin(dist, axis=1).astype(np.int64)


def dedup_units(labels: Sequence[int]) -> list[int]:
    """Consecutive duplicates removed: ``[5, 5, 7, 7, 5] -> [5, 7, 5]``."""
    out: list[int] = []
    for label in labels:
        if not out or out[-1] != label:
            out.append(int(label))
    return out


class UnitExtractor:
    """Audio -> deduplicated km1000 units, the targets of the unit decoder."""

    def __init__(self, features: HubertFeatures, kmeans: KMeansQuantizer) -> None:
        if kmeans.centers.shape[1] != features.dims.embed_dim:
            raise ModelIncompatible(
                f"The k-means expects {kmeans.centers.shape[1]}-dim features; HuBERT gives {features.dims.embed_dim}.",
                fix=WRONG_FILE_FIX,
            )
        self.features = features
        self.kmeans = kmeans

    @classmethod
    def load(
        cls, hubert_pt: str | Path, kmeans_bin: str | Path, *, device: str | torch.device = "cpu"
    ) -> UnitExtractor:
        return cls(HubertFeatures.load(hubert_pt, device=device), KMeansQuantizer.load(kmeans_bin))

    @property
    def n_units(self) -> int:
        return self.kmeans.n_clusters

    def units(self, audio: np.ndarray, sample_rate_hz: int = MODEL_SAMPLE_RATE_HZ) -> list[int]:
        """audio: float32 (n,) or (n, channels) at any rate -> deduplicated unit ids."""
        wav = resample(to_mono(np.asarray(audio, dtype=np.float32)), sample_rate_hz, self.features.dims.sample_rate_hz)
        min_samples = self.min_samples
        if wav.shape[0] < min_samples:
            raise BadInput(f"The answer recording is too short for unit extraction ({wav.shape[0]} samples).")
        return dedup_units(self.kmeans.predict(self.features(wav)).tolist())

    @property
    def min_samples(self) -> int:
        """The conv front end needs at least its receptive field."""
        receptive = 1
        for _c, kernel, stride in reversed(self.features.dims.conv_layers):
            receptive = (receptive - 1) * stride + kernel
        return receptive
