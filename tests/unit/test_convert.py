"""The ``pandoc`` built-in command (issue 11): formats, sandbox, limits, errors, exactness, absence."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

from ..conftest import package_readme

from tandem.services import convert
from tandem.services.errors import CommandError
from tandem.services.textcmd import (
    CommandTimeout,
    CommandUnavailable,
    Limits,
    OutputTooLarge,
    available_commands,
    describe_commands,
    run_builtin,
    run_command,
)

needs_pandoc = pytest.mark.skipif(not convert.pandoc_available(), reason=convert.unavailable_reason())

MARKDOWN = "# Title\n\nSome *emphasis* and `code`, a [link](https://example.org).\n\n- one\n- two\n"


def pandoc(args: list[str], text: str, **kwargs) -> str:
    return run_command("pandoc", args, text, **kwargs)


# ------------------------------------------------------------------ formats


@needs_pandoc
def test_formats_come_from_pandoc_itself() -> None:
    listed_in = set(subprocess.run([convert.pandoc_path(), "--list-input-formats"], capture_output=True,
                                   text=True, check=True).stdout.split())
    listed_out = set(subprocess.run([convert.pandoc_path(), "--list-output-formats"], capture_output=True,
                                    text=True, check=True).stdout.split())
    assert convert.input_formats() == listed_in - convert.BINARY_FORMATS
    assert convert.output_formats() == listed_out - convert.BINARY_FORMATS
    for fmt in ("gfm", "markdown", "commonmark", "html", "rst", "latex", "org", "mediawiki", "textile", "docbook", "jira"):
        assert fmt in convert.input_formats()
    for fmt in ("gfm", "textile", "html", "rst", "asciidoc", "latex", "org", "mediawiki", "jira", "docbook", "plain"):
        assert fmt in convert.output_formats()
    assert not {"docx", "pdf", "epub", "odt", "pptx"} & (convert.input_formats() | convert.output_formats())


@needs_pandoc
@pytest.mark.parametrize(
    ("src", "dst", "expected"),
    [
        ("gfm", "textile", ["h1(#title). Title", "_emphasis_", "@code@", '"link":https://example.org', "* one\n* two"]),
        ("gfm", "rst", ["Title\n=====", "*emphasis*", "``code``", "`link <https://example.org>`__", "one\n-"]),
        ("gfm", "mediawiki", ["= Title =", "''emphasis''", "<code>code</code>", "[https://example.org link]",
                              "* one\n* two"]),
        ("gfm", "html", ["<h1", "<em>emphasis</em>", "<code>code</code>", 'href="https://example.org">link</a>']),
        ("gfm", "plain", ["Title", "emphasis", "code", "one"]),
        ("html", "gfm", ["# Title", "*emphasis*"]),
    ],
)
def test_converts_between_formats(src: str, dst: str, expected: list[str]) -> None:
    text = MARKDOWN if src == "gfm" else pandoc(["-f", "gfm", "-t", src], MARKDOWN)
    out = pandoc(["-f", src, "-t", dst], text)
    for piece in expected:
        assert piece in out, (piece, out)


@needs_pandoc
def test_option_spellings_and_extensions() -> None:
    expected = pandoc(["-f", "gfm", "-t", "html"], MARKDOWN)
    assert pandoc(["--from=gfm", "--to=html"], MARKDOWN) == expected
    assert pandoc(["-r", "gfm", "-w", "html"], MARKDOWN) == expected
    assert pandoc(["-t", "html", "-f", "gfm", "-"], MARKDOWN) == expected  # '-' is stdin, as for the others
    assert "&quot;" not in pandoc(["-f", "markdown+smart", "-t", "html"], '"quoted"\n')
    with pytest.raises(CommandError, match="pandoc: failed"):
        pandoc(["-f", "gfm+no_such_extension", "-t", "html"], MARKDOWN)


@needs_pandoc
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-f", "gfm", "-t", "klingon"], "unknown output format 'klingon' (allowed: "),
        (["-f", "klingon", "-t", "html"], "unknown input format 'klingon' (allowed: "),
        (["-f", "gfm", "-t", "docx"], "unknown output format 'docx'"),  # binary: not text on stdout
        (["-f", "gfm", "-t", "pdf"], "unknown output format 'pdf'"),  # would run a PDF engine
        (["-f", "docx", "-t", "html"], "unknown input format 'docx'"),
        (["-f", "gfm", "-t", "writer.lua"], "unknown output format"),  # a custom Lua writer is code
        (["-f", "../../x.lua", "-t", "html"], "unknown input format"),
        (["-f", "gfm", "-t", "HTML"], "unknown output format"),
    ],
)
def test_unknown_format_is_a_step_error_naming_the_allowed_ones(args: list[str], message: str) -> None:
    with pytest.raises(CommandError) as info:
        pandoc(args, MARKDOWN)
    assert message in str(info.value)
    if "allowed" in message:
        assert "textile" in str(info.value) and "gfm" in str(info.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-f", "gfm"], "give both -f FROM and -t TO"),
        ([], "give both -f FROM and -t TO"),
        (["-f", "gfm", "-t", "html", "--standalone"], "unknown option '--standalone' (pandoc takes only -f FROM"),
        (["-f", "gfm", "-t", "html", "--lua-filter=x.lua"], "unknown option '--lua-filter'"),
        (["-f", "gfm", "-t", "html", "-F", "x"], "unknown option '-F'"),
        (["-f", "gfm", "-t", "html", "--extract-media=/tmp"], "unknown option '--extract-media'"),
        (["-f", "gfm", "-t", "html", "-o", "/tmp/x"], "unknown option '-o'"),
        (["-f", "gfm", "-t", "html", "/etc/passwd"], "file operand '/etc/passwd' is not allowed"),
    ],
)
def test_plan_cannot_pass_other_flags_or_files(args: list[str], message: str) -> None:
    with pytest.raises(CommandError) as info:
        pandoc(args, MARKDOWN)
    assert message in str(info.value)


# ------------------------------------------------------------------ sandbox


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_text("TANDEM-SECRET-4f9c\n")
    return path


def leaks(doc: str, src: str, dst: str, path) -> tuple[bool, str]:
    try:
        out = pandoc(["-f", src, "-t", dst], doc.replace("SECRET", str(path)))
    except CommandError as exc:  # refusing the document is fine too, as long as nothing leaks
        out = str(exc)
    return "TANDEM-SECRET-4f9c" in out or "VEFOREVNLVNFQ1JFVC00ZjljCg" in out, out  # also base64


INCLUDES = [
    ("gfm", "html", "![x](SECRET)\n"),
    ("gfm", "textile", "![x](SECRET)\n\n<iframe src=file://SECRET></iframe>\n"),
    ("html", "plain", '<iframe src="file://SECRET"></iframe><img src="SECRET">\n'),
    ("rst", "plain", ".. include:: SECRET\n\ntext\n"),
    ("rst", "html", ".. raw:: html\n   :file: SECRET\n"),
    ("rst", "html", ".. csv-table:: t\n   :file: SECRET\n"),
    ("latex", "plain", "\\input{SECRET}\n\\include{SECRET}\n"),
    ("org", "plain", '#+INCLUDE: "SECRET"\n\ntext\n'),
    ("asciidoc", "plain", "include::SECRET[]\n"),
    ("docbook", "plain", '<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY x SYSTEM "file://SECRET">]>\n'
                         "<article><para>&x;</para></article>\n"),
    ("typst", "plain", '#include "SECRET"\n'),
]


@needs_pandoc
@pytest.mark.parametrize(("src", "dst", "doc"), INCLUDES)
def test_documents_cannot_include_local_files(src: str, dst: str, doc: str, secret) -> None:
    leaked, out = leaks(doc, src, dst, secret)
    assert not leaked, out


@needs_pandoc
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/etc/passwd as in the issue")
@pytest.mark.parametrize(("src", "dst", "doc"), [
    ("gfm", "html", "![x](/etc/passwd)\n"),
    ("html", "textile", "<iframe src=file:///etc/passwd></iframe>\n"),
    ("rst", "plain", ".. include:: /etc/passwd\n"),
])
def test_etc_passwd_does_not_leak(src: str, dst: str, doc: str) -> None:
    try:
        out = pandoc(["-f", src, "-t", dst], doc)
    except CommandError as exc:
        out = str(exc)
    assert "root:" not in out and "cm9vdDp4" not in out


@needs_pandoc
def test_the_sandbox_is_what_stops_the_include(secret) -> None:
    # control: the same document does leak from pandoc run without --sandbox, so the tests above are sharp
    doc = f".. include:: {secret}\n"
    bare = subprocess.run([convert.pandoc_path(), "-f", "rst", "-t", "plain"], input=doc, capture_output=True,
                          text=True).stdout
    assert "TANDEM-SECRET-4f9c" in bare
    assert not leaks(".. include:: SECRET\n", "rst", "plain", secret)[0]


@needs_pandoc
def test_runs_in_an_empty_directory_without_the_callers_environment(tmp_path, monkeypatch) -> None:
    (tmp_path / "local.rst").write_text("LOCAL-FILE-CONTENT\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TANDEM_TEST_SECRET_ENV", "ENV-SECRET")
    out = pandoc(["-f", "rst", "-t", "plain"], ".. include:: local.rst\n\ntext\n")
    assert "LOCAL-FILE-CONTENT" not in out and out == "text\n"


# ------------------------------------------------------------------ limits and errors


@needs_pandoc
def test_output_cap() -> None:
    doc = "".join(f"- item {i}\n" for i in range(2000))
    with pytest.raises(OutputTooLarge) as info:
        pandoc(["-f", "gfm", "-t", "html"], doc, limits=Limits(max_output_chars=1000))
    assert info.value.code == "output_too_large" and info.value.cmd == "pandoc"
    assert pandoc(["-f", "gfm", "-t", "html"], "x\n", limits=Limits(max_output_chars=1000)) == "<p>x</p>\n"


@needs_pandoc
def test_plan_memory_cap_applies() -> None:
    with pytest.raises(OutputTooLarge):
        pandoc(["-f", "gfm", "-t", "html"], "# " + "x" * 500 + "\n",
               limits=Limits(max_output_chars=10_000, max_plan_chars=10_000), held_chars=9_800)


@needs_pandoc
def test_time_limit_kills_pandoc() -> None:
    doc = "".join(f"* item {i} with *emphasis* and `code`\n" for i in range(50_000))
    with pytest.raises(CommandTimeout) as info:
        pandoc(["-f", "markdown", "-t", "html"], doc, limits=Limits(time_limit_s=0.05))
    assert info.value.code == "command_timeout" and "pandoc" in str(info.value)


@needs_pandoc
def test_heap_limit() -> None:
    doc = "".join(f"* item {i}\n" for i in range(20_000))
    with pytest.raises(CommandError, match="memory limit|pandoc: failed"):
        pandoc(["-f", "markdown", "-t", "html"], doc, limits=Limits(pandoc_max_heap_mb=8))


@needs_pandoc
def test_pandoc_errors_become_command_errors() -> None:
    with pytest.raises(CommandError, match=r"pandoc: failed \(exit \d+\): .+"):
        pandoc(["-f", "json", "-t", "html"], "this is not pandoc json")


@needs_pandoc
def test_text_round_trips_unicode_and_odd_input() -> None:
    assert pandoc(["-f", "gfm", "-t", "plain"], "Grüße, 東京 🎉\n") == "Grüße, 東京 🎉\n"
    assert pandoc(["-f", "gfm", "-t", "plain"], "").strip() == ""
    assert pandoc(["-f", "gfm", "-t", "plain"], "lone \udcff surrogate\n") == "lone ? surrogate\n"


@needs_pandoc
async def test_runs_through_run_builtin() -> None:
    assert await run_builtin("pandoc", ["-f", "gfm", "-t", "textile"], "# Hi\n") == "h1(#hi). Hi\n"


# ------------------------------------------------------------------ exactness on a real README


def _real_readmes() -> list[tuple[str, str]]:
    found = []
    for dist in ("httpx", "rich", "typer", "msgspec", "nats-py"):
        try:
            meta = importlib.metadata.metadata(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        body = package_readme(dist)
        if meta.get("Description-Content-Type", "").startswith("text/markdown") and len(body) > 2000:
            found.append((dist, body))
    return found


@needs_pandoc
@pytest.mark.parametrize("fmt", ["textile", "rst", "asciidoc", "mediawiki", "html", "jira", "org", "latex"])
def test_real_readme_matches_pandoc_run_directly(fmt: str) -> None:
    readmes = _real_readmes()
    assert readmes, "no installed package with a Markdown README"
    for dist, body in readmes[:2]:
        ours = pandoc(["-f", "gfm", "-t", fmt], body)
        direct = subprocess.run([convert.pandoc_path(), "-f", "gfm", "-t", fmt], input=body, capture_output=True,
                                text=True, check=True).stdout
        assert ours == direct, dist
        if fmt == "textile":  # headings, code blocks and links really were converted
            assert "\nh2" in ours or ours.startswith("h1") or "\nh1" in ours
            assert "\nbc(" in ours or "\nbc." in ours
            assert '":http' in ours


# ------------------------------------------------------------------ without pandoc


def test_without_pypandoc_nothing_is_found(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pypandoc", None)  # import pypandoc -> ImportError
    path, why = convert._locate.__wrapped__()
    assert path is None and "pip install pypandoc-binary" in why


def test_without_pandoc_the_command_is_not_offered_and_fails_clearly(monkeypatch) -> None:
    monkeypatch.setattr(convert, "_locate", lambda: (None, "pandoc is not installed: install Tandem's [convert] "
                                                           "extra (pip install pypandoc-binary)"))
    assert not convert.pandoc_available()
    assert "pandoc" not in [c.name for c in available_commands()]
    assert "pandoc" not in describe_commands()
    assert "sed" in [c.name for c in available_commands()]
    with pytest.raises(CommandUnavailable) as info:
        pandoc(["-f", "gfm", "-t", "textile"], MARKDOWN)
    assert info.value.code == "command_unavailable"
    assert "pip install pypandoc-binary" in str(info.value)
    with pytest.raises(CommandUnavailable):
        convert.convert(MARKDOWN, "gfm", "textile")


@needs_pandoc
def test_with_pandoc_the_command_is_offered() -> None:
    info = next(c for c in available_commands() if c.name == "pandoc")
    assert info.usage == "pandoc -f FROM -t TO"
    assert "pandoc -f FROM -t TO" in describe_commands()
    assert convert.pandoc_version().split(".")[0].isdigit()
