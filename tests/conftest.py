"""Test-wide setup: headless Qt, and per-test user folders so nothing touches the real profile."""

from __future__ import annotations

import importlib.abc
import os
import sys
from collections.abc import Iterator

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings, models, caches and logs go to a temporary OMNITALK_HOME for every test; the app's
    start-up GPU dialog (there is no GPU here) is off, except where tests/app/test_first_start.py asks."""
    monkeypatch.setenv("OMNITALK_HOME", str(tmp_path_factory.mktemp("omnitalk-home")))
    monkeypatch.setenv("OMNITALK_GPU_CHECK", "skip")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``gpu`` tests need CUDA: skip them with the reason where there is none."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    import torch  # only when GPU tests were collected: importing torch takes seconds

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with CUDA (torch.cuda.is_available() is False here)")
    for item in gpu_items:
        item.add_marker(skip)


class _NoPortAudio(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: object, target: object = None) -> None:
        if name == "sounddevice":
            raise OSError("PortAudio library not found")  # sounddevice's own words when it is missing
        return None


@pytest.fixture
def no_portaudio(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``import sounddevice`` fails the way it does on a PC without the PortAudio library."""
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NoPortAudio(), *sys.meta_path])
    yield
