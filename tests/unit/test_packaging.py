"""Packaging: one ``tandem`` namespace mapped from the top-level folders, config as package data."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tandem.services.config import (
    Config,
    ModelConfig,
    NatsConfig,
    ProviderConfig,
    config_source,
    load_config,
    redact_url,
    redacted,
)
from tandem.services.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
MAPPED = PYPROJECT["tool"]["setuptools"]["package-dir"]


def test_every_package_on_disk_is_in_the_wheel_under_tandem() -> None:
    on_disk = set()
    for name, folder in MAPPED.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            if "__pycache__" not in init.parts:
                rel = init.parent.relative_to(ROOT / folder).parts
                on_disk.add(".".join((name, *rel)))
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert on_disk == listed, f"add to / remove from pyproject's packages: {on_disk ^ listed}"
    assert all(p.startswith("tandem.") for p in listed)


def test_console_script_and_distribution_name() -> None:
    assert PYPROJECT["project"]["name"] != "tandem"  # taken on PyPI by an unrelated project
    assert PYPROJECT["project"]["scripts"]["tandem"].startswith("tandem.")


def test_config_is_package_data_read_through_importlib_resources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TANDEM_CONFIG", raising=False)
    source = config_source()
    assert source.origin == "package"
    assert Path(source.location).name == "default.yaml"
    assert "default.yaml" in PYPROJECT["tool"]["setuptools"]["package-data"]["tandem.configs"][0].replace("*", "default")
    assert load_config().nats.url is None


def test_config_lookup_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env_file = tmp_path / "env.yaml"
    env_file.write_text("nats: {url: nats://127.0.0.1:1}\n")
    cli_file = tmp_path / "cli.yaml"
    cli_file.write_text("nats: {url: nats://127.0.0.1:2}\n")
    monkeypatch.setenv("TANDEM_CONFIG", str(env_file))
    assert config_source().origin == "TANDEM_CONFIG"
    assert load_config().nats.url == "nats://127.0.0.1:1"
    assert config_source(cli_file).origin == "--config"
    assert load_config(cli_file).nats.url == "nats://127.0.0.1:2"
    monkeypatch.setenv("TANDEM_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_config()


def test_redaction_hides_secrets_and_keeps_env_var_names() -> None:
    config = Config(
        nats=NatsConfig(url="nats://app:s3cret@127.0.0.1:4222"),
        providers={"p": ProviderConfig(base_url="https://user:pw@example.test/v1", api_key_env="OPENAI_API_KEY",
                                       headers={"Authorization": "Bearer sk-live", "X-Trace": "x"})},
        models={"m": ModelConfig(provider="p", model="m")},
        tiers={"cheap": ["m"], "standard": ["m"], "heavy_reasoning": ["m"]},
    )
    text = repr(redacted(config))
    for secret in ("s3cret", "sk-live", ":pw@"):
        assert secret not in text
    data = redacted(config)
    assert data["nats"]["url"] == "nats://app:***@127.0.0.1:4222"
    assert data["providers"]["p"]["api_key_env"] == "OPENAI_API_KEY"
    assert data["providers"]["p"]["headers"] == {"Authorization": "***", "X-Trace": "***"}
    assert redact_url("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"
    assert redact_url("nats://token@host:4222") == "nats://***@host:4222"
