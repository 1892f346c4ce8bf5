"""Vetted plans (recipes): shipped files, format mentions, the pre-filter, vetting, values, instantiation."""

from __future__ import annotations

import msgspec
import pytest

from tandem.actors._recipes import (
    Candidate,
    RecipeInvalid,
    check_recipe,
    check_values,
    converter_formats,
    decode_recipe,
    fill_schema,
    format_of_type,
    instantiate,
    load_shipped,
    mentioned_formats,
    menu_schema,
    prefilter,
)
from tandem.actors.planner import plan_schema_for
from tandem.messages import InputInfo, ReadInput, SpawnCommand, WriteOutput
from tandem.messages.recipes import Recipe, RecipeParam

needs_pandoc = pytest.mark.skipif(not converter_formats()[1], reason="needs pandoc (pypandoc-binary)")

MD = [InputInfo(fd=3, type="markdown", size=900)]
ALL = ["cat", "grep", "pandoc", "sed", "sort", "wc"]


def shipped(name: str) -> Recipe:
    return next(r for r in load_shipped() if r.name == name)


def sort_recipe(**changes) -> Recipe:
    return msgspec.structs.replace(shipped("sort-lines"), **changes)


def test_shipped_recipes_load_vetted_and_marked_shipped() -> None:
    recipes = load_shipped()
    assert {"document-conversion", "extract-lines", "sort-lines"} <= {r.name for r in recipes}
    assert all(r.shipped and r.description for r in recipes)
    for r in recipes:
        check_recipe(r)


@pytest.mark.parametrize(("task", "expected"), [
    ("Convert this Markdown to Textile", ["gfm", "textile"]),
    ("convert README.md into HTML", ["html"]),  # README.md: no word boundary before "md"
    ("Turn the reStructuredText into AsciiDoc, then LaTeX", ["rst", "asciidoc", "latex"]),
    ("この Markdown を Textile に変換して", ["gfm", "textile"]),
    ("Render as plain text", ["plain"]),
    ("Export it for the Jira ticket and MediaWiki", ["jira", "mediawiki"]),
    ("Tell me the rest of the story, in context", []),
    ("Summarise the errors in this log", []),
    ("Markdown, then markdown again", ["gfm"]),
])
def test_formats_named_in_a_task(task: str, expected: list[str]) -> None:
    assert [f for f, _ in mentioned_formats(task)] == expected


def test_input_types_map_to_pandoc_readers() -> None:
    assert format_of_type("markdown") == "gfm"
    assert format_of_type("HTML") == "html"
    assert format_of_type("log") is None


@needs_pandoc
def test_conversion_task_narrows_to_the_conversion_recipe_with_fixed_values() -> None:
    [candidate] = prefilter(load_shipped(), "Convert this Markdown to Textile", MD, ALL)
    assert candidate.recipe.name == "document-conversion"
    assert candidate.choices == {"from": ["gfm"], "to": ["textile"]}
    assert candidate.fixed() == {"from": "gfm", "to": "textile"}


@needs_pandoc
def test_two_target_formats_leave_the_choice_to_the_model() -> None:
    [candidate] = prefilter(load_shipped(), "Make this LaTeX or Org", MD, ALL)
    assert candidate.choices["to"] == ["latex", "org"] and candidate.fixed() is None
    assert fill_schema(candidate)["properties"]["to"] == {"enum": ["latex", "org"]}


@needs_pandoc
def test_unknown_input_type_takes_the_source_format_from_the_task() -> None:
    [candidate] = prefilter(load_shipped(), "Convert this HTML to Markdown", [InputInfo(fd=0, type="text")], ALL)
    assert candidate.choices == {"from": ["html"], "to": ["gfm"]}


@pytest.mark.parametrize(("task", "inputs", "commands"), [
    ("Convert this Markdown to Textile", MD, [c for c in ALL if c != "pandoc"]),  # converter not installed
    ("Convert this Markdown to Markdown", MD, ALL),                              # no target other than the input
    ("Summarise this document", MD, ALL),                                        # no format named
    ("Convert these to HTML", [*MD, InputInfo(fd=4, type="markdown")], ALL),     # two inputs, recipe takes one
])
def test_conversion_recipe_is_filtered_out(task: str, inputs: list[InputInfo], commands: list[str]) -> None:
    names = [c.recipe.name for c in prefilter(load_shipped(), task, inputs, commands)]
    assert "document-conversion" not in names


def test_keywords_filter_and_choice_parameters_offer_every_choice() -> None:
    found = {c.recipe.name: c for c in prefilter(load_shipped(), "Sort these names alphabetically", MD, ALL)}
    assert set(found) == {"sort-lines"}
    assert found["sort-lines"].choices["order"] == ["ascending", "descending", "ascending-unique", "descending-unique"]
    assert prefilter(load_shipped(), "Sort these names", MD, ["grep"]) == []  # sort not available


def test_menu_schema_is_the_candidates_and_none() -> None:
    assert menu_schema(["a", "b"])["properties"]["recipe"] == {"enum": ["a", "b", "none"]}


