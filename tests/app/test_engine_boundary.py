"""app/ meets the engine in one place: the bridge drives the engine; everything else in app/ may only
use the engine's plain value types and Qt-free helpers listed here."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Plain types and Qt-free helpers the GUI may use directly.
ALLOWED = {
    "engine.events": "commands, events, options (the engine's language)",
    "engine.errors": "error kinds, turned into words by app/",
    "engine.config": "settings data: precisions, default system prompt, official dimensions",
    "engine.paths": "the user's folders",
    "engine.version": "the version string",
    "engine.preflight": "Qt-free pre-flight: GPUs, memory estimates and fit, folder checks",
    "engine.store": "model locations and the resumable downloader (run as a background task)",
    "engine.model_download": "what to download from where (run as a background task)",
    "engine.heap": "import_long_lived: heavy imports off the UI thread without collector pauses",
    "engine.finetune.library": "Qt- and torch-free: the installed adapters (Settings → Fine-tuning), rename, delete",
    "engine.subprocess_entry": "the child command line and environment of the fine-tuning subprocess",
    "engine.self_check": "Qt-free checks and the report format of --self-check and Help → Copy diagnostic report",
}
# Only the bridge creates and drives the engine.
BRIDGE_ONLY = {"engine.engine": "app/bridge.py"}


def _engine_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "engine":
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "engine")
    return found


def test_app_imports_only_the_engines_public_types() -> None:
    offenders = []
    seen = set()
    for path in sorted((ROOT / "app").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for module in _engine_imports(path):
            seen.add(module)
            if module in ALLOWED or BRIDGE_ONLY.get(module) == rel:
                continue
            offenders.append(f"{rel} imports {module}")
    assert offenders == [], "\n".join(offenders)
    assert {"engine.events", "engine.engine"} <= seen  # the scan really reads the imports
