"""The report's planner rows: the `auto` policy and the small-to-large cascade replayed from the
same stored samples as every other strategy, and the checks of issue #4's two targets.

Honesty rules. A policy judged on the items it was fitted on is cross-fitted: its settings are
refitted on K-1 folds of the items and played on the fold left out, fold by fold, so no item is
answered by a policy that saw it. A policy fitted elsewhere is played as it is. `auto` is also
refitted, cross-fitted, at the token cost of self-consistency with N samples for each N, the
"at equal tokens" comparison. The cascade is always searched and judged by cross-fitting.
The checks give auto's difference from majority with a paired interval: both answer the same
questions along the same orderings, so the difference is much surer than either accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ponder.bench.estimators import powers_of_two
from ponder.bench.judging import JudgeArrays
from ponder.bench.replay import ReplayData
from ponder.bench.report import (
    AUTO,
    AUTO_POLICY,
    CASCADE,
    CASCADE_ORACLE,
    ReportRow,
    TargetCheck,
)
from ponder.bench.store import RunConfig
from ponder.planning.cascade import cascade_table, oracle
from ponder.planning.cascade import cross_fit as cross_fit_cascade
from ponder.planning.fit import cross_fit, evaluate, probe_runs
from ponder.planning.outcomes import BoolArray, Outcome, PlanRun
from ponder.planning.policy import AutoPolicy, Objective, RunSource
from ponder.planning.pricing import Price

AUTO_TOKEN_SHARE = 0.5
"""Target: auto matches self-consistency at its best N with at most this share of its tokens."""
MATCH_TOLERANCE = 0.01
""""Matches" and "at least as accurate" allow this much less accuracy (one point): estimates
averaged over random orderings differ by noise of about that size; the intervals are shown."""
CASCADE_ACCURACY = 0.95
CASCADE_COST = 0.60
"""Target: the cascade reaches this share of the large model's best accuracy at no more than
this share of its cost."""


@dataclass(frozen=True, eq=False)
class PlannedRun:
    """A run of the report, as the planners need it."""

    label: str
    path: str
    config: RunConfig
    item_ids: Sequence[str]
    data: ReplayData
    prompt_tokens: float | None
    price: Price | None
    judges: Mapping[str, JudgeArrays] = field(default_factory=dict)

    def plan_run(self) -> PlanRun:
        source = RunSource.of(self.path, self.config, self.item_ids)
        return PlanRun(self.data, source, self.prompt_tokens, self.price, self.judges)


def _row(
    run: PlannedRun,
    strategy: str,
    n: int | None,
    outcome: Outcome,
    note: str,
    *,
    seed: int,
    priced: bool = True,
    versus: Mapping[int, BoolArray] | None = None,
) -> ReportRow:
    """A report row of a planner's outcome on `run`: its own per-row cost when it has one,
    else the run's price of its means (prices are linear), else none. Unless `priced`, the
    outcome's per-row costs are tokens, not dollars, and no cost is given. `versus`: plain
    majority's right answers per row at each N, to give the paired differences from."""
    score = outcome.score(seed=seed)
    cost_usd = score.cost if priced else None
    if cost_usd is None and priced and run.price is not None:
        cost_usd = run.price.cost(
            (run.prompt_tokens or 0.0) * score.samples, score.tokens, score.latency_s
        )
    return ReportRow(
        run=run.label,
        kind="replay",
        strategy=strategy,
        n=n,
        accuracy=score.accuracy,
        ci_low=score.ci_low,
        ci_high=score.ci_high,
        tokens=score.tokens,
        latency_s=score.latency_s,
        samples=score.samples,
        cost_usd=cost_usd,
        items=score.items,
        note=note,
        versus_majority=None if versus is None else outcome.versus(versus, seed=seed),
    )


