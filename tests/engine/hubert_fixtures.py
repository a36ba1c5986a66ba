"""A tiny random mHuBERT in fairseq's checkpoint layout, and a k-means ``.bin`` made by sklearn/joblib.

The checkpoint mirrors what fairseq's Trainer saves (``cfg`` with model/task sections, ``model``
state dict with fairseq names and the old-style weight norm of ``pos_conv``, optimizer history,
``task_state`` holding fairseq ``Dictionary`` objects, ``extra_state`` with numpy scalars). fairseq
itself is not installed: a stand-in ``Dictionary`` class is registered under fairseq's module name
just long enough for ``torch.save`` to pickle it by that name.
"""

from __future__ import annotations

import sys
import types
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

CONV_LAYERS = "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2"
CONV_SPEC = [(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2
EMBED = 32
N_LAYERS = 12
N_HEADS = 4
FFN = 64
CONV_POS = 16
CONV_POS_GROUPS = 4


class Dictionary:  # pickled as fairseq.data.dictionary.Dictionary
    def __init__(self) -> None:
        self.symbols = ["<s>", "<pad>", "</s>", "<unk>", "0", "1"]
        self.count = [1, 1, 1, 1, 5, 7]
        self.indices = {s: i for i, s in enumerate(self.symbols)}
        self.bos_index, self.pad_index, self.eos_index, self.unk_index = 0, 1, 2, 3
        self.nspecial = 4


@contextmanager
def _fairseq_names():
    names = ["fairseq", "fairseq.data", "fairseq.data.dictionary"]
    saved = {n: sys.modules.get(n) for n in names}
    module = types.ModuleType("fairseq.data.dictionary")
    module.Dictionary = Dictionary
    Dictionary.__module__ = "fairseq.data.dictionary"
    sys.modules.update(
        {
            "fairseq": types.ModuleType("fairseq"),
            "fairseq.data": types.ModuleType("fairseq.data"),
            "fairseq.data.dictionary": module,
        }
    )
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


def fairseq_hubert_state(seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, std: float) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std

    sd: OrderedDict[str, torch.Tensor] = OrderedDict()
    in_ch = 1
    for i, (ch, k, _s) in enumerate(CONV_SPEC):
        sd[f"feature_extractor.conv_layers.{i}.0.weight"] = rnd(ch, in_ch, k, std=(in_ch * k) ** -0.5)
        if i == 0:
            sd["feature_extractor.conv_layers.0.2.weight"] = 1 + rnd(ch, std=0.1)
            sd["feature_extractor.conv_layers.0.2.bias"] = rnd(ch, std=0.1)
        in_ch = ch
    sd["layer_norm.weight"] = 1 + rnd(in_ch, std=0.1)
    sd["layer_norm.bias"] = rnd(in_ch, std=0.1)
    sd["post_extract_proj.weight"] = rnd(EMBED, in_ch, std=in_ch**-0.5)
    sd["post_extract_proj.bias"] = rnd(EMBED, std=0.1)
    sd["mask_emb"] = rnd(EMBED, std=1.0)
    sd["encoder.pos_conv.0.bias"] = rnd(EMBED, std=0.1)
    sd["encoder.pos_conv.0.weight_g"] = 1 + rnd(1, 1, CONV_POS, std=0.1)
    sd["encoder.pos_conv.0.weight_v"] = rnd(EMBED, EMBED // CONV_POS_GROUPS, CONV_POS, std=0.2)
    sd["encoder.layer_norm.weight"] = 1 + rnd(EMBED, std=0.1)
    sd["encoder.layer_norm.bias"] = rnd(EMBED, std=0.1)
    for i in range(N_LAYERS):
        p = f"encoder.layers.{i}."
        for proj in ("k", "v", "q", "out"):
            sd[f"{p}self_attn.{proj}_proj.weight"] = rnd(EMBED, EMBED, std=EMBED**-0.5)
            sd[f"{p}self_attn.{proj}_proj.bias"] = rnd(EMBED, std=0.1)
        sd[f"{p}self_attn_layer_norm.weight"] = 1 + rnd(EMBED, std=0.1)
        sd[f"{p}self_attn_layer_norm.bias"] = rnd(EMBED, std=0.1)
        sd[f"{p}fc1.weight"] = rnd(FFN, EMBED, std=EMBED**-0.5)
        sd[f"{p}fc1.bias"] = rnd(FFN, std=0.1)
        sd[f"{p}fc2.weight"] = rnd(EMBED, FFN, std=FFN**-0.5)
        sd[f"{p}fc2.bias"] = rnd(EMBED, std=0.1)
        sd[f"{p}final_layer_norm.weight"] = 1 + rnd(EMBED, std=0.1)
        sd[f"{p}final_layer_norm.bias"] = rnd(EMBED, std=0.1)
    sd["label_embs_concat"] = rnd(6, 16, std=1.0)
    sd["final_proj.weight"] = rnd(16, EMBED, std=0.1)
    sd["final_proj.bias"] = rnd(16, std=0.1)
    return sd


def write_tiny_fairseq_hubert(path: Path, seed: int = 0, *, legacy_format: bool = False) -> Path:
    """A fairseq HuBERT checkpoint as the Trainer writes it (see the module docstring)."""
    cfg = {
        "_name": None,
        "common": {"_name": None, "seed": 1, "fp16": True},
        "model": {
            "_name": "hubert",
            "label_rate": 50.0,
            "extractor_mode": "default",
            "encoder_layers": N_LAYERS,
            "encoder_embed_dim": EMBED,
            "encoder_ffn_embed_dim": FFN,
            "encoder_attention_heads": N_HEADS,
            "activation_fn": "gelu",
            "layer_type": "transformer",
            "dropout": 0.1,
            "conv_feature_layers": CONV_LAYERS,
            "conv_bias": False,
            "conv_pos": CONV_POS,
            "conv_pos_groups": CONV_POS_GROUPS,
            "layer_norm_first": False,
            "final_dim": 16,
        },
        "task": {"_name": "hubert_pretraining", "normalize": False, "sample_rate": 16000, "labels": ["km"]},
    }
    ckpt = {
        "args": None,
        "cfg": cfg,
        "model": fairseq_hubert_state(seed),
        "criterion": None,
        "optimizer_history": [
            {
                "criterion_name": "HubertCriterion",
                "optimizer_name": "FairseqAdam",
                "lr_scheduler_state": {"best": None},
                "num_updates": 400000,
            }
        ],
        "task_state": {"dictionaries": [Dictionary()]},
        "extra_state": {
            "metrics": {},
            "previous_training_time": np.float64(1234.5),
            "train_iterator": {"epoch": 3, "iterations_in_epoch": 0, "shuffle": True},
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with _fairseq_names():
        torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy_format)
    return path


def write_tiny_kmeans(path: Path, features: np.ndarray, n_clusters: int = 12, seed: int = 0):
    """Fit sklearn's MiniBatchKMeans as fairseq's learn_kmeans.py does and joblib.dump it. -> the model."""
    import joblib
    from sklearn.cluster import MiniBatchKMeans

    km = MiniBatchKMeans(
        n_clusters=n_clusters,
        init="k-means++",
        max_iter=100,
        batch_size=64,
        compute_labels=False,
        n_init=3,
        random_state=seed,
        reassignment_ratio=0.0,
    )
    km.fit(features)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        joblib.dump(km, handle)
    return km
