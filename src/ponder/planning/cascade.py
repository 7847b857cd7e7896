"""Fitting the small-to-large cascade (in the spirit of FrugalGPT and RouteLLM): the small model
answers first with a probe of k samples; when the probe is not confident enough (its vote share,
or its DeepConf confidence, below a threshold) the question goes to the large model, whose vote
of m samples answers instead. Both models' costs count on an escalated question.

Where the small run's samples were judged by the large model (`ponder bench judge`), the
feature can also be the judge's mean score of the probe samples holding the probe's answer
(`score`), and judging them is paid on every question. A judge call is mostly prompt reading; a
price without an input price (a local model priced by the machine time of its generated tokens)
charges its prompt tokens at the output price, which overstates a prompt token's machine time.

The fit searches k, m, the feature, the threshold and the vote (a plain majority, or weighted by
each sample's geometric-mean token probability where both runs have logprobs; the reference is
always the large model's plain majority) over two runs that share items (replayed
along random orderings of each model's samples, independently) for the cheapest cascade whose
accuracy reaches `target` x the large model's self-consistency accuracy at its best N, on the
same rows. Costs are dollars at each run's price (per token, or, on a machine priced by the hour,
the machine time its generated tokens took at the run's measured seconds per token, where the
larger model's slower tokens cost more: `ponder.bench.machine_time`), or tokens when a run is
unpriced. `cross_fit` judges the fitting procedure honestly, fold by fold over items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from typing import Literal

import numpy as np
import numpy.typing as npt

from ponder.bench.estimators import powers_of_two
from ponder.bench.judging import JudgeArrays, judge_key
from ponder.bench.replay import ReplayData, majority_paths
from ponder.planning.outcomes import (
    DEFAULT_FOLDS,
    DEFAULT_ORDERINGS,
    Outcome,
    PlanError,
    PlanRun,
    folds_of,
    linear_cost,
    mean_confidence,
)
from ponder.planning.policy import (
    CascadeExpected,
    CascadeFeature,
    CascadePolicy,
    Provenance,
    Vote,
)
from ponder.planning.pricing import Price

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]
FEATURES: tuple[CascadeFeature, ...] = ("share", "confidence")
DEFAULT_TARGET = 0.95
MEAN_LOGPROB: Vote = "mean-logprob"


@dataclass(frozen=True, eq=False)
class _Side:
    """One model's self-consistency per row after n = 1, 2, 4, ... S samples: whether its
    answer is right by each vote the run allows (`correct[vote][n]`: the majority always, the
    mean-logprob vote where the run has logprobs), and tokens, latency (parallel: the slowest)
    and cost of the n."""

    sizes: tuple[int, ...]
    correct: dict[Vote, dict[int, BoolArray]]
    tokens: dict[int, FloatArray]
    latency: dict[int, FloatArray]
    cost: dict[int, FloatArray]
    share: dict[int, FloatArray]
    confidence: dict[int, FloatArray]
    score: dict[int, FloatArray] | None = None
    """The judge's mean score of the probe samples holding its answer (NaN: none answered)."""
    judging: dict[int, FloatArray] | None = None
    """What judging those samples cost, in the table's cost unit."""

    def feature(self, name: CascadeFeature, n: int) -> FloatArray:
        if name == "score":
            assert self.score is not None
            return self.score[n]
        return (self.share if name == "share" else self.confidence)[n]

    def probe_cost(self, feature: CascadeFeature, n: int) -> FloatArray:
        """The probe's cost, judging included when the feature is the judge's score."""
        if feature == "score":
            assert self.judging is not None
            return self.cost[n] + self.judging[n]
        return self.cost[n]


