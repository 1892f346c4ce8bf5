"""Messages: envelope, tagged unions, error paths and the plan's invariants."""

from __future__ import annotations

import json
from datetime import UTC

import msgspec
import pytest

from tandem.messages import (
    CompletionReply,
    ErrorReply,
    ExecuteRequest,
    ExecutionPlan,
    PlanReply,
    decode_error_path,
    decoder,
    encode,
    plan_json_schema,
    plan_json_schema_compact,
)
from tandem.messages.plan import BUILTIN_COMMANDS
from tandem.services.textcmd import command_names

GOOD = {
    "version": "1.0",
    "metadata": {"task_type": "text_conversion", "complexity": "medium", "estimated_steps": 4,
                 "fallback_strategy": "manual_conversion"},
    "workflow": [
        {"step": 1, "action": "read_input", "params": {"source": "fd:3", "type": "markdown"}},
        {"step": 2, "action": "spawn_command", "params": {"cmd": "sed", "args": ["s/^#/h1./g"], "input_fd": 3}},
        {"step": 3, "action": "manual_transform",
         "params": {"type": "text_processing", "operations": [{"from": "**bold**", "to": "*bold*"}]}},
        {"step": 4, "action": "write_output", "params": {"destination": "fd:1", "format": "textile"}},
    ],
}


def plan_with(**changes) -> dict:
    data = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        data[key] = value
    return data


def decode_plan_error(data: dict) -> tuple[str, str | None]:
    with pytest.raises(msgspec.ValidationError) as info:
        decoder(ExecutionPlan).decode(json.dumps(data))
    return decode_error_path(info.value)


def test_seed_example_plan_decodes() -> None:
    plan = decoder(ExecutionPlan).decode(json.dumps(GOOD))
    assert [s.__struct_config__.tag for s in plan.workflow] == [
        "read_input", "spawn_command", "manual_transform", "write_output"]
    assert plan.workflow[2].params.operations[0].from_ == "**bold**"
    # encoding gives the seed's JSON back (field "from", tag "action")
    assert json.loads(encode(plan)) == {
        **GOOD,
        "workflow": [
            {**GOOD["workflow"][0], "params": {**GOOD["workflow"][0]["params"], "expected_size": None}},
            {**GOOD["workflow"][1], "params": {**GOOD["workflow"][1]["params"], "output_fd": None, "pattern": None}},
            {**GOOD["workflow"][2], "params": {**GOOD["workflow"][2]["params"], "instructions": "",
                                               "input_fd": None, "output_fd": None, "context_fds": []}},
            {**GOOD["workflow"][3], "params": {**GOOD["workflow"][3]["params"], "input_fd": None}},
        ],
    }


def test_unknown_command_names_the_field() -> None:
    data = plan_with()
    data["workflow"][1]["params"]["cmd"] = "bash"
    text, path = decode_plan_error(data)
    assert path == "$.workflow[1].params.cmd"
    assert "bash" in text


def test_step_numbers_must_increase() -> None:
    data = plan_with()
    data["workflow"][2]["step"] = 2
    text, path = decode_plan_error(data)
    assert path == "$.workflow[2].step"
    assert "increase" in text


def test_input_fd_must_be_produced_earlier() -> None:
    data = plan_with()
    data["workflow"][1]["params"]["input_fd"] = 7
    _, path = decode_plan_error(data)
    assert path == "$.workflow[1].params.input_fd"


def test_output_fd_makes_a_buffer_available() -> None:
    data = plan_with()
    data["workflow"][1]["params"]["output_fd"] = 7
    data["workflow"][2]["params"]["input_fd"] = 7
    plan = decoder(ExecutionPlan).decode(json.dumps(data))
    assert plan.workflow[2].params.input_fd == 7


