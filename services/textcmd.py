"""Tandem's built-in text commands.

Pure-Python, in-memory re-implementations of a useful subset of the GNU text
tools (``cat``, ``grep``, ``sed``, ``head``, ``tail``, ``sort``, ``uniq``,
``wc``, ``tr``, ``cut``, ``rev``, ``tac``, ``nl``, ``paste``).  The plan
executor runs them instead of spawning processes: there is never a shell, a
subprocess or any file access.  Every command reads its input from a string
(the "stdin") and returns its output as a string (the "stdout").

Behaviour follows GNU coreutils, sed and grep in the C locale on the supported
subset.  Input lines are split on ``"\\n"``; tools that produce new lines
(``grep``, ``sort``, ``uniq``, ``cut``, ``wc``, ``nl``, ``paste``, ``tac``)
newline-terminate every output line, while the byte-copying tools (``cat``,
``sed``, ``tr``, ``head``, ``tail``, ``rev``) keep a missing final newline of
the input missing, as GNU does.

Every misuse raises :class:`~tandem.services.errors.CommandError` with a one-line
message that starts with the command name.

Notes
-----
Regular expressions are POSIX BRE (default) or ERE (``-E``) translated to
Python :mod:`re`.  Python picks the leftmost *first* alternative where POSIX
picks the leftmost *longest* match, so ``grep -oE 'a|ab'`` prints ``a`` where
GNU prints ``ab``.  Perl escapes that POSIX lacks (``\\d``, ``\\D``, ...) are
rejected rather than silently matching a letter as GNU does.
"""

from __future__ import annotations

import bisect
import getopt
import re
import string
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType

from tandem.services.errors import CommandError

__all__ = ["COMMANDS", "command_names", "describe_commands", "run_command"]

CommandFn = Callable[[Sequence[str], str], str]


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


def _compile(cmd: str, pattern: str, *, extended: bool, icase: bool = False) -> re.Pattern[str]:
    """Compile a POSIX *pattern* to a Python regex.

    Raises
    ------
    CommandError
        If the pattern is invalid.
    """
    src = _translate(cmd, pattern, extended)[0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return re.compile(src, re.IGNORECASE if icase else 0)
    except re.error as exc:
        raise CommandError(f"{cmd}: invalid regular expression '{pattern}': {exc.msg}") from exc


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
    out: list[str] = []
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
    out = []
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
    rows = [lines[k : k + columns] for k in range(0, len(lines), columns)]
    return _join(glue(row + [""] * (columns - len(row))) for row in rows)


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
    icase = re.IGNORECASE if "-i" in flags else 0
    if mode == "F":
        src = "|".join(re.escape(p) for p in pats)
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
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            regex = re.compile(src, icase)
    except re.error as exc:
        raise CommandError(f"grep: invalid regular expression '{' '.join(pats)}': {exc.msg}") from exc
    match = regex.match if "-x" in flags else regex.search
    invert, count, numbers, only = "-v" in flags, "-c" in flags, "-n" in flags, "-o" in flags

    out: list[str] = []
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
            found = [regex.match(line).group(0)] if "-x" in flags else [m.group(0) for m in regex.finditer(line)]  # type: ignore[union-attr]
            out.extend(prefix + h for h in found if h)
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
    regex: re.Pattern[str] | None = None

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
    regex: re.Pattern[str] | None = None
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
        self.last_regex: re.Pattern[str] | None = None

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

    def regex(self, pattern: str, icase: bool) -> re.Pattern[str]:
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


def _expand(m: re.Match[str], parts: Sequence[str | int | tuple[str]]) -> str:
    out: list[str] = []
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
        out.append(s)
    return "".join(out)


def _substitute(cmd: _SedCmd, ps: str) -> tuple[str, bool]:
    assert cmd.regex is not None
    out: list[str] = []
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
        out += [ps[pos : m.start()], _expand(m, cmd.repl)]
        pos = m.end()
        changed = True
        if not cmd.glob:
            break
    if not changed:
        return ps, False
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
    total = len(lines)
    for idx, ps in enumerate(lines):
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
                out.append((ps, has_nl))
            elif cmd.name == "q":
                stop = True
                break
            elif cmd.name == "s":
                ps, changed = _substitute(cmd, ps)
                if changed and cmd.sprint:
                    out.append((ps, has_nl))
            pc += 1
        if not deleted and not quiet:
            out.append((ps, has_nl))
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
    out = []
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
    out: list[str] = []
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
        fields = line.split(d)
        out.append((d if out_delim is None else out_delim).join(f for k, f in enumerate(fields, 1) if pick(k)))
    return _join(out)


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
No file operands: every command reads the previous step's text."""


def command_names() -> list[str]:
    """Return the names of the built-in text commands, sorted.

    Returns
    -------
    list of str
        E.g. ``["cat", "cut", "grep", ...]``.
    """
    return sorted(COMMANDS)


def describe_commands() -> str:
    """Return a compact one-line-per-command summary of the supported syntax.

    Meant for an LLM planning prompt, so it is short (under 900 characters).

    Returns
    -------
    str
        One line per command (or group of small commands).
    """
    return _DESCRIPTION


def run_command(cmd: str, args: Sequence[str], text: str) -> str:
    """Run built-in text command *cmd* on *text* and return its output.

    Parameters
    ----------
    cmd : str
        Command name, one of :func:`command_names`.
    args : sequence of str
        argv-style arguments, not including the command name,
        e.g. ``["-E", "s/(a+)/[\\\\1]/g"]``.
    text : str
        The command's standard input.

    Returns
    -------
    str
        The command's standard output.

    Raises
    ------
    CommandError
        If the command is unknown, or given an unknown option, a bad regular
        expression, a bad argument or a file operand.

    Examples
    --------
    >>> run_command("grep", ["-c", "b"], "abc\\nxyz\\nb\\n")
    '2\\n'
    >>> run_command("sed", ["-E", "s/(o+)/<\\\\1>/g"], "foo boo\\n")
    'f<oo> b<oo>\\n'
    """
    fn = COMMANDS.get(cmd)
    if fn is None:
        raise CommandError(f"{cmd}: unknown command (built-in commands: {', '.join(command_names())})")
    if isinstance(args, (str, bytes)) or not all(isinstance(a, str) for a in args):
        raise CommandError(f"{cmd}: arguments must be a list of strings, got {args!r}")
    if not isinstance(text, str):
        raise CommandError(f"{cmd}: input must be text, got {type(text).__name__}")
    return fn(args, text)
