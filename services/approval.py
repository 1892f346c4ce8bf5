"""Plan approval in free text, per step (design note 001 §2.3 "Plan Approval Integration", §3.4, §6.2).

The user answers "yes", "no, don't run it", "only step 1 and 3", "skip step 2",
"2番以外", "ファイル作成だけ"… Two choice requests go to the choice-parser actor
over NATS: one reads approve/reject (negation never counts as consent), one
maps the answer onto the plan's steps (option *k* is step *k*). A partial
approval produces an edited plan that is validated again: steps that lose
their input are reported and the plan is not run.

Rules (issue 16):

* **An exclusion the user stated is never overridden by a broader reading.**
  If the answer excludes a step ("skip 3", "3はやめて", "not step 3"), the
  whole plan is never approved from it, even when the approve/reject reading
  says "approve".
* **A confirm question states the exact edited plan it proposes** ("Run steps
  1, 2, 4 — skip 3?"), recorded in :attr:`Approval.proposed_steps`; pass that
  :class:`Approval` back as ``pending`` with the next answer, and its "yes"
  approves exactly those steps (:func:`approve_plan` does this loop).
* **Conditions that cannot be enforced are refused** (the question says so and
  asks again), never approved as "noted": Tandem can run or skip whole steps,
  nothing else.
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

__all__ = ["Approval", "Approver", "Risk", "approve_plan", "ask_approval", "assess_risk", "describe_step",
           "edit_plan", "plan_details"]

Approver = Callable[[str], Awaitable[str]]
"""``async (question) -> answer``: how the flow asks the user (stdin, a chat UI, a test)."""

_SKIP = re.compile(r"\b(?:skip|without|except|drop|omit|leave\s+out)\s+(?:steps?\s+)?(\d+(?:\s*(?:,|and|&)\s*\d+)*)",
                   re.IGNORECASE)
_SKIP_JA = re.compile(r"(?:ステップ)?\s*(\d+(?:\s*[,、と]\s*\d+)*)\s*(?:番目?)?(?:を|は)?(?:スキップ|飛ばして|抜いて|除いて|外して)")
_STEP_WORD = re.compile(r"\bsteps?\s*(?=\d)|ステップ\s*(?=\d)|(?<=\d)\s*番目のステップ", re.IGNORECASE)
_ENFORCEABLE = re.compile(r"^(?:and\s+|but\s+)?(?:(?:please\s+)?(?:skip|don'?t\s+run|not|without|except|drop|omit)\s+"
                          r"(?:steps?\s*)?\d+(?:\s*(?:,|and|&)\s*\d+)*"
                          r"|(?:ステップ)?\s*\d+(?:\s*[,、と]\s*\d+)*\s*(?:番目?)?(?:は|を)?"
                          r"(?:スキップ|飛ばして|抜いて|除いて|外して|やめて|いらない|実行しないで|しないで))"
                          r"\s*(?:please|ください|下さい)?[.!。]*$", re.IGNORECASE)


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
    proposed_steps : list of int
        For ``unclear``: the exact steps the question proposes to run; a
        "yes" to it (passed back as ``pending``) approves exactly these.
    excluded_steps : list of int
        Steps the user excluded; never run, whatever a broader reading says.
    """

    decision: Literal["approved", "partial", "rejected", "unclear"]
    plan: ExecutionPlan | None = None
    kept_steps: list[int] = []
    modifications: list[str] = []
    problems: list[str] = []
    question: str = ""
    results: list[ChoiceResult] = []
    proposed_steps: list[int] = []
    excluded_steps: list[int] = []


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


class Risk(msgspec.Struct, frozen=True, kw_only=True):
    """A plan's risk level and the rules that raised it."""

    level: Literal["low", "medium", "high", "critical"]
    reasons: list[str] = []


LARGE_INPUT_CHARS = 20_000


