"""`ponder plan`: fit the `auto` planner's policy and the small-to-large cascade from benchmark
runs (`ponder bench run`), and explain a fitted one.

    ponder plan fit RUN [RUN ...] --out policy.json       # probe -> bins -> samples per bin
    ponder plan fit-cascade SMALL_RUN LARGE_RUN --out cascade.json
    ponder plan show [POLICY]                             # default: the shipped auto policy

The shipped policy is refitted with the command `ponder plan show` prints under "refit".
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import cast, get_args

import click
from rich.console import Console
from rich.table import Column, Table

from ponder.bench.report import DEFAULT_WINDOW, check_one_dataset
from ponder.bench.store import RunStore
from ponder.cli.common import fail_cleanly
from ponder.errors import InvalidRequestError
from ponder.planning.cascade import DEFAULT_TARGET, fit_cascade, reduce_to, shared_items
from ponder.planning.fit import fit_policy, require_probe
from ponder.planning.outcomes import DEFAULT_ORDERINGS
from ponder.planning.policy import (
    AutoPolicy,
    CascadePolicy,
    Feature,
    Objective,
    PlanSettings,
    Policy,
    Vote,
    default_actions,
    default_rereads,
    load_policy,
    save_policy,
)
from ponder.planning.pricing import load_prices
from ponder.planning.runs import load_run

FEATURES = ("confidence", "length", "none")


@click.group()
def plan() -> None:
    """The auto planner and the cascade: fit policies from benchmark runs, and explain them."""


def _sizes(text: str | None, option: str = "--actions") -> list[int] | None:
    if text is None:
        return None
    try:
        return sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError as error:
        raise InvalidRequestError(f"{option} takes sample counts such as 4,8,16: {error}") from None


def _rereads(text: str | None, probe: int, actions: list[int]) -> list[int]:
    """--rereads: the default's, none, or the counts given."""
    if text is None:
        return default_rereads(probe, actions)
    if text.strip().lower() == "none":
        return []
    return _sizes(text, "--rereads") or []


def _objective(
    match: float | None,
    budget_tokens: float | None,
    budget_share: float | None,
    budget_n: int | None,
) -> Objective:
    given = {
        "match": match,
        "tokens": budget_tokens,
        "tokens_of_best": budget_share,
        "tokens_of_n": budget_n,
    }
    chosen = {key: value for key, value in given.items() if value is not None}
    if len(chosen) > 1:
        raise InvalidRequestError(
            "give one of --match, --budget-tokens, --budget-share and --budget-n"
        )
    return Objective.model_validate(chosen or {"match": 1.0})


@plan.command("fit")
@click.argument(
    "runs", metavar="RUN [RUN ...]", nargs=-1, required=True, type=click.Path(path_type=Path)
)
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Policy file.")
@click.option("--probe", default=4, show_default=True, help="Samples drawn first, per question.")
@click.option(
    "--feature",
    type=click.Choice(FEATURES),
    default="confidence",
    show_default=True,
    help="Splits each vote level: DeepConf confidence, mean length, or none.",
)
@click.option("--splits", default=2, show_default=True, help="Bins per vote level.")
@click.option(
    "--vote",
    type=click.Choice(get_args(Vote)),
    default="majority",
    show_default=True,
    help="How the samples drawn answer: plain majority, or weighted by each sample's "
    "geometric-mean token probability (needs runs sampled with logprobs).",
)
@click.option(
    "--actions",
    default=None,
    help="Total samples a bin may draw, comma-separated (default: the probe, then 1.5x/2x "
    "steps up to the runs' samples).",
)
@click.option(
    "--rereads",
    default=None,
    help="Totals of samples at which a question is binned again by all it has drawn, "
    "comma-separated, or 'none' (default: the probe's doublings below the largest action, "
    "e.g. 8 for a probe of 4 and 16 samples).",
)
@click.option(
    "--match",
    type=float,
    default=None,
    help="Objective (the default, 1.0): the fewest tokens that reach this x the best "
    "self-consistency accuracy.",
)
@click.option("--budget-tokens", type=float, default=None, help="Objective: tokens per item.")
@click.option(
    "--budget-share",
    type=float,
    default=None,
    help="Objective: this x the tokens of self-consistency at its best N.",
)
@click.option(
    "--budget-n", type=int, default=None, help="Objective: the tokens of N samples' majority."
)
@click.option(
    "--orderings",
    default=DEFAULT_ORDERINGS,
    show_default=True,
    help="Random orderings of each item's samples.",
)
@click.option(
    "--window",
    default=DEFAULT_WINDOW,
    show_default=True,
    help="DeepConf group window, tokens.",
)
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the policy JSON.")
def fit(
    runs: tuple[Path, ...],
    out: Path,
    probe: int,
    feature: str,
    splits: int,
    vote: str,
    actions: str | None,
    rereads: str | None,
    match: float | None,
    budget_tokens: float | None,
    budget_share: float | None,
    budget_n: int | None,
    orderings: int,
    window: int,
    seed: int,
    as_json: bool,
) -> None:
    """Fit the auto planner's policy on the run file(s) RUN: which vote share (and confidence)
    of a probe of --probe samples gets how many samples in all, for the objective; at each
    reread, the same again on everything drawn so far."""
    with fail_cleanly():
        loaded = [load_run(path, window=window) for path in runs]
        require_probe(loaded, probe)
        samples = min(run.data.samples for run in loaded)
        steps = _sizes(actions) or default_actions(probe, samples)
        settings = PlanSettings(
            probe=probe,
            feature=None if feature == "none" else cast(Feature, feature),
            splits=splits,
            actions=steps,
            rereads=_rereads(rereads, probe, steps),
            vote=cast(Vote, vote),
            objective=_objective(match, budget_tokens, budget_share, budget_n),
            window=window,
        )
        parts = ["ponder", "plan", "fit", *map(str, runs), "--out", str(out)]
        parts += ["--probe", str(probe), "--feature", feature, "--splits", str(splits)]
        parts += ["--vote", vote]
        if actions is not None:
            parts += ["--actions", ",".join(map(str, settings.actions))]
        parts += ["--rereads", ",".join(map(str, settings.rereads)) or "none"]
        parts += _objective_flags(settings.objective)
        parts += ["--orderings", str(orderings), "--window", str(window), "--seed", str(seed)]
        policy = fit_policy(
            loaded, settings, orderings=orderings, seed=seed, command=shlex.join(parts)
        )
        save_policy(policy, out)
    if as_json:
        click.echo(policy.model_dump_json(indent=2))
        return
    click.echo(f"wrote {out}")
    explain(policy, Console(), str(out))


