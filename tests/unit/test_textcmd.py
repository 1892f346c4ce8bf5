"""Tests for ``tandem.services.textcmd``, Tandem's in-memory text commands.

Expected outputs in ``CASES`` were checked against GNU coreutils 9 / sed 4.9 /
grep 3.8 in the C.UTF-8 locale (``LC_ALL=C`` for ``sort``).
"""

from __future__ import annotations

import pytest

from tandem.services.errors import CommandError, ExecutionError, TandemError
from tandem.services.textcmd import COMMANDS, available_commands, command_names, describe_commands, run_command

FRUIT = "apple pie\nBanana split\ncherry tart\napple crumble\n\nbanana bread\nAPPLE juice\n"
NOEOL = "one\ntwo\nthree"  # no final newline
TABLE = "b 2\na 10\nc 1\nb 2\nA 3\n  d 5\nb 2\n"
COLON = "x:1:foo\ny:2:bar\nnodelim\nz:3:baz:extra\n"

# (command, args, input, expected stdout)
CASES = [
    # ---- cat
    ("cat", [], FRUIT, FRUIT),
    ("cat", [], NOEOL, NOEOL),
    ("cat", [], "", ""),
    ("cat", ["-"], "x\n", "x\n"),
    ("cat", ["-n"], "a\nb\n", "     1\ta\n     2\tb\n"),
    ("cat", ["-n"], "a\nb", "     1\ta\n     2\tb"),
    ("cat", ["-b"], "a\n\nb\n", "     1\ta\n\n     2\tb\n"),
    ("cat", ["-s"], "a\n\n\n\nb\n", "a\n\nb\n"),
    ("cat", ["-E"], "a\nb", "a$\nb"),
    ("cat", ["-sn"], "a\n\n\nb\n", "     1\ta\n     2\t\n     3\tb\n"),
    # ---- grep
    ("grep", ["apple"], FRUIT, "apple pie\napple crumble\n"),
    ("grep", ["-i", "apple"], FRUIT, "apple pie\napple crumble\nAPPLE juice\n"),
    ("grep", ["-v", "a"], FRUIT, "\nAPPLE juice\n"),
    ("grep", ["-iv", "apple"], FRUIT, "Banana split\ncherry tart\n\nbanana bread\n"),
    ("grep", ["-c", "apple"], FRUIT, "2\n"),
    ("grep", ["-c", "zzz"], FRUIT, "0\n"),
    ("grep", ["-c", "zzz"], "", "0\n"),
    ("grep", ["zzz"], FRUIT, ""),
    ("grep", ["x"], "", ""),
    ("grep", ["-n", "an"], FRUIT, "2:Banana split\n6:banana bread\n"),
    ("grep", ["-o", "an"], "banana\nman\n", "an\nan\nan\n"),
    ("grep", ["-on", "a."], "cat\nxyz\nbanana\n", "1:at\n3:an\n3:an\n"),
    ("grep", ["-o", "a*"], "baaad\n", "aaa\n"),
    ("grep", ["-w", "apple"], "apple\npineapple\napple-pie\napples\n", "apple\napple-pie\n"),
    ("grep", ["-x", "apple pie"], FRUIT, "apple pie\n"),
    ("grep", ["-x", "-E", "a|ab"], "ab\na\nabc\n", "ab\na\n"),
    ("grep", ["^$"], FRUIT, "\n"),
    ("grep", ["-n", "^$"], FRUIT, "5:\n"),
    ("grep", ["e"], NOEOL, "one\nthree\n"),  # output lines are always newline-terminated
    ("grep", [""], "a\n\nb\n", "a\n\nb\n"),
    ("grep", ["-e", "pie", "-e", "tart"], FRUIT, "apple pie\ncherry tart\n"),
    ("grep", ["-m", "1", "an"], FRUIT, "Banana split\n"),
    ("grep", ["--count", "--ignore-case", "APPLE"], FRUIT, "3\n"),
    ("grep", ["an", "-"], FRUIT, "Banana split\nbanana bread\n"),  # options after operands, '-' is stdin
    # BRE vs ERE
    ("grep", ["a(pp|n)"], "a(pp|n)\napp\n", "a(pp|n)\n"),
    ("grep", ["a\\(pp\\|n\\)"], "a(pp|n)\napp\nban\n", "app\nban\n"),
    ("grep", ["-E", "a(pp|n)"], "a(pp|n)\napp\nban\n", "app\nban\n"),
    ("grep", ["-E", "a\\(pp"], "a(pp|n)\napp\n", "a(pp|n)\n"),
    ("grep", ["ap+"], "ap+\napp\n", "ap+\n"),
    ("grep", ["ap\\+l\\?e"], "apple\naple\napl\n", "apple\naple\n"),
    ("grep", ["-E", "ap+l?e"], "apple\naple\napl\n", "apple\naple\n"),
    ("grep", ["p\\{2\\}"], "apple\nape\np{2}\n", "apple\n"),
    ("grep", ["p{2}"], "apple\nape\np{2}\n", "p{2}\n"),
    ("grep", ["-E", "p{2}"], "apple\nape\np{2}\n", "apple\n"),
    ("grep", ["*a"], "*a\nba\n", "*a\n"),  # a leading * is literal in a BRE
    ("grep", ["a^b"], "a^b\nab\n", "a^b\n"),  # ^ not at the start is literal in a BRE
    ("grep", ["\\(p\\)\\1"], "apple\nape\n", "apple\n"),
    ("grep", ["-E", "(a)\\1"], "aa\nab\n", "aa\n"),
    ("grep", ["-F", "a.p"], "a.p\nabp\n", "a.p\n"),
    ("grep", ["a.p"], "a.p\nabp\n", "a.p\nabp\n"),
    ("grep", ["-o", "[[:upper:]]\\+"], "abC DEf\n", "C\nDE\n"),
    ("grep", ["-oE", "[[:digit:]]+"], "a1b22c333\n", "1\n22\n333\n"),
    ("grep", ["-o", "[]a]"], "x]a\n", "]\na\n"),
    ("grep", ["-o", "\\<b[a-z]*"], "a big bad bee\n", "big\nbad\nbee\n"),
    ("grep", ["-io", "b[a-z]"], "Banana bread\n", "Ba\nbr\n"),
    # ---- sed
    ("sed", ["p"], "a\nb\n", "a\na\nb\nb\n"),
    ("sed", ["p"], "a", "a\na"),
    ("sed", ["-n", "p"], NOEOL, NOEOL),
    ("sed", ["s/o/0/g"], NOEOL, "0ne\ntw0\nthree"),  # a missing final newline stays missing
    ("sed", ["s/x/y/"], "", ""),
    ("sed", ["2d"], "1\n2\n3\n", "1\n3\n"),
    ("sed", ["$d"], "1\n2\n3\n", "1\n2\n"),
    ("sed", ["$d"], "1\n2\n3", "1\n2\n"),
    ("sed", ["2,4d"], "1\n2\n3\n4\n5\n", "1\n5\n"),
    ("sed", ["-n", "2,3p"], "1\n2\n3\n4\n", "2\n3\n"),
    ("sed", ["-n", "$p"], "1\n2\n3\n", "3\n"),
    ("sed", ["/apple/d"], FRUIT, "Banana split\ncherry tart\n\nbanana bread\nAPPLE juice\n"),
    ("sed", ["/apple/I d"], FRUIT, "Banana split\ncherry tart\n\nbanana bread\n"),
    ("sed", ["/start/,/end/d"], "a\nstart\nb\nend\nc\nstart\nd\n", "a\nc\n"),
    ("sed", ["-n", "/start/,/end/p"], "a\nstart\nb\nend\nc\n", "start\nb\nend\n"),
    ("sed", ["/b/,$d"], "a\nb\nc\nd\n", "a\n"),
    ("sed", ["2,+1d"], "1\n2\n3\n4\n", "1\n4\n"),
    ("sed", ["3,1d"], "1\n2\n3\n4\n", "1\n2\n4\n"),  # end before start: just line 3
    ("sed", ["/x/,1d"], "a\nx\nb\n", "a\nb\n"),
    ("sed", ["0,/a/d"], "a\nb\na\n", "b\na\n"),
    ("sed", ["1,/a/d"], "a\nb\na\nc\n", "c\n"),
    ("sed", ["1!d"], "1\n2\n3\n", "1\n"),
    ("sed", ["/a/!d"], "a\nb\nca\n", "a\nca\n"),
    ("sed", ["2,3!s/^/> /"], "1\n2\n3\n4\n", "> 1\n2\n3\n> 4\n"),
    ("sed", ["2q"], "1\n2\n3\n", "1\n2\n"),
    ("sed", ["-n", "2{p;q}"], "1\n2\n3\n", "2\n"),
    ("sed", ["s/a/X/"], "banana\n", "bXnana\n"),
    ("sed", ["s/a/X/g"], "banana\n", "bXnXnX\n"),
    ("sed", ["s/a/X/2"], "banana\n", "banXna\n"),
    ("sed", ["s/a/X/2g"], "banana\n", "banXnX\n"),
    ("sed", ["s/A/x/Ig"], "Aa\n", "xx\n"),
    ("sed", ["s/a/<&>/g"], "banana\n", "b<a>n<a>n<a>\n"),
    ("sed", ["s/a/\\&/"], "a\n", "&\n"),
    ("sed", ["s/\\(a\\)\\(n*\\)/[\\2\\1]/g"], "banana\n", "b[na][na][a]\n"),
    ("sed", ["-E", "s/([a-z]+) ([a-z]+)/\\2 \\1/"], "hello world\n", "world hello\n"),
    ("sed", ["-r", "s/(a|e)+/_/g"], "beaad\n", "b_d\n"),
    ("sed", ["s/(a|e)+/_/g"], "(a|e)+ ae\n", "_ ae\n"),  # BRE: ( | ) + are literal...
    ("sed", ["s/(a|e)/_/g"], "(a|e) ae\n", "_ ae\n"),  # ...so this matches the text "(a|e)"
    ("sed", ["s/x*/-/g"], "abxd\n", "-a-b-d-\n"),  # GNU empty-match rule
    ("sed", ["s/$/!/"], "a\nb\n", "a!\nb!\n"),
    ("sed", ["s/^/> /"], "a\n", "> a\n"),
    ("sed", ["s/ /\\n/"], "a b c\n", "a\nb c\n"),
    ("sed", ["s|/usr|/opt|g"], "/usr/bin:/usr/lib\n", "/opt/bin:/opt/lib\n"),
    ("sed", ["s/\\/usr/~/"], "/usr/bin\n", "~/bin\n"),
    ("sed", ["s/[/]/_/g"], "a/b/c\n", "a_b_c\n"),  # delimiter inside [...] is literal, as in GNU
    ("sed", ["s/\\./!/g"], "a.b.c\n", "a!b!c\n"),
    ("sed", ["s/[[:space:]]\\+/_/g"], "a  b\t c\n", "a_b_c\n"),
    ("sed", ["-E", "s/a{2,}/X/g"], "a aa aaa\n", "a X X\n"),
    ("sed", ["s/a\\{2,\\}/X/g"], "a aa aaa\n", "a X X\n"),
    ("sed", ["s/\\w\\+/\\u&/g"], "hello big world\n", "Hello Big World\n"),
    ("sed", ["s/.*/\\U&/"], "shout\n", "SHOUT\n"),
    ("sed", ["-E", "s/(\\w+) (\\w+)/\\U\\1\\E \\2/"], "big deal\n", "BIG deal\n"),
    ("sed", ["-n", "s/apple/APPLE/p"], FRUIT, "APPLE pie\nAPPLE crumble\n"),
    ("sed", ["-n", "/an/p"], FRUIT, "Banana split\nbanana bread\n"),
    ("sed", ["/^$/d;s/e/E/"], "one\n\ntwo\n", "onE\ntwo\n"),
    ("sed", ["1d\n$d"], "1\n2\n3\n", "2\n"),
    ("sed", ["-e", "s/a/b/", "-e", "s/b/c/"], "a\n", "c\n"),
    ("sed", ["-n", "/apple/{s/apple/A/;p}"], FRUIT, "A pie\nA crumble\n"),
    ("sed", ["2,3{s/a/b/g;s/e/f/}"], "ae\nae\nae\nae\n", "ae\nbf\nbf\nae\n"),
    ("sed", ["# comment\ns/a/b/ # trailing comment"], "a\n", "b\n"),
    ("sed", ["s/a/b/", "-"], "a\n", "b\n"),
    # ---- head / tail
    ("head", [], "".join(f"{i}\n" for i in range(1, 13)), "".join(f"{i}\n" for i in range(1, 11))),
    ("head", ["-n", "2"], FRUIT, "apple pie\nBanana split\n"),
    ("head", ["-2"], FRUIT, "apple pie\nBanana split\n"),
    ("head", ["-n2"], FRUIT, "apple pie\nBanana split\n"),
    ("head", ["-n", "0"], FRUIT, ""),
    ("head", ["-n", "-5"], FRUIT, "apple pie\nBanana split\n"),
    ("head", ["-n", "5"], NOEOL, NOEOL),
    ("head", ["-n", "2"], NOEOL, "one\ntwo\n"),
    ("head", [], "", ""),
    ("tail", [], "".join(f"{i}\n" for i in range(1, 13)), "".join(f"{i}\n" for i in range(3, 13))),
    ("tail", ["-n", "2"], FRUIT, "banana bread\nAPPLE juice\n"),
    ("tail", ["-1"], FRUIT, "APPLE juice\n"),
    ("tail", ["-n1"], NOEOL, "three"),  # GNU copies the missing final newline as-is
    ("tail", ["-n", "+6"], FRUIT, "banana bread\nAPPLE juice\n"),
    ("tail", ["-n", "+1"], "a\nb\n", "a\nb\n"),
    ("tail", ["-n", "0"], FRUIT, ""),
    ("tail", ["-n", "100"], "a\n", "a\n"),
    ("tail", [], "", ""),
    # ---- sort
    ("sort", [], "b\na\nB\n_\nA\n", "A\nB\n_\na\nb\n"),  # C locale: byte order
    ("sort", [], NOEOL, "one\nthree\ntwo\n"),
    ("sort", [], "", ""),
    ("sort", ["-r"], "b\na\nc\n", "c\nb\na\n"),
    ("sort", ["-f"], "b\na\nB\n_\nA\n", "A\na\nB\nb\n_\n"),
    ("sort", ["-fu"], "b\na\nB\nA\n", "a\nb\n"),
    ("sort", ["-u"], "b\na\nb\na\n", "a\nb\n"),
    ("sort", ["-n"], "10\n9\n-1\n1.5\nx\n 3\n", "-1\nx\n1.5\n 3\n9\n10\n"),
    ("sort", ["-nr"], "10\n9\n100\n", "100\n10\n9\n"),
    ("sort", ["-n", "-u"], "1\n01\n2\n1.0\n", "1\n2\n"),
    ("sort", ["-k", "2"], "x b 1\ny a 2\nz a 1\n", "z a 1\ny a 2\nx b 1\n"),  # field 2 to end of line
    ("sort", ["-k", "2,2"], "x b 1\ny a 2\nz a 1\n", "y a 2\nz a 1\nx b 1\n"),  # ties: whole line
    ("sort", ["-k", "2n"], TABLE, "c 1\nb 2\nb 2\nb 2\nA 3\n  d 5\na 10\n"),
    ("sort", ["-k", "2,2", "-n", "-r"], TABLE, "a 10\n  d 5\nA 3\nb 2\nb 2\nb 2\nc 1\n"),
    ("sort", ["-k", "1,1", "-k", "2nr"], "b 1\na 1\nb 3\n", "a 1\nb 3\nb 1\n"),
    ("sort", ["-t", ":", "-k", "2"], "a:2\nb:10\nc:1\n", "c:1\nb:10\na:2\n"),
    ("sort", ["-t", ":", "-k", "2n"], "a:2\nb:10\nc:1\n", "c:1\na:2\nb:10\n"),
    ("sort", ["-t", ":", "-k", "3,3"], COLON, "nodelim\ny:2:bar\nz:3:baz:extra\nx:1:foo\n"),
    ("sort", ["-s", "-k", "1,1"], "b 2\na 9\nb 1\n", "a 9\nb 2\nb 1\n"),
    ("sort", ["-u", "-k", "1,1"], "b 2\na 9\nb 1\n", "a 9\nb 2\n"),
    # ---- uniq
    ("uniq", [], "a\na\nb\nA\na\nc\nc\n", "a\nb\nA\na\nc\n"),
    ("uniq", ["-c"], "a\na\nb\nc\nc\nc\n", "      2 a\n      1 b\n      3 c\n"),
    ("uniq", ["-d"], "a\na\nb\nc\nc\n", "a\nc\n"),
    ("uniq", ["-u"], "a\na\nb\nc\nc\n", "b\n"),
    ("uniq", ["-i"], "a\nA\nb\n", "a\nb\n"),
    ("uniq", ["-ci"], "a\nA\nb\n", "      2 a\n      1 b\n"),
    ("uniq", ["-du"], "a\na\nb\n", ""),
    ("uniq", [], "x\nx", "x\n"),
    ("uniq", ["-c"], "", ""),
    # ---- wc
    ("wc", [], "a b\nc\n", "      2       3       6\n"),
    ("wc", [], "", "      0       0       0\n"),
    ("wc", [], "a b", "      0       2       3\n"),  # lines = newline characters, as GNU counts
    ("wc", ["-l"], FRUIT, "7\n"),
    ("wc", ["-l"], NOEOL, "2\n"),
    ("wc", ["-w"], FRUIT, "12\n"),
    ("wc", ["-c"], "héllo\n", "7\n"),  # bytes (UTF-8)
    ("wc", ["-m"], "héllo\n", "6\n"),  # characters
    ("wc", ["-lw"], "x\n", "      1       1\n"),
    ("wc", ["-lwmc"], "héllo wörld\n", "      1       2      12      14\n"),
    # ---- tr
    ("tr", ["a-z", "A-Z"], "Hello, World\n", "HELLO, WORLD\n"),
    ("tr", ["[:lower:]", "[:upper:]"], "Hello\n", "HELLO\n"),
    ("tr", ["[:upper:]", "[:lower:]"], "HeLLo\n", "hello\n"),
    ("tr", ["a-y", "AB"], "hello\n", "BBBBB\n"),  # SET2 padded with its last character
    ("tr", ["ae", "\\t"], "tea\n", "t\t\t\n"),
    ("tr", ["\\n", " "], "a\nb\n", "a b "),
    ("tr", ["a-z", "A-Z"], NOEOL, "ONE\nTWO\nTHREE"),
    ("tr", ["a-z", "A-Z"], "", ""),
    ("tr", ["-d", "aeiou"], "education\n", "dctn\n"),
    ("tr", ["-d", "[:digit:]"], "a1b22c\n", "abc\n"),
    ("tr", ["-d", "\\n"], "a\nb\n", "ab"),
    ("tr", ["-d", "\\\\"], "a\\b\n", "ab\n"),
    ("tr", ["-d", "a\\-z"], "a-b-y-z\n", "by\n"),  # an escaped '-' is not a range
    ("tr", ["-s", " "], "a   b  c\n", "a b c\n"),
    ("tr", ["-s", "a-z"], "aabbcc  dd\n", "abc  d\n"),
    ("tr", ["-s", "[:space:]", "\\n"], "a  b\t\tc\n", "a\nb\nc\n"),
    ("tr", ["-c", "a-z\\n", "_"], "Ab_b!\n", "_b_b_\n"),
    ("tr", ["-cd", "[:alpha:]\\n"], "a1 b2!\n", "ab\n"),
    ("tr", ["-cs", "[:alnum:]", "\\n"], "one, two;  three\n", "one\ntwo\nthree\n"),
    ("tr", ["-ds", "a", "p"], "apple\n", "ple\n"),
    ("tr", ["[:punct:]", "."], "a,b;c!\n", "a.b.c.\n"),
    ("tr", ["pa", "ap"], "papa\n", "apap\n"),
    # ---- cut
    ("cut", ["-d", ":", "-f", "2"], COLON, "1\n2\nnodelim\n3\n"),
    ("cut", ["-d", ":", "-f", "1,3"], COLON, "x:foo\ny:bar\nnodelim\nz:baz\n"),
    ("cut", ["-d:", "-f2-"], COLON, "1:foo\n2:bar\nnodelim\n3:baz:extra\n"),
    ("cut", ["-d", ":", "-f", "-2"], COLON, "x:1\ny:2\nnodelim\nz:3\n"),
    ("cut", ["-d", ":", "-f", "3,1"], COLON, "x:foo\ny:bar\nnodelim\nz:baz\n"),  # input order, like GNU
    ("cut", ["-d", ":", "-s", "-f", "1"], COLON, "x\ny\nz\n"),
    ("cut", ["-f", "2"], "a\tb\tc\n", "b\n"),  # tab is the default delimiter
    ("cut", ["-d", ":", "-f", "1,3", "--output-delimiter=--"], COLON, "x--foo\ny--bar\nnodelim\nz--baz\n"),
    ("cut", ["-d", ":", "--complement", "-f", "2"], "a:b:c\n", "a:c\n"),
    ("cut", ["-c", "1-3"], "abcdef\nxy\n", "abc\nxy\n"),
    ("cut", ["-c", "2,4-"], "abcdef\n", "bdef\n"),
    ("cut", ["-c", "1,3-5,7-"], "abcdefgh\n", "acdegh\n"),
    ("cut", ["-c", "1"], NOEOL, "o\nt\nt\n"),
    ("cut", ["-c", "1"], "", ""),
    # ---- rev, tac, nl, paste
    ("rev", [], "abc\nxy\n", "cba\nyx\n"),
    ("rev", [], "ab", "ba"),
    ("tac", [], "a\nb\nc\n", "c\nb\na\n"),
    ("tac", [], "", ""),
    ("nl", [], "a\n\nb\n", "     1\ta\n       \n     2\tb\n"),
    ("nl", ["-b", "a"], "a\n\nb\n", "     1\ta\n     2\t\n     3\tb\n"),
    ("nl", ["-w", "3", "-s", ". "], "a\nb", "  1. a\n  2. b\n"),
    ("paste", ["-s"], "a\nb\nc\n", "a\tb\tc\n"),
    ("paste", ["-s", "-d", ","], "a\nb\nc\n", "a,b,c\n"),
    ("paste", ["-s", "-d", ",;"], "a\nb\nc\nd\n", "a,b;c,d\n"),
    ("paste", ["-s", "-d", ","], "", "\n"),
    ("paste", ["-", "-"], "a\nb\nc\n", "a\tb\nc\t\n"),
    ("paste", ["-d", ":", "-", "-", "-"], "1\n2\n3\n4\n5\n6\n", "1:2:3\n4:5:6\n"),
]


