"""`ponder bench report`: one or more sampling runs, replayed offline and set beside their live
results: the report's numbers and verdicts, which `ponder.bench.report_files` writes out as a
Markdown report with plots and a JSON summary.

Every strategy that only chooses among independent samples is replayed from the stored samples
(`ponder.bench.replay`) at N = 1, 2, 4, ... S; strategies that had to generate appear as the
single points `ponder bench live` measured on the same items. Each point is an accuracy (with a
95 % bootstrap interval over items) at a cost measured three ways: completion tokens, latency
and dollars (`ponder.planning.pricing`; a machine priced by the hour charges the machine time
the tokens took, `ponder.bench.machine_time`). The Pareto frontier on each axis answers "which
strategy for this budget"; pass@k is drawn as the oracle ceiling it is, never on the frontier.

Only items whose S samples are all stored are used, so a report of a run still being sampled is
exact for the items it covers and says how many of how many those are; several runs (two models,
say) are compared on the items complete in all of them.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from ponder import __version__
from ponder.bench.estimators import bootstrap_ci, expected_max, powers_of_two
from ponder.bench.judging import judge_arrays
from ponder.bench.machine_time import run_price
from ponder.bench.replay import NO_TRACES_NOTE, ReplayData, replay
from ponder.bench.store import LiveConfig, LiveRecord, LiveResult, RunConfig, RunStore
from ponder.engines.factory import LOCAL
from ponder.errors import InvalidRequestError
from ponder.planning.policy import AutoPolicy
from ponder.planning.pricing import DEFAULT_USD_PER_HOUR, HourlyPrice, Price, price_for
from ponder.strategies.result import ModelUsage
from ponder.verifiers.confidence import group_confidences
from ponder.verifiers.self_certainty import confidence_score, mean_logprob_score

if TYPE_CHECKING:
    from ponder.bench.planned import PlannedRun

Axis = Literal["tokens", "latency", "cost"]
AXES: tuple[Axis, ...] = ("tokens", "latency", "cost")
Float32Array = npt.NDArray[np.float32]
FloatArray = npt.NDArray[np.float64]

DEFAULT_ORDERINGS = 200
DEFAULT_WINDOW = 16
SEED = 0
"""Orderings and bootstrap resamples are drawn from this seed, so a report is reproducible."""
BOOTSTRAP = 1000
COST_TOLERANCE = 0.005
"""Costs within this fraction of each other tie. Adaptive strategies' costs are averages over the
random orderings, fixed-N ones exact expectations, so at N = 1 (where every strategy is one
sample) they differ by ordering noise of ~0.1-0.3 %; without a tolerance the frontier would crown
whichever strategy the noise favoured."""
ORACLE = "pass@k"
AUTO_POLICY = "auto (policy)"
"""The auto planner's policy file, played on the run (`ponder.bench.planned`)."""
AUTO = "auto"
"""The auto planner refitted at the token cost of N samples, one row per N."""
CASCADE = "cascade"
CASCADE_ORACLE = "cascade (oracle router)"
"""The cascade routed by an oracle that knows which answers are right: the bound any router's
confidence signal is judged against, never a strategy one can run."""
PLANNED: tuple[str, ...] = (AUTO_POLICY, AUTO, CASCADE, CASCADE_ORACLE)
SELF_CERTAINTY = "self-certainty"
MEAN_LOGPROB: Final = "mean-logprob"
MARKDOWN = "report.md"
SUMMARY = "summary.json"
PLOTS: Mapping[Axis, str] = MappingProxyType(
    {
        "tokens": "accuracy_vs_tokens.png",
        "latency": "accuracy_vs_latency.png",
        "cost": "accuracy_vs_cost.png",
    }
)


class ReportError(InvalidRequestError):
    """The runs cannot be reported as asked (no complete items, different datasets, ...)."""


def check_one_dataset(paths: Sequence[Path], configs: Sequence[RunConfig]) -> None:
    """Runs compared item by item must draw from one dataset. Where each starts in it does not
    matter (`--skip`): items are matched by id."""
    first = configs[0].dataset
    for path, config in zip(paths[1:], configs[1:], strict=True):
        if config.dataset.whole() != first.whole():
            raise ReportError(
                f"the runs are over different datasets: {paths[0]} has {first.label()}, "
                f"{path} has {config.dataset.label()}"
            )


