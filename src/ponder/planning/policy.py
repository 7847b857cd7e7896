"""Fitted plans as data: the `auto` planner's policy (probe features -> how many samples) and the
small-to-large cascade (when to escalate), each a versioned JSON file that says what it was
fitted on, so `ponder plan show` can explain it and a report can tell whether it is judging a
policy on the items it was fitted on (and must cross-fit instead).

Probe features, in both: the probe is the first k samples of a question. ``votes`` is how many of
them the leading answer holds (its vote share is votes / k); ``confidence`` the mean of their
DeepConf lowest-group confidences (window `window` tokens, `top_logprobs` alternatives per token,
as the run was sampled); ``length`` their mean completion tokens.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, Protocol, Self

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ponder import __version__
from ponder.errors import InvalidRequestError

if TYPE_CHECKING:
    from ponder.bench.store import RunConfig

AUTO_KIND: Final = "ponder.auto-policy"
CASCADE_KIND: Final = "ponder.cascade-policy"
FORMAT_VERSION: Final = 1
DEFAULT_POLICY = "default_policy.json"
"""The shipped auto policy, beside this module (package data)."""

Feature = Literal["confidence", "length"]
Vote = Literal["majority", "mean-logprob"]
CascadeFeature = Literal["share", "confidence", "score"]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]


class PolicyError(InvalidRequestError):
    """A policy file that cannot be used: missing, not JSON, of another kind, or inconsistent."""


class RunSource(BaseModel):
    """One run a policy was fitted on: enough to recognise the same run and items later."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    model: str
    engine: str
    dataset: str
    dataset_fingerprint: str
    samples: int
    temperature: float
    max_tokens: int
    top_logprobs: int
    items: list[str] = Field(description="ids of the items used (complete in the run)")

    @classmethod
    def of(cls, path: Path | str, config: RunConfig, item_ids: Sequence[str]) -> RunSource:
        return cls(
            path=str(path),
            model=config.model,
            engine=config.engine,
            dataset=config.dataset.label(),
            dataset_fingerprint=config.dataset_fingerprint,
            samples=config.samples,
            temperature=config.temperature,
            max_tokens=config.max_tokens,
            top_logprobs=config.top_logprobs,
            items=list(item_ids),
        )

    def same_run(self, config: RunConfig) -> bool:
        """Whether `config` samples the same model on the same items as this run (so items both
        used are the same questions answered by the same model)."""
        return (
            self.model == config.model
            and self.dataset_fingerprint == config.dataset_fingerprint
            and self.temperature == config.temperature
        )


class Provenance(BaseModel):
    """What a policy was fitted on, when, and how to fit it again."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    runs: list[RunSource]
    fitted_at: str
    ponder_version: str
    command: str
    orderings: int
    seed: int

    @classmethod
    def now(cls, runs: Sequence[RunSource], command: str, orderings: int, seed: int) -> Self:
        return cls(
            runs=list(runs),
            fitted_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            ponder_version=__version__,
            command=command,
            orderings=orderings,
            seed=seed,
        )

    def overlap(self, config: RunConfig, item_ids: Sequence[str]) -> int:
        """How many of `item_ids` (of a run with `config`) the policy was fitted on."""
        seen = {item for run in self.runs if run.same_run(config) for item in run.items}
        return sum(item in seen for item in item_ids)

    def describe(self) -> str:
        runs = "; ".join(
            f"{Path(run.path).name} ({run.model}, {run.dataset}, {len(run.items)} items x "
            f"{run.samples} samples)"
            for run in self.runs
        )
        return f"{runs}; {self.orderings} orderings, seed {self.seed}; {self.fitted_at}"


class Objective(BaseModel):
    """What a fit optimises, exactly one of: the fewest tokens that reach `match` x the accuracy
    of self-consistency at its best N; or the best accuracy within `tokens` per item, within
    `tokens_of_best` x the tokens of self-consistency at its best N, or within the tokens of
    self-consistency with `tokens_of_n` samples (the last three measured on the fitting rows)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    match: float | None = Field(default=None, gt=0.0, le=1.5)
    tokens: float | None = Field(default=None, gt=0.0, allow_inf_nan=False)
    tokens_of_best: float | None = Field(default=None, gt=0.0, le=10.0)
    tokens_of_n: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [
            v
            for v in (self.match, self.tokens, self.tokens_of_best, self.tokens_of_n)
            if v is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one objective: match, tokens, tokens_of_best or tokens_of_n"
            )
        return self

    def describe(self) -> str:
        if self.match is not None:
            return f"the fewest tokens reaching {self.match:g} x the best self-consistency accuracy"
        if self.tokens is not None:
            return f"the best accuracy within {self.tokens:,.0f} tokens per item"
        if self.tokens_of_n is not None:
            return f"the best accuracy within the tokens of {self.tokens_of_n} samples"
        return (
            f"the best accuracy within {self.tokens_of_best:g} x the tokens of self-consistency "
            "at its best N"
        )


