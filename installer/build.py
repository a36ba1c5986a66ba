"""Build OmniTalk as a PyInstaller one-folder app for this platform: ``python installer/build.py``.

    .venv/bin/python installer/build.py [--out DIR]    ->  DIR/dist/OmniTalk/OmniTalk[.exe]

The build freezes the environment it runs in, torch build included: on a PC with the CUDA torch
the launcher installed, the folder carries CUDA; from a CPU-only environment it is CPU-only (the
app's first-start dialog says so where a GPU is found). See installer/README.md for where the
frozen build fits (an offline/portable copy) and where the launcher is used instead.

What the frozen app needs beyond what PyInstaller finds by following imports:
- the icon files, as data under ``assets/icons`` next to the frozen ``assets`` module, where the
  one resolver (``assets/__init__.py``) looks in every layout;
- every module of ``engine`` and ``app``: child processes name their module on the command line
  (``OmniTalk --engine-child engine.vocoder.export_process ...``, ``... engine finetune``;
  ``engine/subprocess_entry.py``), which no import statement shows;
- package metadata that libraries read at run time (transformers checks its dependencies'
  versions; ``--self-check`` reports them);
- silero-vad's model files;
- onnxscript's sources next to its compiled modules: it builds the ONNX ops of the vocoder export
  from their Python source (``inspect.getsource``), which a frozen module has not got (found by
  ``--self-check``: the export child failed with "does not work on dynamically compiled function");
- pynput's backend for the platform, which it imports by name (PyInstaller's own hook for it must
  import pynput, and that fails without a display).
Windows builds are windowed (no console; ``main.py`` logs to a file) and carry the .ico.

Run it with the project's environment (it re-runs itself with ``.venv``'s Python when PyInstaller
is not importable here). ``--self-check`` on the result proves it works: ``dist/OmniTalk/OmniTalk
--self-check``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import assets  # noqa: E402

APP_NAME = "OmniTalk"
ENTRY = ROOT / "main.py"
DEFAULT_OUT = ROOT / "build" / "frozen"
# Modules started by name in child processes, so no import shows them.
ALL_SUBMODULES = ("engine", "app", "installer")
# Distributions whose metadata is read at run time (transformers' dependency checks, --self-check).
METADATA = (
    "torch", "transformers", "tokenizers", "safetensors", "huggingface-hub", "accelerate", "peft",
    "numpy", "onnx", "onnxscript", "soundfile", "sounddevice", "soxr", "silero-vad", "platformdirs",
    "nvidia-ml-py", "PySide6-Essentials", "pynput", "tqdm", "regex", "requests", "packaging",
    "filelock", "pyyaml",
)
OPTIONAL_METADATA = ("onnxruntime-gpu", "onnxruntime", "bitsandbytes")  # not on every platform
DATA_PACKAGES = ("silero_vad",)
# Installed in the dev environment but never imported by the app: keep them out if a hook asks.
EXCLUDES = ("tkinter", "pytest", "pytestqt", "mypy", "ruff", "whisper", "numba", "llvmlite", "IPython", "matplotlib")
PYNPUT_BACKENDS = {
    "linux": ("keyboard._xorg", "mouse._xorg", "_util.xorg", "_util.xorg_keysyms", "keyboard._uinput", "_util.uinput"),
    "win32": ("keyboard._win32", "mouse._win32", "_util.win32", "_util.win32_vks"),
    "darwin": ("keyboard._darwin", "mouse._darwin", "_util.darwin", "_util.darwin_vks"),
}
HOOKS_DIR_NAME = "hooks"


def hook_files(platform: str) -> dict[str, str]:
    """PyInstaller hooks (file name -> source) that replace or add to the ones it ships."""
    backends = [f"pynput.{name}" for name in PYNPUT_BACKENDS.get(platform, PYNPUT_BACKENDS["linux"])]
    return {
        "hook-onnxscript.py": 'module_collection_mode = "pyz+py"  # sources for inspect.getsource\n',
        "hook-pynput.py": f"hiddenimports = {backends!r}\n",
    }


def _installed(distribution: str) -> bool:
    import importlib.metadata

    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def write_hooks(out: Path, platform: str) -> Path:
    folder = out / HOOKS_DIR_NAME
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in hook_files(platform).items():
        (folder / name).write_text(source, encoding="utf-8")
    return folder


def pyinstaller_args(out: Path, windows: bool) -> list[str]:
    """The PyInstaller command line (without the program name) for this platform."""
    icons = ROOT / "assets" / assets.ICONS_DIR
    args = [
        str(ENTRY),
        "--name", APP_NAME,
        "--onedir",
        "--noconfirm",
        "--log-level", "WARN",
        "--additional-hooks-dir", str(out / HOOKS_DIR_NAME),
        "--distpath", str(out / "dist"),
        "--workpath", str(out / "work"),
        "--specpath", str(out),
        "--paths", str(ROOT),
        "--add-data", f"{icons}{os.pathsep}assets/{assets.ICONS_DIR}",
    ]
    for package in ALL_SUBMODULES:
        args += ["--collect-submodules", package]
    for distribution in METADATA + tuple(d for d in OPTIONAL_METADATA if _installed(d)):
        args += ["--copy-metadata", distribution]
    for package in DATA_PACKAGES:
        args += ["--collect-data", package]
    for module in EXCLUDES:
        args += ["--exclude-module", module]
    if windows:
        args += ["--windowed", "--icon", str(icons / assets.ICON_ICO)]
    return args


def frozen_executable(out: Path, windows: bool | None = None) -> Path:
    windows = os.name == "nt" if windows is None else windows
    return out / "dist" / APP_NAME / (f"{APP_NAME}.exe" if windows else APP_NAME)


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _rerun_with_venv() -> int | None:
    """Run this script with the checkout's .venv Python when PyInstaller is missing here."""
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        venv = ROOT / ".venv" / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
        if venv.exists() and Path(sys.executable).resolve() != venv.resolve():
            return subprocess.run([str(venv), __file__, *sys.argv[1:]]).returncode
        print(
            "PyInstaller is not installed: run ./omnitalk test once (it installs the dev tools), "
            "or .venv/bin/pip install pyinstaller",
            file=sys.stderr,
        )
        return 1
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"build folder (default {DEFAULT_OUT})")
    parser.add_argument("--clean", action="store_true", help="discard PyInstaller's caches from earlier builds first")
    args = parser.parse_args(argv)
    rerun = _rerun_with_venv()
    if rerun is not None:
        return rerun
    import PyInstaller.__main__

    out = args.out.resolve()
    started = time.monotonic()
    write_hooks(out, sys.platform)
    PyInstaller.__main__.run([*pyinstaller_args(out, os.name == "nt"), *(["--clean"] if args.clean else [])])
    exe = frozen_executable(out)
    if not exe.exists():
        print(f"the build did not produce {exe}", file=sys.stderr)
        return 1
    size = folder_size(exe.parent)
    print(f"built {exe} in {time.monotonic() - started:.0f} s; the folder holds {size / 1e9:.2f} GB")
    print(f"check it: {exe} --self-check")
    return 0


if __name__ == "__main__":
    sys.exit(main())
