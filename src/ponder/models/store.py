"""Where models live on disk. `ModelStore` turns whatever the user typed (a catalogue name or alias,
a path to a .gguf file, or `hf:OWNER/REPO/FILE.gguf`) into a verified local file, downloading it
once and safely even when several processes ask for the same model at the same time."""

from __future__ import annotations

import builtins
import fcntl
import glob
import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import BaseModel, ConfigDict

from ponder.errors import InvalidRequestError, ModelDownloadError, ModelNotFoundError
from ponder.models.catalogue import Catalogue, ModelEntry, load_catalogue
from ponder.models.sources import (
    HF_PREFIX,
    HfRef,
    Progress,
    fetch_entry,
    fetch_hf,
    partial_prefix,
    wheels_prefix,
)

GGUF_MAGIC = b"GGUF"
HOME_ENV = "PONDER_HOME"


def is_gguf(path: Path) -> bool:
    """Whether `path` starts with the GGUF magic: a wrong file fails here, not in llama.cpp."""
    with path.open("rb") as handle:
        return handle.read(len(GGUF_MAGIC)) == GGUF_MAGIC


class ModelStatus(BaseModel):
    """One catalogue model as `ponder models list` shows it."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    aliases: tuple[str, ...]
    size: int
    license: str
    default: bool
    installed: bool
    path: Path | None


@dataclass(frozen=True)
class ResolvedModel:
    """What a model reference points at, and where its file is (or will be once pulled)."""

    ref: str
    kind: Literal["catalogue", "local", "hf"]
    path: Path
    installed: bool
    entry: ModelEntry | None = None
    hf: HfRef | None = None

    @property
    def name(self) -> str:
        """The name to show and to pass back to `ponder models ...`."""
        if self.entry is not None:
            return self.entry.name
        if self.hf is not None:
            return str(self.hf)
        return str(self.path)


class ModelStore:
    """The models under `home/models`. `home` defaults to $PONDER_HOME, else the user cache dir."""

    def __init__(self, home: Path | None = None, *, catalogue: Catalogue | None = None) -> None:
        if home is None:
            home = Path(os.environ.get(HOME_ENV) or platformdirs.user_cache_dir("ponder"))
        self.home = home.expanduser()
        self.catalogue = catalogue if catalogue is not None else load_catalogue()

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def default_model(self) -> str:
        """The catalogue's default model name, for callers that were not given one."""
        return self.catalogue.default

    # --- queries ----------------------------------------------------------------------------------

    def list(self) -> builtins.list[ModelStatus]:
        """Every catalogue model, and whether it is pulled."""
        statuses = []
        for entry in self.catalogue.models.values():
            resolved = self._catalogue_model(entry.name, entry)
            statuses.append(
                ModelStatus(
                    name=entry.name,
                    description=entry.description,
                    aliases=entry.aliases,
                    size=entry.size,
                    license=entry.license,
                    default=entry.name == self.catalogue.default,
                    installed=resolved.installed,
                    path=resolved.path if resolved.installed else None,
                )
            )
        return statuses

    def resolve(self, ref: str) -> ResolvedModel:
        """Interpret `ref` without downloading anything. Catalogue names win over same-named files,
        since names never contain a slash and paths usually do."""
        ref = ref.strip()
        if not ref:
            raise InvalidRequestError(f"No model given. {self._accepted_forms()}")
        if ref.startswith(HF_PREFIX):
            hf = HfRef.parse(ref)
            path = self.models_dir / "hf" / hf.repo_id / hf.filename
            return ResolvedModel(ref, "hf", path, _is_present(path, None), hf=hf)
        entry = self.catalogue.lookup(ref)
        if entry is not None:
            return self._catalogue_model(ref, entry)
        return self._local_model(ref)

    def path(self, ref: str) -> Path:
        """Where the model's file is; it must already be pulled (or be a local file)."""
        resolved = self.resolve(ref)
        if not resolved.installed:
            raise ModelNotFoundError(
                f"Model {resolved.name} is not pulled yet: run `ponder models pull {resolved.name}`"
            )
        return resolved.path

    def verify(self, ref: str) -> bool:
        """Re-hash a pulled catalogue model and compare with the catalogue (slow: reads it all)."""
        resolved = self.resolve(ref)
        if resolved.entry is None:
            raise InvalidRequestError(f"{resolved.name} is not a catalogue model: no known sha256")
        with self.path(ref).open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest() == resolved.entry.sha256

    # --- changes ----------------------------------------------------------------------------------

    def ensure(self, ref: str, progress: Progress | None = None) -> Path:
        """The model's path, pulling it first if needed: what `ponder ask` and tests call."""
        resolved = self.resolve(ref)
        if resolved.installed:
            return resolved.path
        return self._pull(resolved, progress, force=False)

    def pull(self, ref: str, progress: Progress | None = None, force: bool = False) -> Path:
        """Download the model unless it is already there (`force` downloads it again)."""
        return self._pull(self.resolve(ref), progress, force=force)

    def remove(self, ref: str) -> bool:
        """Delete a pulled model; False if it was not pulled. Files outside the store are never
        deleted: ponder only removes what it downloaded."""
        resolved = self.resolve(ref)
        if resolved.kind == "local":
            raise InvalidRequestError(
                f"{resolved.path} is a local file, not a model in ponder's store; "
                "ponder only removes models it downloaded"
            )
        with self._locked(resolved):
            self._discard_leftovers(resolved)
            try:
                resolved.path.unlink()
            except FileNotFoundError:
                return False
            return True

    # --- internals --------------------------------------------------------------------------------

    def _pull(self, resolved: ResolvedModel, progress: Progress | None, force: bool) -> Path:
        if resolved.kind == "local":
            return resolved.path
        with self._locked(resolved):
            # Another process may have finished this pull while we waited for the lock.
            if not force and _is_present(resolved.path, resolved.entry):
                return resolved.path
            self._discard_leftovers(resolved)
            if resolved.entry is not None:
                return fetch_entry(resolved.entry, resolved.path, progress)
            assert resolved.hf is not None
            local_dir = self.models_dir / "hf" / resolved.hf.repo_id
            path = fetch_hf(resolved.hf, local_dir, force=force, progress=progress)
            if not is_gguf(path):
                path.unlink(missing_ok=True)
                raise ModelDownloadError(f"{resolved.hf} is not a GGUF file; it was deleted")
            return path

    def _catalogue_model(self, ref: str, entry: ModelEntry) -> ResolvedModel:
        path = self.models_dir / entry.filename
        return ResolvedModel(ref, "catalogue", path, _is_present(path, entry), entry=entry)

    def _local_model(self, ref: str) -> ResolvedModel:
        candidate = Path(ref).expanduser()
        if not candidate.exists():
            if _looks_like_path(ref):
                raise ModelNotFoundError(
                    f"No such file: {candidate.absolute()}. Give the path of an existing .gguf "
                    f"file, or one of the catalogue models: {self._known_names()}"
                )
            raise ModelNotFoundError(f"Unknown model {ref!r}. {self._accepted_forms()}")
        if not candidate.is_file():
            raise InvalidRequestError(f"{candidate} is not a file; give the path of a .gguf file")
        try:
            gguf = is_gguf(candidate)
        except OSError as error:
            raise InvalidRequestError(f"Cannot read {candidate}: {error.strerror}") from error
        if not gguf:
            raise InvalidRequestError(
                f"{candidate} is not a GGUF model (it does not start with the bytes 'GGUF'); "
                "ponder runs llama.cpp models in GGUF format"
            )
        return ResolvedModel(ref, "local", candidate.resolve(), installed=True)

    def _known_names(self) -> str:
        return ", ".join(
            f"{name} (default)" if name == self.catalogue.default else name
            for name in self.catalogue.names
        )

    def _accepted_forms(self) -> str:
        return (
            f"Known models: {self._known_names()}. A model can also be the path of a local .gguf "
            "file, or hf:OWNER/REPO/PATH/TO/FILE.gguf for a file on Hugging Face."
        )

    @contextmanager
    def _locked(self, resolved: ResolvedModel) -> Iterator[None]:
        """Hold an exclusive lock for one model so concurrent pulls of it run one at a time (the
        lock file stays: deleting it would let two processes lock different files)."""
        locks = self.home / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        key = resolved.path.relative_to(self.models_dir).as_posix().replace("/", "--")
        with (locks / f"{key}.lock").open("a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _discard_leftovers(self, resolved: ResolvedModel) -> None:
        """Remove temporary files of pulls that were killed; call only while holding the lock,
        so no live pull of this model owns them."""
        parent = resolved.path.parent
        if not parent.is_dir():
            return
        for stale in parent.glob(f"{glob.escape(partial_prefix(resolved.path))}*"):
            stale.unlink(missing_ok=True)
        for stale in parent.glob(f"{glob.escape(wheels_prefix(resolved.path))}*"):
            shutil.rmtree(stale, ignore_errors=True)


def _is_present(path: Path, entry: ModelEntry | None) -> bool:
    """A file, with the catalogue's size if it has one. Pulls verify the sha256 before moving a
    file into place, so this cheap check only has to catch files damaged or replaced since."""
    if entry is None:
        return path.is_file()
    return path.is_file() and path.stat().st_size == entry.size


def _looks_like_path(ref: str) -> bool:
    """Whether the user meant a file (so "no such file" is the helpful error, not "unknown")."""
    separators = tuple(sep for sep in (os.sep, os.altsep, "/") if sep)
    return (
        any(sep in ref for sep in separators)
        or ref.startswith(("~", "."))
        or ref.lower().endswith(".gguf")
    )