# --- the report's contents ------------------------------------------------------------------


class ReportRow(BaseModel):
    """One point: a replayed strategy at N samples, or a live config. Costs are means per item:
    `tokens` generated, `latency_s` measured seconds, `samples` drawn, `cost_usd` at the run's
    price (None: no price known; an hourly price charges the machine time of the tokens, see
    `ponder.bench.machine_time`). `pareto` lists the axes on whose frontier the point lies."""

    model_config = ConfigDict(frozen=True)

    run: str
    kind: Literal["replay", "live"]
    strategy: str
    n: int | None
    accuracy: float
    ci_low: float
    ci_high: float
    tokens: float
    latency_s: float
    samples: float
    cost_usd: float | None
    items: int
    oracle: bool = False
    note: str | None = None
    pareto: tuple[Axis, ...] = ()
    versus_majority: dict[int, tuple[float, float, float]] | None = None
    """A planner's accuracy minus plain majority's with N samples, on the same rows:
    (difference, low, high), a 95 % paired bootstrap interval over items."""

    def x(self, axis: Axis) -> float | None:
        """The point's cost on `axis` (cost in USD per item)."""
        if axis == "tokens":
            return self.tokens
        if axis == "latency":
            return self.latency_s
        return self.cost_usd

    def name(self, with_run: bool = False) -> str:
        """How tables name the point: "majority N=8", "beam-search (live)"."""
        own = f"{self.strategy} N={self.n}" if self.kind == "replay" else f"{self.strategy} (live)"
        if self.kind == "replay" and self.n is None:  # a planner's single point
            own = self.strategy
        return f"{self.run} · {own}" if with_run else own


class RunInfo(BaseModel):
    """One run as the report used it."""

    model_config = ConfigDict(frozen=True)

    path: str
    label: str
    config: RunConfig
    items_complete: int
    samples_stored: int
    prompt_tokens: float | None
    """Mean prompt tokens per used item (None: not recorded)."""
    price: str | None
    """The price applied, in words (None: unpriced)."""
    machine_seconds_per_token: float | None = None
    """Under an hourly price, the run's measured machine seconds per generated token: what an
    item's generated tokens are charged (None: not priced by the hour)."""


class BudgetPick(BaseModel):
    model_config = ConfigDict(frozen=True)

    budget: float
    point: str
    accuracy: float


class BudgetTier(BaseModel):
    """The best deployable point within the budget of N samples drawn in parallel by the first
    run's model (on each axis; None where nothing fits, or no cost is known)."""

    model_config = ConfigDict(frozen=True)

    n: int
    best: dict[Axis, BudgetPick | None]


class TargetCheck(BaseModel):
    """One of issue #4's targets (the auto planner, the cascade) checked on a run's rows."""

    model_config = ConfigDict(frozen=True)

    run: str
    target: str
    met: bool
    detail: str


class Report(BaseModel):
    """Everything `summary.json` holds and `report.md` shows."""

    model_config = ConfigDict(frozen=True)

    dataset: str
    generated_at: str
    ponder_version: str
    machine: str
    """Where the report was made (the run store does not record where it was sampled)."""
    command: str
    reproduce: list[str]
    runs: list[RunInfo]
    items_used: int
    orderings: int
    window: int
    seed: int
    bootstrap: int
    default_usd_per_hour: float
    prices_file: str | None
    rows: list[ReportRow]
    budgets: list[BudgetTier]
    notes: list[str]
    planner: list[str] = []
    """How the auto and cascade rows were made (the policy, cross-fitting), when there are any."""
    targets: list[TargetCheck] = []

    @property
    def several_runs(self) -> bool:
        return len(self.runs) > 1


# --- from a run store to replay arrays ------------------------------------------------------


def complete_items(store: RunStore) -> list[int]:
    """The items whose S samples are all stored: the only ones replay can use (a partial item
    would make N = S impossible and bias every other N towards the samples drawn first)."""
    missing = store.missing()
    return [i for i in range(store.config.items) if i not in missing]


