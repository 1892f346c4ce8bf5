"""Vetted plans (recipes): loading, the deterministic pre-filter, parameters, instantiation, storage.

The planner offers recipes to the model before asking it to write a plan
(issue 11). This module holds everything about them that needs no model:

* :func:`load_shipped` reads the recipes shipped in ``tandem.configs/recipes/*.yaml``;
* :func:`check_recipe` vets a recipe (placeholders, commands, a sample instantiation);
* :func:`prefilter` narrows the menu cheaply: number and type of inputs, the
  commands available here, the task's keywords, and for a conversion the
  formats the task names (:func:`mentioned_formats`), which also narrow the
  values a parameter may take (:class:`Candidate`);
* :func:`menu_schema` / :func:`fill_schema` are the constrained-output schemas
  of the two model calls, :func:`check_values` validates what came back, and
  :func:`instantiate` turns a recipe and its values into an
  :class:`~tandem.messages.ExecutionPlan`;
* :class:`RecipeStore` keeps recipes in the plan-cache KV bucket under
  ``recipe.<name>``, loads the shipped ones on first use, and keeps a copy in
  memory for planning, kept current by a watch on the bucket.

Errors (all :class:`~tandem.services.errors.PlanError`)::

    RecipeError            a recipe cannot be used            (code "recipe")
    ├── RecipeNotFound       no recipe of that name            ("not_found")
    └── RecipeInvalid        the recipe or its values are bad  ("recipe_invalid")
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import anyio
import msgspec
import nats.errors
import nats.js.errors
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from tandem.messages import ExecutionPlan, InputInfo, decode_error_path
from tandem.messages.plan import BUILTIN_COMMANDS
from tandem.messages.recipes import Recipe, RecipeParam
from tandem.services.errors import PlanError, PlanValidationError, TandemError

__all__ = [
    "Candidate",
    "RecipeError",
    "RecipeInvalid",
    "RecipeNotFound",
    "RecipeStore",
    "check_recipe",
    "check_values",
    "converter_formats",
    "decode_recipe",
    "fill_schema",
    "format_of_type",
    "instantiate",
    "load_shipped",
    "mentioned_formats",
    "menu_schema",
    "prefilter",
    "recipe_commands",
]

log = logging.getLogger("tandem.planner")

NONE = "none"
"""The menu's answer when no recipe fits."""

MAX_TEXT_VALUE = 80
_PLACEHOLDER = re.compile(r"\$\{([a-z][a-z0-9_]{0,23})\}")


class RecipeError(PlanError):
    """Raised when a recipe cannot be used."""

    code = "recipe"


class RecipeNotFound(RecipeError):
    """Raised when no recipe has the name asked for."""

    code = "not_found"


class RecipeInvalid(RecipeError):
    """Raised when a recipe, or the values filled into it, fail validation."""

    code = "recipe_invalid"


# --------------------------------------------------------------------------
# formats (the pandoc built-in)
# --------------------------------------------------------------------------

