"""Judging a run's stored samples: a verifier (an llm-judge on some model) scores each sample once,
and the score is stored beside it with what the judging cost, so planners can fit thresholds on
a verifier's score (the cascade's `feature=score`) offline, as they do on vote shares.

Each sample is judged exactly as the live cascade judges a probe sample: the verifier reads the
item's question (the last user turn of its prompt, `question_text`) and the sample's text, in a
session of its own on the judge's engine, so the stored tokens and seconds are that one call's.
Resuming is the normal path: samples already judged by the same verifier are skipped, and each
score is stored in its own transaction as soon as it is known.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from ponder.bench.store import Judgement, RunStore
from ponder.engines.base import Engine
from ponder.errors import InvalidRequestError
from ponder.strategies.primitives import question_text
from ponder.strategies.result import Candidate
from ponder.strategies.session import Session
from ponder.verifiers.llm_judge import JUDGE_FAILED, LLMJudgeVerifier

OnJudged = Callable[[Judgement], None]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class JudgeArrays:
    """One judge's stored scores of a run's samples as [items, samples] arrays (the items in the
    order asked for), with each judgement's prompt and generated tokens and seconds, which
    planners price at the judge model's price."""

    verifier: str
    score: FloatArray
    prompt_tokens: FloatArray
    completion_tokens: FloatArray
    seconds: FloatArray

    @property
    def complete(self) -> bool:
        """Whether every sample was judged."""
        return not bool(np.isnan(self.score).any())

    def take(self, rows: Sequence[int]) -> JudgeArrays:
        """The same judge on the items at `rows`."""
        index = np.asarray(rows, dtype=np.intp)
        return JudgeArrays(
            self.verifier,
            self.score[index],
            self.prompt_tokens[index],
            self.completion_tokens[index],
            self.seconds[index],
        )


def judge_arrays(store: RunStore, items: Sequence[int]) -> dict[str, JudgeArrays]:
    """Every judge's scores of the samples of `items`, by verifier name; NaN where a sample was
    not judged (a replay over random orderings can use a judge only where it is `complete`)."""
    found: dict[str, JudgeArrays] = {}
    samples = store.config.samples
    position = {item: row for row, item in enumerate(items)}
    for verifier in store.verifiers_judged():
        values = np.full((4, len(items), samples), np.nan)
        for j in store.judgements(verifier):
            row = position.get(j.item_index)
            if row is not None and j.sample_index < samples:
                values[:, row, j.sample_index] = (
                    j.score,
                    j.prompt_tokens,
                    j.completion_tokens,
                    j.seconds,
                )
        found[verifier] = JudgeArrays(verifier, *values)
    return found


class JudgeSummary(BaseModel):
    """Where one verifier stands on the samples asked for, and what one `judge_run` did."""

    verifier: str
    asked: int
    """Samples asked for: the first `samples` of each of the first `limit` items."""
    done: int
    """Of those, samples with a stored score (all calls together)."""
    judged: int
    """Samples judged by this call."""
    mean_score: float | None
    mean_seconds: float | None
    elapsed_s: float


def judge_key(judge_model: str) -> str:
    """The name a judge's scores are stored under: the verifier and the model that judged."""
    return f"{LLMJudgeVerifier.name}:{judge_model}"


async def judge_run(
    store: RunStore,
    engine: Engine,
    *,
    samples: int | None = None,
    limit: int | None = None,
    on_judged: OnJudged | None = None,
) -> JudgeSummary:
    """Score the first `samples` stored samples (default: all) of the first `limit` items
    (default: all) with an llm-judge on `engine` (P(yes) of one token), skipping those judged
    before, and store each score with its tokens and seconds."""
    config = store.config
    samples = config.samples if samples is None else samples
    limit = config.items if limit is None else limit
    if not 1 <= samples <= config.samples:
        raise InvalidRequestError(f"--samples must lie in 1..{config.samples}, got {samples}")
    if limit < 1:
        raise InvalidRequestError(f"--limit must be at least 1, got {limit}")
    key = judge_key(engine.model)
    verifier = LLMJudgeVerifier(engine=engine)
    done = store.judged(key)
    items = store.items()[:limit]
    asked = [
        record
        for i in range(len(items))
        for record in store.samples(i)
        if record.sample_index < samples
    ]
    started = time.perf_counter()
    judged = 0
    for record in asked:
        if (record.item_index, record.sample_index) in done:
            continue
        session = Session(engine, strategy="judge")
        candidate = Candidate(
            index=record.sample_index,
            text=record.text,
            answer=record.answer,
            finish_reason=record.finish_reason,
            completion_tokens=record.completion_tokens,
            latency_s=record.latency_s,
        )
        question = question_text(list(items[record.item_index].prompt))
        score = await verifier.score(session, question, candidate)
        if score.explanation.startswith(JUDGE_FAILED):
            raise InvalidRequestError(
                f"judging item {record.item_index} sample {record.sample_index} failed: "
                f"{score.explanation}; the scores stored so far are kept, run again to continue"
            )
        judgement = Judgement(
            item_index=record.item_index,
            sample_index=record.sample_index,
            verifier=key,
            score=score.value,
            prompt_tokens=session.usage.prompt_tokens,
            completion_tokens=session.usage.completion_tokens,
            seconds=session.elapsed(),
        )
        store.add_judgement(judgement)
        judged += 1
        if on_judged is not None:
            on_judged(judgement)
    stored = [j for j in store.judgements(key) if j.item_index < limit and j.sample_index < samples]
    count = len(stored)
    return JudgeSummary(
        verifier=key,
        asked=len(asked),
        done=count,
        judged=judged,
        mean_score=sum(j.score for j in stored) / count if count else None,
        mean_seconds=sum(j.seconds for j in stored) / count if count else None,
        elapsed_s=time.perf_counter() - started,
    )