@pytest.mark.parametrize(("cmd", "args", "text", "expected"), CASES)
def test_command_output(cmd: str, args: list[str], text: str, expected: str) -> None:
    assert run_command(cmd, args, text) == expected


# ---------------------------------------------------------------- registry


def test_command_names_sorted_and_match_registry() -> None:
    names = command_names()
    assert names == sorted(names) == sorted(COMMANDS)
    for required in ("cat", "grep", "sed", "head", "tail", "sort", "uniq", "wc", "tr", "cut"):
        assert required in names


def test_describe_commands_is_compact_and_covers_every_available_command() -> None:
    text = describe_commands()
    assert len(text) < 900
    for info in available_commands():
        assert info.name in text


def test_available_commands_give_name_parameters_and_one_line() -> None:
    infos = available_commands()
    names = [i.name for i in infos]
    assert names == sorted(names)
    assert set(names) <= set(command_names())
    assert set(command_names()) - set(names) <= {"pandoc"}  # only pandoc may be missing (not installed)
    for info in infos:
        assert info.usage.split()[0] == info.name
        assert info.summary and "\n" not in info.summary and len(info.summary) < 100


def test_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        COMMANDS["sh"] = lambda args, text: text  # type: ignore[index]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("cmd", "args", "message"),
    [
        ("bash", ["-c", "ls"], "bash: unknown command"),
        ("awk", ["{print}"], "awk: unknown command"),
        ("grep", ["-P", "x"], "grep: unknown option '-P'"),
        ("grep", ["--perl-regexp", "x"], "grep: unknown option '--perl-regexp'"),
        ("sed", ["-i", "s/a/b/"], "sed: unknown option '-i'"),
        ("sort", ["-z"], "sort: unknown option '-z'"),
        ("cat", ["-A"], "cat: unknown option '-A'"),
        ("wc", ["-L"], "wc: unknown option '-L'"),
        ("head", ["-n"], "head: option '-n' requires an argument"),
        ("grep", ["-e"], "grep: option '-e' requires an argument"),
    ],
)
def test_unknown_command_or_option(cmd: str, args: list[str], message: str) -> None:
    with pytest.raises(CommandError) as info:
        run_command(cmd, args, "text\n")
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("cmd", "args"),
    [
        ("grep", ["foo", "/etc/passwd"]),
        ("grep", ["-e", "foo", "notes.txt"]),
        ("grep", ["-r", "foo", "."]),
        ("sed", ["s/a/b/", "/etc/hosts"]),
        ("sed", ["-e", "p", "input.txt"]),
        ("cat", ["/etc/shadow"]),
        ("head", ["-n", "1", "/etc/passwd"]),
        ("tail", ["log.txt"]),
        ("sort", ["data.csv"]),
        ("uniq", ["in.txt", "out.txt"]),
        ("wc", ["-l", "file"]),
        ("cut", ["-f1", "file"]),
        ("rev", ["file"]),
        ("tac", ["file"]),
        ("nl", ["file"]),
        ("paste", ["-s", "file"]),
        ("tr", ["a", "b", "file"]),
    ],
)
def test_file_operands_are_rejected(cmd: str, args: list[str]) -> None:
    with pytest.raises(CommandError) as info:
        run_command(cmd, args, "text\n")
    message = str(info.value)
    assert message.startswith(f"{cmd}: ")
    assert "\n" not in message


