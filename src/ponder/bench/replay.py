"""Offline replay: evaluate every strategy at every sample budget from one stored run.

`ponder bench run` samples each item S times, once; replay then answers "what would strategy X
have scored with N samples?" for N = 1, 2, 4, ... S without calling a model again, by drawing
the first N samples of many random orderings of each item's S samples and averaging. Fixing the
samples and varying only who sees them in which order makes the strategies directly comparable:
they differ in how they decide, never in what was sampled.

Everything is vectorised across (ordering, item) rows. Samples are laid out position-major,
``[k, r * items + i]``, so step k of a strategy reads contiguous memory; Python loops run only
over sample positions k (or over N), and each step updates every row at once, e.g. the running
vote ``weight[row, group[k, row]] += w[k, row]`` with flat fancy indexing (each row touches one
cell per step, so no two updates collide).

Strategies (η: DeepConf's keep percentage):

* ``majority``: self-consistency; ties go to the answer seen first in the ordering.
* ``best-of-n:<verifier>``: the answered sample with the highest score (ties: the earliest),
  graded by its own correctness.
* ``weighted-vote:<verifier>``: each answer group collects its samples' scores.
* ``deepconf-offline@<η>``: among the first N, traces whose confidence is at least the
  (100 - η)th percentile of the answered ones vote, weighted by confidence.
* ``deepconf-online``: W = min(4, N) warm-up traces set s = their 10th percentile (η = 90);
  each later trace votes if its confidence >= s, else it was cut at the first token whose group
  confidence fell below s; sampling stops once two or more voters give the leader >= 95 % of the
  weight.
* ``adaptive-consistency``: one sample at a time, stop once P(p1 > p2) >= 0.95 under
  Beta(v1 + 1, v2 + 1) (Aggarwal et al. 2023); majority at the stop.
* ``esc``: windows of 4 (or N if smaller); stop after the first window whose answers are all
  present and equal (Li et al. 2024); majority of everything drawn.
* ``pass@k``: the unbiased estimator with n = S, k = N; an oracle ceiling, no orderings.

Cost model. Tokens are the completion tokens actually generated. Latency uses the measured
per-sample seconds: samples decoded together cost the slowest of them, rounds add up.

* Fixed-N strategies (majority, best-of-n, weighted vote, deepconf-offline, pass@k) decode N
  samples in parallel: latency = max of the N latencies, tokens = their sum. Both are exact
  expectations over a random N-subset (`expected_max`, N x mean tokens) rather than averages
  over the orderings: the same for every such strategy, and free of ordering noise.
* adaptive-consistency draws one sample per round: latency = the sum over drawn samples (the
  live strategy draws 2 at a time by default, so this overstates its latency).
* esc: each window decodes in parallel, windows in sequence: the sum of window maxima.
* deepconf-online: the warm-up decodes in parallel, later traces in rounds of 4 (the live
  strategy's batch): the sum of round maxima, where a trace cut early costs its latency scaled by
  the share of its tokens it generated. A round cut short by consensus ends at the deciding
  trace (in ordering order): later ones are never drawn.

Samples without an answer never vote and cannot be picked, but their tokens and time count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from ponder.bench.estimators import (
    beta_stop_table,
    bootstrap_ci,
    check_sizes,
    expected_max,
    masked_percentile,
    masked_percentiles,
    pass_at_k,
    powers_of_two,
)
from ponder.errors import InvalidRequestError

__all__ = [
    "MajorityPaths",
    "ReplayData",
    "ReplayRow",
    "available_strategies",
    "beta_stop_table",
    "bootstrap_ci",
    "majority_paths",
    "pass_at_k",
    "replay",
]

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.intp]
Int64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Scalar = TypeVar("Scalar", bound=np.generic)

CONSENSUS = 0.95
"""deepconf-online stops once the leading answer holds this share of the vote weight."""
BETA_CONFIDENCE = 0.95
"""adaptive-consistency stops once P(leader is the true majority) reaches this."""
ESC_WINDOW = 4
ONLINE_WARMUP = 4
ONLINE_BATCH = 4
ONLINE_ETA = 90.0
OFFLINE_ETAS = (10, 90)
CHUNK_ELEMENTS = 1 << 22
"""Orderings are replayed in blocks of at most this many (ordering, item, sample) cells (at least
one ordering), so memory stays bounded whatever the run size: a few hundred MB for the issue's
200 x 1000 x 64 (4 blocks), and the per-step vectors stay small enough to be cache-friendly
(measured ~10 % faster than one 12.8M-cell block)."""

FIXED = ("majority", "deepconf-online", "adaptive-consistency", "esc", "pass@k")
NO_TRACES_NOTE = "no group-confidence traces: traces stopped early count at full length"


@dataclass(frozen=True, eq=False)
class ReplayData:
    """A stored run as dense arrays: I items x S samples, validated on construction.

    `group_correct` grades answer groups, so that a vote's winner can be graded even though it is
    a group, not a sample. Confidences are DeepConf trace scores (-mean logprob, never negative;
    NaN: no logprobs, the trace cannot vote); scores are verifier outputs in [0, 1] (NaN: not
    judged, counts as 0 as in the live strategies).

    `group_confidence[i][j][t]` is the group confidence of the window that ends at token t, one
    value per generated token, so a trace cut at index t generated t + 1 tokens. Positions before
    the first full window should hold +inf (the live guard judges full windows only; NaN is read
    as +inf). Online DeepConf assumes `confidence` is the trace's minimum of it: a trace is cut
    exactly when its confidence is below the threshold."""

    groups: npt.NDArray[np.int32]
    correct: BoolArray
    tokens: npt.NDArray[np.int32]
    latency: Float32Array
    confidence: Float32Array
    group_confidence: list[list[Float32Array]] | None
    scores: dict[str, Float32Array]
    group_correct: BoolArray

    def __post_init__(self) -> None:
        groups = np.asarray(self.groups)
        if groups.ndim != 2 or groups.shape[0] < 1 or groups.shape[1] < 1:
            raise InvalidRequestError("groups must be a non-empty 2-D array [items, samples]")
        shape = groups.shape
        named = {
            "correct": self.correct,
            "tokens": self.tokens,
            "latency": self.latency,
            "confidence": self.confidence,
            **{f"scores[{name!r}]": values for name, values in self.scores.items()},
        }
        for name, values in named.items():
            if np.shape(values) != shape:
                raise InvalidRequestError(f"{name} has shape {np.shape(values)}, expected {shape}")
        width = np.shape(self.group_correct)
        if len(width) != 2 or width[0] != shape[0]:
            raise InvalidRequestError(f"group_correct must have shape [{shape[0]}, groups]")
        if groups.min() < -1 or groups.max() >= width[1]:
            raise InvalidRequestError(
                f"group ids must lie in -1..{width[1] - 1} (-1: no answer; group_correct has "
                f"{width[1]} columns)"
            )
        latency = np.asarray(self.latency, dtype=np.float64)
        if not np.isfinite(latency).all() or latency.min() < 0:
            raise InvalidRequestError("latency must be finite and non-negative seconds")
        if np.asarray(self.tokens).min() < 0:
            raise InvalidRequestError("tokens must be non-negative")
        confidence = np.asarray(self.confidence, dtype=np.float64)
        if (confidence[~np.isnan(confidence)] < 0).any():
            raise InvalidRequestError(
                "confidence must be non-negative (DeepConf's -mean logprob) or NaN"
            )
        for name, values in self.scores.items():
            if ":" in name or not name:
                raise InvalidRequestError(f"verifier name {name!r} must be non-empty, without ':'")
            finite = np.asarray(values, dtype=np.float64)
            finite = finite[~np.isnan(finite)]
            if finite.size and (finite.min() < 0 or finite.max() > 1):
                raise InvalidRequestError(f"scores[{name!r}] must lie in [0, 1] (or be NaN)")
        if self.group_confidence is not None and (
            len(self.group_confidence) != shape[0]
            or any(len(row) != shape[1] for row in self.group_confidence)
        ):
            raise InvalidRequestError(f"group_confidence must hold {shape[0]} x {shape[1]} traces")

    @property
    def items(self) -> int:
        return int(np.shape(self.groups)[0])

    @property
    def samples(self) -> int:
        return int(np.shape(self.groups)[1])


class ReplayRow(BaseModel):
    """One strategy at one sample budget N, averaged over items and orderings. `tokens`,
    `latency_s` and `samples` are per item; the interval is a 95 % bootstrap over items."""

    model_config = ConfigDict(frozen=True)

    strategy: str
    n: int
    accuracy: float
    ci_low: float
    ci_high: float
    tokens: float
    latency_s: float
    samples: float
    note: str | None = None


def available_strategies(data: ReplayData) -> list[str]:
    """Every strategy `replay` can evaluate on this data (verifier strategies per score)."""
    names = ["majority"]
    names += [f"best-of-n:{name}" for name in data.scores]
    names += [f"weighted-vote:{name}" for name in data.scores]
    names += [f"deepconf-offline@{eta}" for eta in OFFLINE_ETAS]
    names += ["deepconf-online", "adaptive-consistency", "esc", "pass@k"]
    return names


def replay(
    data: ReplayData,
    *,
    orderings: int = 200,
    ns: Sequence[int] | None = None,
    strategies: Sequence[str] | None = None,
    seed: int = 0,
    bootstrap: int = 1000,
) -> list[ReplayRow]:
    """Every requested strategy (default: all available) at every N (default: 1, 2, 4, ... S),
    averaged over `orderings` seeded random orderings of each item's samples, with a bootstrap
    interval of accuracy over items (`bootstrap` resamples). Rows come strategy by strategy, N
    ascending."""
    if orderings < 1:
        raise InvalidRequestError(f"orderings must be at least 1, got {orderings}")
    if bootstrap < 1:
        raise InvalidRequestError(f"bootstrap must be at least 1 resample, got {bootstrap}")
    sizes = powers_of_two(data.samples) if ns is None else check_sizes(ns, data.samples)
    names = list(dict.fromkeys(available_strategies(data) if strategies is None else strategies))
    if not names:
        raise InvalidRequestError("no strategies requested")
    specs = [_parse(name, data) for name in names]
    arrays = _Arrays.of(data)

    tallies = {(spec.name, n): _Tally(np.zeros(data.items)) for spec in specs for n in sizes}
    ordered = [spec for spec in specs if spec.kind != "pass@k"]
    if ordered:
        early = None
        if data.group_confidence is not None and any(s.kind == "deepconf-online" for s in ordered):
            early = _EarlyStop(data.group_confidence)
        rng = np.random.default_rng(seed)
        block = max(1, CHUNK_ELEMENTS // (data.items * data.samples))
        for start in range(0, orderings, block):
            draws = _Draws.shuffled(arrays, min(block, orderings - start), rng)
            for name, by_n in _replay_block(ordered, draws, sizes, early).items():
                for n, measure in by_n.items():
                    tallies[name, n].add(measure, draws.orderings)

    parallel = {n: _parallel_cost(arrays, n) for n in sizes}
    correct_counts = arrays.sample_ok.sum(axis=1)
    cells = [(spec, n) for spec in specs for n in sizes]
    accuracy = np.stack(
        [
            pass_at_k(data.samples, correct_counts, n)
            if spec.kind == "pass@k"
            else tallies[spec.name, n].correct / orderings
            for spec, n in cells
        ]
    )
    low, high = bootstrap_ci(accuracy, resamples=bootstrap, seed=seed)
    rows: list[ReplayRow] = []
    for index, (spec, n) in enumerate(cells):
        tokens, latency, used = tallies[spec.name, n].costs() or (*parallel[n], float(n))
        no_traces = spec.kind == "deepconf-online" and data.group_confidence is None
        rows.append(
            ReplayRow(
                strategy=spec.name,
                n=n,
                accuracy=float(accuracy[index].mean()),
                ci_low=float(low[index]),
                ci_high=float(high[index]),
                tokens=tokens,
                latency_s=latency,
                samples=used,
                note=NO_TRACES_NOTE if no_traces else None,
            )
        )
    return rows


@dataclass(frozen=True, eq=False)
class MajorityPaths:
    """Self-consistency along random orderings of each item's samples, one sample at a time: the
    raw material of planners (`ponder.planning`), which decide per ordering how far to go.

    Position-major like the rest of replay: ``x[k, m]`` is about the (k+1)-th sample that row
    m = r * items + i (ordering r of item i) draws. `correct[k, m]` says whether the majority of
    its first k + 1 samples is right (ties to the answer seen first, as `majority`), `votes[k, m]`
    how many of them the leader holds; `tokens`, `latency` and `confidence` are the drawn
    sample's own. `weighted[k, m]`, when the paths were drawn with a `weight`, says whether the
    weighted vote of the first k + 1 samples (each answer group collecting its samples' scores,
    as ``weighted-vote:<weight>``) is right. Rows come in the same seeded orderings `replay`
    draws for the same seed."""

    items: int
    orderings: int
    item: IntArray
    correct: BoolArray
    votes: npt.NDArray[np.int16]
    tokens: npt.NDArray[np.int32]
    latency: Float32Array
    confidence: Float32Array
    weighted: BoolArray | None = None
    leader_sums: Mapping[str, FloatArray] = field(default_factory=dict)
    """For each per-sample value asked for (`majority_paths(leader_sums=...)`), `[k, m]` is its
    sum over the first k + 1 samples that hold the majority's answer (e.g. a judge's scores of
    those samples, or what judging them cost)."""

    @property
    def depth(self) -> int:
        return int(self.correct.shape[0])

    @property
    def rows(self) -> int:
        return int(self.correct.shape[1])


def majority_paths(
    data: ReplayData,
    *,
    orderings: int = 100,
    seed: int = 0,
    depth: int | None = None,
    weight: str | None = None,
    leader_sums: Mapping[str, npt.ArrayLike] | None = None,
) -> MajorityPaths:
    """The running majority vote of the first `depth` (default: all S) samples of `orderings`
    seeded random orderings of every item (see `MajorityPaths`), and beside it the running vote
    weighted by the verifier scores named `weight`, if given, and the running sum of each of
    `leader_sums` ([items, S] per-sample values) over the samples holding the majority's answer.
    Memory is about 15 bytes per (position, row) cell, and 8 more per leader sum."""
    if orderings < 1:
        raise InvalidRequestError(f"orderings must be at least 1, got {orderings}")
    depth = data.samples if depth is None else depth
    if not 1 <= depth <= data.samples:
        raise InvalidRequestError(f"depth must lie in 1..{data.samples} (samples per item)")
    if weight is not None and weight not in data.scores:
        have = ", ".join(sorted(data.scores)) or "none"
        raise InvalidRequestError(
            f"the run has no {weight!r} scores to weight votes by (it has: {have}); "
            "mean-logprob needs a run sampled with logprobs"
        )
    arrays = _Arrays.of(data)
    rng = np.random.default_rng(seed)
    block = max(1, CHUNK_ELEMENTS // (data.items * data.samples))
    sums = {
        name: np.asarray(values, dtype=np.float64) for name, values in (leader_sums or {}).items()
    }
    for name, values in sums.items():
        if values.shape != (data.items, data.samples):
            raise InvalidRequestError(
                f"leader sum {name!r} must have shape [{data.items}, {data.samples}], got "
                f"{list(values.shape)}"
            )
    names = ("correct", "votes", "tokens", "latency", "confidence", "weighted", *sums)
    parts: dict[str, list[npt.NDArray[np.generic]]] = {name: [] for name in names}
    for start in range(0, orderings, block):
        draws = _Draws.shuffled(arrays, min(block, orderings - start), rng)
        vote = _Vote(draws.rows, draws.groups, draws.samples + 1)
        ones = np.ones(draws.rows)
        correct = np.empty((depth, draws.rows), dtype=bool)
        votes = np.empty((depth, draws.rows), dtype=np.int16)
        tallies = {name: _Vote(draws.rows, draws.groups, draws.samples + 1) for name in sums}
        drawn_sums = {name: draws.take(values) for name, values in sums.items()}
        held = {name: np.empty((depth, draws.rows)) for name in sums}
        row_base = np.arange(draws.rows) * (draws.groups + 1)
        for k in range(depth):
            vote.add(draws, k, ones, draws.answered[k])
            correct[k] = draws.group_correct(vote.leader)
            votes[k] = vote.lead_weight
            for name, tally in tallies.items():
                tally.add(draws, k, drawn_sums[name][k], draws.answered[k])
                held[name][k] = tally.weight[row_base + vote.leader]
        weighted = np.zeros((0, draws.rows), dtype=bool)
        if weight is not None:
            scores = draws.take(arrays.scores[weight])
            by_score = _weighted_vote(draws, range(1, depth + 1), scores)
            weighted = np.stack([by_score[n].correct for n in range(1, depth + 1)])
        drawn: tuple[npt.NDArray[np.generic], ...] = (
            correct,
            votes,
            draws.tokens[:depth],
            draws.latency[:depth],
            draws.confidence[:depth],
            weighted,
            *held.values(),
        )
        for name, part in zip(names, drawn, strict=True):
            parts[name].append(part)
    joined = {name: np.concatenate(parts[name], axis=1) for name in names}
    return MajorityPaths(
        items=data.items,
        orderings=orderings,
        item=np.tile(np.arange(data.items, dtype=np.intp), orderings),
        correct=joined["correct"].astype(bool, copy=False),
        votes=joined["votes"].astype(np.int16, copy=False),
        tokens=joined["tokens"].astype(np.int32, copy=False),
        latency=joined["latency"].astype(np.float32, copy=False),
        confidence=joined["confidence"].astype(np.float32, copy=False),
        weighted=None if weight is None else joined["weighted"].astype(bool, copy=False),
        leader_sums={name: joined[name].astype(np.float64, copy=False) for name in sums},
    )


# --- strategy names -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    name: str
    kind: str
    verifier: str = ""
    eta: float = 0.0


def _parse(name: str, data: ReplayData) -> _Spec:
    """A strategy name as replay understands it; anything else is an error that lists the
    available names (deepconf-offline also takes any η in (0, 100], e.g. @50)."""
    if name in FIXED:
        return _Spec(name, name)
    kind, _, verifier = name.partition(":")
    if kind in ("best-of-n", "weighted-vote") and verifier in data.scores:
        return _Spec(name, kind, verifier=verifier)
    kind, _, eta = name.partition("@")
    if kind == "deepconf-offline":
        try:
            value = float(eta)
        except ValueError:
            value = float("nan")
        if 0.0 < value <= 100.0:
            return _Spec(name, kind, eta=value)
    raise InvalidRequestError(
        f"unknown strategy {name!r}; available: {', '.join(available_strategies(data))}"
    )


# --- data layout ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Arrays:
    """The run in the dtypes replay computes with. Group ids: "no answer" becomes `groups`, one
    past the last group, so every sample indexes a real cell and never wins a vote."""

    items: int
    samples: int
    groups: int
    group: IntArray
    sample_ok: BoolArray
    group_ok: BoolArray  # flat [items * (groups + 1)], the last column of each item False
    tokens: npt.NDArray[np.int32]
    latency: Float32Array
    confidence: Float32Array
    scores: dict[str, Float32Array]

    @classmethod
    def of(cls, data: ReplayData) -> _Arrays:
        raw = np.asarray(data.groups, dtype=np.intp)
        groups = int(np.shape(data.group_correct)[1])
        group_ok = np.zeros((data.items, groups + 1), dtype=bool)
        group_ok[:, :groups] = np.asarray(data.group_correct, dtype=bool)
        return cls(
            items=data.items,
            samples=data.samples,
            groups=groups,
            group=np.where(raw < 0, groups, raw),
            sample_ok=np.asarray(data.correct, dtype=bool),
            group_ok=group_ok.ravel(),
            tokens=np.asarray(data.tokens, dtype=np.int32),
            latency=np.asarray(data.latency, dtype=np.float32),
            confidence=np.asarray(data.confidence, dtype=np.float32),
            scores={
                name: np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0)
                for name, values in data.scores.items()
            },
        )


class _Draws:
    """A block of orderings, position-major: ``x[k, m]`` is the k-th sample drawn by row
    m = r * items + i (ordering r of item i); `order[m]` is row m's permutation of 0..S-1."""

    def __init__(self, arrays: _Arrays, order: npt.NDArray[np.integer]) -> None:
        items, samples = arrays.items, arrays.samples
        rows = order.shape[0]
        if order.shape != (rows, samples) or rows % items:
            raise InvalidRequestError(f"orders must have shape [orderings * {items}, {samples}]")
        self.arrays = arrays
        self.orderings = rows // items
        self.rows = rows
        self.samples = samples
        self.groups = arrays.groups
        self.item = np.tile(np.arange(items, dtype=np.intp), self.orderings)
        self.index: IntArray = np.empty((samples, rows), dtype=np.intp)
        np.add(order.T, self.item * samples, out=self.index)
        self.group: IntArray = self.take(arrays.group)
        self.answered: BoolArray = self.group < arrays.groups
        self.sample_ok: BoolArray = self.take(arrays.sample_ok)
        self.tokens: npt.NDArray[np.int32] = self.take(arrays.tokens)
        self.latency: Float32Array = self.take(arrays.latency)
        self.confidence: Float32Array = self.take(arrays.confidence)
        self.group_base: IntArray = self.item * (arrays.groups + 1)
        # The vote-table cell of each drawn sample: row m's groups occupy m * (groups + 1) on.
        self.cell: IntArray = self.group + np.arange(rows) * (arrays.groups + 1)

    @classmethod
    def shuffled(cls, arrays: _Arrays, orderings: int, rng: np.random.Generator) -> _Draws:
        """`orderings` uniformly random orderings of every item (Fisher-Yates per row). Blocks
        drawn one after another from one generator equal one big draw, so results do not depend
        on the block size."""
        samples = arrays.samples
        small = np.int8 if samples <= 127 else np.int16 if samples <= 32767 else np.int32
        identity = np.broadcast_to(
            np.arange(samples, dtype=small), (orderings * arrays.items, samples)
        )
        return cls(arrays, rng.permuted(identity, axis=1))

    def take(self, values: npt.NDArray[Scalar]) -> npt.NDArray[Scalar]:
        """`values[i, j]` ([items, samples]) rearranged to [k, row]."""
        return values.ravel()[self.index]

    def group_correct(self, group: IntArray) -> BoolArray:
        """Whether answer group `group[m]` of row m's item is right ("no answer" never is)."""
        return np.asarray(self.arrays.group_ok[self.group_base + group], dtype=bool)


