"""Installing the chosen torch build, with a quick reachability check of its index first.

download.pytorch.org cannot be reached from some networks (CI runners, offline mirrors). Handing pip
an unreachable ``--index-url`` costs its retries for every package it looks up (about 8 s each on a
DNS failure, ``PIP_DEFAULT_TIMEOUT`` each where packets are dropped), so the index is probed first
with a ``HEAD`` request that gets at most ``INDEX_PROBE_TIMEOUT_S`` (a DNS failure returns in tens
of milliseconds). When that fails, torch comes from the default index, and the launcher says what
that gave and means for this PC (``torch_build.fallback_warning``). A torch of another build that
is already installed with the same version (``2.13.0+cpu`` where ``+cu126`` is wanted) is
uninstalled first: pip would otherwise call the requirement satisfied.

Standard library only (the launcher runs before anything is installed).
"""

from __future__ import annotations

import os
import re
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from installer.pip_progress import PipProgress
from installer.torch_build import CPU, TorchChoice, build_of_installed, fallback_choice, fallback_warning

INDEX_PROBE_TIMEOUT_S = 5.0
PROBE_GRACE_S = 0.5
USER_AGENT = "OmniTalk-launcher"

Opener = Callable[..., object]
Probe = Callable[[str], str | None]
# Runs `pip <args>` as one step of the install and returns what it did (raises PipFailed).
PipCommand = Callable[[Sequence[str], str], PipProgress]


def probe_index(
    url: str, timeout_s: float = INDEX_PROBE_TIMEOUT_S, opener: Opener = urllib.request.urlopen
) -> str | None:
    """None when the package index at ``url`` answers for torch within ``timeout_s``; otherwise why not.

    Uses the proxy settings pip also reads from the environment (``HTTPS_PROXY``...) and pip's
    certificate bundle where ``PIP_CERT`` names one. The request runs in a thread that is waited for
    at most ``timeout_s``: socket timeouts do not cover name resolution, which a broken resolver can
    hold for many seconds.
    """
    answer: list[str | None] = []
    worker = threading.Thread(target=lambda: answer.append(_head(url, timeout_s, opener)), daemon=True)
    worker.start()
    worker.join(timeout_s + PROBE_GRACE_S)  # the socket's own timeout, when it is the socket, reports first
    return answer[0] if answer else f"no answer within {timeout_s:g} s"


def _head(url: str, timeout_s: float, opener: Opener) -> str | None:
    target = url.rstrip("/") + "/torch/"
    request = urllib.request.Request(target, method="HEAD", headers={"User-Agent": USER_AGENT})
    cafile = os.environ.get("PIP_CERT")
    try:
        context = ssl.create_default_context(cafile=cafile if cafile and Path(cafile).is_file() else None)
        with opener(request, timeout=timeout_s, context=context):  # type: ignore[attr-defined]
            return None
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:
        return str(exc.reason)
    except (OSError, ValueError) as exc:  # timeouts, resets; ValueError: a malformed proxy setting
        return str(exc) or type(exc).__name__


def installed_version(site_packages: Sequence[Path], project: str) -> str | None:
    """The version of an installed distribution, from its ``.dist-info`` folder name."""
    for folder in site_packages:
        for info in folder.glob(f"{project}-*.dist-info"):
            return info.name[len(project) + 1 : -len(".dist-info")]
    return None


def installed_from_progress(progress: PipProgress, project: str) -> str | None:
    """``2.13.0+cpu`` from pip's "Successfully installed ... torch-2.13.0+cpu"."""
    for name in progress.installed:
        match = re.fullmatch(rf"{re.escape(project)}-(\S+)", name)
        if match:
            return match.group(1)
    return None


@dataclass(frozen=True, slots=True)
class TorchInstall:
    """What the torch step did."""

    choice: TorchChoice  # the choice actually installed (the fallback where the index was unreachable)
    retry_index: bool  # the wanted CUDA build could not be installed: try its index again next time
    version: str | None  # the torch version now installed
    messages: tuple[str, ...]  # what the user was told


def install_torch(
    choice: TorchChoice,
    *,
    system: str,
    machine: str,
    driver: str | None,
    site_packages: Sequence[Path],
    pip: PipCommand,
    step: str,
    probe: Probe = probe_index,
    say: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
) -> TorchInstall:
    """Install ``choice`` (which must have a requirement), falling back to the default index."""
    assert choice.requirement is not None
    messages: list[str] = []

    def tell(text: str) -> None:
        messages.append(text)
        say(text)

    used = choice
    if choice.index_url:
        started = clock()
        why = probe(choice.index_url)
        if why is not None:
            used = fallback_choice(choice, f"{choice.index_url} cannot be reached ({why})")
            tell(f"{used.reason} [checked in {clock() - started:.1f} s]")
    before = installed_version(site_packages, "torch")
    before_build = build_of_installed(before, system, machine) if before else None
    if before and used.build and before_build != used.build:
        tell(f"replacing torch {before} with the {used.build} build")
        pip(["uninstall", "-y", "torch"], f"{step} removing torch {before}")
    args = ["install", used.requirement or ""]
    if used.index_url:
        args += ["--index-url", used.index_url]
    progress = pip(args, step)
    version = installed_from_progress(progress, "torch") or installed_version(site_packages, "torch")
    build = build_of_installed(version, system, machine) if version else None
    if version:
        kind = {None: "", CPU: " (the CPU build)"}.get(build, f" (the {build} CUDA build)")
        tell(f"torch {version} is installed{kind}")
    retry = False
    if used is not choice:
        warning = fallback_warning(choice, build, system, driver)
        if warning:
            tell(f"warning: {warning}")
            retry = True  # the wanted build could not be installed: its index is tried again next time
    return TorchInstall(used, retry, version, tuple(messages))
