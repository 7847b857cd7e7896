"""`ponder models`: output a script can parse, one-line errors, and exit codes that say what
happened. The store is pointed at a temporary $PONDER_HOME; nothing is downloaded."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from ponder.cli.models import models
from ponder.models.catalogue import load_catalogue
from ponder.models.store import GGUF_MAGIC, ModelStore

SMOLLM2 = "smollm2-135m"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PONDER_HOME", str(tmp_path))
    return tmp_path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(models, list(args))


def fake_pulled(home: Path, name: str = SMOLLM2) -> Path:
    """A file where the store expects `name`, of the catalogue's size (sparse, so it is cheap)."""
    store = ModelStore(home=home)
    resolved = store.resolve(name)
    assert resolved.entry is not None
    resolved.path.parent.mkdir(parents=True, exist_ok=True)
    with resolved.path.open("wb") as handle:
        handle.write(GGUF_MAGIC)
        handle.truncate(resolved.entry.size)
    return resolved.path


def test_list_json_parses_and_shows_what_is_pulled(home: Path) -> None:
    pulled = fake_pulled(home)
    result = invoke("list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [row["name"] for row in rows] == load_catalogue().names
    by_name = {row["name"]: row for row in rows}
    assert by_name[SMOLLM2]["installed"] is True
    assert by_name[SMOLLM2]["path"] == str(pulled)
    assert by_name["qwen2.5-coder-0.5b"]["installed"] is False
    assert by_name["qwen2.5-coder-0.5b"]["path"] is None
    assert sum(row["default"] for row in rows) == 1


def test_list_table_names_every_model(home: Path) -> None:
    result = invoke("list")
    assert result.exit_code == 0, result.output
    for name in load_catalogue().names:
        assert name in result.output


def test_path_of_missing_model_fails_with_a_message(home: Path) -> None:
    result = invoke("path", "smollm2")
    assert result.exit_code == 1
    assert "ponder models pull smollm2-135m" in result.output
    assert "Traceback" not in result.output


def test_path_prints_just_the_path(home: Path) -> None:
    pulled = fake_pulled(home)
    result = invoke("path", "SmolLM2")
    assert result.exit_code == 0
    assert result.output == f"{pulled}\n"


def test_unknown_model_is_a_one_line_error(home: Path) -> None:
    result = invoke("pull", "gpt-17")
    assert result.exit_code == 1
    assert result.output.startswith("Error: Unknown model 'gpt-17'")
    assert "Traceback" not in result.output
    assert result.exception is not None
    assert isinstance(result.exception, SystemExit)


def test_rm_deletes_a_pulled_model_and_says_when_there_is_none(home: Path) -> None:
    pulled = fake_pulled(home)
    result = invoke("rm", SMOLLM2)
    assert result.exit_code == 0
    assert "Removed smollm2-135m" in result.output
    assert not pulled.exists()
    again = invoke("rm", SMOLLM2)
    assert again.exit_code == 0
    assert "nothing to remove" in again.output


def test_pull_prints_the_path(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_hf_hub_download(*, repo_id: str, filename: str, local_dir: Path, **kw: Any) -> str:
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(GGUF_MAGIC + b"weights")
        return str(target)

    module = types.ModuleType("huggingface_hub")
    module.hf_hub_download = fake_hf_hub_download  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "huggingface_hub", module)
    result = invoke("pull", "hf:owner/repo/m.gguf")
    assert result.exit_code == 0, result.output
    expected = home / "models" / "hf" / "owner" / "repo" / "m.gguf"
    assert result.stdout == f"{expected}\n"  # the progress bar goes to stderr
    assert expected.exists()