@dataclass
class _Measure:
    """Per row: graded answer and, for adaptive strategies, what it cost (None: the N-sample
    parallel cost, computed exactly once for all fixed-N strategies)."""

    correct: BoolArray
    tokens: npt.NDArray[np.integer] | None = None
    latency: FloatArray | None = None
    samples: npt.NDArray[np.integer] | None = None


@dataclass
class _Tally:
    """Sums across blocks of orderings for one (strategy, N)."""

    correct: FloatArray  # per item: the number of orderings it was answered right in
    tokens: float = 0.0
    latency: float = 0.0
    samples: float = 0.0
    cells: int = 0

    def add(self, measure: _Measure, orderings: int) -> None:
        self.correct += measure.correct.reshape(orderings, -1).sum(axis=0)
        if measure.tokens is not None:
            assert measure.latency is not None and measure.samples is not None
            self.tokens += float(measure.tokens.sum())
            self.latency += float(measure.latency.sum())
            self.samples += float(measure.samples.sum())
            self.cells += measure.correct.size

    def costs(self) -> tuple[float, float, float] | None:
        """Mean (tokens, latency, samples) per row, if the strategy measured its own."""
        if not self.cells:
            return None
        return self.tokens / self.cells, self.latency / self.cells, self.samples / self.cells


