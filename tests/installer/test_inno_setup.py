"""The Inno Setup script (it cannot be compiled here) against the project: version source, shipped
files, paths the app and the launcher use, and the build script that feeds it."""

from __future__ import annotations

import http.server
import io
import re
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path, PureWindowsPath

import pytest

import assets
from engine.version import __version__
from installer import bootstrap, shortcuts_windows
from installer.windows import build_installer

ROOT = Path(__file__).resolve().parents[2]
ISS = ROOT / "installer" / "windows" / "omnitalk.iss"


def _sections(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(";"):
            continue
        match = re.fullmatch(r"\[(\w+)\]", line)
        if match:
            current = match.group(1)
            sections[current] = []
        elif current:
            sections[current].append(line)
    return sections


def _entry(line: str) -> dict[str, str]:
    """``Source: "a"; DestDir: "{app}"; Flags: x y`` -> {"Source": "a", ...}."""
    parts = re.findall(r'(\w+):\s*("(?:[^"]|"")*"|[^;]*)', line)
    return {key: _unquote(value.strip()) for key, value in parts}


def _unquote(value: str) -> str:
    """Inno's quoting: one outer pair of quotes, "" for a quote inside."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value.replace('""', '"')


@pytest.fixture(scope="module")
def iss() -> dict[str, list[str]]:
    return _sections(ISS.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def defines() -> dict[str, str]:
    return dict(re.findall(r'^\s*#define (\w+) "([^"]*)"', ISS.read_text(encoding="utf-8"), re.MULTILINE))


def _expand(value: str, defines: dict[str, str]) -> str:
    return re.sub(r"\{#(\w+)\}", lambda m: defines[m.group(1)], value)


def _setup(iss: dict[str, list[str]]) -> dict[str, str]:
    return dict(line.split("=", 1) for line in iss["Setup"])


def test_version_comes_from_the_one_source(iss, defines) -> None:
    setup = _setup(iss)
    assert "AppVersion" not in defines  # never written in the script itself
    assert setup["AppVersion"] == "{#AppVersion}" and setup["VersionInfoVersion"] == "{#AppVersion}"
    assert "{#AppVersion}" in setup["OutputBaseFilename"]
    command = build_installer.iscc_command(Path("ISCC.exe"), Path("py"))
    assert f"/DAppVersion={__version__}" in command and command[-1] == str(ISS)
    assert "#error" in ISS.read_text()  # building without the version stops instead of guessing


def test_per_user_install_without_admin(iss) -> None:
    setup = _setup(iss)
    assert setup["PrivilegesRequired"] == "lowest"
    assert setup["DefaultDirName"].startswith("{autopf}")  # %LOCALAPPDATA%\Programs without admin
    assert re.fullmatch(r"\{\{[0-9A-F-]{36}\}", setup["AppId"])


def test_every_source_exists_and_the_project_is_shipped_whole(iss, defines) -> None:
    root_relative = []
    for line in iss["Files"]:
        entry = _entry(line)
        if "{#PythonDir}" in entry["Source"]:  # made by build_installer.py at build time
            continue
        source = _expand(entry["Source"], defines)
        path = PureWindowsPath(source)
        local = (ISS.parent / Path(*path.parts)).resolve()
        assert local.parent.exists(), source
        if "*" not in path.name:
            assert local.is_file(), source
        root_relative.append(local.relative_to(ROOT))
    shipped = {str(p).split("/")[0] for p in root_relative}
    pyproject = (ROOT / "pyproject.toml").read_text()
    include = re.search(r"^\[tool\.setuptools\.packages\.find\]\ninclude = \[(.*)\]$", pyproject, re.MULTILINE)
    readme = re.search(r'^readme = "(.*)"$', pyproject, re.MULTILINE)
    assert include and readme
    packages = {name.strip().strip('"').rstrip("*") for name in include.group(1).split(",")}
    assert packages >= {"app", "engine", "installer", "assets"}
    # pip installs the project from the app folder: pyproject, its readme and every package must be there.
    assert packages | {"main.py", "pyproject.toml", readme.group(1), "omnitalk.cmd"} <= shipped
    # Every file of the packages is covered by a pattern (no data file left behind).
    patterns = [PureWindowsPath(_expand(_entry(line)["Source"], defines)).name for line in iss["Files"]]
    for package in packages:
        for file in (ROOT / package).rglob("*"):
            if file.is_file() and "__pycache__" not in file.parts:
                assert any(file.match(p) for p in patterns if p.startswith("*")), file


def test_icons_and_shortcuts_use_the_app_icon_and_the_gui_python(iss, defines) -> None:
    setup = _setup(iss)
    icon = ISS.parent / Path(*PureWindowsPath(_expand(setup["SetupIconFile"], defines)).parts)
    assert icon.resolve() == assets.icon_path(assets.ICON_ICO)
    expected_icon = "{app}\\" + str(PureWindowsPath("assets", assets.ICONS_DIR, assets.ICON_ICO))
    assert _expand(setup["UninstallDisplayIcon"], defines) == expected_icon
    gui_python = str(shortcuts_windows.gui_python(PureWindowsPath("{app}")))
    icons = [_entry(line) for line in iss["Icons"]]
    assert {i["Name"].split("\\")[0] for i in icons} == {"{autoprograms}", "{autodesktop}"}
    for shortcut in icons:
        assert _expand(shortcut["Filename"], defines) == gui_python  # as omnitalk.cmd install makes them
        assert _expand(shortcut["IconFilename"], defines) == expected_icon
        assert shortcut["Parameters"] == '"{app}\\main.py"'
    desktop = next(i for i in icons if i["Name"].startswith("{autodesktop}"))
    assert desktop["Tasks"] == "desktopicon"  # optional, unticked by default
    assert "Flags: unchecked" in next(line for line in iss["Tasks"] if "desktopicon" in line)


def test_the_install_step_is_the_launchers(iss) -> None:
    code = "\n".join(iss["Code"])
    match = re.search(r"'\"\{app\}\\installer\\bootstrap\.py\" ([^']*)'", code)
    assert match is not None
    args = match.group(1).split()
    assert args[0] == "install"
    options = bootstrap._menu_parser("install").parse_args(args[1:])
    assert options.no_shortcuts  # the installer makes (and its uninstaller removes) the shortcuts
    assert (ROOT / "installer" / "bootstrap.py").is_file()
    assert "CreateOutputProgressPage" in code and "ExecAndLogOutput" in code
    assert "{app}\\.venv\\omnitalk-install.log" in ISS.read_text()  # the log the launcher writes
    assert bootstrap.VENV_DIR.name == ".venv" and bootstrap.LOG_NAME == "omnitalk-install.log"


def test_uninstall_keeps_models_unless_ticked_where_the_app_keeps_them(iss, monkeypatch, tmp_path) -> None:
    code = "\n".join(iss["Code"])
    assert "Also remove the downloaded models (" in code and "Box.Checked := False" in code
    # The folders the uninstaller names are engine.paths' folders, in both of its layouts.
    from engine import paths

    monkeypatch.setenv("OMNITALK_HOME", str(tmp_path))
    portable = paths.models_dir().relative_to(tmp_path)
    assert f"'{PureWindowsPath(portable)}'" in code
    assert f"'{PureWindowsPath(paths.cache_dir().relative_to(tmp_path))}'" in code
    assert f"'\\{paths.APP_NAME}\\models'" in code  # %LOCALAPPDATA%\OmniTalk\models (platformdirs)
    assert ".venv" in "\n".join(iss["UninstallDelete"])


@pytest.fixture()
def nuget_server(tmp_path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    packages: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = packages.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", packages
    finally:
        server.shutdown()
        thread.join()


def _nupkg(files: tuple[str, ...]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("python.nuspec", "<package/>")
        for name in files:
            archive.writestr(name, f"contents of {name}")
    return buffer.getvalue()


def test_fetch_python_unpacks_the_interpreter_from_the_nuget_package(nuget_server, tmp_path: Path) -> None:
    base, packages = nuget_server
    packages["/python/3.12.10"] = _nupkg((*build_installer.REQUIRED_FILES, "tools/Lib/os.py"))
    dest = build_installer.fetch_python(tmp_path / "python", url=f"{base}/python/3.12.10")
    assert (dest / "python.exe").read_text() == "contents of tools/python.exe"
    assert (dest / "Lib" / "venv" / "__init__.py").exists() and not (dest / "python.nuspec").exists()


def test_fetch_python_refuses_a_package_without_venv(nuget_server, tmp_path: Path) -> None:
    base, packages = nuget_server
    packages["/embeddable"] = _nupkg(("tools/python.exe", "tools/pythonw.exe"))
    with pytest.raises(SystemExit, match="lacks tools/Lib/venv"):
        build_installer.fetch_python(tmp_path / "python", url=f"{base}/embeddable")
    assert not (tmp_path / "python").exists()
