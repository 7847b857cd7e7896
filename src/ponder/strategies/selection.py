"""Choosing an answer from scored candidates, shared by the strategies that score (best-of-n,
verify-refine, beam-search)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from ponder.strategies.primitives import group_answers, weighted_vote
from ponder.strategies.result import Candidate, Result
from ponder.strategies.session import Session


def answer_by_score(
    session: Session, candidates: Sequence[Candidate], scores: Sequence[float | None]
) -> Result:
    """The best-scored candidate's answer (None score: not scored); ties go to the answer more of
    the tied candidates share, then to the earliest. Votes are each answer's best score, the share
    the answer's part of those. With nothing scored (the budget ended first), a plain
    majority vote of the candidates."""
    groups = group_answers([c.answer for c in candidates])
    scored = [
        (i, g, s)
        for i, (g, s) in enumerate(zip(groups, scores, strict=True))
        if g is not None and s is not None
    ]
    if not scored:
        answer, votes = weighted_vote(groups)
        session.record("vote", votes=votes, unscored=True)
        return session.result(answer, list(candidates), votes)
    top = max(s for _, _, s in scored)
    tied = Counter(g for _, g, s in scored if math.isclose(s, top))
    ranked = sorted(scored, key=lambda igs: (-igs[2], -tied[igs[1]], igs[0]))
    votes = {}
    for _, group, score in ranked:  # a group's first appearance is its best score
        votes.setdefault(group, score)
    answer = ranked[0][1]
    session.record("select", candidate=candidates[ranked[0][0]].index, votes=votes)
    return session.result(answer, list(candidates), votes)
