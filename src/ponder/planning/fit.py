"""Fitting the `auto` planner (after Snell et al. 2024, "Scaling LLM test-time compute optimally",
arXiv 2408.03314): a cheap probe estimates how hard a question is, and the compute goes where it
buys the most accuracy.

Bins. Rows are (ordering, item) pairs of stored runs. A row's bin is its probe's vote level (how
many of the k probe samples the leading answer holds), split into `splits` quantile bins of one
more feature (DeepConf confidence or length) where the level holds enough items.

Allocation. Every bin starts at "stop after the probe"; then, greedily, the bin and action with
the most accuracy gained per extra token moves up (an action is a total number of samples, the
probe's included, among `actions`): the upper convex hull of each bin's accuracy-token curve,
walked in order of marginal value, so every point of the path is the best the bins can do for
its tokens (up to the hull's corners). The objective picks the point: the first that reaches
`match` x self-consistency's best accuracy, or the last within a token budget. Bins where more
samples add nothing (easy: the probe is already right; hopeless: nothing helps) stay at the
probe.

A policy judged on the rows it was fitted on flatters itself, so `cross_fit` fits on K-1 folds
of the items and plays the fold left out, for every fold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
    locate,
)

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]


@dataclass(frozen=True)
class _Bounds:
    votes: int
    low: float | None
    high: float | None
    weight: float


@dataclass(frozen=True)
class _Fit:
    """Bins and their actions, fitted on some rows."""

    bins: list[Bin]
    expected: Expected


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
        parts.append(probed(paths, settings.probe, settings.actions))
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
        bins=fitted.bins,
        expected=fitted.expected,
        fitted_on=Provenance.now([run.source for run in runs], command, orderings, seed),
    )


def fit_bins(table: Probed, rows: BoolArray, settings: PlanSettings) -> _Fit:
    """Bins on `rows` of `table`, each with the action the objective's allocation gives it."""
    if not rows.any():
        raise PlanError("nothing to fit on: no rows")
    bounds = _bin_bounds(table, rows, settings)
    where = locate(bounds, table.votes[rows], table.feature(settings.feature)[rows])
    count = rows.sum()
    width = len(bounds)
    weight = np.bincount(where, minlength=width) / count
    correct = np.stack(
        [np.bincount(where, weights=c[rows], minlength=width) / count for c in table.correct]
    ).T
    tokens = np.stack(
        [np.bincount(where, weights=t[rows], minlength=width) / count for t in table.tokens]
    ).T
    path = allocate(correct, tokens)
    best_n, best_accuracy, best_tokens = table.best_reference(rows)
    choice, reached = _pick(path, correct, tokens, settings, table, rows, best_accuracy)
    index = np.arange(width)
    bins = [
        Bin(
            votes=b.votes,
            low=b.low,
            high=b.high,
            samples=table.actions[choice[k]],
            weight=float(weight[k]),
            accuracy_at_probe=float(correct[k, 0] / weight[k]) if weight[k] else 0.0,
            accuracy=float(correct[k, choice[k]] / weight[k]) if weight[k] else 0.0,
            tokens=float(tokens[k, choice[k]] / weight[k]) if weight[k] else 0.0,
        )
        for k, b in enumerate(bounds)
    ]
    samples = np.asarray(table.actions, dtype=np.float64)[choice]
    expected = Expected(
        accuracy=float(correct[index, choice].sum()),
        tokens=float(tokens[index, choice].sum()),
        samples=float((weight * samples).sum()),
        best_n=best_n,
        best_accuracy=best_accuracy,
        best_tokens=best_tokens,
        reached=reached,
    )
    return _Fit(bins, expected)


def _bin_bounds(table: Probed, rows: BoolArray, settings: PlanSettings) -> list[_Bounds]:
    """Per vote level seen on `rows`: quantile edges of the feature, where every bin would
    hold `min_items` items; level by level, edges ascending."""
    feature = table.feature(settings.feature)
    bounds: list[_Bounds] = []
    for level in np.unique(table.votes[rows]):
        here = rows & (table.votes == level)
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
    provisional = locate(bounds, table.votes[rows], feature[rows])
    counts = np.bincount(provisional, minlength=len(bounds)) / rows.sum()
    return [_Bounds(b.votes, b.low, b.high, float(counts[k])) for k, b in enumerate(bounds)]


