"""Synthetic runs for the planner and cascade tests: replay arrays with a known structure, and the
same as SQLite run stores for the CLI and the report."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ponder.bench.items import DatasetSpec, Item
from ponder.bench.replay import ReplayData
from ponder.bench.store import NO_ANSWER, RunConfig, RunStore, SampleRecord
from ponder.engines.types import Message
from ponder.planning.outcomes import PlanRun
from ponder.planning.policy import (
    AutoPolicy,
    Bin,
    Expected,
    Feature,
    Objective,
    PlanSettings,
    Provenance,
    Reread,
    RunSource,
)
from ponder.planning.pricing import Price

SAMPLES = 16
EASY = [0] * SAMPLES
"""Every sample gives the right answer (group 0)."""
HARD = [0] * 7 + [1] * 3 + [2] * 3 + [3] * 3
"""The right answer is a plurality of all 16, rarely of a few."""
HOPELESS = list(range(1, SAMPLES + 1))
"""Sixteen different wrong answers: no number of samples helps."""


class Kind:
    """An item kind: its answer groups and each sample's tokens and confidence."""

    def __init__(self, groups: Sequence[int], tokens: int, confidence: float) -> None:
        self.groups = list(groups)
        self.tokens = tokens
        self.confidence = confidence


KINDS = {
    "easy": Kind(EASY, 100, 9.0),
    "hard": Kind(HARD, 200, 7.0),
    "hopeless": Kind(HOPELESS, 500, 5.0),
}


def mix(easy: int = 10, hard: int = 10, hopeless: int = 20) -> list[Kind]:
    return [KINDS["easy"]] * easy + [KINDS["hard"]] * hard + [KINDS["hopeless"]] * hopeless


def replay_data(
    kinds: Sequence[Kind], *, latency: float = 1.0, confidence: bool = True
) -> ReplayData:
    """Items of the given kinds; group 0 is the right answer."""
    groups = np.array([k.groups for k in kinds], dtype=np.int32)
    width = int(groups.max()) + 1
    right = np.zeros((len(kinds), width), dtype=bool)
    right[:, 0] = True
    shape = groups.shape
    return ReplayData(
        groups=groups,
        correct=groups == 0,
        tokens=np.array([[k.tokens] * shape[1] for k in kinds], dtype=np.int32),
        latency=np.full(shape, latency, dtype=np.float32),
        confidence=np.array(
            [[k.confidence if confidence else np.nan] * shape[1] for k in kinds], dtype=np.float32
        ),
        group_confidence=None,
        scores={},
        group_correct=right,
    )


def source(items: int, *, model: str = "tiny", samples: int = SAMPLES) -> RunSource:
    return RunSource(
        path=f"{model}.db",
        model=model,
        engine="local",
        dataset="gsm8k",
        dataset_fingerprint="fp",
        samples=samples,
        temperature=0.8,
        max_tokens=512,
        top_logprobs=5,
        items=[f"q{i}" for i in range(items)],
    )


def plan_run(
    data: ReplayData, *, model: str = "tiny", price: Price | None = None, prompt: float = 10.0
) -> PlanRun:
    return PlanRun(data, source(data.items, model=model, samples=data.samples), prompt, price)


BinSpec = tuple[int, float | None, float | None, int]
"""(votes, low, high, samples) of a hand-made bin."""


def hand_bins(specs: Sequence[BinSpec]) -> list[Bin]:
    return [
        Bin(
            votes=votes,
            low=low,
            high=high,
            samples=samples,
            weight=1.0 / len(specs),
            accuracy_at_probe=0.0,
            accuracy=0.0,
            tokens=0.0,
        )
        for votes, low, high, samples in specs
    ]


def hand_policy(
    bins: Sequence[BinSpec],
    *,
    probe: int,
    actions: Sequence[int],
    feature: Feature | None = None,
    rereads: Mapping[int, Sequence[BinSpec]] | None = None,
) -> AutoPolicy:
    """A policy from (votes, low, high, samples) bins, and those of each reread, as if fitted."""
    rereads = rereads or {}
    return AutoPolicy(
        settings=PlanSettings(
            probe=probe,
            feature=feature,
            splits=1 if feature is None else 2,
            actions=list(actions),
            rereads=sorted(rereads),
            objective=Objective(match=1.0),
        ),
        top_logprobs=5,
        bins=hand_bins(bins),
        rereads=[Reread(samples=n, bins=hand_bins(rereads[n])) for n in sorted(rereads)],
        expected=Expected(
            accuracy=0.0,
            tokens=0.0,
            samples=0.0,
            best_n=1,
            best_accuracy=0.0,
            best_tokens=0.0,
            reached=True,
        ),
        fitted_on=Provenance.now([source(1)], "by hand", 1, 0),
    )


def write_store(
    path: Path,
    kinds: Sequence[Kind],
    *,
    model: str = "tiny",
    latency: float = 1.0,
    samples: int = SAMPLES,
    ids: Sequence[str] | None = None,
    fingerprint: str = "fp",
    dataset: str = "gsm8k",
    skip: int = 0,
) -> Path:
    """The items of `kinds` as a complete run store (the first `samples` samples of each), of
    `dataset` from its item `skip` + 1 on. The
    samples of an item decode together, item after item, each taking `latency` seconds: the
    run's machine time is `latency` per item (`ponder.bench.machine_time`)."""
    ids = [f"q{i}" for i in range(len(kinds))] if ids is None else list(ids)
    items = tuple(
        Item(
            id=item_id,
            question=f"{item_id}?",
            prompt=(Message(role="user", content=f"{item_id}?"),),
            reference="0",
            checker="math",
            data={},
        )
        for item_id in ids
    )
    config = RunConfig(
        dataset=DatasetSpec(name=dataset, skip=skip),
        dataset_fingerprint=fingerprint,
        items=len(kinds),
        model=model,
        engine="local",
        samples=samples,
        max_tokens=512,
        temperature=0.8,
        top_p=1.0,
        top_k=0,
        seed=0,
        top_logprobs=5,
        prompt_template="math-boxed-v1",
        ponder_version="0.1.0",
    )
    with RunStore.create_or_resume(path, config, items) as store:
        for i, kind in enumerate(kinds):
            for j in range(samples):
                group = kind.groups[j]
                store.add_sample(
                    SampleRecord(
                        item_index=i,
                        sample_index=j,
                        seed=j,
                        text=f"answer {group}",
                        finish_reason="stop",
                        answer=None if group == NO_ANSWER else str(group),
                        answer_group=group,
                        score=float(group == 0),
                        correct=group == 0,
                        grade_detail=None,
                        completion_tokens=kind.tokens,
                        latency_s=latency,
                        token_confidence=np.full(4, kind.confidence, dtype=np.float32),
                        token_logprob=np.full(4, -0.1, dtype=np.float32),
                    )
                )
            store.set_prompt_tokens(i, 10)
    finish_items_in_turn(path, latency)
    return path


FIRST_FINISH = 1.8e9
"""When a synthetic run's first item finished (epoch seconds)."""


def finish_items_in_turn(path: Path, latency: float, gap: float = 0.0) -> None:
    """Stored finish times for a run whose items decode one after another, all of an item's
    samples together: item i finishes at FIRST_FINISH + i x (its latency + `gap`) (`gap`: idle
    time between items)."""
    db = sqlite3.connect(path)
    try:
        with db:
            db.execute(
                "UPDATE samples SET created_at = ? + item_index * ?",
                (FIRST_FINISH, latency + gap),
            )
    finally:
        db.close()
