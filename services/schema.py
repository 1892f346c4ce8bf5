"""Tandem's subject catalogue as AsyncAPI 3.0 (and plain JSON Schema), from the message Structs.

One table, :func:`catalogue`, names every subject of :mod:`tandem.messages.subjects` with
the Struct it carries and, for request/reply, the Struct that answers. Everything else is
generated from the Structs with ``msgspec.json.schema_components``, so another team can
subscribe to Tandem without reading its code::

    tandem schema -o docs/                     # docs/asyncapi.yaml
    tandem schema --format jsonschema -o out/  # out/tandem-messages.schema.json

The operations are seen from Tandem's side (the AsyncAPI "application"): ``receive`` for the
subjects actors serve (with a ``reply`` for request/reply), ``send`` for the events they
publish. Every reply may also be an :class:`~tandem.messages.ErrorReply`.

The checked-in ``docs/asyncapi.yaml`` is compared with the generated document by the test
suite, so a message that changes without the catalogue being regenerated fails the build.
:func:`schema_hash` is the hash the actors put in their ``$SRV.INFO`` endpoint metadata.
A client calls :func:`check_schemas` to be warned when a running actor serves a subject with
another schema than its own messages (another release).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import re
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any, Literal

import msgspec

from tandem.messages import subjects

__all__ = ["ChannelSpec", "asyncapi_document", "catalogue", "jsonschema_document", "render", "schema_hash"]

log = logging.getLogger("tandem.schema")

ASYNCAPI_VERSION = "3.0.0"
ASYNCAPI_FILE = "asyncapi.yaml"
JSONSCHEMA_FILE = "tandem-messages.schema.json"


@cache
def schema_hash(tp: Any) -> str:
    """Return ``sha256:<hex>`` of the JSON Schema of ``tp`` (keys sorted, so stable).

    Two processes whose hashes differ for one endpoint disagree on its message schema.

    Examples
    --------
    >>> from tandem.messages import Ping
    >>> schema_hash(Ping).startswith("sha256:")
    True
    """
    text = msgspec.json.encode(_normalized(msgspec.json.schema(tp), keep_descriptions=False), order="sorted")
    return "sha256:" + hashlib.sha256(text).hexdigest()


def _normalized(value: Any, *, keep_descriptions: bool = True) -> Any:
    """Return a JSON Schema with docstring descriptions dedented (``inspect.cleandoc``) or dropped.

    msgspec releases differ in whether they dedent a Struct's docstring and in the order of ``anyOf``
    alternatives; normalizing both here makes the catalogue and the hashes the same under every
    msgspec the project allows. A docstring edit is no schema change, so the hash leaves descriptions out.
    """
    if isinstance(value, dict):
        out = {k: (inspect.cleandoc(v) if k == "description" and isinstance(v, str) else
                   _normalized(v, keep_descriptions=keep_descriptions))
               for k, v in value.items() if keep_descriptions or k != "description"}
        if isinstance(out.get("anyOf"), list):  # releases order the alternatives differently; the set is the same
            out["anyOf"] = sorted(out["anyOf"], key=lambda s: msgspec.json.encode(s, order="sorted"))
        return out
    if isinstance(value, list):
        return [_normalized(v, keep_descriptions=keep_descriptions) for v in value]
    return value


@dataclass(frozen=True)
class ChannelSpec:
    """One subject in the catalogue.

    Parameters
    ----------
    address : str
        The subject; ``{name}`` marks a parameter (``tandem.{actor}.ping``).
    payload : type
        Struct (or union) carried on the subject.
    action : {"receive", "send"}
        ``receive``: actors serve it; ``send``: actors publish it (events).
    reply : type or None
        Struct (or union) answering a request; ``None`` for one-way messages.
    description : str
    payload_name, reply_name : str
        Names for unions (a Struct is named after its class).
    parameters : dict
        Description of each ``{name}`` in ``address``.
    """

    address: str
    payload: Any
    action: Literal["receive", "send"]
    reply: Any = None
    description: str = ""
    payload_name: str = ""
    reply_name: str = ""
    parameters: dict[str, str] = field(default_factory=dict)


def _catalogue() -> tuple[ChannelSpec, ...]:
    from tandem.actors._base import DeadLetter
    from tandem.messages import (
        Ack,
        CancelWork,
        ChatReply,
        ChatSend,
        ChatSessionGet,
        ChatSessionReply,
        ChoiceReply,
        ChoiceRequest,
        CompletionReply,
        CompletionRequest,
        ContextAppend,
        ContextAppended,
        ContextDelete,
        ContextDeleted,
        ContextEntry,
        ContextExport,
        ContextExportReply,
        ContextGet,
        ContextHistory,
        ContextHistoryReply,
        ContextList,
        ContextListReply,
        ExecuteReply,
        ExecuteRequest,
        ModelContext,
        Ping,
        PlanReply,
        PlanRequest,
        Pong,
        RememberPlan,
        RoutingEvent,
        ShapeDecision,
        ShapeRequest,
        SharedGet,
        SharedReply,
        SharedUpdate,
        StepEvent,
        TaskAnswer,
        TaskAnswerReply,
        TaskCancel,
        TaskEvent,
        TaskGet,
        TaskList,
        TaskListReply,
        TaskReply,
        TaskSubmit,
    )
    from tandem.messages.recipes import (
        PLANNER_RECIPES,
        RecipeList,
        RecipeReply,
        RecipeRequest,
    )

    actor = {"actor": "Actor name (planner, router, executor, choice, task, context, chat)."}
    s = subjects
    rr = "receive"
    return (
        ChannelSpec(s.PLANNER_PLAN, PlanRequest, rr, PlanReply, "Plan a task: task → execution plan."),
        ChannelSpec(s.PLANNER_REMEMBER, RememberPlan, rr, Ack, "Store a plan that worked in the plan cache."),
        ChannelSpec(PLANNER_RECIPES, RecipeRequest, rr, RecipeList | RecipeReply | Ack, "List, show, add or remove recipes.",
                    payload_name="RecipeRequest", reply_name="RecipeAnswer"),
        ChannelSpec(s.ROUTER_COMPLETE, CompletionRequest, rr, CompletionReply,
                    "One LLM completion: tier → model, with fallback; the only way to a model provider."),
        ChannelSpec(s.ROUTER_SHAPE, ShapeRequest, rr, ShapeDecision, "Decide how a task is run (shape)."),
        ChannelSpec(s.EVENT_ROUTED, RoutingEvent, "send", description="Every routing decision and its usage."),
        ChannelSpec(s.EXECUTOR_EXECUTE, ExecuteRequest, rr, ExecuteReply, "Run the steps of an execution plan."),
        ChannelSpec(s.EVENT_STEP, StepEvent, "send", description="Progress of a plan step."),
        ChannelSpec(s.CHOICE_PARSE, ChoiceRequest, rr, ChoiceReply, "Free-text answer → choice."),
        ChannelSpec(s.EVENT_CHOICE, ChoiceReply, "send", description="Every parsed answer."),
        ChannelSpec(s.ping("{actor}"), Ping, rr, Pong, "Liveness of one actor (any replica answers).",
                    parameters=actor),
        ChannelSpec(s.CONTROL_CANCEL, CancelWork, rr, description="Drop in-flight work of a correlation id "
                    "(every replica of every actor; no queue group)."),
        ChannelSpec(s.TASK_SUBMIT, TaskSubmit, rr, description="Submit a task (JetStream stream "
                    f"{s.TASK_STREAM}; Nats-Msg-Id = task id)."),
        ChannelSpec(s.TASK_GET, TaskGet, rr, TaskReply, "State of one task."),
        ChannelSpec(s.TASK_LIST, TaskList, rr, TaskListReply, "Recent tasks."),
        ChannelSpec(s.TASK_CANCEL, TaskCancel, rr, TaskReply, "Cancel a task."),
        ChannelSpec(s.TASK_ANSWER, TaskAnswer, rr, TaskAnswerReply, "Answer a task's approval question."),
        ChannelSpec(s.task_answer_inbox("{task_id}"), TaskAnswer, rr, TaskAnswerReply,
                    "Approval answers, forwarded to the replica holding the task.",
                    parameters={"task_id": "Task id."}),
        ChannelSpec(s.TASK_CANCEL_SIGNAL, TaskCancel, rr,
                    description="Stop a task on whichever task replica holds it (no queue group)."),
        ChannelSpec(s.EVENT_TASK, TaskEvent, "send", description="Task lifecycle events.",
                    parameters={"kind": "Event kind (submitted, planned, awaiting_approval, step, succeeded, "
                                "failed, cancelled…).", "task_id": "Task id."}),
        ChannelSpec("tandem.events.dead_letter.{actor}", DeadLetter, "send",
                    description="One-way messages an actor could not decode or handle.", parameters=actor),
        ChannelSpec(s.CONTEXT_APPEND, ContextAppend, rr, ContextAppended, "Append to a conversation's history."),
        ChannelSpec(s.CONTEXT_GET, ContextGet, rr, ModelContext, "The context to give a model."),
        ChannelSpec(s.CONTEXT_HISTORY, ContextHistory, rr, ContextHistoryReply, "A conversation's history."),
        ChannelSpec(s.CONTEXT_LIST, ContextList, rr, ContextListReply, "Known conversations."),
        ChannelSpec(s.CONTEXT_DELETE, ContextDelete, rr, ContextDeleted, "Delete a conversation."),
        ChannelSpec(s.CONTEXT_EXPORT, ContextExport, rr, ContextExportReply, "Export a conversation."),
        ChannelSpec(s.CONTEXT_SHARED_GET, SharedGet, rr, SharedReply, "Shared context of a conversation."),
        ChannelSpec(s.CONTEXT_SHARED_UPDATE, SharedUpdate, rr, SharedReply, "Update the shared context."),
        ChannelSpec(s.history("{session}"), ContextEntry, "send",
                    description=f"History entries (JetStream stream {s.CONTEXT_STREAM}).",
                    parameters={"session": "Conversation id."}),
        ChannelSpec(s.CHAT_SEND, ChatSend, rr, ChatReply, "One chat message → answer or task hand-off."),
        ChannelSpec(s.CHAT_SESSION, ChatSessionGet, rr, ChatSessionReply, "State of a chat session."),
    )


@lru_cache(maxsize=1)
def catalogue() -> tuple[ChannelSpec, ...]:
    """Return every subject with its payload and reply, built on first use."""
    return _catalogue()


def _name(tp: Any, given: str) -> str:
    return given or getattr(tp, "__name__", None) or "Or".join(a.__name__ for a in tp.__args__)


def _channel_id(address: str) -> str:
    return address.removeprefix("tandem.").replace("{", "").replace("}", "").replace(".", "_")


def asyncapi_document(specs_in: Any = None) -> dict[str, Any]:
    """Return the AsyncAPI 3.0 document of ``catalogue`` (default :func:`catalogue`) as plain data.

    Returns
    -------
    dict
        ``asyncapi``, ``info``, ``defaultContentType``, ``channels``, ``operations`` and
        ``components`` (``messages`` and ``schemas``, refs as ``#/components/schemas/<Name>``).
    """
    from tandem.actors._base import VERSION
    from tandem.messages import ErrorReply

    specs = list(specs_in if specs_in is not None else catalogue())
    types: dict[str, Any] = {"ErrorReply": ErrorReply}
    for spec in specs:
        types.setdefault(_name(spec.payload, spec.payload_name), spec.payload)
        if spec.reply is not None:
            types.setdefault(_name(spec.reply, spec.reply_name), spec.reply)
    names = sorted(types)
    top, schemas = msgspec.json.schema_components([types[n] for n in names],
                                                  ref_template="#/components/schemas/{name}")
    top, schemas = _normalized(list(top)), _normalized(schemas)
    messages: dict[str, Any] = {}
    for name, schema in zip(names, top):
        if "$ref" not in schema or schema["$ref"].rsplit("/", 1)[1] != name:
            schemas.setdefault(name, schema)  # a union: name it
            schema = {"$ref": f"#/components/schemas/{name}"}
        messages[name] = {"name": name, "title": name, "contentType": "application/json", "payload": schema}

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for spec in specs:
        cid = _channel_id(spec.address)
        pname = _name(spec.payload, spec.payload_name)
        channel: dict[str, Any] = {"address": spec.address,
                                   "messages": {pname: {"$ref": f"#/components/messages/{pname}"}}}
        if spec.description:
            channel["description"] = spec.description
        if spec.parameters:
            channel["parameters"] = {k: {"description": v} for k, v in spec.parameters.items()}
        channels[cid] = channel
        op: dict[str, Any] = {"action": spec.action, "channel": {"$ref": f"#/channels/{cid}"},
                              "messages": [{"$ref": f"#/channels/{cid}/messages/{pname}"}]}
        if spec.reply is not None:
            rname = _name(spec.reply, spec.reply_name)
            rid = f"{cid}_reply"
            channels[rid] = {"address": None, "description": f"Reply inbox of {spec.address} (the request's "
                             "NATS reply subject).",
                             "messages": {rname: {"$ref": f"#/components/messages/{rname}"},
                                          "ErrorReply": {"$ref": "#/components/messages/ErrorReply"}}}
            op["reply"] = {"channel": {"$ref": f"#/channels/{rid}"},
                           "messages": [{"$ref": f"#/channels/{rid}/messages/{rname}"},
                                        {"$ref": f"#/channels/{rid}/messages/ErrorReply"}]}
        operations[f"{spec.action}_{cid}"] = op
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {"title": "Tandem", "version": VERSION,
                 "description": "Tandem's actors over NATS: request/reply subjects served in queue groups "
                                "named tandem.<actor>, and events under tandem.events.>. Generated by "
                                "`tandem schema`; do not edit by hand."},
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": dict(sorted(schemas.items()))},
    }


def jsonschema_document(specs_in: Any = None) -> dict[str, Any]:
    """Return one JSON Schema (2020-12) with every message Struct under ``$defs``."""
    components = asyncapi_document(specs_in)["components"]
    text = msgspec.json.encode(components["schemas"]).replace(b"#/components/schemas/", b"#/$defs/")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "Tandem messages",
            "$defs": msgspec.json.decode(text)}


def render(fmt: Literal["asyncapi", "jsonschema"] = "asyncapi") -> tuple[str, str]:
    """Return ``(file name, text)`` of the catalogue in ``fmt``.

    Raises
    ------
    ValueError
        When ``fmt`` is unknown.
    """
    if fmt == "asyncapi":
        import yaml

        body = yaml.safe_dump(asyncapi_document(), sort_keys=False, allow_unicode=True, width=100)
        return ASYNCAPI_FILE, "# Generated by `tandem schema -o docs/`: do not edit by hand.\n" + body
    if fmt == "jsonschema":
        return JSONSCHEMA_FILE, msgspec.json.format(msgspec.json.encode(jsonschema_document()), indent=2).decode() + "\n"
    raise ValueError(f"unknown schema format {fmt!r} (asyncapi, jsonschema)")


@dataclass(frozen=True)
class SchemaMismatch:
    """An actor instance whose endpoint schema differs from this process's messages."""

    actor: str
    instance_id: str
    version: str
    subject: str
    theirs: str
    ours: str


def _local_hashes() -> list[tuple[re.Pattern[str], str]]:
    return [(re.compile(re.sub(r"\\\{[a-z_]+\\\}", r"[^.]+", re.escape(spec.address)) + "$"),
             schema_hash(spec.payload)) for spec in catalogue()]


async def check_schemas(bus: Any, *, wait: float = 0.5) -> list[SchemaMismatch]:
    """Ask every actor for ``$SRV.INFO`` and warn about endpoints whose schema hash differs from ours.

    A client calls this before talking to a deployment it did not start (other replicas may
    run another version of Tandem). Endpoints outside the catalogue are not compared.

    Parameters
    ----------
    bus : Bus
        Connected bus.
    wait : float
        Seconds to gather replies for.

    Returns
    -------
    list of SchemaMismatch
        One per differing endpoint and instance (each also logged as a warning).
    """
    import anyio

    nc = bus.nc
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    infos: list[dict[str, Any]] = []
    try:
        await nc.publish("$SRV.INFO", b"", reply=inbox)
        with anyio.move_on_after(wait):
            async for msg in sub.messages:
                try:
                    infos.append(json.loads(msg.data))
                except ValueError:
                    log.warning("undecodable $SRV.INFO reply: %r", msg.data[:200])
    finally:
        await bus.unsubscribe(sub)
    local = _local_hashes()
    found: list[SchemaMismatch] = []
    for info in infos:
        for ep in info.get("endpoints") or ():
            theirs = (ep.get("metadata") or {}).get("schema")
            ours = next((h for pattern, h in local if pattern.match(ep.get("subject", ""))), None)
            if theirs and ours and theirs != ours:
                m = SchemaMismatch(info.get("name", "?"), info.get("id", "?"), info.get("version", "?"),
                                   ep["subject"], theirs, ours)
                log.warning("%s %s (version %s) has another schema on %s than this client: %s != %s; "
                            "messages may be refused", m.actor, m.instance_id, m.version, m.subject, theirs, ours)
                found.append(m)
    return found
