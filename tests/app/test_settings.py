"""settings.json: round trip, schema version, bad values, corrupt files backed up, atomic saves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app import settings as settings_mod
from app.settings import SCHEMA_VERSION, AppSettings, load, save


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    result = load(tmp_path / "settings.json")
    assert result.settings == AppSettings() and result.warning is None


def test_round_trip_with_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    custom = AppSettings(model_dir="/models/omni", quant="int8", temperature=0.7, talk_key="F8", earcons=False)
    save(custom, path)
    data = json.loads(path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION and data["quant"] == "int8"
    assert load(path).settings == custom


def test_default_location_is_the_user_config_folder(tmp_path: Path) -> None:
    path = save(AppSettings(theme="dark"))
    assert path.parent.name == "config" and path.name == "settings.json"  # OMNITALK_HOME/config in tests
    assert load().settings.theme == "dark"


def test_invalid_values_fall_back_one_by_one(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text(
        json.dumps(
            {
                "schema_version": 1,
                "quant": "q3",
                "temperature": "hot",
                "max_new_tokens": True,
                "chunk_units": 80,
                "talk_key": "F10",
                "unknown_key": 1,
                "model_dir": None,
            }
        )
    )
    result = load(path)
    assert result.settings.quant == AppSettings().quant and result.settings.temperature == 0.0
    assert result.settings.max_new_tokens == 512
    assert result.settings.chunk_units == 80 and result.settings.talk_key == "F10"
    assert set(result.ignored) == {"quant", "temperature", "max_new_tokens"}


def test_integer_accepted_for_float_setting(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"temperature": 1}))
    value = load(path).settings.temperature
    assert value == 1.0 and isinstance(value, float)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "\xff\xfe garbage"])
def test_corrupt_file_is_backed_up_and_user_told(tmp_path: Path, content: str) -> None:
    path = tmp_path / "settings.json"
    path.write_bytes(content.encode("latin-1"))
    result = load(path)
    assert result.settings == AppSettings()
    assert result.warning and "defaults are used" in result.warning
    backups = list(tmp_path.glob("settings.json.corrupt-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == content.encode("latin-1")
    assert not path.exists()


def test_newer_schema_warns(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1, "theme": "light"}))
    result = load(path)
    assert result.settings.theme == "light" and "newer OmniTalk" in (result.warning or "")


def test_failed_save_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "settings.json"
    save(AppSettings(talk_key="F7"), path)

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(settings_mod.os, "replace", disk_full)
    with pytest.raises(OSError, match="No space"):
        save(AppSettings(talk_key="F6"), path)
    assert load(path).settings.talk_key == "F7"
    assert not (tmp_path / "settings.json.tmp").exists()


def test_engine_options_follow_settings() -> None:
    options = AppSettings(system_prompt="Be brief.", first_chunk_units=15, chunk_units=60).engine_options()
    assert options.system_prompt == "Be brief."
    assert (options.chunking.first_chunk_units, options.chunking.chunk_units) == (15, 60)
    assert AppSettings().engine_options().system_prompt is None