# Human names of text formats → pandoc's format name; checked against pandoc's
# own lists at run time (converter_formats), so a name pandoc lacks is ignored.
_ALIASES: tuple[tuple[str, str], ...] = (
    (r"github[- ]flavou?red[- ]markdown|gfm|github markdown", "gfm"),
    (r"commonmark", "commonmark"),
    (r"pandoc markdown", "markdown"),
    (r"markdown|md|マークダウン", "gfm"),
    (r"textile", "textile"),
    (r"x?html5?|web ?page", "html"),
    (r"restructured ?text|rst|rest markup", "rst"),
    (r"ascii ?doc(?:tor)?|adoc", "asciidoc"),
    (r"latex|tex", "latex"),
    (r"org(?:[- ]mode)?|emacs org", "org"),
    (r"media ?wiki|wikipedia(?: markup)?", "mediawiki"),
    (r"jira(?: markup| wiki)?", "jira"),
    (r"docbook", "docbook"),
    (r"plain ?text|plaintext|plain", "plain"),
    (r"doku ?wiki", "dokuwiki"),
    (r"man ?page|manpage|roff|troff|groff", "man"),
    (r"texinfo", "texinfo"),
    (r"typst", "typst"),
    (r"djot", "djot"),
    (r"bb ?code", "bbcode"),
    (r"xwiki", "xwiki"),
    (r"zim ?wiki", "zimwiki"),
    (r"jupyter notebook|ipynb", "ipynb"),
    (r"opml", "opml"),
    (r"rtf|rich text(?: format)?", "rtf"),
    (r"jats", "jats"),
    (r"haddock", "haddock"),
    (r"muse", "muse"),
    (r"markua", "markua"),
    (r"vimdoc|vim help", "vimdoc"),
    (r"fictionbook|fb2", "fb2"),
    (r"beamer", "beamer"),
    (r"reveal\.?js", "revealjs"),
    (r"csv", "csv"),
    (r"tsv", "tsv"),
)
_MENTION = re.compile("|".join(f"(?P<f{i}>{pattern})" for i, (pattern, _) in enumerate(_ALIASES)), re.IGNORECASE)
_BEFORE = re.compile(r"[A-Za-z0-9_./]")  # "README.md" names a file, not the format
_AFTER = re.compile(r"[A-Za-z0-9_]")

# Input types the CLI guesses from file extensions → pandoc reader.
_TYPE_FORMATS = {"markdown": "gfm", "md": "gfm", "html": "html", "htm": "html", "textile": "textile",
                 "rst": "rst", "csv": "csv", "tsv": "tsv", "latex": "latex", "tex": "latex", "org": "org",
                 "asciidoc": "asciidoc", "mediawiki": "mediawiki", "docbook": "docbook", "ipynb": "ipynb"}
# For a task whose input format is unknown (stdin): what the model may choose from.
_COMMON_INPUTS = ("gfm", "markdown", "commonmark", "html", "rst", "textile", "latex", "org", "mediawiki",
                  "asciidoc", "docbook", "jira", "dokuwiki", "csv")
_TARGET_MARKER = re.compile(r"(?<![A-Za-z])(?:to|into|as|->)(?![A-Za-z])|→", re.IGNORECASE)


@functools.cache
def converter_formats() -> tuple[frozenset[str], frozenset[str]]:
    """Return ``(input formats, output formats)`` of the ``pandoc`` built-in, asked of pandoc.

    Both are empty when pandoc is not installed.
    """
    from tandem.services import convert

    if not convert.pandoc_available():
        return frozenset(), frozenset()
    return convert.input_formats(), convert.output_formats()


def mentioned_formats(task: str) -> list[tuple[str, int]]:
    """Return the document formats a task names, as ``(pandoc format, position)`` in order.

    Matching is case-insensitive on whole words (a Latin letter or digit on
    either side breaks a match, so it works inside Japanese text too; so
    does a ``.`` or ``/`` before it, so ``README.md`` is a file name). A
    format named twice is listed once, at its first position.

    Examples
    --------
    >>> mentioned_formats("Convert this Markdown to Textile")
    [('gfm', 13), ('textile', 25)]
    >>> mentioned_formats("この Markdown を reStructuredText に変換して")
    [('gfm', 3), ('rst', 14)]
    """
    found: dict[str, int] = {}
    for m in _MENTION.finditer(task):
        start, end = m.span()
        if (start > 0 and _BEFORE.match(task[start - 1])) or (end < len(task) and _AFTER.match(task[end])):
            continue
        group = next(name for name, value in m.groupdict().items() if value is not None)
        found.setdefault(_ALIASES[int(group[1:])][1], start)
    return sorted(found.items(), key=lambda kv: kv[1])


def format_of_type(input_type: str) -> str | None:
    """Return the pandoc reader for an input type (``"markdown"`` → ``"gfm"``), or ``None``.

    Examples
    --------
    >>> format_of_type("markdown"), format_of_type("log")
    ('gfm', None)
    """
    return _TYPE_FORMATS.get(input_type.lower())