def allocate(correct: FloatArray, tokens: FloatArray) -> list[IntArray]:
    """The greedy allocation path over bins ([bins, actions] totals of correct rows and tokens,
    actions in ascending cost): from every bin at action 0, repeatedly make the move with the
    highest accuracy gained per token spent, jumping over actions below a bin's hull. Returns
    the choices after each move, the start included; accuracy never falls along the path."""
    bins, actions = correct.shape
    choice = np.zeros(bins, dtype=np.intp)
    path = [choice.copy()]
    while True:
        best: tuple[float, int, int] | None = None
        for b in range(bins):
            now = choice[b]
            for a in range(now + 1, actions):
                gain = correct[b, a] - correct[b, now]
                cost = tokens[b, a] - tokens[b, now]
                if gain <= 1e-15:
                    continue
                rate = gain / cost if cost > 0 else np.inf
                if best is None or rate > best[0]:
                    best = (rate, b, a)
        if best is None:
            return path
        choice[best[1]] = best[2]
        path.append(choice.copy())


def _pick(
    path: list[IntArray],
    correct: FloatArray,
    tokens: FloatArray,
    settings: PlanSettings,
    table: Probed,
    rows: BoolArray,
    best_accuracy: float,
) -> tuple[IntArray, bool]:
    """The point of the path the objective wants, and whether its accuracy target (if any) or
    its budget was met."""
    index = np.arange(correct.shape[0])
    accuracy = [float(correct[index, c].sum()) for c in path]
    spent = [float(tokens[index, c].sum()) for c in path]
    objective = settings.objective
    if objective.match is not None:
        target = objective.match * best_accuracy
        for k, value in enumerate(accuracy):
            if value >= target - 1e-12:
                return path[k], True
        return path[-1], False
    if objective.tokens is not None:
        budget = objective.tokens
    elif objective.tokens_of_n is not None:
        budget = table.reference_tokens(objective.tokens_of_n, rows)
    else:
        assert objective.tokens_of_best is not None
        budget = objective.tokens_of_best * table.best_reference(rows)[2]
    within = [k for k, value in enumerate(spent) if value <= budget * (1 + 1e-9)]
    if not within:
        return path[0], False
    return path[within[-1]], True


def apply(
    bins: Sequence[Bin],
    table: Probed,
    feature: Feature | None,
    rows: BoolArray | None = None,
) -> Outcome:
    """What bins (a policy's, or a fold's) that split on `feature` answer and spend on `rows`
    of `table` (default: all)."""
    rows = np.ones(table.rows, dtype=bool) if rows is None else rows
    missing = sorted({b.samples for b in bins} - set(table.actions))
    if missing:
        raise PlanError(f"the policy draws {missing[0]} samples; replayed actions: {table.actions}")
    where = locate(bins, table.votes[rows], table.feature(feature)[rows])
    position = {n: k for k, n in enumerate(table.actions)}
    action = np.array([position[b.samples] for b in bins], dtype=np.intp)[where]
    picked = np.flatnonzero(rows)
    return Outcome(
        item=table.item[rows],
        items=table.items,
        correct=table.correct[action, picked],
        tokens=table.tokens[action, picked],
        latency=table.latency[action, picked],
        samples=np.asarray(table.actions, dtype=np.float64)[action],
    )


def evaluate(policy: AutoPolicy, table: Probed) -> Outcome:
    """The policy as it is, on every row of `table` (fitted elsewhere: out of sample)."""
    return apply(policy.bins, table, policy.settings.feature)


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
        parts.append((held_out, apply(fitted.bins, table, settings.feature, held_out)))
    return _merge(table, parts)


def _merge(table: Probed, parts: Sequence[tuple[BoolArray, Outcome]]) -> Outcome:
    """Per-fold outcomes put back in row order."""
    correct = np.zeros(table.rows, dtype=bool)
    tokens, latency, samples = np.zeros(table.rows), np.zeros(table.rows), np.zeros(table.rows)
    for rows, outcome in parts:
        correct[rows], tokens[rows] = outcome.correct, outcome.tokens
        latency[rows], samples[rows] = outcome.latency, outcome.samples
    return Outcome(table.item, table.items, correct, tokens, latency, samples)
