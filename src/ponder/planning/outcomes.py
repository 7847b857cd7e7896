"""What planners are fitted and judged on: stored runs replayed along random orderings of each
item's samples (`ponder.bench.replay.majority_paths`), reduced per (ordering, item) row to the
features of each read (the probe, and any rereads) and to what every candidate action would have
answered and cost.

Costs are accounted as replay accounts them: tokens are the completion tokens of the samples
drawn; samples drawn together decode in parallel, so a round costs its slowest sample's
latency, and rounds add up (the probe, then the samples up to each reread, then the rest).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ponder.bench.estimators import bootstrap_ci, powers_of_two
from ponder.bench.judging import JudgeArrays
from ponder.bench.replay import MajorityPaths, ReplayData
from ponder.errors import InvalidRequestError
from ponder.planning.policy import Feature, RunSource
from ponder.planning.pricing import Price

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]

DEFAULT_FOLDS = 5
DEFAULT_ORDERINGS = 100


class PlanError(InvalidRequestError):
    """The runs cannot be planned on as asked (too few samples for the probe, no shared items,
    too few items to cross-fit, ...)."""


@dataclass(frozen=True, eq=False)
class PlanRun:
    """One run as planners see it: its complete items as replay arrays, what it is, and what
    it costs (`price` None: unpriced; `prompt_tokens` None: not recorded), and the judges that
    scored its samples."""

    data: ReplayData
    source: RunSource
    prompt_tokens: float | None = None
    price: Price | None = None
    judges: Mapping[str, JudgeArrays] = field(default_factory=dict)
    """Judges that scored every sample (`ponder bench judge`), by verifier name."""


def mean_confidence(confidence: npt.ArrayLike) -> FloatArray:
    """Column-wise mean of the finite confidences ([samples, rows]); NaN where none is finite
    (a probe without logprobs has no confidence)."""
    values = np.asarray(confidence, dtype=np.float64)
    finite = ~np.isnan(values)
    count = finite.sum(axis=0)
    total = np.where(finite, values, 0.0).sum(axis=0)
    mean = np.full(total.shape, np.nan)
    np.divide(total, count, out=mean, where=count > 0)
    return mean


@dataclass(frozen=True, eq=False)
class Probed:
    """Per (ordering, item) row of one or more runs: the features of each read (the probe and
    the rereads, `[reads, rows]`) and, for each action (total samples, the probe's included),
    whether its majority is right and what it cost. `reference` is plain self-consistency at
    N = 1, 2, 4, ... S on the same rows."""

    reads: tuple[int, ...]
    actions: tuple[int, ...]
    items: int
    item: IntArray
    votes: IntArray
    confidence: FloatArray
    length: FloatArray
    correct: BoolArray
    tokens: FloatArray
    latency: FloatArray
    reference: dict[int, tuple[BoolArray, FloatArray]]

    @property
    def rows(self) -> int:
        return int(self.item.size)

    @property
    def probe(self) -> int:
        return self.reads[0]

    def feature(self, name: Feature | None) -> FloatArray:
        """The rows' values of a splitting feature at each read, `[reads, rows]` (zeros for
        None: one bin per vote level)."""
        if name is None:
            return np.zeros(self.votes.shape)
        return self.confidence if name == "confidence" else self.length

    def action(self, samples: npt.ArrayLike) -> IntArray:
        """The action index of each total of samples (every one must be an action)."""
        position = {n: k for k, n in enumerate(self.actions)}
        wanted = np.asarray(samples, dtype=np.intp)
        missing = sorted(set(wanted.ravel().tolist()) - set(position))
        if missing:
            raise PlanError(
                f"the policy draws {missing[0]} samples; replayed actions: {self.actions}"
            )
        lookup = np.zeros(max(self.actions) + 1, dtype=np.intp)
        lookup[list(position)] = list(position.values())
        return lookup[wanted]

    def best_reference(self, rows: BoolArray) -> tuple[int, float, float]:
        """Self-consistency at its best N on `rows`: (N, accuracy, mean tokens); the smallest N
        of equally accurate ones."""
        scored = [
            (float(correct[rows].mean()), -n, float(tokens[rows].mean()))
            for n, (correct, tokens) in self.reference.items()
        ]
        accuracy, minus_n, tokens = max(scored)
        return -minus_n, accuracy, tokens

    def reference_tokens(self, n: int, rows: BoolArray) -> float:
        """Mean tokens of self-consistency with n samples on `rows`."""
        if n not in self.reference:
            raise PlanError(
                f"no self-consistency reference at N={n}; have {sorted(self.reference)}"
            )
        return float(self.reference[n][1][rows].mean())


def probed(
    paths: MajorityPaths, probe: int, actions: Sequence[int], rereads: Sequence[int] = ()
) -> Probed:
    """`paths` reduced to the features of each read (the probe, then the rereads) and each
    action's outcome: its weighted vote where the paths have one, else its majority (the
    reference is always plain majority). Samples are drawn in rounds that end at each read, and
    a round costs its slowest sample's latency."""
    if not 1 <= probe <= paths.depth:
        raise PlanError(
            f"a probe of {probe} samples needs runs with at least {probe} samples per item; "
            f"this one has {paths.depth}"
        )
    if not actions or min(actions) < probe or max(actions) > paths.depth:
        raise PlanError(
            f"actions must lie in {probe}..{paths.depth} samples (the probe .. samples per item), "
            f"got {list(actions)}"
        )
    reads = (probe, *rereads)
    if any(n not in actions for n in rereads) or sorted(set(reads)) != list(reads):
        raise PlanError(f"rereads must be actions after the probe, ascending; got {list(rereads)}")
    spent = np.cumsum(paths.tokens, axis=0, dtype=np.float64)
    answered = paths.correct if paths.weighted is None else paths.weighted
    latency = []
    for n in actions:
        starts = [0, *(r for r in reads if r < n)]
        ends = [*starts[1:], n]
        rounds = [paths.latency[a:b].max(axis=0) for a, b in zip(starts, ends, strict=True)]
        latency.append(np.sum(rounds, axis=0, dtype=np.float64))
    return Probed(
        reads=reads,
        actions=tuple(actions),
        items=paths.items,
        item=paths.item,
        votes=np.stack([paths.votes[n - 1] for n in reads]).astype(np.intp),
        confidence=np.stack([mean_confidence(paths.confidence[:n]) for n in reads]),
        length=np.stack([spent[n - 1] / n for n in reads]),
        correct=np.stack([answered[n - 1] for n in actions]),
        tokens=np.stack([spent[n - 1] for n in actions]),
        latency=np.stack(latency),
        reference={n: (paths.correct[n - 1], spent[n - 1]) for n in powers_of_two(paths.depth)},
    )


