"""`auto`: the compute-optimal planner (after Snell et al. 2024, arXiv 2408.03314). A cheap probe
of a few samples says how hard the question is (how many agree, how confident they were); the
policy, fitted offline on benchmark runs (`ponder plan fit`), maps that to how many samples to
draw in all: an easy question stops at the probe, a medium one gets more, and one where more
samples did not help (hopeless for this model) stops too rather than burn the budget. A policy
with rereads looks again at everything drawn when it reaches one, and decides again. The answer
is the vote of everything drawn: a plain majority, or, where the policy was fitted so, each
answer collecting its samples' geometric-mean token probabilities (their mean-logprob scores).

The budget still rules: extra samples are capped by the samples left and by the tokens left at
the probe's mean length, and a limit reached mid-way answers from what was drawn.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ponder.budget import BudgetExhausted
from ponder.planning.policy import load_auto_policy
from ponder.strategies.primitives import Question, as_messages
from ponder.strategies.probe import ProbeReading, confidence_sampling, final_vote, read_probe
from ponder.strategies.registry import Strategy, StrategyParams
from ponder.strategies.result import Result
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
    fitted = sorted({run.model for run in policy.fitted_on.runs})
    if session.engine.model not in fitted:
        # Difficulty bins and confidences are the fitting model's: another model's may differ.
        session.warnings.append(
            f"the auto policy was fitted on {', '.join(map(repr, fitted))}'s runs; "
            f"{session.engine.model!r} answers here (fit one on its runs: ponder plan fit RUN...)"
        )
    messages = as_messages(question)
    feature, vote = policy.settings.feature, policy.settings.vote
    needs_logprobs = feature == "confidence" or vote == "mean-logprob"
    overrides = confidence_sampling(session, policy.top_logprobs, needs_logprobs)
    try:
        candidates = await session.sample(messages, policy.probe, step="probe", **overrides)
    except BudgetExhausted:
        candidates = []
    reads = policy.settings.reads
    for read in range(len(reads)):
        reading = read_probe(candidates, policy.settings.window)
        bin_index = int(policy.bin_of([reading.votes], [reading.feature(feature)], read=read)[0])
        wanted = policy.stages()[read][bin_index].samples
        extra = extra_samples(session, wanted - len(candidates), reading)
        session.record(
            "plan",
            **reading.describe(),
            read=len(candidates),
            bin=bin_index,
            samples=wanted,
            affordable=len(candidates) + extra,
        )
        if extra <= 0 or session.exhausted:
            break
        try:
            candidates += await session.sample(messages, extra, step="more", **overrides)
        except BudgetExhausted:
            break
        if len(candidates) != wanted or wanted not in reads:
            break  # the bin's last step, or the budget cut it short: no reread
    answer, votes = final_vote(candidates, vote)
    session.record("vote", kind=vote, votes=votes)
    # The leader's share of every sample drawn (answered or not), or of all the weight cast.
    total = len(candidates) if vote == "majority" else sum(votes.values())
    share = votes.get(answer, 0.0) / total if answer is not None and total > 0 else 0.0
    return session.result(answer, candidates, votes, share=share)


AUTO = Strategy(
    name="auto",
    summary="Probe a few samples, judge the question's difficulty from their agreement and "
    "confidence, and spend what a fitted policy says pays off (Snell et al. 2024).",
    params=AutoParams,
    run=auto,
)