def test_branch_targets_must_exist_and_lie_ahead() -> None:
    data = plan_with()
    data["workflow"].insert(1, {"step": 2, "action": "conditional_branch",
                                "params": {"condition": {"kind": "empty"}, "then_step": 1}})
    for i, s in enumerate(data["workflow"][2:], start=3):
        s["step"] = i
    _, path = decode_plan_error(data)
    assert path == "$.workflow[1].params.then_step"
    data["workflow"][1]["params"]["then_step"] = 42
    _, path = decode_plan_error(data)
    assert path == "$.workflow[1].params.then_step"
    data["workflow"][1]["params"]["then_step"] = 5
    assert decoder(ExecutionPlan).decode(json.dumps(data)).workflow[1].params.then_step == 5


def test_context_fds_must_be_produced_earlier() -> None:
    data = plan_with()
    data["workflow"][2]["params"]["context_fds"] = [3, 9]
    _, path = decode_plan_error(data)
    assert path == "$.workflow[2].params.context_fds[1]"


def test_recovery_must_cover_real_steps() -> None:
    data = plan_with()
    data["workflow"].append({"step": 5, "action": "error_recovery", "params": {"covers": [9], "strategy": "skip"}})
    _, path = decode_plan_error(data)
    assert path == "$.workflow[4].params.covers[0]"


def test_plan_without_output_is_rejected() -> None:
    data = plan_with()
    data["workflow"] = data["workflow"][:3]
    text, path = decode_plan_error(data)
    assert path == "$.workflow"
    assert "write_output" in text


def test_unknown_fields_and_bounds_are_rejected() -> None:
    data = plan_with()
    data["workflow"][0]["params"]["path"] = "/etc/passwd"
    _, path = decode_plan_error(data)
    assert path == "$.workflow[0].params"
    data = plan_with()
    data["workflow"][0]["params"]["source"] = "/etc/passwd"
    _, path = decode_plan_error(data)
    assert path == "$.workflow[0].params.source"
    data = plan_with()
    data["workflow"][1]["params"]["args"] = ["x"] * 9
    _, path = decode_plan_error(data)
    assert path == "$.workflow[1].params.args"


def test_nested_plan_error_path_is_joined() -> None:
    bad = plan_with()
    bad["workflow"][1]["params"]["input_fd"] = 7
    payload = json.dumps({"type": "execute_request", "plan": bad})
    with pytest.raises(msgspec.ValidationError) as info:
        decoder(ExecuteRequest).decode(payload)
    assert decode_error_path(info.value)[1] == "$.plan.workflow[1].params.input_fd"


def test_envelope_defaults_and_tagged_reply_union() -> None:
    reply = CompletionReply(content="hi", model="m", provider="p", latency_ms=1.5)
    assert len(reply.correlation_id) == 32
    assert reply.sent_at.tzinfo is UTC
    data = encode(reply)
    assert json.loads(data)["type"] == "completion_reply"
    union = decoder(CompletionReply | ErrorReply)
    assert union.decode(data) == reply
    err = ErrorReply(code="bad_request", message="x", path="$.a", correlation_id=reply.correlation_id)
    assert union.decode(encode(err)) == err
    with pytest.raises(msgspec.ValidationError):
        decoder(PlanReply | ErrorReply).decode(data)  # a completion reply is not a plan reply


def test_plan_schema_is_generated_with_bounds() -> None:
    schema = plan_json_schema()
    defs = schema["$defs"]
    assert defs["SpawnCommandParams"]["properties"]["args"]["maxItems"] == 8
    assert set(defs["SpawnCommandParams"]["properties"]["cmd"]["enum"]) == set(BUILTIN_COMMANDS)
    assert defs["ExecutionPlan"]["properties"]["workflow"]["maxItems"] >= 8
    compact = json.dumps(plan_json_schema_compact())
    assert "$ref" not in compact and "description" not in compact
    assert '"maxLength"' in compact


def test_builtin_command_list_matches_the_implementation() -> None:
    assert set(BUILTIN_COMMANDS) == set(command_names())