def join(parts: Sequence[Probed]) -> Probed:
    """Rows of several runs as one table (items numbered run after run)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if any(p.reads != first.reads or p.actions != first.actions for p in parts):
        raise PlanError("runs joined for one fit must share the reads and the actions")
    shared = set.intersection(*(set(p.reference) for p in parts))
    offsets = np.cumsum([0] + [p.items for p in parts[:-1]])
    return Probed(
        reads=first.reads,
        actions=first.actions,
        items=sum(p.items for p in parts),
        item=np.concatenate([p.item + offset for p, offset in zip(parts, offsets, strict=True)]),
        votes=np.concatenate([p.votes for p in parts], axis=1),
        confidence=np.concatenate([p.confidence for p in parts], axis=1),
        length=np.concatenate([p.length for p in parts], axis=1),
        correct=np.concatenate([p.correct for p in parts], axis=1),
        tokens=np.concatenate([p.tokens for p in parts], axis=1),
        latency=np.concatenate([p.latency for p in parts], axis=1),
        reference={
            n: (
                np.concatenate([p.reference[n][0] for p in parts]),
                np.concatenate([p.reference[n][1] for p in parts]),
            )
            for n in sorted(shared)
        },
    )


def folds_of(items: int, folds: int, seed: int) -> IntArray:
    """Each item's fold, for K-fold cross-fitting over items: a seeded shuffle dealt round
    robin, so folds differ in size by one at most."""
    if items < 2:
        raise PlanError(f"cross-fitting needs at least 2 items, got {items}")
    if folds < 2:
        raise PlanError(f"cross-fitting needs at least 2 folds, got {folds}")
    order = np.random.default_rng(seed).permutation(items)
    fold = np.empty(items, dtype=np.intp)
    fold[order] = np.arange(items) % min(folds, items)
    return fold


def per_item(item: IntArray, correct: npt.ArrayLike, items: int) -> FloatArray:
    """Accuracy per item of rows (`item` their items), averaged over each item's orderings."""
    right = np.bincount(item, weights=np.asarray(correct, dtype=np.float64), minlength=items)
    seen = np.bincount(item, minlength=items)
    return np.asarray(right / np.maximum(seen, 1), dtype=np.float64)