def test_file_operand_message_names_the_file() -> None:
    with pytest.raises(CommandError, match=r"^grep: file operand '/etc/passwd' is not allowed"):
        run_command("grep", ["foo", "/etc/passwd"], "")


@pytest.mark.parametrize(
    ("cmd", "args", "fragment"),
    [
        ("grep", ["\\(a"], "'\\(a'"),
        ("grep", ["-E", "(a"], "'(a'"),
        ("grep", ["a\\)"], "'a\\)'"),
        ("grep", ["[a"], "'[a'"),
        ("grep", ["[z-a]"], "'[z-a]'"),
        ("grep", ["[[:nope:]]"], "[:nope:]"),
        ("grep", ["-E", "+a"], "'+a'"),
        ("grep", ["a\\{1"], "'a\\{1'"),
        ("grep", ["\\1"], "'\\1'"),
        ("grep", ["\\d+"], "'\\d'"),  # Perl escapes are not POSIX: rejected, not silently wrong
        ("grep", ["x\\"], "trailing backslash"),
        ("sed", ["-E", "s/(a/b/"], "'(a'"),
        ("sed", ["/[a/d"], "[a"),
    ],
)
def test_bad_regex(cmd: str, args: list[str], fragment: str) -> None:
    with pytest.raises(CommandError) as info:
        run_command(cmd, args, "a\n")
    assert str(info.value).startswith(f"{cmd}: ")
    assert fragment in str(info.value)


