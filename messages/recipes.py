"""Vetted plans ("recipes") and the planner's requests to manage them.

A recipe is an :class:`~tandem.messages.ExecutionPlan` template with named
parameters, written and checked by people, that the planner offers a model
before asking it to write a plan of its own: picking one name from a short
menu and filling a few constrained parameters is far easier for a small model
than writing a plan (issue 11). Tandem ships some (``configs/recipes/``);
users add their own with ``tandem plans add``. All live in the plan-cache
JetStream KV bucket under ``recipe.<name>``.

Template strings may contain ``${name}`` for a parameter's value and
``${input}`` for the task's first input (``fd:3`` for one ``--input`` file);
whole strings and parts of strings are both substituted.

Requests on :data:`PLANNER_RECIPES` (one subject, one tagged union)::

    ListRecipes   → RecipeList
    ShowRecipe    → RecipeReply     (ErrorReply not_found)
    AddRecipe     → RecipeReply     (ErrorReply recipe_invalid)
    RemoveRecipe  → Ack             (ErrorReply not_found)
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from ._base import ErrorReply, Message
from .planning import Ack

__all__ = [
    "AddRecipe",
    "ListRecipes",
    "PLANNER_RECIPES",
    "Recipe",
    "RecipeList",
    "RecipeParam",
    "RecipeReply",
    "RecipeRequest",
    "RemoveRecipe",
    "ShowRecipe",
]

PLANNER_RECIPES = "tandem.planner.recipes"
"""Subject of :data:`RecipeRequest` (served by the planner)."""

RecipeName = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")]
ParamName = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]{0,23}$")]
Line = Annotated[str, Meta(max_length=200)]


class RecipeParam(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One parameter of a recipe, filled by the model with constrained output.

    Parameters
    ----------
    name : str
        ``${name}`` in the template.
    description : str
        One line, shown to the model.
    kind : {"input_format", "output_format", "choice", "text"}
        ``input_format``/``output_format``: a format the built-in converter
        reads/writes (pandoc's own lists), narrowed by the input's type and
        the formats the task names. ``choice``: one of :attr:`choices`.
        ``text``: a short single-line string (e.g. a word to search for).
    choices : list of str
        For ``choice``.
    values : dict of str to str
        For ``choice``: what each choice substitutes (default: the choice
        itself). An ``args`` element that is exactly ``${name}`` and
        substitutes to ``""`` is dropped, so a choice can mean "no option".
    """

    name: ParamName
    description: Line = ""
    kind: Literal["input_format", "output_format", "choice", "text"] = "text"
    choices: Annotated[list[Annotated[str, Meta(max_length=40)]], Meta(max_length=32)] = []
    values: dict[str, Annotated[str, Meta(max_length=80)]] = {}

    def __post_init__(self) -> None:
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"parameter {self.name!r} is a choice but lists no choices")
        if unknown := set(self.values) - set(self.choices):
            raise ValueError(f"parameter {self.name!r} has values for unknown choices: {sorted(unknown)}")


class Recipe(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A vetted plan template.

    Parameters
    ----------
    name : str
        Lower-case words joined by ``-``, e.g. ``document-conversion``.
    description : str
        One line: what it does. The model picks from these.
    plan : dict
        An execution plan (intermediate language v1.0) with ``${...}`` placeholders.
    params : list of RecipeParam
    requires : list of str
        Built-in commands it needs; it is only offered when all are available.
    inputs : int
        Number of inputs it works on (``0``: any).
    input_types : list of str
        Input types it applies to (``[]``: any), e.g. ``["markdown", "html"]``.
    keywords : list of str
        Words of which the task must contain at least one (``[]``: no such
        condition), the deterministic pre-filter before the model's menu.
    shipped : bool
        Whether it came with Tandem (``tandem plans add`` stores ``False``).
    """

    name: RecipeName
    description: Line
    plan: dict[str, Any]
    params: Annotated[list[RecipeParam], Meta(max_length=8)] = []
    requires: list[str] = []
    inputs: Annotated[int, Meta(ge=0, le=8)] = 1
    input_types: list[str] = []
    keywords: list[str] = []
    shipped: bool = False


class ListRecipes(Message, frozen=True, kw_only=True, tag="list_recipes"):
    """Ask for every recipe (shipped ones are loaded on first use)."""


class ShowRecipe(Message, frozen=True, kw_only=True, tag="show_recipe"):
    """Ask for one recipe by name."""

    name: str


class AddRecipe(Message, frozen=True, kw_only=True, tag="add_recipe"):
    """Store a recipe (validated first); ``replace`` allows overwriting one of the same name."""

    recipe: Recipe
    replace: bool = False


class RemoveRecipe(Message, frozen=True, kw_only=True, tag="remove_recipe"):
    """Delete a recipe by name (a removed shipped recipe stays removed)."""

    name: str


class RecipeList(Message, frozen=True, kw_only=True, tag="recipe_list"):
    """Every recipe, sorted by name."""

    recipes: list[Recipe] = []


class RecipeReply(Message, frozen=True, kw_only=True, tag="recipe_reply"):
    """One recipe."""

    recipe: Recipe


RecipeRequest = ListRecipes | ShowRecipe | AddRecipe | RemoveRecipe
RecipeReplies = RecipeList | RecipeReply | Ack | ErrorReply
