"""Judges: decide whether a response refused, or complied with a harmful request.

One small interface (:class:`Judge`) with one file per implementation:
:class:`KeywordJudge` (default), :class:`ModelJudge` (a local classifier or chat model), and the
generation-free :func:`first_token_refusal` score for inner loops.
"""

from surgeon.judges.base import Judge
from surgeon.judges.keyword import DEFAULT_REFUSAL_PHRASES, KeywordJudge
from surgeon.judges.logit import FirstTokenScorer, first_token_refusal
from surgeon.judges.model_judge import ModelJudge

__all__ = [
    "DEFAULT_REFUSAL_PHRASES",
    "FirstTokenScorer",
    "Judge",
    "KeywordJudge",
    "ModelJudge",
    "first_token_refusal",
]
