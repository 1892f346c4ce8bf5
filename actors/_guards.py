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

import msgspec
from tandem.services.errors import ExecutionError
from tandem.services.repetition import Repetition, find_repetition

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
    where = "the output ends in a loop of" if found.kind == "loop" else "the output repeats"
    raise DegenerateOutput(f"degenerate_output: {where} {found.shown!r} {found.count} times"
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