def _parallel_cost(arrays: _Arrays, n: int) -> tuple[float, float]:
    """(tokens, latency) per item of n samples decoded together, in expectation over which n."""
    tokens = n * float(arrays.tokens.mean(dtype=np.float64))
    return tokens, float(expected_max(arrays.latency, n).mean())


# --- the running vote -----------------------------------------------------------------------


class _Vote:
    """A weighted vote for every row at once, updated one sample position at a time.

    The leader is kept incrementally: a step raises one group's weight per row, so only that
    group can overtake, and only if it now outweighs the leader or ties it having been seen
    first. That is exactly "largest total, ties to the answer seen first" (the live strategies'
    `weighted_vote`) as long as weights are non-negative, which `ReplayData` guarantees."""

    def __init__(self, rows: int, groups: int, never: int) -> None:
        width = groups + 1
        self.weight: FloatArray = np.zeros(rows * width)
        self.first: IntArray = np.full(rows * width, never, dtype=np.intp)
        self.leader: IntArray = np.full(rows, groups, dtype=np.intp)
        self.lead_weight: FloatArray = np.zeros(rows)
        self.lead_first: IntArray = np.full(rows, never, dtype=np.intp)
        self.total: FloatArray = np.zeros(rows)
        self.voters: IntArray = np.zeros(rows, dtype=np.intp)

    def add(
        self, draws: _Draws, k: int, weight: npt.NDArray[np.floating], voter: BoolArray
    ) -> tuple[FloatArray, BoolArray]:
        """Sample position k votes `weight` for its group in the rows where `voter`. Returns the
        group's new weight and whether it now leads (taking the lead or keeping it)."""
        cell, group = draws.cell[k], draws.group[k]
        amount = np.where(voter, weight, 0.0)
        total = self.weight[cell] + amount
        self.weight[cell] = total
        first = self.first[cell]
        new = voter & (first > k)  # the group's first vote; few rows after the first steps
        if new.any():
            self.first[cell[new]] = k
            first = np.where(new, k, first)
        leads = voter & (
            (total > self.lead_weight) | ((total == self.lead_weight) & (first < self.lead_first))
        )
        self.leader = np.where(leads, group, self.leader)
        self.lead_weight = np.where(leads, total, self.lead_weight)
        self.lead_first = np.where(leads, first, self.lead_first)
        self.total = self.total + amount
        self.voters = self.voters + voter
        return total, leads

    def share(self) -> FloatArray:
        """The leader's share of all vote weight (0 where nobody voted)."""
        share = np.zeros_like(self.total)
        np.divide(self.lead_weight, self.total, out=share, where=self.total > 0)
        return share


