"""The planner's narrowed plan schema is computed once per (inputs, commands) and stays correct."""

from __future__ import annotations

import copy

import pytest
from tandem.actors import planner
from tandem.actors.planner import SCHEMA_CACHE_SIZE, plan_schema_for
from tandem.messages import InputInfo, plan_json_schema_compact
from tandem.messages.plan import BUILTIN_COMMANDS


def uncached(inputs: list[InputInfo], commands: list[str]) -> dict:
    """What plan_schema_for computed per call before the cache."""
    schema = copy.deepcopy(plan_json_schema_compact())
    fds = [i.fd for i in inputs]
    planner._narrow(schema, fds, [c for c in commands if c in BUILTIN_COMMANDS])
    if not fds:
        variants = schema["properties"]["workflow"]["items"]["anyOf"]
        variants[:] = [v for v in variants if v["properties"]["action"].get("enum") != ["read_input"]]
    return schema


@pytest.mark.parametrize("fds", [[], [3], [3, 4], [0]])
@pytest.mark.parametrize("commands", [[], ["sed"], ["grep", "sed", "bash"], ["pandoc", "sort", "cut"]])
def test_the_cached_schema_is_the_one_computed_per_call(fds: list[int], commands: list[str]) -> None:
    inputs = [InputInfo(fd=fd, type="text") for fd in fds]
    assert plan_schema_for(inputs, commands) == uncached(inputs, commands)
    assert planner._shared_schema(inputs, commands) == uncached(inputs, commands)


def test_each_call_returns_its_own_copy_and_the_compact_schema_is_untouched() -> None:
    before = copy.deepcopy(plan_json_schema_compact())
    first = plan_schema_for([InputInfo(fd=3)], ["sed"])
    first["properties"]["workflow"]["items"]["anyOf"].clear()
    first["mutated"] = True
    again = plan_schema_for([InputInfo(fd=3)], ["sed"])
    assert "mutated" not in again and again["properties"]["workflow"]["items"]["anyOf"]
    assert again == uncached([InputInfo(fd=3)], ["sed"])
    assert plan_json_schema_compact() == before


def test_the_key_is_the_fds_and_the_commands_not_the_input_details() -> None:
    planner._narrowed_schema.cache_clear()
    plan_schema_for([InputInfo(fd=3, type="csv", size=10)], ["sed"])
    plan_schema_for([InputInfo(fd=3, type="markdown", size=9000, preview="# x")], ["sed", "bash"])  # bash: no built-in
    assert planner._narrowed_schema.cache_info().misses == 1
    plan_schema_for([InputInfo(fd=4)], ["sed"])
    plan_schema_for([InputInfo(fd=3)], ["grep"])
    assert planner._narrowed_schema.cache_info().misses == 3


def test_the_cache_is_bounded() -> None:
    planner._narrowed_schema.cache_clear()
    for fd in range(SCHEMA_CACHE_SIZE * 2):
        plan_schema_for([InputInfo(fd=fd)], ["sed"])
    assert planner._narrowed_schema.cache_info().currsize == SCHEMA_CACHE_SIZE
