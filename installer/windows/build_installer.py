"""Build the Windows installer (on Windows, with Inno Setup 6.6+):

    python installer\\windows\\build_installer.py      ->  build\\windows\\OmniTalk-<version>-setup.exe

1. puts a private python.org Python into ``build\\windows\\python`` (once): the ``python`` package
   from nuget.org, version ``PYTHON_VERSION``, which is the full interpreter with ``venv`` and
   ``ensurepip`` and no installer, registry entries or PATH changes (the "embeddable" zip has no
   ``venv`` or pip, which the launcher's install step needs; installer/README.md);
2. runs ``ISCC`` on ``installer\\windows\\omnitalk.iss`` with ``/DAppVersion`` from
   ``engine/version.py`` (the one version source) and ``/DPythonDir``.

Standard library only.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.version import __version__  # noqa: E402  (engine/__init__ imports nothing heavy)

SCRIPT = ROOT / "installer" / "windows" / "omnitalk.iss"
PYTHON_VERSION = "3.12.10"
NUGET_URL = "https://www.nuget.org/api/v2/package/python/{version}"
DEFAULT_PYTHON_DIR = ROOT / "build" / "windows" / "python"
DOWNLOAD_TIMEOUT_S = 120
# What the launcher's install step needs from the interpreter (checked in the package before use).
REQUIRED_FILES = (
    "tools/python.exe",
    "tools/pythonw.exe",
    "tools/Lib/venv/__init__.py",
    "tools/Lib/ensurepip/__init__.py",
)
ISCC_PLACES = (  # per machine and per user installs of Inno Setup 6 (environment names are case-blind on Windows)
    Path(os.environ.get("PROGRAMFILES(X86)", r"C:\Program Files (x86)")) / "Inno Setup 6" / "ISCC.exe",
    Path(os.environ.get("LOCALAPPDATA", r"C:\Users\Default\AppData\Local")) / "Programs" / "Inno Setup 6" / "ISCC.exe",
)

Opener = Callable[..., io.BufferedIOBase]


def fetch_python(
    dest: Path, version: str = PYTHON_VERSION, url: str | None = None, opener: Opener | None = None
) -> Path:
    """Download the nuget ``python`` package and unpack its ``tools`` folder (the interpreter) into ``dest``."""
    url = url or NUGET_URL.format(version=version)
    opener = opener or urllib.request.urlopen
    print(f"downloading Python {version} from {url}")
    with opener(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        data = response.read()
    try:
        package = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise SystemExit(f"{url} did not give a nuget package (zip): {exc}") from exc
    names = set(package.namelist())
    missing = [name for name in REQUIRED_FILES if name not in names]
    if missing:
        raise SystemExit(f"the Python package from {url} lacks {', '.join(missing)}")
    staging = dest.with_name(dest.name + ".part")
    shutil.rmtree(staging, ignore_errors=True)
    for member in package.infolist():
        if not member.filename.startswith("tools/") or member.is_dir():
            continue
        target = staging / member.filename[len("tools/") :]
        if staging.resolve() not in target.resolve().parents:
            raise SystemExit(f"unsafe path in the Python package: {member.filename}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(package.read(member))
    shutil.rmtree(dest, ignore_errors=True)
    staging.replace(dest)
    return dest


def iscc_command(iscc: Path, python_dir: Path, version: str = __version__) -> list[str]:
    return [str(iscc), f"/DAppVersion={version}", f"/DPythonDir={python_dir}", str(SCRIPT)]


def find_iscc() -> Path | None:
    found = shutil.which("iscc")
    if found:
        return Path(found)
    return next((place for place in ISCC_PLACES if place.exists()), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python-dir", type=Path, default=DEFAULT_PYTHON_DIR, help="the private Python's folder")
    parser.add_argument("--iscc", type=Path, help="ISCC.exe (default: on PATH or where Inno Setup 6 installs)")
    args = parser.parse_args(argv)
    if not (args.python_dir / "python.exe").exists():
        fetch_python(args.python_dir)
    iscc = args.iscc or find_iscc()
    if iscc is None:
        print("Inno Setup 6.6+ is needed (ISCC.exe): https://jrsoftware.org/isdl.php", file=sys.stderr)
        return 1
    command = iscc_command(iscc, args.python_dir.resolve())
    print(" ".join(command))
    return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main())
