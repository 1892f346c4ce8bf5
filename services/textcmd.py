"""Tandem's built-in text commands.

Pure-Python, in-memory re-implementations of a useful subset of the GNU text
tools (``cat``, ``grep``, ``sed``, ``head``, ``tail``, ``sort``, ``uniq``,
``wc``, ``tr``, ``cut``, ``rev``, ``tac``, ``nl``, ``paste``), plus ``pandoc``
for document conversion.  The plan executor runs them instead of spawning
processes: there is never a shell and never any file access.  Every command
reads its input from a string (the "stdin") and returns its output as a string
(the "stdout").  ``pandoc`` is the one exception to "no subprocess": it runs
the pandoc binary of the ``pypandoc-binary`` wheel, sandboxed, with text on
stdin/stdout (see :mod:`tandem.services.convert`); without that wheel it is
not offered (:func:`available_commands`).

Behaviour follows GNU coreutils, sed and grep in the C locale on the supported
subset.  Input lines are split on ``"\\n"``; tools that produce new lines
(``grep``, ``sort``, ``uniq``, ``cut``, ``wc``, ``nl``, ``paste``, ``tac``)
newline-terminate every output line, while the byte-copying tools (``cat``,
``sed``, ``tr``, ``head``, ``tail``, ``rev``) keep a missing final newline of
the input missing, as GNU does.

Every misuse raises :class:`~tandem.services.errors.CommandError` with a one-line
message that starts with the command name.

Bounds
------
Plans are untrusted, so every command runs within :class:`Limits`:

* every regular expression runs on the `regex`_ engine with a time budget: one
  search may take ``regex_timeout_s`` (CPU time, as the engine counts it), and
  a whole step ``time_limit_s`` (wall-clock time); past either,
  :class:`RegexTimeout` (code ``regex_timeout``) names the pattern;
* patterns whose repeat counts would unroll past 100,000 nodes when compiled
  (``((a{99}){99}){99}``) are refused before compiling, which no timeout bounds;
* a step's output may not pass ``max_output_chars``, nor the plan's buffers
  together ``max_plan_chars``: :class:`OutputTooLarge` (``output_too_large``)
  is raised while the output grows, before it is built;
* :func:`run_builtin` runs a command in a worker thread, at most
  ``max_threads`` at a time per event loop, so a CPU-heavy step never stalls
  the event loop (the `regex`_ engine also releases the GIL while it matches);
  a command on a small input is first tried on the event loop within
  :data:`INLINE_BUDGET_S` (milliseconds), and goes to the thread only when that
  is not enough.

Errors::

    CommandError                 a built-in text command was misused (code "command")
    ├── RegexTimeout               a regex ran past its time budget ("regex_timeout")
    ├── OutputTooLarge             a step's output passed its cap ("output_too_large")
    ├── CommandTimeout             a step ran past its time limit ("command_timeout")
    └── CommandUnavailable         the command is not installed ("command_unavailable")

.. _regex: https://pypi.org/project/regex/

Notes
-----
Regular expressions are POSIX BRE (default) or ERE (``-E``) translated to
Python syntax.  Python picks the leftmost *first* alternative where POSIX
picks the leftmost *longest* match, so ``grep -oE 'a|ab'`` prints ``a`` where
GNU prints ``ab``.  Perl escapes that POSIX lacks (``\\d``, ``\\D``, ...) are
rejected rather than silently matching a letter as GNU does.
"""

from __future__ import annotations

import bisect
import contextvars
import dataclasses
import functools
import getopt
import os
import re
import string
import time
import warnings
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import anyio
import anyio.to_thread
import regex as rx
from anyio.lowlevel import RunVar

from tandem.services.errors import CommandError

__all__ = [
    "COMMANDS",
    "CommandInfo",
    "CommandTimeout",
    "CommandUnavailable",
    "DEFAULT_LIMITS",
    "Limits",
    "OutputTooLarge",
    "RegexTimeout",
    "available_commands",
    "buffered_chars",
    "command_names",
    "describe_commands",
    "regex_search",
    "run_builtin",
    "run_command",
]

CommandFn = Callable[[Sequence[str], str], str]


# --------------------------------------------------------------------------
# errors and limits
# --------------------------------------------------------------------------


class RegexTimeout(CommandError):
    """Raised when a regular expression runs past its time budget.

    Parameters
    ----------
    cmd : str
        The command (or ``"conditional_branch"``) that ran the pattern.
    pattern : str
        The pattern as the plan wrote it.
    seconds : float
        The budget it ran past.
    """

    code = "regex_timeout"

    def __init__(self, cmd: str, pattern: str, seconds: float) -> None:
        self.cmd = cmd
        self.pattern = pattern
        self.seconds = seconds
        super().__init__(f"{cmd}: regex_timeout: pattern '{_clip(pattern)}' ran past its {seconds:g} s time budget")


class OutputTooLarge(CommandError):
    """Raised when a step's output grows past its cap.

    Parameters
    ----------
    cmd : str
        The command.
    limit : int
        The cap in characters.
    why : str
        Which cap: the step's or what is left of the plan's.
    """

    code = "output_too_large"

    def __init__(self, cmd: str, limit: int, why: str) -> None:
        self.cmd = cmd
        self.limit = limit
        super().__init__(f"{cmd}: output_too_large: the output passed {limit:,} characters ({why})")


class CommandTimeout(CommandError):
    """Raised when a built-in command runs past the step's time limit."""

    code = "command_timeout"


class CommandUnavailable(CommandError):
    """Raised when a built-in command is not installed (e.g. ``pandoc`` without ``pypandoc-binary``)."""

    code = "command_unavailable"


def _clip(text: str, n: int = 120) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Bounds on one built-in command step.

    Parameters
    ----------
    regex_timeout_s : float
        Longest one regex search may take (one ``grep`` line, one ``sed``
        address test, all matches of one ``s///g`` on one line...), in CPU
        seconds of the process: the `regex` engine's ``timeout`` counts
        ``clock()``, so on a machine busy with other work a search runs longer
        in wall-clock time, and other busy threads of the process use the
        budget up faster.
    time_limit_s : float
        Longest a whole step may take: its regex work together, and ``pandoc``.
    max_output_chars : int
        Largest output of one step, in characters.
    max_plan_chars : int
        Largest total of a plan's text buffers (inputs, intermediate buffers,
        outputs), in characters; a step's output may use what is left.
    max_threads : int
        Built-in commands running at once per event loop (worker threads).
    pandoc_max_heap_mb : int
        Heap limit of the pandoc process (GHC RTS ``-M``).

    Examples
    --------
    >>> Limits(max_output_chars=1000).regex_timeout_s
    0.3
    """

    regex_timeout_s: float = 0.3
    time_limit_s: float = 30.0
    max_output_chars: int = 16 * 2**20
    max_plan_chars: int = 64 * 2**20
    max_threads: int = max(1, min(4, os.cpu_count() or 1))
    pandoc_max_heap_mb: int = 1024

    def __post_init__(self) -> None:
        if not (self.regex_timeout_s > 0 and self.time_limit_s > 0):
            raise ValueError("regex_timeout_s and time_limit_s must be positive")
        if min(self.max_output_chars, self.max_plan_chars, self.max_threads, self.pandoc_max_heap_mb) < 1:
            raise ValueError("max_output_chars, max_plan_chars, max_threads and pandoc_max_heap_mb must be >= 1")


DEFAULT_LIMITS = Limits()


class _Budget:
    """What one running step may still spend: characters and time."""

    __slots__ = ("limits", "max_chars", "why", "deadline")

    def __init__(self, limits: Limits, held_chars: int) -> None:
        self.limits = limits
        room = limits.max_plan_chars - max(0, held_chars)
        if room < limits.max_output_chars:
            self.max_chars = max(0, room)
            self.why = f"the plan's buffers may hold {limits.max_plan_chars:,} characters, {held_chars:,} are in use"
        else:
            self.max_chars = limits.max_output_chars
            self.why = "the step output limit"
        self.deadline = time.monotonic() + limits.time_limit_s

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def regex_timeout(self) -> tuple[float, float]:
        """Return (timeout for the next search, the budget it stands for)."""
        left = self.remaining()
        per_call = self.limits.regex_timeout_s
        return (per_call, per_call) if left >= per_call else (max(left, 1e-6), self.limits.time_limit_s)

    def check_size(self, cmd: str, size: int) -> None:
        if size > self.max_chars:
            raise OutputTooLarge(cmd, self.max_chars, self.why)

    def check_time(self, cmd: str) -> None:
        if time.monotonic() > self.deadline:
            raise CommandTimeout(f"{cmd}: command_timeout: the step ran past its {self.limits.time_limit_s:g} s limit")


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("tandem_textcmd_budget", default=None)


def _current() -> _Budget:
    budget = _budget.get()
    return _Budget(DEFAULT_LIMITS, 0) if budget is None else budget  # None: called directly, not by run_command


class _Regex:
    """A compiled pattern whose every search runs within the step's time budget.

    Parameters
    ----------
    cmd : str
        Command name, for errors.
    source : str
        The pattern as the plan wrote it, for errors.
    compiled : regex.Pattern
        The translated pattern, compiled by the `regex` engine.
    """

    __slots__ = ("cmd", "source", "compiled", "groups")

    def __init__(self, cmd: str, source: str, compiled: Any) -> None:
        self.cmd = cmd
        self.source = source
        self.compiled = compiled
        self.groups: int = compiled.groups

    def _timeout(self, budget: float) -> RegexTimeout:
        return RegexTimeout(self.cmd, self.source, budget)

    def search(self, text: str) -> Any:
        timeout, budget = _current().regex_timeout()
        try:
            return self.compiled.search(text, timeout=timeout)
        except TimeoutError as exc:
            raise self._timeout(budget) from exc

    def match(self, text: str) -> Any:
        timeout, budget = _current().regex_timeout()
        try:
            return self.compiled.match(text, timeout=timeout)
        except TimeoutError as exc:
            raise self._timeout(budget) from exc

    def finditer(self, text: str) -> Iterator[Any]:
        """Like ``Pattern.finditer``, each search bounded rather than the whole scan.

        The engine's ``timeout`` covers a whole ``finditer`` scan; a legitimate
        long line with many matches would run past it.  So once half the
        budget is gone, the scan restarts after the last non-empty match with
        a fresh budget (after a non-empty match a new scan from its end finds
        exactly what the old one would have).  A single search that takes the
        whole budget still times out.
        """
        budget = _current()
        start = 0
        while True:
            timeout, limit = budget.regex_timeout()
            renew = time.process_time() + timeout / 2  # the engine's clock: the process's CPU time
            restart = False
            try:
                for n, m in enumerate(self.compiled.finditer(text, start, timeout=timeout)):
                    yield m
                    if not n & 63 and m.end() > m.start() and time.process_time() > renew:
                        start, restart = m.end(), True
                        break
            except TimeoutError as exc:
                raise self._timeout(limit) from exc
            if not restart:
                return


class _Out(list[str]):
    """An output line list that enforces the step's size and time limits as it grows."""

    __slots__ = ("cmd", "size", "budget", "extra")

    def __init__(self, cmd: str, extra: int = 1) -> None:
        super().__init__()
        self.cmd = cmd
        self.size = 0
        self.extra = extra  # characters each line adds when joined (its newline)
        self.budget = _current()

    def append(self, line: str) -> None:  # type: ignore[override]
        self.size += len(line) + self.extra
        if self.size > self.budget.max_chars:
            raise OutputTooLarge(self.cmd, self.budget.max_chars, self.budget.why)
        if not len(self) & 4095:
            self.budget.check_time(self.cmd)
        super().append(line)

    def extend(self, lines: Iterable[str]) -> None:  # type: ignore[override]
        for line in lines:
            self.append(line)