@dataclass
class _Stops:
    """Where each row's adaptive stopping rule fired, and the outcome frozen there."""

    at: IntArray
    correct: BoolArray
    tokens: Int64Array
    latency: FloatArray

    @classmethod
    def none(cls, rows: int, never: int) -> _Stops:
        return cls(
            np.full(rows, never, dtype=np.intp),
            np.zeros(rows, dtype=bool),
            np.zeros(rows, dtype=np.int64),
            np.zeros(rows),
        )

    def record(
        self, hit: BoolArray, n: int, correct: BoolArray, tokens: Int64Array, latency: FloatArray
    ) -> None:
        self.at[hit] = n
        self.correct[hit] = correct[hit]
        self.tokens[hit] = tokens[hit]
        self.latency[hit] = latency[hit]

    def capped(
        self, n: int, correct: BoolArray, tokens: Int64Array, latency: FloatArray
    ) -> _Measure:
        """The outcome with at most n samples: the frozen one where the rule fired by n, else
        the state after all n."""
        stopped = self.at <= n
        return _Measure(
            np.where(stopped, self.correct, correct),
            np.where(stopped, self.tokens, tokens),
            np.where(stopped, self.latency, latency),
            np.where(stopped, self.at, n),
        )


# --- strategies -----------------------------------------------------------------------------