def assess_risk(plan: ExecutionPlan, *, input_sizes: dict[int, int] | None = None, writes_file: bool = False) -> Risk:
    """Assess a plan's risk from its steps (issue 16.3). Points add up; the level follows the total.

    Rules:

    * +2 the result goes to a file at a user path (``writes_file``: ``tandem run -o``);
    * +1 more than 8 steps, +2 more than 16;
    * +1 a model step (``manual_transform``: the model writes text the user gets),
      +2 more when it works on a large input (``expected_size: large`` or over
      20 000 characters in ``input_sizes``);
    * +1 a recovery that hands a failed step to the model;
    * +1 ``pandoc`` (an external program, sandboxed).

    0 → ``low``, 1–2 → ``medium``, 3 → ``high``, 4 or more → ``critical``.

    Examples
    --------
    >>> from tandem.messages import decoder
    >>> plan = decoder(ExecutionPlan).decode(b'{"metadata": {"task_type": "t", "complexity": "low", '
    ...     b'"estimated_steps": 2}, "workflow": [{"step": 1, "action": "read_input", "params": {"source": "fd:3"}},'
    ...     b'{"step": 2, "action": "spawn_command", "params": {"cmd": "sort"}},'
    ...     b'{"step": 3, "action": "write_output", "params": {}}]}')
    >>> assess_risk(plan).level
    'low'
    >>> assess_risk(plan, writes_file=True).reasons
    ['writes to a user path (+2)']
    """
    sizes = input_sizes or {}
    points, reasons = 0, []

    def add(n: int, why: str) -> None:
        nonlocal points
        points += n
        reasons.append(f"{why} (+{n})")

    if writes_file:
        add(2, "writes to a user path")
    runnable = [s for s in plan.workflow if not isinstance(s, ErrorRecovery)]
    if len(runnable) > 16:
        add(2, f"{len(runnable)} steps")
    elif len(runnable) > 8:
        add(1, f"{len(runnable)} steps")
    large = {s.params.source for s in plan.workflow if isinstance(s, ReadInput) and s.params.expected_size == "large"}
    large |= {f"fd:{fd}" for fd, n in sizes.items() if n > LARGE_INPUT_CHARS}
    models = [s for s in plan.workflow if isinstance(s, ManualTransform)]
    if models:
        add(1, "a model writes text" if len(models) == 1 else f"{len(models)} model steps write text")
        reads = {f"fd:{s.params.input_fd}" for s in models if s.params.input_fd is not None}
        if large and (reads & large or any(s.params.input_fd is None for s in models)):
            add(2, "a model step on a large input")
    if any(isinstance(s, ErrorRecovery) and s.params.strategy == "manual_transform" for s in plan.workflow):
        add(1, "a failed step is handed to the model")
    if any(isinstance(s, SpawnCommand) and s.params.cmd == "pandoc" for s in plan.workflow):
        add(1, "runs pandoc")
    level = "low" if points == 0 else "medium" if points <= 2 else "high" if points == 3 else "critical"
    return Risk(level=level, reasons=reasons)  # type: ignore[arg-type]


def plan_details(plan: ExecutionPlan) -> str:
    """Every step with its command and parameters (the critical approval's "details")."""
    lines = []
    for s in plan.workflow:
        params = msgspec.json.encode(s.params).decode()
        lines.append(f"  {s.step}. {s.__struct_config__.tag}: {params}")
    return "\n".join(lines)


_DETAILS = re.compile(r"^\s*(?:4|d|details?|show(?: me)?(?: the)? details?|詳細(?:確認)?(?:を見せて|して)?)\s*[.!?。]?\s*$",
                      re.IGNORECASE)
_ALTERNATIVE = re.compile(r"^\s*(?:3|alternatives?|choose (?:an )?alternative|other|代替案(?:選択)?|別の案)\s*[.!?。]?\s*$",
                          re.IGNORECASE)


_FULLWIDTH = str.maketrans("０１２３４５６７８９", "0123456789")


def _skipped(answer: str) -> set[int]:
    """Step numbers of "skip step 2" / "2をスキップ" phrases."""
    text = answer.translate(_FULLWIDTH)
    out: set[int] = set()
    for rx in (_SKIP, _SKIP_JA):
        for m in rx.finditer(text):
            out.update(int(d) for d in re.findall(r"\d+", m.group(1)))
    return out


