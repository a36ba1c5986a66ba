"""Model locations and robust downloads.

A download writes ``NAME.part`` next to the destination, resumes it with HTTP range requests after
a dropped connection or a restart, retries with exponential backoff, verifies size and sha256, and
only then renames it into place (atomic on the same file system). Cancelling keeps the ``.part``
so the next attempt resumes. Free disk space is checked before anything is fetched.

Only the standard library's HTTP client is used, so tests run it against a server on 127.0.0.1.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import logging
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.errors import Cancelled, DiskFull, DownloadError, Reason
from engine.paths import models_dir
from engine.version import __version__
from engine.vocoder.defaults import CHECKPOINT_FILENAME, CONFIG_FILENAME

logger = logging.getLogger(__name__)

HF_ENDPOINT = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
OMNI_REPO = "ICTNLP/Llama-3.1-8B-Omni"
OMNI_REVISION = "main"
# Files of the Omni repo the app needs (trainer state, training args and images are skipped:
# training_args.bin is a pickle and is never opened).
OMNI_PATTERNS = (
    "README.md",  # the model card: its front matter names the licence (Help → About shows it)
    "config.json",
    "generation_config.json",
    "model.safetensors.index.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
)
OMNI_WEIGHT_SUFFIX = ".safetensors"
WHISPER_URL = (
    "https://openaipublic.azureedge.net/main/whisper/models/"
    "e5b1a55b89c1367dacf97e3e19bfd829a01529dbfdeefa8caeb59b3f1b81dadb/large-v3.pt"
)
WHISPER_SHA256 = "e5b1a55b89c1367dacf97e3e19bfd829a01529dbfdeefa8caeb59b3f1b81dadb"
# Where the Omni config's relative `speech_encoder` path points, inside the model folder.
WHISPER_RELATIVE_PATH = "models/speech_encoder/large-v3.pt"
VOCODER_BASE_URL = (
    "https://dl.fbaipublicfiles.com/fairseq/speech_to_speech/vocoder/code_hifigan/"
    "mhubert_vp_en_es_fr_it3_400k_layer11_km1000_lj"
)
VOCODER_FILES = (CHECKPOINT_FILENAME, CONFIG_FILENAME)
# The speech-unit extractor for fine-tuning stage 2 (mHuBERT-base + its layer-11 km1000 k-means),
# as linked from fairseq's examples/speech_to_speech/docs/textless_s2st_real_data.md. Checksums as
# published by facebookresearch/textlesslib (textless/checkpoint_manager/__init__.py).
UNIT_MODEL_BASE_URL = "https://dl.fbaipublicfiles.com/hubert"
HUBERT_FILE_NAME = "mhubert_base_vp_en_es_fr_it3.pt"
HUBERT_SHA256 = "23527cd6311a6617bfa199f574e2eed478cd6a58a634f4007165c10ec0019832"
KMEANS_FILE_NAME = "mhubert_base_vp_en_es_fr_it3_L11_km1000.bin"
KMEANS_SHA256 = "c70f5416c38044d0c20e33fdeedf4533974a8ac4029985cdef3b755038381a0b"

OMNI_DIR_NAME = "Llama-3.1-8B-Omni"
VOCODER_DIR_NAME = "unit-vocoder"
UNIT_MODEL_DIR_NAME = "mhubert"

CHUNK_BYTES = 1 << 20
DISK_MARGIN_BYTES = 512 * 1024 * 1024
PROGRESS_INTERVAL_S = 0.2
USER_AGENT = f"OmniTalk/{__version__}"


@dataclass(frozen=True, slots=True)
class RemoteFile:
    url: str
    dest: str  # path relative to the download's target folder
    size: int | None = None  # bytes, when the source publishes it
    sha256: str | None = None  # hex digest, when the source publishes it


@dataclass(frozen=True, slots=True)
class DownloadProgress:
    file: str
    file_index: int  # 0-based
    n_files: int
    file_done: int  # bytes of this file on disk
    file_total: int | None
    done: int  # bytes of all files
    total: int | None
    speed_bps: float
    eta_s: float | None

    @property
    def fraction(self) -> float | None:
        return self.done / self.total if self.total else None


ProgressFn = Callable[[DownloadProgress], None]
CancelFn = Callable[[], bool]


@dataclass(frozen=True, slots=True)
class ModelPaths:
    """Where a complete model set lives (what the engine's LoadModel needs)."""

    model_dir: Path
    vocoder_dir: Path
    speech_encoder: Path | None = None  # None: inside the Omni shards or at the config's path


def default_model_paths(root: Path | None = None) -> ModelPaths:
    root = root or models_dir()
    return ModelPaths(model_dir=root / OMNI_DIR_NAME, vocoder_dir=root / VOCODER_DIR_NAME)


@dataclass(frozen=True, slots=True)
class UnitModelPaths:
    """The speech-unit extractor fine-tuning stage 2 needs (engine.finetune.units)."""

    hubert: Path
    kmeans: Path

    @property
    def complete(self) -> bool:
        return self.hubert.is_file() and self.kmeans.is_file()


def unit_model_paths(folder: Path) -> UnitModelPaths:
    return UnitModelPaths(hubert=folder / HUBERT_FILE_NAME, kmeans=folder / KMEANS_FILE_NAME)


def default_unit_model_paths(root: Path | None = None) -> UnitModelPaths:
    """``<models>/mhubert/``: where ``finetune fetch-units`` puts the files and training looks."""
    return unit_model_paths((root or models_dir()) / UNIT_MODEL_DIR_NAME)


class _Transient(Exception):
    """A failure worth retrying (network hiccup, dropped connection, 5xx); ``status``: the HTTP one."""

    def __init__(self, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.status = status


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).hostname or url


def unreachable(url: str, detail: object, message: str, path: Path | None = None) -> DownloadError:
    """DownloadError(UNREACHABLE): no connection, name not resolved, refused, timed out."""
    return DownloadError(
        f"{message} from {url}: {detail}",
        path=path,
        fix="Check the internet connection, then try again.",
        reason=Reason.UNREACHABLE,
        facts={"host": _host(url), "url": url, "detail": str(detail)},
    )


def http_status_error(url: str, status: int, message: str, path: Path | None = None) -> DownloadError:
    """DownloadError(HTTP_STATUS): the server answered, with an error status."""
    return DownloadError(
        f"{message} (HTTP {status} from {url}).",
        path=path,
        fix="Try again later; if it persists the file may have moved.",
        reason=Reason.HTTP_STATUS,
        facts={"host": _host(url), "url": url, "status": status},
    )


class Downloader:
    """Downloads a list of files into a folder; see the module docstring for the guarantees."""

    def __init__(
        self,
        *,
        retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        timeout_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self._sleep = sleep

    # ------------------------------------------------------------------ public

    def download(
        self,
        files: Sequence[RemoteFile],
        target_dir: Path,
        on_progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
    ) -> list[Path]:
        target_dir.mkdir(parents=True, exist_ok=True)
        self._check_disk(files, target_dir)
        known_total = None if any(f.size is None for f in files) else sum(f.size or 0 for f in files)
        tracker = _Tracker(len(files), known_total, on_progress)
        paths = []
        for index, remote in enumerate(files):
            tracker.start_file(index, remote)
            paths.append(self._download_one(remote, target_dir, tracker, should_cancel or (lambda: False)))
            tracker.finish_file()
        return paths

    # ----------------------------------------------------------------- helpers

    def _check_disk(self, files: Sequence[RemoteFile], target_dir: Path) -> None:
        needed = 0
        for remote in files:
            final = target_dir / remote.dest
            if remote.size is None or (final.exists() and final.stat().st_size == remote.size):
                continue
            part = _part_path(final)
            needed += remote.size - (part.stat().st_size if part.exists() else 0)
        free = shutil.disk_usage(target_dir).free
        if needed and free < needed + DISK_MARGIN_BYTES:
            raise DiskFull(
                f"The download needs {needed / 1e9:.1f} GB but only {free / 1e9:.1f} GB is free.",
                path=target_dir,
                fix="Free some disk space or choose a folder on another drive.",
            )

    def _download_one(self, remote: RemoteFile, target_dir: Path, tracker: _Tracker, cancel: CancelFn) -> Path:
        final = target_dir / remote.dest
        if final.exists() and (remote.size is None or final.stat().st_size == remote.size):
            tracker.advance_to(final.stat().st_size)
            return final  # verified before it was moved into place
        final.parent.mkdir(parents=True, exist_ok=True)
        part = _part_path(final)
        checksum_failures = 0
        attempt = 0
        while True:
            try:
                self._fetch_into(remote, part, tracker, cancel)
                self._verify(remote, part)
                os.replace(part, final)
                logger.info("Downloaded %s -> %s", remote.url, final)
                return final
            except _Transient as exc:
                attempt += 1
                if attempt > self.retries:
                    message = f"Download of {final.name} failed after {self.retries} retries"
                    if exc.status is not None:
                        raise http_status_error(remote.url, exc.status, message, final) from exc
                    raise unreachable(remote.url, exc, message, final) from exc
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
                logger.warning("Download of %s interrupted (%s); retry %d in %.1f s", remote.url, exc, attempt, delay)
                self._sleep(delay)
            except _ChecksumMismatch as exc:
                part.unlink(missing_ok=True)
                checksum_failures += 1
                tracker.advance_to(0)
                if checksum_failures >= 2:
                    raise DownloadError(
                        f"The downloaded file is damaged: {exc}",
                        path=final,
                        fix="Try again later; if it keeps failing the server's copy may have changed.",
                    ) from exc
                logger.warning("Checksum mismatch for %s (%s); downloading it again", remote.url, exc)

    def _fetch_into(self, remote: RemoteFile, part: Path, tracker: _Tracker, cancel: CancelFn) -> None:
        have = part.stat().st_size if part.exists() else 0
        if remote.size is not None and have == remote.size:
            tracker.advance_to(have)
            return
        if remote.size is not None and have > remote.size:
            part.unlink()
            have = 0
        headers = {"User-Agent": USER_AGENT}
        if have:
            headers["Range"] = f"bytes={have}-"
        request = urllib.request.Request(remote.url, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout_s)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # the part already holds the whole file
                tracker.advance_to(have)
                return
            if exc.code >= 500 or exc.code == 429:
                raise _Transient(f"HTTP {exc.code}", exc.code) from exc
            raise http_status_error(remote.url, exc.code, "The server refused the download", part) from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise _Transient(str(exc.reason) if isinstance(exc, urllib.error.URLError) else str(exc)) from exc
        with response:
            status = response.status
            if have and status != 206:
                have = 0  # server ignored the range: start over
            tracker.advance_to(have)
            try:
                with open(part, "ab" if have else "wb") as out:
                    while True:
                        if cancel():
                            raise Cancelled("Download cancelled.", path=part)
                        block = response.read(CHUNK_BYTES)
                        if not block:
                            break
                        out.write(block)
                        have += len(block)
                        tracker.advance_to(have)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise DiskFull(
                        "The disk filled up during the download.",
                        path=part,
                        fix="Free some disk space; the download resumes where it stopped.",
                    ) from exc
                raise _Transient(str(exc)) from exc
            except (TimeoutError, http.client.HTTPException) as exc:
                raise _Transient(str(exc)) from exc
        expected = remote.size if remote.size is not None else _content_total(response, have, status)
        if expected is not None and have < expected:
            raise _Transient(f"connection closed after {have} of {expected} bytes")

    @staticmethod
    def _verify(remote: RemoteFile, part: Path) -> None:
        size = part.stat().st_size
        if remote.size is not None and size != remote.size:
            raise _ChecksumMismatch(f"size {size} bytes, expected {remote.size}")
        if remote.sha256:
            digest = sha256_file(part)
            if digest != remote.sha256.lower():
                raise _ChecksumMismatch(f"sha256 {digest}, expected {remote.sha256}")


class _ChecksumMismatch(Exception):
    pass


def _content_total(response: http.client.HTTPResponse, have: int, status: int) -> int | None:
    """Total file size announced by the server (Content-Range for 206, Content-Length for 200)."""
    if status == 206:
        content_range = response.headers.get("Content-Range", "")
        total = content_range.rpartition("/")[2]
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _part_path(final: Path) -> Path:
    return final.with_name(final.name + ".part")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


class _Tracker:
    """Turns byte counts into throttled DownloadProgress reports with speed and time left."""

    def __init__(self, n_files: int, total: int | None, on_progress: ProgressFn | None) -> None:
        self.n_files = n_files
        self.total = total
        self.on_progress = on_progress
        self.finished_bytes = 0
        self.index = 0
        self.remote: RemoteFile | None = None
        self.file_done = 0
        self.started = time.monotonic()
        self.fetched = 0  # bytes received in this session (speed must not count resumed bytes)
        self.last_report = 0.0

    def start_file(self, index: int, remote: RemoteFile) -> None:
        self.index, self.remote, self.file_done = index, remote, 0
        self._report(force=True)

    def advance_to(self, file_done: int) -> None:
        if file_done > self.file_done:
            self.fetched += file_done - self.file_done
        self.file_done = file_done
        self._report()

    def finish_file(self) -> None:
        self.finished_bytes += self.file_done
        self._report(force=True, finished=True)

    def _report(self, force: bool = False, finished: bool = False) -> None:
        if self.on_progress is None or self.remote is None:
            return
        now = time.monotonic()
        if not force and now - self.last_report < PROGRESS_INTERVAL_S:
            return
        self.last_report = now
        done = self.finished_bytes + (0 if finished else self.file_done)
        speed = self.fetched / max(now - self.started, 1e-6)
        eta = (self.total - done) / speed if self.total is not None and speed > 0 else None
        self.on_progress(
            DownloadProgress(
                file=self.remote.dest,
                file_index=self.index,
                n_files=self.n_files,
                file_done=self.file_done,
                file_total=self.remote.size,
                done=done,
                total=self.total,
                speed_bps=speed,
                eta_s=eta,
            )
        )


# --------------------------------------------------------------------------- what to download


def _get_json(url: str, timeout_s: float = 30.0) -> object:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        raise http_status_error(url, exc.code, "The model hub refused the file list") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        detail = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise unreachable(url, detail, "Could not list the model's files") from exc
    except ValueError as exc:  # not JSON (a captive portal's page, a proxy's error page)
        raise DownloadError(
            f"The model hub's file list is not JSON ({exc}) at {url}.",
            fix="Try again later; a proxy or hotel login page can cause this.",
            facts={"host": _host(url), "url": url},
        ) from exc


def hf_repo_files(
    repo_id: str = OMNI_REPO, revision: str = OMNI_REVISION, endpoint: str = HF_ENDPOINT
) -> list[RemoteFile]:
    """The Omni checkpoint's files on the Hugging Face Hub, with sizes and (LFS) sha256 checksums."""
    base = endpoint.rstrip("/")
    listing = _get_json(f"{base}/api/models/{repo_id}/tree/{urllib.parse.quote(revision)}?recursive=true")
    if not isinstance(listing, list):
        raise DownloadError("Unexpected answer from the model hub.", fix="Try again later.")
    files = []
    for entry in listing:
        if not isinstance(entry, dict) or entry.get("type") != "file":
            continue
        path = str(entry.get("path", ""))
        if path not in OMNI_PATTERNS and not path.endswith(OMNI_WEIGHT_SUFFIX):
            continue
        lfs = entry.get("lfs") if isinstance(entry.get("lfs"), dict) else None
        files.append(
            RemoteFile(
                url=f"{base}/{repo_id}/resolve/{urllib.parse.quote(revision)}/{urllib.parse.quote(path)}",
                dest=path,
                size=int(entry["size"]) if "size" in entry else None,
                sha256=str(lfs["oid"]) if lfs and "oid" in lfs else None,
            )
        )
    missing = [name for name in ("config.json", "model.safetensors.index.json") if name not in {f.dest for f in files}]
    if missing:
        raise DownloadError(f"The model repository lacks {', '.join(missing)}.", fix="Report this to OmniTalk.")
    return files


def index_has_speech_encoder(index_path: Path) -> bool:
    """True when the Omni shards carry the Whisper encoder (``model.speech_encoder.*`` keys)."""
    weight_map = json.loads(index_path.read_text(encoding="utf-8")).get("weight_map", {})
    return any(key.startswith("model.speech_encoder.") for key in weight_map)


def whisper_file() -> RemoteFile:
    return RemoteFile(url=WHISPER_URL, dest=WHISPER_RELATIVE_PATH, sha256=WHISPER_SHA256)


def vocoder_files(base_url: str = VOCODER_BASE_URL) -> list[RemoteFile]:
    return [RemoteFile(url=f"{base_url.rstrip('/')}/{name}", dest=name) for name in VOCODER_FILES]


def unit_model_files(base_url: str = UNIT_MODEL_BASE_URL) -> list[RemoteFile]:
    """mHuBERT-base and its km1000 k-means, checksum-verified (download into the unit-model folder)."""
    base = base_url.rstrip("/")
    return [
        RemoteFile(url=f"{base}/{HUBERT_FILE_NAME}", dest=HUBERT_FILE_NAME, sha256=HUBERT_SHA256),
        RemoteFile(url=f"{base}/{KMEANS_FILE_NAME}", dest=KMEANS_FILE_NAME, sha256=KMEANS_SHA256),
    ]