def test_sed_unknown_command_message() -> None:
    with pytest.raises(CommandError) as info:
        run_command("sed", ["y/a/b/"], "a\n")
    assert str(info.value) == "sed: unknown command 'y' in script 'y/a/b/'"


@pytest.mark.parametrize(
    ("script", "fragment"),
    [
        ("s/a/b", "unterminated 's' command"),
        ("s/a/b/x", "unknown option 'x' to 's'"),
        ("s/a/b/e", "'e' flag"),
        ("s/a/b/w out.txt", "'w' flag"),
        ("s/a/b/0", "may not be zero"),
        ("s/a/\\1/", "invalid reference \\1"),
        ("p x", "extra characters after command"),
        ("{p", "unmatched '{'"),
        ("p}", "unexpected '}'"),
        ("0p", "line address 0"),
        ("1,p", "unexpected ','"),
        ("s//x/", "no previous regular expression"),
        ("e ls", "unknown command 'e'"),
        ("r /etc/passwd", "unknown command 'r'"),
        ("w out.txt", "unknown command 'w'"),
    ],
)
def test_sed_script_errors(script: str, fragment: str) -> None:
    with pytest.raises(CommandError) as info:
        run_command("sed", [script], "a\n")
    assert str(info.value).startswith("sed: ")
    assert fragment in str(info.value)


