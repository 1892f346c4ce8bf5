"""The intermediate language v1.0: an :class:`ExecutionPlan`.

Source: design note ``000`` ("Intermediate Language Design"). A planner model
emits this JSON; the executor runs it. The JSON Schema handed to models as
structured output is generated from these Structs (:func:`plan_json_schema`),
never written by hand, and its ``maxLength``/``maxItems`` bounds keep a
grammar-constrained small model from rambling.

Data model
----------
The executor keeps numbered text buffers ("fds") and a *current text*:

* ``fd:0`` is the user's stdin, ``fd:3``, ``fd:4`` … are the ``--input`` files
  in the order given (``fd:1`` is the output, ``fd:2`` is reserved).
* ``read_input`` loads one of those into the current text.
* every other step reads ``input_fd`` if given, else the current text, and its
  result becomes the current text (and buffer ``output_fd`` if given).

Invariants checked on decode (``__post_init__``):

* step numbers are unique and strictly increasing;
* every ``input_fd`` is produced by an earlier ``read_input`` or ``output_fd``;
* ``conditional_branch`` targets exist and lie ahead (so every plan terminates);
* ``error_recovery`` covers existing, non-recovery steps;
* at least one ``write_output`` exists (a plan that outputs nothing is unusable).
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

__all__ = [
    "BUILTIN_COMMANDS",
    "Condition",
    "ConditionalBranch",
    "ConditionalBranchParams",
    "ErrorRecovery",
    "ErrorRecoveryParams",
    "ExecutionPlan",
    "ManualTransform",
    "ManualTransformParams",
    "Operation",
    "PLAN_VERSION",
    "PlanMetadata",
    "ReadInput",
    "ReadInputParams",
    "SpawnCommand",
    "SpawnCommandParams",
    "Step",
    "WorkflowStep",
    "WriteOutput",
    "WriteOutputParams",
    "plan_json_schema",
    "plan_json_schema_compact",
]

PLAN_VERSION = "1.0"
MAX_STEPS = 24

BUILTIN_COMMANDS = ("cat", "cut", "grep", "head", "nl", "pandoc", "paste", "rev", "sed", "sort", "tac", "tail", "tr",
                    "uniq", "wc")
"""Commands ``spawn_command`` may name (implemented in :mod:`tandem.services.textcmd`).

``pandoc`` (document conversion) needs the ``pypandoc-binary`` wheel; the
planner offers only :func:`tandem.services.textcmd.available_commands`.
"""

Short = Annotated[str, Meta(max_length=64)]
Arg = Annotated[str, Meta(max_length=120)]
Text = Annotated[str, Meta(max_length=400)]
StepNo = Annotated[int, Meta(ge=1, le=99)]
Fd = Annotated[int, Meta(ge=0, le=99)]
FdRef = Annotated[str, Meta(pattern=r"^fd:[0-9]{1,2}$", max_length=5)]


class _Params(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class ReadInputParams(_Params, frozen=True, kw_only=True):
    """Parameters of ``read_input``.

    Parameters
    ----------
    source : str
        ``"fd:0"`` (stdin) or ``"fd:3"``, ``"fd:4"`` … (the ``--input`` files in order).
        A plan can only name inputs the user gave; never a path.
    type : str
        What the input is, e.g. ``"markdown"`` (informational).
    expected_size : {"small", "medium", "large"} or None
        Informational size hint.
    """

    source: FdRef
    type: Short = "text"
    expected_size: Literal["small", "medium", "large"] | None = None


class SpawnCommandParams(_Params, frozen=True, kw_only=True):
    """Parameters of ``spawn_command``: one built-in text command.

    Parameters
    ----------
    cmd : str
        One of :data:`BUILTIN_COMMANDS`. Never a shell; never a subprocess,
        except ``pandoc`` (sandboxed, see :mod:`tandem.services.convert`).
    args : list of str
        argv after the command name, e.g. ``["-E", "s/^# (.*)/h1. \\\\1/"]``.
    input_fd, output_fd : int or None
        Buffer to read instead of the current text / buffer to also store into.
    pattern : str or None
        A label for what the step does (informational).
    """

    cmd: Literal[BUILTIN_COMMANDS]  # type: ignore[valid-type]
    args: Annotated[list[Arg], Meta(max_length=8)] = []
    input_fd: Fd | None = None
    output_fd: Fd | None = None
    pattern: Short | None = None


class Operation(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One example rewrite for ``manual_transform``: ``{"from": ..., "to": ...}``."""

    from_: Annotated[str, Meta(max_length=80)] = msgspec.field(name="from")
    to: Annotated[str, Meta(max_length=80)]


class ManualTransformParams(_Params, frozen=True, kw_only=True):
    """Parameters of ``manual_transform``: an execution-tier LLM rewrite.

    Parameters
    ----------
    type : str
        Kind of transform, e.g. ``"text_processing"``.
    instructions : str
        What the model must do with the text.
    operations : list of Operation
        Example rewrites (``from`` → ``to``).
    input_fd, output_fd : int or None
        As for ``spawn_command``.
    context_fds : list of int
        Further buffers shown to the model as context (e.g. the other inputs
        of a task with several); each must be produced by an earlier step.
    """

    type: Short = "text_processing"
    instructions: Text = ""
    operations: Annotated[list[Operation], Meta(max_length=12)] = []
    input_fd: Fd | None = None
    output_fd: Fd | None = None
    context_fds: Annotated[list[Fd], Meta(max_length=8)] = []


