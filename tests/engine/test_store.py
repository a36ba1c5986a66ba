"""Downloads against a real HTTP server on 127.0.0.1: ranges, dropped connections, bad checksums."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import store
from engine.errors import Cancelled, DiskFull, DownloadError, Reason
from engine.store import Downloader, DownloadProgress, RemoteFile, hf_repo_files, index_has_speech_encoder
from tests.fake_hub import FakeHub, serving

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, position-dependent so a bad resume shows
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server() -> Iterator[tuple[str, FakeHub]]:
    with serving(FakeHub()) as hub:
        yield hub.base, hub


def _paths(hub: FakeHub) -> list[tuple[str, str | None]]:
    """(path, Range header) of every GET so far."""
    return [(path, rng) for method, path, rng in hub.requests if method == "GET"]


def _downloader() -> Downloader:
    return Downloader(retries=3, backoff_s=0.0, timeout_s=10.0, sleep=lambda s: None)


def test_download_verifies_and_moves_into_place(server: tuple[str, FakeHub], tmp_path: Path) -> None:
    base, state = server
    state.files["/w/model.bin"] = PAYLOAD
    reports: list[DownloadProgress] = []
    (path,) = _downloader().download(
        [RemoteFile(f"{base}/w/model.bin", "sub/model.bin", len(PAYLOAD), SHA)], tmp_path, reports.append
    )
    assert path == tmp_path / "sub" / "model.bin"
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / "sub" / "model.bin.part").exists()
    assert reports[-1].done == len(PAYLOAD) and reports[-1].fraction == 1.0
    assert all(b.done >= a.done for a, b in zip(reports, reports[1:], strict=False))
    # A second run finds the finished file and fetches nothing.
    before = len(state.requests)
    _downloader().download([RemoteFile(f"{base}/w/model.bin", "sub/model.bin", len(PAYLOAD), SHA)], tmp_path)
    assert len(state.requests) == before


def test_dropped_connection_resumes_with_a_range_request(server: tuple[str, FakeHub], tmp_path: Path) -> None:
    base, state = server
    state.files["/f.bin"] = PAYLOAD
    state.drop_after["/f.bin"] = 300_000
    (path,) = _downloader().download([RemoteFile(f"{base}/f.bin", "f.bin", len(PAYLOAD), SHA)], tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert _paths(state) == [("/f.bin", None), ("/f.bin", "bytes=300000-")]


def test_restart_resumes_an_existing_part_file(server: tuple[str, FakeHub], tmp_path: Path) -> None:
    base, state = server
    state.files["/f.bin"] = PAYLOAD
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:123_456])  # left by an earlier run of the app
    _downloader().download([RemoteFile(f"{base}/f.bin", "f.bin", len(PAYLOAD), SHA)], tmp_path)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert _paths(state) == [("/f.bin", "bytes=123456-")]


def test_server_that_ignores_ranges_restarts_cleanly(server: tuple[str, FakeHub], tmp_path: Path) -> None:
    base, state = server
    state.files["/f.bin"] = PAYLOAD
    state.ignore_range = True
    (tmp_path / "f.bin.part").write_bytes(b"x" * 1000)
    _downloader().download([RemoteFile(f"{base}/f.bin", "f.bin", len(PAYLOAD), SHA)], tmp_path)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_unknown_size_file_resumes_too(server: tuple[str, FakeHub], tmp_path: Path) -> None:
    base, state = server
    state.files["/g_00500000"] = PAYLOAD
    state.drop_after["/g_00500000"] = 1000
    (path,) = _downloader().download([RemoteFile(f"{base}/g_00500000", "g_00500000")], tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert _paths(state)[-1] == ("/g_00500000", "bytes=1000-")


def test_wrong_checksum_is_retried_once_then_reported(server: tuple[str, FakeHub], tmp_path: Path) -> None:
    base, state = server
    state.files["/f.bin"] = PAYLOAD
    with pytest.raises(DownloadError, match="damaged") as info:
        _downloader().download([RemoteFile(f"{base}/f.bin", "f.bin", len(PAYLOAD), "0" * 64)], tmp_path)
    assert info.value.fix
    assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.part").exists()
    assert len(state.requests) == 2


def test_server_errors_back_off_then_give_up(server: tuple[str, FakeHub], tmp_path: Path) -> None:
    base, state = server
    state.files["/f.bin"] = PAYLOAD
    state.fail_status["/f.bin"] = [503, 503]
    delays: list[float] = []
    downloader = Downloader(retries=3, backoff_s=0.5, sleep=delays.append)
    downloader.download([RemoteFile(f"{base}/f.bin", "f.bin", len(PAYLOAD), SHA)], tmp_path)
    assert delays == [0.5, 1.0]  # exponential backoff, then success
    state.fail_status["/g.bin"] = [503] * 10
    state.files["/g.bin"] = PAYLOAD
    with pytest.raises(DownloadError, match="after 3 retries") as info:
        downloader.download([RemoteFile(f"{base}/g.bin", "g.bin", len(PAYLOAD), SHA)], tmp_path)
    assert info.value.reason is Reason.HTTP_STATUS and info.value.facts["status"] == 503  # the app words it


def test_not_found_is_not_retried(server: tuple[str, FakeHub], tmp_path: Path) -> None:
    base, state = server
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        _downloader().download([RemoteFile(f"{base}/missing", "missing")], tmp_path)
    assert len(state.requests) == 1
    assert info.value.reason is Reason.HTTP_STATUS
    assert info.value.facts["status"] == 404 and info.value.facts["host"] == "127.0.0.1"


def test_no_connection_is_a_fact_not_a_urlopen_repr(tmp_path: Path) -> None:
    """A refused connection (the same for a DNS failure) after the retries: reason and host as facts."""
    downloader = Downloader(retries=1, backoff_s=0.0, sleep=lambda _s: None)
    with pytest.raises(DownloadError) as info:
        downloader.download([RemoteFile("http://127.0.0.1:9/f.bin", "f.bin")], tmp_path)
    assert info.value.reason is Reason.UNREACHABLE and info.value.facts["host"] == "127.0.0.1"
    assert "<urlopen error" not in str(info.value)
    with pytest.raises(DownloadError) as listing:
        hf_repo_files(endpoint="http://127.0.0.1:9")
    assert listing.value.reason is Reason.UNREACHABLE and listing.value.facts["host"] == "127.0.0.1"


def test_cancel_keeps_the_part_for_resuming(server: tuple[str, FakeHub], tmp_path: Path) -> None:
    base, state = server
    state.files["/f.bin"] = PAYLOAD * 3
    calls = {"n": 0}

    def cancel_after_first_block() -> bool:
        calls["n"] += 1
        return calls["n"] > 1

    remote = RemoteFile(f"{base}/f.bin", "f.bin", 3 * len(PAYLOAD))
    with pytest.raises(Cancelled):
        _downloader().download([remote], tmp_path, should_cancel=cancel_after_first_block)
    part = tmp_path / "f.bin.part"
    assert 0 < part.stat().st_size < 3 * len(PAYLOAD)
    _downloader().download([remote], tmp_path)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD * 3
    assert _paths(state)[-1][1] == f"bytes={store.CHUNK_BYTES}-"


def test_not_enough_disk_space_is_refused_up_front(
    server: tuple[str, FakeHub], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, state = server
    monkeypatch.setattr(store.shutil, "disk_usage", lambda path: type("U", (), {"free": 10 * 2**30})())
    with pytest.raises(DiskFull, match="needs 18.2 GB") as info:
        _downloader().download([RemoteFile(f"{base}/big", "big", 18_200_000_000)], tmp_path)
    assert "Free some disk space" in (info.value.fix or "")
    assert _paths(state) == []


def test_hub_listing_picks_the_needed_files_with_checksums(server: tuple[str, FakeHub]) -> None:
    base, state = server
    listing = [
        {"type": "file", "path": "config.json", "size": 1490, "oid": "a" * 40},
        {
            "type": "file",
            "path": "model-00001-of-00002.safetensors",
            "size": 4980,
            "lfs": {"oid": "b" * 64, "size": 4980},
        },
        {"type": "file", "path": "model.safetensors.index.json", "size": 69100},
        {"type": "file", "path": "trainer_state.json", "size": 3080000},
        {"type": "file", "path": "training_args.bin", "size": 7000},
        {"type": "directory", "path": "images"},
        {"type": "file", "path": "tokenizer.json", "size": 9080000},
    ]
    state.files["/api/models/ICTNLP/Llama-3.1-8B-Omni/tree/main"] = json.dumps(listing).encode()
    files = hf_repo_files(endpoint=base)
    assert [f.dest for f in files] == [
        "config.json",
        "model-00001-of-00002.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
    ]
    shard = files[1]
    assert shard.sha256 == "b" * 64 and shard.size == 4980
    assert shard.url == f"{base}/ICTNLP/Llama-3.1-8B-Omni/resolve/main/model-00001-of-00002.safetensors"
    assert files[0].sha256 is None  # git blob ids are not sha256 of the content


def test_hub_listing_without_index_is_an_error(server: tuple[str, FakeHub]) -> None:
    base, state = server
    state.files["/api/models/ICTNLP/Llama-3.1-8B-Omni/tree/main"] = b'[{"type":"file","path":"config.json"}]'
    with pytest.raises(DownloadError, match=r"model\.safetensors\.index\.json"):
        hf_repo_files(endpoint=base)


def test_whisper_is_only_needed_when_the_shards_lack_it(tmp_path: Path) -> None:
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"model.layers.0.mlp.up_proj.weight": "a"}}))
    assert not index_has_speech_encoder(index)
    index.write_text(json.dumps({"weight_map": {"model.speech_encoder.conv1.weight": "a"}}))
    assert index_has_speech_encoder(index)
    assert store.whisper_file().dest == "models/speech_encoder/large-v3.pt"
    assert store.whisper_file().url.endswith(f"/{store.WHISPER_SHA256}/large-v3.pt")


def test_unit_model_files_are_checksum_verified(server: tuple[str, FakeHub], tmp_path: Path) -> None:
    base, state = server
    files = store.unit_model_files(base + "/hubert")
    assert [f.dest for f in files] == [store.HUBERT_FILE_NAME, store.KMEANS_FILE_NAME]
    assert all(f.sha256 and len(f.sha256) == 64 for f in files)
    assert store.unit_model_files()[0].url == f"{store.UNIT_MODEL_BASE_URL}/{store.HUBERT_FILE_NAME}"
    paths = store.default_unit_model_paths(tmp_path)
    for f in files:
        state.files[f"/hubert/{f.dest}"] = PAYLOAD  # not the published bytes
    with pytest.raises(DownloadError, match="damaged"):
        _downloader().download(files, paths.hubert.parent)
    assert not paths.complete
    # The same download with the served bytes' checksum lands where fine-tuning looks for it.
    honest = [RemoteFile(f.url, f.dest, None, SHA) for f in files]
    _downloader().download(honest, paths.hubert.parent)
    assert paths.complete and paths.kmeans.read_bytes() == PAYLOAD


def test_fetch_units_command_reports_a_bad_download_as_bad_input(
    server: tuple[str, FakeHub], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from engine.__main__ import main
    from engine.finetune import cli

    base, state = server
    for f in store.unit_model_files():
        state.files[f"/hubert/{f.dest}"] = PAYLOAD  # not the published bytes: the checksum must catch it
    out = io.StringIO()
    monkeypatch.setattr(cli.sys, "stdout", out)
    monkeypatch.setattr(cli.sys, "stderr", io.StringIO())
    code = main(["finetune", "fetch-units", "--dir", str(tmp_path), "--base-url", base + "/hubert"])
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert code == 2 and events[-1]["event"] == "error" and events[-1]["kind"] == "download"
    assert any(e["event"] == "download" for e in events)
    assert not store.unit_model_paths(tmp_path).complete  # a damaged file never lands in place
