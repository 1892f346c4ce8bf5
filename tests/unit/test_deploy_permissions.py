"""Permissions derived from the actors' declarations, and the secure config that carries them."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
from tandem.actors import ACTORS
from tandem.messages import subjects
from tandem.messages.recipes import PLANNER_RECIPES
from tandem.services.bus import find_nats_server
from tandem.services.config import Config
from tandem.services.deploy import Topology, render
from tandem.services.deploy._permissions import (
    actor_permissions,
    admin_permissions,
    client_permissions,
    parse_jetstream,
    subject_matches,
    user_permissions,
)


def test_secure_render_writes_private_seeds_and_a_config_the_server_accepts(tmp_path: Path) -> None:
    deployment = render(Topology(port=0, cluster=3), tmp_path)
    assert set(deployment.credentials) == {*ACTORS, "client", "admin"}
    creds = tmp_path / "creds"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o700
    text = Path(deployment.nodes[0].config_path).read_text()
    for user, path in deployment.credentials.items():
        seed = Path(path).read_text().strip()
        assert seed.startswith("SU") and stat.S_IMODE(Path(path).stat().st_mode) == 0o600
        import nkeys

        assert nkeys.from_seed(seed.encode()).public_key.decode() in text, user
    assert "allow_responses" in text and "authorization" in text
    for node in deployment.nodes:
        done = subprocess.run([find_nats_server(), "-t", "-c", node.config_path], check=False, capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0, done.stderr + done.stdout
    client_env = (tmp_path / "client.env").read_text()
    assert f"TANDEM_NATS_CREDS={deployment.credentials['client']}\n" in client_env
    assert "TANDEM_NATS_INBOX_PREFIX=_INBOX\n" in client_env
    env = deployment.env_for("router", "router.1")
    assert env["TANDEM_NATS_CREDS"] == deployment.credentials["router"]
    assert env["TANDEM_NATS_INBOX_PREFIX"] == "_INBOX_router"


def test_rendering_again_rotates_every_credential(tmp_path: Path) -> None:
    first = {u: Path(p).read_text() for u, p in render(Topology(port=0), tmp_path).credentials.items()}
    second = {u: Path(p).read_text() for u, p in render(Topology(port=0), tmp_path).credentials.items()}
    assert all(first[u] != second[u] for u in first)


def test_the_client_may_use_the_public_endpoints_and_nothing_else() -> None:
    client = client_permissions()
    for subject in (subjects.TASK_SUBMIT, subjects.TASK_GET, subjects.TASK_LIST, subjects.TASK_CANCEL,
                    subjects.TASK_ANSWER, subjects.CHAT_SEND, subjects.CHAT_SESSION, subjects.CHOICE_PARSE,
                    "$SRV.PING", "$SRV.STATS.router", "$JS.API.DIRECT.GET.KV_tandem_tasks.$KV.tandem_tasks.t1"):
        assert client.may_publish(subject), subject
    for subject in (subjects.EXECUTOR_EXECUTE, subjects.ROUTER_COMPLETE, subjects.PLANNER_PLAN,
                    subjects.PLANNER_REMEMBER, "tandem.planner.recipes", subjects.EVENT_STEP,
                    subjects.event_task("succeeded", "x"), "tandem.task.answer.x", "tandem.task.checkpoint.a.b",
                    "$KV.tandem_plans.f00", "$KV.tandem_tasks.x", "$JS.API.STREAM.DELETE.TANDEM_TASKS",
                    "$JS.API.STREAM.PURGE.OBJ_tandem_task_data", "$JS.API.CONSUMER.MSG.NEXT.TANDEM_TASKS.tandem_task",
                    "$O.tandem_task_data.C.x", "$O.tandem_task_data.M.eA",
                    "tandem.history.s1", subjects.CONTROL_CANCEL):
        assert not client.may_publish(subject), subject
    assert client.may_subscribe("tandem.events.>") and client.may_subscribe("_INBOX.abc.*")
    # task states as they are written (it may read them anyway), no other bucket's values
    assert client.may_subscribe("$KV.tandem_tasks.t1") and not client.may_subscribe("$KV.tandem_plans.f00")
    assert not client.may_subscribe("_INBOX_router.abc.*") and not client.may_subscribe("_INBOX_task.>")
    for subject in ("tandem.router.>", subjects.EXECUTOR_EXECUTE, ">", "_INBOX_router.>",
                    "tandem.task.answer.*", "$KV.>"):
        assert not client.may_subscribe(subject), subject
    assert client.responses_expire_s == 0


def test_an_actor_subscribes_to_its_own_subjects_only() -> None:
    router = actor_permissions("router")
    assert router.may_subscribe(subjects.ROUTER_COMPLETE) and router.may_subscribe("$SRV.PING.router")
    assert not router.may_subscribe(subjects.EXECUTOR_EXECUTE) and not router.may_subscribe("$SRV.PING.executor")
    assert not router.may_subscribe("_INBOX.>") and router.may_subscribe("_INBOX_router.x.*")
    assert router.may_publish(subjects.EVENT_ROUTED) and not router.may_publish(subjects.EVENT_STEP)
    assert router.may_publish("$KV.tandem_router_cooldown.x") and not router.may_publish("$KV.tandem_plans.x")
    planner = actor_permissions("planner")
    assert planner.may_publish("$KV.tandem_plans.f00") and not planner.may_publish(subjects.EXECUTOR_EXECUTE)
    # the task actor caches the plans that ran (fingerprint keys), not recipes, and no longer asks the planner to
    task = actor_permissions("task")
    assert task.may_publish("$KV.tandem_plans.f00") and not task.may_publish("$KV.tandem_plans.recipe.x")
    assert not task.may_publish("$KV.tandem_plans.recipes.shipped") and not task.may_publish(subjects.PLANNER_REMEMBER)
    assert not any(p.startswith(("$JS.API.STREAM.CREATE.KV_tandem_plans", "$JS.API.STREAM.PURGE.KV_tandem_plans",
                                 "$JS.API.STREAM.DELETE.KV_tandem_plans")) for p in task.publish)
    assert planner.responses_expire_s >= Config().nats.request_timeout_s


def test_bucket_names_come_from_the_config() -> None:
    config = Config(plan_cache_bucket="other_plans")
    planner = actor_permissions("planner", config)
    assert planner.may_publish("$KV.other_plans.x") and not planner.may_publish("$KV.tandem_plans.x")


def test_every_declaration_parses_and_public_subjects_are_served() -> None:
    users = user_permissions()
    assert set(users) == {*ACTORS, "client", "admin"}
    for cls in ACTORS.values():
        for text in getattr(cls, "jetstream", ()):
            parse_jetstream(text, Config())
    with pytest.raises(ValueError):
        parse_jetstream("bucket x")
    with pytest.raises(ValueError):
        parse_jetstream("kv x.y")
    assert parse_jetstream("kv x write *").keys == "*" and parse_jetstream("kv x write").keys == ">"
    for bad in ("kv x read *", "objects x write *", "kv x write a..b", "kv x write >.a", "kv x write * y"):
        with pytest.raises(ValueError):
            parse_jetstream(bad)


def test_admin_is_a_client_that_also_manages_recipes_and_the_plan_cache() -> None:
    config = Config(plan_cache_bucket="other_plans")
    client, admin = client_permissions(config), admin_permissions(config)
    assert set(client.publish) < set(admin.publish) and admin.subscribe == client.subscribe
    for subject in (PLANNER_RECIPES, "$KV.other_plans.recipe.x", "$JS.API.CONSUMER.CREATE.KV_other_plans"):
        assert admin.may_publish(subject) and not client.may_publish(subject), subject
    for subject in (subjects.EXECUTOR_EXECUTE, subjects.PLANNER_REMEMBER, "$KV.tandem_tasks.x", "tandem.events.task.x"):
        assert not admin.may_publish(subject), subject  # managing is not acting as an actor


@pytest.mark.parametrize(("pattern", "subject", "expected"), [
    ("a.*", "a.b", True), ("a.*", "a.b.c", False), ("a.>", "a.b.c", True), ("a.>", "a", False),
    ("a.*", "a.>", False), ("a.>", "a.*", True), ("a.b", "a.*", False), ("*", "a", True),
])
def test_subject_matching_follows_the_server(pattern: str, subject: str, expected: bool) -> None:
    assert subject_matches(pattern, subject) is expected
