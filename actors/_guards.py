"""Guards on model-written text: degenerate repetition, output budget, suspect length (issue 11).

Pure functions, no I/O. The executor applies them to ``manual_transform``
(and so to single stage, which is one ``manual_transform``):

* :func:`execution_budget` before the call: ``max_tokens`` that scales with
  the input (a conversion needs about as many tokens as its input) within
  the model's context, and :class:`InputTooLarge` when the prompt alone does
  not fit, so the user hears it before the model is called;
* :func:`check_degenerate` on the answer (or on the text streamed so far):
  :class:`DegenerateOutput` when a sentence or paragraph is repeated many
  more times than in the input, or the text ends in a loop;
* :func:`suspect_length` after a conversion: a note for stderr when the
  result is much shorter or longer than its input.

Errors (both :class:`~tandem.services.errors.ExecutionError`)::

    DegenerateOutput     the model repeated itself   (code "degenerate_output")
    InputTooLarge        the input does not fit the model's context  ("input_too_large")
"""

from __future__ import annotations

import re
from collections import Counter

import msgspec

from tandem.services.errors import ExecutionError

__all__ = [
    "Budget",
    "DegenerateOutput",
    "InputTooLarge",
    "Repetition",
    "check_degenerate",
    "execution_budget",
    "find_repetition",
    "suspect_length",
]

CHARS_PER_TOKEN = 4
"""The router's estimate (:func:`tandem.services.llm.estimate_tokens`); the budget uses the same."""


class DegenerateOutput(ExecutionError):
    """Raised when model output repeats a sentence, paragraph or phrase over and over."""

    code = "degenerate_output"


class InputTooLarge(ExecutionError):
    """Raised when a prompt does not fit the model's context window."""

    code = "input_too_large"


class Repetition(msgspec.Struct, frozen=True, kw_only=True):
    """A repeated piece of text.

    Parameters
    ----------
    unit : str
        The repeated sentence, paragraph or phrase (whitespace collapsed).
    count : int
        Times it occurs in the output.
    in_source : int
        Times it occurs in the source text.
    kind : {"unit", "loop"}
        ``unit``: a sentence/paragraph repeated anywhere; ``loop``: the text
        ends in the same phrase over and over.
    """

    unit: str
    count: int
    in_source: int = 0
    kind: str = "unit"


_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|\n")
_PARAGRAPH = re.compile(r"\n\s*\n")
_WS = re.compile(r"\s+")
_LETTER = re.compile(r"[^\W\d_]")


def _norm(unit: str) -> str:
    return _WS.sub(" ", unit).strip().lower()


def _units(text: str, min_chars: int) -> Counter[str]:
    """Sentences (or lines) and paragraphs of ``text``, normalised, at least ``min_chars`` long."""
    counts: Counter[str] = Counter()
    for part in _SENTENCE_END.split(text):
        unit = _norm(part)
        if len(unit) >= min_chars and len(set(_LETTER.findall(unit))) >= 3:
            counts[unit] += 1
    for part in _PARAGRAPH.split(text):
        unit = _norm(part)
        if len(unit) >= min_chars and "\n" in part.strip() and len(set(_LETTER.findall(unit))) >= 3:
            counts[unit] += 1  # a multi-line paragraph, counted besides its lines
    return counts