def _replay_block(
    specs: Sequence[_Spec], draws: _Draws, sizes: Sequence[int], early: _EarlyStop | None
) -> dict[str, dict[int, _Measure]]:
    """Every requested strategy on one block of orderings."""
    kinds = {spec.kind for spec in specs}
    out: dict[str, dict[int, _Measure]] = {}
    family = kinds & {"majority", "adaptive-consistency", "esc"}
    if family:
        out.update(_majority_family(draws, sizes, family))
    etas = sorted({spec.eta for spec in specs if spec.kind == "deepconf-offline"})
    if etas:
        for eta, by_n in _deepconf_offline(draws, sizes, etas).items():
            for spec in specs:
                if spec.kind == "deepconf-offline" and spec.eta == eta:
                    out[spec.name] = by_n
    for spec in specs:
        if spec.kind in ("best-of-n", "weighted-vote"):
            scores = draws.take(draws.arrays.scores[spec.verifier])
            pick = _best_of_n if spec.kind == "best-of-n" else _weighted_vote
            out[spec.name] = pick(draws, sizes, scores)
        elif spec.kind == "deepconf-online":
            out[spec.name] = _deepconf_online(draws, sizes, early)
    return out


def _majority_family(
    draws: _Draws, sizes: Sequence[int], kinds: set[str]
) -> dict[str, dict[int, _Measure]]:
    """Majority, adaptive-consistency and ESC share one pass: the adaptive rules watch the same
    running vote, and their answer is its leader where they stop."""
    rows, samples = draws.rows, draws.samples
    never = samples + 1
    vote = _Vote(rows, draws.groups, never)
    ones = np.ones(rows)
    second = np.zeros(rows, dtype=np.intp)  # v2: the largest count among the non-leaders
    tokens = np.zeros(rows, dtype=np.int64)
    elapsed = np.zeros(rows)  # one sample after another (adaptive-consistency)
    windows_done = np.zeros(rows)  # esc: completed windows, each as slow as its slowest
    window_slowest = np.zeros(rows)
    adaptive = "adaptive-consistency" in kinds
    esc = "esc" in kinds
    stop_rule = (beta_stop_table(samples) >= BETA_CONFIDENCE).ravel()
    beta_stops = _Stops.none(rows, never)
    esc_stop = _esc_stops(draws) if esc else np.full(rows, never, dtype=np.intp)
    esc_stops = _Stops.none(rows, never)
    out: dict[str, dict[int, _Measure]] = {kind: {} for kind in kinds}
    wanted = set(sizes)
    for k in range(max(sizes)):
        n = k + 1
        group = draws.group[k]
        answered = draws.answered[k]
        was_leader = group == vote.leader
        lead_before = vote.lead_weight.astype(np.intp)
        count, leads = vote.add(draws, k, ones, answered)
        second = np.where(
            leads,
            np.where(was_leader, second, lead_before),
            np.where(answered, np.maximum(second, count.astype(np.intp)), second),
        )
        tokens += draws.tokens[k]
        elapsed += draws.latency[k]
        window_slowest = np.maximum(window_slowest, draws.latency[k])
        correct = draws.group_correct(vote.leader)
        if adaptive:
            first = vote.lead_weight.astype(np.intp) * (samples + 1) + second
            hit = stop_rule[first] & (beta_stops.at == never)
            beta_stops.record(hit, n, correct, tokens, elapsed)
        if esc and n % ESC_WINDOW == 0:
            esc_stops.record(esc_stop == n, n, correct, tokens, windows_done + window_slowest)
        if n in wanted:
            if "majority" in kinds:
                out["majority"][n] = _Measure(correct)
            if adaptive:
                out["adaptive-consistency"][n] = beta_stops.capped(n, correct, tokens, elapsed)
            if esc and n < ESC_WINDOW:  # a single window of n: all n in parallel
                out["esc"][n] = _Measure(
                    correct, tokens.copy(), window_slowest.copy(), np.full(rows, n)
                )
            elif esc:
                spent = windows_done + window_slowest
                out["esc"][n] = esc_stops.capped(n, correct, tokens, spent)
        if n % ESC_WINDOW == 0:
            windows_done = windows_done + window_slowest
            window_slowest = np.zeros(rows)
    return out