def _steps_answer(answer: str) -> str:
    """The answer for the per-step reading: "skip 2" → "all except 2", "step 3" → "3" (options are steps)."""
    skipped = _skipped(answer)
    if skipped and not re.search(r"\b(?:only|just)\b|だけ|のみ", answer):
        return "all except " + ", ".join(map(str, sorted(skipped)))
    return _STEP_WORD.sub("", answer.translate(_FULLWIDTH))


def _fmt_steps(steps: list[int]) -> str:
    return ("step " if len(steps) == 1 else "steps ") + ", ".join(map(str, steps))


def _proposal(kept: list[int], excluded: list[int]) -> str:
    skip = f" — skip {', '.join(map(str, excluded))}" if excluded else ""
    return f"Run {_fmt_steps(kept)}{skip}? (yes / no)"


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


async def _parse(bus: Bus, answer: str, context: ChoiceContext, env: dict[str, str], *,
                 use_llm: bool = True) -> ChoiceResult:
    reply = await bus.request(subjects.CHOICE_PARSE,
                              ChoiceRequest(answer=answer, context=context, use_llm=use_llm, **env),
                              ChoiceReply, timeout=60, idempotent=True)
    return reply.result


async def ask_approval(bus: Bus, plan: ExecutionPlan, answer: str, *, risk_level: str = "medium",
                       correlation_id: str = "", conversation_id: str = "",
                       pending: Approval | None = None) -> Approval:
    """Read one free-text answer to "approve this plan?".

    Parameters
    ----------
    bus : Bus
    plan : ExecutionPlan
    answer : str
        The user's words.
    risk_level : str
        Passed to the choice parser (``critical`` always confirms).
    pending : Approval or None
        The previous ``unclear`` approval whose question this answer replies
        to: a "yes" approves exactly its ``proposed_steps``; its
        ``excluded_steps`` stay excluded unless the answer names them.

    Returns
    -------
    Approval
        ``approved``/``partial`` with the plan to run, ``rejected``, or
        ``unclear`` with the question to ask next (and, for a proposal, the
        steps it proposes).

    Raises
    ------
    RemoteError
        When the choice parser fails.
    """
    env = {"correlation_id": correlation_id, "conversation_id": conversation_id}
    if pending is not None and pending.proposed_steps and risk_level == "critical":
        risk_level = "high"  # the reply to the confirmation question is the confirmation critical asks for
    verdict_context = ChoiceContext(
        kind="approval", available_options=["approve", "reject"], risk_level=risk_level,  # type: ignore[arg-type]
        option_descriptions=["run the plan", "do not run the plan"],
        current_plan=", ".join(f"{s.step}. {describe_step(s)}" for s in plan.workflow))
    # patterns first; the model only when they cannot tell (it may take seconds)
    verdict = await _parse(bus, answer, verdict_context, env, use_llm=False)
    if pending is not None and pending.proposed_steps:
        if verdict.action != "execute":
            verdict = await _parse(bus, answer, verdict_context, env)
        return await _answer_to_proposal(bus, plan, answer, verdict, pending, risk_level, env)
    steps_context = _steps_context(plan, risk_level)
    steps = await _parse(bus, _steps_answer(answer), steps_context, env, use_llm=False)
    approval = _decide(plan, answer, verdict, steps, pending)
    if approval.decision != "unclear" or approval.proposed_steps or approval.question.startswith("I cannot enforce"):
        return approval
    verdict = await _parse(bus, answer, verdict_context, env)
    steps = await _parse(bus, _steps_answer(answer), steps_context, env)
    return _decide(plan, answer, verdict, steps, pending)


