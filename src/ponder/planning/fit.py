"""Fitting the `auto` planner (after Snell et al. 2024, "Scaling LLM test-time compute optimally",
arXiv 2408.03314): a cheap probe estimates how hard a question is, and the compute goes where it
buys the most accuracy.

Reads and bins. Rows are (ordering, item) pairs of stored runs. A question is read after the
probe and, if the settings have rereads, again at each reread (by everything drawn so far). A
row's bin at a read is the read's vote level (how many of the samples the leading answer holds),
split into `splits` quantile bins of one more feature (DeepConf confidence or length) where the
level holds enough items.

Allocation. Each bin's action is a total of samples: stop somewhere before the next read, or go
on to it and be read again. For a price of a token in accuracy (lambda), backward induction
gives each bin the action with the best mean accuracy - lambda x tokens over its rows, the last
read first, so each earlier read knows what going on is worth; a single read is the upper convex
hull of each bin's accuracy-token curve. Sweeping lambda from zero (most accurate) to the point
where every question stops at the probe traces the plans; the objective picks one: the fewest
tokens that reach `match` x self-consistency's best accuracy, or the most accurate within a
token budget. Bins where more samples add nothing (easy: the probe is already right; hopeless:
nothing helps) stop.

A policy judged on the rows it was fitted on flatters itself, so `cross_fit` fits on K-1 folds
of the items and plays the fold left out, for every fold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from ponder.bench.replay import majority_paths
from ponder.planning.outcomes import (
    DEFAULT_FOLDS,
    DEFAULT_ORDERINGS,
    Outcome,
    PlanError,
    PlanRun,
    Probed,
    folds_of,
    join,
    probed,
)
from ponder.planning.policy import (
    AutoPolicy,
    Bin,
    Expected,
    Feature,
    PlanSettings,
    Provenance,
    Reread,
    locate,
)

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]

TOKEN_PRICES: Final = np.concatenate([[0.0], np.geomspace(1e-8, 1.0, 481)])
"""The prices of a token, in accuracy, that the allocation sweeps: steps of under 4 %, from
free to a whole question right per token (past any gain a sample can bring)."""


@dataclass(frozen=True)
class _Bounds:
    votes: int
    low: float | None
    high: float | None
    weight: float


@dataclass(frozen=True)
class _Fit:
    """Bins of every read and their actions, fitted on some rows."""

    stages: list[list[Bin]]
    expected: Expected


@dataclass(frozen=True)
class _Plan:
    """One point of the allocation: each read's action per bin, and what it gives per row."""

    choices: list[IntArray]
    final: IntArray
    accuracy: float
    tokens: float


def probe_runs(
    runs: Sequence[PlanRun], settings: PlanSettings, *, orderings: int, seed: int
) -> Probed:
    """Every run replayed along `orderings` orderings and reduced to the probe and the actions
    of `settings`; runs sampled with fewer samples than the probe or the largest action are a
    clear error."""
    require_probe(runs, settings.probe)
    parts = []
    for run in runs:
        data = run.data
        if data.samples < max(settings.actions):
            raise PlanError(
                f"{run.source.path} has {data.samples} samples per item; the actions go up to "
                f"{max(settings.actions)}"
            )
        weight = None if settings.vote == "majority" else settings.vote
        paths = majority_paths(data, orderings=orderings, seed=seed, weight=weight)
        parts.append(probed(paths, settings.probe, settings.actions, settings.rereads))
    return join(parts)


def require_probe(runs: Sequence[PlanRun], probe: int) -> None:
    """Every run must have at least the probe's samples per item."""
    if not runs:
        raise PlanError("give at least one run to fit on")
    for run in runs:
        if run.data.samples < probe:
            raise PlanError(
                f"{run.source.path} has {run.data.samples} samples per item, fewer than the "
                f"probe ({probe}); use --probe {run.data.samples} or less"
            )


