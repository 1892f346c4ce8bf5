"""The planner's recipe path and recipe library over a real nats-server, the model behind MockTransport.

The mock model answers by the structured-output schema's name:
``recipe_choice`` (the menu), ``recipe_params`` (filling a recipe) and
``execution_plan`` (a plan written from scratch).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import msgspec
import pytest

from tandem.actors import RouterActor
from tandem.actors._recipes import KEY_PREFIX, converter_formats, load_shipped
from tandem.actors.planner import PlannerActor
from tandem.messages import Ack, ErrorReply, InputInfo, PlanReply, PlanRequest, SpawnCommand, subjects
from tandem.messages.recipes import (
    PLANNER_RECIPES,
    AddRecipe,
    ListRecipes,
    Recipe,
    RecipeList,
    RecipeParam,
    RecipeReply,
    RemoveRecipe,
    ShowRecipe,
)
from tandem.services.bus import Bus
from tandem.services.errors import RemoteError
from tandem.services.runtime import start_actors

from ..conftest import MockModel, make_config

needs_pandoc = pytest.mark.skipif(not converter_formats()[1], reason="needs pandoc (pypandoc-binary)")

DOC = "# Title\n\nSome **bold** text and `code`.\n"
MD = [InputInfo(fd=3, type="markdown", size=len(DOC), preview=DOC)]

SCRATCH_PLAN = {
    "version": "1.0",
    "workflow": [
        {"step": 1, "action": "read_input", "params": {"source": "fd:3"}},
        {"step": 2, "action": "spawn_command", "params": {"cmd": "sort"}},
        {"step": 3, "action": "write_output"},
    ],
}

GREP_WORD = Recipe(
    name="grep-word", description="Keep the lines with a word", keywords=["lines"],
    params=[RecipeParam(name="word", description="the word")],
    plan={"version": "1.0", "workflow": [
        {"step": 1, "action": "read_input", "params": {"source": "${input}"}},
        {"step": 2, "action": "spawn_command", "params": {"cmd": "grep", "args": ["-F", "-e", "${word}"]}},
        {"step": 3, "action": "write_output"}]},
)


def schema_name(body: dict) -> str:
    return body["response_format"]["json_schema"]["name"]


def answering(**answers: Callable[[dict], object] | object) -> Callable[[dict], str]:
    """A planner-side mock: one answer (or function of the request body) per schema name."""
    def answer(body: dict) -> str:
        value = answers[schema_name(body)]
        return json.dumps(value(body) if callable(value) else value)
    return answer


@asynccontextmanager
async def planner(bus: Bus, model: MockModel, recipes=None) -> AsyncIterator[None]:
    factories = {"router": lambda b, c: RouterActor(b, c, transport=model.transport),
                 "planner": lambda b, c: PlannerActor(b, c, recipes=recipes)}
    async with start_actors(bus, make_config(), ["planner", "router"], factories=factories):
        yield


async def plan(bus: Bus, task: str, inputs=MD) -> PlanReply:
    return await bus.request(subjects.PLANNER_PLAN, PlanRequest(task=task, inputs=inputs, use_cache=False),
                             PlanReply, timeout=10)


async def recipes(bus: Bus, request) -> RecipeList | RecipeReply | Ack:
    reply = await bus.request(PLANNER_RECIPES, request, RecipeList | RecipeReply | Ack | ErrorReply, timeout=10)
    if isinstance(reply, ErrorReply):
        raise RemoteError(reply.code, reply.message)
    return reply


@needs_pandoc
async def test_conversion_picks_the_recipe_in_one_call_and_says_so(bus: Bus) -> None:
    model = MockModel(planner=answering(recipe_choice={"recipe": "document-conversion"}), writer=lambda b: "x")
    async with planner(bus, model):
        reply = await plan(bus, "Convert this Markdown to Textile")
    assert reply.recipe == "document-conversion" and reply.recipe_params == {"from": "gfm", "to": "textile"}
    convert = reply.plan.workflow[1]
    assert isinstance(convert, SpawnCommand) and convert.params.cmd == "pandoc"
    assert convert.params.args == ["-f", "gfm", "-t", "textile"]
    assert reply.plan.workflow[0].params.source == "fd:3"
    [menu] = model.requests  # both parameters had one possible value: no fill call
    assert schema_name(menu) == "recipe_choice"
    assert menu["response_format"]["json_schema"]["schema"]["properties"]["recipe"]["enum"] == [
        "document-conversion", "none"]
    assert "document-conversion: Convert one document" in menu["messages"][-1]["content"]
    assert reply.attempts == 1 and reply.model == "planner-model"


@needs_pandoc
async def test_ambiguous_parameters_are_filled_with_constrained_output(bus: Bus) -> None:
    model = MockModel(planner=answering(recipe_choice={"recipe": "document-conversion"},
                                        recipe_params={"from": "gfm", "to": "org"}), writer=lambda b: "x")
    async with planner(bus, model):
        reply = await plan(bus, "Make this LaTeX or Org")
    assert reply.recipe_params == {"from": "gfm", "to": "org"}
    assert reply.plan.workflow[1].params.args == ["-f", "gfm", "-t", "org"]
    fill = model.requests[1]
    assert schema_name(fill) == "recipe_params"
    assert fill["response_format"]["json_schema"]["schema"]["properties"]["to"] == {"enum": ["latex", "org"]}
    assert reply.attempts == 2


async def test_none_from_the_menu_writes_a_plan_constrained_to_the_task(bus: Bus) -> None:
    model = MockModel(planner=answering(recipe_choice={"recipe": "none"}, execution_plan=SCRATCH_PLAN),
                      writer=lambda b: "x")
    async with planner(bus, model, recipes=[GREP_WORD]):
        reply = await plan(bus, "Sort the lines")
    assert reply.recipe == "" and reply.plan.workflow[1].params.cmd == "sort"
    assert [schema_name(r) for r in model.requests] == ["recipe_choice", "execution_plan"]
    written = model.requests[1]
    schema = written["response_format"]["json_schema"]["schema"]
    variants = {v["properties"]["action"]["enum"][0]: v["properties"]["params"]["properties"]
                for v in schema["properties"]["workflow"]["items"]["anyOf"]}
    assert variants["read_input"]["source"] == {"enum": ["fd:3"]}
    assert "sort" in variants["spawn_command"]["cmd"]["enum"] and "bash" not in variants["spawn_command"]["cmd"]["enum"]
    system = written["messages"][0]["content"]
    assert 'always "fd:3"' in system
    assert "- grep: grep [-ivcnowxEF]" in system  # one line per command, with its parameters


async def test_no_candidate_skips_the_menu(bus: Bus) -> None:
    model = MockModel(planner=answering(execution_plan=SCRATCH_PLAN), writer=lambda b: "x")
    async with planner(bus, model, recipes=[GREP_WORD]):
        reply = await plan(bus, "Put these in order")  # no keyword of grep-word
    assert [schema_name(r) for r in model.requests] == ["execution_plan"] and reply.recipe == ""


@pytest.mark.parametrize("answer", [{"word": "-v"}, {"word": "a\nb"}, {"other": "x"}])
async def test_invalid_parameters_fall_back_to_writing_a_plan(bus: Bus, answer: dict) -> None:
    model = MockModel(planner=answering(recipe_choice={"recipe": "grep-word"}, recipe_params=answer,
                                        execution_plan=SCRATCH_PLAN), writer=lambda b: "x")
    async with planner(bus, model, recipes=[GREP_WORD]):
        reply = await plan(bus, "Keep the lines about timeouts")
    assert reply.recipe == ""
    assert [schema_name(r) for r in model.requests] == ["recipe_choice", "recipe_params", "execution_plan"]


async def test_recipe_with_a_text_parameter(bus: Bus) -> None:
    model = MockModel(planner=answering(recipe_choice={"recipe": "grep-word"}, recipe_params={"word": "timeout"}),
                      writer=lambda b: "x")
    async with planner(bus, model, recipes=[GREP_WORD]):
        reply = await plan(bus, "Keep the lines about timeouts")
    assert reply.recipe == "grep-word" and reply.plan.workflow[1].params.args == ["-F", "-e", "timeout"]


async def test_a_menu_answer_that_is_no_choice_falls_back(bus: Bus) -> None:
    model = MockModel(planner=lambda body: json.dumps(SCRATCH_PLAN), writer=lambda b: "x")  # answers plans only
    async with planner(bus, model, recipes=[GREP_WORD]):
        reply = await plan(bus, "Keep the lines about timeouts")
    assert reply.recipe == "" and reply.plan.workflow[1].params.cmd == "sort"


async def test_library_lists_shipped_recipes_and_manages_the_users(bus: Bus) -> None:
    model = MockModel(planner=answering(), writer=lambda b: "x")
    async with planner(bus, model):
        listed = await recipes(bus, ListRecipes())
        assert [r.name for r in listed.recipes] == sorted(r.name for r in load_shipped())
        assert all(r.shipped for r in listed.recipes)

        added = await recipes(bus, AddRecipe(recipe=GREP_WORD))
        assert added.recipe.name == "grep-word" and not added.recipe.shipped
        with pytest.raises(RemoteError) as dup:
            await recipes(bus, AddRecipe(recipe=GREP_WORD))
        assert dup.value.code == "recipe_invalid" and "exists" in dup.value.message
        changed = msgspec.structs.replace(GREP_WORD, description="Keep only the lines with a word")
        await recipes(bus, AddRecipe(recipe=changed, replace=True))
        shown = await recipes(bus, ShowRecipe(name="grep-word"))
        assert shown.recipe.description == "Keep only the lines with a word"

        assert isinstance(await recipes(bus, RemoveRecipe(name="sort-lines")), Ack)
        with pytest.raises(RemoteError) as missing:
            await recipes(bus, ShowRecipe(name="sort-lines"))
        assert missing.value.code == "not_found"
        with pytest.raises(RemoteError) as bad:
            await recipes(bus, AddRecipe(recipe=msgspec.structs.replace(
                GREP_WORD, name="bad", plan={"version": "1.0", "workflow": []})))
        assert bad.value.code == "recipe_invalid"

    async with planner(bus, model):  # a new planner: shipped recipes load again, but a removed one stays removed
        names = [r.name for r in (await recipes(bus, ListRecipes())).recipes]
    assert "sort-lines" not in names and "grep-word" in names and "document-conversion" in names


async def test_an_older_shipped_recipe_is_updated_but_a_users_replacement_is_kept(bus: Bus) -> None:
    shipped = [msgspec.structs.replace(GREP_WORD, shipped=True)]
    model = MockModel(planner=answering(), writer=lambda b: "x")
    async with planner(bus, model, recipes=shipped):
        pass
    newer = [msgspec.structs.replace(shipped[0], description="Newer wording")]
    async with planner(bus, model, recipes=newer):
        shown = await recipes(bus, ShowRecipe(name="grep-word"))
        assert shown.recipe.description == "Newer wording"
        await recipes(bus, AddRecipe(recipe=msgspec.structs.replace(GREP_WORD, description="Mine"), replace=True))
    async with planner(bus, model, recipes=[msgspec.structs.replace(newer[0], description="Newest")]):
        shown = await recipes(bus, ShowRecipe(name="grep-word"))
    assert shown.recipe.description == "Mine" and not shown.recipe.shipped


async def test_a_broken_stored_recipe_is_skipped(bus: Bus) -> None:
    model = MockModel(planner=answering(execution_plan=SCRATCH_PLAN), writer=lambda b: "x")
    async with planner(bus, model, recipes=[GREP_WORD]):
        kv = await bus.key_value(make_config().plan_cache_bucket)
        await kv.put(KEY_PREFIX + "broken", b'{"name": "broken"}')
        names = [r.name for r in (await recipes(bus, ListRecipes())).recipes]
    assert names == ["grep-word"]


async def test_a_menu_answer_cut_short_means_no_recipe_not_a_failed_plan(bus: Bus) -> None:
    """SmolLM2 pads grammar-allowed whitespace; max_tokens can cut the JSON before its closing brace."""
    model = MockModel(planner=lambda body: ('{\n  "recipe" :\n    "grep-word"\n  \t   \t  ' if schema_name(body) ==
                                            "recipe_choice" else json.dumps(SCRATCH_PLAN)), writer=lambda b: "x")
    async with planner(bus, model, recipes=[GREP_WORD]):
        reply = await plan(bus, "Keep the lines about timeouts")
    assert reply.recipe == "" and reply.plan.workflow[1].params.cmd == "sort"
    assert model.requests[0]["max_tokens"] >= 100
