"""The first-run wizard against a real HTTP server on 127.0.0.1 that looks like the model hub."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtWidgets import QApplication, QWizard
from pytestqt.qtbot import QtBot

from app.setup_wizard import (
    PAGE_CHOICE,
    PAGE_DONE,
    PAGE_EXISTING,
    PAGE_LICENCE,
    SetupWizard,
    progress_text,
    time_left,
)
from app.tasks import wait_for_background
from app.widgets import ERROR_COLOUR
from engine.gpu import GpuInfo
from engine.model_download import INDEX_NAME, DownloadSource
from engine.paths import models_dir
from engine.preflight import SystemInfo
from engine.store import (
    CHUNK_BYTES,
    OMNI_DIR_NAME,
    OMNI_REPO,
    VOCODER_DIR_NAME,
    WHISPER_RELATIVE_PATH,
    Downloader,
    DownloadProgress,
    RemoteFile,
)
from tests.fake_hub import FakeHub, serving, sha256_hex

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
GB = 1_000_000_000
TREE = f"/api/models/{OMNI_REPO}/tree/main"
RESOLVE = f"/{OMNI_REPO}/resolve/main/"
SHARD_1 = "model-00001-of-00002.safetensors"
SHARD_2 = "model-00002-of-00002.safetensors"
BIG_SHARD_BYTES = 3 * CHUNK_BYTES  # the cancel test pauses the server after the first block
SMALL_FILE_BYTES = 300_000


def _bytes(seed: int, n: int) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (n // 32) + b"x" * (n % 32)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    hub = FakeHub()
    index = {"metadata": {"total_size": 1}, "weight_map": {"model.layers.0.mlp.up_proj.weight": SHARD_1}}
    repo_files = {
        "config.json": b'{"model_type": "omni_speech2s_llama"}',
        "generation_config.json": b"{}",
        INDEX_NAME: json.dumps(index).encode(),
        "special_tokens_map.json": b"{}",
        "tokenizer.json": _bytes(1, SMALL_FILE_BYTES),
        "tokenizer_config.json": b"{}",
        SHARD_1: _bytes(2, BIG_SHARD_BYTES),
        SHARD_2: _bytes(3, SMALL_FILE_BYTES),
    }
    hub.files = {RESOLVE + name: body for name, body in repo_files.items()}
    hub.files["/whisper/large-v3.pt"] = _bytes(4, SMALL_FILE_BYTES)
    hub.files["/vocoder/g_00500000"] = _bytes(5, SMALL_FILE_BYTES)
    hub.files["/vocoder/config.json"] = b'{"resblock": "1"}'
    hub.listings[TREE] = RESOLVE
    with serving(hub):
        yield hub
        for gate in hub.gates.values():
            gate.set()
        assert wait_for_background(30_000)


def _source(hub: FakeHub) -> DownloadSource:
    whisper = hub.files["/whisper/large-v3.pt"]
    return DownloadSource(
        endpoint=hub.base,
        whisper=RemoteFile(
            url=hub.base + "/whisper/large-v3.pt", dest=WHISPER_RELATIVE_PATH, sha256=sha256_hex(whisper)
        ),
        vocoder_base_url=hub.base + "/vocoder",
    )


def _fast_downloader() -> Downloader:
    return Downloader(retries=2, backoff_s=0.0, timeout_s=10.0, sleep=lambda _s: None)


def _wizard(qtbot: QtBot, hub: FakeHub, **kwargs: object) -> SetupWizard:
    kwargs.setdefault("probe", lambda: SystemInfo((GpuInfo(0, "NVIDIA GeForce RTX 4060", 8 * GB, 7 * GB),), 30 * GB))
    wizard = SetupWizard(source=_source(hub), downloader_factory=_fast_downloader, **kwargs)  # type: ignore[arg-type]
    qtbot.addWidget(wizard)
    wizard.show()
    qtbot.waitExposed(wizard)
    qtbot.waitUntil(lambda: wizard.system is not None, timeout=30_000)
    return wizard


def _next(wizard: SetupWizard) -> None:
    button = wizard.button(QWizard.WizardButton.NextButton)
    assert button.isEnabled(), f"Next is disabled on page {wizard.currentId()}"
    button.click()


def _to_check_page(qtbot: QtBot, wizard: SetupWizard) -> None:
    assert wizard.currentId() == PAGE_CHOICE
    _next(wizard)
    assert wizard.currentId() == PAGE_LICENCE
    wizard.licence_page.accept_check.setChecked(True)
    with qtbot.waitSignal(wizard.checkFinished, timeout=20_000) as checked:
        _next(wizard)
    assert checked.args == [True], wizard.check_page.disk_label.text()


def _shot(wizard: SetupWizard, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    QApplication.processEvents()  # let pending layout requests (labels that grew) run first
    assert wizard.grab().toImage().save(str(ARTIFACTS / f"wizard_{name}.png"))


def test_licence_must_be_accepted_before_next(qtbot: QtBot, hub: FakeHub) -> None:
    wizard = _wizard(qtbot, hub)
    _shot(wizard, "1_choice")
    _next(wizard)
    assert wizard.currentId() == PAGE_LICENCE
    next_button = wizard.button(QWizard.WizardButton.NextButton)
    assert not next_button.isEnabled()
    assert "non-commercial" in wizard.licence_page.text.toPlainText()
    assert "Llama 3.1 Community License" in wizard.licence_page.text.toPlainText()
    _shot(wizard, "2_licence")
    wizard.licence_page.accept_check.setChecked(True)
    assert next_button.isEnabled() and wizard.licence_accepted()
    wizard.licence_page.accept_check.setChecked(False)
    assert not next_button.isEnabled() and not wizard.licence_accepted()


def test_full_download_lands_files_in_the_right_folders(qtbot: QtBot, hub: FakeHub) -> None:
    hub.drop_once.add(RESOLVE + SHARD_2)  # a dropped connection on the way: resumed with a Range request
    wizard = _wizard(qtbot, hub)
    _to_check_page(qtbot, wizard)
    check_text = wizard.check_page.disk_label.text()
    assert "11 files, including the Whisper speech encoder" in check_text and "free on that drive" in check_text
    gpu_text = wizard.check_page.gpu_label.text()
    assert "NVIDIA GeForce RTX 4060 with 7.0 GB free of 8.0 GB" in gpu_text
    # The 4-bit stack (vocoder included, 512-token answers) fits an 8 GB card with a desktop on it.
    assert "Recommended precision: 4-bit (nf4), needs about 6.8 GB." in gpu_text and "more than" not in gpu_text
    _shot(wizard, "3_check")

    reports: list[DownloadProgress] = []
    wizard.downloadProgressed.connect(reports.append)
    with qtbot.waitSignal(wizard.downloadFinished, timeout=30_000) as finished:
        _next(wizard)
    assert finished.args == [True], wizard.download_page.message_label.text()
    _shot(wizard, "4_download_done")

    root = models_dir()  # under this test's OMNITALK_HOME
    model_dir, vocoder_dir = root / OMNI_DIR_NAME, root / VOCODER_DIR_NAME
    for url_path, body in hub.files.items():
        if url_path.startswith(RESOLVE):
            assert (model_dir / url_path[len(RESOLVE) :]).read_bytes() == body
    assert (model_dir / WHISPER_RELATIVE_PATH).read_bytes() == hub.files["/whisper/large-v3.pt"]
    assert (vocoder_dir / "g_00500000").read_bytes() == hub.files["/vocoder/g_00500000"]
    assert (vocoder_dir / "config.json").read_bytes() == hub.files["/vocoder/config.json"]
    assert not (model_dir / "trainer_state.json").exists()
    assert not list(root.rglob("*.part"))
    assert ("GET", RESOLVE + SHARD_2, f"bytes={SMALL_FILE_BYTES // 2}-") in hub.requests  # resumed

    assert reports and {r.n_files for r in reports} == {11}
    assert reports[-1].done == reports[-1].total == sum(len(b) for b in hub.files.values())
    assert [r.file_index for r in reports] == sorted(r.file_index for r in reports)
    assert {r.file for r in reports} >= {SHARD_1, WHISPER_RELATIVE_PATH, "g_00500000"}

    _next(wizard)
    assert wizard.currentId() == PAGE_DONE
    assert str(model_dir) in wizard.done_page.summary.text()
    _shot(wizard, "5_done")
    assert wizard.button(QWizard.WizardButton.FinishButton).isVisible()
    wizard.button(QWizard.WizardButton.FinishButton).click()
    assert wizard.result() == QWizard.DialogCode.Accepted
    paths = wizard.model_paths()
    assert (paths.model_dir, paths.vocoder_dir, paths.speech_encoder) == (model_dir, vocoder_dir, None)
    assert wizard.licence_accepted() and wizard.recommended_quant() == "nf4"


def test_shards_with_the_encoder_skip_whisper(qtbot: QtBot, hub: FakeHub) -> None:
    index = {"weight_map": {"model.speech_encoder.conv1.weight": SHARD_1, "lm_head.weight": SHARD_2}}
    hub.files[RESOLVE + INDEX_NAME] = json.dumps(index).encode()
    wizard = _wizard(qtbot, hub)
    _to_check_page(qtbot, wizard)
    assert "10 files," in wizard.check_page.disk_label.text() and "Whisper" not in wizard.check_page.disk_label.text()
    with qtbot.waitSignal(wizard.downloadFinished, timeout=30_000) as finished:
        _next(wizard)
    assert finished.args == [True]
    assert not (models_dir() / OMNI_DIR_NAME / WHISPER_RELATIVE_PATH).exists()
    assert not any(path == "/whisper/large-v3.pt" for _m, path, _r in hub.requests)


def test_not_enough_disk_space_blocks_next(qtbot: QtBot, hub: FakeHub) -> None:
    wizard = _wizard(qtbot, hub, disk_free=lambda _path: 10_000_000)
    _next(wizard)
    wizard.licence_page.accept_check.setChecked(True)
    with qtbot.waitSignal(wizard.checkFinished, timeout=20_000) as checked:
        _next(wizard)
    assert checked.args == [False]
    text = wizard.check_page.disk_label.text()
    assert "Only 10 MB is free on that drive" in text and "another drive" in text
    assert ERROR_COLOUR in wizard.check_page.disk_label.styleSheet()
    assert not wizard.button(QWizard.WizardButton.NextButton).isEnabled()
    assert wizard.check_page.retry_button.isVisible()


def test_unreachable_hub_says_so_in_words_logs_it_and_shows_each_retry(
    qtbot: QtBot, caplog: pytest.LogCaptureFixture
) -> None:
    wizard = SetupWizard(
        source=DownloadSource(endpoint="http://127.0.0.1:9", vocoder_base_url="http://127.0.0.1:9/v"),
        downloader_factory=_fast_downloader,
        probe=lambda: SystemInfo((), 8 * GB),
    )
    qtbot.addWidget(wizard)
    wizard.show()
    _next(wizard)
    wizard.licence_page.accept_check.setChecked(True)
    with qtbot.waitSignal(wizard.checkFinished, timeout=20_000) as checked:
        _next(wizard)
    assert checked.args == [False]
    label = wizard.check_page.disk_label
    assert label.text().startswith("No internet connection (could not reach 127.0.0.1).")
    assert "urlopen error" not in label.text() and "Errno" not in label.text()
    assert "Tried at " in label.text()
    assert any("Download check failed (try 1)" in r.getMessage() and "127.0.0.1:9" in r.getMessage()
               for r in caplog.records)
    assert wizard.check_page.retry_button.isVisible()
    assert not wizard.button(QWizard.WizardButton.NextButton).isEnabled()

    with qtbot.waitSignal(wizard.checkFinished, timeout=20_000):
        wizard.check_page.retry_button.click()
        assert label.text().startswith("Checking again (try 2)")  # at once: the click did something
    assert "Tried 2 times, last at " in label.text()
    assert any("Download check failed (try 2)" in r.getMessage() for r in caplog.records)
    qtbot.waitUntil(lambda: "No NVIDIA graphics card found" in wizard.check_page.gpu_label.text())


def test_an_http_error_is_named_in_words(qtbot: QtBot, hub: FakeHub) -> None:
    source = DownloadSource(endpoint=hub.base, repo_id="nobody/nothing-here", vocoder_base_url=hub.base + "/vocoder")
    wizard = SetupWizard(source=source, downloader_factory=_fast_downloader, probe=lambda: SystemInfo((), 8 * GB))
    qtbot.addWidget(wizard)
    wizard.show()
    _next(wizard)
    wizard.licence_page.accept_check.setChecked(True)
    with qtbot.waitSignal(wizard.checkFinished, timeout=20_000):
        _next(wizard)
    text = wizard.check_page.disk_label.text()
    assert "127.0.0.1 answered 404 Not Found: the file is not there (it may have moved)." in text


def test_wrong_checksum_shows_the_error_and_retry_fixes_it(qtbot: QtBot, hub: FakeHub) -> None:
    good = hub.files[RESOLVE + SHARD_2]
    hub.oids[SHARD_2] = sha256_hex(good)
    hub.files[RESOLVE + SHARD_2] = _bytes(99, len(good))  # same size, other bytes
    wizard = _wizard(qtbot, hub)
    _to_check_page(qtbot, wizard)
    with qtbot.waitSignal(wizard.downloadFinished, timeout=30_000) as finished:
        _next(wizard)
    assert finished.args == [False]
    page = wizard.download_page
    assert "The downloaded file is damaged" in page.message_label.text()
    assert "Try again later" in page.message_label.text()  # the fix
    assert ERROR_COLOUR in page.message_label.styleSheet()
    assert page.retry_button.isVisible() and page.retry_button.text() == "Retry"
    assert not wizard.button(QWizard.WizardButton.NextButton).isEnabled()
    _shot(wizard, "4_download_error")
    model_dir = models_dir() / OMNI_DIR_NAME
    assert not (model_dir / SHARD_2).exists() and (model_dir / SHARD_1).exists()

    hub.files[RESOLVE + SHARD_2] = good  # the server's copy is fixed
    with qtbot.waitSignal(wizard.downloadFinished, timeout=30_000) as finished:
        page.retry_button.click()
    assert finished.args == [True]
    assert (model_dir / SHARD_2).read_bytes() == good
    assert wizard.button(QWizard.WizardButton.NextButton).isEnabled()


def test_pause_keeps_the_part_and_resume_continues(qtbot: QtBot, hub: FakeHub) -> None:
    gate = threading.Event()
    hub.gates[RESOLVE + SHARD_1] = gate
    wizard = _wizard(qtbot, hub)
    _to_check_page(qtbot, wizard)
    _next(wizard)
    part = models_dir() / OMNI_DIR_NAME / (SHARD_1 + ".part")
    qtbot.waitUntil(lambda: part.is_file() and part.stat().st_size >= CHUNK_BYTES, timeout=20_000)
    page = wizard.download_page
    _shot(wizard, "4_downloading")
    with qtbot.waitSignal(wizard.downloadFinished, timeout=20_000) as finished:
        page.cancel_button.click()
        assert page.file_label.text() == "Pausing…"
        gate.set()  # the server sends the rest; the downloader stops at its next block
    assert finished.args == [False]
    assert page.file_label.text() == "Paused." and page.retry_button.text() == "Resume"
    kept = part.stat().st_size
    assert CHUNK_BYTES <= kept < BIG_SHARD_BYTES
    assert not (models_dir() / OMNI_DIR_NAME / SHARD_1).exists()

    with qtbot.waitSignal(wizard.downloadFinished, timeout=30_000) as finished:
        page.retry_button.click()
    assert finished.args == [True]
    assert ("GET", RESOLVE + SHARD_1, f"bytes={kept}-") in hub.requests
    assert (models_dir() / OMNI_DIR_NAME / SHARD_1).read_bytes() == hub.files[RESOLVE + SHARD_1]


def test_closing_the_wizard_stops_the_download_and_keeps_the_part(qtbot: QtBot, hub: FakeHub) -> None:
    gate = threading.Event()
    hub.gates[RESOLVE + SHARD_1] = gate
    wizard = _wizard(qtbot, hub)
    _to_check_page(qtbot, wizard)
    _next(wizard)
    part = models_dir() / OMNI_DIR_NAME / (SHARD_1 + ".part")
    qtbot.waitUntil(lambda: part.is_file() and part.stat().st_size >= CHUNK_BYTES, timeout=20_000)
    wizard.reject()
    gate.set()
    assert wait_for_background(20_000)
    assert part.is_file() and not (models_dir() / OMNI_DIR_NAME / SHARD_1).exists()
    assert wizard.result() == QWizard.DialogCode.Rejected


def test_existing_files_with_a_bad_folder_show_a_message(qtbot: QtBot, hub: FakeHub, tmp_path: Path) -> None:
    wizard = _wizard(qtbot, hub)
    wizard.choice_page.existing_radio.setChecked(True)
    _next(wizard)
    assert wizard.currentId() == PAGE_EXISTING
    page = wizard.existing_page
    next_button = wizard.button(QWizard.WizardButton.NextButton)
    assert not next_button.isEnabled()
    page.model_edit.setText(str(tmp_path))
    page.vocoder_edit.setText(str(tmp_path))
    with qtbot.waitSignal(wizard.validationFinished, timeout=20_000) as finished:
        page.check_button.click()
    assert finished.args == [False]
    assert "config.json is missing." in page.result_label.text()
    assert "Choose the complete model folder." in page.result_label.text()
    assert not next_button.isEnabled()
    _shot(wizard, "2b_existing_error")

    page.model_edit.setText("")
    with qtbot.waitSignal(wizard.validationFinished) as finished:
        page.check_button.click()
    assert finished.args == [False]
    assert "Choose the Omni model folder and the vocoder folder." in page.result_label.text()


def test_existing_vocoder_folder_needs_its_files(qtbot: QtBot, hub: FakeHub, tiny_set: Path) -> None:
    wizard = _wizard(qtbot, hub)
    wizard.choice_page.existing_radio.setChecked(True)
    _next(wizard)
    page = wizard.existing_page
    page.model_edit.setText(str(tiny_set / "omni"))
    page.vocoder_edit.setText(str(tiny_set / "omni"))  # wrong folder: no g_00500000
    with qtbot.waitSignal(wizard.validationFinished, timeout=60_000) as finished:
        page.check_button.click()
    assert finished.args == [False]
    assert "The vocoder folder lacks g_00500000" in page.result_label.text()


def test_existing_good_files_pass_and_give_the_paths(qtbot: QtBot, hub: FakeHub, tiny_set: Path) -> None:
    wizard = _wizard(qtbot, hub)
    wizard.choice_page.existing_radio.setChecked(True)
    _next(wizard)
    page = wizard.existing_page
    page.model_edit.setText(str(tiny_set / "omni"))
    page.vocoder_edit.setText(str(tiny_set / "vocoder"))
    with qtbot.waitSignal(wizard.validationFinished, timeout=60_000) as finished:
        page.check_button.click()
    assert finished.args == [True], page.result_label.text()
    assert page.result_label.text().startswith("✓ Found LLaMA-Omni: 2 layers, width 64")
    assert "unit vocoder" in page.result_label.text()
    _shot(wizard, "2b_existing_ok")
    _next(wizard)
    assert wizard.currentId() == PAGE_DONE
    paths = wizard.model_paths()
    assert (paths.model_dir, paths.vocoder_dir, paths.speech_encoder) == (tiny_set / "omni", tiny_set / "vocoder", None)
    page.model_edit.setText(str(tiny_set))  # a change after the check needs a new check
    assert not page.isComplete()


def test_time_left() -> None:
    assert [time_left(s) for s in (12, 370, 4000)] == [
        "less than a minute left",
        "about 6 min left",
        "about 1 h 6 min left",
    ]


def test_progress_text() -> None:
    p = DownloadProgress(
        file="model-00002-of-00004.safetensors", file_index=3, n_files=9, file_done=450 * 10**6,
        file_total=10**9, done=5 * 10**9, total=18 * 10**9, speed_bps=35.2e6, eta_s=370.0,
    )
    assert progress_text(p) == (
        "model-00002-of-00004.safetensors (4 of 9)",
        "45% of 1.0 GB · 35.2 MB/s · about 6 min left",
    )


@pytest.fixture(scope="session")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from engine.tiny import write_tiny_set

    root = tmp_path_factory.mktemp("tiny-omni")
    write_tiny_set(root, encoder_in_shards=True, pt_encoder=False)
    return root

