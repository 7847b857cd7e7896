"""`auto`: the compute-optimal planner (after Snell et al. 2024, arXiv 2408.03314). A cheap probe
of a few samples says how hard the question is (how many agree, how confident they were); the
policy, fitted offline on benchmark runs (`ponder plan fit`), maps that to how many samples to
draw in all: an easy question stops at the probe, a medium one gets more, and one where more
samples did not help (hopeless for this model) stops too rather than burn the budget. The answer
is the majority vote of everything drawn.

The budget still rules: extra samples are capped by the samples left and by the tokens left at
the probe's mean length, and a limit reached mid-way answers from what was drawn.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ponder.budget import BudgetExhausted
from ponder.planning.policy import load_auto_policy
from ponder.strategies.primitives import Question, as_messages, group_answers, weighted_vote
from ponder.strategies.probe import ProbeReading, confidence_sampling, read_probe
from ponder.strategies.registry import Strategy, StrategyParams
from ponder.strategies.result import Candidate, Result
from ponder.strategies.session import Session


class AutoParams(StrategyParams):
    policy: str | None = Field(
        default=None,
        description="an auto policy file from `ponder plan fit` (default: the shipped one, "
        "fitted on GSM8K with qwen2.5-coder-0.5b)",
    )


def extra_samples(session: Session, wanted: int, probe: ProbeReading) -> int:
    """How many of `wanted` further samples the budget affords: the tokens left buy that many
    samples of the probe's mean length (the samples cap the session applies itself)."""
    tokens_left = session.tokens_left
    if wanted <= 0 or tokens_left is None or probe.length <= 0:
        return max(wanted, 0)
    return min(wanted, int(tokens_left // probe.length))


async def auto(session: Session, question: Question, p: AutoParams) -> Result:
    policy = load_auto_policy(None if p.policy is None else Path(p.policy))
    messages = as_messages(question)
    feature = policy.settings.feature
    overrides = confidence_sampling(session, policy.top_logprobs, feature == "confidence")
    try:
        probe = await session.sample(messages, policy.probe, step="probe", **overrides)
    except BudgetExhausted:
        probe = []
    reading = read_probe(probe, policy.settings.window)
    bin_index = int(policy.bin_of([reading.votes], [reading.feature(feature)])[0])
    wanted = policy.bins[bin_index].samples
    extra = extra_samples(session, wanted - len(probe), reading)
    session.record(
        "plan", **reading.describe(), bin=bin_index, samples=wanted, affordable=len(probe) + extra
    )
    more: list[Candidate] = []
    if extra > 0 and not session.exhausted:
        try:
            more = await session.sample(messages, extra, step="more", **overrides)
        except BudgetExhausted:
            more = []
    candidates = probe + more
    answer, votes = weighted_vote(group_answers([c.answer for c in candidates]))
    session.record("vote", votes=votes)
    share = votes.get(answer, 0.0) / len(candidates) if answer is not None else 0.0
    return session.result(answer, candidates, votes, share=share)


AUTO = Strategy(
    name="auto",
    summary="Probe a few samples, judge the question's difficulty from their agreement and "
    "confidence, and spend what a fitted policy says pays off (Snell et al. 2024).",
    params=AutoParams,
    run=auto,
)