def _tail_loop(text: str, *, min_period: int, max_period: int, repeats: int) -> tuple[str, int] | None:
    """The phrase the text ends with ``repeats`` or more times in a row, with its count."""
    flat = _WS.sub(" ", text.strip())
    for period in range(min_period, min(max_period, len(flat) // repeats) + 1):
        unit = flat[-period:]
        if len(set(_LETTER.findall(unit))) < 2:
            continue
        if flat.endswith(unit * repeats):
            count = repeats
            while flat.endswith(unit * (count + 1)):
                count += 1
            return unit, count
    return None


def find_repetition(text: str, source: str = "", *, min_chars: int = 24, min_extra: int = 8,
                    min_share: float = 0.25, loop_repeats: int = 6) -> Repetition | None:
    """Return the worst degenerate repetition in ``text``, or ``None``.

    A sentence, line or paragraph of at least ``min_chars`` characters (with
    at least three different letters, so rules and table borders do not
    count) is degenerate when it occurs at least twice more than in
    ``source`` (the text the model was given) and the extra copies make up
    ``min_share`` of the output, or at least ``min_extra`` times more and a
    fifth of that share (a real document repeats a code line or two, a
    handful of times: rich's README has ``from rich.console import Console``
    six times). A text that ends with the same phrase (8–200 characters)
    ``loop_repeats`` times in a row, where ``source`` has no such run, is
    degenerate too.

    Parameters
    ----------
    text : str
        The model's output (or what it has streamed so far).
    source : str
        The input it worked on; repetition already there is legitimate.
    min_chars, min_extra, min_share, loop_repeats
        Thresholds, see above.

    Returns
    -------
    Repetition or None

    Examples
    --------
    >>> para = "The quick brown fox jumps over the lazy dog."
    >>> find_repetition("\\n\\n".join([para] * 25)).count
    25
    >>> find_repetition("# Title\\n\\nOne sentence. Another one here.") is None
    True
    """
    out = _units(text, min_chars)
    src = _units(source, min_chars) if source else Counter()
    worst: Repetition | None = None
    for unit, count in out.items():
        extra = count - src.get(unit, 0)
        if extra < 2:
            continue
        share = extra * len(unit) / max(len(_norm(text)), 1)
        if share >= min_share or (extra >= min_extra and share >= min_share / 5):
            if worst is None or count > worst.count:
                worst = Repetition(unit=unit, count=count, in_source=src.get(unit, 0))
    if worst is not None:
        return worst
    loop = _tail_loop(text, min_period=8, max_period=200, repeats=loop_repeats)
    if loop is not None:
        unit, count = loop
        if unit * count not in _WS.sub(" ", source.strip()):
            return Repetition(unit=unit.strip(), count=count, kind="loop")
    return None


def check_degenerate(text: str, source: str = "") -> None:
    """Raise :class:`DegenerateOutput` when :func:`find_repetition` finds one.

    Raises
    ------
    DegenerateOutput
        With the repeated text (cut to 60 characters) and how often it occurs.

    Examples
    --------
    >>> check_degenerate("A fine, varied answer. With two sentences.")
    """
    found = find_repetition(text, source)
    if found is None:
        return
    shown = found.unit if len(found.unit) <= 60 else found.unit[:57] + "..."
    where = "the output ends in a loop of" if found.kind == "loop" else "the output repeats"
    raise DegenerateOutput(f"degenerate_output: {where} {shown!r} {found.count} times"
                           + (f" (the input has it {found.in_source} times)" if found.in_source else ""))


class Budget(msgspec.Struct, frozen=True, kw_only=True):
    """An output budget for one model call.

    Parameters
    ----------
    max_tokens : int
        What to ask for.
    needed : int
        Tokens a full rewrite of the input would need (estimate).
    truncated : bool
        ``max_tokens < needed``: the context leaves no room for a full rewrite;
        a conversion would come out cut short.
    """

    max_tokens: int
    needed: int
    truncated: bool = False


def execution_budget(input_chars: int, prompt_chars: int, *, configured: int, context_tokens: int,
                     min_answer: int = 64, overhead: float = 1.25) -> Budget:
    """Return ``max_tokens`` for a model call on a text: at least as long as the text, within the context.

    Parameters
    ----------
    input_chars : int
        Length of the text the model rewrites.
    prompt_chars : int
        Length of the whole prompt (instructions, text, context), in characters.
    configured : int
        ``two_stage.max_execution_tokens``: the floor (a short input still
        gets this much room).
    context_tokens : int
        The model's context window (``capabilities.context_length``).
    min_answer : int
        The smallest answer worth asking for.
    overhead : float
        Output tokens per input token a rewrite needs (markup grows a little).

    Returns
    -------
    Budget

    Raises
    ------
    InputTooLarge
        When the prompt leaves fewer than ``min_answer`` tokens of the context.

    Examples
    --------
    >>> execution_budget(400, 600, configured=2000, context_tokens=8192).max_tokens
    2000
    >>> execution_budget(12_000, 12_400, configured=2000, context_tokens=8192)
    Budget(max_tokens=3814, needed=3814, truncated=False)
    """
    prompt = prompt_chars // CHARS_PER_TOKEN + 16
    room = context_tokens - prompt
    if room < min_answer:
        raise InputTooLarge(f"input_too_large: the prompt (~{prompt} tokens, {input_chars} characters of input) "
                            f"does not fit the model's context of {context_tokens} tokens with room for an answer; "
                            "use a model with a larger context or a smaller input")
    needed = int(input_chars / CHARS_PER_TOKEN * overhead) + min_answer
    wanted = max(configured, needed)
    return Budget(max_tokens=min(wanted, room), needed=needed, truncated=room < needed)


def suspect_length(output: str, source: str, *, low: float = 0.5, high: float = 2.0,
                   min_source: int = 200) -> str | None:
    """Return a note when a conversion's result is much shorter or longer than its input, else ``None``.

    Meant for stderr after a single-stage (fallback) conversion: converting
    a document keeps its length within a factor of about two.

    Examples
    --------
    >>> suspect_length("x" * 100, "y" * 1000)
    'suspect result: 100 characters from 1000 of input (10% of its length) for a conversion'
    >>> suspect_length("x" * 900, "y" * 1000) is None
    True
    """
    if len(source) < min_source:
        return None
    ratio = len(output) / len(source)
    if low <= ratio <= high:
        return None
    return (f"suspect result: {len(output)} characters from {len(source)} of input "
            f"({ratio:.0%} of its length) for a conversion")