def auto_rows(
    run: PlannedRun,
    policy: AutoPolicy,
    *,
    orderings: int,
    seed: int,
    folds: int,
    notes: list[str],
) -> list[ReportRow]:
    """The policy's point and the equal-token sweep on one run (see the module docstring)."""
    samples = run.data.samples
    settings = policy.settings
    if samples < settings.probe:
        notes.append(
            f"{run.label}: no auto rows: {samples} samples per item, fewer than the policy's "
            f"probe ({settings.probe})"
        )
        return []
    settings = settings.within(samples)
    table = probe_runs([run.plan_run()], settings, orderings=orderings, seed=seed)
    rows: list[ReportRow] = []
    seen = policy.fitted_on.overlap(run.config, run.item_ids)
    if seen:
        outcome = cross_fit(table, settings, folds=folds, seed=seed)
        how = (
            f"cross-fitted ({folds} folds over items): the policy was fitted on {seen} of "
            "these items, so each fold is played by the policy's settings refitted on the others"
        )
    elif policy.most_samples <= samples and policy.settings.rereads == settings.rereads:
        outcome = evaluate(policy, table)
        how = f"the policy as fitted on {policy.fitted_on.describe()} (out of sample)"
    else:
        outcome = None
        how = ""
        notes.append(
            f"{run.label}: no {AUTO_POLICY!r} row: the policy draws up to "
            f"{policy.most_samples} samples and reads at {policy.settings.reads}, the run has "
            f"{samples} per item"
        )
    majority = {n: correct for n, (correct, _) in table.reference.items()}
    if outcome is not None:
        rows.append(_row(run, AUTO_POLICY, None, outcome, how, seed=seed, versus=majority))
    for n in powers_of_two(samples):
        if n < settings.probe:
            continue
        budget = settings.model_copy(update={"objective": Objective(tokens_of_n=n)})
        swept = cross_fit(table, budget, folds=folds, seed=seed)
        note = f"fitted to the tokens of {n} samples"
        same = {n: majority[n]} if n in majority else None
        rows.append(_row(run, AUTO, n, swept, note, seed=seed, versus=same))
    return rows


def cascade_rows(
    small: PlannedRun,
    large: PlannedRun,
    *,
    target: float,
    orderings: int,
    seed: int,
    folds: int,
) -> list[ReportRow]:
    """The cascade from `small` to `large`, searched and judged by cross-fitting (the two runs
    hold the same items in the same order)."""
    table = cascade_table(small.plan_run(), large.plan_run(), orderings=orderings, seed=seed)
    outcome, escalated = cross_fit_cascade(table, target=target, folds=folds, seed=seed)
    priced = table.cost_unit == "usd"  # else its per-row costs are tokens, not dollars
    routes = ", ".join(table.features).replace("score", f"{large.label}'s judge score")
    note = (
        f"{small.label} first, {large.label} when unsure (routing on {routes}); "
        f"{escalated:.0%} escalated; cross-fitted ({folds} folds over items) to {target:.0%} "
        f"of {large.label}'s best accuracy at least "
        f"{'cost' if table.cost_unit == 'usd' else 'tokens'}"
    )
    rows = [_row(large, CASCADE, None, outcome, note, seed=seed, priced=priced)]
    bound, k, m = oracle(table, target)
    sent = float((bound.samples > k).mean())
    note = (
        f"knows which answers are right: keeps {small.label}'s answer of {k} where it is "
        f"right, asks {large.label} for {m} only where that one is right instead ({sent:.0%} "
        "of questions); no confidence signal can route better"
    )
    oracle_row = _row(large, CASCADE_ORACLE, None, bound, note, seed=seed, priced=priced)
    rows.append(oracle_row.model_copy(update={"oracle": True}))
    return rows


def _best_majority(rows: Sequence[ReportRow], run: str) -> ReportRow | None:
    """Self-consistency at its best N on `run` (the smallest N of equally accurate ones)."""
    majority = [r for r in rows if r.run == run and r.strategy == "majority" and r.n is not None]
    if not majority:
        return None
    return max(majority, key=lambda r: (r.accuracy, -(r.n or 0)))


def _ci(row: ReportRow) -> str:
    return f"{row.accuracy:.1%} [{row.ci_low:.1%}, {row.ci_high:.1%}]"


def _paired(row: ReportRow, n: int | None) -> str:
    """The paired interval of `row`'s difference from majority with `n` samples, if known."""
    if row.versus_majority is None or n not in row.versus_majority:
        return ""
    _, low, high = row.versus_majority[n]
    return f" [{low:+.1%}, {high:+.1%}] paired"