def _esc_stops(draws: _Draws) -> IntArray:
    """Per row, the samples drawn when ESC stops with no cap: the end of the first full window
    whose answers are all present and equal (samples + 1 if none is)."""
    windows = draws.samples // ESC_WINDOW
    never = np.full(draws.rows, draws.samples + 1, dtype=np.intp)
    if windows == 0:
        return never
    group = draws.group[: windows * ESC_WINDOW].reshape(windows, ESC_WINDOW, draws.rows)
    unanimous = (group == group[:, :1]).all(axis=1) & (group[:, 0] < draws.groups)
    return np.where(unanimous.any(axis=0), (unanimous.argmax(axis=0) + 1) * ESC_WINDOW, never)


def _best_of_n(draws: _Draws, sizes: Sequence[int], scores: Float32Array) -> dict[int, _Measure]:
    """The answered sample with the highest score so far; a later one must beat it strictly."""
    best = np.full(draws.rows, -np.inf, dtype=np.float32)
    correct = np.zeros(draws.rows, dtype=bool)
    out: dict[int, _Measure] = {}
    for k in range(max(sizes)):
        better = draws.answered[k] & (scores[k] > best)
        best = np.where(better, scores[k], best)
        correct = np.where(better, draws.sample_ok[k], correct)
        if k + 1 in sizes:
            out[k + 1] = _Measure(correct)
    return out