def _decide(plan: ExecutionPlan, answer: str, verdict: ChoiceResult, steps: ChoiceResult,
            pending: Approval | None) -> Approval:
    """The approval from the approve/reject reading and the per-step reading (see the module rules)."""
    runnable = [s.step for s in plan.workflow if not isinstance(s, ErrorRecovery)]
    results = [verdict, steps]
    modifications = list(dict.fromkeys([*verdict.modifications, *steps.modifications]))
    excluded = sorted(({*steps.refused_options, *_skipped(answer)} & set(runnable))
                      | set(pending.excluded_steps if pending is not None else []))
    chosen = sorted(set(steps.selected_options) & set(runnable))
    placeholders = [k for k in steps.selected_options if k not in {s.step for s in plan.workflow}]
    base = {"modifications": modifications, "results": results, "excluded_steps": excluded}

    if verdict.selected_options == [2] and verdict.action != "clarify" and not chosen:
        return Approval(decision="rejected", **base)
    if placeholders:
        return Approval(decision="unclear", question=f"This plan has no step {', '.join(map(str, placeholders))}. "
                        f"Which steps should run? ({', '.join(map(str, runnable))})", **base)
    unenforceable = [m for m in modifications if not _ENFORCEABLE.match(m)]
    if unenforceable:  # never "noted": Tandem can only run or skip whole steps
        return Approval(decision="unclear", question=(
            f"I cannot enforce {'; '.join(repr(m) for m in unenforceable)}: Tandem can run or skip whole steps, "
            "nothing else. Approve the plan as shown, name the steps to run or skip, or say no."), **base)
    approve_all = verdict.selected_options == [1] and verdict.action == "execute"
    if steps.action == "execute" and chosen and not (excluded and set(chosen) | set(excluded) != set(runnable)):
        kept = [k for k in chosen if k not in excluded]
        if kept == runnable:
            return Approval(decision="approved", plan=plan, kept_steps=kept, **base)
        if kept:
            return _partial(plan, kept, base)
    if excluded or (chosen and chosen != runnable):
        # a partial reading short of acting, an exclusion next to a broader "yes", or one step named and another
        # excluded: propose the exact edit (with an exclusion: every step the user did not exclude)
        kept = [k for k in (runnable if excluded else chosen) if k not in excluded]
        if not kept:
            return Approval(decision="unclear", question="That leaves no step to run. Which steps should run?", **base)
        return Approval(decision="unclear", question=_proposal(kept, [k for k in runnable if k not in kept]),
                        proposed_steps=kept, **base)
    if approve_all:
        return Approval(decision="approved", plan=plan, kept_steps=runnable, **base)
    question = verdict.question if verdict.action == "confirm" else steps.question or verdict.question
    if verdict.action == "confirm" and verdict.selected_options == [1]:  # "run the whole plan?" is the proposal
        return Approval(decision="unclear", question=_proposal(runnable, []), proposed_steps=runnable, **base)
    return Approval(decision="unclear", question=question or "Approve the plan? (yes / no / which steps)", **base)


def _steps_context(plan: ExecutionPlan, risk_level: str) -> ChoiceContext:
    """Option *k* is step *k* (numbers without a step are placeholders nobody picks by description)."""
    by_number = {s.step: s for s in plan.workflow}
    top = max(by_number)
    if top > 50:  # ChoiceContext's limit; plans have at most 24 steps, numbered from 1 in practice
        raise ValueError(f"step numbers up to {top} cannot be offered as options")
    return ChoiceContext(
        available_options=[describe_step(by_number[k]) if k in by_number else f"(no step {k})" for k in range(1, top + 1)],
        option_descriptions=[f"step {k}: {by_number[k].__struct_config__.tag}" if k in by_number else ""
                             for k in range(1, top + 1)],
        risk_level=risk_level)  # type: ignore[arg-type]


def _partial(plan: ExecutionPlan, kept: list[int], base: dict) -> Approval:
    edited, problems = edit_plan(plan, set(kept))
    return Approval(decision="partial", plan=edited, kept_steps=sorted(kept), problems=problems, **base)