def _format_choices(task: str, inputs: Sequence[InputInfo], readable: frozenset[str],
                    writable: frozenset[str]) -> tuple[list[str], list[str]]:
    """Allowed values of ``input_format`` and ``output_format`` parameters for this task."""
    mentions = mentioned_formats(task)
    known = format_of_type(inputs[0].type) if inputs else None
    if known is not None and known in readable:
        sources = [known]
        targets = [f for f, _ in mentions if f != known and f in writable]
    else:
        marker = _TARGET_MARKER.search(task)
        after = [f for f, pos in mentions if marker is not None and pos > marker.start()]
        before = [f for f, pos in mentions if marker is None or pos < marker.start()]
        targets = [f for f in (after or [f for f, _ in mentions]) if f in writable]
        sources = [f for f in before if f in readable and f not in targets] if after else []
        sources = sources or [f for f in _COMMON_INPUTS if f in readable and f not in targets[:1]]
    return sources, targets


# --------------------------------------------------------------------------
# recipes: decoding and vetting
# --------------------------------------------------------------------------

_recipe_json = msgspec.json.Decoder(Recipe)


def decode_recipe(data: bytes | str, *, yaml: bool = False) -> Recipe:
    """Decode a recipe from JSON (or YAML) and vet it with :func:`check_recipe`.

    Raises
    ------
    RecipeInvalid
        Naming the field (``$.params[0].kind``) or the problem.
    """
    try:
        recipe = msgspec.yaml.decode(data, type=Recipe) if yaml else _recipe_json.decode(data)
    except msgspec.ValidationError as exc:
        text, path = decode_error_path(exc)
        raise RecipeInvalid(f"{text}" + (f" at {path}" if path else "")) from exc
    except msgspec.DecodeError as exc:
        raise RecipeInvalid(f"not a recipe: {exc}") from exc
    check_recipe(recipe)
    return recipe


