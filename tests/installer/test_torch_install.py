"""Installing torch: the index probe, the fallback to the default index, replacing another build."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from installer.gpu import GpuInfo
from installer.pip_progress import PipProgress
from installer.torch_build import TORCH_REQUIREMENT, choose_torch
from installer.torch_install import install_torch, installed_version, probe_index

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
R570 = GpuInfo(("NVIDIA GeForce RTX 3060",), "570.86.10", (12, 8), ((8, 6),))


class FakePip:
    """Records each pip command; reports what a real pip would have installed."""

    def __init__(self, installs: str = "torch-2.13.0+cpu") -> None:
        self.calls: list[list[str]] = []
        self.installs = installs

    def __call__(self, args: Sequence[str], step: str) -> PipProgress:
        self.calls.append(list(args))
        progress = PipProgress()
        if args[0] == "install":
            progress.installed = ("filelock-3.20.0", self.installs)
        return progress


def _install(choice, pip: FakePip, probe, site: Sequence[Path] = (), system="Linux", driver=None):
    said: list[str] = []
    result = install_torch(
        choice,
        system=system,
        machine="x86_64" if system == "Linux" else "AMD64",
        driver=driver,
        site_packages=site,
        pip=pip,
        step="[1/2] torch",
        probe=probe,
        say=said.append,
    )
    return result, said


def test_reachable_cpu_index_is_used() -> None:
    pip = FakePip()
    probed: list[str] = []
    result, said = _install(choose_torch("Linux", "x86_64", None, None), pip, lambda url: probed.append(url))
    assert probed == [CPU_INDEX]
    assert pip.calls == [["install", TORCH_REQUIREMENT, "--index-url", CPU_INDEX]]
    assert result.choice.index_url == CPU_INDEX and not result.retry_index
    assert said == ["torch 2.13.0+cpu is installed (the CPU build)"]


def test_unreachable_index_falls_back_to_the_default_index_with_a_message() -> None:
    pip = FakePip()
    result, said = _install(choose_torch("Linux", "x86_64", None, None), pip, lambda url: "Name or service not known")
    assert pip.calls == [["install", TORCH_REQUIREMENT]]  # no --index-url: pip never waits on it
    assert result.choice.index_url is None
    assert said[0].startswith(f"{CPU_INDEX} cannot be reached (Name or service not known); installing ")
    assert "default package index" in said[0]
    # The default index (a mirror, as here) had the CPU build after all: nothing to warn about or retry.
    assert not result.retry_index and not any("warning" in line for line in said)


def test_fallback_that_brings_the_cuda_build_warns_and_retries_next_time() -> None:
    pip = FakePip(installs="torch-2.13.0")  # PyPI's Linux wheel: the cu130 build
    result, said = _install(choose_torch("Linux", "x86_64", None, None), pip, lambda url: "timed out")
    assert result.retry_index
    assert any(line.startswith("warning: ") and "several GB of NVIDIA libraries" in line for line in said)


def test_windows_gpu_fallback_gets_the_cpu_build_and_says_so() -> None:
    pip = FakePip(installs="torch-2.13.0")
    choice = choose_torch("Windows", "AMD64", R570, None)
    result, said = _install(choice, pip, lambda url: "HTTP 403 Forbidden", system="Windows", driver="570.86.10")
    assert pip.calls == [["install", TORCH_REQUIREMENT]]
    assert result.retry_index
    assert said[-1].startswith("warning: the default index only has the CPU build of torch for Windows")


def test_another_build_of_the_same_version_is_uninstalled_first(tmp_path: Path) -> None:
    (tmp_path / "torch-2.13.0+cpu.dist-info").mkdir()
    assert installed_version([tmp_path], "torch") == "2.13.0+cpu"
    pip = FakePip(installs="torch-2.13.0+cu126")
    choice = choose_torch("Linux", "x86_64", R570, None)
    result, said = _install(choice, pip, lambda url: None, site=[tmp_path], driver="570.86.10")
    assert pip.calls == [
        ["uninstall", "-y", "torch"],
        ["install", TORCH_REQUIREMENT, "--index-url", "https://download.pytorch.org/whl/cu126"],
    ]
    assert said == [
        "replacing torch 2.13.0+cpu with the cu126 build",
        "torch 2.13.0+cu126 is installed (the cu126 CUDA build)",
    ]
    assert result.version == "2.13.0+cu126"


def test_the_same_build_is_not_reinstalled(tmp_path: Path) -> None:
    (tmp_path / "torch-2.13.0+cpu.dist-info").mkdir()
    pip = FakePip()
    _install(choose_torch("Linux", "x86_64", None, None), pip, lambda url: None, site=[tmp_path])
    assert [call[0] for call in pip.calls] == ["install"]


# --- the probe itself, against a real HTTP server on 127.0.0.1 ---


class _Index(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200 if self.path == "/whl/cpu/torch/" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def index_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_probe_index_against_a_local_server(index_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    assert probe_index(f"{index_server}/whl/cpu") is None
    assert probe_index(f"{index_server}/whl/cpu/") is None
    assert probe_index(f"{index_server}/whl/nothing") == "HTTP 404 Not Found"


def test_probe_index_gives_the_reason_when_nothing_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    reason = probe_index(f"http://127.0.0.1:{port}/whl/cpu")
    assert reason is not None and "refused" in reason.lower()


def test_probe_index_gives_up_on_a_server_that_never_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    # Accepts the connection (the kernel's backlog) but never replies, like a black-holing firewall.
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        reason = probe_index(f"http://127.0.0.1:{sock.getsockname()[1]}/whl/cpu", timeout_s=0.5)
    assert reason is not None and "timed out" in reason


def test_probe_index_is_bounded_even_when_name_resolution_hangs() -> None:
    released = threading.Event()

    def hanging_resolver(request: object, **kwargs: object) -> object:
        released.wait(30)  # getaddrinfo stuck on a dead DNS server ignores socket timeouts
        raise OSError("resolver gave up")

    try:
        assert probe_index("https://download.pytorch.org/whl/cpu", 0.2, hanging_resolver) == "no answer within 0.2 s"
    finally:
        released.set()
