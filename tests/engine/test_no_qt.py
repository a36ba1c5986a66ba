"""engine/ is usable from plain scripts: importing any of its modules must not load Qt."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import importlib, pkgutil, sys
import engine
names = ["engine"] + [m.name for m in pkgutil.walk_packages(engine.__path__, "engine.")]
for name in names:
    if name == "engine.__main__":
        continue
    importlib.import_module(name)
qt = sorted(m for m in sys.modules if m.split(".")[0] in ("PySide6", "PyQt5", "PyQt6", "shiboken6"))
print(len(names), "modules")
assert not qt, f"engine imported Qt: {qt}"
"""


def test_engine_never_imports_qt() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert int(result.stdout.split()[0]) >= 5  # the walk really found the engine's modules


def test_engine_sources_do_not_mention_qt_imports() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "engine").rglob("*.py")
        if any(
            line.lstrip().startswith(("import PySide6", "from PySide6", "import PyQt", "from PyQt"))
            for line in path.read_text(encoding="utf-8").splitlines()
        )
    ]
    assert offenders == []