def _objective_flags(objective: Objective) -> list[str]:
    if objective.match is not None:
        return ["--match", f"{objective.match:g}"]
    if objective.tokens is not None:
        return ["--budget-tokens", f"{objective.tokens:g}"]
    if objective.tokens_of_n is not None:
        return ["--budget-n", str(objective.tokens_of_n)]
    return ["--budget-share", f"{objective.tokens_of_best:g}"]


@plan.command("fit-cascade")
@click.argument("small", type=click.Path(path_type=Path))
@click.argument("large", type=click.Path(path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Policy file.")
@click.option(
    "--target",
    default=DEFAULT_TARGET,
    show_default=True,
    help="Reach this x the large model's best self-consistency accuracy, at the least cost.",
)
@click.option(
    "--prices",
    type=click.Path(path_type=Path),
    default=None,
    help="Price file (as `ponder bench report`); default: local models by the hour, charged "
    "the machine time of the generated tokens.",
)
@click.option("--orderings", default=DEFAULT_ORDERINGS, show_default=True)
@click.option("--window", default=DEFAULT_WINDOW, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the policy JSON.")
def fit_cascade_command(
    small: Path,
    large: Path,
    out: Path,
    target: float,
    prices: Path | None,
    orderings: int,
    window: int,
    seed: int,
    as_json: bool,
) -> None:
    """Fit the cascade from the small model's run SMALL to the large model's run LARGE (the
    same dataset; their shared complete items are used): the probe size, the confidence
    feature and threshold, and the large model's samples, at the least cost that reaches
    --target of the large model's accuracy. Where the large model judged every sample of SMALL
    (`ponder bench judge SMALL --judge-model LARGE`), its judge score is a feature too, and
    the judging is paid for."""
    with fail_cleanly():
        table = None if prices is None else load_prices(prices)
        with RunStore.open_readonly(small) as one, RunStore.open_readonly(large) as other:
            check_one_dataset([small, large], [one.config, other.config])
        first = load_run(small, window=window, prices=table)
        second = load_run(large, window=window, prices=table)
        rows_small, rows_large = shared_items(first.source.items, second.source.items)
        parts = ["ponder", "plan", "fit-cascade", str(small), str(large), "--out", str(out)]
        parts += ["--target", f"{target:g}"]
        if prices is not None:
            parts += ["--prices", str(prices)]
        parts += ["--orderings", str(orderings), "--window", str(window), "--seed", str(seed)]
        policy = fit_cascade(
            reduce_to(first, rows_small),
            reduce_to(second, rows_large),
            target=target,
            orderings=orderings,
            seed=seed,
            window=window,
            command=shlex.join(parts),
        )
        save_policy(policy, out)
    if as_json:
        click.echo(policy.model_dump_json(indent=2))
        return
    click.echo(f"wrote {out}")
    explain(policy, Console(), str(out))


@plan.command("show")
@click.argument("policy", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the policy JSON.")
def show(policy: Path | None, as_json: bool) -> None:
    """Explain a policy file (default: the shipped auto policy): what it does, per bin, and
    what it was fitted on."""
    with fail_cleanly():
        loaded = load_policy(policy)
    if as_json:
        click.echo(loaded.model_dump_json(indent=2))
        return
    explain(loaded, Console(), str(policy) if policy else "the shipped default policy")


def explain(policy: Policy, console: Console, name: str) -> None:
    """A policy in words and a table."""
    if isinstance(policy, AutoPolicy):
        _explain_auto(policy, console, name)
    else:
        _explain_cascade(policy, console, name)


def _explain_auto(policy: AutoPolicy, console: Console, name: str) -> None:
    settings, expected = policy.settings, policy.expected
    feature = settings.feature
    split = f" and by their mean {feature}" if feature else ""
    how = (
        "majority vote"
        if settings.vote == "majority"
        else "a vote weighted by each sample's geometric-mean token probability"
    )
    console.print(f"[bold]auto policy[/bold] ({name}, format {policy.kind} v{policy.version})")
    again = (
        f" When that reaches {', '.join(map(str, settings.rereads))} samples, place it again by "
        "everything drawn, in that read's bins (samples '-> n' below)."
        if settings.rereads
        else ""
    )
    console.print(
        f"Draw {settings.probe} samples (the probe); place the question by how many of them the "
        f"leading answer holds{split}; draw that bin's samples in all.{again} Answer by {how}. "
        "A bin that stops is easy (already settled) or hopeless (more samples did not help on "
        "the fitting runs)."
    )
    console.print(f"Objective: {settings.objective.describe()}.")
    table = Table(
        Column("read", no_wrap=True),
        Column("votes", no_wrap=True),
        Column(feature or "-", no_wrap=True),
        Column("rows", justify="right", no_wrap=True),
        Column("samples", justify="right", no_wrap=True),
        Column("accuracy now -> bin", no_wrap=True),
        Column("tokens", justify="right", no_wrap=True),
        caption=f"read {settings.probe} is the probe; rows: share of the fitting rows that "
        "reach the bin; samples: in all, the probe's included; -> n: draw up to n, read again",
    )
    reads = settings.reads
    for k, (at, bins) in enumerate(zip(reads, policy.stages(), strict=True)):
        then = reads[k + 1] if k + 1 < len(reads) else None
        for b in bins:
            low = "-inf" if b.low is None else f"{b.low:.3g}"
            high = "inf" if b.high is None else f"{b.high:.3g}"
            step = "stop" if b.samples == at else str(b.samples)
            table.add_row(
                str(at),
                f"{b.votes}/{at}",
                f"[{low}, {high})" if feature else "any",
                f"{b.weight:.1%}",
                f"-> {step}" if b.samples == then else step,
                f"{b.accuracy_at_probe:.1%} -> {b.accuracy:.1%}",
                f"{b.tokens:,.0f}",
            )
    console.print(table)
    verdict = "reached" if expected.reached else "not reached"
    console.print(
        "On the fitting rows (in-sample; `ponder bench report` cross-fits): "
        f"{expected.accuracy:.1%} at {expected.tokens:,.0f} tokens and "
        f"{expected.samples:.1f} samples per item; "
        f"self-consistency at its best N={expected.best_n}: {expected.best_accuracy:.1%} at "
        f"{expected.best_tokens:,.0f} tokens (target {verdict})."
    )
    _provenance(policy, console)


def _explain_cascade(policy: CascadePolicy, console: Console, name: str) -> None:
    expected = policy.expected
    unit = "USD" if policy.cost_unit == "usd" else "tokens"
    console.print(f"[bold]cascade policy[/bold] ({name}, format {policy.kind} v{policy.version})")
    feature = {
        "share": "vote share",
        "confidence": "mean DeepConf confidence",
        "score": f"mean {policy.large_model} judge score (of the samples holding their answer)",
    }[policy.feature]
    vote = (
        "majority"
        if policy.vote == "majority"
        else "vote weighted by each sample's geometric-mean token probability"
    )
    console.print(
        f"Ask {policy.small_model} for {policy.probe} samples; if their {feature} is at least "
        f"{policy.threshold:.4g}, answer with their {vote}; else ask {policy.large_model} for "
        f"{policy.samples} samples and answer with theirs."
    )
    table = Table("", "accuracy", f"cost / item ({unit})", "tokens / item")
    table.add_row(
        f"cascade ({expected.escalated:.0%} escalated)",
        f"{expected.accuracy:.1%}",
        f"{expected.cost:.4g}",
        f"{expected.tokens:,.0f}",
    )
    table.add_row(
        f"{policy.large_model} majority N={expected.large_best_n}",
        f"{expected.large_best_accuracy:.1%}",
        f"{expected.large_best_cost:.4g}",
        "",
    )
    console.print(table)
    ratio = expected.cost / expected.large_best_cost if expected.large_best_cost else float("nan")
    console.print(
        f"Target: {policy.target:.0%} of the large model's best accuracy "
        f"({'reached' if expected.reached else 'not reached'} on the fitting rows, in-sample), "
        f"at {ratio:.0%} of its cost."
    )
    _provenance(policy, console)


def _provenance(policy: Policy, console: Console) -> None:
    console.print(
        f"Fitted on: {policy.fitted_on.describe()} (ponder {policy.fitted_on.ponder_version})"
    )
    if policy.fitted_on.command:
        console.print(f"Refit: {policy.fitted_on.command}")