def group_confidence_trace(token_confidence: npt.ArrayLike, window: int) -> Float32Array:
    """A sample's per-token group-confidence trace laid out as replay's online DeepConf reads it:
    entry t is the confidence of the window that ends at token t, +inf before the first full
    window (the live guard judges full windows only). A trace shorter than the window is one
    group, its mean (as `group_confidences` and the stored lowest-group confidence have it),
    placed at its last token: the trace's minimum is then still its confidence, and a cut there
    costs the whole trace, as in the live strategy, which never cuts it."""
    values = np.asarray(token_confidence, dtype=np.float64)
    trace = np.full(values.size, np.inf, dtype=np.float32)
    if values.size:
        groups = group_confidences(values, window)
        trace[values.size - groups.size :] = groups
    return trace


def certainty_scores(values: npt.ArrayLike, mode: str) -> Float32Array:
    """The self-certainty verifier's score for each trace summary in `values` (the DeepConf
    lowest group confidence, or the mean logprob), with the verifier's own mapping; NaN (not
    judged) stays NaN."""
    summaries = np.asarray(values, dtype=np.float64)
    scored = mean_logprob_score(summaries) if mode == MEAN_LOGPROB else confidence_score(summaries)
    return np.where(np.isnan(summaries), np.nan, scored).astype(np.float32)


@dataclass(frozen=True, eq=False)
class _Loaded:
    data: ReplayData
    prompt_tokens: float | None
    notes: tuple[str, ...]


def replay_data(
    store: RunStore, window: int = DEFAULT_WINDOW, items: Collection[int] | None = None
) -> ReplayData:
    """The run's `items` (default: every complete one) as `ReplayData`: answer groups,
    correctness, tokens and latency as stored; confidence = DeepConf's lowest group confidence
    over `window` tokens, with each sample's per-token group-confidence trace for online
    DeepConf; scores "self-certainty" (and "mean-logprob" where the run kept the sampled tokens'
    logprobs) as the verifier of that name gives them. A group is right when any of its samples
    is (its samples are one answer, so they are graded alike)."""
    return _load(store, window, items).data


def _nothing_complete(path: Path, config: RunConfig) -> ReportError:
    return ReportError(
        f"{path} has no complete item yet: 0 of {config.items} items have all "
        f"{config.samples} samples; `ponder bench run` stores them as it goes"
    )


def _load(store: RunStore, window: int, items: Collection[int] | None) -> _Loaded:
    complete = complete_items(store)
    used = complete if items is None else sorted(set(items))
    if not used:
        raise _nothing_complete(store.path, store.config)
    incomplete = sorted(set(used) - set(complete))
    if incomplete:
        raise ReportError(f"item {incomplete[0]} of {store.path} is not complete")
    arrays = store.load_arrays(window=window, tail=window)
    rows = np.array(used, dtype=np.intp)
    group = arrays.group[rows]
    correct = arrays.correct[rows]
    width = max(int(group.max()) + 1, 1)
    shape = group.shape
    cells = (np.arange(shape[0])[:, None] * width + group)[group >= 0]
    answered_ok = correct[group >= 0]
    total = np.bincount(cells, minlength=shape[0] * width)
    right = np.bincount(cells, weights=answered_ok, minlength=shape[0] * width)
    group_correct = (right > 0).reshape(shape[0], width)
    notes: list[str] = []
    mixed = int(((right > 0) & (right < total)).sum())
    if mixed:
        held = "answer group holds" if mixed == 1 else "answer groups hold"
        notes.append(
            f"{store.path.name}: {mixed} {held} samples graded both right and wrong; such a "
            "group counts as right"
        )

    position = {item: row for row, item in enumerate(used)}
    traces: list[list[Float32Array]] = [[np.zeros(0, np.float32)] * shape[1] for _ in used]
    mean_logprob = np.full(shape, np.nan)
    for i, j, confidence, logprob in store.token_traces(used):
        row = position[i]
        traces[row][j] = group_confidence_trace(confidence, window)
        if logprob.size:
            mean_logprob[row, j] = float(logprob.astype(np.float64).mean())
    lowest = arrays.confidence["lowest_group"][rows]
    has_traces = not np.isnan(lowest).all()

    scores: dict[str, Float32Array] = {}
    if store.config.top_logprobs > 0 and has_traces:
        scores[SELF_CERTAINTY] = certainty_scores(lowest, SELF_CERTAINTY)
    elif has_traces:
        notes.append(
            f"{store.path.name} was sampled without top logprobs: no {SELF_CERTAINTY} scores "
            "(DeepConf's confidence needs the alternatives)"
        )
    if not np.isnan(mean_logprob).all():
        scores[MEAN_LOGPROB] = certainty_scores(mean_logprob, MEAN_LOGPROB)

    prompt = store.prompt_tokens()
    known = [tokens for i in used if (tokens := prompt[i]) is not None]
    data = ReplayData(
        groups=group,
        correct=correct,
        tokens=arrays.tokens[rows],
        latency=arrays.latency_s[rows],
        confidence=lowest,
        group_confidence=traces if has_traces else None,
        scores=scores,
        group_correct=group_correct,
    )
    return _Loaded(data, float(np.mean(known)) if known else None, tuple(notes))