def _weighted_vote(
    draws: _Draws, sizes: Sequence[int], scores: Float32Array
) -> dict[int, _Measure]:
    """Each answer group collects the scores of its samples."""
    vote = _Vote(draws.rows, draws.groups, draws.samples + 1)
    out: dict[int, _Measure] = {}
    for k in range(max(sizes)):
        vote.add(draws, k, scores[k], draws.answered[k])
        if k + 1 in sizes:
            out[k + 1] = _Measure(draws.group_correct(vote.leader))
    return out


def _deepconf_offline(
    draws: _Draws, sizes: Sequence[int], etas: Sequence[float]
) -> dict[float, dict[int, _Measure]]:
    """For each N: the threshold is a percentile of the first N answered traces, so the vote is
    rebuilt per N (in one go, `_vote_of`); every η shares the sort."""
    eligible = draws.answered & ~np.isnan(draws.confidence)
    out: dict[float, dict[int, _Measure]] = {eta: {} for eta in etas}
    for n in sizes:
        confidence, valid = draws.confidence[:n], eligible[:n]
        thresholds = masked_percentiles(confidence, valid, [100.0 - eta for eta in etas])
        for eta, threshold in zip(etas, thresholds, strict=True):
            kept = valid & (confidence >= threshold)
            leader = _vote_of(draws, kept, np.where(kept, confidence, 0.0))
            out[eta][n] = _Measure(draws.group_correct(leader))
    return out


def _vote_of(draws: _Draws, voter: BoolArray, weight: FloatArray) -> IntArray:
    """The winning group of every row's weighted vote over the first len(voter) positions, in
    one pass: `np.bincount` sums each cell's weights in position order (so the totals equal the
    running vote's bit for bit); rows whose top weight is shared are settled by first sight,
    scanning only those rows."""
    n, rows, groups = voter.shape[0], draws.rows, draws.groups
    width = groups + 1
    cells = draws.cell[:n].ravel()
    totals = np.bincount(cells, weights=weight.ravel(), minlength=rows * width)
    if (voter & (weight == 0)).any():  # a zero-weight voter still puts its group on the table
        present = np.bincount(cells[voter.ravel()], minlength=rows * width) > 0
    else:
        present = totals > 0
    table = np.where(present, totals, -np.inf).reshape(rows, width)
    best = table.max(axis=1)
    leader = np.where(best > -np.inf, table.argmax(axis=1), groups)
    contenders = table == best[:, None]
    tied = np.flatnonzero((contenders.sum(axis=1) > 1) & (best > -np.inf))
    if tied.size:
        contenders = contenders[tied]
        winner = np.full(tied.size, -1, dtype=np.intp)
        for k in range(n):
            group = draws.group[k, tied]
            seen = (winner < 0) & voter[k, tied] & contenders[np.arange(tied.size), group]
            winner[seen] = group[seen]
            if (winner >= 0).all():
                break
        leader[tied] = winner
    return np.asarray(leader, dtype=np.intp)


