"""Which GPU and which compute dtype: decisions tested against a faked ``torch.cuda`` (no GPU here).

The chosen GPU must be the one everything uses (``resolve_device`` gives ``cuda:N``, ``use_device``
makes it current), and bf16 is chosen from the chosen GPU's compute capability, never from
``torch.cuda.is_bf16_supported()`` (which also says yes where bf16 is only emulated).
"""

from __future__ import annotations

import pytest
import torch

from engine.errors import DeviceUnavailable, Reason
from engine.model.quant import bf16_native, make_plan, resolve_device, use_device

pytest.importorskip("bitsandbytes")


class FakeCuda:
    """Two GPUs: 0 is a Turing card (7.5), 1 an Ampere card (8.6); records set_device."""

    def __init__(self, capabilities: tuple[tuple[int, int], ...] = ((7, 5), (8, 6)), current: int = 0) -> None:
        self.capabilities = capabilities
        self.current = current
        self.set_calls: list[int] = []
        self.asked: list[int] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeCuda:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(self.capabilities))
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(torch.cuda, "set_device", self._set_device)
        monkeypatch.setattr(torch.cuda, "get_device_capability", self._capability)
        # Emulated bf16 counts as "supported" here: the policy must not be fooled by it.
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
        return self

    def _set_device(self, device: torch.device | int) -> None:
        index = device.index if isinstance(device, torch.device) else int(device)
        self.set_calls.append(index)
        self.current = index

    def _capability(self, device: torch.device | int | None = None) -> tuple[int, int]:
        index = self.current if device is None else device.index if isinstance(device, torch.device) else int(device)
        assert index is not None
        self.asked.append(index)
        return self.capabilities[index]


def test_bf16_needs_ampere() -> None:
    assert not bf16_native((6, 1)) and not bf16_native((7, 5))
    assert bf16_native((8, 0)) and bf16_native((8, 9)) and bf16_native((9, 0)) and bf16_native((12, 0))


def test_devices_resolve_to_an_index_that_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeCuda(current=1).install(monkeypatch)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 1)  # the current device, with its index
    assert resolve_device("auto") == resolve_device(None) == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceUnavailable, match=r"GPU 2 was chosen, but this PC has 2 GPU\(s\)") as info:
        resolve_device("cuda:2")
    assert info.value.reason is Reason.GPU_NOT_FOUND and dict(info.value.facts) == {"index": 2, "count": 2}


def test_use_device_makes_the_chosen_gpu_current(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = FakeCuda().install(monkeypatch)
    use_device(torch.device("cpu"))
    assert cuda.set_calls == []
    use_device(resolve_device("cuda:1"))
    assert cuda.set_calls == [1] and resolve_device("cuda") == torch.device("cuda", 1)


def test_compute_dtype_follows_the_chosen_gpus_capability(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = FakeCuda().install(monkeypatch)
    turing, ampere = torch.device("cuda", 0), torch.device("cuda", 1)
    plan = make_plan("nf4", turing)
    assert plan.compute_dtype == torch.float16 and cuda.asked[-1] == 0
    assert plan.head_dtype == torch.float16 and plan.adapter_dtype == torch.float16
    plan = make_plan("nf4", ampere)
    assert plan.compute_dtype == torch.bfloat16 and cuda.asked[-1] == 1
    assert make_plan("int8", ampere).compute_dtype == torch.float16  # LLM.int8's kernels work in fp16
    assert make_plan("bf16", ampere).compute_dtype == torch.bfloat16
    with pytest.raises(DeviceUnavailable, match="compute capability 8.0"):
        make_plan("bf16", turing)
    assert make_plan("fp16", turing).encoder_dtype == torch.float16
    assert make_plan("nf4", ampere).embed_on_host