# --- the report -----------------------------------------------------------------------------


def pareto_front(
    points: Sequence[tuple[float, float]], tolerance: float = COST_TOLERANCE
) -> list[int]:
    """The indices, ascending, of the points (cost, accuracy) no other point beats. Point m
    beats point k when it is at least as accurate and costs no more than k's cost x (1 +
    `tolerance`), and it is either more accurate, cheaper by more than the tolerance, or, a tie
    within the tolerance, listed first. So a tie keeps one point, the first (the simplest
    strategy, in the report's order), not whichever won by ordering noise."""
    front = []
    for k, (cost, accuracy) in enumerate(points):
        beaten = any(
            other_accuracy >= accuracy
            and other_cost <= cost * (1 + tolerance)
            and (other_accuracy > accuracy or other_cost < cost * (1 - tolerance) or m < k)
            for m, (other_cost, other_accuracy) in enumerate(points)
            if m != k
        )
        if not beaten:
            front.append(k)
    return front


def ties(
    rows: Sequence[ReportRow], row: ReportRow, axis: Axis, tolerance: float = COST_TOLERANCE
) -> list[ReportRow]:
    """The other deployable rows exactly as accurate as `row` at its cost on `axis` (within the
    tolerance): the points a frontier point stands for."""
    cost = float(row.x(axis) or 0.0)
    return [
        other
        for other in rows
        if other is not row
        and not other.oracle
        and other.accuracy == row.accuracy
        and finite(other.x(axis))
        and abs(float(other.x(axis) or 0.0) - cost) <= cost * tolerance
    ]


def report_command(
    runs: Sequence[Path],
    *,
    strategies: Sequence[str] | None,
    prices: Path | None,
    orderings: int,
    window: int,
    out: Path,
    planner: PlannerOptions | None = None,
) -> str:
    """The `ponder bench report` command line that makes this report again."""
    parts = ["ponder", "bench", "report", *(str(run) for run in runs)]
    if strategies is not None:
        parts += ["--strategies", ",".join(strategies)]
    if prices is not None:
        parts += ["--prices", str(prices)]
    parts += ["--orderings", str(orderings), "--window", str(window), "--out", str(out)]
    parts += (planner or PlannerOptions()).flags()
    return shlex.join(parts)


@dataclass(frozen=True)
class PlannerOptions:
    """What the report adds of the planners (`ponder.bench.planned`): the auto policy's rows
    (None: none; `policy_path` None with a policy: the shipped one), and the cascade from the
    first run's model to the second's."""

    policy: AutoPolicy | None = None
    policy_path: Path | None = None
    cascade: bool = False
    cascade_target: float = 0.95
    folds: int = 5

    def flags(self) -> list[str]:
        """The `ponder bench report` options that ask for this."""
        flags = ["--no-auto"] if self.policy is None else []
        if self.policy is not None and self.policy_path is not None:
            flags += ["--policy", str(self.policy_path)]
        if self.cascade:
            flags += ["--cascade"]
            if self.cascade_target != 0.95:
                flags += ["--cascade-target", f"{self.cascade_target:g}"]
        if self.folds != 5:
            flags += ["--folds", str(self.folds)]
        return flags


