"""DeepConf (Fu et al. 2025, "Deep Think with Confidence", arXiv 2508.15260): trust each
reasoning trace as much as the model was confident while writing it, drop the least confident,
and, online, stop a trace *while it is being generated* once its confidence sags.

Token confidence C_i = -mean of the top-k logprobs at token i (a peaked distribution is
confident); group confidence = the mean of C over a sliding window of tokens; a trace's score is
its lowest group confidence ("lowest-group") or the mean over its last tokens ("tail").

Offline: sample n; keep the top eta% of answered traces by score; confidence-weighted vote.
Online:  warm up with `warmup` traces; threshold s = the (100 - eta)th percentile of their
         lowest-group confidences; draw the rest in rounds, cancelling a trace as soon as a full
         window's confidence falls below s, and stop once the top answer holds >= tau of the
         weight (of two voters at least). Warm-up traces below s and stopped traces do not vote
         (as in the authors' code).

The early stop compares running group confidence with s, so the threshold is always taken from
lowest-group scores; `score` chooses the voting weight.

Default eta = 90 ("DeepConf-high", the paper's conservative setting): eta = 10 shows the larger
gains there, but with hundreds of long traces per question. With the few short traces a request
here affords, keeping 10% leaves one or two voters, so a single confidently wrong trace decides;
keeping 90% drops only the clear outliers and stays close to the plain vote when confidence is
uninformative.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field

from ponder.answers import extract_answer
from ponder.budget import BudgetExhausted
from ponder.engines.types import Completion, FinishReason, SampleDelta, TokenLogprob
from ponder.strategies.primitives import Question, as_messages, group_answers, weighted_vote
from ponder.strategies.registry import Strategy, StrategyParams
from ponder.strategies.result import Candidate, Result
from ponder.strategies.session import Session
from ponder.verifiers.confidence import (
    group_confidences,
    lowest_group_confidence,
    tail_confidence,
    token_confidences,
)


class DeepConfParams(StrategyParams):
    mode: Literal["offline", "online"] = Field(
        default="online",
        description="offline: sample all, filter, vote; online: warm up, then stop weak traces "
        "early and stop sampling at consensus",
    )
    n: int = Field(default=16, ge=1, le=256, description="traces in all, warm-up included")
    keep_percent: float = Field(
        default=90.0,
        gt=0.0,
        le=100.0,
        description="eta: percent of traces kept by confidence (paper: 10 or 90)",
    )
    score: Literal["lowest-group", "tail"] = Field(
        default="lowest-group", description="trace score used as the voting weight"
    )
    window: int = Field(
        default=16, ge=1, le=8192, description="tokens per group-confidence window (paper: 2048)"
    )
    tail_window: int = Field(
        default=16, ge=1, le=8192, description="tokens the tail score averages (paper: 2048)"
    )
    top_logprobs: int = Field(
        default=20, ge=1, le=20, description="k: top logprobs averaged into a token's confidence"
    )
    warmup: int = Field(
        default=4, ge=1, le=256, description="online: warm-up traces that set the threshold"
    )
    batch: int = Field(
        default=4, ge=1, le=256, description="online: traces generated concurrently per round"
    )
    consensus: float = Field(
        default=0.95,
        gt=0.0,
        le=1.0,
        description="online: tau, stop once the top answer holds this share of the weight",
    )


def _lowest(logprobs: Sequence[TokenLogprob] | None, p: DeepConfParams) -> float:
    """The trace's lowest group confidence; NaN (never votes) without logprobs."""
    if not logprobs:
        return math.nan
    return lowest_group_confidence(token_confidences(logprobs, p.top_logprobs), p.window)


def _weight(logprobs: Sequence[TokenLogprob] | None, p: DeepConfParams) -> float:
    """The trace's score as chosen by `score`: its voting weight."""
    if not logprobs or p.score == "lowest-group":
        return _lowest(logprobs, p)
    return tail_confidence(token_confidences(logprobs, p.top_logprobs), p.tail_window)


@dataclass
class _Ballot:
    """Who votes, for what, with which weight."""

    answers: list[str | None] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    who: list[int] = field(default_factory=list)

    def add(self, answer: str | None, weight: float, index: int = -1) -> None:
        if answer is not None and not math.isnan(weight):
            self.answers.append(answer)
            self.weights.append(weight)
            self.who.append(index)

    def count(self) -> tuple[str | None, dict[str, float], float]:
        """The winner, the weight table and the winner's share of the weight."""
        answer, votes = weighted_vote(group_answers(self.answers), self.weights)
        total = sum(votes.values())
        return answer, votes, (votes[answer] / total if answer is not None and total > 0 else 0.0)

    def decisive(self, consensus: float) -> bool:
        """The top answer holds `consensus` of the weight. One voter is no consensus: with few,
        short warm-up traces a single answered one would otherwise end the run."""
        return len(self.answers) >= 2 and self.count()[2] >= consensus


def _percentile(scores: Sequence[float], q: float) -> float:
    valid = [s for s in scores if not math.isnan(s)]
    return float(np.percentile(valid, q)) if valid else -math.inf


async def _offline(session: Session, question: Question, p: DeepConfParams) -> Result:
    try:
        traces = await session.sample(
            as_messages(question), p.n, logprobs=True, top_logprobs=p.top_logprobs
        )
    except BudgetExhausted:
        traces = []
    plain = _plain_vote_fallback(session, traces)
    weights = [1.0 if plain else _weight(c.logprobs, p) for c in traces]
    # Like the authors' code, the percentile is over answered traces: the rest cannot vote anyway.
    threshold = _percentile(
        [w for c, w in zip(traces, weights, strict=True) if c.answer is not None],
        100.0 - p.keep_percent,
    )
    ballot = _Ballot()
    for c, w in zip(traces, weights, strict=True):
        if w >= threshold:
            ballot.add(c.answer, w, c.index)
    session.record(
        "filter",
        threshold=threshold,
        scores={c.index: w for c, w in zip(traces, weights, strict=True)},
        kept=ballot.who,
    )
    return _finish(session, traces, ballot)


