"""Document conversion with pandoc: the one built-in command that runs a subprocess.

Every other built-in command (:mod:`tandem.services.textcmd`) is pure Python on
in-memory text. ``pandoc`` cannot be: it runs the pandoc binary shipped in the
``pypandoc-binary`` wheel (pandoc is GPL-2.0-or-later, run as a separate
program; the wheel's Python wrapper is MIT). The run is locked down:

* no shell: ``argv`` is a list, and the plan can choose nothing but the input
  and output format, both checked against the formats pandoc itself lists
  (asked once per process, then cached); no other flag, no filter, no Lua
  writer or reader, no template, no ``--extract-media``;
* ``--sandbox``: pandoc's readers and writers may not read files or fetch
  URLs, so ``![x](/etc/passwd)``, ``<iframe src=file:///...>``, RST
  ``.. include::``, LaTeX ``\\input`` and Org ``#+INCLUDE`` leak nothing;
* the text goes in on stdin and comes out on stdout; the process starts in an
  empty temporary directory (also its ``HOME``) with a minimal environment;
* a time limit (the process is killed), an output cap (read incrementally, the
  process is killed once it passes) and a heap limit (GHC RTS ``-M``);
* binary formats (docx, odt, epub, pptx, xlsx, pdf, chunkedhtml) are not
  offered: text in, text out.

Without ``pypandoc-binary`` (or another pandoc that pypandoc finds, at least
2.15, the first with ``--sandbox``) :func:`pandoc_available` is false, the
planner is not offered the command, and running it raises
:class:`~tandem.services.textcmd.CommandUnavailable`.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from tandem.services.errors import CommandError
from tandem.services.textcmd import CommandTimeout, CommandUnavailable, OutputTooLarge

__all__ = [
    "MIN_PANDOC_VERSION",
    "convert",
    "input_formats",
    "output_formats",
    "pandoc_available",
    "pandoc_path",
    "pandoc_version",
    "unavailable_reason",
]

MIN_PANDOC_VERSION = (2, 15)
"""The first pandoc with ``--sandbox``."""

BINARY_FORMATS = frozenset({"chunkedhtml", "docx", "epub", "epub2", "epub3", "odt", "pdf", "pptx", "xlsx"})
"""Formats pandoc cannot read from or write to a text stream (or that need a PDF engine)."""

_FORMAT = re.compile(r"([a-z][a-z0-9_]*)((?:[+-][a-z][a-z0-9_]*)*)")
_STDERR_KEEP = 4000


@functools.cache
def _locate() -> tuple[str | None, str]:
    """Find pandoc: ``(path, "")`` or ``(None, why not)``; probed once per process."""
    try:
        import pypandoc
    except ImportError:
        return None, "pandoc is not installed: install Tandem's [convert] extra (pip install pypandoc-binary)"
    bundled = Path(pypandoc.__file__).parent / "files" / ("pandoc.exe" if os.name == "nt" else "pandoc")
    try:
        path = str(bundled) if bundled.is_file() else pypandoc.get_pandoc_path()
        version = _version_of(path)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return None, f"pandoc is not usable: {exc} (pip install pypandoc-binary)"
    if version < MIN_PANDOC_VERSION:
        need = ".".join(map(str, MIN_PANDOC_VERSION))
        return None, f"pandoc {'.'.join(map(str, version))} at {path} is too old: need {need}+ for --sandbox"
    return path, ""


def _version_of(path: str) -> tuple[int, ...]:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=True,
                         stdin=subprocess.DEVNULL).stdout
    m = re.match(r"\S+ (\d+(?:\.\d+)*)", out)
    if m is None:
        raise ValueError(f"unrecognised `pandoc --version` output: {out[:80]!r}")
    return tuple(int(x) for x in m.group(1).split("."))


def pandoc_path() -> str | None:
    """Return the pandoc binary Tandem runs, or None when there is none.

    Returns
    -------
    str or None
        The bundled binary of ``pypandoc-binary`` when installed, else the
        pandoc that ``pypandoc`` finds, if at least :data:`MIN_PANDOC_VERSION`.
    """
    return _locate()[0]


def pandoc_available() -> bool:
    """Return whether the ``pandoc`` built-in command can run."""
    return _locate()[0] is not None


def unavailable_reason() -> str:
    """Return why pandoc cannot run (``""`` when it can)."""
    return _locate()[1]


def _require() -> str:
    path, why = _locate()
    if path is None:
        raise CommandUnavailable(f"pandoc: {why}")
    return path


@functools.cache
def pandoc_version() -> str:
    """Return the version of :func:`pandoc_path`, e.g. ``"3.9"``.

    Raises
    ------
    CommandUnavailable
        When pandoc is not available.
    """
    return ".".join(map(str, _version_of(_require())))


@functools.cache
def _list(kind: str) -> frozenset[str]:
    out = subprocess.run([_require(), f"--list-{kind}-formats"], capture_output=True, text=True, timeout=30,
                         check=True, stdin=subprocess.DEVNULL).stdout
    return frozenset(out.split()) - BINARY_FORMATS


def input_formats() -> frozenset[str]:
    """Return the text formats pandoc reads (``pandoc --list-input-formats``, binary ones left out).

    Raises
    ------
    CommandUnavailable
        When pandoc is not available.
    """
    return _list("input")


def output_formats() -> frozenset[str]:
    """Return the text formats pandoc writes (``pandoc --list-output-formats``, binary ones left out).

    Raises
    ------
    CommandUnavailable
        When pandoc is not available.
    """
    return _list("output")


def _check_format(what: str, spec: str, allowed: frozenset[str]) -> str:
    """Validate ``NAME[+ext|-ext]...``; return it unchanged."""
    m = _FORMAT.fullmatch(spec)
    if m is None or m.group(1) not in allowed:
        name = m.group(1) if m else spec
        raise CommandError(f"pandoc: unknown {what} format '{name}' (allowed: {' '.join(sorted(allowed))})")
    return spec


def convert(text: str, from_format: str, to_format: str, *, timeout_s: float = 30.0,
            max_output_chars: int = 16 * 2**20, max_heap_mb: int = 1024) -> str:
    """Convert *text* from one document format to another with sandboxed pandoc.

    Parameters
    ----------
    text : str
        The document.
    from_format, to_format : str
        Pandoc format names, optionally with extensions (``gfm``,
        ``markdown-smart``, ``textile``...), from :func:`input_formats` /
        :func:`output_formats`.
    timeout_s : float
        Wall-clock limit; pandoc is killed past it.
    max_output_chars : int
        Output cap in characters; pandoc is killed once its output passes it.
    max_heap_mb : int
        Pandoc's heap limit (GHC RTS ``-M``).

    Returns
    -------
    str
        Pandoc's standard output, exactly (as ``pandoc -f FROM -t TO`` prints it).

    Raises
    ------
    CommandUnavailable
        When pandoc is not installed.
    CommandError
        For an unknown format or extension, or when pandoc fails (its message).
    CommandTimeout
        When pandoc runs past *timeout_s*.
    OutputTooLarge
        When the output passes *max_output_chars*.

    Examples
    --------
    >>> convert("# Title\\n\\nSome *text*.\\n", "gfm", "textile")  # doctest: +SKIP
    'h1(#title). Title\\n\\nSome _text_.\\n'
    """
    path = _require()
    argv = [path, "+RTS", f"-M{max_heap_mb}m", "-RTS", "--sandbox",
            f"--from={_check_format('input', from_format, input_formats())}",
            f"--to={_check_format('output', to_format, output_formats())}"]
    data = text.encode("utf-8", "replace")
    max_bytes = 4 * max_output_chars  # a character is at most 4 UTF-8 bytes; exact check after decoding
    with tempfile.TemporaryDirectory(prefix="tandem-pandoc-") as home, \
            tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as stderr:
        stdin.write(data)
        stdin.seek(0)
        env = {"HOME": home, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PATH": os.defpath}
        proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=stderr, cwd=home, env=env,
                                close_fds=True, start_new_session=True)
        timed_out = threading.Event()

        def kill_on_timeout() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(max(timeout_s, 0.0), kill_on_timeout)
        timer.daemon = True
        timer.start()
        chunks: list[bytes] = []
        size = 0
        too_large = False
        started = time.monotonic()
        try:
            assert proc.stdout is not None
            while chunk := proc.stdout.read1(1 << 16):
                size += len(chunk)
                if size > max_bytes:
                    too_large = True
                    proc.kill()
                    break
                chunks.append(chunk)
        finally:
            timer.cancel()
            if proc.stdout is not None:
                proc.stdout.close()
            code = proc.wait()
        if timed_out.is_set():
            raise CommandTimeout(f"pandoc: command_timeout: the conversion ran past its {timeout_s:g} s limit "
                                 f"(killed after {time.monotonic() - started:.1f} s)")
        if too_large:
            raise OutputTooLarge("pandoc", max_output_chars, "the step output limit")
        if code != 0:
            stderr.seek(0)
            message = stderr.read(_STDERR_KEEP).decode("utf-8", "replace").strip()
            if code == 251 or "Heap exhausted" in message:
                raise CommandError(f"pandoc: ran out of its {max_heap_mb} MB memory limit")
            lines = [ln for ln in message.splitlines() if ln.strip()]
            raise CommandError(f"pandoc: failed (exit {code}): {' '.join(lines[:3]) or 'no message'}")
    out = b"".join(chunks).decode("utf-8", "replace")
    if len(out) > max_output_chars:
        raise OutputTooLarge("pandoc", max_output_chars, "the step output limit")
    return out
