"""Planner flow: task → :class:`~tandem.messages.plan.ExecutionPlan` (design note 000, stage 1)."""

from __future__ import annotations

import msgspec

from ._base import ErrorReply, Message
from .plan import ExecutionPlan

__all__ = ["Ack", "InputInfo", "PlanReply", "PlanRequest", "PlannerReply", "RememberPlan"]


class InputInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What the planner may know of one user input (never its path).

    Parameters
    ----------
    fd : int
        ``0`` for stdin, ``3``, ``4`` … for ``--input`` files in order.
    type : str
        Guessed from the file extension, e.g. ``markdown``.
    size : int
        Size in characters.
    preview : str
        The first few lines, so the planner can see the shape of the data.
    """

    fd: int
    type: str = "text"
    size: int = 0
    preview: str = ""


class PlanRequest(Message, frozen=True, kw_only=True, tag="plan_request"):
    """Ask the planner for an execution plan.

    Parameters
    ----------
    task : str
        The user's task in their own words.
    inputs : list of InputInfo
    use_cache : bool
        ``False`` bypasses the plan cache (``--no-cache``).
    """

    task: str
    inputs: list[InputInfo] = []
    use_cache: bool = True


class PlanReply(Message, frozen=True, kw_only=True, tag="plan_reply"):
    """A validated plan.

    Parameters
    ----------
    plan : ExecutionPlan
    fingerprint : str
        Cache key of (task, input types); send it back in :class:`RememberPlan`.
    cached : bool
        Whether the plan came from the plan cache.
    model : str
        The planning model (``""`` when cached).
    attempts : int
        Planning calls made (a schema-valid but invalid plan is retried once).
    recipe : str
        The vetted plan (recipe) the plan was made from, ``""`` when the model
        wrote it from scratch or it came from the cache.
    recipe_params : dict of str to str
        The values filled into the recipe's parameters.
    """

    plan: ExecutionPlan
    fingerprint: str
    cached: bool = False
    model: str = ""
    attempts: int = 0
    recipe: str = ""
    recipe_params: dict[str, str] = {}


class RememberPlan(Message, frozen=True, kw_only=True, tag="remember_plan"):
    """Store a plan that ran successfully in the plan cache (note 000, phase 4)."""

    fingerprint: str
    plan: ExecutionPlan


class Ack(Message, frozen=True, kw_only=True, tag="ack"):
    """Positive reply with nothing else to say."""


PlannerReply = PlanReply | ErrorReply
