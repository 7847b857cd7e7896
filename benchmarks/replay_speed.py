"""How long offline replay takes on a run of the issue's size: 1000 items x 64 samples, every
offline strategy, N = 1, 2, 4, ... 64 (7 values), 200 orderings. The target is under 10 seconds.

The run is synthetic but shaped like a real one: a few answer groups per item, the right one
(when the item has one) drawn with an item-specific probability, some samples without an answer,
200-400 tokens per trace with a sliding-window group-confidence trace that sags lower on wrong
traces, trace confidence = the trace's lowest group confidence, a self-certainty score derived
from it, and latencies proportional to tokens. Only `replay` is timed (best of --repeat runs).

    python benchmarks/replay_speed.py [--items 1000] [--samples 64] [--orderings 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from ponder.bench.replay import ReplayData, available_strategies, replay


def synthetic_run(items: int, samples: int, seed: int = 0) -> ReplayData:
    rng = np.random.default_rng(seed)
    shape = (items, samples)
    max_groups = 6
    wrong_groups = rng.integers(1, max_groups, size=items)  # 1..5 wrong answers per item
    solvable = rng.random(items) < 0.85  # otherwise no group is right
    p_right = rng.beta(2.0, 1.5, size=items)
    right = rng.random(shape) < p_right[:, None]
    # Wrong answers favour the first wrong group (a common mistake), then spread out.
    wrong = 1 + np.minimum(rng.geometric(0.5, size=shape) - 1, wrong_groups[:, None] - 1)
    groups = np.where(right, 0, wrong).astype(np.int32)
    groups[rng.random(shape) < 0.05] = -1  # no final answer
    group_correct = np.zeros((items, max_groups), dtype=bool)
    group_correct[:, 0] = solvable
    correct = (groups >= 0) & group_correct[np.arange(items)[:, None], np.maximum(groups, 0)]

    tokens = rng.integers(200, 401, size=shape).astype(np.int32)
    latency = (tokens / 40.0 * rng.uniform(0.9, 1.3, size=shape)).astype(np.float32)

    # Group-confidence traces: a per-trace level (higher when right) plus a smooth wobble and
    # noise; confidence = the trace's minimum (DeepConf's lowest group confidence).
    level = np.where(correct, 12.0, 10.5) + rng.normal(0.0, 1.0, size=shape)
    lengths = tokens.ravel()
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    position = np.arange(lengths.sum()) - np.repeat(starts, lengths)
    phase = np.repeat(rng.uniform(0, 2 * np.pi, size=lengths.size), lengths)
    flat = (
        np.repeat(level.ravel(), lengths)
        + 0.8 * np.sin(position / 40.0 + phase)
        + rng.normal(0.0, 0.3, size=position.size)
    ).astype(np.float32)
    confidence = np.minimum.reduceat(flat, starts).reshape(shape).astype(np.float32)
    pieces = np.split(flat, starts[1:])
    traces = [pieces[i * samples : (i + 1) * samples] for i in range(items)]
    certainty = 1.0 / (1.0 + np.exp(-(confidence - 10.0)))
    return ReplayData(
        groups=groups,
        correct=correct,
        tokens=tokens,
        latency=latency,
        confidence=confidence,
        group_confidence=traces,
        scores={"self-certainty": certainty.astype(np.float32)},
        group_correct=group_correct,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--orderings", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=1, help="time the best of this many runs")
    parser.add_argument("--json", action="store_true", help="one JSON line instead of a table")
    args = parser.parse_args()

    data = synthetic_run(args.items, args.samples)
    strategies = available_strategies(data)
    best = float("inf")
    rows = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        rows = replay(data, orderings=args.orderings, strategies=strategies)
        best = min(best, time.perf_counter() - start)
    ns = sorted({row.n for row in rows})
    if args.json:
        print(
            json.dumps(
                {
                    "seconds": round(best, 3),
                    "items": args.items,
                    "samples": args.samples,
                    "orderings": args.orderings,
                    "strategies": strategies,
                    "ns": ns,
                }
            )
        )
        return
    print(
        f"{'strategy':<28}{'N':>4}{'acc':>8}{'95% CI':>16}{'tokens':>10}{'latency':>9}{'used':>7}"
    )
    for row in rows:
        ci = f"{row.ci_low:.3f}-{row.ci_high:.3f}"
        print(
            f"{row.strategy:<28}{row.n:>4}{row.accuracy:>8.3f}{ci:>16}{row.tokens:>10.0f}"
            f"{row.latency_s:>8.2f}s{row.samples:>7.2f}"
        )
    print(
        f"\nreplay of {args.items} items x {args.samples} samples, {len(strategies)} strategies "
        f"x {len(ns)} values of N, {args.orderings} orderings: {best:.2f} s"
    )


if __name__ == "__main__":
    main()