async def _answer_to_proposal(bus: Bus, plan: ExecutionPlan, answer: str, verdict: ChoiceResult, pending: Approval,
                              risk_level: str, env: dict[str, str]) -> Approval:
    """The reply to "Run steps 1, 2, 4 — skip 3?": yes approves exactly that; no asks which steps."""
    base = {"modifications": pending.modifications, "results": [*pending.results, verdict],
            "excluded_steps": pending.excluded_steps}
    runnable = [s.step for s in plan.workflow if not isinstance(s, ErrorRecovery)]
    if verdict.selected_options == [1] and verdict.action == "execute" and not verdict.modifications:
        kept = pending.proposed_steps
        if kept == runnable:
            return Approval(decision="approved", plan=plan, kept_steps=kept, **base)
        return _partial(plan, kept, base)
    if verdict.selected_options == [2] and verdict.action == "execute":
        return Approval(decision="unclear", question=(
            "Then which steps should run? Name them (e.g. 'only 1 and 2'), or say 'cancel' to run nothing."),
            **{**base, "excluded_steps": pending.excluded_steps})
    # anything else is a new answer; the stated exclusions stay unless it names the steps to run
    fresh = await ask_approval(bus, plan, answer, risk_level=risk_level, pending=None, **env)
    if fresh.decision == "approved" and pending.excluded_steps:
        named = set(fresh.results[1].selected_options) if len(fresh.results) > 1 else set()
        if not set(pending.excluded_steps) <= named:
            kept = [k for k in runnable if k not in pending.excluded_steps]
            return Approval(decision="unclear", question=_proposal(kept, pending.excluded_steps),
                            proposed_steps=kept, **base)
    if fresh.decision == "unclear" and not fresh.excluded_steps and pending.excluded_steps:
        return msgspec.structs.replace(fresh, excluded_steps=pending.excluded_steps)
    return fresh


async def approve_plan(bus: Bus, plan: ExecutionPlan, approver: Approver, *, attempts: int = 3,
                       risk_level: str | None = None, correlation_id: str = "", conversation_id: str = "",
                       input_sizes: dict[int, int] | None = None, writes_file: bool = False) -> Approval:
    """Ask until the answer is clear (at most ``attempts`` answers), carrying each proposal to the next answer.

    Parameters
    ----------
    bus : Bus
    plan : ExecutionPlan
    approver : Approver
        ``async (question) -> answer``.
    attempts : int
    risk_level : str or None
        ``None``: :func:`assess_risk` from the plan's steps (``input_sizes``,
        ``writes_file`` feed its rules). A ``critical`` plan gets the note 001
        four-option question — 実行 run / 却下 reject / 代替案選択 choose the
        steps / 詳細確認 details — where "details" shows every step's command
        and parameters and asks again (not counted as an answer), and a clear
        "run" is confirmed once more.

    Returns
    -------
    Approval
        The last one; ``unclear`` when every answer was.

    Examples
    --------
    ::

        approval = await approve_plan(bus, plan, ask_on_stdin)
        if approval.decision in ("approved", "partial") and approval.plan is not None:
            run(approval.plan)
    """
    risk = Risk(level=risk_level) if risk_level else assess_risk(plan, input_sizes=input_sizes,  # type: ignore[arg-type]
                                                                 writes_file=writes_file)
    steps = "\n".join(f"  {s.step}. {describe_step(s)}" for s in plan.workflow)
    if risk.level == "critical":
        why = f" ({'; '.join(risk.reasons)})" if risk.reasons else ""
        question = (f"Plan (risk: critical{why}):\n{steps}\n"
                    "1. 実行 run it  2. 却下 reject  3. 代替案選択 choose the steps to run  4. 詳細確認 show details")
    else:
        question = f"Plan:\n{steps}\nApprove it? (yes / no / which steps, in your own words)"
    approval: Approval | None = None
    answered = shown = 0
    while answered < attempts:
        answer = await approver(question)
        if risk.level == "critical" and approval is None:
            if _DETAILS.match(answer) and shown < 3:
                shown += 1
                question = (f"Plan details:\n{plan_details(plan)}\n"
                            "1. 実行 run it  2. 却下 reject  3. 代替案選択 choose the steps to run")
                continue
            if _ALTERNATIVE.match(answer):
                answered += 1
                question = "Which steps should run? Name them (e.g. 'only 1 and 2', 'skip 3'), or say no."
                continue
            if answer.strip() in ("1", "１"):
                answer = "yes"
            elif answer.strip() in ("2", "２"):
                answer = "no"
        answered += 1
        approval = await ask_approval(bus, plan, answer, risk_level=risk.level, correlation_id=correlation_id,
                                      conversation_id=conversation_id,
                                      pending=approval)
        if approval.decision == "rejected" or approval.decision in ("approved", "partial") and approval.plan:
            return approval
        question = (("That leaves a plan that cannot run: " + "; ".join(approval.problems)
                     + "\nWhich steps should run?") if approval.problems else approval.question)
    assert approval is not None
    return approval
