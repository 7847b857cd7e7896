"""`cascade`: try the small model first and escalate to a larger one (embedded or remote) only
when the small model is not sure (FrugalGPT, Chen et al. 2023; RouteLLM, Ong et al. 2024). The
small model (the session's engine) draws a probe of k samples; when their vote share, their mean
DeepConf confidence, or a verifier's mean score of the samples holding their answer (e.g. the
larger model as `llm-judge`) reaches the threshold, their vote answers; otherwise the large model
(`engines={"large": ...}`) draws m samples and their vote answers: a plain majority, or each
answer collecting its samples' geometric-mean token probabilities. Thresholds, k, m and the vote
come from `ponder plan fit-cascade` (a policy file) or are given directly; a verifier's threshold
is fitted like the others where the large model judged the small run's samples (`ponder bench
judge`); a policy fitted so expects that judge (`--judge-model`, as `llm-judge`'s engine).

Both models' samples go through the session, so usage and the budget count them all once.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, Self

import numpy as np
from pydantic import Field, model_validator

from ponder.budget import BudgetExhausted
from ponder.planning.policy import CascadePolicy, Vote, load_cascade_policy
from ponder.strategies.primitives import Question, as_messages, group_answers, question_text
from ponder.strategies.probe import confidence_sampling, final_vote, read_probe
from ponder.strategies.registry import Strategy, StrategyParams
from ponder.strategies.result import Candidate, Result
from ponder.strategies.session import Session
from ponder.verifiers.base import Verifier

LARGE = "large"
"""The role name of the escalation engine in `Session.engines`."""
RULE_FIELDS = ("probe", "feature", "threshold", "samples", "vote", "verifier")


class CascadeParams(StrategyParams):
    policy: str | None = Field(
        default=None,
        description="a cascade policy file from `ponder plan fit-cascade` (sets probe, feature, "
        "threshold and samples)",
    )
    probe: int = Field(default=4, ge=1, le=256, description="samples from the small model first")
    feature: Literal["share", "confidence", "score"] = Field(
        default="share",
        description="what must reach the threshold: the probe's vote share, its mean DeepConf "
        "lowest-group confidence, or the verifier's mean score of the samples holding its answer",
    )
    verifier: str = Field(
        default="llm-judge",
        min_length=1,
        description="the verifier whose score is the feature 'score' (llm-judge judges with "
        "--judge-model, e.g. the larger model)",
    )
    threshold: float = Field(
        default=0.75,
        ge=0.0,
        allow_inf_nan=False,
        description="answer from the probe when the feature is at least this, else escalate",
    )
    samples: int = Field(
        default=8, ge=1, le=256, description="samples from the large model when escalating"
    )
    vote: Vote = Field(
        default="majority",
        description="how the answering model's samples choose: plain majority, or weighted by "
        "each sample's geometric-mean token probability (mean-logprob)",
    )
    window: int = Field(default=16, ge=1, le=8192, description="DeepConf group window, tokens")
    top_logprobs: int = Field(
        default=20, ge=1, le=20, description="alternatives per token for the confidence"
    )

    @model_validator(mode="after")
    def _policy_or_rule(self) -> Self:
        given = sorted(self.model_fields_set & set(RULE_FIELDS))
        if self.policy is not None and given:
            raise ValueError(f"give a policy file or {', '.join(given)}, not both")
        return self


def _rule(session: Session, p: CascadeParams, large_model: str) -> CascadeParams:
    """The parameters to follow: a policy file's (warning when it was fitted on other models)
    or the ones given."""
    if p.policy is None:
        return p
    policy: CascadePolicy = load_cascade_policy(Path(p.policy))
    for role, fitted, used in (
        ("small", policy.small_model, session.engine.model),
        ("large", policy.large_model, large_model),
    ):
        if fitted != used:
            session.warnings.append(
                f"the cascade policy was fitted with {fitted!r} as the {role} model; "
                f"{used!r} is used"
            )
    if policy.feature == "score":
        judge = session.verifier(p.verifier)
        engine = getattr(judge, "engine", None) or session.engine
        if engine.model != policy.large_model:
            session.warnings.append(
                f"the cascade policy's threshold was fitted on {policy.large_model!r}'s "
                f"judgements; {engine.model!r} judges here (give --judge-model "
                f"{policy.large_model})"
            )
    return p.model_copy(
        update={
            "probe": policy.probe,
            "feature": policy.feature,
            "threshold": policy.threshold,
            "samples": policy.samples,
            "vote": policy.vote,
            "window": policy.window,
            "top_logprobs": max(1, policy.top_logprobs),
        }
    )


async def cascade(session: Session, question: Question, p: CascadeParams) -> Result:
    large = session.named_engine(LARGE, "the larger model a cascade escalates to")
    rule = _rule(session, p, large.model)
    messages = as_messages(question)
    weighted = rule.vote == "mean-logprob"
    # An unknown verifier fails here, before any compute.
    verifier = session.verifier(rule.verifier) if rule.feature == "score" else None
    overrides = confidence_sampling(
        session,
        rule.top_logprobs,
        rule.feature == "confidence" or weighted or bool(verifier and verifier.needs_logprobs),
    )
    try:
        probe = await session.sample(messages, rule.probe, step="probe", **overrides)
    except BudgetExhausted:
        probe = []
    reading = read_probe(probe, rule.window)
    score = math.nan
    if verifier is not None and reading.answer is not None and not session.exhausted:
        score = await _answer_score(session, verifier, question, probe, reading.answer)
    value = {"share": reading.share, "confidence": reading.confidence, "score": score}[rule.feature]
    escalate = math.isnan(value) or value < rule.threshold
    session.record(
        "route",
        **reading.describe(),
        score=None if math.isnan(score) else score,
        feature=rule.feature,
        threshold=rule.threshold,
        escalate=escalate,
    )
    escalated: list[Candidate] = []
    if escalate and not session.exhausted:
        large_overrides = confidence_sampling(session, rule.top_logprobs, weighted, large)
        try:
            escalated = await session.sample(
                messages, rule.samples, step="escalate", engine=large, **large_overrides
            )
        except BudgetExhausted:
            escalated = []
    voters = escalated or probe
    answer, votes = final_vote(voters, rule.vote)
    session.record(
        "vote",
        kind=rule.vote,
        votes=votes,
        answered_by=(large if escalated else session.engine).model,
    )
    # The leader's share of the answering samples (answered or not), or of all the weight cast.
    total = len(voters) if rule.vote == "majority" else sum(votes.values())
    share = votes.get(answer, 0.0) / total if answer is not None and total > 0 else 0.0
    result = session.result(answer, probe + escalated, votes, share=share)
    if not escalated:
        return result
    # The reply's text is the larger model's, from a sample that gave its answer.
    return result.model_copy(update={"model": large.model, "voters": [c.index for c in escalated]})


async def _answer_score(
    session: Session,
    verifier: Verifier,
    question: Question,
    probe: list[Candidate],
    answer: str,
) -> float:
    """The verifier's mean score of the probe samples whose answer is the probe's `answer`
    (NaN if the budget left none of them scored: the question escalates)."""
    groups = group_answers([c.answer for c in probe])
    holding = [c for c, group in zip(probe, groups, strict=True) if group == answer]
    try:
        scores = await verifier.score_all(session, question_text(question), holding)
    except BudgetExhausted:
        return math.nan
    values = [s.value for s in scores if s is not None]
    return float(np.mean(values)) if values else math.nan


CASCADE = Strategy(
    name="cascade",
    summary="Ask the small model first; escalate to a larger one (engines['large']) only when "
    "the small model's probe is not confident enough (FrugalGPT, RouteLLM).",
    params=CascadeParams,
    run=cascade,
)
