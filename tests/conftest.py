"""Test-wide setup: headless Qt, and per-test user folders so nothing touches the real profile."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings, models, caches and logs go to a temporary OMNITALK_HOME for every test."""
    monkeypatch.setenv("OMNITALK_HOME", str(tmp_path_factory.mktemp("omnitalk-home")))