@dataclass(frozen=True, eq=False)
class CascadeTable:
    """Rows (ordering, shared item) of a small and a large run, replayed independently."""

    items: int
    item: IntArray
    small: _Side
    large: _Side
    cost_unit: Literal["usd", "tokens"]
    large_model: str

    @property
    def rows(self) -> int:
        return int(self.item.size)

    @property
    def votes(self) -> list[Vote]:
        """The votes both runs allow."""
        return [v for v in self.small.correct if v in self.large.correct]

    @property
    def features(self) -> tuple[CascadeFeature, ...]:
        """The features the small run allows: the judge's score where it was judged."""
        return (*FEATURES, "score") if self.small.score is not None else FEATURES

    def best_large(self, rows: BoolArray) -> tuple[int, float, float]:
        """The large model's self-consistency (plain majority) at its best N on `rows`: (N,
        accuracy, cost); the smallest N of equally accurate ones."""
        majority = self.large.correct["majority"]
        scored = [
            (float(majority[n][rows].mean()), -n, float(self.large.cost[n][rows].mean()))
            for n in self.large.sizes
        ]
        accuracy, minus_n, cost = max(scored)
        return -minus_n, accuracy, cost


def _side(
    run: PlanRun,
    orderings: int,
    seed: int,
    priced: bool,
    judge: JudgeArrays | None = None,
    judge_price: Price | None = None,
) -> _Side:
    weighted = MEAN_LOGPROB in run.data.scores
    sums = {} if judge is None else {"score": judge.score, "judging": _judging(judge, judge_price)}
    paths = majority_paths(
        run.data,
        orderings=orderings,
        seed=seed,
        weight=MEAN_LOGPROB if weighted else None,
        leader_sums=sums,
    )
    spent = np.cumsum(paths.tokens, axis=0, dtype=np.float64)
    sizes = tuple(powers_of_two(paths.depth))
    correct: dict[Vote, dict[int, BoolArray]] = {"majority": {}}
    if paths.weighted is not None:
        correct[MEAN_LOGPROB] = {}
    tokens, latency, cost, share, confidence = {}, {}, {}, {}, {}
    score: dict[int, FloatArray] = {}
    judging: dict[int, FloatArray] = {}
    for n in sizes:
        if judge is not None:
            held = paths.votes[n - 1].astype(np.float64)
            score[n] = np.full(held.shape, np.nan)
            np.divide(paths.leader_sums["score"][n - 1], held, out=score[n], where=held > 0)
            judging[n] = paths.leader_sums["judging"][n - 1]
        correct["majority"][n] = paths.correct[n - 1]
        if paths.weighted is not None:
            correct[MEAN_LOGPROB][n] = paths.weighted[n - 1]
        tokens[n] = spent[n - 1]
        latency[n] = paths.latency[:n].max(axis=0).astype(np.float64)
        priced_cost = linear_cost(run.price, run.prompt_tokens, n, tokens[n], latency[n])
        cost[n] = priced_cost if priced and priced_cost is not None else tokens[n]
        share[n] = paths.votes[n - 1] / n
        confidence[n] = mean_confidence(paths.confidence[:n])
    return _Side(
        sizes,
        correct,
        tokens,
        latency,
        cost,
        share,
        confidence,
        score if judge is not None else None,
        judging if judge is not None else None,
    )


def _judging(judge: JudgeArrays, price: Price | None) -> FloatArray:
    """Each judgement's cost: at `price` (a prompt token at the output price where the price
    has no input price), or its generated tokens when unpriced (the table counts tokens)."""
    if price is None:
        return judge.completion_tokens
    per_input = price.cost(1.0, 0.0, 0.0) or price.cost(0.0, 1.0, 0.0)
    return (
        judge.prompt_tokens * per_input
        + judge.completion_tokens * price.cost(0.0, 1.0, 0.0)
        + judge.seconds * price.cost(0.0, 0.0, 1.0)
    )


def cascade_table(
    small: PlanRun, large: PlanRun, *, orderings: int = DEFAULT_ORDERINGS, seed: int = 0
) -> CascadeTable:
    """The two runs replayed on their shared items (each run's data must hold the same items in
    the same order: see `shared_items`). Costs are in dollars when both runs are priced, else in
    tokens. Where the large model judged the small run's samples, the judge's score is a
    feature too."""
    if small.data.items != large.data.items:
        raise PlanError(
            f"the runs must hold the same items in the same order: {small.data.items} and "
            f"{large.data.items} items"
        )
    priced = small.price is not None and large.price is not None
    judge = small.judges.get(judge_key(large.source.model))
    if judge is not None and not judge.complete:
        judge = None  # random orderings need every sample judged
    return CascadeTable(
        items=small.data.items,
        item=np.tile(np.arange(small.data.items, dtype=np.intp), orderings),
        small=_side(small, orderings, seed, priced, judge, large.price if priced else None),
        large=_side(large, orderings, seed + 1, priced),
        cost_unit="usd" if priced else "tokens",
        large_model=large.source.model,
    )