def _strings(node: Any) -> Iterable[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def recipe_commands(recipe: Recipe) -> set[str]:
    """Return the built-in commands a recipe's plan runs (its ``spawn_command`` steps)."""
    steps = recipe.plan.get("workflow", [])
    return {str(s.get("params", {}).get("cmd")) for s in steps
            if isinstance(s, dict) and s.get("action") == "spawn_command"}


def _sample(param: RecipeParam) -> str:
    match param.kind:
        case "input_format":
            return "html"
        case "output_format":
            return "plain"
        case "choice":
            return param.choices[0]
    return "sample"


def check_recipe(recipe: Recipe) -> None:
    """Vet a recipe: placeholders, commands, parameters, and a sample plan that validates.

    Raises
    ------
    RecipeInvalid
        When a placeholder is not a parameter (or ``input``), a parameter is
        unused or declared twice, a command is not a built-in or is a
        placeholder, or the plan with sample values is not a valid plan.
    """
    names = [p.name for p in recipe.params]
    if len(set(names)) != len(names):
        raise RecipeInvalid(f"recipe {recipe.name}: a parameter is declared twice: {names}")
    used = {m.group(1) for s in _strings(recipe.plan) for m in _PLACEHOLDER.finditer(s)}
    if unknown := used - set(names) - {"input"}:
        raise RecipeInvalid(f"recipe {recipe.name}: placeholders without a parameter: {sorted(unknown)}")
    if unused := set(names) - used:
        raise RecipeInvalid(f"recipe {recipe.name}: parameters not used in the plan: {sorted(unused)}")
    if "input" in names:
        raise RecipeInvalid(f"recipe {recipe.name}: 'input' is reserved (the task's first input)")
    if "input" in used and recipe.inputs == 0:
        raise RecipeInvalid(f"recipe {recipe.name}: uses ${{input}} but accepts any number of inputs (inputs: 0)")
    for cmd in recipe_commands(recipe):
        if _PLACEHOLDER.search(cmd) or cmd not in BUILTIN_COMMANDS:
            raise RecipeInvalid(f"recipe {recipe.name}: spawn_command cmd {cmd!r} is not a built-in command "
                                f"({', '.join(BUILTIN_COMMANDS)})")
    inputs = [InputInfo(fd=3 + i, type="text") for i in range(max(recipe.inputs, 1))]
    try:
        instantiate(recipe, {p.name: _sample(p) for p in recipe.params}, inputs, check=False)
    except RecipeInvalid as exc:
        raise RecipeInvalid(f"recipe {recipe.name}: its plan is invalid: {exc}") from exc


@functools.cache
def load_shipped() -> tuple[Recipe, ...]:
    """Return the recipes shipped with Tandem (``tandem.configs`` ``recipes/*.yaml``), sorted by name.

    Raises
    ------
    RecipeInvalid
        When a shipped file is broken (a packaging bug).
    """
    folder = importlib.resources.files("tandem.configs") / "recipes"
    recipes = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            recipe = decode_recipe(entry.read_bytes(), yaml=True)
            recipes.append(msgspec.structs.replace(recipe, shipped=True))
    return tuple(recipes)


# --------------------------------------------------------------------------
# pre-filter, schemas, values, instantiation
# --------------------------------------------------------------------------


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    """A recipe that passed the pre-filter, with the values each parameter may take.

    Parameters
    ----------
    recipe : Recipe
    choices : dict of str to list of str
        Allowed values per parameter; ``[]`` for a ``text`` parameter (free,
        checked by :func:`check_values`).
    """

    recipe: Recipe
    choices: dict[str, list[str]]

    def fixed(self) -> dict[str, str] | None:
        """The values, when every parameter has exactly one possible value (no model call needed)."""
        if all(len(v) == 1 for v in self.choices.values()):
            return {k: v[0] for k, v in self.choices.items()}
        return None


def _has_word(task: str, words: Sequence[str]) -> bool:
    lowered = task.lower()
    for word in words:
        w = word.lower()
        if not w.isascii():
            if w in lowered:
                return True
        elif re.search(rf"(?<![a-z0-9]){re.escape(w)}(?![a-z0-9])", lowered):
            return True
    return False


def prefilter(recipes: Iterable[Recipe], task: str, inputs: Sequence[InputInfo], commands: Iterable[str]) -> list[Candidate]:
    """Return the recipes worth offering for a task, cheaply and deterministically.

    A recipe passes when the task has the number of inputs it takes, the
    input's type is one it accepts, every command it runs is available here,
    the task contains one of its keywords (if it lists any), and each of its
    format parameters has at least one possible value (for a conversion: the
    task names a target format the converter writes, other than the input's).

    Parameters
    ----------
    recipes : iterable of Recipe
    task : str
    inputs : sequence of InputInfo
    commands : iterable of str
        The built-in commands that can run here.

    Returns
    -------
    list of Candidate
        In the order given.

    Examples
    --------
    >>> from tandem.messages import InputInfo
    >>> [c.recipe.name for c in prefilter(load_shipped(), "Sort these lines", [InputInfo(fd=3)], ["sort"])]
    ['sort-lines']
    """
    available = set(commands)
    readable, writable = converter_formats() if "pandoc" in available else (frozenset(), frozenset())
    formats: tuple[list[str], list[str]] | None = None
    out = []
    for recipe in recipes:
        if recipe.inputs and len(inputs) != recipe.inputs:
            continue
        if recipe.input_types and not all(i.type in recipe.input_types for i in inputs):
            continue
        if not recipe_commands(recipe) <= available:
            continue
        if recipe.keywords and not _has_word(task, recipe.keywords):
            continue
        choices: dict[str, list[str]] = {}
        for p in recipe.params:
            match p.kind:
                case "input_format" | "output_format":
                    if formats is None:
                        formats = _format_choices(task, inputs, readable, writable)
                    choices[p.name] = list(formats[0] if p.kind == "input_format" else formats[1])
                case "choice":
                    choices[p.name] = list(p.choices)
                case _:
                    choices[p.name] = []
        if any(not v for p, v in zip(recipe.params, choices.values(), strict=True) if p.kind != "text"):
            continue
        out.append(Candidate(recipe=recipe, choices=choices))
    return out


def menu_schema(names: Sequence[str]) -> dict[str, Any]:
    """Return the structured-output schema of the menu call: ``{"recipe": <name or "none">}``."""
    return {"type": "object", "properties": {"recipe": {"enum": [*names, NONE]}},
            "required": ["recipe"], "additionalProperties": False}


def fill_schema(candidate: Candidate) -> dict[str, Any]:
    """Return the structured-output schema of the parameter call, one property per parameter."""
    props: dict[str, Any] = {}
    for p in candidate.recipe.params:
        allowed = candidate.choices[p.name]
        props[p.name] = {"enum": allowed} if allowed else {"type": "string", "minLength": 1,
                                                            "maxLength": MAX_TEXT_VALUE, "pattern": r"^[^\n\r-][^\n\r]*$"}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def check_values(candidate: Candidate, values: Mapping[str, object]) -> dict[str, str]:
    """Validate parameter values against a candidate's allowed values.

    ``text`` values must be one line, 1–80 characters, and may not start with
    ``-`` (they become command arguments: never an option).

    Returns
    -------
    dict of str to str
        The values, one per parameter.

    Raises
    ------
    RecipeInvalid
        Naming the parameter and what it may be.
    """
    out: dict[str, str] = {}
    for p in candidate.recipe.params:
        value = values.get(p.name)
        if not isinstance(value, str):
            raise RecipeInvalid(f"parameter {p.name}: missing or not a string")
        allowed = candidate.choices[p.name]
        if allowed and value not in allowed:
            raise RecipeInvalid(f"parameter {p.name}: {value!r} is not one of {', '.join(allowed)}")
        if not allowed and (not value.strip() or len(value) > MAX_TEXT_VALUE or "\n" in value or "\r" in value
                            or value.startswith("-")):
            raise RecipeInvalid(f"parameter {p.name}: {value!r} must be one line of 1-{MAX_TEXT_VALUE} characters "
                                "not starting with '-'")
        out[p.name] = value
    return out


def _substitute(node: Any, values: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], node)
    if isinstance(node, dict):
        return {k: _substitute(v, values) for k, v in node.items()}
    if isinstance(node, list):
        out = []
        for v in node:
            whole = isinstance(v, str) and _PLACEHOLDER.fullmatch(v)
            sub = _substitute(v, values)
            if whole and sub == "":  # a choice meaning "no option": drop the argument
                continue
            out.append(sub)
        return out
    return node