# --------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------


def _getopt(
    cmd: str, args: Sequence[str], shortopts: str, longopts: Mapping[str, str] | None = None
) -> tuple[list[tuple[str, str]], list[str]]:
    """Parse argv-style *args* like GNU ``getopt_long`` (options may follow operands).

    Parameters
    ----------
    cmd : str
        Command name, for error messages.
    args : sequence of str
        The arguments, without the command name.
    shortopts : str
        :func:`getopt.getopt` short-option spec, e.g. ``"nk:t:"``.
    longopts : mapping of str to str, optional
        Long option (``"key="`` if it takes a value) to the short option it
        is an alias of (``"-k"``); results use the short name.

    Returns
    -------
    tuple
        ``(options, operands)``; options are ``(short_name, value)`` pairs.

    Raises
    ------
    CommandError
        On an unknown option or a missing option argument.
    """
    longopts = longopts or {}
    try:
        opts, operands = getopt.gnu_getopt(list(args), shortopts, list(longopts))
    except getopt.GetoptError as exc:
        opt = ("--" if len(exc.opt) > 1 else "-") + exc.opt if exc.opt else ""
        if "not recognized" in exc.msg:
            raise CommandError(f"{cmd}: unknown option '{opt}'") from exc
        if "requires argument" in exc.msg:
            raise CommandError(f"{cmd}: option '{opt}' requires an argument") from exc
        raise CommandError(f"{cmd}: {exc.msg}") from exc
    alias = {"--" + name.rstrip("="): short for name, short in longopts.items()}
    return [(alias.get(o, o), v) for o, v in opts], operands


def _no_files(cmd: str, operands: Sequence[str]) -> None:
    """Reject FILE operands; only ``-`` (standard input) is allowed."""
    for op in operands:
        if op != "-":
            raise CommandError(
                f"{cmd}: file operand '{op}' is not allowed; built-in commands only read their input text"
            )


def _split(text: str) -> tuple[list[str], bool]:
    """Split *text* into lines; also report whether it ended with a newline."""
    if not text:
        return [], True
    if text.endswith("\n"):
        return text[:-1].split("\n"), True
    return text.split("\n"), False


def _join(lines: Sequence[str]) -> str:
    """Newline-terminate every line."""
    return "".join(line + "\n" for line in lines)


def _join_keep(lines: Sequence[str], last_is_input_end: bool, trailing_nl: bool) -> str:
    """Like :func:`_join`, but leave off the final newline where the input had none."""
    if not lines:
        return ""
    out = "\n".join(lines)
    return out if last_is_input_end and not trailing_nl else out + "\n"


def _int(cmd: str, value: str, what: str, *, minimum: int = 0) -> int:
    """Parse a non-negative decimal argument, at least *minimum*."""
    if not value.isdigit() or int(value) < minimum:
        raise CommandError(f"{cmd}: invalid {what}: '{value}'")
    return int(value)


# POSIX character classes in the C locale, each in ascending code-point order.
_CLASS_CHARS: dict[str, str] = {
    "upper": string.ascii_uppercase,
    "lower": string.ascii_lowercase,
    "digit": string.digits,
    "alpha": string.ascii_uppercase + string.ascii_lowercase,
    "alnum": string.digits + string.ascii_uppercase + string.ascii_lowercase,
    "xdigit": string.digits + "ABCDEF" + "abcdef",
    "space": "\t\n\v\f\r ",
    "blank": "\t ",
    "punct": string.punctuation,
    "cntrl": "".join(map(chr, range(32))) + "\x7f",
    "print": "".join(map(chr, range(32, 127))),
    "graph": "".join(map(chr, range(33, 127))),
}

# --------------------------------------------------------------------------
# POSIX regex -> Python re
# --------------------------------------------------------------------------

_PASS_ESCAPES = {"w": r"\w", "W": r"\W", "s": r"\s", "S": r"\S", "b": r"\b", "B": r"\B",
                 "<": r"\b(?=\w)", ">": r"\b(?<=\w)", "`": r"\A", "'": r"\Z", "n": "\n", "t": "\t"}
_ERE_INTERVAL = re.compile(r"\{(\d+(,\d*)?|,\d+)\}")


def _bracket(cmd: str, pat: str, i: int) -> tuple[str, int]:
    """Translate the bracket expression starting at ``pat[i] == '['``."""
    n = len(pat)
    j = i + 1
    neg = j < n and pat[j] == "^"
    if neg:
        j += 1
    items: list[str] = []
    first = True
    while True:
        if j >= n:
            raise CommandError(f"{cmd}: unmatched [ in regular expression '{pat}'")
        c = pat[j]
        if c == "]" and not first:
            break
        if c == "[" and j + 1 < n and pat[j + 1] in ":.=":
            kind = pat[j + 1]
            end = pat.find(kind + "]", j + 2)
            if end < 0:
                raise CommandError(f"{cmd}: unterminated [{kind} in regular expression '{pat}'")
            name = pat[j + 2 : end]
            if kind == ":":
                if name not in _CLASS_CHARS:
                    raise CommandError(f"{cmd}: invalid character class '[:{name}:]' in '{pat}'")
                items.append("".join(map(re.escape, _CLASS_CHARS[name])))
            else:
                items.append(re.escape(name))
            j = end + 2
        else:
            is_range = c == "-" and not first and j + 1 < n and pat[j + 1] != "]"
            items.append("-" if is_range else re.escape(c))
            j += 1
        first = False
    return ("[^" if neg else "[") + "".join(items) + "]", j + 1


