"""One source for every size figure (engine.preflight.model_size) and one rule for the default
precision (recommend_quant): the README, the wizard, the Ready page and the settings agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PySide6.QtWidgets import QWizard
from pytestqt.qtbot import QtBot

from app.settings import AppSettings
from app.settings_dialog import SettingsDialog
from app.setup_wizard import PAGE_DONE, PAGE_EXISTING, SetupWizard
from app.tasks import wait_for_background
from app.words import QUANT_LABELS
from engine.config import OFFICIAL_DIMS
from engine.model.dims import read_dims
from engine.model_download import catalogue_bytes
from engine.preflight import SystemInfo, default_quant, estimate_all, gb, model_size, recommend_quant, size_text
from engine.tiny import TinyPaths, write_tiny_set

ROOT = Path(__file__).resolve().parents[2]
GB = 1_000_000_000
TOKENS = AppSettings().max_new_tokens
CPU_PC = SystemInfo(gpus=(), ram_free_bytes=30 * GB)  # no NVIDIA card, 30 GB of RAM free


@pytest.fixture(autouse=True)
def _no_leftover_tasks() -> object:
    yield
    assert wait_for_background(30_000)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyPaths:
    return write_tiny_set(tmp_path_factory.mktemp("tiny"), seed=0)


def test_model_size_reads_the_files_when_present_and_the_catalogue_otherwise(tiny: TinyPaths) -> None:
    official = model_size(None, max_new_tokens=TOKENS)
    assert not official.from_files and official.dims == OFFICIAL_DIMS
    assert official.file_bytes == catalogue_bytes() and official.memory == estimate_all(OFFICIAL_DIMS, TOKENS)
    mine = model_size(tiny.omni, None, tiny.vocoder, max_new_tokens=TOKENS)
    on_disk = sum(f.stat().st_size for d in (tiny.omni, tiny.speech_encoder_pt.parent, tiny.vocoder)  # type: ignore[union-attr]
                  for f in d.rglob("*") if f.is_file())
    assert mine.from_files and mine.file_bytes == on_disk
    assert mine.memory == estimate_all(read_dims(tiny.omni), TOKENS)
    half_downloaded = model_size(tiny.root / "not-there", None, None, max_new_tokens=TOKENS)
    assert half_downloaded == official


def test_the_readme_quotes_the_same_figures() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    size = model_size(None, max_new_tokens=TOKENS)
    assert f"About {size_text(size.disk_bytes)} of free disk space" in readme
    assert f"take {size_text(size.file_bytes)}" in readme
    assert f"({size_text(catalogue_bytes(needs_whisper=True))} when the Whisper encoder" in readme
    for quant, words in (("nf4", "4-bit (NF4) needs about"), ("int8", "8-bit about"), ("fp16", "16-bit about")):
        assert re.search(rf"{re.escape(words)}\s+{re.escape(gb(size.memory[('cuda', quant)]))}", readme), quant
    assert "25 GB" not in readme


def test_the_wizard_and_the_settings_quote_the_files_figures(qtbot: QtBot, tiny: TinyPaths) -> None:
    """Chosen files: the Ready page's size and memory figures are the files', as in the settings."""
    wizard = SetupWizard(probe=lambda: CPU_PC)
    qtbot.addWidget(wizard)
    wizard.show()
    assert f"about {size_text(catalogue_bytes())}" in wizard.choice_page.download_radio.text()
    qtbot.waitUntil(lambda: wizard.system is not None)
    wizard.choice_page.existing_radio.setChecked(True)
    wizard.next()
    assert wizard.currentId() == PAGE_EXISTING
    wizard.existing_page.model_edit.setText(str(tiny.omni))
    wizard.existing_page.vocoder_edit.setText(str(tiny.vocoder))
    with qtbot.waitSignal(wizard.systemChecked, timeout=20_000):  # measured again for these files
        wizard.existing_page.check_button.click()
    wizard.next()
    assert wizard.currentId() == PAGE_DONE
    size = model_size(tiny.omni, None, tiny.vocoder, max_new_tokens=TOKENS)
    quant = recommend_quant(size.memory, CPU_PC.target("auto"))
    ready = wizard.done_page.summary.text()
    assert f"Files: {size_text(size.file_bytes)} on disk" in ready
    need = size_text(size.memory[("cpu", quant)])
    assert f"Recommended precision: {QUANT_LABELS[quant]}, needs about {need}." in ready
    assert "19.1 GB" not in ready  # the official model's figure, for a 0.1-million-parameter model

    dialog = SettingsDialog(
        AppSettings(model_dir=str(tiny.omni), vocoder_dir=str(tiny.vocoder), gpu="cpu"), probe=lambda: CPU_PC
    )
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitUntil(lambda: "the model in" in dialog.model_tab.estimate_source_label.text(), timeout=20_000)
    qtbot.waitUntil(lambda: dialog.model_tab.recommended_quant() is not None)
    assert f"({size_text(size.file_bytes)} of files)" in dialog.model_tab.estimate_source_label.text()
    assert f"needs about {size_text(size.memory[('cpu', quant)])} of RAM" in dialog.model_tab.fit_label.text()
    wizard.button(QWizard.WizardButton.CancelButton).click()


def test_one_rule_picks_the_default_precision_everywhere(qtbot: QtBot) -> None:
    """On a CPU-only PC the wizard recommends, Settings preselects and the engine loads the same precision."""
    rule = recommend_quant(estimate_all(OFFICIAL_DIMS, TOKENS), CPU_PC.target("auto"))
    assert rule == "bf16", "the official model in bf16 (19 GB) fits in 30 GB of RAM; fp32 (38 GB) does not"
    assert default_quant(OFFICIAL_DIMS, "cpu", CPU_PC.ram_free_bytes, max_new_tokens=TOKENS) == rule  # the engine

    wizard = SetupWizard(probe=lambda: CPU_PC)
    qtbot.addWidget(wizard)
    qtbot.waitUntil(lambda: wizard.system is not None)
    assert wizard.recommended_quant() == rule
    assert f"Recommended precision: {QUANT_LABELS[rule]}" in wizard.gpu_summary()

    dialog = SettingsDialog(AppSettings(), probe=lambda: CPU_PC)  # a new user's settings
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitUntil(lambda: dialog.model_tab.recommended_quant() is not None)
    auto = dialog.model_tab.quant_buttons["auto"]
    assert auto.isChecked() and dialog.model_tab.recommended_quant() == rule
    assert auto.text().startswith(f"Automatic: {QUANT_LABELS[rule]}")
    assert dialog.result_settings().load_command() is None  # no model yet; with one, quant=None: the rule
    assert AppSettings(model_dir="/m").load_command().quant is None  # type: ignore[union-attr]