class PlanSettings(BaseModel):
    """How an auto policy is fitted; kept in the policy so a report can refit it the same way on
    other items (cross-fitting)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    probe: int = Field(ge=1, le=256, description="samples drawn first, to judge difficulty")
    feature: Feature | None = Field(
        default="confidence", description="splits each vote level by this (None: votes only)"
    )
    splits: int = Field(default=2, ge=1, le=8, description="bins per vote level")
    actions: list[int] = Field(description="total samples a bin may draw, the probe's included")
    vote: Vote = Field(
        default="majority",
        description="how the samples drawn choose the answer: plain majority, or each answer "
        "collecting its samples' geometric-mean token probabilities (weighted-vote:mean-logprob)",
    )
    rereads: list[int] = Field(
        default_factory=list,
        description="totals of samples, after the probe, at which the question is placed in bins "
        "again by everything drawn so far, and its next step decided (none: the probe decides "
        "alone)",
    )
    objective: Objective
    window: int = Field(default=16, ge=1, description="DeepConf group window, tokens")
    min_items: int = Field(
        default=5, ge=1, description="a vote level is split only with this many items per bin"
    )

    @model_validator(mode="after")
    def _actions_from_the_probe(self) -> Self:
        if sorted(set(self.actions)) != self.actions:
            raise ValueError("actions must be sorted and distinct")
        if not self.actions or self.actions[0] != self.probe:
            raise ValueError(f"actions must start with the probe ({self.probe}): stop after it")
        if sorted(set(self.rereads)) != self.rereads:
            raise ValueError("rereads must be sorted and distinct")
        for n in self.rereads:
            if n not in self.actions or not self.probe < n < self.actions[-1]:
                raise ValueError(
                    f"a reread at {n} samples must be one of the actions between the probe "
                    f"({self.probe}) and the largest ({self.actions[-1]}), exclusive"
                )
        return self

    @property
    def reads(self) -> list[int]:
        """The totals of samples at which a question is placed in bins: the probe, then the
        rereads."""
        return [self.probe, *self.rereads]

    def within(self, samples: int) -> Self:
        """These settings for runs of `samples` samples per item: actions and rereads beyond
        them dropped (the largest action left is the last step, so a reread there goes too)."""
        actions = [n for n in self.actions if n <= samples]
        rereads = [n for n in self.rereads if n < actions[-1]]
        return self.model_copy(update={"actions": actions, "rereads": rereads})


def default_actions(probe: int, samples: int) -> list[int]:
    """The probe, then 1.5x / 2x steps up to `samples`: 4 -> 4, 6, 8, 12, 16 for 16 samples."""
    steps = {probe, samples}
    n = 2
    while n <= samples:
        steps.update({n, n + n // 2})
        n *= 2
    return sorted(s for s in steps if probe <= s <= samples)


def default_rereads(probe: int, actions: Sequence[int]) -> list[int]:
    """The probe's doublings among the actions, below the largest: 4 -> [8] for 4..16."""
    rereads = []
    n = 2 * probe
    while n < actions[-1]:
        if n in actions:
            rereads.append(n)
        n *= 2
    return rereads


class Bin(BaseModel):
    """Rows whose read (the probe, or a reread) gave the leader `votes` votes and whose feature
    lies in [low, high) (None: unbounded), and what the policy does there: draw up to `samples`
    in all, and read again there if a reread is at `samples`. `accuracy_at_probe` is the rows'
    accuracy if they stop at this read; `accuracy` and `tokens` what the policy makes of them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    votes: int = Field(ge=0)
    low: float | None = None
    high: float | None = None
    samples: int = Field(ge=1)
    weight: float = Field(ge=0.0, le=1.0, description="share of the fitting rows in the bin")
    accuracy_at_probe: float
    accuracy: float
    tokens: float = Field(description="mean tokens per item of the bin's rows with its action")


class Reread(BaseModel):
    """The bins a question is placed in again once it has `samples` samples in all."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    samples: int = Field(ge=1)
    bins: list[Bin]