def _translate(cmd: str, pat: str, extended: bool, offset: int = 0) -> tuple[str, int]:
    """Translate a POSIX basic (or, if *extended*, extended) regex to Python syntax.

    Back-references are shifted by *offset* groups; returns the Python pattern
    and its number of groups.
    """
    out: list[str] = []
    groups: list[int] = []  # indices in out of open "("
    ngroups = 0
    atom = -1  # index in out where the last repeatable atom starts, -1 = none
    quantified = False
    at_start = True  # start of the pattern, a group or an alternative
    i, n = 0, len(pat)

    def add_atom(s: str) -> None:
        nonlocal atom, quantified, at_start
        atom, quantified, at_start = len(out), False, False
        out.append(s)

    def quantify(q: str) -> None:
        nonlocal quantified
        if quantified:  # POSIX allows a** / a*+ ; Python does not: wrap the atom
            out[atom:] = ["(?:" + "".join(out[atom:]) + ")"]
        out.append(q)
        quantified = True

    def meta(c: str) -> None:
        nonlocal atom, at_start, quantified, ngroups
        if c == "(":
            groups.append(len(out))
            out.append("(")
            ngroups += 1
            atom, at_start = -1, True
        elif c == ")":
            if not groups:
                if extended:  # GNU ERE: an unmatched ) is literal
                    add_atom(r"\)")
                    return
                raise CommandError(f"{cmd}: unmatched \\) in regular expression '{pat}'")
            out.append(")")
            atom, quantified, at_start = groups.pop(), False, False
        elif c == "|":
            out.append("|")
            atom, at_start = -1, True
        elif atom < 0:  # nothing to repeat
            if extended:
                raise CommandError(f"{cmd}: '{c}' has nothing to repeat in regular expression '{pat}'")
            add_atom(re.escape(c))
        else:
            quantify(c)

    while i < n:
        c = pat[i]
        if c == "\\":
            i += 1
            if i >= n:
                raise CommandError(f"{cmd}: trailing backslash in regular expression '{pat}'")
            c = pat[i]
            if not extended and c in "(){}|+?":
                if c == "{":
                    end = pat.find("\\}", i)
                    body = pat[i + 1 : end] if end >= 0 else ""
                    if end < 0 or not re.fullmatch(r"\d+(,\d*)?|,\d+", body):
                        raise CommandError(f"{cmd}: invalid \\{{...\\}} interval in regular expression '{pat}'")
                    if atom < 0:
                        raise CommandError(f"{cmd}: interval with nothing to repeat in regular expression '{pat}'")
                    quantify("{" + body + "}")
                    i = end + 1
                elif c == "}":
                    raise CommandError(f"{cmd}: unmatched \\}} in regular expression '{pat}'")
                else:
                    meta(c)
            elif c in "123456789":
                if int(c) > ngroups:
                    raise CommandError(f"{cmd}: invalid back reference '\\{c}' in regular expression '{pat}'")
                add_atom(f"(?:\\{int(c) + offset})")
            elif c in _PASS_ESCAPES:
                if c in "<>`'bB":  # anchors: nothing to repeat after them
                    out.append(_PASS_ESCAPES[c])
                    atom = -1
                else:
                    add_atom(_PASS_ESCAPES[c])
            elif c.isalnum():
                raise CommandError(f"{cmd}: unsupported escape '\\{c}' in regular expression '{pat}'")
            else:
                add_atom(re.escape(c))
        elif c == "[":
            cls, i = _bracket(cmd, pat, i)
            add_atom(cls)
            continue
        elif c == "*":
            meta(c) if atom >= 0 or extended else add_atom(r"\*")
        elif c in "()|+?":
            meta(c) if extended else add_atom(re.escape(c))
        elif c == "{":
            m = _ERE_INTERVAL.match(pat, i) if extended else None
            if m and atom >= 0:
                quantify(m.group(0))
                i = m.end()
                continue
            add_atom(r"\{")
        elif c == "^":
            if extended or at_start:
                out.append("^")
                atom, at_start = -1, False
            else:
                add_atom(r"\^")
        elif c == "$":
            if extended or i == n - 1 or pat.startswith(("\\)", "\\|"), i + 1):
                out.append(r"\Z")  # Python's "$" would also match before a final "\n"
                atom = -1
            else:
                add_atom(r"\$")
        elif c == ".":
            add_atom(".")
        else:
            add_atom(re.escape(c))
        i += 1
    if groups:
        raise CommandError(f"{cmd}: unmatched ( in regular expression '{pat}'")
    return "".join(out), ngroups


_MAX_UNROLLED = 100_000
_QUANT = re.compile(r"\{(\d*)(?:,(\d*))?\}")


def _unrolled_size(src: str) -> int:
    """Estimate how many nodes the engine makes of Python-syntax *src* (an upper bound).

    The `regex` engine unrolls the minimum count of every ``{m}``/``{m,n}``
    when it compiles, so ``(?:(?:a{999}){999}){999}`` would take all memory
    before any match-time budget applies: nested minimum counts multiply.
    """
    frames = [[0, 0]]  # per open group: [size of finished atoms, size of the last atom]
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        top = frames[-1]
        if c == "\\":
            top[0], top[1] = top[0] + top[1], 1
            i += 2
            continue
        if c == "[":
            j = i + 1
            j += src.startswith("^", j)
            j += src.startswith("]", j)
            while j < n and src[j] != "]":
                j += 2 if src[j] == "\\" else 1
            top[0], top[1] = top[0] + top[1], 1
            i = j + 1
            continue
        if c == "(":
            frames.append([0, 0])
            if src.startswith("?", i + 1):  # (?:  (?=  (?<name>  (?i)  ...: skip the group's prefix
                j = i + 2
                while j < n and src[j] not in ":)=!>":
                    j += 1
                i = j + (j < n and src[j] != ")")
                if j < n and src[j] == ")":  # (?i) takes no content
                    frames.pop()
                    i = j + 1
                continue
            i += 1
            continue
        if c == ")" and len(frames) > 1:
            done = frames.pop()
            top = frames[-1]
            top[0], top[1] = top[0] + top[1], done[0] + done[1]
            i += 1
            continue
        if c == "{":
            m = _QUANT.match(src, i)
            if m and (m.group(1) or m.group(2)):
                top[1] *= max(int(m.group(1) or 0), 1)
                i = m.end()
                continue
        if c not in "*+?|":
            top[0], top[1] = top[0] + top[1], 1
        i += 1
    return sum(a + b for a, b in frames)