async def _online(session: Session, question: Question, p: DeepConfParams) -> Result:
    messages = as_messages(question)
    options: dict[str, Any] = {"logprobs": True, "top_logprobs": p.top_logprobs}
    try:
        traces = await session.sample(messages, min(p.warmup, p.n), step="warmup", **options)
    except BudgetExhausted:
        return _finish(session, [], _Ballot())
    plain = _plain_vote_fallback(session, traces)
    lowest = [_lowest(c.logprobs, p) for c in traces]
    threshold = -math.inf if plain else _percentile(lowest, 100.0 - p.keep_percent)
    ballot = _Ballot()
    for c, low in zip(traces, lowest, strict=True):
        if plain or low >= threshold:
            ballot.add(c.answer, 1.0 if plain else _weight(c.logprobs, p), c.index)
    session.record(
        "threshold",
        threshold=threshold,
        lowest_group={c.index: low for c, low in zip(traces, lowest, strict=True)},
        voters=list(ballot.who),
    )

    while len(traces) < p.n and not ballot.decisive(p.consensus) and not session.exhausted:
        round_ = _Round(p, plain, ballot, ConfidenceGuard(p.window, threshold, p.top_logprobs))
        k = min(p.batch, p.n - len(traces))
        try:
            drawn = await session.sample(
                messages, k, watch=round_.guard, enough=round_.enough, **options
            )
        except BudgetExhausted:
            break
        traces += drawn
        for i, c in enumerate(drawn):
            if not round_.dropped(i, c.finish_reason):
                ballot.add(c.answer, round_.weight(i, c.logprobs), c.index)
        session.record(
            "round",
            stopped_low_confidence={drawn[i].index: at for i, at in round_.guard.stopped.items()},
            consensus=ballot.count()[2],
            decisive=ballot.decisive(p.consensus),
        )
    return _finish(session, traces, ballot)


@dataclass
class _Round:
    """One online round's callbacks: the confidence guard (`watch`) and the consensus check
    (`enough`) against the votes from before the round."""

    p: DeepConfParams
    plain: bool
    before: _Ballot
    guard: ConfidenceGuard
    reached: bool = False
    weights: dict[int, float] = field(default_factory=dict)

    def weight(self, index: int, logprobs: Sequence[TokenLogprob] | None) -> float:
        """A trace's voting weight, computed once (`enough` sees the same traces again)."""
        if index not in self.weights:
            self.weights[index] = 1.0 if self.plain else _weight(logprobs, self.p)
        return self.weights[index]

    def enough(self, finished: list[Completion]) -> bool:
        trial = _Ballot(list(self.before.answers), list(self.before.weights))
        for c in finished:
            if c.finish_reason != "cancelled":  # while we run, only the guard cancels
                trial.add(extract_answer(c.text), self.weight(c.index, c.logprobs))
        self.reached = trial.decisive(self.p.consensus)
        return self.reached

    def dropped(self, index: int, finish: FinishReason) -> bool:
        """Cancelled by us (low confidence, or consensus reached), not cut short by the budget:
        such a trace does not vote."""
        return finish == "cancelled" and (index in self.guard.stopped or self.reached)


@dataclass
class ConfidenceGuard:
    """The online `watch`: keeps each running trace's last `window` token confidences and cancels
    the trace once the mean of a full window falls below the threshold."""

    window: int
    threshold: float
    k: int
    recent: dict[int, deque[float]] = field(default_factory=dict)
    tokens: dict[int, int] = field(default_factory=dict)
    stopped: dict[int, dict[str, float]] = field(default_factory=dict)

    def __call__(self, index: int, delta: SampleDelta) -> bool:
        if index in self.stopped or not delta.logprobs:
            return False
        new = token_confidences(delta.logprobs, self.k)
        recent = self.recent.setdefault(index, deque(maxlen=self.window))
        seen = np.concatenate((np.fromiter(recent, dtype=np.float64, count=len(recent)), new))
        recent.extend(new.tolist())
        self.tokens[index] = self.tokens.get(index, 0) + new.size
        if seen.size < self.window:  # no full window yet: nothing to judge
            return False
        # The windows that end at the new tokens (all of `seen`'s windows but the first, if old).
        current = float(group_confidences(seen, self.window)[-new.size :].min())
        if current < self.threshold:
            self.stopped[index] = {"tokens": self.tokens[index], "confidence": current}
            return True
        return False


def _plain_vote_fallback(session: Session, traces: Sequence[Candidate]) -> bool:
    """True (with a warning) when the engine returned no logprobs at all: a plain majority vote."""
    if not traces or any(c.logprobs for c in traces):
        return False
    session.warnings.append("the engine returned no logprobs; deepconf fell back to majority vote")
    return True


def _finish(session: Session, traces: list[Candidate], ballot: _Ballot) -> Result:
    answer, votes, share = ballot.count()
    session.record("vote", votes=votes, voters=ballot.who)
    return session.result(answer, traces, votes, share=share)


async def deepconf(session: Session, question: Question, p: DeepConfParams) -> Result:
    if p.mode == "offline":
        return await _offline(session, question, p)
    return await _online(session, question, p)


DEEPCONF = Strategy(
    name="deepconf",
    summary="Confidence-filtered, confidence-weighted voting; online, low-confidence traces are "
    "stopped mid-generation (Fu et al. 2025).",
    params=DeepConfParams,
    run=deepconf,
)