class WriteOutputParams(_Params, frozen=True, kw_only=True):
    """Parameters of ``write_output``.

    Parameters
    ----------
    destination : {"fd:1", "fd:2"}
        ``fd:1`` is the task's output (stdout, or the user's ``--output`` file);
        ``fd:2`` is diagnostics (stderr).
    format : str
        Informational, e.g. ``"textile"``.
    input_fd : int or None
        Buffer to write instead of the current text.
    """

    destination: Literal["fd:1", "fd:2"] = "fd:1"
    format: Short = "text"
    input_fd: Fd | None = None


class Condition(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A test on a text.

    Parameters
    ----------
    kind : {"contains", "matches", "empty", "not_empty", "line_count_gt"}
        ``contains`` is a substring test, ``matches`` a Python regex search,
        ``line_count_gt`` compares the number of lines with ``int(value)``.
    value : str
        The operand (unused for ``empty``/``not_empty``).
    """

    kind: Literal["contains", "matches", "empty", "not_empty", "line_count_gt"]
    value: Arg = ""


class ConditionalBranchParams(_Params, frozen=True, kw_only=True):
    """Parameters of ``conditional_branch``.

    Parameters
    ----------
    condition : Condition
        Evaluated on ``input_fd`` or the current text.
    then_step : int
        Step to jump to when true; must lie ahead.
    else_step : int or None
        Step to jump to when false (``None``: the next step); must lie ahead.
    input_fd : int or None
        Buffer to test instead of the current text.
    """

    condition: Condition
    then_step: StepNo
    else_step: StepNo | None = None
    input_fd: Fd | None = None


class ErrorRecoveryParams(_Params, frozen=True, kw_only=True):
    """Parameters of ``error_recovery``: a handler, skipped in normal flow.

    Parameters
    ----------
    covers : list of int
        Steps whose failure this handler takes over.
    strategy : {"retry", "skip", "manual_transform", "abort"}
        ``retry`` reruns the failed step up to ``max_retries`` times, ``skip``
        keeps the current text and moves on, ``manual_transform`` asks the
        execution-tier model to do the failed step's job with ``instructions``,
        ``abort`` fails the task with the step's error.
    max_retries : int
        For ``retry``, 1–3.
    instructions : str
        For ``manual_transform``.
    """

    covers: Annotated[list[StepNo], Meta(min_length=1, max_length=MAX_STEPS)]
    strategy: Literal["retry", "skip", "manual_transform", "abort"] = "skip"
    max_retries: Annotated[int, Meta(ge=1, le=3)] = 1
    instructions: Text = ""


class Step(msgspec.Struct, frozen=True, kw_only=True, tag_field="action", forbid_unknown_fields=True):
    """Base of the six workflow steps; ``action`` is the tag.

    Parameters
    ----------
    step : int
        1-based step number, strictly increasing through the workflow.
    """

    step: StepNo


class ReadInput(Step, frozen=True, kw_only=True, tag="read_input"):
    """``read_input``: load a user-given input into the current text."""

    params: ReadInputParams


class SpawnCommand(Step, frozen=True, kw_only=True, tag="spawn_command"):
    """``spawn_command``: run a built-in text command on the text."""

    params: SpawnCommandParams


class ManualTransform(Step, frozen=True, kw_only=True, tag="manual_transform"):
    """``manual_transform``: an execution-tier LLM rewrite of the text."""

    params: ManualTransformParams = ManualTransformParams()


class WriteOutput(Step, frozen=True, kw_only=True, tag="write_output"):
    """``write_output``: emit the text as the task's output."""

    params: WriteOutputParams = WriteOutputParams()


class ConditionalBranch(Step, frozen=True, kw_only=True, tag="conditional_branch"):
    """``conditional_branch``: jump ahead depending on a condition."""

    params: ConditionalBranchParams


class ErrorRecovery(Step, frozen=True, kw_only=True, tag="error_recovery"):
    """``error_recovery``: what to do when covered steps fail."""

    params: ErrorRecoveryParams


WorkflowStep = ReadInput | SpawnCommand | ManualTransform | WriteOutput | ConditionalBranch | ErrorRecovery


class PlanMetadata(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Plan metadata (design note 000).

    Parameters
    ----------
    task_type : str
        e.g. ``"text_conversion"``.
    complexity : {"low", "medium", "high"}
    estimated_steps : int
    fallback_strategy : {"manual_conversion", "single_stage", "abort"}
        What to do when execution fails: ``manual_conversion`` and
        ``single_stage`` both rerun the task as one execution-tier call.
    """

    task_type: Short = "general"
    complexity: Literal["low", "medium", "high"] = "medium"
    estimated_steps: Annotated[int, Meta(ge=1, le=MAX_STEPS)] = 1
    fallback_strategy: Literal["manual_conversion", "single_stage", "abort"] = "manual_conversion"


def _invalid(message: str, where: str) -> ValueError:
    # msgspec turns a ValueError from __post_init__ into a ValidationError and
    # appends the struct's own path; the "[at ...]" suffix carries the path
    # inside the plan so decode_error_path can join the two.
    return ValueError(f"{message} [at {where}]")


class ExecutionPlan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A versioned execution plan (intermediate language v1.0, design note 000).

    Parameters
    ----------
    version : "1.0"
    metadata : PlanMetadata
    workflow : list of WorkflowStep
        1–24 steps, tagged by ``action``.

    Raises
    ------
    ValueError
        On construction, when an invariant listed in the module docstring is
        broken (``msgspec.ValidationError`` when decoding).

    Examples
    --------
    >>> plan = ExecutionPlan(workflow=[
    ...     ReadInput(step=1, params=ReadInputParams(source="fd:3")),
    ...     WriteOutput(step=2)])
    >>> plan.workflow[1].params.destination
    'fd:1'
    """

    version: Literal["1.0"] = PLAN_VERSION
    metadata: PlanMetadata = PlanMetadata()
    workflow: Annotated[list[WorkflowStep], Meta(min_length=1, max_length=MAX_STEPS)]

    def __post_init__(self) -> None:
        # runs on every decode of a plan (several per task): where an error is, is formatted only for an error
        workflow = self.workflow
        numbers: set[int] | None = None  # built when a branch or recovery step needs it
        recovery: set[int] | None = None
        produced: set[int] = set()
        previous = 0
        writes = False
        for i, s in enumerate(workflow):
            if s.step <= previous:
                raise _invalid(f"step numbers must increase: {s.step} follows {previous}", f"workflow[{i}].step")
            previous = s.step
            p = s.params
            fd = getattr(p, "input_fd", None)
            if fd is not None and fd not in produced:
                raise _invalid(f"input_fd {fd} is not produced by an earlier step", f"workflow[{i}].params.input_fd")
            for j, extra in enumerate(getattr(p, "context_fds", ())):
                if extra not in produced:
                    raise _invalid(f"context fd {extra} is not produced by an earlier step",
                                   f"workflow[{i}].params.context_fds[{j}]")
            match s:
                case ReadInput():
                    produced.add(int(p.source[3:]))
                case WriteOutput():
                    writes = True
                case ConditionalBranch():
                    if numbers is None:
                        numbers = {x.step for x in workflow}
                    for name in ("then_step", "else_step"):
                        target = getattr(p, name)
                        if target is not None and (target not in numbers or target <= s.step):
                            raise _invalid(
                                f"{name} {target} must name a later step of this plan", f"workflow[{i}].params.{name}"
                            )
                case ErrorRecovery():
                    if numbers is None:
                        numbers = {x.step for x in workflow}
                    if recovery is None:
                        recovery = {x.step for x in workflow if isinstance(x, ErrorRecovery)}
                    for j, target in enumerate(p.covers):
                        if target not in numbers or target in recovery:
                            raise _invalid(
                                f"covers step {target}, which is not a non-recovery step of this plan",
                                f"workflow[{i}].params.covers[{j}]",
                            )
            out = getattr(p, "output_fd", None)
            if out is not None:
                produced.add(out)
        if not writes:
            raise _invalid("the plan has no write_output step, so it would produce nothing", "workflow")

    def step_index(self) -> dict[int, int]:
        """Return ``{step number: index in workflow}``."""
        return {s.step: i for i, s in enumerate(self.workflow)}


@functools.cache
def plan_json_schema() -> dict[str, Any]:
    """Return the JSON Schema of :class:`ExecutionPlan`, generated by msgspec.

    Returns
    -------
    dict
        A JSON Schema (draft 2020-12 style, ``$defs`` + ``$ref``) with the
        ``maxLength``/``maxItems`` bounds of the Structs. Do not mutate it.
    """
    return msgspec.json.schema(ExecutionPlan)


def _compact(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if ref is not None:
            return _compact(defs[ref.removeprefix("#/$defs/")], defs)
        if node.get("type") == "integer" and "minimum" in node and "maximum" in node:
            low, high = node["minimum"], node["maximum"]
            if high - low <= 100:  # same set of values, but a grammar can enforce an enum
                return {"enum": list(range(low, high + 1))}
        return {
            k: _compact(v, defs)
            for k, v in node.items()
            if k not in ("title", "description", "$defs", "discriminator")
        }
    if isinstance(node, list):
        return [_compact(v, defs) for v in node]
    return node


@functools.cache
def plan_json_schema_compact() -> dict[str, Any]:
    """Return :func:`plan_json_schema` inlined, without titles and descriptions.

    This is what goes to models as structured output: the docstrings are for
    people, and a small model's context is precious. ``$ref``s are inlined
    (the plan has no recursion) because llama.cpp's grammar converter does not
    resolve ``$ref``s nested inside ``$defs``; small integer ranges become
    ``enum``s, which that converter enforces (it ignores ``minimum``/``maximum``).
    """
    full = plan_json_schema()
    return _compact(full, full["$defs"])
