"""The AsyncAPI catalogue: generated from the messages, checked in, valid in shape, complete."""

from __future__ import annotations

from pathlib import Path

import msgspec
import yaml

from tandem.messages import Ping, subjects
from tandem.messages.recipes import PLANNER_RECIPES
from tandem.services.schema import (
    asyncapi_document,
    catalogue,
    jsonschema_document,
    render,
    schema_hash,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_checked_in_catalogue_matches_the_messages() -> None:
    name, text = render("asyncapi")
    checked_in = (DOCS / name).read_text(encoding="utf-8")
    assert checked_in == text, (
        "docs/asyncapi.yaml is stale: a message or subject changed. Regenerate it with `tandem schema -o docs/`.")


def _resolve(doc: dict, ref: str) -> object:
    assert ref.startswith("#/"), ref
    node: object = doc
    for part in ref[2:].split("/"):
        assert isinstance(node, dict) and part in node, f"dangling $ref {ref}"
        node = node[part]
    return node


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_document_is_asyncapi_3_in_shape() -> None:
    doc = yaml.safe_load(render("asyncapi")[1])
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    channels, operations = doc["channels"], doc["operations"]
    assert channels and operations
    for cid, channel in channels.items():
        assert set(channel) <= {"address", "messages", "description", "parameters"}, cid
        for param in channel.get("parameters", {}):
            assert "{" + param + "}" in channel["address"], (cid, param)
        for msg in channel["messages"].values():
            assert msg["$ref"].startswith("#/components/messages/")
    for oid, op in operations.items():
        assert op["action"] in ("send", "receive"), oid
        channel_ref = op["channel"]["$ref"]
        assert channel_ref.startswith("#/channels/") and _resolve(doc, channel_ref)
        for msg in op["messages"]:  # operation messages belong to the operation's channel
            assert msg["$ref"].startswith(channel_ref + "/messages/"), (oid, msg)
        if "reply" in op:
            reply_ref = op["reply"]["channel"]["$ref"]
            for msg in op["reply"]["messages"]:
                assert msg["$ref"].startswith(reply_ref + "/messages/"), (oid, msg)
    for ref in _refs(doc):  # every reference resolves
        _resolve(doc, ref)
    for name, message in doc["components"]["messages"].items():
        assert message["payload"] and message["contentType"] == "application/json", name


def test_request_reply_operations_and_events() -> None:
    doc = asyncapi_document()
    plan = doc["operations"]["receive_planner_plan"]
    assert doc["channels"]["planner_plan"]["address"] == subjects.PLANNER_PLAN
    assert [m["$ref"].rsplit("/", 1)[1] for m in plan["reply"]["messages"]] == ["PlanReply", "ErrorReply"]
    assert doc["operations"]["send_events_task_kind_task_id"]["action"] == "send"
    assert doc["channels"]["events_task_kind_task_id"]["address"] == subjects.EVENT_TASK
    schema = doc["components"]["schemas"]["PlanRequest"]
    assert schema["type"] == "object" and "correlation_id" in schema["properties"]


def test_every_subject_constant_is_in_the_catalogue() -> None:
    addresses = {spec.address for spec in catalogue()}
    constants = {v for k, v in vars(subjects).items()
                 if k.isupper() and isinstance(v, str) and v.startswith("tandem.") and not v.endswith(">")}
    missing = (constants | {PLANNER_RECIPES}) - addresses
    assert not missing, f"subjects missing from services/schema.py's catalogue: {sorted(missing)}"


def test_jsonschema_format_and_schema_hash() -> None:
    doc = jsonschema_document()
    assert "PlanRequest" in doc["$defs"]
    assert b"#/components/" not in msgspec.json.encode(doc)
    assert schema_hash(Ping) == schema_hash(Ping) and schema_hash(Ping).startswith("sha256:")
    assert schema_hash(Ping) != schema_hash(Ping | None)