def run_command(path: Path, config: RunConfig) -> str:
    """The `ponder bench run` command line that samples this run again (as far as the engine
    is deterministic) or resumes it."""
    spec = config.dataset
    parts = ["ponder", "bench", "run", "--out", str(path)]
    if spec.kind == "jsonl":
        parts += ["--dataset", str(spec.path)]
        if spec.fields is not None:
            parts += ["--prompt-field", spec.fields.prompt, "--answer-field", spec.fields.answer]
            if spec.fields.id is not None:
                parts += ["--id-field", spec.fields.id]
        if spec.checker is not None:
            parts += ["--checker", spec.checker]
    else:
        parts += ["--dataset", spec.name]
        for option, value in (
            ("--rg-size", spec.size),
            ("--rg-seed", spec.seed),
            ("--rg-difficulty", spec.difficulty),
        ):
            if value is not None:
                parts += [option, str(value)]
    if spec.skip:
        parts += ["--skip", str(spec.skip)]
    parts += ["--limit", str(config.items), "--model", config.model]
    if config.engine != LOCAL:
        parts += ["--engine", config.engine]
    parts += [
        "--samples",
        str(config.samples),
        "--max-tokens",
        str(config.max_tokens),
        "--seed",
        str(config.seed),
        "--temperature",
        f"{config.temperature:g}",
        "--top-p",
        f"{config.top_p:g}",
        "--top-k",
        str(config.top_k),
        "--top-logprobs",
        str(config.top_logprobs),
    ]
    return shlex.join(parts)


def live_command(path: Path, result: LiveResult) -> str:
    """The `ponder bench live` command line of a live config: every parameter spelled out (the
    config's identity is its full parameter set, so this is the same config, resumed)."""
    config = result.config
    parts = ["ponder", "bench", "live", str(path), "--strategy", config.strategy]
    for key, value in sorted(config.params.items()):
        if value is not None:
            parts += ["-p", f"{key}={_param(value)}"]
    if config.budget.max_tokens is not None:
        parts += ["--budget-tokens", str(config.budget.max_tokens)]
    if config.budget.max_samples is not None:
        parts += ["--max-samples", str(config.budget.max_samples)]
    parts += ["--max-tokens", str(config.max_tokens)]
    if config.named:
        parts += ["--label", config.label]
    if config.judge_model is not None:
        parts += ["--judge-model", config.judge_model]
    if config.escalate_model is not None:
        parts += ["--escalate-model", config.escalate_model]
    if config.escalate_engine is not None:
        parts += ["--escalate-engine", config.escalate_engine]
    return shlex.join(parts)


