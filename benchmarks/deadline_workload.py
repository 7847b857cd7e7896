"""Do requests under a deadline answer within it? A workload of benchmark questions, each run by a
strategy with `Budget(max_seconds=DEADLINE)` on the embedded engine, a few at a time.

Each request's latency is measured by this script, from the moment it is issued (it holds one of
`--concurrency` slots) until its `Result` is back; it counts as answered within the deadline when
that latency is at most the deadline. Reported: that fraction (the target is at least 95 %), the
p50 / p95 / max latency, which budget limit stopped how many requests (``none``: the strategy
finished on its own), how many have an answer and how many are correct, and the ledger's cost
per 1000 questions at this policy. One warm-up request (not counted) loads what a first request
would otherwise pay for (math-verify, the model's first decode).

    python benchmarks/deadline_workload.py [--model qwen2.5-coder-0.5b] [--dataset gsm8k]
        [--items 20] [--n 8] [--deadline 6] [--concurrency 4] [--max-tokens 384] [--json]

Exits 1 when fewer than `--target` of the requests answered within the deadline (the numbers are
still printed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ponder.bench.datasets import Dataset, load_dataset, parse_dataset
from ponder.bench.items import Item
from ponder.budget import Budget
from ponder.engines.base import Engine
from ponder.engines.factory import open_engine
from ponder.engines.types import SamplingParams
from ponder.planning.ledger import Ledger
from ponder.strategies.registry import run_strategy
from ponder.strategies.result import Result

TARGET = 0.95


@dataclass(frozen=True)
class Request:
    """One question's outcome, as the client saw it."""

    item: str
    latency_s: float
    within: bool
    stopped_by: str
    answer: str | None
    correct: bool
    samples: int
    completion_tokens: int
    cancelled_samples: int


@dataclass(frozen=True)
class Policy:
    """How every question is answered."""

    strategy: str
    n: int
    budget: Budget
    sampling: SamplingParams


async def ask(
    engine: Engine, item: Item, policy: Policy, slots: asyncio.Semaphore
) -> tuple[Result, float]:
    """Run one question in a slot; its latency starts when it is issued."""
    async with slots:
        started = time.perf_counter()
        result = await run_strategy(
            policy.strategy,
            engine,
            list(item.prompt),
            {"n": policy.n},
            budget=policy.budget,
            sampling=policy.sampling,
        )
        return result, time.perf_counter() - started


async def run(args: argparse.Namespace, dataset: Dataset) -> tuple[list[Request], Ledger]:
    sampling = SamplingParams(
        max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed
    )
    policy = Policy(args.strategy, args.n, Budget(max_seconds=args.deadline), sampling)
    warm_up = Policy(args.strategy, 2, Budget(max_seconds=args.deadline), sampling)
    engine = open_engine("local", args.model, n_threads=args.threads)
    async with engine:
        await ask(engine, dataset.items[0], warm_up, asyncio.Semaphore(1))
        slots = asyncio.Semaphore(args.concurrency)
        outcomes = await asyncio.gather(
            *(ask(engine, item, policy, slots) for item in dataset.items)
        )
    ledger = Ledger()
    requests = []
    for item, (result, latency) in zip(dataset.items, outcomes, strict=True):
        ledger.record(result)
        correct = False
        if result.answer is not None:
            correct = (await dataset.checker.grade(f"\\boxed{{{result.answer}}}", item)).correct
        requests.append(
            Request(
                item=item.id,
                latency_s=latency,
                within=latency <= args.deadline,
                stopped_by=result.stopped_by or "none",
                answer=result.answer,
                correct=correct,
                samples=result.samples,
                completion_tokens=result.usage.completion_tokens,
                cancelled_samples=sum(c.finish_reason == "cancelled" for c in result.candidates),
            )
        )
    return requests, ledger


def summary(args: argparse.Namespace, requests: list[Request], ledger: Ledger) -> dict[str, Any]:
    latencies = np.array([r.latency_s for r in requests])
    within = sum(r.within for r in requests) / len(requests)
    per_1000 = ledger.per(1000)
    return {
        "model": args.model,
        "dataset": args.dataset,
        "strategy": args.strategy,
        "n": args.n,
        "deadline_s": args.deadline,
        "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
        "requests": len(requests),
        "within_deadline": within,
        "target": args.target,
        "met": within >= args.target,
        "latency_p50_s": float(np.percentile(latencies, 50)),
        "latency_p95_s": float(np.percentile(latencies, 95)),
        "latency_max_s": float(latencies.max()),
        "stopped_by": dict(Counter(r.stopped_by for r in requests)),
        "answered": sum(r.answer is not None for r in requests) / len(requests),
        "accuracy": sum(r.correct for r in requests) / len(requests),
        "per_1000_questions": per_1000.model_dump(),
        "per_request": [asdict(r) for r in requests],
    }


def report(found: dict[str, Any]) -> str:
    per_1000 = found["per_1000_questions"]
    usd = "unpriced" if per_1000["usd"] is None else f"${per_1000['usd']:.4f}"
    stopped = ", ".join(f"{k}: {v}" for k, v in sorted(found["stopped_by"].items()))
    return "\n".join(
        [
            f"{found['strategy']} n={found['n']} on {found['model']}, {found['requests']} "
            f"{found['dataset']} questions, deadline {found['deadline_s']:g} s, "
            f"{found['concurrency']} at a time, max_tokens {found['max_tokens']}",
            f"answered within the deadline: {found['within_deadline']:.0%} "
            f"(target {found['target']:.0%}: {'met' if found['met'] else 'NOT met'})",
            f"latency p50 {found['latency_p50_s']:.2f} s, p95 {found['latency_p95_s']:.2f} s, "
            f"max {found['latency_max_s']:.2f} s",
            f"stopped by: {stopped}",
            f"with an answer: {found['answered']:.0%}; correct: {found['accuracy']:.0%}",
            f"per 1000 questions: {per_1000['samples']:.0f} samples, "
            f"{per_1000['completion_tokens']:.0f} completion tokens, "
            f"{per_1000['seconds']:.0f} s, {usd}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--dataset", default="gsm8k")
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--strategy", default="self-consistency")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--deadline", type=float, default=6.0, help="seconds per request")
    parser.add_argument("--concurrency", type=int, default=4, help="requests at a time")
    parser.add_argument("--max-tokens", type=int, default=384)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads")
    parser.add_argument("--target", type=float, default=TARGET)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    dataset = load_dataset(parse_dataset(args.dataset), limit=args.items)
    requests, ledger = asyncio.run(run(args, dataset))
    found = summary(args, requests, ledger)
    print(json.dumps(found) if args.json else report(found))
    return 0 if found["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