def _deepconf_online(
    draws: _Draws, sizes: Sequence[int], early: _EarlyStop | None
) -> dict[int, _Measure]:
    """Warm-up, threshold, then one trace at a time until consensus or N. Rows that reached
    consensus are frozen (masked out of every later update), so their vote, tokens, samples and
    latency stay as they were when they stopped."""
    rows = draws.rows
    out: dict[int, _Measure] = {}
    for warmup in sorted({min(ONLINE_WARMUP, n) for n in sizes}):
        caps = {n for n in sizes if min(ONLINE_WARMUP, n) == warmup}
        confidence = draws.confidence
        head = confidence[:warmup]
        threshold = masked_percentile(head, ~np.isnan(head), 100.0 - ONLINE_ETA)
        vote = _Vote(rows, draws.groups, draws.samples + 1)
        for k in range(warmup):
            voter = draws.answered[k] & (confidence[k] >= threshold)
            vote.add(draws, k, confidence[k], voter)
        tokens = draws.tokens[:warmup].sum(axis=0, dtype=np.int64)
        done = draws.latency[:warmup].max(axis=0).astype(np.float64)
        slowest = np.zeros(rows)
        used = np.full(rows, warmup, dtype=np.intp)
        active = ~_decisive(vote)
        if warmup in caps:
            out[warmup] = _Measure(
                draws.group_correct(vote.leader), tokens.copy(), done.copy(), used.copy()
            )
        for k in range(warmup, max(caps)):
            if (k - warmup) % ONLINE_BATCH == 0:
                done = done + slowest
                slowest = np.zeros(rows)
            level = confidence[k]
            spent = draws.tokens[k].astype(np.int64)
            seconds = draws.latency[k].astype(np.float64)
            cut = np.flatnonzero(active & (level < threshold))
            if early is not None and cut.size:
                full = spent[cut]
                kept = early.tokens_until_below(draws.index[k, cut], threshold[cut], full)
                seconds[cut] *= np.where(full > 0, kept / np.maximum(full, 1), 1.0)
                spent[cut] = kept
            voter = active & draws.answered[k] & (level >= threshold)
            vote.add(draws, k, level, voter)
            tokens += np.where(active, spent, 0)
            slowest = np.where(active, np.maximum(slowest, seconds), slowest)
            used += active
            active &= ~_decisive(vote)
            if k + 1 in caps:
                out[k + 1] = _Measure(
                    draws.group_correct(vote.leader), tokens.copy(), done + slowest, used.copy()
                )
    return out


def _decisive(vote: _Vote) -> BoolArray:
    """The live strategy's consensus: two voters at least, the leader holding CONSENSUS of the
    weight (one voter is no consensus)."""
    return (vote.voters >= 2) & (vote.share() >= CONSENSUS)


# --- online early stop ------------------------------------------------------------------------


class _EarlyStop:
    """Answers "after how many tokens did trace j's group confidence first drop below s?" for
    a batch of (trace, s) pairs at once.

    The traces are concatenated once. A trace's running minimum is non-increasing, so the
    answer is a binary search within the trace's own segment, vectorised over the batch (about
    log2(longest trace) gathers; a global `np.searchsorted` over all tokens was 10x slower, one
    cache miss per level of a 20-million-key search). Values become exact, order-preserving
    int64 keys: the high 32 bits hold (traces - j), the low 32 bits the float32's bits mapped
    to unsigned order. Earlier traces get larger keys, so one `np.minimum.accumulate` over the
    whole concatenation is every trace's own running minimum, and comparisons stay exact (no
    float offsets that could round a value across the threshold)."""

    def __init__(self, traces: Sequence[Sequence[npt.ArrayLike]]) -> None:
        flat = [np.asarray(trace, dtype=np.float32).ravel() for row in traces for trace in row]
        self.lengths: Int64Array = np.array([trace.size for trace in flat], dtype=np.int64)
        self.starts: Int64Array = np.concatenate(([0], np.cumsum(self.lengths)[:-1]))
        self.count = len(flat)
        self.steps = int(self.lengths.max(initial=0)).bit_length()
        values = np.concatenate(flat) if flat else np.zeros(0, dtype=np.float32)
        values = np.where(np.isnan(values), np.float32(np.inf), values)  # NaN never stops
        keys = np.repeat(np.arange(self.count, 0, -1, dtype=np.int64), self.lengths)
        keys <<= 32
        keys |= _order_key(values)
        np.minimum.accumulate(keys, out=keys)
        self.keys: Int64Array = keys

    def tokens_until_below(
        self, trace: IntArray, threshold: FloatArray, tokens: Int64Array
    ) -> Int64Array:
        """Tokens trace `trace[q]` generated up to and including the first position whose group
        confidence is below `threshold[q]`; `tokens[q]` (all of them) if it never drops."""
        bound = threshold.astype(np.float32)  # the smallest float32 >= threshold: x < s <=> x < it
        low = bound.astype(np.float64) < threshold
        bound[low] = np.nextafter(bound[low], np.float32(np.inf))
        query = (self.count - trace.astype(np.int64)) << 32
        query |= _order_key(bound)
        start = self.starts[trace]
        low_end, high_end = start, start + self.lengths[trace]  # search [low_end, high_end)
        last = max(self.keys.size - 1, 0)
        for _ in range(self.steps):
            middle = (low_end + high_end) >> 1
            below = self.keys[np.minimum(middle, last)] < query
            open_ = low_end < high_end
            high_end = np.where(open_ & below, middle, high_end)
            low_end = np.where(open_ & ~below, middle + 1, low_end)
        position = low_end - start
        found = position < self.lengths[trace]
        return np.where(found, np.minimum(position + 1, tokens), tokens)


def _order_key(values: Float32Array) -> Int64Array:
    """float32 -> uint32 (as int64) in the same order: flip negatives, set the sign bit of the
    rest. -0.0 is first made +0.0 so the two compare equal, as floats do."""
    bits = (values + np.float32(0.0)).view(np.uint32)
    key = np.where(bits >> 31 == 1, ~bits, bits | np.uint32(0x80000000))
    return key.astype(np.int64)