def _param(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


@dataclass(frozen=True, eq=False)
class _Run:
    path: Path
    label: str
    config: RunConfig
    store: RunStore
    complete: list[int]
    item_ids: list[str]


def build_report(
    runs: Sequence[Path],
    *,
    strategies: Sequence[str] | None = None,
    prices: Mapping[str, Price] | None = None,
    prices_path: Path | None = None,
    orderings: int = DEFAULT_ORDERINGS,
    window: int = DEFAULT_WINDOW,
    out: Path | None = None,
    now: datetime | None = None,
    planner: PlannerOptions | None = None,
) -> Report:
    """Replay every run (read-only: a run still being sampled is safe to report) on the items
    complete in all of them, add their live results on those items, price and rank everything.
    `out` only enters the reproducing command (default: beside the first run). `planner` adds
    the auto policy's and the cascade's rows and checks their targets."""
    if not runs:
        raise ReportError("give at least one run file")
    if orderings < 1:
        raise ReportError(f"--orderings must be at least 1, got {orderings}")
    if window < 1:
        raise ReportError(f"--window must be at least 1 token, got {window}")
    resolved = [run.resolve() for run in runs]
    for index, path in enumerate(resolved):
        if path in resolved[:index]:
            raise ReportError(f"{runs[index]} is given twice")
    out = default_out(runs[0]) if out is None else out
    planner = planner or PlannerOptions()
    if planner.cascade and len(runs) != 2:
        raise ReportError(
            f"a cascade needs exactly two runs, the small model's then the large one's; got "
            f"{len(runs)}"
        )
    opened: list[RunStore] = []
    try:
        for path in runs:
            opened.append(RunStore.open_readonly(path))
        return _build(
            runs, opened, strategies, prices, prices_path, orderings, window, out, now, planner
        )
    finally:
        for store in opened:
            store.close()


def default_out(run: Path) -> Path:
    """`<run stem>-report/` beside the run."""
    return run.with_name(f"{run.stem}-report")


def _build(
    paths: Sequence[Path],
    stores: Sequence[RunStore],
    strategies: Sequence[str] | None,
    prices: Mapping[str, Price] | None,
    prices_path: Path | None,
    orderings: int,
    window: int,
    out: Path,
    now: datetime | None,
    planner: PlannerOptions,
) -> Report:
    from ponder.bench.planned import PlannedRun

    check_one_dataset(paths, [store.config for store in stores])
    labels = _labels(paths, stores)
    runs = [
        _Run(path, label, store.config, store, complete_items(store), [i.id for i in store.items()])
        for path, label, store in zip(paths, labels, stores, strict=True)
    ]
    for run in runs:
        if not run.complete:
            raise _nothing_complete(run.path, run.config)
    shared = set.intersection(*({run.item_ids[i] for i in run.complete} for run in runs))
    used_ids = [item_id for item_id in runs[0].item_ids if item_id in shared]
    if not used_ids:
        raise ReportError("the runs have no complete item in common")

    notes: list[str] = []
    rows: list[ReportRow] = []
    infos: list[RunInfo] = []
    reference: tuple[ReplayData, float | None, Price | None] | None = None
    planned: list[PlannedRun] = []
    for run in runs:
        index_of = {item_id: i for i, item_id in enumerate(run.item_ids)}
        used = [index_of[item_id] for item_id in used_ids]
        loaded = _load(run.store, window, used)
        given = price_for(run.config.model, local=run.config.engine == LOCAL, prices=prices)
        priced = run_price(run.store, given)
        price = priced.price
        if reference is None:
            reference = (loaded.data, loaded.prompt_tokens, price)
        notes += loaded.notes
        if given is None:
            notes.append(
                f"{run.label}: no price for a model on a remote server; give --prices for its cost"
            )
        elif priced.note is not None:
            notes.append(priced.note)
        elif loaded.prompt_tokens is None and not isinstance(given, HourlyPrice):
            notes.append(f"{run.label}: prompt tokens were not recorded; input tokens cost 0")
        replayed = replay(
            loaded.data,
            orderings=orderings,
            strategies=strategies,
            seed=SEED,
            bootstrap=BOOTSTRAP,
        )
        prompt = loaded.prompt_tokens or 0.0
        for row in replayed:
            cost = None
            if price is not None:
                cost = price.cost(prompt * row.samples, row.tokens, row.latency_s)
            rows.append(
                ReportRow(
                    run=run.label,
                    kind="replay",
                    strategy=row.strategy,
                    n=row.n,
                    accuracy=row.accuracy,
                    ci_low=row.ci_low,
                    ci_high=row.ci_high,
                    tokens=row.tokens,
                    latency_s=row.latency_s,
                    samples=row.samples,
                    cost_usd=cost,
                    items=loaded.data.items,
                    oracle=row.strategy == ORACLE,
                    note=row.note,
                )
            )
        rows += _live_rows(run, set(used), price, prices, notes)
        planned.append(
            PlannedRun(
                run.label,
                str(run.path),
                run.config,
                used_ids,
                loaded.data,
                loaded.prompt_tokens,
                price,
                judge_arrays(run.store, used),
            )
        )
        stored, _ = run.store.tally()
        infos.append(
            RunInfo(
                path=str(run.path),
                label=run.label,
                config=run.config,
                items_complete=len(run.complete),
                samples_stored=stored,
                prompt_tokens=loaded.prompt_tokens,
                price=priced.description,
                machine_seconds_per_token=(
                    None if priced.machine is None else priced.machine.seconds_per_token
                ),
            )
        )
    if any(row.note == NO_TRACES_NOTE for row in rows):
        notes.append(f"deepconf-online: {NO_TRACES_NOTE}")
    described, targets = _planner_rows(planned, planner, orderings, rows, notes)
    rows = _mark_pareto(rows, len(used_ids))
    assert reference is not None
    return Report(
        # Runs that start at different items share those of the one that starts last.
        dataset=max((store.config.dataset for store in stores), key=lambda d: d.skip).label(),
        generated_at=(now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC"),
        ponder_version=__version__,
        machine=f"{platform.system()} {platform.machine()}, {os.cpu_count() or '?'} CPUs",
        command=report_command(
            paths,
            strategies=strategies,
            prices=prices_path,
            orderings=orderings,
            window=window,
            out=out,
            planner=planner,
        ),
        reproduce=[run_command(run.path, run.config) for run in runs]
        + [live_command(run.path, live) for run in runs for live in run.store.live_results()],
        runs=infos,
        items_used=len(used_ids),
        orderings=orderings,
        window=window,
        seed=SEED,
        bootstrap=BOOTSTRAP,
        default_usd_per_hour=DEFAULT_USD_PER_HOUR,
        prices_file=None if prices_path is None else str(prices_path),
        rows=rows,
        budgets=_budgets(rows, *reference, items=len(used_ids), several=len(runs) > 1),
        notes=notes,
        planner=described,
        targets=targets,
    )


def _planner_rows(
    runs: Sequence[PlannedRun],
    planner: PlannerOptions,
    orderings: int,
    rows: list[ReportRow],
    notes: list[str],
) -> tuple[list[str], list[TargetCheck]]:
    """Add the auto policy's and the cascade's rows to `rows`; return how they were made and
    the targets checked."""
    from ponder.bench.planned import auto_rows, cascade_rows, target_checks

    described: list[str] = []
    policy = planner.policy
    if policy is not None:
        where = planner.policy_path or "the shipped default policy"
        described.append(
            f"auto: {where} (probe {policy.probe} samples, bins by vote share"
            + (f" and {policy.settings.feature}" if policy.settings.feature else "")
            + f", answers by {policy.settings.vote} vote"
            + f"; fitted for {policy.settings.objective.describe()} on "
            f"{policy.fitted_on.describe()})"
        )
        for run in runs:
            rows += auto_rows(
                run, policy, orderings=orderings, seed=SEED, folds=planner.folds, notes=notes
            )
    small = large = None
    if planner.cascade:
        small, large = runs
        if small.config.model == large.config.model:
            raise ReportError("a cascade needs two different models; both runs are one model")
        described.append(
            f"cascade: {small.label} first; {large.label} when the probe is unsure "
            f"(probe size, feature, threshold, {large.label}'s samples and the vote searched, "
            f"cross-fitted over {planner.folds} folds of items)"
        )
        rows += cascade_rows(
            small,
            large,
            target=planner.cascade_target,
            orderings=orderings,
            seed=SEED,
            folds=planner.folds,
        )
    small_label = None if small is None else small.label
    large_label = None if large is None else large.label
    return described, target_checks(rows, small_label, large_label)


def _labels(paths: Sequence[Path], stores: Sequence[RunStore]) -> list[str]:
    """Runs are named by their model; by file when two runs share a model."""
    models = [store.config.model for store in stores]
    if len(set(models)) == len(models):
        return models
    return [f"{model} ({path.stem})" for model, path in zip(models, paths, strict=True)]


def _live_rows(
    run: _Run,
    used: set[int],
    price: Price | None,
    prices: Mapping[str, Price] | None,
    notes: list[str],
) -> list[ReportRow]:
    """Each live config as one point over the used items it has done, with a bootstrap interval
    over those items (a live config that has none of them is left out, and said so). The run's
    model is charged at the run's `price`; a judge's or a cascade's further model at its own."""
    rows = []
    for result in run.store.live_results():
        keep = np.isin(result.item_index, sorted(used))
        label = result.config.label
        if not keep.any():
            notes.append(
                f"{run.label}: live {label!r} has none of the items used "
                f"({result.item_index.size} items done); left out"
            )
            continue
        correct = result.correct[keep]
        low, high = bootstrap_ci(correct, resamples=BOOTSTRAP, seed=SEED)
        records = {r.item_index: r for r in run.store.live_records(result.config.key)}
        kept = [records[int(i)] for i in result.item_index[keep]]
        tokens = float(result.tokens[keep].mean())
        latency = float(result.latency_s[keep].mean())
        done = int(keep.sum())
        rows.append(
            ReportRow(
                run=run.label,
                kind="live",
                strategy=label,
                n=None,
                accuracy=float(correct.mean()),
                ci_low=float(low[0]),
                ci_high=float(high[0]),
                tokens=tokens,
                latency_s=latency,
                samples=float(result.samples[keep].mean()),
                cost_usd=_live_cost(run, result.config, kept, price, prices),
                items=done,
                note=None if done == len(used) else f"{done} of the {len(used)} items used",
            )
        )
    return rows


def _live_cost(
    run: _Run,
    config: LiveConfig,
    records: Sequence[LiveRecord],
    price: Price | None,
    prices: Mapping[str, Price] | None,
) -> float | None:
    """The mean cost per item of a live config's `records`: each model's tokens and seconds at
    its price where the record splits them by model, else everything at the run's `price`
    (None: a model drawn from has no price)."""

    def price_of(model: str) -> Price | None:
        if model == run.config.model:
            return price
        engine = run.config.engine
        if model == config.escalate_model and config.escalate_engine is not None:
            engine = config.escalate_engine
        return price_for(model, local=engine == LOCAL, prices=prices)

    costs = []
    for record in records:
        by_model = record.by_model or {
            run.config.model: ModelUsage(
                prompt_tokens=record.prompt_tokens,
                completion_tokens=record.completion_tokens,
                seconds=record.latency_s,
            )
        }
        cost = 0.0
        for model, used in by_model.items():
            charged = price_of(model)
            if charged is None:
                return None
            cost += charged.cost(used.prompt_tokens, used.completion_tokens, used.seconds)
        costs.append(cost)
    return float(np.mean(costs))


def _mark_pareto(rows: list[ReportRow], items: int) -> list[ReportRow]:
    """Each row with the axes on whose frontier it lies, among the rows that can be deployed and
    were measured on all `items` (not oracles, not a live run on some of them)."""
    marks: dict[int, list[Axis]] = {k: [] for k in range(len(rows))}
    for axis in AXES:
        candidates = [
            k for k, row in enumerate(rows) if _comparable(row, items) and finite(row.x(axis))
        ]
        points = [(float(rows[k].x(axis) or 0.0), rows[k].accuracy) for k in candidates]
        for position in pareto_front(points):
            marks[candidates[position]].append(axis)
    return [row.model_copy(update={"pareto": tuple(marks[k])}) for k, row in enumerate(rows)]


def finite(value: float | None) -> bool:
    """Whether a cost is known and finite (a point to draw or compare)."""
    return value is not None and bool(np.isfinite(value))


def _comparable(row: ReportRow, items: int) -> bool:
    """Whether a row competes for the frontier and the budget tiers: a deployable strategy
    measured on all `items` (an accuracy on a few of them is not comparable)."""
    return not row.oracle and row.items == items


def _budgets(
    rows: Sequence[ReportRow],
    data: ReplayData,
    prompt: float | None,
    price: Price | None,
    *,
    items: int,
    several: bool,
) -> list[BudgetTier]:
    """Budget tiers at the cost of N parallel samples of the first run (N = 1, 2, 4, ... S):
    tokens N x the mean sample, latency the expected slowest of N, and their price. Within each
    (up to the cost tolerance), the most accurate deployable point measured on all `items`; of
    equally accurate ones the cheapest, and of those tied in cost too, the first."""
    mean_tokens = float(np.asarray(data.tokens, dtype=np.float64).mean())
    tiers = []
    for n in powers_of_two(data.samples):
        tokens = n * mean_tokens
        latency = float(expected_max(data.latency, n).mean())
        budget: dict[Axis, float | None] = {
            "tokens": tokens,
            "latency": latency,
            "cost": None if price is None else price.cost((prompt or 0.0) * n, tokens, latency),
        }
        best: dict[Axis, BudgetPick | None] = {}
        for axis in AXES:
            limit = budget[axis]
            fits = [
                row
                for row in rows
                if limit is not None
                and _comparable(row, items)
                and finite(row.x(axis))
                and float(row.x(axis) or 0.0) <= limit * (1 + COST_TOLERANCE)
            ]
            if limit is None or not fits:
                best[axis] = None
                continue
            accuracy = max(row.accuracy for row in fits)
            best_rows = [row for row in fits if row.accuracy == accuracy]
            cheapest = min(float(row.x(axis) or 0.0) for row in best_rows)
            top = next(  # the cheapest; among ties within the tolerance, the first (simplest)
                row
                for row in best_rows
                if float(row.x(axis) or 0.0) <= cheapest * (1 + COST_TOLERANCE)
            )
            best[axis] = BudgetPick(budget=limit, point=top.name(several), accuracy=top.accuracy)
        tiers.append(BudgetTier(n=n, best=best))
    return tiers
