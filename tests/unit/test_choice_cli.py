"""``tandem choose --no-llm`` read without typer (start-up): the same options, the same output, typer otherwise."""

from __future__ import annotations

import json

import pytest
import typer
from tandem.services import cli
from typer.testing import CliRunner


@pytest.fixture(autouse=True)
def _no_bus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TANDEM_NATS_URL", raising=False)
    monkeypatch.delenv("TANDEM_NATS_CREDS", raising=False)


def test_the_fast_reader_knows_exactly_the_commands_options() -> None:
    """A new option of `tandem choose` must be taught to the fast reader (or it would be refused as unknown)."""
    command = typer.main.get_command(cli.app).commands["choose"]
    opts = {o for p in command.params if isinstance(p, typer.core.TyperOption) for o in p.opts + p.secondary_opts}
    known = set(cli._CHOOSE_VALUES) | set(cli._CHOOSE_FLAGS) | {"--verbose", "-v", "--help"}
    assert opts | {"--help"} == known
    envvars = {p.name: p.envvar for p in command.params if getattr(p, "envvar", None)}
    assert envvars == {"nats_url": "TANDEM_NATS_URL", "creds": "TANDEM_NATS_CREDS"}


ARGS = [
    ["--no-llm", "-o", "Lint", "-o", "Test", "-o", "Build", "not 1 but 2"],
    ["2番で", "--no-llm", "-o", "ファイル作成", "--option", "安全モード実行", "-o", "完全実行"],
    ["--no-llm", "--option=a", "--option=b", "--description=first", "-d", "second", "the first one"],
    ["--no-llm", "--risk", "critical", "-o", "delete", "-o", "keep", "1"],
    ["--no-llm", "--approval", "-o", "承認", "-o", "却下", "はい", "-v"],
    ["-vv", "--no-llm", "-o", "a", "-o", "b", "いい感じのやつ"],
    ["--no-llm", "-o", "Lint", "-o", "Test", "as if I'd pick 2"],
]


@pytest.mark.parametrize("args", ARGS)
def test_same_output_as_the_typer_command(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli._choose_in_process(args)
    fast = capsys.readouterr().out
    slow = CliRunner().invoke(cli.app, ["choose", *args])
    assert slow.exit_code == 0, slow.output
    assert json.loads(fast) == json.loads(slow.stdout)
    assert fast == slow.stdout


@pytest.mark.parametrize("args", [
    ["-o", "a", "-o", "b", "1"],  # not --no-llm: the bus path
    ["--no-llm", "-o", "a", "-o", "b", "1", "--nats-url", "nats://127.0.0.1:4222"],
    ["--no-llm", "-o", "a", "-o", "b", "--help"],
    ["--no-llm", "-oa", "-o", "b", "1"],
    ["--no-llm", "-o", "a", "-o", "b", "1", "2"],
    ["--no-llm", "-o", "a", "-o", "b", "--", "-1"],
    ["--no-llm", "-o", "a", "-o", "b", "-1"],
    ["--no-llm", "-o", "a", "-o"],
    ["--no-llm", "1"],
    ["--no-llm", "-o", "a", "--risk", "extreme", "1"],
    ["--no-llm", "-o", "a", "--approval=yes", "1"],
    ["--no-llm", "-o", "a", "--unknown", "1"],
])
def test_anything_unusual_is_left_to_typer(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert not cli._choose_in_process(args)
    assert capsys.readouterr().out == ""


def test_a_bus_from_the_environment_is_left_to_typer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_NATS_URL", "nats://127.0.0.1:4222")
    assert not cli._choose_in_process(["--no-llm", "-o", "a", "-o", "b", "1"])