def shared_items(small_ids: Sequence[str], large_ids: Sequence[str]) -> tuple[list[int], list[int]]:
    """Row indices, into each run's items, of the items both have (in the small run's order)."""
    position = {item: k for k, item in enumerate(large_ids)}
    pairs = [(k, position[item]) for k, item in enumerate(small_ids) if item in position]
    if not pairs:
        raise PlanError(
            "the small and the large run share no complete item; sample both on the same "
            "dataset (e.g. the same --dataset and --limit)"
        )
    return [a for a, _ in pairs], [b for _, b in pairs]


@dataclass(frozen=True)
class Choice:
    """One cascade: probe k, feature, threshold, large samples m, the vote both models answer
    by, and its numbers on the rows it was chosen on."""

    probe: int
    feature: CascadeFeature
    threshold: float
    samples: int
    vote: Vote
    accuracy: float
    cost: float
    escalated: float


def search(table: CascadeTable, rows: BoolArray, target: float) -> tuple[Choice, bool]:
    """The cheapest cascade on `rows` reaching `target` x the large model's best accuracy (of
    equally cheap ones the most accurate); the most accurate one if none reaches it. Returns it
    and whether the target was reached."""
    best_accuracy = table.best_large(rows)[1]
    goal = target * best_accuracy - 1e-12
    reaching: Choice | None = None
    fallback: Choice | None = None
    count = int(rows.sum())
    for vote, k in product(table.votes, table.small.sizes):
        small_ok = table.small.correct[vote][k][rows].astype(np.float64)
        for feature in table.features:
            small_cost = table.small.probe_cost(feature, k)[rows]
            values = table.small.feature(feature, k)[rows]
            values = np.where(np.isnan(values), -np.inf, values)  # no value: escalate
            order = np.argsort(values, kind="stable")
            ordered = values[order]
            cuts, thresholds = _cuts(ordered)
            kept_ok = small_ok[order].sum() - np.concatenate(([0.0], np.cumsum(small_ok[order])))
            for m in table.large.sizes:
                large_ok = table.large.correct[vote][m][rows][order].astype(np.float64)
                large_cost = table.large.cost[m][rows][order]
                gained = np.concatenate(([0.0], np.cumsum(large_ok)))
                paid = np.concatenate(([0.0], np.cumsum(large_cost)))
                accuracy = (gained[cuts] + kept_ok[cuts]) / count
                cost = (small_cost.sum() + paid[cuts]) / count
                options = [
                    _option(k, feature, m, vote, cuts, thresholds, accuracy, cost, count, j)
                    for j in _best_two(accuracy, cost, goal)
                ]
                for option in options:
                    if option.accuracy >= goal and (reaching is None or _cheaper(option, reaching)):
                        reaching = option
                    if fallback is None or _more_accurate(option, fallback):
                        fallback = option
    if reaching is not None:
        return reaching, True
    assert fallback is not None
    return fallback, False


def _best_two(accuracy: FloatArray, cost: FloatArray, goal: float) -> list[int]:
    """Of one (k, feature, m)'s thresholds: the cheapest reaching `goal` (of equally cheap the
    most accurate) and the most accurate (of equally accurate the cheapest)."""
    picks = [int(np.lexsort((cost, -accuracy))[0])]
    reaching = np.flatnonzero(accuracy >= goal)
    if reaching.size:
        picks.append(int(reaching[np.lexsort((-accuracy[reaching], cost[reaching]))[0]]))
    return picks


def _option(
    k: int,
    feature: CascadeFeature,
    m: int,
    vote: Vote,
    cuts: IntArray,
    thresholds: list[float],
    accuracy: FloatArray,
    cost: FloatArray,
    count: int,
    j: int,
) -> Choice:
    return Choice(
        probe=k,
        feature=feature,
        threshold=thresholds[j],
        samples=m,
        vote=vote,
        accuracy=float(accuracy[j]),
        cost=float(cost[j]),
        escalated=float(cuts[j] / count),
    )