def fit_policy(
    runs: Sequence[PlanRun],
    settings: PlanSettings,
    *,
    orderings: int = DEFAULT_ORDERINGS,
    seed: int = 0,
    command: str = "",
) -> AutoPolicy:
    """An auto policy fitted on every complete item of `runs` (pooled)."""
    top = {run.source.top_logprobs for run in runs}
    if len(top) > 1 and settings.feature == "confidence":
        raise PlanError(
            f"the runs were sampled with different top_logprobs ({sorted(top)}), so their "
            "confidences are not comparable; fit on runs sampled alike or use --feature length"
        )
    table = probe_runs(runs, settings, orderings=orderings, seed=seed)
    fitted = fit_bins(table, np.ones(table.rows, dtype=bool), settings)
    return AutoPolicy(
        settings=settings,
        top_logprobs=max(top),
        bins=fitted.stages[0],
        rereads=[
            Reread(samples=n, bins=bins)
            for n, bins in zip(settings.rereads, fitted.stages[1:], strict=True)
        ],
        expected=fitted.expected,
        fitted_on=Provenance.now([run.source for run in runs], command, orderings, seed),
    )


def fit_bins(table: Probed, rows: BoolArray, settings: PlanSettings) -> _Fit:
    """Bins of every read on `rows` of `table`, each with the action the objective's point of
    the allocation gives it."""
    if not rows.any():
        raise PlanError("nothing to fit on: no rows")
    feature = table.feature(settings.feature)
    bounds = [_bin_bounds(table, rows, settings, read) for read in range(len(table.reads))]
    where = [locate(b, table.votes[k], feature[k]) for k, b in enumerate(bounds)]
    plans = _allocation(table, rows, where, [len(b) for b in bounds])
    best_n, best_accuracy, best_tokens = table.best_reference(rows)
    plan, reached = _pick(plans, settings, table, rows, best_accuracy)
    picked = np.arange(table.rows)
    action = table.action(plan.final)
    correct, tokens = table.correct[action, picked], table.tokens[action, picked]
    count = rows.sum()
    stages: list[list[Bin]] = []
    for k, (at, open_) in enumerate(
        zip(table.reads, _open(table.reads, plan.choices, where), strict=True)
    ):
        here = open_ & rows
        now = table.correct[table.action([at])[0]]
        stage = []
        for j, b in enumerate(bounds[k]):
            mine = here & (where[k] == j)
            seen = int(mine.sum())
            stage.append(
                Bin(
                    votes=b.votes,
                    low=b.low,
                    high=b.high,
                    samples=int(plan.choices[k][j]),
                    weight=seen / count,
                    accuracy_at_probe=float(now[mine].mean()) if seen else 0.0,
                    accuracy=float(correct[mine].mean()) if seen else 0.0,
                    tokens=float(tokens[mine].mean()) if seen else 0.0,
                )
            )
        stages.append(stage)
    expected = Expected(
        accuracy=plan.accuracy,
        tokens=plan.tokens,
        samples=float(plan.final[rows].mean()),
        best_n=best_n,
        best_accuracy=best_accuracy,
        best_tokens=best_tokens,
        reached=reached,
    )
    return _Fit(stages, expected)


def _bin_bounds(table: Probed, rows: BoolArray, settings: PlanSettings, read: int) -> list[_Bounds]:
    """Per vote level seen on `rows` at read `read`: quantile edges of the feature, where every
    bin would hold `min_items` items; level by level, edges ascending."""
    feature = table.feature(settings.feature)[read]
    votes = table.votes[read]
    bounds: list[_Bounds] = []
    for level in np.unique(votes[rows]):
        here = rows & (votes == level)
        values = feature[here]
        finite = values[~np.isnan(values)]
        edges: list[float] = []
        items = np.unique(table.item[here][~np.isnan(values)]).size
        wanted = settings.splits * settings.min_items
        if settings.feature is not None and settings.splits > 1 and items >= wanted:
            quantiles = np.quantile(finite, np.arange(1, settings.splits) / settings.splits)
            edges = sorted({float(q) for q in quantiles if q > finite.min()})
        lows: list[float | None] = [None, *edges]
        highs: list[float | None] = [*edges, None]
        share = here.sum() / rows.sum()
        for low, high in zip(lows, highs, strict=True):
            bounds.append(_Bounds(int(level), low, high, float(share) / len(lows)))
    # Weights only pick the bin of a missing value: make them the real row shares.
    provisional = locate(bounds, votes[rows], feature[rows])
    counts = np.bincount(provisional, minlength=len(bounds)) / rows.sum()
    return [_Bounds(b.votes, b.low, b.high, float(counts[k])) for k, b in enumerate(bounds)]


