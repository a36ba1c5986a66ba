"""The folder check ("Check the files") reads headers only: no torch import, no weights read, and a
damaged or unsafe Whisper .pt is still refused. Timings are in bench/bench_folder_check.py."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from engine.errors import ModelCorrupt
from engine.model.dims import read_dims
from engine.model.pt_header import TensorHeader, read_pt_header
from engine.tiny import TinyPaths

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json, sys
from pathlib import Path
from engine.preflight import check_model_folders, model_size
args = [Path(a) if a else None for a in sys.argv[1:4]]
check = check_model_folders(*args)
size = model_size(*args, max_new_tokens=512)
print(json.dumps({"summary": check.summary, "from_files": size.from_files,
                  "imported": sorted(m for m in ("torch", "transformers", "onnxruntime") if m in sys.modules)}))
"""


@pytest.mark.parametrize("explicit_encoder", [False, True])
def test_check_and_sizes_import_no_torch(tiny_omni: TinyPaths, explicit_encoder: bool) -> None:
    encoder = str(tiny_omni.speech_encoder_pt) if explicit_encoder else ""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(tiny_omni.omni), encoder, str(tiny_omni.vocoder)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["imported"] == [], "the folder check must read headers, not import the model code"
    assert result["from_files"] and "speech encoder: 2 layers, width 128" in result["summary"]


def test_pt_header_gives_dims_and_shapes_without_weights(tiny_omni: TinyPaths) -> None:
    import torch

    ckpt = read_pt_header(tiny_omni.speech_encoder_pt)  # type: ignore[arg-type]
    real = torch.load(tiny_omni.speech_encoder_pt, weights_only=True)  # type: ignore[arg-type]
    assert ckpt["dims"] == real["dims"]
    assert {k: v.shape for k, v in ckpt["model_state_dict"].items()} == {
        k: tuple(v.shape) for k, v in real["model_state_dict"].items()
    }
    assert all(isinstance(v, TensorHeader) and v.dtype == "F16" for v in ckpt["model_state_dict"].values())


def test_a_storage_of_the_wrong_size_is_refused_by_the_check(tiny_omni: TinyPaths, tmp_path: Path) -> None:
    """A .pt whose zip is intact but one tensor's bytes are short (a bad copy, a hand edit)."""
    src = tiny_omni.speech_encoder_pt
    bad = tmp_path / "large-v3.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w", zipfile.ZIP_STORED) as zout:  # type: ignore[arg-type]
        for item in zin.infolist():
            data = zin.read(item)
            zout.writestr(item, data[:-2] if item.filename.endswith("/data/0") else data)
    with pytest.raises(ModelCorrupt, match="damaged") as info:
        read_dims(tiny_omni.omni, bad)
    assert info.value.path == bad


def test_the_licence_comes_from_the_model_card(tiny_omni: TinyPaths, tmp_path: Path) -> None:
    from engine.config import OFFICIAL_DIMS
    from engine.model.omni_config import is_official, read_licence

    assert read_licence(tmp_path) is None  # no README.md
    (tmp_path / "README.md").write_text("---\nlicense: apache-2.0\nlanguage:\n- en\n---\n# Model\n", encoding="utf-8")
    assert read_licence(tmp_path) == "apache-2.0"
    (tmp_path / "README.md").write_text("# No front matter\nlicense: mit\n", encoding="utf-8")
    assert read_licence(tmp_path) is None
    assert is_official(OFFICIAL_DIMS) and not is_official(read_dims(tiny_omni.omni))
