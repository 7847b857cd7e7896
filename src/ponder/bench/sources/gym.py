"""Procedurally generated, verifiable tasks from reasoning-gym: any of its generators, with a size,
a seed and optionally a curriculum difficulty level, graded by the generator's own scorer. Fresh
items cannot have leaked into a model's training data, and a seed makes them reproducible."""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ponder.bench.checkers import ReasoningGymChecker, ScoreFn
from ponder.bench.items import RG_PREFIX, DatasetSpec, Item
from ponder.errors import InvalidRequestError, MissingDependencyError

DEFAULT_SIZE = 100
DEFAULT_SEED = 0


@dataclass(frozen=True)
class Generator:
    """One reasoning-gym generator, as `ponder bench datasets --generators` lists it."""

    name: str
    max_difficulty: int | None
    """The highest curriculum level, None when the generator has no curriculum."""


def _reasoning_gym() -> ModuleType:
    """reasoning-gym is optional (and slow to import), so it is imported only when used; through
    importlib because it ships no type information."""
    try:
        return importlib.import_module("reasoning_gym")
    except ImportError as error:
        raise MissingDependencyError(
            "reasoning-gym datasets need the reasoning-gym package: pip install 'ponder[bench]'"
        ) from error


def generators() -> list[Generator]:
    """Every generator reasoning-gym has, with its difficulty range."""
    factory = _reasoning_gym().factory
    return [
        Generator(
            name, _max_level(factory.CURRICULA[name]()) if name in factory.CURRICULA else None
        )
        for name in sorted(factory.DATASETS)
    ]


def _max_level(curriculum: Any) -> int:
    return max((len(attr.levels) - 1 for attr in curriculum.attributes.values()), default=0)


def normalized(spec: DatasetSpec) -> DatasetSpec:
    """The spec with its defaults filled in, so the stored config says exactly what was made."""
    return spec.model_copy(
        update={
            "size": spec.size if spec.size is not None else DEFAULT_SIZE,
            "seed": spec.seed if spec.seed is not None else DEFAULT_SEED,
        }
    )


def load(spec: DatasetSpec) -> tuple[list[Item], ScoreFn]:
    """The generated items and the generator's scorer."""
    spec = normalized(spec)
    assert spec.size is not None and spec.seed is not None
    name = spec.name.removeprefix(RG_PREFIX)
    factory = _reasoning_gym().factory
    if name not in factory.DATASETS:
        close = difflib.get_close_matches(name, list(factory.DATASETS), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise InvalidRequestError(
            f"reasoning-gym has no generator {name!r}.{hint} "
            "`ponder bench datasets --generators` lists them."
        )
    dataset_cls, config_cls = factory.DATASETS[name]
    try:
        if spec.difficulty is None:
            config = config_cls(size=spec.size, seed=spec.seed)
        else:
            if name not in factory.CURRICULA:
                raise InvalidRequestError(
                    f"reasoning-gym's {name} has no difficulty levels; leave out the difficulty"
                )
            curriculum = factory.CURRICULA[name]()
            top = _max_level(curriculum)
            if spec.difficulty > top:
                raise InvalidRequestError(
                    f"reasoning-gym's {name} has difficulty levels 0..{top}, not {spec.difficulty}"
                )
            curriculum.set_global_level(spec.difficulty)
            config = curriculum.generate_configuration({"size": spec.size, "seed": spec.seed})
        if hasattr(config, "validate"):
            config.validate()
        dataset = dataset_cls(config=config)
        entries = [dataset[index] for index in range(spec.size)]
    except InvalidRequestError:
        raise
    except Exception as error:  # a generator rejecting its configuration
        raise InvalidRequestError(
            f"reasoning-gym could not generate {name} items: {type(error).__name__}: {error}"
        ) from error
    checker = ReasoningGymChecker(dataset.score_answer)
    items = [
        Item(
            id=f"{name}/{index}",
            question=str(entry["question"]),
            prompt=checker.prompt(str(entry["question"])),
            reference=str(entry["answer"]),
            checker="reasoning-gym",
            data={"entry": entry},
        )
        for index, entry in enumerate(entries)
    ]
    score: ScoreFn = dataset.score_answer
    return items, score