@dataclass(frozen=True, eq=False)
class Outcome:
    """Per row: what a plan answered and spent."""

    item: IntArray
    items: int
    correct: BoolArray
    tokens: FloatArray
    latency: FloatArray
    samples: FloatArray
    cost: FloatArray | None = None

    def per_item(self) -> FloatArray:
        """Accuracy per item, averaged over its orderings."""
        return per_item(self.item, self.correct, self.items)

    def versus(
        self, reference: Mapping[int, BoolArray], *, resamples: int = 1000, seed: int = 0
    ) -> dict[int, tuple[float, float, float]]:
        """This plan's accuracy minus each reference's (right or not per row, on the same rows:
        e.g. plain majority at N samples, `Probed.reference`), as (difference, low, high) with
        a 95 % paired bootstrap interval over items: the two answer the same questions, so
        their difference is much surer than either interval says."""
        mine = self.per_item()
        ns = sorted(reference)
        if not ns:
            return {}
        gaps = np.stack([mine - per_item(self.item, reference[n], self.items) for n in ns])
        low, high = bootstrap_ci(gaps, resamples=resamples, seed=seed)
        return {
            n: (float(gap.mean()), float(lo), float(hi))
            for n, gap, lo, hi in zip(ns, gaps, low, high, strict=True)
        }

    def score(self, *, resamples: int = 1000, seed: int = 0) -> Score:
        per_item = self.per_item()
        low, high = bootstrap_ci(per_item, resamples=resamples, seed=seed)
        return Score(
            accuracy=float(per_item.mean()),
            ci_low=float(low[0]),
            ci_high=float(high[0]),
            tokens=float(self.tokens.mean()),
            latency_s=float(self.latency.mean()),
            samples=float(self.samples.mean()),
            cost=None if self.cost is None else float(self.cost.mean()),
            items=self.items,
        )


@dataclass(frozen=True)
class Score:
    """A plan's accuracy (95 % bootstrap interval over items) and mean costs per item."""

    accuracy: float
    ci_low: float
    ci_high: float
    tokens: float
    latency_s: float
    samples: float
    cost: float | None
    items: int


def linear_cost(
    price: Price | None,
    prompt: float | None,
    samples: npt.ArrayLike,
    tokens: npt.ArrayLike,
    latency: npt.ArrayLike,
) -> FloatArray | None:
    """Each row's cost at `price` (None: unpriced): every sample sends the prompt again, and a
    price is linear in (input tokens, output tokens, seconds), so it is evaluated once per unit
    and applied to whole arrays."""
    if price is None:
        return None
    per_input = price.cost(1.0, 0.0, 0.0)
    per_output = price.cost(0.0, 1.0, 0.0)
    per_second = price.cost(0.0, 0.0, 1.0)
    return np.asarray(
        (prompt or 0.0) * np.asarray(samples, dtype=np.float64) * per_input
        + np.asarray(tokens, dtype=np.float64) * per_output
        + np.asarray(latency, dtype=np.float64) * per_second,
        dtype=np.float64,
    )