def instantiate(recipe: Recipe, values: Mapping[str, str], inputs: Sequence[InputInfo], *,
                check: bool = True) -> ExecutionPlan:
    """Return the recipe's plan with ``values`` filled in, decoded and validated.

    Parameters
    ----------
    recipe : Recipe
    values : mapping of str to str
        One value per parameter, already checked (:func:`check_values`).
    inputs : sequence of InputInfo
        The task's inputs; ``${input}`` becomes the first one's fd (``fd:3``).
    check : bool
        Also run the planner's input checks (reads only given inputs, does work).

    Raises
    ------
    RecipeInvalid
        When the filled plan is not a valid plan for these inputs.

    Examples
    --------
    >>> sort = next(r for r in load_shipped() if r.name == "sort-lines")
    >>> plan = instantiate(sort, {"order": "descending"}, [InputInfo(fd=3)])
    >>> plan.workflow[1].params.args
    ['-r']
    """
    from .planner import check_plan_inputs, decode_plan

    if missing := {p.name for p in recipe.params} - set(values):
        raise RecipeInvalid(f"recipe {recipe.name}: no value for {sorted(missing)}")
    fill = {**values, "input": f"fd:{inputs[0].fd}" if inputs else "fd:0"}
    for p in recipe.params:
        if p.kind == "choice":
            fill[p.name] = p.values.get(values[p.name], values[p.name])
    try:
        plan = decode_plan(msgspec.json.encode(_substitute(recipe.plan, fill)))
        if check:
            check_plan_inputs(plan, {i.fd for i in inputs})
    except PlanValidationError as exc:
        raise RecipeInvalid(f"{exc}" + (f" at {exc.path}" if exc.path else "")) from exc
    return plan