def test_sed_error_names_the_offending_script_line() -> None:
    with pytest.raises(CommandError, match=r"in script 'y/a/b/'$"):
        run_command("sed", ["-e", "s/a/b/", "-e", "y/a/b/"], "a\n")


@pytest.mark.parametrize(
    ("cmd", "args", "fragment"),
    [
        ("sed", [], "no script"),
        ("grep", [], "no pattern"),
        ("head", ["-n", "x"], "invalid number of lines: 'x'"),
        ("tail", ["-n", "-x"], "invalid number of lines"),
        ("grep", ["-m", "many", "a"], "invalid max count"),
        ("sort", ["-k", "0"], "invalid key '0'"),
        ("sort", ["-k", "1.2"], "invalid key"),
        ("sort", ["-t", "::"], "one character"),
        ("cut", [], "must specify a list"),
        ("cut", ["-f", "0"], "numbered from 1"),
        ("cut", ["-c", "3-1"], "decreasing range"),
        ("cut", ["-c", "x"], "invalid list"),
        ("cut", ["-d", "::", "-f", "1"], "single character"),
        ("cut", ["-c", "1", "-d", ":"], "only valid with -f"),
        ("cut", ["-f", "1", "-c", "1"], "only one list"),
        ("tr", [], "missing operand"),
        ("tr", ["abc"], "missing operand after 'abc'"),
        ("tr", ["-d", "a", "b"], "extra operand 'b'"),
        ("tr", ["z-a", "x"], "reverse collating sequence"),
        ("tr", ["a", "[:digit:]"], "only [:upper:] and [:lower:]"),
        ("tr", ["[:nope:]", "x"], "invalid character class"),
        ("tr", ["a-z", ""], "SET2 must be non-empty"),
        ("nl", ["-b", "x"], "invalid body numbering style"),
    ],
)
def test_bad_arguments(cmd: str, args: list[str], fragment: str) -> None:
    with pytest.raises(CommandError) as info:
        run_command(cmd, args, "a\n")
    assert str(info.value).startswith(f"{cmd}: ")
    assert fragment in str(info.value)


