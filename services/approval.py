"""Plan approval in free text, per step (design note 001 §2.3 "Plan Approval Integration").

The user answers "yes", "no, don't run it", "only step 1 and 3", "skip step 2",
"2番以外", "ファイル作成だけ"… Two choice requests go to the choice-parser actor
over NATS: one reads approve/reject (negation never counts as consent), one
maps the answer onto the plan's steps. A partial approval produces an edited
plan that is validated again: steps that lose their input are reported and the
plan is not run.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Literal

import msgspec

from tandem.messages import (
    ChoiceContext,
    ChoiceReply,
    ChoiceRequest,
    ChoiceResult,
    ConditionalBranch,
    ErrorRecovery,
    ExecutionPlan,
    ManualTransform,
    ReadInput,
    SpawnCommand,
    WorkflowStep,
    WriteOutput,
    decode_error_path,
    decoder,
    encode,
    subjects,
)

from .bus import Bus

__all__ = ["Approval", "Approver", "ask_approval", "describe_step", "edit_plan"]

Approver = Callable[[str], Awaitable[str]]
"""``async (question) -> answer``: how the flow asks the user (stdin, a chat UI, a test)."""

_SKIP = re.compile(r"\b(?:skip|without|except|drop|omit)\s+(?:steps?\s+)?([\d,\sand&]+)", re.IGNORECASE)
_SKIP_JA = re.compile(r"(?:ステップ)?([\d０-９,、と\s]+)(?:番目?)?(?:を|は)?(?:スキップ|飛ばして|抜いて|除いて)")


class Approval(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of an approval.

    Parameters
    ----------
    decision : {"approved", "partial", "rejected", "unclear"}
    plan : ExecutionPlan or None
        The plan to run (edited for ``partial``), ``None`` otherwise.
    kept_steps : list of int
        Plan step numbers kept.
    modifications : list of str
        Conditions the user attached (reported; Tandem cannot enforce free text).
    problems : list of str
        Why an edited plan cannot run (e.g. a step lost its input).
    question : str
        What to ask next when ``unclear``.
    results : list of ChoiceResult
        The choice parser's readings, for the record.
    """

    decision: Literal["approved", "partial", "rejected", "unclear"]
    plan: ExecutionPlan | None = None
    kept_steps: list[int] = []
    modifications: list[str] = []
    problems: list[str] = []
    question: str = ""
    results: list[ChoiceResult] = []


def describe_step(step: WorkflowStep) -> str:
    """One line for a step, as shown to the user."""
    match step:
        case ReadInput(params=p):
            return f"read {p.source} ({p.type})"
        case SpawnCommand(params=p):
            return " ".join([p.cmd, *p.args])[:80]
        case ManualTransform(params=p):
            return f"model: {(p.instructions or 'do the task')[:70]}"
        case WriteOutput(params=p):
            return f"write {p.destination} ({p.format})"
        case ConditionalBranch(params=p):
            return f"if {p.condition.kind} {p.condition.value!r} → step {p.then_step}"
        case ErrorRecovery(params=p):
            return f"on failure of {p.covers}: {p.strategy}"
    return step.__struct_config__.tag


def _rewrite_skips(answer: str) -> str:
    """Turn "skip step 2" / "2をスキップ" into the exclusion form the matcher knows ("all except 2")."""
    m = _SKIP.search(answer) or _SKIP_JA.search(answer)
    if m is None:
        return answer
    numbers = re.findall(r"\d+", m.group(1).translate(str.maketrans("０１２３４５６７８９", "0123456789")))
    return f"all except {', '.join(numbers)}" if numbers else answer


def edit_plan(plan: ExecutionPlan, keep: set[int]) -> tuple[ExecutionPlan | None, list[str]]:
    """Keep only steps ``keep`` (plan step numbers) and re-validate.

    ``error_recovery`` steps stay when a step they cover stays, covering only
    kept steps.

    Returns
    -------
    tuple of (ExecutionPlan or None, list of str)
        The edited plan, or ``None`` with the problems (a step whose input
        buffer, branch target or output disappears).
    """
    steps: list[WorkflowStep] = []
    for s in plan.workflow:
        if isinstance(s, ErrorRecovery):
            covers = [c for c in s.params.covers if c in keep]
            if covers:
                steps.append(msgspec.structs.replace(s, params=msgspec.structs.replace(s.params, covers=covers)))
        elif s.step in keep:
            steps.append(s)
    if not steps:
        return None, ["no step is left to run"]
    candidate = {"version": plan.version, "metadata": plan.metadata, "workflow": steps}
    try:
        edited = decoder(ExecutionPlan).decode(encode(candidate))
    except msgspec.ValidationError as exc:
        text, path = decode_error_path(exc)
        where = ""
        m = re.match(r"\$\.workflow\[(\d+)\]", path or "")
        if m:
            where = f"step {steps[int(m.group(1))].step}: "
        return None, [f"{where}{text} ({path})" if path else text]
    return edited, []


async def _parse(bus: Bus, answer: str, context: ChoiceContext, env: dict[str, str]) -> ChoiceResult:
    reply = await bus.request(subjects.CHOICE_PARSE, ChoiceRequest(answer=answer, context=context, **env),
                              ChoiceReply, timeout=60)
    return reply.result


async def ask_approval(bus: Bus, plan: ExecutionPlan, answer: str, *, risk_level: str = "medium",
                       correlation_id: str = "", conversation_id: str = "") -> Approval:
    """Read one free-text answer to "approve this plan?".

    Parameters
    ----------
    bus : Bus
    plan : ExecutionPlan
    answer : str
        The user's words.
    risk_level : str
        Passed to the choice parser (``critical`` always confirms).

    Returns
    -------
    Approval

    Raises
    ------
    RemoteError
        When the choice parser fails.
    """
    env = {"correlation_id": correlation_id, "conversation_id": conversation_id}
    verdict = await _parse(bus, answer, ChoiceContext(
        kind="approval", available_options=["approve", "reject"], risk_level=risk_level,
        option_descriptions=["run the plan", "do not run the plan"],
        current_plan=", ".join(f"{s.step}. {describe_step(s)}" for s in plan.workflow)), env)
    if verdict.selected_options == [2] and verdict.action != "clarify":
        return Approval(decision="rejected", results=[verdict], modifications=verdict.modifications)
    runnable = [s for s in plan.workflow if not isinstance(s, ErrorRecovery)]
    steps = await _parse(bus, _rewrite_skips(answer), ChoiceContext(
        available_options=[describe_step(s) for s in runnable], risk_level=risk_level,
        option_descriptions=[f"step {s.step}: {s.__struct_config__.tag}" for s in runnable]), env)
    results = [verdict, steps]
    modifications = list(dict.fromkeys([*verdict.modifications, *steps.modifications]))
    chosen = {runnable[i - 1].step for i in steps.selected_options}
    if steps.action == "execute" and chosen and chosen != {s.step for s in runnable}:
        edited, problems = edit_plan(plan, chosen)
        return Approval(decision="partial", plan=edited, kept_steps=sorted(chosen), problems=problems,
                        modifications=modifications, results=results)
    if verdict.selected_options == [1] and verdict.action == "execute" or steps.action == "execute" and chosen:
        return Approval(decision="approved", plan=plan, kept_steps=[s.step for s in runnable],
                        modifications=modifications, results=results)
    question = verdict.question if verdict.action == "confirm" else steps.question or verdict.question
    return Approval(decision="unclear", question=question or "Approve the plan? (yes / no / which steps)",
                    modifications=modifications, results=results)