class Expected(BaseModel):
    """A policy's numbers on the rows it was fitted on (in-sample: optimistic; a report
    cross-fits), beside self-consistency's best N on the same rows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    accuracy: float
    tokens: float
    samples: float
    best_n: int
    best_accuracy: float
    best_tokens: float
    reached: bool = Field(description="whether the objective's accuracy target was reached")


class AutoPolicy(BaseModel):
    """The `auto` planner: probe, bin the question by its probe, draw the bin's samples; where a
    reread sits at that many samples, bin it again by all it has drawn, and so on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["ponder.auto-policy"] = AUTO_KIND
    version: Literal[1] = FORMAT_VERSION
    settings: PlanSettings
    top_logprobs: int = Field(ge=0, le=20, description="alternatives per token in the probe")
    bins: list[Bin] = Field(description="the probe's bins")
    rereads: list[Reread] = Field(
        default_factory=list, description="the bins of each reread, as settings.rereads lists them"
    )
    expected: Expected
    fitted_on: Provenance

    @model_validator(mode="after")
    def _bins_tile_each_level(self) -> Self:
        if [r.samples for r in self.rereads] != self.settings.rereads:
            raise ValueError(f"the policy must have one reread at each of {self.settings.rereads}")
        reads = self.settings.reads
        ends = [*reads[1:], self.settings.actions[-1]]
        for at, end, bins in zip(reads, ends, self.stages(), strict=True):
            _check_bins(bins, at, end, self.settings.actions)
        return self

    @property
    def probe(self) -> int:
        return self.settings.probe

    @property
    def most_samples(self) -> int:
        """The most samples the policy ever draws for a question."""
        return max(b.samples for bins in self.stages() for b in bins)

    def stages(self) -> list[list[Bin]]:
        """The bins of every read, the probe's first."""
        return [self.bins, *(r.bins for r in self.rereads)]

    def bin_of(self, votes: npt.ArrayLike, value: npt.ArrayLike, *, read: int = 0) -> IntArray:
        """The bin index of each (votes, feature value) at read `read` (0: the probe; see
        `locate`)."""
        return locate(self.stages()[read], votes, value)

    def samples_for(self, votes: int, value: float, *, read: int = 0) -> int:
        """The total samples the policy draws for one read."""
        return self.stages()[read][int(self.bin_of([votes], [value], read=read)[0])].samples


def _check_bins(bins: Sequence[Bin], at: int, end: int, actions: Sequence[int]) -> None:
    """The bins of a read at `at` samples tile each vote level, and each draws between `at` and
    the next read (or the largest action) `end`, inclusive."""
    if not bins:
        raise ValueError(f"the read at {at} samples needs at least one bin")
    for votes in {b.votes for b in bins}:
        level = [b for b in bins if b.votes == votes]
        bounds = [(b.low, b.high) for b in level]
        ok = bounds[0][0] is None and bounds[-1][1] is None
        ok = ok and all(a[1] is not None and a[1] == b[0] for a, b in pairwise(bounds))
        if not ok:
            raise ValueError(f"the bins of vote level {votes} must tile the line, in order")
    for b in bins:
        if b.samples not in actions or not at <= b.samples <= end:
            raise ValueError(
                f"bin action {b.samples} at the read of {at} samples is not among the actions "
                f"{[a for a in actions if at <= a <= end]}"
            )
        if b.votes > at:
            raise ValueError(f"a bin has {b.votes} votes of a read of {at} samples")


class Bounds(Protocol):
    """What locating a row needs of a bin."""

    @property
    def votes(self) -> int: ...
    @property
    def low(self) -> float | None: ...
    @property
    def weight(self) -> float: ...


def locate(bins: Sequence[Bounds], votes: npt.ArrayLike, value: npt.ArrayLike) -> IntArray:
    """The bin index of each (votes, feature value), bins being listed level by level in order
    of `low`: a vote level no bin has takes the nearest one that has (the lower on a tie); a
    missing value (NaN) the level's heaviest bin."""
    votes_ = np.asarray(votes, dtype=np.int64)
    values = np.asarray(value, dtype=np.float64)
    levels = np.array(sorted({b.votes for b in bins}), dtype=np.int64)
    distance = np.abs(votes_[..., None] - levels)
    level = levels[distance.argmin(axis=-1)]  # argmin takes the first (lower) on a tie
    out = np.zeros(votes_.shape, dtype=np.intp)
    for votes_level in levels:
        indices = [k for k, b in enumerate(bins) if b.votes == votes_level]
        edges = np.array([bins[k].low for k in indices[1:]], dtype=np.float64)
        heaviest = max(indices, key=lambda k: bins[k].weight)
        here = level == votes_level
        position = np.searchsorted(edges, values[here], side="right")
        chosen = np.asarray(indices, dtype=np.intp)[position]
        out[here] = np.where(np.isnan(values[here]), heaviest, chosen)
    return out