def _cuts(ordered: FloatArray) -> tuple[IntArray, list[float]]:
    """The escalation counts a threshold can make on ascending feature values (the rows below
    it escalate, and -inf, no confidence, always does) and a finite threshold for each."""
    count = ordered.size
    positions = np.arange(count)
    boundary = np.ones(count, dtype=bool)
    boundary[1:] = ordered[1:] != ordered[:-1]
    boundary &= ordered > -np.inf
    cuts = np.concatenate((positions[boundary], [count])).astype(np.intp)
    thresholds = [float(v) for v in ordered[boundary]]
    if count and ordered[-1] > -np.inf:
        thresholds.append(float(np.nextafter(ordered[-1], np.inf)))
    else:
        thresholds.append(0.0)
    return cuts, thresholds


def _cheaper(option: Choice, than: Choice) -> bool:
    return option.cost < than.cost or (option.cost == than.cost and option.accuracy > than.accuracy)


def _more_accurate(option: Choice, than: Choice) -> bool:
    return option.accuracy > than.accuracy or (
        option.accuracy == than.accuracy and option.cost < than.cost
    )


def fit_cascade(
    small: PlanRun,
    large: PlanRun,
    *,
    target: float = DEFAULT_TARGET,
    orderings: int = DEFAULT_ORDERINGS,
    seed: int = 0,
    window: int = 16,
    command: str = "",
) -> CascadePolicy:
    """The cheapest cascade from `small` to `large` (runs already reduced to their shared
    items, in one order) that reaches `target` of the large model's best accuracy. `window` is
    the DeepConf group window the runs' confidences were summarised with."""
    _check_target(target)
    table = cascade_table(small, large, orderings=orderings, seed=seed)
    rows = np.ones(table.rows, dtype=bool)
    choice, reached = search(table, rows, target)
    best_n, best_accuracy, best_cost = table.best_large(rows)
    outcome = play(table, choice, rows)
    return CascadePolicy(
        small_model=small.source.model,
        large_model=large.source.model,
        probe=choice.probe,
        feature=choice.feature,
        threshold=choice.threshold,
        samples=choice.samples,
        vote=choice.vote,
        top_logprobs=small.source.top_logprobs,
        window=window,
        target=target,
        cost_unit=table.cost_unit,
        expected=CascadeExpected(
            accuracy=choice.accuracy,
            cost=choice.cost,
            tokens=float(outcome.tokens.mean()),
            escalated=choice.escalated,
            large_best_n=best_n,
            large_best_accuracy=best_accuracy,
            large_best_cost=best_cost,
            reached=reached,
        ),
        fitted_on=Provenance.now([small.source, large.source], command, orderings, seed),
    )


def _check_target(target: float) -> None:
    if not 0.0 < target <= 1.5:
        raise PlanError(f"the target is a fraction of the large model's accuracy, got {target}")


def play(table: CascadeTable, choice: Choice | CascadePolicy, rows: BoolArray) -> Outcome:
    """What a cascade answers and spends on `rows` of `table`."""
    k, m, vote = choice.probe, choice.samples, choice.vote
    if k not in table.small.sizes or m not in table.large.sizes:
        raise PlanError(
            f"the cascade takes {k} small and {m} large samples; the runs replay "
            f"{list(table.small.sizes)} and {list(table.large.sizes)}"
        )
    if vote not in table.votes:
        raise PlanError(f"the cascade answers by a {vote} vote; the runs have no logprobs for it")
    if choice.feature not in table.features:
        raise PlanError(
            f"the cascade routes on the judge's score, and {table.large_model!r} judged none "
            "of the small run's samples (`ponder bench judge SMALL --judge-model LARGE`)"
        )
    values = table.small.feature(choice.feature, k)[rows]
    escalate = np.isnan(values) | (values < choice.threshold)
    small, large = table.small, table.large
    cost = small.probe_cost(choice.feature, k)[rows] + np.where(escalate, large.cost[m][rows], 0.0)
    return Outcome(
        item=table.item[rows],
        items=table.items,
        correct=np.where(escalate, large.correct[vote][m][rows], small.correct[vote][k][rows]),
        tokens=small.tokens[k][rows] + np.where(escalate, large.tokens[m][rows], 0.0),
        latency=small.latency[k][rows] + np.where(escalate, large.latency[m][rows], 0.0),
        samples=k + np.where(escalate, float(m), 0.0),
        cost=cost,
    )