def test_args_must_be_a_list_of_strings() -> None:
    with pytest.raises(CommandError, match="list of strings"):
        run_command("grep", "foo", "foo\n")  # type: ignore[arg-type]
    with pytest.raises(CommandError, match="list of strings"):
        run_command("head", ["-n", 3], "foo\n")  # type: ignore[list-item]


def test_command_error_is_part_of_the_hierarchy() -> None:
    with pytest.raises(ExecutionError):
        run_command("nope", [], "")
    assert issubclass(CommandError, TandemError)
    assert CommandError.code == "command"


# ---------------------------------------------------------------- purity


def test_run_command_never_touches_files(tmp_path, monkeypatch) -> None:
    (tmp_path / "secret.txt").write_text("secret\n")
    monkeypatch.chdir(tmp_path)
    # even a '-' operand and an existing file name never read the file
    assert run_command("cat", ["-"], "stdin\n") == "stdin\n"
    with pytest.raises(CommandError):
        run_command("cat", ["secret.txt"], "stdin\n")


def test_large_input_is_handled() -> None:
    text = "".join(f"line {i % 1000}\n" for i in range(50_000))
    assert run_command("wc", ["-l"], text) == "50000\n"
    assert run_command("sort", ["-u", "-k", "2n"], text).count("\n") == 1000
    assert run_command("grep", ["-c", "line 99$"], text) == "50\n"