def test_instantiate_fills_placeholders_and_reads_the_given_input() -> None:
    plan = instantiate(shipped("document-conversion"), {"from": "gfm", "to": "textile"}, MD)
    read, convert, write = plan.workflow
    assert isinstance(read, ReadInput) and read.params.source == "fd:3" and read.params.type == "gfm"
    assert isinstance(convert, SpawnCommand) and convert.params.cmd == "pandoc"
    assert convert.params.args == ["-f", "gfm", "-t", "textile"] and convert.params.pattern == "gfm_to_textile"
    assert isinstance(write, WriteOutput) and write.params.format == "textile"
    stdin = instantiate(shipped("extract-lines"), {"phrase": "error"}, [InputInfo(fd=0)])
    assert stdin.workflow[0].params.source == "fd:0"


def test_a_choice_that_means_no_option_drops_the_argument() -> None:
    assert instantiate(shipped("sort-lines"), {"order": "ascending"}, MD).workflow[1].params.args == []
    assert instantiate(shipped("sort-lines"), {"order": "descending-unique"}, MD).workflow[1].params.args == ["-ru"]


def test_values_are_checked_against_what_the_candidate_allows() -> None:
    candidate = Candidate(recipe=shipped("document-conversion"), choices={"from": ["gfm"], "to": ["textile", "html"]})
    assert check_values(candidate, {"from": "gfm", "to": "html"}) == {"from": "gfm", "to": "html"}
    with pytest.raises(RecipeInvalid, match="to: 'docx' is not one of textile, html"):
        check_values(candidate, {"from": "gfm", "to": "docx"})
    with pytest.raises(RecipeInvalid, match="from: missing"):
        check_values(candidate, {"to": "html"})
    text = Candidate(recipe=shipped("extract-lines"), choices={"phrase": []})
    assert check_values(text, {"phrase": "timeout error"}) == {"phrase": "timeout error"}
    for bad in ("-v", "two\nlines", "", "x" * 81):
        with pytest.raises(RecipeInvalid, match="phrase"):
            check_values(text, {"phrase": bad})


def plan_of(*steps: dict) -> dict:
    return {"version": "1.0", "workflow": list(steps)}


READ = {"step": 1, "action": "read_input", "params": {"source": "${input}"}}
WRITE = {"step": 3, "action": "write_output"}


@pytest.mark.parametrize(("recipe", "message"), [
    (Recipe(name="x", description="d", plan=plan_of(READ, {"step": 2, "action": "spawn_command",
                                                           "params": {"cmd": "grep", "args": ["${what}"]}}, WRITE)),
     "placeholders without a parameter: \\['what'\\]"),
    (Recipe(name="x", description="d", params=[RecipeParam(name="p")],
            plan=plan_of(READ, {"step": 2, "action": "spawn_command", "params": {"cmd": "cat"}}, WRITE)),
     "parameters not used"),
    (Recipe(name="x", description="d", plan=plan_of(READ, {"step": 2, "action": "spawn_command",
                                                           "params": {"cmd": "bash", "args": ["-c", "ls"]}}, WRITE)),
     "'bash' is not a built-in command"),
    (Recipe(name="x", description="d", params=[RecipeParam(name="c", kind="choice", choices=["grep"])],
            plan=plan_of(READ, {"step": 2, "action": "spawn_command", "params": {"cmd": "${c}"}}, WRITE)),
     "is not a built-in command"),
    (Recipe(name="x", description="d", plan=plan_of(READ, {"step": 2, "action": "spawn_command",
                                                           "params": {"cmd": "cat"}})),
     "no write_output"),
    (Recipe(name="x", description="d", plan=plan_of(READ, {"step": 2, "action": "spawn_command",
                                                           "params": {"cmd": "cat", "shell": True}}, WRITE)),
     "unknown field"),
])
def test_vetting_rejects_broken_recipes(recipe: Recipe, message: str) -> None:
    with pytest.raises(RecipeInvalid, match=message):
        check_recipe(recipe)


def test_decoding_reports_the_field() -> None:
    with pytest.raises(RecipeInvalid, match=r"\$.params\[0\].kind"):
        decode_recipe(b'{"name":"x","description":"d","plan":{},"params":[{"name":"p","kind":"regex"}]}')
    with pytest.raises(RecipeInvalid, match="lists no choices"):
        decode_recipe(b'{"name":"x","description":"d","plan":{},"params":[{"name":"p","kind":"choice"}]}')
    with pytest.raises(RecipeInvalid, match="name"):
        decode_recipe(b'{"name":"Bad Name","description":"d","plan":{}}')


def test_written_plans_may_only_name_given_inputs_and_available_commands() -> None:
    schema = plan_schema_for(MD, ["grep", "sed", "bash"])
    variants = {v["properties"]["action"]["enum"][0]: v["properties"]["params"]["properties"]
                for v in schema["properties"]["workflow"]["items"]["anyOf"]}
    assert variants["read_input"]["source"] == {"enum": ["fd:3"]}
    assert variants["spawn_command"]["cmd"] == {"enum": ["grep", "sed"]}  # bash is no built-in
    assert variants["spawn_command"]["input_fd"]["anyOf"][0]["enum"][0] == 3
    assert 4 not in variants["manual_transform"]["context_fds"]["items"]["enum"]
    no_inputs = plan_schema_for([], ["grep"])
    actions = [v["properties"]["action"]["enum"][0] for v in no_inputs["properties"]["workflow"]["items"]["anyOf"]]
    assert "read_input" not in actions and "spawn_command" in actions