def _allocation(
    table: Probed, rows: BoolArray, where: Sequence[IntArray], widths: Sequence[int]
) -> list[_Plan]:
    """The plans of the allocation on `rows` (each read's bin of every row in `where`), from
    the most accurate to the cheapest, every question stopping at the probe, which ends it."""
    plans: list[_Plan] = []
    previous: list[IntArray] | None = None
    for price in TOKEN_PRICES:
        choices = _backward(table, rows, where, widths, float(price))
        if previous is None or any(
            not np.array_equal(a, b) for a, b in zip(choices, previous, strict=True)
        ):
            plans.append(_played(table, rows, where, choices))
            previous = choices
    reads = zip(table.reads, widths, strict=True)
    cheapest = [np.full(width, at, dtype=np.intp) for at, width in reads]
    plans.append(_played(table, rows, where, cheapest))
    return plans


def _backward(
    table: Probed, rows: BoolArray, where: Sequence[IntArray], widths: Sequence[int], price: float
) -> list[IntArray]:
    """Each read's best action per bin at `price` per token, the last read first: a bin stops
    at one of the actions before the next read or goes on to it, whichever gives its rows the
    most accuracy - price x tokens (the cheaper on a tie; an empty bin stops at once). A later
    read's bin is judged on all the fitting rows that fall in it, not only those an earlier read
    sends on: those are decided after it, and the bins already condition on what was drawn."""
    reads, actions = table.reads, table.actions
    every = np.arange(table.rows)
    going_on: FloatArray | None = None
    choices: list[IntArray] = []
    for k in reversed(range(len(reads))):
        end = reads[k + 1] if k + 1 < len(reads) else None
        stops = [a for a, n in enumerate(actions) if n >= reads[k] and (end is None or n < end)]
        values = [table.correct[a] - price * table.tokens[a] for a in stops]
        samples = [actions[a] for a in stops]
        if going_on is not None and end is not None:
            values.append(going_on)
            samples.append(end)
        stacked = np.stack(values)
        sums = np.stack(
            [np.bincount(where[k][rows], weights=v[rows], minlength=widths[k]) for v in stacked]
        )
        best = sums.argmax(axis=0)
        choices.append(np.asarray(samples, dtype=np.intp)[best])
        going_on = stacked[best[where[k]], every]
    return choices[::-1]


def _open(
    reads: Sequence[int], choices: Sequence[IntArray], where: Sequence[IntArray]
) -> list[BoolArray]:
    """Which rows each read is reached by: all at the probe, then those whose bin went on."""
    open_ = np.ones(where[0].shape, dtype=bool)
    reached = [open_]
    for k, then in enumerate(reads[1:]):
        open_ = open_ & (choices[k][where[k]] == then)
        reached.append(open_)
    return reached


def _finals(
    reads: Sequence[int], choices: Sequence[IntArray], where: Sequence[IntArray]
) -> IntArray:
    """Each row's total of samples: the action of the last read it reaches."""
    final = np.zeros(where[0].shape, dtype=np.intp)
    for open_, choice, bins in zip(_open(reads, choices, where), choices, where, strict=True):
        final[open_] = choice[bins[open_]]
    return final


def _played(
    table: Probed, rows: BoolArray, where: Sequence[IntArray], choices: list[IntArray]
) -> _Plan:
    final = _finals(table.reads, choices, where)
    picked = np.flatnonzero(rows)
    action = table.action(final[rows])
    return _Plan(
        choices=choices,
        final=final,
        accuracy=float(table.correct[action, picked].mean()),
        tokens=float(table.tokens[action, picked].mean()),
    )


