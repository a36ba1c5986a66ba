"""Planning and running the download of a complete model set (Omni checkpoint, Whisper if the
shards lack it, vocoder) with progress over the whole set. Qt-free: the setup wizard runs it in the
background, and tests point every address at 127.0.0.1."""

from __future__ import annotations

import dataclasses
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine import errors as engine_errors
from engine.store import (
    HF_ENDPOINT,
    OMNI_REPO,
    OMNI_REVISION,
    OMNI_WEIGHT_SUFFIX,
    USER_AGENT,
    VOCODER_BASE_URL,
    VOCODER_FILES,
    Downloader,
    DownloadProgress,
    ModelPaths,
    RemoteFile,
    hf_repo_files,
    index_has_speech_encoder,
    vocoder_files,
    whisper_file,
)

logger = logging.getLogger(__name__)

INDEX_NAME = "model.safetensors.index.json"
# The catalogue: the official release's file sizes, for every figure shown before the hub's own
# listing answers (the README, the wizard's first page, a model not downloaded yet; see
# engine.preflight.model_size), and for the progress bar when a server publishes none.
OMNI_SHARD_BYTES = (4_980_000_000, 5_000_000_000, 4_920_000_000, 3_340_000_000)  # Whisper encoder inside
OMNI_SMALL_FILES_BYTES = 9_200_000  # tokenizer.json (9.1 MB) and five small JSON files
WHISPER_SIZE_BYTES = 3_090_000_000  # large-v3.pt, fetched only when the shards lack the encoder
VOCODER_CHECKPOINT_BYTES = 170_000_000  # g_00500000 (its config.json is a few hundred bytes)
HEAD_TIMEOUT_S = 15.0


def catalogue_bytes(*, needs_whisper: bool = False) -> int:
    """Bytes of the official model set's files: the Omni checkpoint, Whisper if needed, the vocoder."""
    whisper = WHISPER_SIZE_BYTES if needs_whisper else 0
    return sum(OMNI_SHARD_BYTES) + OMNI_SMALL_FILES_BYTES + whisper + VOCODER_CHECKPOINT_BYTES


@dataclass(frozen=True, slots=True)
class DownloadSource:
    """Where the files come from (tests point every address at 127.0.0.1)."""

    endpoint: str = HF_ENDPOINT
    repo_id: str = OMNI_REPO
    revision: str = OMNI_REVISION
    whisper: RemoteFile = field(default_factory=whisper_file)
    vocoder_base_url: str = VOCODER_BASE_URL


@dataclass(frozen=True, slots=True)
class DownloadPlan:
    """Every file of one model set, in download order, with the bytes each is expected to take."""

    paths: ModelPaths
    model_files: tuple[RemoteFile, ...]  # into paths.model_dir (the index first)
    vocoder_files: tuple[RemoteFile, ...]  # into paths.vocoder_dir
    expected_sizes: tuple[int, ...]  # bytes, model files then vocoder files
    needs_whisper: bool

    @property
    def n_files(self) -> int:
        return len(self.model_files) + len(self.vocoder_files)

    @property
    def total_bytes(self) -> int:
        return sum(self.expected_sizes)

    def groups(self) -> tuple[tuple[tuple[RemoteFile, ...], Path], ...]:
        return ((self.model_files, self.paths.model_dir), (self.vocoder_files, self.paths.vocoder_dir))

    def missing_bytes(self) -> int:
        """Bytes still to fetch: complete files count nothing, ``.part`` files count what they lack."""
        missing = 0
        remotes = [(r, d) for files, d in self.groups() for r in files]
        for (remote, folder), expected in zip(remotes, self.expected_sizes, strict=True):
            final = folder / remote.dest
            if final.is_file() and (remote.size is None or final.stat().st_size == remote.size):
                continue
            part = final.with_name(final.name + ".part")
            missing += max(0, expected - (part.stat().st_size if part.is_file() else 0))
        return missing


def remote_size(url: str) -> int | None:
    """Content-Length of a HEAD request, or None when the server does not say."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=HEAD_TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        logger.info("HEAD %s failed (%s); using the usual size", url, exc)
        return None
    return int(length) if length and length.isdigit() else None


def _expected_size(remote: RemoteFile, source: DownloadSource) -> int:
    if remote.size is not None:
        return remote.size
    size = remote_size(remote.url)
    if size is not None:
        return size
    if remote.url == source.whisper.url:
        return WHISPER_SIZE_BYTES
    return VOCODER_CHECKPOINT_BYTES if remote.dest == VOCODER_FILES[0] else 0


def plan_download(
    source: DownloadSource, paths: ModelPaths, downloader: Downloader, should_cancel: Callable[[], bool]
) -> DownloadPlan:
    """List the hub, fetch the small index file, and decide whether Whisper is needed (network)."""
    listed = hf_repo_files(source.repo_id, source.revision, source.endpoint)
    index = next(f for f in listed if f.dest == INDEX_NAME)  # hf_repo_files guarantees it
    downloader.download([index], paths.model_dir, should_cancel=should_cancel)
    index_path = paths.model_dir / INDEX_NAME
    try:
        needs_whisper = not index_has_speech_encoder(index_path)
    except (OSError, ValueError, AttributeError) as exc:
        index_path.unlink(missing_ok=True)  # so that Retry fetches it again
        raise engine_errors.DownloadError(
            f"The model's index file could not be read: {exc}", path=index_path, fix="Try again."
        ) from exc
    others = sorted((f for f in listed if f is not index), key=lambda f: (f.dest.endswith(OMNI_WEIGHT_SUFFIX), f.dest))
    model = (index, *others, *([source.whisper] if needs_whisper else []))
    vocoder = tuple(vocoder_files(source.vocoder_base_url))
    sizes = tuple(_expected_size(remote, source) for remote in (*model, *vocoder))
    return DownloadPlan(paths, model, vocoder, sizes, needs_whisper)


def run_download(
    plan: DownloadPlan,
    downloader: Downloader,
    on_progress: Callable[[DownloadProgress], None],
    should_cancel: Callable[[], bool],
) -> ModelPaths:
    """Download every file of ``plan``; progress counts files and bytes across the whole set."""
    first_file = 0
    bytes_before = 0
    for files, folder in plan.groups():
        relay = _SetProgress(plan, first_file, bytes_before, on_progress)
        paths = downloader.download(files, folder, relay, should_cancel)
        first_file += len(files)
        bytes_before += sum(path.stat().st_size for path in paths)
    return plan.paths


@dataclass(frozen=True, slots=True)
class _SetProgress:
    """Turns one ``Downloader.download`` call's progress into progress over the whole set."""

    plan: DownloadPlan
    first_file: int  # index of this call's first file in the set
    bytes_before: int  # bytes of the set's files before this call's
    on_progress: Callable[[DownloadProgress], None]

    def __call__(self, p: DownloadProgress) -> None:
        total = self.plan.total_bytes
        done = self.bytes_before + p.done
        eta = (total - done) / p.speed_bps if p.speed_bps > 0 and total > done else None
        index = self.first_file + p.file_index
        expected = p.file_total if p.file_total is not None else (self.plan.expected_sizes[index] or None)
        self.on_progress(
            dataclasses.replace(
                p, file_index=index, n_files=self.plan.n_files, file_total=expected, done=done, total=total, eta_s=eta
            )
        )