def cross_fit(
    table: CascadeTable,
    *,
    target: float = DEFAULT_TARGET,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
) -> tuple[Outcome, float]:
    """Each fold of items played by the cascade searched on the other folds. Returns the
    outcome and the share of rows escalated."""
    _check_target(target)
    fold = folds_of(table.items, folds, seed)[table.item]
    correct = np.zeros(table.rows, dtype=bool)
    tokens, latency = np.zeros(table.rows), np.zeros(table.rows)
    samples, cost = np.zeros(table.rows), np.zeros(table.rows)
    escalated = 0.0
    for k in np.unique(fold):
        held_out = fold == k
        choice, _ = search(table, ~held_out, target)
        outcome = play(table, choice, held_out)
        correct[held_out], tokens[held_out] = outcome.correct, outcome.tokens
        latency[held_out], samples[held_out] = outcome.latency, outcome.samples
        assert outcome.cost is not None
        cost[held_out] = outcome.cost
        escalated += float((outcome.samples > choice.probe).sum())
    outcome = Outcome(table.item, table.items, correct, tokens, latency, samples, cost)
    return outcome, escalated / table.rows


def oracle(table: CascadeTable, target: float = DEFAULT_TARGET) -> tuple[Outcome, int, int]:
    """The bound no router can beat: a cascade that knows which answers are right. It keeps the
    small model's answer of k where it is right, escalates to the large model's answer of m
    only where that one is right instead, and otherwise keeps the small answer (both wrong: more
    samples would not help). Of every (k, m) and vote, the cheapest reaching `target` x the large
    model's best accuracy (else the most accurate). Returns its outcome on all rows, k and m."""
    _check_target(target)
    every = np.ones(table.rows, dtype=bool)
    goal = target * table.best_large(every)[1] - 1e-12
    best: tuple[tuple[bool, float, float], Outcome, int, int] | None = None
    small, large = table.small, table.large
    for vote, k, m in product(table.votes, small.sizes, large.sizes):
        right_small, right_large = small.correct[vote][k], large.correct[vote][m]
        escalate = ~right_small & right_large
        outcome = Outcome(
            item=table.item,
            items=table.items,
            correct=right_small | right_large,
            tokens=small.tokens[k] + np.where(escalate, large.tokens[m], 0.0),
            latency=small.latency[k] + np.where(escalate, large.latency[m], 0.0),
            samples=k + np.where(escalate, float(m), 0.0),
            cost=small.cost[k] + np.where(escalate, large.cost[m], 0.0),
        )
        accuracy = float(outcome.correct.mean())
        assert outcome.cost is not None
        cost = float(outcome.cost.mean())
        reached = accuracy >= goal
        # reaching first, then cheaper; among those missing, more accurate first
        key = (reached, -cost if reached else accuracy, -cost)
        if best is None or key > best[0]:
            best = (key, outcome, k, m)
    assert best is not None
    return best[1], best[2], best[3]


def reduce_to(run: PlanRun, rows: Sequence[int]) -> PlanRun:
    """`run` with only the items at `rows` (e.g. the items it shares with another run)."""
    data = run.data
    index = np.asarray(rows, dtype=np.intp)
    traces = data.group_confidence
    reduced = ReplayData(
        groups=np.asarray(data.groups)[index],
        correct=np.asarray(data.correct)[index],
        tokens=np.asarray(data.tokens)[index],
        latency=np.asarray(data.latency)[index],
        confidence=np.asarray(data.confidence)[index],
        group_confidence=None if traces is None else [traces[i] for i in index],
        scores={name: np.asarray(values)[index] for name, values in data.scores.items()},
        group_correct=np.asarray(data.group_correct)[index],
    )
    items = [run.source.items[i] for i in index] if run.source.items else []
    return PlanRun(
        reduced,
        run.source.model_copy(update={"items": items}),
        run.prompt_tokens,
        run.price,
        {name: judge.take(rows) for name, judge in run.judges.items()},
    )