def _pick(
    plans: Sequence[_Plan],
    settings: PlanSettings,
    table: Probed,
    rows: BoolArray,
    best_accuracy: float,
) -> tuple[_Plan, bool]:
    """The plan the objective wants, and whether its accuracy target (if any) or its budget
    was met: else the most accurate plan (a target) or the cheapest (a budget)."""
    objective = settings.objective
    if objective.match is not None:
        target = objective.match * best_accuracy
        reaching = [p for p in plans if p.accuracy >= target - 1e-12]
        if reaching:
            return min(reaching, key=lambda p: (p.tokens, -p.accuracy)), True
        return max(plans, key=lambda p: (p.accuracy, -p.tokens)), False
    if objective.tokens is not None:
        budget = objective.tokens
    elif objective.tokens_of_n is not None:
        budget = table.reference_tokens(objective.tokens_of_n, rows)
    else:
        assert objective.tokens_of_best is not None
        budget = objective.tokens_of_best * table.best_reference(rows)[2]
    within = [p for p in plans if p.tokens <= budget * (1 + 1e-9)]
    if not within:
        return min(plans, key=lambda p: (p.tokens, -p.accuracy)), False
    return max(within, key=lambda p: (p.accuracy, -p.tokens)), True


def apply(
    stages: Sequence[Sequence[Bin]],
    table: Probed,
    feature: Feature | None,
    rows: BoolArray | None = None,
) -> Outcome:
    """What the bins of every read (a policy's, or a fold's) that split on `feature` answer and
    spend on `rows` of `table` (default: all)."""
    rows = np.ones(table.rows, dtype=bool) if rows is None else rows
    if len(stages) != len(table.reads):
        raise PlanError(
            f"the policy reads {len(stages)} times; the replay was reduced to reads at "
            f"{list(table.reads)}"
        )
    values = table.feature(feature)
    where = [locate(bins, table.votes[k], values[k]) for k, bins in enumerate(stages)]
    choices = [np.array([b.samples for b in bins], dtype=np.intp) for bins in stages]
    final = _finals(table.reads, choices, where)[rows]
    action = table.action(final)
    picked = np.flatnonzero(rows)
    return Outcome(
        item=table.item[rows],
        items=table.items,
        correct=table.correct[action, picked],
        tokens=table.tokens[action, picked],
        latency=table.latency[action, picked],
        samples=final.astype(np.float64),
    )


def evaluate(policy: AutoPolicy, table: Probed) -> Outcome:
    """The policy as it is, on every row of `table` (fitted elsewhere: out of sample)."""
    return apply(policy.stages(), table, policy.settings.feature)


def cross_fit(
    table: Probed, settings: PlanSettings, *, folds: int = DEFAULT_FOLDS, seed: int = 0
) -> Outcome:
    """Each fold of items played by bins fitted on the other folds: an honest estimate of a
    policy fitted this way on these items."""
    fold = folds_of(table.items, folds, seed)[table.item]
    parts: list[tuple[BoolArray, Outcome]] = []
    for k in np.unique(fold):
        held_out = fold == k
        fitted = fit_bins(table, ~held_out, settings)
        parts.append((held_out, apply(fitted.stages, table, settings.feature, held_out)))
    return _merge(table, parts)


def _merge(table: Probed, parts: Sequence[tuple[BoolArray, Outcome]]) -> Outcome:
    """Per-fold outcomes put back in row order."""
    correct = np.zeros(table.rows, dtype=bool)
    tokens, latency, samples = np.zeros(table.rows), np.zeros(table.rows), np.zeros(table.rows)
    for rows, outcome in parts:
        correct[rows], tokens[rows] = outcome.correct, outcome.tokens
        latency[rows], samples[rows] = outcome.latency, outcome.samples
    return Outcome(table.item, table.items, correct, tokens, latency, samples)
