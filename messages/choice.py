"""Choice flow: a free-text answer to an approval or option prompt → :class:`ChoiceResult`.

Design note 001 is the specification (``ChoiceContext``, ``ChoiceResult``,
thresholds in §2.2). Options are numbered from 1 everywhere.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from ._base import ErrorReply, Message

__all__ = ["ChoiceContext", "ChoiceReply", "ChoiceRequest", "ChoiceResult", "RiskLevel"]

RiskLevel = Literal["low", "medium", "high", "critical"]


class ChoiceContext(msgspec.Struct, frozen=True, kw_only=True):
    """What the user is answering (note 001 §2.2 ``ChoiceContext``).

    Parameters
    ----------
    available_options : list of str
        Option labels, in order (option 1 first).
    option_descriptions : list of str
        One per option, or empty.
    current_plan : str or None
        The plan being approved, if any.
    risk_level : {"low", "medium", "high", "critical"}
        ``critical`` always asks for confirmation before acting.
    previous_choices : list of str
    conversation_context : str
    kind : {"options", "approval"}
        ``approval``: the options are approve/reject-like and yes/no words apply.
    """

    available_options: Annotated[list[str], Meta(min_length=1, max_length=50)]
    option_descriptions: list[str] = []
    current_plan: str | None = None
    risk_level: RiskLevel = "medium"
    previous_choices: list[str] = []
    conversation_context: str = ""
    kind: Literal["options", "approval"] = "options"


class ChoiceResult(msgspec.Struct, frozen=True, kw_only=True):
    """How an answer was understood (note 001 §2.2 ``ChoiceResult``).

    Parameters
    ----------
    selected_options : list of int
        1-based, ascending, only options that exist.
    confidence : float
        0–1.
    reasoning : str
    modifications : list of str
        Conditions attached to the answer ("バックアップ取って", "but keep the logs").
    clarification_needed : bool
        ``True`` whenever the caller must not act on the reading as it stands:
        a confirmation (0.6–0.8, or ``critical`` risk) or a clarification
        (note 001 §2.2 contract).
    extracted_intent : str
    decided_by : {"pattern", "llm", "cache", "none"}
        Which path decided.
    action : {"execute", "confirm", "clarify"}
        What the caller should do, from the thresholds (≥ 0.8 execute, 0.6–0.8
        confirm, below clarify; ``critical`` risk always confirms). Below the
        confirm threshold there is no selection and the confidence is 0
        (note 001 §2.2).
    question : str
        For ``confirm``/``clarify``: what to ask the user (lists the options).
    refused_options : list of int
        Options the answer negates or excludes ("everything except 3" → ``[3]``).
        Never selected and never proposed in a confirm question.
    unexplained : list of str
        Words of the answer the pattern grammar did not explain (why the
        pattern path declined to act).
    """

    selected_options: list[int] = []
    confidence: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.0
    reasoning: str = ""
    modifications: list[str] = []
    clarification_needed: bool = False
    extracted_intent: str = ""
    decided_by: Literal["pattern", "llm", "cache", "none"] = "none"
    action: Literal["execute", "confirm", "clarify"] = "clarify"
    question: str = ""
    refused_options: list[int] = []
    unexplained: list[str] = []


class ChoiceRequest(Message, frozen=True, kw_only=True, tag="choice_request"):
    """Parse ``answer`` in ``context`` (subject ``tandem.choice.parse``).

    Parameters
    ----------
    answer : str
    context : ChoiceContext
    use_llm : bool
        ``False``: the pattern matcher only (``tandem choose --no-llm``).
    """

    answer: Annotated[str, Meta(max_length=4000)]
    context: ChoiceContext
    use_llm: bool = True


class ChoiceReply(Message, frozen=True, kw_only=True, tag="choice_reply"):
    """The parsed answer."""

    result: ChoiceResult


ChoiceReplies = ChoiceReply | ErrorReply
