"""Tandem's typed messages: envelope, flows, the execution plan and subjects.

Every message is a frozen, keyword-only msgspec Struct carrying the envelope
(``correlation_id``, ``conversation_id``, ``sent_at``) and a ``type`` tag.
"""

from . import subjects
from ._base import ErrorReply, Message, decode_error_path, new_id, utcnow
from ._codec import decoder, encode
from .choice import ChoiceContext, ChoiceReply, ChoiceRequest, ChoiceResult
from .control import Ping, PingReply, Pong
from .execution import ExecuteReply, ExecuteRequest, ExecutorReply, Output, StepEvent, StepOutcome, TaskEvent
from .plan import (
    ConditionalBranch,
    ErrorRecovery,
    ExecutionPlan,
    ManualTransform,
    PlanMetadata,
    ReadInput,
    SpawnCommand,
    WorkflowStep,
    WriteOutput,
    plan_json_schema,
    plan_json_schema_compact,
)
from .planning import Ack, InputInfo, PlannerReply, PlanReply, PlanRequest, RememberPlan
from .routing import (
    Attempt,
    ChatMessage,
    CompletionReply,
    CompletionRequest,
    RouterReply,
    RoutingEvent,
    ShapeDecision,
    ShapeRequest,
    TokenUsage,
)

__all__ = [
    "ChoiceContext",
    "ChoiceReply",
    "ChoiceRequest",
    "ChoiceResult",
    "Attempt",
    "RoutingEvent",
    "ShapeDecision",
    "ShapeRequest",
    "Ack",
    "ChatMessage",
    "CompletionReply",
    "CompletionRequest",
    "ConditionalBranch",
    "ErrorRecovery",
    "ErrorReply",
    "ExecuteReply",
    "ExecuteRequest",
    "ExecutionPlan",
    "ExecutorReply",
    "InputInfo",
    "ManualTransform",
    "Message",
    "Output",
    "Ping",
    "PingReply",
    "PlanMetadata",
    "PlanReply",
    "PlanRequest",
    "PlannerReply",
    "Pong",
    "ReadInput",
    "RememberPlan",
    "RouterReply",
    "SpawnCommand",
    "StepEvent",
    "StepOutcome",
    "TaskEvent",
    "TokenUsage",
    "WorkflowStep",
    "WriteOutput",
    "decode_error_path",
    "decoder",
    "encode",
    "new_id",
    "plan_json_schema",
    "plan_json_schema_compact",
    "subjects",
    "utcnow",
]
