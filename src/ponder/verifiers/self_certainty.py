"""The `self-certainty` verifier: how sure the model was of its own trace, read from the trace's
token logprobs (no extra compute). Useful to weight votes or filter traces, not as proof of
correctness.

Modes:

* ``deepconf`` (default): DeepConf's lowest group confidence (see `confidence`), mapped to [0, 1]
  by ``1 - exp(-C / scale)``; 0 means no confidence, values near 1 a sharply peaked trace. The
  map is monotonic, so ranking and thresholds on the raw C carry over; `scale` sets where the
  score is 0.63 (C = scale). C grows with the number of alternatives k, so keep k fixed when
  comparing.
* ``mean-logprob``: the geometric-mean probability of the sampled tokens, exp(mean logprob).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from ponder.errors import InvalidRequestError
from ponder.strategies.result import Candidate, Score
from ponder.verifiers.base import Verifier
from ponder.verifiers.confidence import lowest_group_confidence, mean_logprob, token_confidences

if TYPE_CHECKING:
    from ponder.strategies.session import Session

DEFAULT_SCALE = 5.0
"""Confidence (in nats) that maps to a score of 1 - 1/e."""

CertaintyMode = Literal["mean-logprob", "deepconf"]
DEFAULT_TOP_LOGPROBS = 20
"""Alternatives per token that DeepConf wants the trace sampled with."""


class SelfCertaintyVerifier(Verifier):
    """Scores a candidate by its own token confidence. Sample with `sampling_overrides`."""

    name: ClassVar[str] = "self-certainty"
    summary: ClassVar[str] = (
        "The model's own confidence in its trace, from token logprobs (DeepConf or mean logprob)."
    )
    needs_logprobs: ClassVar[bool] = True

    def __init__(
        self, mode: CertaintyMode = "deepconf", window: int = 16, scale: float = DEFAULT_SCALE
    ) -> None:
        if mode not in ("mean-logprob", "deepconf"):
            raise InvalidRequestError(
                f"unknown self-certainty mode {mode!r}; use 'deepconf' or 'mean-logprob'"
            )
        if window < 1 or scale <= 0:
            raise InvalidRequestError("self-certainty needs window >= 1 and scale > 0")
        self.mode = mode
        self.window = window
        self.scale = scale

    @property
    def sampling_overrides(self) -> dict[str, Any]:
        """What candidates must be sampled with for this verifier to see anything."""
        if self.mode == "deepconf":
            return {"logprobs": True, "top_logprobs": DEFAULT_TOP_LOGPROBS}
        return {"logprobs": True}

    async def score(self, session: Session, question: str, candidate: Candidate) -> Score:
        return self.check(candidate)

    def check(self, candidate: Candidate) -> Score:
        """The score without a session: it needs no compute."""
        logprobs = candidate.logprobs
        if not logprobs:
            return Score(
                value=0.0,
                explanation="the candidate has no token logprobs: sample with logprobs=True"
                + (f" and top_logprobs={DEFAULT_TOP_LOGPROBS}" if self.mode == "deepconf" else ""),
            )
        if self.mode == "mean-logprob":
            mean = mean_logprob(logprobs)
            return Score(
                value=float(mean_logprob_score(mean)),
                explanation=f"mean logprob {mean:.4f} over {len(logprobs)} tokens",
            )
        k = max(len(entry.top_logprobs) for entry in logprobs)
        if k == 0:
            return Score(
                value=0.0,
                explanation="the candidate has no top logprobs, which DeepConf needs: "
                f"sample with top_logprobs={DEFAULT_TOP_LOGPROBS}",
            )
        lowest = lowest_group_confidence(token_confidences(logprobs), self.window)
        return Score(
            value=float(confidence_score(lowest, self.scale)),
            explanation=f"DeepConf lowest group confidence {lowest:.4f} (window {self.window}, "
            f"{len(logprobs)} tokens, top-{k}) -> 1 - exp(-C/{self.scale:g})",
        )


def confidence_score(confidence: npt.ArrayLike, scale: float = DEFAULT_SCALE) -> Any:
    """DeepConf confidence C (>= 0, larger = surer) -> [0, 1] as 1 - exp(-C / scale); works on
    arrays too, so offline replay scores exactly as the live verifier does."""
    c = np.maximum(np.asarray(confidence, dtype=np.float64), 0.0)
    return np.clip(-np.expm1(-c / scale), 0.0, 1.0)


def mean_logprob_score(mean: npt.ArrayLike) -> Any:
    """Mean token logprob -> [0, 1] as its geometric-mean probability exp(mean)."""
    return np.minimum(np.exp(np.asarray(mean, dtype=np.float64)), 1.0)