def target_checks(
    rows: Sequence[ReportRow], small: str | None, large: str | None
) -> list[TargetCheck]:
    """Issue #4's targets, each with its verdict and the numbers behind it."""
    checks: list[TargetCheck] = []
    for policy_row in (r for r in rows if r.strategy == AUTO_POLICY):
        best = _best_majority(rows, policy_row.run)
        if best is None:
            continue
        ratio = policy_row.tokens / best.tokens if best.tokens else float("inf")
        met = policy_row.accuracy >= best.accuracy - MATCH_TOLERANCE and ratio <= AUTO_TOKEN_SHARE
        checks.append(
            TargetCheck(
                run=policy_row.run,
                target=f"auto matches self-consistency at its best N (within "
                f"{MATCH_TOLERANCE:.0%}) with at most {AUTO_TOKEN_SHARE:.0%} of its tokens",
                met=met,
                detail=f"auto {_ci(policy_row)} at {policy_row.tokens:,.0f} tokens vs "
                f"majority N={best.n} {_ci(best)} at {best.tokens:,.0f} tokens: "
                f"{policy_row.accuracy - best.accuracy:+.1%} accuracy"
                f"{_paired(policy_row, best.n)}, {ratio:.0%} of the tokens",
            )
        )
    for run in dict.fromkeys(r.run for r in rows if r.strategy == AUTO):
        pairs = []
        for swept in (r for r in rows if r.run == run and r.strategy == AUTO):
            same = next(
                (r for r in rows if r.run == run and r.strategy == "majority" and r.n == swept.n),
                None,
            )
            if same is not None:
                pairs.append((swept, same))
        if not pairs:
            continue
        worse = [f"N={a.n}" for a, b in pairs if a.accuracy < b.accuracy - MATCH_TOLERANCE]
        checks.append(
            TargetCheck(
                run=run,
                target="auto at equal tokens is at least as accurate as self-consistency "
                f"(within {MATCH_TOLERANCE:.0%})",
                met=not worse,
                detail="; ".join(
                    f"N={b.n}: auto {_ci(a)} at {a.tokens:,.0f} vs majority {_ci(b)} at "
                    f"{b.tokens:,.0f} tokens ({a.accuracy - b.accuracy:+.1%}{_paired(a, b.n)})"
                    for a, b in pairs
                )
                + (f"; less accurate at {', '.join(worse)}" if worse else ""),
            )
        )
    cascade = next((r for r in rows if r.strategy == CASCADE), None)
    if cascade is not None and large is not None:
        best = _best_majority(rows, large)
        if best is not None:
            accuracy = cascade.accuracy / best.accuracy if best.accuracy else float("inf")
            if cascade.cost_usd is not None and best.cost_usd:
                cost, unit = cascade.cost_usd / best.cost_usd, "cost"
            else:
                cost, unit = cascade.tokens / best.tokens, "tokens (unpriced)"
            checks.append(
                TargetCheck(
                    run=large,
                    target=f"the cascade ({small} -> {large}) reaches {CASCADE_ACCURACY:.0%} of "
                    f"{large}'s self-consistency accuracy at no more than {CASCADE_COST:.0%} of "
                    "its cost",
                    met=accuracy >= CASCADE_ACCURACY and cost <= CASCADE_COST,
                    detail=f"cascade {_ci(cascade)} vs majority N={best.n} {_ci(best)}: "
                    f"{accuracy:.1%} of the accuracy at {cost:.0%} of the {unit}"
                    + _oracle_detail(rows, best),
                )
            )
    return checks


def _oracle_detail(rows: Sequence[ReportRow], best: ReportRow) -> str:
    """The oracle router's share of the large model's best accuracy and cost, if replayed."""
    bound = next((r for r in rows if r.strategy == CASCADE_ORACLE), None)
    if bound is None or not best.accuracy:
        return ""
    if bound.cost_usd is not None and best.cost_usd:
        cost = bound.cost_usd / best.cost_usd
    else:
        cost = bound.tokens / best.tokens
    return (
        f"; an oracle router (a bound, not a strategy) reaches {bound.accuracy / best.accuracy:.1%}"
        f" of the accuracy at {cost:.0%}"
    )