# --------------------------------------------------------------------------
# storage
# --------------------------------------------------------------------------

KEY_PREFIX = "recipe."
SHIPPED_KEY = "recipes.shipped"
"""Names of shipped recipes already loaded into the bucket (so a removed one stays removed)."""

MAX_WATCHED = 1024
"""Most recipe keys (removed ones included) the in-memory view holds; beyond, planning reads the bucket."""

CATCH_UP_S = 1.0
"""Seconds :meth:`RecipeStore.current` waits for the watch to deliver a change it knows of; then it reads the bucket."""

WATCH_CHECK_S = 5.0
"""Seconds without a change after which the watch asks whether its consumer still exists."""

_names = msgspec.json.Decoder(list[str])


class RecipeStore:
    """Recipes in a JetStream KV bucket (the plan cache's), shipped ones loaded on first use.

    Loading is idempotent and cheap: a shipped recipe is added when the
    bucket has never seen it, updated when the stored copy is an older
    shipped version (never when a user replaced it), and left out when a
    user removed it.

    For planning, :meth:`current` answers from memory: :meth:`watch` (run by
    the planner beside its endpoints) follows the bucket's ``recipe.>`` keys
    with an ordered consumer, and :meth:`current` first asks for the newest
    revision of those keys (one JetStream request, instead of a key listing
    and a read of every recipe): a recipe added or removed by any process
    (another planner replica serving ``tandem plans add``, or a write to the
    bucket) before the plan was asked for is in it, waiting for the watch to
    deliver it when need be (at most :data:`CATCH_UP_S`, then the bucket is
    read). Until the watch has delivered every stored recipe, or while it is
    being re-established, :meth:`current` reads the bucket like :meth:`all`. The library requests (:meth:`all`, :meth:`get`,
    :meth:`add`, :meth:`remove`) always read and write the bucket.

    Parameters
    ----------
    kv : HealingKeyValue
        The bucket (:meth:`~tandem.services.bus.Bus.key_value`).
    shipped : sequence of Recipe or None
        :func:`load_shipped` when ``None`` (tests pass their own).
    """

    def __init__(self, kv: Any, shipped: Sequence[Recipe] | None = None) -> None:
        self.kv = kv
        self.shipped = tuple(load_shipped() if shipped is None else shipped)
        self._loaded = False
        self._lock = anyio.Lock()
        # the watch's view: name -> (revision, recipe or None when removed or unusable)
        self._view: dict[str, tuple[int, Recipe | None]] | None = None  # None: not primed
        self._building: dict[str, tuple[int, Recipe | None]] | None = None  # the view the watch is filling
        self._listing: list[Recipe] | None = None  # the view's recipes sorted by name, built on first use
        self._primed = anyio.Event()
        self._seen = 0  # the newest revision the watch has delivered
        self._advanced = anyio.Event()  # set (and replaced) whenever the watch delivers one

    async def _get(self, key: str) -> bytes | None:
        try:
            entry = await self.kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        return entry.value

    async def load_shipped(self) -> None:
        """Load the shipped recipes into the bucket, once per store."""
        async with self._lock:
            if self._loaded:
                return
            raw = await self._get(SHIPPED_KEY)
            seen = set(_names.decode(raw)) if raw else set()
            for recipe in self.shipped:
                stored = await self._get(KEY_PREFIX + recipe.name)
                if stored is None:
                    if recipe.name in seen:
                        continue  # the user removed it
                    await self.kv.put(KEY_PREFIX + recipe.name, msgspec.json.encode(recipe))
                    continue
                try:
                    current = _recipe_json.decode(stored)
                except msgspec.DecodeError:
                    current = None
                if current is None or (current.shipped and current != recipe):
                    await self.kv.put(KEY_PREFIX + recipe.name, msgspec.json.encode(recipe))
            names = sorted(seen | {r.name for r in self.shipped})
            await self.kv.put(SHIPPED_KEY, msgspec.json.encode(names))
            self._loaded = True

    async def all(self) -> list[Recipe]:
        """Return every stored recipe, sorted by name (unreadable entries are skipped and logged)."""
        await self.load_shipped()
        try:
            keys = await self.kv.keys()
        except nats.js.errors.NoKeysError:
            return []
        recipes = []
        for key in sorted(k for k in keys if k.startswith(KEY_PREFIX)):
            raw = await self._get(key)
            if raw is None:
                continue
            try:
                recipes.append(decode_recipe(raw))
            except RecipeInvalid as exc:
                log.warning("planner: skipping unusable recipe %s: %s", key, exc)
        return recipes

    async def current(self) -> list[Recipe]:
        """Return the recipes to plan with, sorted by name: the watch's view, or :meth:`all` until it is primed.

        Raises
        ------
        TandemError
            Bus errors of the fallback read (as :meth:`all`).
        """
        if self._view is None:
            return await self.all()
        # a change acknowledged to its writer may still be on its way to the watch: the newest revision
        # of the recipe keys (one request) says whether the view has it; if not, wait for the watch
        latest = await self.kv.last_revision(KEY_PREFIX + ">")
        if latest > self._seen:
            with anyio.move_on_after(CATCH_UP_S):
                while self._view is not None and self._seen < latest:
                    await self._advanced.wait()
            if self._view is None or self._seen < latest:
                return await self.all()
        view = self._view
        if view is None:  # dropped while the revision was asked for (bucket deleted, consumer lost)
            return await self.all()
        if self._listing is None:
            self._listing = [recipe for _, (_, recipe) in sorted(view.items()) if recipe is not None]
        return list(self._listing)

    @property
    def primed(self) -> bool:
        """Whether :meth:`current` answers from memory."""
        return self._view is not None

    async def wait_primed(self) -> None:
        """Wait until :meth:`current` answers from memory (the watch has delivered every stored recipe)."""
        while self._view is None:
            await self._primed.wait()

    async def get(self, name: str) -> Recipe:
        """Return one recipe.

        Raises
        ------
        RecipeNotFound
        """
        await self.load_shipped()
        raw = await self._get(KEY_PREFIX + name) if _valid_name(name) else None
        if raw is None:
            raise RecipeNotFound(f"no recipe named {name!r} (tandem plans list)")
        return decode_recipe(raw)

    async def add(self, recipe: Recipe, *, replace: bool = False) -> Recipe:
        """Vet and store a recipe as the user's own (``shipped`` false).

        Raises
        ------
        RecipeInvalid
            When it fails :func:`check_recipe`, or exists and ``replace`` is false.
        """
        check_recipe(recipe)
        await self.load_shipped()
        recipe = msgspec.structs.replace(recipe, shipped=False)
        key = KEY_PREFIX + recipe.name
        if replace:
            self._note(recipe.name, await self.kv.put(key, msgspec.json.encode(recipe)), recipe)
            return recipe
        try:
            revision = await self.kv.create(key, msgspec.json.encode(recipe))
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise RecipeInvalid(f"a recipe named {recipe.name!r} exists; remove it first or replace it") from exc
        self._note(recipe.name, revision, recipe)
        return recipe

    async def remove(self, name: str) -> None:
        """Delete a recipe (a shipped one stays removed).

        Raises
        ------
        RecipeNotFound
        """
        await self.get(name)
        await self.kv.delete(KEY_PREFIX + name)
        for view in (self._view, self._building):
            if view is not None and name in view:  # the delete marker's revision comes with the watch
                view[name] = (view[name][0], None)
                self._listing = None

    # ------------------------------------------------------------------ the watch

    async def watch(self) -> None:
        """Keep the in-memory view of :meth:`current` up to date until cancelled.

        Loads the shipped recipes, then follows ``recipe.>`` in the bucket. When the
        watch fails (JetStream unavailable, its consumer or the bucket lost) the view is
        dropped, so :meth:`current` reads the bucket, and the watch starts again after a
        pause (0.5 s, doubling up to 30 s while it keeps failing); more than
        :data:`MAX_WATCHED` recipe keys also drop the view (for 30 s at a time).
        """
        pause = 0.5
        while True:
            try:
                await self.load_shipped()
                overflow = await self._follow()
            except (nats.errors.Error, TandemError) as exc:
                log.info("planner: recipe watch stopped (%s: %s); planning reads the bucket meanwhile",
                         type(exc).__name__, exc)
                overflow = False
            pause = 30.0 if overflow else pause
            await anyio.sleep(pause)
            pause = min(pause * 2, 30.0)

    async def _follow(self) -> bool:
        """Follow the bucket's recipes until the watch's consumer is gone; ``True`` when there were too many."""
        watcher: KeyValue.KeyWatcher = await self.kv.watch(KEY_PREFIX + ">")
        self._building = view = {}
        try:
            # nats-py's first-None marker can come before entries already on their way (it compares
            # num_pending and *received* with 0), so primed is decided here: an entry with nothing
            # pending behind it, or a consumer that had nothing to deliver at all
            info = await watcher._sub.consumer_info()
            if not info.num_pending and not (info.delivered.consumer_seq if info.delivered else 0):
                self._prime(view)
            while True:
                try:
                    entry = await watcher.updates(timeout=WATCH_CHECK_S)
                except nats.errors.TimeoutError:
                    await watcher._sub.consumer_info()  # NotFoundError when the consumer (or the bucket) is gone
                    continue
                if not isinstance(entry, KeyValue.Entry):
                    continue  # nats-py's end-of-initial-values marker
                self._apply(view, entry)
                if len(view) > MAX_WATCHED:
                    log.warning("planner: more than %d recipe keys; planning reads the bucket", MAX_WATCHED)
                    return True
                if self._view is None and entry.delta == 0:
                    self._prime(view)
        finally:
            self._view = self._building = self._listing = None
            self._seen = 0
            self._advanced.set()  # a wait for the watch ends: current() reads the bucket
            self._advanced = anyio.Event()
            if self._primed.is_set():
                self._primed = anyio.Event()
            with anyio.CancelScope(shield=True):
                await self.kv.drop_watcher(watcher)

    def _prime(self, view: dict[str, tuple[int, Recipe | None]]) -> None:
        self._view, self._listing = view, None
        self._primed.set()

    def _apply(self, view: dict[str, tuple[int, Recipe | None]], entry: KeyValue.Entry) -> None:
        """Take a change the watch delivered into ``view``, and note that the watch has come this far."""
        name = entry.key[len(KEY_PREFIX):]
        revision = entry.revision or 0
        self._seen = max(self._seen, revision)
        self._advanced.set()
        self._advanced = anyio.Event()
        if name in view and view[name][0] >= revision:
            return  # this store wrote a newer revision already
        recipe: Recipe | None = None
        if entry.operation not in (KV_DEL, KV_PURGE):
            try:
                recipe = decode_recipe(entry.value or b"")
            except RecipeInvalid as exc:
                log.warning("planner: skipping unusable recipe %s: %s", entry.key, exc)
        view[name] = (revision, recipe)
        self._listing = None

    def _note(self, name: str, revision: int, recipe: Recipe) -> None:
        """Write-through of this store's own change (the watch delivers it again, ignored by revision)."""
        for view in (self._view, self._building):
            if view is not None and (name not in view or view[name][0] < revision):
                view[name] = (revision, recipe)
                self._listing = None


def _valid_name(name: str) -> bool:
    return re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", name) is not None
