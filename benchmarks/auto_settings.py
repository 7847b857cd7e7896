"""Which settings to fit `auto` with, chosen without a test set: every candidate setting is
cross-fitted (5 folds over items, each fold played by a policy fitted on the other four) on the
pooled runs, for several fold seeds, and printed beside self-consistency at its best N on the
same items: the accuracy difference and the share of its tokens.

The pick is the most accurate candidate whose cross-fitted tokens are at most `--token-share` of
self-consistency's (ties: fewer tokens). This is how the policy in
`docs/results/gsm8k-qwen1.5b-s16-test2/auto-policy.json` was chosen, on GSM8K items 1 to 100,
before the test items 101 to 150 were sampled:

    python benchmarks/auto_settings.py benchmarks/runs/gsm8k-qwen1.5b-s16.sqlite \\
        benchmarks/runs/gsm8k-qwen1.5b-s16-heldout.sqlite [--seeds 4] [--orderings 100] [--json]

`--only TEXT` keeps the candidates whose name contains TEXT (e.g. the pick, cross-fitted again
on more items).

Every candidate answers by the mean-log-probability vote. A candidate's probe, rereads (the
defaults of `ponder plan fit --probe K`), splitting feature and objective are in its name.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ponder.errors import InvalidRequestError
from ponder.planning.fit import cross_fit, probe_runs
from ponder.planning.outcomes import Probed
from ponder.planning.policy import (
    Feature,
    Objective,
    PlanSettings,
    default_actions,
    default_rereads,
)
from ponder.planning.runs import load_run

SAMPLES = 16
"""Samples per item the candidates' actions reach (the runs must have at least this many)."""


@dataclass(frozen=True)
class Candidate:
    probe: int
    rereads: tuple[int, ...] | None  # None: the defaults for the probe
    feature: Feature | None
    splits: int
    objective: Objective

    def settings(self) -> PlanSettings:
        actions = default_actions(self.probe, SAMPLES)
        rereads = default_rereads(self.probe, actions) if self.rereads is None else self.rereads
        return PlanSettings(
            probe=self.probe,
            feature=self.feature,
            splits=self.splits,
            actions=actions,
            vote="mean-logprob",
            rereads=list(rereads),
            objective=self.objective,
        )

    @property
    def name(self) -> str:
        settings = self.settings()
        rereads = ",".join(map(str, settings.rereads)) or "none"
        split = f"{self.feature} x{self.splits}" if self.feature else "votes only"
        if self.objective.match is not None:
            goal = f"match {self.objective.match:g}"
        else:
            goal = f"budget-share {self.objective.tokens_of_best:g}"
        return f"probe {self.probe}, rereads {rereads}, {split}, {goal}"


MATCH = Objective(match=1.0)
HALF = Objective(tokens_of_best=0.5)
SHAPES: list[tuple[int, tuple[int, ...] | None, Feature | None, int]] = [
    (4, None, "confidence", 2),
    (4, (), "confidence", 2),
    (2, None, "confidence", 2),
    (2, (8,), "confidence", 2),
    (3, None, "confidence", 2),
    (3, None, "confidence", 3),
    (3, None, None, 1),
]
"""(probe, rereads, feature, splits): the shapes tried, each with both objectives."""
CANDIDATES = [Candidate(*shape, objective) for shape in SHAPES for objective in (MATCH, HALF)]


@dataclass(frozen=True)
class Measured:
    name: str
    accuracy: float
    reference: float
    token_share: float
    per_seed: list[tuple[float, float]]


def measure(candidate: Candidate, table: Probed, seeds: int) -> Measured:
    rows = np.ones(table.rows, dtype=bool)
    _, reference, reference_tokens = table.best_reference(rows)
    scores = [cross_fit(table, candidate.settings(), seed=seed).score() for seed in range(seeds)]
    per_seed = [(s.accuracy, s.tokens / reference_tokens) for s in scores]
    return Measured(
        name=candidate.name,
        accuracy=float(np.mean([a for a, _ in per_seed])),
        reference=reference,
        token_share=float(np.mean([t for _, t in per_seed])),
        per_seed=per_seed,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run stores of one model, pooled")
    parser.add_argument("--seeds", type=int, default=4, help="fold seeds per candidate")
    parser.add_argument("--orderings", type=int, default=100)
    parser.add_argument("--token-share", type=float, default=0.5)
    parser.add_argument(
        "--only", default="", help="only the candidates whose name contains this text"
    )
    parser.add_argument("--json", action="store_true", help="one JSON line instead of a table")
    args = parser.parse_args()

    candidates = [c for c in CANDIDATES if args.only in c.name]
    if not candidates:
        parser.error(f"no candidate's name contains {args.only!r}")
    try:  # a missing run, or one with fewer than SAMPLES samples per item: one clear line
        runs = [load_run(path) for path in args.runs]
        tables: dict[tuple[int, tuple[int, ...]], Probed] = {}
        for candidate in candidates:
            settings = candidate.settings()
            key = (settings.probe, tuple(settings.rereads))
            if key not in tables:
                tables[key] = probe_runs(runs, settings, orderings=args.orderings, seed=0)
    except InvalidRequestError as error:
        parser.error(str(error))
    results = []
    for candidate in candidates:
        settings = candidate.settings()
        table = tables[settings.probe, tuple(settings.rereads)]
        results.append(measure(candidate, table, args.seeds))
        if not args.json:
            m = results[-1]
            print(
                f"{m.name:<58} {m.accuracy:7.2%} vs {m.reference:7.2%} "
                f"({100 * (m.accuracy - m.reference):+5.2f} points) at {m.token_share:6.1%} "
                f"of the tokens",
                flush=True,
            )
    within = [m for m in results if m.token_share <= args.token_share]
    pick = max(within, key=lambda m: (m.accuracy, -m.token_share)) if within else None
    if args.json:
        print(json.dumps({"results": [asdict(m) for m in results], "pick": pick and pick.name}))
        return
    print(f"\npick (the most accurate at <= {args.token_share:.0%} of the tokens): ", end="")
    print(pick.name if pick else "none")


if __name__ == "__main__":
    main()