class CascadeExpected(BaseModel):
    """A cascade's numbers on the rows it was fitted on, beside the large model's best
    self-consistency. Costs in `cost_unit` per item (USD, or tokens when a run is unpriced)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    accuracy: float
    cost: float
    tokens: float
    escalated: float = Field(description="share of questions sent to the large model")
    large_best_n: int
    large_best_accuracy: float
    large_best_cost: float
    reached: bool


class CascadePolicy(BaseModel):
    """Small model first: `probe` samples; answer with their vote when the feature is at least
    `threshold`, else ask the large model for `samples` and answer with their vote (a plain
    majority, or weighted by each sample's geometric-mean token probability). The feature
    `score` is the large model's llm-judge score, as it was fitted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["ponder.cascade-policy"] = CASCADE_KIND
    version: Literal[1] = FORMAT_VERSION
    small_model: str
    large_model: str
    probe: int = Field(ge=1, le=256)
    feature: CascadeFeature
    threshold: float = Field(allow_inf_nan=False)
    samples: int = Field(ge=1, le=256, description="large-model samples when escalating")
    vote: Vote = "majority"
    top_logprobs: int = Field(default=0, ge=0, le=20)
    window: int = Field(default=16, ge=1)
    target: float = Field(gt=0.0, le=1.5, description="of the large model's best accuracy")
    cost_unit: Literal["usd", "tokens"]
    expected: CascadeExpected
    fitted_on: Provenance


Policy = AutoPolicy | CascadePolicy


def save_policy(policy: Policy, path: Path) -> None:
    """Write `policy` as indented JSON (the folder must exist)."""
    if not path.parent.is_dir():
        raise PolicyError(f"No such folder: {path.parent}")
    path.write_text(policy.model_dump_json(indent=2) + "\n", encoding="utf-8")


def load_policy(path: Path | None = None) -> Policy:
    """The policy at `path` (default: the shipped auto policy), checked: a file of another shape
    is one clear line, never a traceback."""
    if path is None:
        text = resources.files("ponder.planning").joinpath(DEFAULT_POLICY).read_text("utf-8")
        where = f"the shipped {DEFAULT_POLICY}"
    else:
        if not path.is_file():
            raise PolicyError(f"No such policy file: {path}")
        text = path.read_text(encoding="utf-8", errors="replace")
        where = str(path)
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise PolicyError(f"{where} is not JSON: {error}") from error
    kind = raw.get("kind") if isinstance(raw, dict) else None
    model: type[AutoPolicy] | type[CascadePolicy]
    if kind == AUTO_KIND:
        model = AutoPolicy
    elif kind == CASCADE_KIND:
        model = CascadePolicy
    else:
        raise PolicyError(
            f"{where} is not a ponder policy (its 'kind' is {kind!r}, expected {AUTO_KIND!r} or "
            f"{CASCADE_KIND!r}); make one with `ponder plan fit` or `ponder plan fit-cascade`"
        )
    if raw.get("version") != FORMAT_VERSION:
        raise PolicyError(
            f"{where} has format version {raw.get('version')!r}; this ponder reads version "
            f"{FORMAT_VERSION}: fit it again with the command it records"
        )
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'policy'}: {e['msg']}" for e in error.errors()
        )
        raise PolicyError(f"{where} is not a valid {kind}: {problems}") from error


def load_auto_policy(path: Path | None = None) -> AutoPolicy:
    policy = load_policy(path)
    if not isinstance(policy, AutoPolicy):
        raise PolicyError(
            f"{path} is a cascade policy; the auto planner needs an auto policy (`ponder plan fit`)"
        )
    return policy


def load_cascade_policy(path: Path) -> CascadePolicy:
    policy = load_policy(path)
    if not isinstance(policy, CascadePolicy):
        raise PolicyError(
            f"{path} is an auto policy; a cascade needs a cascade policy "
            "(`ponder plan fit-cascade`)"
        )
    return policy
