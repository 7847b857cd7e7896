"""What a benchmark is made of: items (a prompt, a reference, the checker that grades it) and the
spec that names a dataset, kept apart from the loaders so checkers and the store can use them
without importing any data source."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ponder.engines.types import Message

CheckerName = Literal["math", "multiple-choice", "code-exec", "reasoning-gym"]
CHECKERS: tuple[CheckerName, ...] = ("math", "multiple-choice", "code-exec", "reasoning-gym")

RG_PREFIX = "rg:"
JSONL_PREFIX = "jsonl:"


class Item(BaseModel):
    """One benchmark question. `prompt` is exactly what the engine is sent; `data` holds what the
    checker needs besides the reference (tests to run, the choices, a reasoning-gym entry)."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1)
    question: str
    prompt: tuple[Message, ...] = Field(min_length=1)
    reference: str
    checker: CheckerName
    data: dict[str, Any] = Field(default_factory=dict)


class JsonlFields(BaseModel):
    """Which fields of a user's JSONL file hold the prompt, the reference answer and the id (the
    line number when no id field is named)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str = Field(default="question", min_length=1)
    answer: str = Field(default="answer", min_length=1)
    id: str | None = None


class DatasetSpec(BaseModel):
    """A dataset as the user named it: a built-in name, `rg:GENERATOR` (reasoning-gym, with a
    size, a seed and optionally a curriculum difficulty level) or a JSONL file. It is stored in a
    run's config, so a resumed run loads exactly the same items."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    path: Path | None = None
    fields: JsonlFields | None = None
    checker: CheckerName | None = None
    size: int | None = Field(default=None, ge=1, le=1_000_000)
    seed: int | None = Field(default=None, ge=0)
    difficulty: int | None = Field(default=None, ge=0)
    skip: int = Field(
        default=0, ge=0, description="items left out at the start (held-out items beyond a run)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        if self.kind != "rg" and (
            self.size is not None or self.seed is not None or self.difficulty is not None
        ):
            raise ValueError("size, seed and difficulty apply to reasoning-gym datasets (rg:NAME)")
        if self.kind != "jsonl" and (self.fields is not None or self.checker is not None):
            raise ValueError("field names and --checker apply to JSONL files only")
        if self.kind == "jsonl" and self.path is None:
            raise ValueError("a JSONL dataset needs the file's path")
        return self

    @property
    def kind(self) -> Literal["builtin", "rg", "jsonl"]:
        if self.name.startswith(RG_PREFIX):
            return "rg"
        if self.name == "jsonl":
            return "jsonl"
        return "builtin"

    def whole(self) -> DatasetSpec:
        """The dataset itself, wherever a run starts in it: runs that skip different numbers of
        items draw from one list, and share the items they both hold (matched by id)."""
        return self.model_copy(update={"skip": 0})

    def label(self) -> str:
        """A short human-readable name for progress bars and reports."""
        if self.kind == "jsonl":
            name = str(self.path)
        elif self.kind == "rg":
            extras = [f"size={self.size}", f"seed={self.seed}"]
            if self.difficulty is not None:
                extras.append(f"difficulty={self.difficulty}")
            name = f"{self.name} ({', '.join(extras)})"
        else:
            name = self.name
        return f"{name} from item {self.skip + 1}" if self.skip else name


def fingerprint(items: tuple[Item, ...] | list[Item]) -> str:
    """A digest of what decides the samples and their grades (ids, prompts, references, checkers),
    so a run resumed on a changed file or a changed prompt template is caught, not mixed."""
    digest = hashlib.sha256()
    for item in items:
        record = [
            item.id,
            [m.model_dump(mode="json") for m in item.prompt],
            item.reference,
            item.checker,
        ]
        digest.update(json.dumps(record, sort_keys=True).encode())
        digest.update(b"\n")
    return digest.hexdigest()