def _compile_src(cmd: str, src: str, flags: int, shown: str) -> _Regex:
    """Compile Python-syntax *src* with the bounded engine; *shown* names it in errors."""
    if _unrolled_size(src) > _MAX_UNROLLED:
        raise CommandError(f"{cmd}: regular expression '{_clip(shown)}' is too large: "
                           f"its repeat counts multiply past {_MAX_UNROLLED:,}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _Regex(cmd, shown, rx.compile(src, flags))
    except rx.error as exc:
        raise CommandError(f"{cmd}: invalid regular expression '{_clip(shown)}': {exc.msg}") from exc
    except (OverflowError, RecursionError, MemoryError) as exc:  # e.g. a{99999999}
        raise CommandError(f"{cmd}: regular expression '{_clip(shown)}' is too large") from exc


def _compile(cmd: str, pattern: str, *, extended: bool, icase: bool = False) -> _Regex:
    """Compile a POSIX *pattern* to a bounded regex.

    Raises
    ------
    CommandError
        If the pattern is invalid.
    """
    src = _translate(cmd, pattern, extended)[0]
    return _compile_src(cmd, src, rx.IGNORECASE if icase else 0, pattern)


# --------------------------------------------------------------------------
# cat, rev, tac, nl, paste
# --------------------------------------------------------------------------


def _cat(args: Sequence[str], text: str) -> str:
    opts, operands = _getopt(
        "cat", args, "nbsE", {"number": "-n", "number-nonblank": "-b", "squeeze-blank": "-s", "show-ends": "-E"}
    )
    _no_files("cat", operands)
    flags = {o for o, _ in opts}
    number_all, nonblank, squeeze, ends = ("-n" in flags), ("-b" in flags), ("-s" in flags), ("-E" in flags)
    if not (number_all or nonblank or squeeze or ends):
        return text
    lines, trailing = _split(text)
    out = _Out("cat")
    num = 0
    prev_blank = False
    for idx, line in enumerate(lines):
        if squeeze and line == "" and prev_blank:
            continue
        prev_blank = line == ""
        if nonblank and line or number_all and not nonblank:
            num += 1
            line = f"{num:6d}\t{line}"
        if ends and (idx < len(lines) - 1 or trailing):
            line += "$"
        out.append(line)
    return _join_keep(out, True, trailing)


def _rev(args: Sequence[str], text: str) -> str:
    _opts, operands = _getopt("rev", args, "")
    _no_files("rev", operands)
    lines, trailing = _split(text)
    return _join_keep([line[::-1] for line in lines], True, trailing)


def _tac(args: Sequence[str], text: str) -> str:
    _opts, operands = _getopt("tac", args, "")
    _no_files("tac", operands)
    return _join(_split(text)[0][::-1])


def _nl(args: Sequence[str], text: str) -> str:
    opts, operands = _getopt("nl", args, "b:w:s:v:")
    _no_files("nl", operands)
    style, width, sep, start = "t", 6, "\t", 1
    for o, v in opts:
        if o == "-b":
            if v not in ("a", "t", "n"):
                raise CommandError(f"nl: invalid body numbering style '{v}' (use a, t or n)")
            style = v
        elif o == "-w":
            width = _int("nl", v, "line number field width", minimum=1)
        elif o == "-s":
            sep = v
        else:
            start = _int("nl", v, "starting line number")
    _current().check_size("nl", width + len(sep))
    out = _Out("nl")
    num = start
    for line in _split(text)[0]:
        if style == "a" or style == "t" and line:
            out.append(f"{num:>{width}d}{sep}{line}")
            num += 1
        else:
            out.append(" " * (width + len(sep)) + line)
    return _join(out)


def _unescape_delims(value: str) -> list[str]:
    """Decode a ``paste -d`` list (``\\n``, ``\\t``, ``\\\\``, ``\\0`` = empty)."""
    out: list[str] = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            i += 1
            c = {"n": "\n", "t": "\t", "\\": "\\", "0": ""}.get(value[i], value[i])
        out.append(c)
        i += 1
    return out


def _paste(args: Sequence[str], text: str) -> str:
    opts, operands = _getopt("paste", args, "sd:", {"serial": "-s", "delimiters=": "-d"})
    _no_files("paste", operands)
    serial = False
    delims = ["\t"]
    for o, v in opts:
        if o == "-s":
            serial = True
        else:
            delims = _unescape_delims(v)
            if not delims:
                delims = [""]
    lines = _split(text)[0]

    def glue(fields: Sequence[str]) -> str:
        parts = [fields[0]] if fields else [""]
        for k, f in enumerate(fields[1:]):
            parts += [delims[k % len(delims)], f]
        return "".join(parts)

    if serial:
        return glue(lines) + "\n"
    columns = max(1, len(operands))
    out = _Out("paste")
    for k in range(0, len(lines), columns):
        row = lines[k : k + columns]
        out.append(glue(row + [""] * (columns - len(row))))
    return _join(out)


# --------------------------------------------------------------------------
# grep
# --------------------------------------------------------------------------


def _grep(args: Sequence[str], text: str) -> str:
    opts, operands = _getopt(
        "grep",
        args,
        "ivcnEFGowxe:m:",
        {"ignore-case": "-i", "invert-match": "-v", "count": "-c", "line-number": "-n", "only-matching": "-o",
         "word-regexp": "-w", "line-regexp": "-x", "extended-regexp": "-E", "fixed-strings": "-F",
         "basic-regexp": "-G", "regexp=": "-e", "max-count=": "-m"},
    )
    patterns: list[str] = []
    flags: set[str] = set()
    mode = "G"
    max_count = -1
    for o, v in opts:
        if o == "-e":
            patterns.append(v)
        elif o == "-m":
            max_count = _int("grep", v, "max count")
        elif o in ("-E", "-F", "-G"):
            mode = o[1]
        else:
            flags.add(o)
    if not patterns:
        if not operands:
            raise CommandError("grep: no pattern given")
        patterns.append(operands.pop(0))
    _no_files("grep", operands)
    pats = [p for pat in patterns for p in pat.split("\n")]
    icase = rx.IGNORECASE if "-i" in flags else 0
    if mode == "F":
        src = "|".join(rx.escape(p) for p in pats)
    else:
        parts, offset = [], 0
        for p in pats:
            part, n = _translate("grep", p, mode == "E", offset)
            parts.append(f"(?:{part})")
            offset += n
        src = "|".join(parts)
    if "-x" in flags:
        src = f"(?:{src})\\Z"
    elif "-w" in flags:
        src = rf"(?<!\w)(?:{src})(?!\w)"
    regex = _compile_src("grep", src, icase, " ".join(pats))
    match = regex.match if "-x" in flags else regex.search
    invert, count, numbers, only = "-v" in flags, "-c" in flags, "-n" in flags, "-o" in flags

    out = _Out("grep")
    matched = 0
    for lineno, line in enumerate(_split(text)[0], 1):
        if matched == max_count:
            break
        if (match(line) is None) != invert:
            continue
        matched += 1
        if count or (only and invert):
            continue
        prefix = f"{lineno}:" if numbers else ""
        if only:
            found = [regex.match(line)] if "-x" in flags else regex.finditer(line)
            out.extend(prefix + m.group(0) for m in found if m.end() > m.start())  # type: ignore[union-attr]
        else:
            out.append(prefix + line)
    return f"{matched}\n" if count else _join(out)


# --------------------------------------------------------------------------
# sed
# --------------------------------------------------------------------------


@dataclass
class _Addr:
    kind: str  # "line", "last", "re", "zero", "plus"
    num: int = 0
    regex: _Regex | None = None

    def hit(self, ps: str, lineno: int, last: bool) -> bool:
        if self.kind == "line":
            return lineno == self.num
        if self.kind == "last":
            return last
        assert self.regex is not None
        return self.regex.search(ps) is not None


@dataclass
class _SedCmd:
    name: str
    a1: _Addr | None = None
    a2: _Addr | None = None
    negate: bool = False
    jump: int = 0  # for "{": index after the matching "}"
    regex: _Regex | None = None
    repl: list[str | int | tuple[str]] = field(default_factory=list)
    nth: int = 1
    glob: bool = False
    sprint: bool = False
    active: bool = False
    end_line: int = 0

    def matches(self, ps: str, lineno: int, last: bool) -> bool:
        return self._raw(ps, lineno, last) != self.negate

    def _raw(self, ps: str, lineno: int, last: bool) -> bool:
        a1, a2 = self.a1, self.a2
        if a1 is None:
            return True
        if a2 is None:
            return a1.hit(ps, lineno, last)
        if self.active:
            if a2.kind == "line" or a2.kind == "plus":
                if lineno >= self.end_line:
                    self.active = False
                return lineno <= self.end_line
            if a2.hit(ps, lineno, last):
                self.active = False
            return True
        if a1.kind == "zero" or not a1.hit(ps, lineno, last):
            if not (a1.kind == "zero" and lineno == 1):
                return False
            # 0,/re/: the end regex may close the range on line 1 itself
            self.active = not a2.hit(ps, lineno, last)
            return True
        if a2.kind == "line":
            self.end_line = a2.num
            self.active = a2.num > lineno
        elif a2.kind == "plus":
            self.end_line = lineno + a2.num
            self.active = a2.num > 0
        else:
            self.active = not (a2.kind == "last" and last)
        return True


class _SedParser:
    """Parse a sed script into a flat program; ``{`` jumps past its ``}``."""

    def __init__(self, script: str, extended: bool) -> None:
        self.s = script
        self.i = 0
        self.extended = extended
        self.last_regex: _Regex | None = None

    def fail(self, msg: str) -> CommandError:
        start = self.s.rfind("\n", 0, self.i) + 1
        end = self.s.find("\n", start)
        snippet = self.s[start : end if end >= 0 else len(self.s)]
        return CommandError(f"sed: {msg} in script '{snippet}'")

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def skip_blanks(self) -> None:
        while self.peek() in (" ", "\t") and self.peek():
            self.i += 1

    def delimited(self, delim: str, what: str, *, regex: bool) -> str:
        """Read up to the next unescaped *delim*; ``\\delim`` becomes *delim*."""
        s, out = self.s, []
        while True:
            if self.i >= len(s) or s[self.i] == "\n":
                raise self.fail(f"unterminated {what}")
            c = s[self.i]
            self.i += 1
            if c == delim:
                return "".join(out)
            if c == "[" and regex:  # like GNU, a delimiter inside [...] is literal
                out.append(c + self.bracket_body())
                continue
            if c == "\\" and self.i < len(s):
                nxt = s[self.i]
                self.i += 1
                if nxt == delim and not (not regex and nxt == "&"):
                    out.append(nxt)
                elif nxt == "\n":
                    out.append("\n")
                else:
                    out.append("\\" + nxt)
            else:
                out.append(c)

    def bracket_body(self) -> str:
        """Copy a bracket expression after its ``[`` (``\\n``/``\\t`` decoded)."""
        s, start = self.s, self.i
        j = start + (1 if s.startswith("^", start) else 0)
        j += 1 if s.startswith("]", j) else 0
        out = [s[start:j]]
        while j < len(s) and s[j] not in "]\n":
            if s[j] == "[" and j + 1 < len(s) and s[j + 1] in ":.=":
                end = s.find(s[j + 1] + "]", j + 2)
                if end >= 0:
                    out.append(s[j : end + 2])
                    j = end + 2
                    continue
            if s.startswith(("\\n", "\\t"), j):
                out.append("\n" if s[j + 1] == "n" else "\t")
                j += 2
                continue
            out.append(s[j])
            j += 1
        if j >= len(s) or s[j] != "]":
            self.i = j
            raise self.fail("unterminated address regex or 's' command (unmatched '[')")
        self.i = j + 1
        return "".join(out) + "]"

    def regex(self, pattern: str, icase: bool) -> _Regex:
        if pattern == "":
            if self.last_regex is None:
                raise self.fail("no previous regular expression")
            return self.last_regex
        try:
            self.last_regex = _compile("sed", pattern, extended=self.extended, icase=icase)
        except CommandError as exc:
            raise self.fail(str(exc).removeprefix("sed: ")) from exc
        return self.last_regex

    def address(self) -> _Addr | None:
        c = self.peek()
        if c.isdigit():
            start = self.i
            while self.peek().isdigit():
                self.i += 1
            num = int(self.s[start : self.i])
            return _Addr("zero") if num == 0 else _Addr("line", num)
        if c == "$":
            self.i += 1
            return _Addr("last")
        if c in ("/", "\\"):
            self.i += 1
            if c == "\\":
                c = self.peek()
                if not c or c in "\n\\":
                    raise self.fail("unexpected end of address")
                self.i += 1
            pattern = self.delimited(c, "address regex", regex=True)
            icase = False
            while self.peek() in ("I", "M") and self.peek():
                icase |= self.peek() == "I"
                self.i += 1
            return _Addr("re", regex=self.regex(pattern, icase))
        return None

    def parse(self) -> list[_SedCmd]:
        prog: list[_SedCmd] = []
        opened: list[int] = []
        s = self.s
        while True:
            while self.peek() and self.peek() in " \t\n;":
                self.i += 1
            if not self.peek():
                break
            if self.peek() == "#":
                nl = s.find("\n", self.i)
                self.i = len(s) if nl < 0 else nl
                continue
            cmd = _SedCmd("")
            cmd.a1 = self.address()
            if cmd.a1 is not None and self.peek() == ",":
                self.i += 1
                if self.peek() == "+":
                    self.i += 1
                    start = self.i
                    while self.peek().isdigit():
                        self.i += 1
                    if start == self.i:
                        raise self.fail("expected a number after ',+'")
                    cmd.a2 = _Addr("plus", int(s[start : self.i]))
                else:
                    cmd.a2 = self.address()
                    if cmd.a2 is None:
                        raise self.fail("unexpected ','")
                    if cmd.a2.kind == "zero":
                        raise self.fail("invalid usage of line address 0")
            if cmd.a1 is not None and cmd.a1.kind == "zero" and (cmd.a2 is None or cmd.a2.kind != "re"):
                raise self.fail("invalid usage of line address 0")
            self.skip_blanks()
            if self.peek() == "!":
                cmd.negate = True
                self.i += 1
                self.skip_blanks()
            c = self.peek()
            self.i += 1
            cmd.name = c
            if c == "{":
                opened.append(len(prog))
            elif c == "}":
                if cmd.a1 is not None or cmd.negate:
                    raise self.fail("'}' doesn't want any addresses")
                if not opened:
                    raise self.fail("unexpected '}'")
                prog[opened.pop()].jump = len(prog) + 1
            elif c == "s":
                self.substitute(cmd)
            elif c == "q":
                self.skip_blanks()
                while self.peek().isdigit():
                    self.i += 1
            elif c not in ("d", "p"):
                self.i -= 1
                raise self.fail(f"unknown command '{c or 'EOF'}'" if c else "missing command")
            prog.append(cmd)
            if c != "{":
                self.skip_blanks()
                if self.peek() == "#":
                    continue
                if self.peek() and self.peek() not in ";\n}":
                    raise self.fail(f"extra characters after command '{c}'")
        if opened:
            raise self.fail("unmatched '{'")
        return prog

    def substitute(self, cmd: _SedCmd) -> None:
        delim = self.peek()
        if not delim or delim in "\n\\":
            raise self.fail("unterminated 's' command")
        self.i += 1
        pattern = self.delimited(delim, "'s' command", regex=True)
        repl = self.delimited(delim, "'s' command", regex=False)
        icase = False
        nth = ""
        while self.peek() and self.peek() not in ";\n} \t#":
            f = self.peek()
            self.i += 1
            if f == "g":
                cmd.glob = True
            elif f == "p":
                cmd.sprint = True
            elif f in "iI":
                icase = True
            elif f.isdigit():
                nth += f
            elif f == "e":
                raise self.fail("the 'e' flag (execute) of 's' is not supported")
            elif f == "w":
                raise self.fail("the 'w' flag (write file) of 's' is not supported")
            else:
                raise self.fail(f"unknown option '{f}' to 's'")
        if nth:
            cmd.nth = int(nth)
            if cmd.nth == 0:
                raise self.fail("number option to 's' may not be zero")
        cmd.regex = self.regex(pattern, icase)
        cmd.repl = self.replacement(repl, cmd.regex.groups)

    def replacement(self, repl: str, ngroups: int) -> list[str | int | tuple[str]]:
        parts: list[str | int | tuple[str]] = []
        i = 0
        while i < len(repl):
            c = repl[i]
            i += 1
            if c == "&":
                parts.append(0)
            elif c == "\\" and i < len(repl):
                c = repl[i]
                i += 1
                if c.isdigit():
                    if int(c) > ngroups:
                        raise self.fail(f"invalid reference \\{c} on 's' command's RHS")
                    parts.append(int(c))
                elif c in "LUluE":
                    parts.append((c,))
                else:
                    parts.append({"n": "\n", "t": "\t"}.get(c, c))
            else:
                parts.append(c)
        return parts


def _expand(m: Any, parts: Sequence[str | int | tuple[str]], budget: _Budget, room: int) -> str:
    """Build the replacement of match *m*; raise once it passes *room* characters."""
    out: list[str] = []
    size = 0
    mode = one = ""
    for p in parts:
        if isinstance(p, tuple):
            op = p[0]
            if op in "ul":
                one = op
            else:
                mode, one = ("" if op == "E" else op), ""
            continue
        s = (m.group(p) or "") if isinstance(p, int) else p
        if mode:
            s = s.upper() if mode == "U" else s.lower()
        if one and s:
            s = (s[0].upper() if one == "u" else s[0].lower()) + s[1:]
            one = ""
        size += len(s)
        if size > room:
            budget.check_size("sed", budget.max_chars + 1)
        out.append(s)
    return "".join(out)


def _substitute(cmd: _SedCmd, ps: str, budget: _Budget) -> tuple[str, bool]:
    assert cmd.regex is not None
    out: list[str] = []
    size = 0  # characters in out
    pos = 0
    count = 0
    prev_end = -1
    changed = False
    for m in cmd.regex.finditer(ps):
        if m.start() == m.end() == prev_end:  # GNU: no empty match right after a match
            continue
        prev_end = m.end()
        count += 1
        if count < cmd.nth:
            continue
        size += m.start() - pos
        new = _expand(m, cmd.repl, budget, budget.max_chars - size)
        size += len(new)
        out += [ps[pos : m.start()], new]
        pos = m.end()
        changed = True
        if not cmd.glob:
            break
    if not changed:
        return ps, False
    budget.check_size("sed", size + len(ps) - pos)
    out.append(ps[pos:])
    return "".join(out), True


def _sed(args: Sequence[str], text: str) -> str:
    opts, operands = _getopt(
        "sed", args, "ne:Er", {"quiet": "-n", "silent": "-n", "expression=": "-e", "regexp-extended": "-E"}
    )
    scripts: list[str] = []
    quiet = extended = False
    for o, v in opts:
        if o == "-n":
            quiet = True
        elif o == "-e":
            scripts.append(v)
        else:
            extended = True
    if not scripts:
        if not operands:
            raise CommandError("sed: no script given")
        scripts.append(operands.pop(0))
    _no_files("sed", operands)
    prog = _SedParser("\n".join(scripts), extended).parse()

    lines, trailing = _split(text)
    out: list[tuple[str, bool]] = []
    budget = _current()
    size = 0  # characters in out

    def emit(ps: str, has_nl: bool) -> None:
        nonlocal size
        size += len(ps) + 1
        budget.check_size("sed", size)
        out.append((ps, has_nl))

    total = len(lines)
    for idx, ps in enumerate(lines):
        if not idx & 4095:
            budget.check_time("sed")
        lineno, last = idx + 1, idx == total - 1
        has_nl = not last or trailing
        pc = 0
        deleted = stop = False
        while pc < len(prog):
            cmd = prog[pc]
            if not cmd.matches(ps, lineno, last):
                pc = cmd.jump if cmd.name == "{" else pc + 1
                continue
            if cmd.name == "d":
                deleted = True
                break
            if cmd.name == "p":
                emit(ps, has_nl)
            elif cmd.name == "q":
                stop = True
                break
            elif cmd.name == "s":
                ps, changed = _substitute(cmd, ps, budget)
                if changed and cmd.sprint:
                    emit(ps, has_nl)
            pc += 1
        if not deleted and not quiet:
            emit(ps, has_nl)
        if stop:
            break
    result: list[str] = []
    missing = False
    for s, nl in out:
        result.append(("\n" if missing else "") + s + ("\n" if nl else ""))
        missing = not nl
    return "".join(result)


# --------------------------------------------------------------------------
# head, tail
# --------------------------------------------------------------------------


def _count_args(args: Sequence[str]) -> list[str]:
    """Rewrite the obsolete ``-N`` form to ``-n N`` (leaving ``-n -N`` alone)."""
    out: list[str] = []
    takes_value = False
    for a in args:
        if not takes_value and re.fullmatch(r"-\d+", a):
            out += ["-n", a[1:]]
        else:
            out.append(a)
        takes_value = not takes_value and a in ("-n", "--lines")
    return out


def _head_tail(cmd: str, args: Sequence[str], text: str) -> str:
    opts, operands = _getopt(cmd, _count_args(args), "n:", {"lines=": "-n"})
    _no_files(cmd, operands)
    spec = opts[-1][1] if opts else "10"
    sign = spec[:1] if spec[:1] in "+-" else ""
    n = _int(cmd, spec[len(sign):], "number of lines")
    lines, trailing = _split(text)
    total = len(lines)
    if cmd == "head":
        stop = max(total - n, 0) if sign == "-" else min(n, total)
        start = 0
    else:
        start = min(max(n - 1, 0), total) if sign == "+" else max(total - n, 0)
        stop = total
    return _join_keep(lines[start:stop], stop == total, trailing)


def _head(args: Sequence[str], text: str) -> str:
    return _head_tail("head", args, text)


def _tail(args: Sequence[str], text: str) -> str:
    return _head_tail("tail", args, text)


# --------------------------------------------------------------------------
# sort, uniq
# --------------------------------------------------------------------------


@dataclass
class _Key:
    start: int
    end: int | None  # inclusive field number; None = end of line
    numeric: bool = False
    reverse: bool = False
    fold: bool = False
    blanks: bool = False


_KEY_RE = re.compile(r"(\d+)([bfnr]*)(?:,(\d+)([bfnr]*))?")
_NUM_RE = re.compile(r"[ \t]*(-?(?:\d+\.?\d*|\.\d+))")
_FIELD_RE = re.compile(r"[ \t]*[^ \t]+")


def _parse_key(spec: str, glob: _Key) -> _Key:
    m = _KEY_RE.fullmatch(spec)
    if not m or int(m.group(1)) == 0 or (m.group(3) is not None and int(m.group(3)) == 0):
        raise CommandError(f"sort: invalid key '{spec}' (use -k N or -k N,M, fields numbered from 1)")
    own = (m.group(2) or "") + (m.group(4) or "")
    if own:
        key = _Key(int(m.group(1)), None, "n" in own, "r" in own, "f" in own, "b" in own)
    else:
        key = _Key(int(m.group(1)), None, glob.numeric, glob.reverse, glob.fold, glob.blanks)
    key.end = int(m.group(3)) if m.group(3) else None
    return key


def _key_text(line: str, key: _Key, sep: str | None) -> str:
    if sep is not None:
        fields = line.split(sep)
        sel = fields[key.start - 1 : key.end]
        return sep.join(sel)
    spans = [m.span() for m in _FIELD_RE.finditer(line)]
    if key.start > len(spans):
        return ""
    begin = spans[key.start - 1][0]
    end = len(line) if key.end is None or key.end >= len(spans) else spans[key.end - 1][1]
    return line[begin:end]


def _sort(args: Sequence[str], text: str) -> str:
    opts, operands = _getopt(
        "sort", args, "rnufbsk:t:",
        {"reverse": "-r", "numeric-sort": "-n", "unique": "-u", "ignore-case": "-f", "ignore-leading-blanks": "-b",
         "stable": "-s", "key=": "-k", "field-separator=": "-t"},
    )
    _no_files("sort", operands)
    flags = {o for o, _ in opts}
    glob = _Key(1, None, "-n" in flags, "-r" in flags, "-f" in flags, "-b" in flags)
    sep: str | None = None
    for o, v in opts:
        if o == "-t":
            v = {"\\t": "\t", "\\0": "\0"}.get(v, v)
            if len(v) != 1:
                raise CommandError(f"sort: the field separator must be one character, got '{v}'")
            sep = v
    keys = [_parse_key(v, glob) for o, v in opts if o == "-k"] or [glob]
    unique, stable = "-u" in flags, "-s" in flags

    def value(line: str, key: _Key) -> str | Decimal:
        s = line if key is glob else _key_text(line, key, sep)
        if key.numeric:
            m = _NUM_RE.match(s)
            return Decimal(m.group(1)) if m else Decimal(0)
        if key.blanks:
            s = s.lstrip(" \t")
        return s.upper() if key.fold else s

    lines = _split(text)[0]
    # Stable sorts compose: last-resort whole-line order first, then keys last to first.
    if not (unique or stable):
        lines.sort(reverse=glob.reverse)
    rows = [([value(line, k) for k in keys], line) for line in lines]
    for idx in range(len(keys) - 1, -1, -1):
        rows.sort(key=lambda row: row[0][idx], reverse=keys[idx].reverse)
    if unique:
        rows = [row for k, row in enumerate(rows) if k == 0 or rows[k - 1][0] != row[0]]
    return _join(line for _, line in rows)


def _uniq(args: Sequence[str], text: str) -> str:
    opts, operands = _getopt(
        "uniq", args, "cdui", {"count": "-c", "repeated": "-d", "unique": "-u", "ignore-case": "-i"}
    )
    _no_files("uniq", operands)
    flags = {o for o, _ in opts}
    norm = str.lower if "-i" in flags else (lambda s: s)
    groups: list[tuple[str, int]] = []
    for line in _split(text)[0]:
        if groups and norm(groups[-1][0]) == norm(line):
            groups[-1] = (groups[-1][0], groups[-1][1] + 1)
        else:
            groups.append((line, 1))
    out = _Out("uniq")
    for line, n in groups:
        if "-d" in flags and n == 1 or "-u" in flags and n != 1:
            continue
        out.append(f"{n:7d} {line}" if "-c" in flags else line)
    return _join(out)


# --------------------------------------------------------------------------
# wc
# --------------------------------------------------------------------------


def _wc(args: Sequence[str], text: str) -> str:
    opts, operands = _getopt("wc", args, "lwcm", {"lines": "-l", "words": "-w", "bytes": "-c", "chars": "-m"})
    _no_files("wc", operands)
    flags = {o for o, _ in opts} or {"-l", "-w", "-c"}
    counts = {
        "-l": lambda: text.count("\n"),
        "-w": lambda: len(text.split()),
        "-m": lambda: len(text),
        "-c": lambda: len(text.encode("utf-8", "surrogatepass")),
    }
    values = [counts[f]() for f in ("-l", "-w", "-m", "-c") if f in flags]
    if len(values) == 1:
        return f"{values[0]}\n"
    return " ".join(f"{v:7d}" for v in values) + "\n"


# --------------------------------------------------------------------------
# tr
# --------------------------------------------------------------------------


def _tr_set(spec: str, *, second: bool = False) -> list[str]:
    """Expand a tr SET (escapes, ``a-z`` ranges, ``[:class:]``) to its characters."""
    # First decode escapes and classes into tokens: ("c", ch) plain, ("e", ch) escaped, ("class", name).
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(spec)
    while i < n:
        c = spec[i]
        if c == "\\" and i + 1 < n:
            m = re.match(r"[0-7]{1,3}", spec[i + 1 :])
            if m:
                tokens.append(("e", chr(int(m.group(0), 8))))
                i += 1 + len(m.group(0))
                continue
            nxt = spec[i + 1]
            tokens.append(("e", {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a",
                                 "b": "\b"}.get(nxt, nxt)))
            i += 2
            continue
        if c == "[" and spec.startswith(":", i + 1) and spec.find(":]", i + 2) > 0:
            end = spec.find(":]", i + 2)
            name = spec[i + 2 : end]
            if name not in _CLASS_CHARS:
                raise CommandError(f"tr: invalid character class '[:{name}:]'")
            if second and name not in ("upper", "lower"):
                raise CommandError(f"tr: only [:upper:] and [:lower:] may appear in SET2, got '[:{name}:]'")
            tokens.append(("class", name))
            i = end + 2
            continue
        tokens.append(("c", c))
        i += 1
    chars: list[str] = []
    k = 0
    while k < len(tokens):
        kind, val = tokens[k]
        if kind == "class":
            chars.extend(_CLASS_CHARS[val])
            k += 1
        elif k + 2 < len(tokens) and tokens[k + 1] == ("c", "-") and tokens[k + 2][0] != "class":
            lo, hi = val, tokens[k + 2][1]
            if hi < lo:
                raise CommandError(f"tr: range-endpoints of '{lo}-{hi}' are in reverse collating sequence order")
            chars.extend(chr(x) for x in range(ord(lo), ord(hi) + 1))
            k += 3
        else:
            chars.append(val)
            k += 1
    return chars


def _tr(args: Sequence[str], text: str) -> str:
    opts, operands = _getopt(
        "tr", args, "cCds", {"complement": "-c", "delete": "-d", "squeeze-repeats": "-s"}
    )
    flags = {o for o, _ in opts}
    complement, delete, squeeze = bool(flags & {"-c", "-C"}), "-d" in flags, "-s" in flags
    if not operands:
        raise CommandError("tr: missing operand (SET1)")
    lo, hi = (2, 2) if delete and squeeze else (1, 1) if delete else (1, 2) if squeeze else (2, 2)
    if len(operands) > hi:
        raise CommandError(f"tr: extra operand '{operands[hi]}' (tr takes only SET1 [SET2]; no files)")
    if len(operands) < lo:
        raise CommandError(f"tr: missing operand after '{operands[0]}' (SET2 is required here)")
    set1 = _tr_set(operands[0])
    set1_members = frozenset(set1)
    in1 = (lambda ch: ch not in set1_members) if complement else (lambda ch: ch in set1_members)
    set2 = _tr_set(operands[1], second=True) if len(operands) == 2 else []
    if len(operands) == 2 and not set2 and not delete:
        raise CommandError("tr: SET2 must be non-empty when translating")
    in_squeeze = frozenset(set2).__contains__ if len(operands) == 2 else in1
    if delete:
        text = "".join(ch for ch in text if not in1(ch))
    elif set2 and complement:
        below = sorted(ord(ch) for ch in set1_members)

        def mapped(ch: str) -> str:
            if ch in set1_members:
                return ch
            idx = ord(ch) - bisect.bisect_left(below, ord(ch))  # position in the complement
            return set2[min(idx, len(set2) - 1)]

        text = "".join(mapped(ch) for ch in text)
    elif set2:
        table = {ch: set2[min(k, len(set2) - 1)] for k, ch in enumerate(set1)}
        text = text.translate(str.maketrans(table)) if table else text
    if squeeze and text:
        out = [text[0]]
        for ch in text[1:]:
            if ch == out[-1] and in_squeeze(ch):
                continue
            out.append(ch)
        text = "".join(out)
    return text


# --------------------------------------------------------------------------
# cut
# --------------------------------------------------------------------------


def _cut_list(spec: str) -> Callable[[int], bool]:
    ranges: list[tuple[int, int]] = []
    for part in spec.split(","):
        m = re.fullmatch(r"(\d*)(-?)(\d*)", part.strip())
        if not m or not (m.group(1) or m.group(3)) or (m.group(3) and not m.group(2)):
            raise CommandError(f"cut: invalid list '{spec}' (use e.g. 1,3-5,7-)")
        lo = int(m.group(1)) if m.group(1) else 1
        hi = int(m.group(3)) if m.group(3) else (lo if not m.group(2) else 1 << 62)
        if lo == 0 or hi == 0:
            raise CommandError(f"cut: fields and positions are numbered from 1, got '{spec}'")
        if hi < lo:
            raise CommandError(f"cut: invalid decreasing range '{part}'")
        ranges.append((lo, hi))
    return lambda k: any(lo <= k <= hi for lo, hi in ranges)


def _cut(args: Sequence[str], text: str) -> str:
    opts, operands = _getopt(
        "cut", args, "d:f:c:b:s",
        {"delimiter=": "-d", "fields=": "-f", "characters=": "-c", "bytes=": "-b", "only-delimited": "-s",
         "complement": "--complement", "output-delimiter=": "--output-delimiter"},
    )
    _no_files("cut", operands)
    delim: str | None = None
    out_delim: str | None = None
    mode = spec = ""
    only_delimited = complement = False
    for o, v in opts:
        if o == "-d":
            delim = {"\\t": "\t"}.get(v, v)
            if len(delim) != 1:
                raise CommandError(f"cut: the delimiter must be a single character, got '{v}'")
        elif o in ("-f", "-c", "-b"):
            if mode:
                raise CommandError("cut: only one list may be specified (-f, -c or -b)")
            mode, spec = ("c" if o == "-b" else o[1]), v
        elif o == "-s":
            only_delimited = True
        elif o == "--complement":
            complement = True
        else:
            out_delim = v
    if not mode:
        raise CommandError("cut: you must specify a list of characters (-c) or fields (-f)")
    if mode == "c" and (delim is not None or only_delimited):
        raise CommandError("cut: -d and -s are only valid with -f (fields)")
    selected = _cut_list(spec)
    pick = (lambda k: not selected(k)) if complement else selected
    out = _Out("cut")
    budget = out.budget
    for line in _split(text)[0]:
        if mode == "c":
            parts: list[str] = []
            prev = 0
            for k, ch in enumerate(line, 1):
                if pick(k):
                    if out_delim and parts and prev != k - 1:
                        parts.append(out_delim)
                    parts.append(ch)
                    prev = k
            out.append("".join(parts))
            continue
        d = "\t" if delim is None else delim
        if d not in line:
            if not only_delimited:
                out.append(line)
            continue
        glue = d if out_delim is None else out_delim
        chosen = [f for k, f in enumerate(line.split(d), 1) if pick(k)]
        budget.check_size("cut", out.size + sum(map(len, chosen)) + len(glue) * max(0, len(chosen) - 1))
        out.append(glue.join(chosen))
    return _join(out)


# --------------------------------------------------------------------------
# pandoc (the one command that runs a subprocess: see tandem.services.convert)
# --------------------------------------------------------------------------


def _pandoc(args: Sequence[str], text: str) -> str:
    try:
        opts, operands = _getopt("pandoc", args, "f:t:r:w:", {"from=": "-f", "to=": "-t", "read=": "-f", "write=": "-t"})
    except CommandError as exc:
        raise CommandError(f"{exc} (pandoc takes only -f FROM and -t TO)") from exc
    _no_files("pandoc", operands)
    formats = {"-r": "-f", "-w": "-t"}
    chosen = {formats.get(o, o): v for o, v in opts}
    if set(chosen) != {"-f", "-t"}:
        raise CommandError("pandoc: give both -f FROM and -t TO, e.g. pandoc -f gfm -t textile")
    from tandem.services import convert  # imports this module: import it late

    budget = _current()
    return convert.convert(text, chosen["-f"], chosen["-t"], timeout_s=max(budget.remaining(), 1e-3),
                           max_output_chars=budget.max_chars, max_heap_mb=budget.limits.pandoc_max_heap_mb)


# --------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------

COMMANDS: Mapping[str, CommandFn] = MappingProxyType(
    {
        "cat": _cat,
        "cut": _cut,
        "grep": _grep,
        "head": _head,
        "nl": _nl,
        "pandoc": _pandoc,
        "paste": _paste,
        "rev": _rev,
        "sed": _sed,
        "sort": _sort,
        "tac": _tac,
        "tail": _tail,
        "tr": _tr,
        "uniq": _uniq,
        "wc": _wc,
    }
)
"""Every built-in command, installed or not (see :func:`available_commands`)."""


@dataclass(frozen=True)
class CommandInfo:
    """One built-in command as the planner presents it.

    Parameters
    ----------
    name : str
        The ``spawn_command`` ``cmd``, e.g. ``"grep"``.
    usage : str
        Its parameters: a synopsis of the arguments it takes (``args``).
    summary : str
        What it does, in one line.
    """

    name: str
    usage: str
    summary: str


_INFO = (
    CommandInfo("cat", "cat [-n|-b] [-s] [-E]", "copy the text; -n/-b number lines, -s squeeze blanks, -E mark ends"),
    CommandInfo("cut", "cut -f LIST [-d C] [-s] | -c LIST; LIST: 1,3-5,7-",
                "select fields (-f, split on -d, default tab) or characters (-c)"),
    CommandInfo("grep", "grep [-ivcnowxEF] [-m N] PATTERN | -e PAT...",
                "print the lines that match a regex (BRE; -E ERE; -F fixed string)"),
    CommandInfo("head", "head [-n N|-N]", "the first N lines (default 10); -n -N: all but the last N"),
    CommandInfo("nl", "nl [-b a|t|n] [-w N] [-s S] [-v N]", "number the lines"),
    CommandInfo("pandoc", "pandoc -f FROM -t TO",
                "convert a document between formats, e.g. -f gfm -t textile (no other options)"),
    CommandInfo("paste", "paste [-s] [-d LIST] [- -...]", "join lines: -s all into one, '- -' two per line"),
    CommandInfo("rev", "rev", "reverse the characters of each line"),
    CommandInfo("sed", "sed [-n] [-E] SCRIPT | -e S...: [ADDR[,ADDR]][!]CMD;... ADDR: N $ /re/[I] 0,/re/ A,+N; "
                "CMD: s/re/rep/[gpiN] d p q {...}; rep: & \\1-\\9 \\n \\U \\L \\u \\E",
                "edit each line: substitute, delete, print, quit"),
    CommandInfo("sort", "sort [-rnufbs] [-t C] [-k N[,M][nrf]]", "sort the lines"),
    CommandInfo("tac", "tac", "reverse the order of the lines"),
    CommandInfo("tail", "tail [-n N|-n +N|-N]", "the last N lines (default 10); -n +N: from line N on"),
    CommandInfo("tr", "tr [-c] [-d] [-s] SET1 [SET2]: a-z \\n \\t [:alpha:] [:digit:] [:space:] [:upper:] [:lower:] "
                "[:punct:] [:alnum:]", "translate, delete (-d) or squeeze (-s) characters"),
    CommandInfo("uniq", "uniq [-c] [-d|-u] [-i]", "collapse adjacent equal lines; -c counts them"),
    CommandInfo("wc", "wc [-l] [-w] [-c] [-m]", "count lines, words, bytes or characters"),
)

_DESCRIPTION = """\
cat [-n|-b] [-s] [-E]
grep [-ivcnowxEF] [-m N] PATTERN | -e PAT... (BRE; -E ERE; -F fixed)
sed [-n] [-E] SCRIPT | -e S...: [ADDR[,ADDR]][!]CMD;... ADDR: N $ /re/[I] 0,/re/ A,+N; CMD: s/re/rep/[gpiN] d p q {...}; rep: & \\1-\\9 \\n \\U \\L \\u \\E
head|tail [-n N|-N] (head -n -N: all but last N; tail -n +N: from line N)
sort [-rnufbs] [-t C] [-k N[,M][nrf]]
uniq [-c] [-d|-u] [-i]
wc [-l] [-w] [-c] [-m]
tr [-c] [-d] [-s] SET1 [SET2]: a-z \\n \\t [:alpha:] [:digit:] [:space:] [:upper:] [:lower:] [:punct:] [:alnum:]
cut -f LIST [-d C] [-s] | -c LIST; LIST: 1,3-5,7-
rev | tac | nl [-b a|t] [-w N] [-s S] | paste [-s] [-d LIST] [- -...]
"""
_PANDOC_LINE = "pandoc -f FROM -t TO: convert a document (gfm markdown textile html rst asciidoc latex org mediawiki jira ...)\n"
_FOOTER = "No file operands: every command reads the previous step's text."


def _installed(name: str) -> bool:
    if name != "pandoc":
        return True
    from tandem.services import convert

    return convert.pandoc_available()


def command_names() -> list[str]:
    """Return the names of every built-in command, installed or not, sorted.

    Returns
    -------
    list of str
        E.g. ``["cat", "cut", "grep", ...]``; the ``spawn_command`` ``cmd``
        values a plan may decode with. :func:`available_commands` lists the
        ones that can run here.
    """
    return sorted(COMMANDS)


def available_commands() -> list[CommandInfo]:
    """Return the built-in commands that can run here, with their parameters and one line each.

    ``pandoc`` is left out when pandoc is not installed
    (:func:`tandem.services.convert.pandoc_available`); the others are always
    there. Meant for the planner: offer these names (e.g. as the schema's
    ``enum``) and show ``usage`` and ``summary`` in the prompt.

    Returns
    -------
    list of CommandInfo
        Sorted by name.

    Examples
    --------
    >>> [c.name for c in available_commands()][:3]
    ['cat', 'cut', 'grep']
    """
    return [info for info in _INFO if _installed(info.name)]


def describe_commands() -> str:
    """Return a compact one-line-per-command summary of the supported syntax.

    Meant for an LLM planning prompt, so it is short (under 900 characters);
    ``pandoc`` is in it only when installed.

    Returns
    -------
    str
        One line per command (or group of small commands).
    """
    return _DESCRIPTION + (_PANDOC_LINE if _installed("pandoc") else "") + _FOOTER


def buffered_chars(texts: Iterable[str]) -> int:
    """Return the characters held by *texts*, each distinct object counted once.

    A plan's buffers often share one string (``read_input`` stores the same
    text as the current text and its fd), so this counts by identity.

    Parameters
    ----------
    texts : iterable of str
        E.g. every fd buffer, the current text and the outputs of a run.

    Returns
    -------
    int

    Examples
    --------
    >>> a = "x" * 10
    >>> buffered_chars([a, a, "yz"])
    12
    """
    seen = {id(t): len(t) for t in texts}
    return sum(seen.values())


def run_command(cmd: str, args: Sequence[str], text: str, *, limits: Limits | None = None,
                held_chars: int = 0) -> str:
    """Run built-in command *cmd* on *text* within *limits* and return its output.

    This blocks until the command is done (at most ``limits.time_limit_s``);
    from async code use :func:`run_builtin`.

    Parameters
    ----------
    cmd : str
        Command name, one of :func:`command_names`.
    args : sequence of str
        argv-style arguments, not including the command name,
        e.g. ``["-E", "s/(a+)/[\\\\1]/g"]``.
    text : str
        The command's standard input.
    limits : Limits, optional
        Time and size bounds; :data:`DEFAULT_LIMITS` when not given.
    held_chars : int
        Characters the plan's buffers already hold; the output may use what is
        left of ``limits.max_plan_chars`` (see :func:`buffered_chars`).

    Returns
    -------
    str
        The command's standard output.

    Raises
    ------
    CommandError
        If the command is unknown, or given an unknown option, a bad regular
        expression, a bad argument or a file operand.
    RegexTimeout
        If a regular expression runs past its time budget.
    OutputTooLarge
        If the output passes the step's or the plan's cap.
    CommandTimeout
        If the step runs past ``limits.time_limit_s``.
    CommandUnavailable
        If the command is not installed (``pandoc``).

    Examples
    --------
    >>> run_command("grep", ["-c", "b"], "abc\\nxyz\\nb\\n")
    '2\\n'
    >>> run_command("sed", ["-E", "s/(o+)/<\\\\1>/g"], "foo boo\\n")
    'f<oo> b<oo>\\n'
    >>> run_command("sed", ["s/.*/&&/"], "ab\\n", limits=Limits(max_output_chars=4))
    ... # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    tandem.services.textcmd.OutputTooLarge: sed: output_too_large: the output passed 4 characters (the step output limit)
    """
    fn = COMMANDS.get(cmd)
    if fn is None:
        raise CommandError(f"{cmd}: unknown command (built-in commands: {', '.join(command_names())})")
    if isinstance(args, (str, bytes)) or not all(isinstance(a, str) for a in args):
        raise CommandError(f"{cmd}: arguments must be a list of strings, got {args!r}")
    if not isinstance(text, str):
        raise CommandError(f"{cmd}: input must be text, got {type(text).__name__}")
    budget = _Budget(limits or DEFAULT_LIMITS, held_chars)
    token = _budget.set(budget)
    try:
        out = fn(args, text)
    finally:
        _budget.reset(token)
    budget.check_size(cmd, len(out))
    return out


_limiter_var: RunVar[anyio.CapacityLimiter] = RunVar("tandem_builtin_limiter")


def _limiter(threads: int) -> anyio.CapacityLimiter:
    """The event loop's limiter for built-in command threads."""
    try:
        limiter = _limiter_var.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(threads)
        _limiter_var.set(limiter)
    if limiter.total_tokens != threads:
        limiter.total_tokens = threads
    return limiter


INLINE_MAX_CHARS = 16 * 1024
"""Largest input a built-in command (but ``pandoc``) first tries on the event loop itself (:func:`run_builtin`)."""

INLINE_BUDGET_S = 0.002
"""Time the try on the event loop may take (its step time limit and its regex budget) before the worker thread."""

_INLINE_LIMITS: dict[Limits, Limits] = {}


def _inline_limits(limits: Limits) -> Limits:
    """``limits`` with the time bounds of a try on the event loop (:data:`INLINE_BUDGET_S`); sizes unchanged."""
    inline = _INLINE_LIMITS.get(limits)
    if inline is None:
        if len(_INLINE_LIMITS) > 64:
            _INLINE_LIMITS.clear()
        inline = _INLINE_LIMITS[limits] = dataclasses.replace(
            limits, time_limit_s=min(limits.time_limit_s, INLINE_BUDGET_S),
            regex_timeout_s=min(limits.regex_timeout_s, INLINE_BUDGET_S))
    return inline


async def run_builtin(cmd: str, args: Sequence[str], text: str, *, limits: Limits | None = None,
                      held_chars: int = 0, before_thread: Callable[[], Awaitable[None]] | None = None) -> str:
    """Run :func:`run_command` so the event loop keeps serving: at once when it is quick, else in a worker thread.

    A command on an input of at most :data:`INLINE_MAX_CHARS` characters (``pandoc``
    aside) is first run on the event loop with a time budget of
    :data:`INLINE_BUDGET_S` (step time limit and regex budget, CPU sizes unchanged):
    nearly every step is done in microseconds, and a thread hand-off costs more than the
    command (about 1 ms under load). A command that runs out of that budget is run again,
    from the start, in a worker thread with the real ``limits`` (commands are pure
    functions of their input, so the second run gives what a first run in the thread
    would have); any other error is the command's own and is raised at once.

    At most ``limits.max_threads`` built-in commands run at once per event
    loop; the others wait for a thread (the wait does not count against the
    step's time limit). Cancelling the caller waits for the command to end,
    which its time limit bounds.

    Parameters
    ----------
    cmd, args, text, limits, held_chars
        As for :func:`run_command`.
    before_thread : callable or None
        ``async () -> None``, awaited once the command turns out not to be quick, before it goes to
        a worker thread (the executor sends a progress checkpoint it held back for a quick step).

    Returns
    -------
    str
        The command's standard output.

    Raises
    ------
    CommandError
        As :func:`run_command` (including :class:`RegexTimeout`,
        :class:`OutputTooLarge`, :class:`CommandTimeout`, :class:`CommandUnavailable`).

    Examples
    --------
    >>> anyio.run(run_builtin, "tr", ["a-z", "A-Z"], "hi\\n")
    'HI\\n'
    """
    limits = limits or DEFAULT_LIMITS
    if len(text) <= INLINE_MAX_CHARS and cmd != "pandoc":
        try:
            return run_command(cmd, args, text, limits=_inline_limits(limits), held_chars=held_chars)
        except (RegexTimeout, CommandTimeout):
            pass  # out of the short budget only: the real one decides, in a thread
    if before_thread is not None:
        await before_thread()
    call = functools.partial(run_command, cmd, args, text, limits=limits, held_chars=held_chars)
    return await anyio.to_thread.run_sync(call, limiter=_limiter(limits.max_threads))


def _search(pattern: str, text: str, flags: int, limits: Limits) -> bool:
    token = _budget.set(_Budget(limits, 0))
    try:
        return _compile_src("conditional_branch", pattern, flags, pattern).search(text) is not None
    finally:
        _budget.reset(token)


async def regex_search(pattern: str, text: str, *, multiline: bool = True, limits: Limits | None = None) -> bool:
    """Return whether Python-syntax regex *pattern* matches anywhere in *text*, within a time budget.

    For ``conditional_branch`` ``matches`` conditions: the search runs on the
    `regex` engine (same syntax as :mod:`re`) in a worker thread.

    Parameters
    ----------
    pattern : str
        A Python regular expression.
    text : str
        The text to search.
    multiline : bool
        Compile with ``MULTILINE`` (``^``/``$`` at every line), as conditions do.
    limits : Limits, optional
        ``regex_timeout_s`` bounds the search; :data:`DEFAULT_LIMITS` when not given.

    Returns
    -------
    bool

    Raises
    ------
    CommandError
        If the pattern is invalid.
    RegexTimeout
        If the search runs past ``limits.regex_timeout_s``.

    Examples
    --------
    >>> anyio.run(regex_search, r"^## ", "# a\\n## b\\n")
    True
    """
    limits = limits or DEFAULT_LIMITS
    call = functools.partial(_search, pattern, text, rx.MULTILINE if multiline else 0, limits)
    return await anyio.to_thread.run_sync(call, limiter=_limiter(limits.max_threads))