# ---------------------------------------------------------------- pipelines


def pipeline(text: str, *steps: tuple[str, list[str]]) -> str:
    for cmd, args in steps:
        text = run_command(cmd, args, text)
    return text


def test_word_frequency_pipeline() -> None:
    text = "the cat and the hat\nThe end\n"
    out = pipeline(
        text,
        ("tr", ["[:upper:]", "[:lower:]"]),
        ("tr", ["-cs", "[:alpha:]", "\\n"]),
        ("sort", []),
        ("uniq", ["-c"]),
        ("sort", ["-k1,1nr", "-k2"]),
        ("head", ["-n", "2"]),
    )
    assert out == "      3 the\n      1 and\n"


# Markdown -> Textile with nothing but sed -E scripts. Order matters:
#   1. headings (anchored, so "# " cannot match "## ");
#   2. italics *x* -> _x_ BEFORE bold: the opening * must follow start-of-line or
#      a non-* char and be followed by a non-space, non-* char, so neither
#      "**bold**" nor a "* bullet" marker nor "2 * 3" is touched;
#   3. bold **x** -> *x* (running italics after this would mangle it);
#   4. bullets last: nested "  - "/"  * " -> "** ", top-level "- "/"* " -> "* ".
# _italic_ is already Textile, so it is left alone.
MD_TO_TEXTILE_SED = [
    r"s/^### +/h3. /;s/^## +/h2. /;s/^# +/h1. /",
    r"s/(^|[^*])\*([^* ][^*]*)\*/\1_\2_/g",
    r"s/\*\*([^*]+)\*\*/*\1*/g",
    r"s/^  [-*] +/** /;s/^[-*] +/* /",
]

MARKDOWN = """\
# Project Title

Some **bold** text, some *italic* text and _more italic_ here.
*Leading* italic, **leading** bold; *one* *two* in a row.

## Features

- First item
- Second item with **bold**
  - Nested *italic* item
  * Nested star item
* Star item with _underscore italic_

### Notes

Plain paragraph: 2 * 3 = 6 stays as it is."""

TEXTILE = """\
h1. Project Title

Some *bold* text, some _italic_ text and _more italic_ here.
_Leading_ italic, *leading* bold; _one_ _two_ in a row.

h2. Features

* First item
* Second item with *bold*
** Nested _italic_ item
** Nested star item
* Star item with _underscore italic_

h3. Notes

Plain paragraph: 2 * 3 = 6 stays as it is."""


def test_markdown_to_textile_with_sed_steps() -> None:
    out = pipeline(MARKDOWN, *(("sed", ["-E", script]) for script in MD_TO_TEXTILE_SED))
    assert out == TEXTILE


def test_markdown_to_textile_with_one_sed_call() -> None:
    args = ["-E"]
    for script in MD_TO_TEXTILE_SED:
        args += ["-e", script]
    assert run_command("sed", args, MARKDOWN + "\n") == TEXTILE + "\n"
