"""Configuration loading: the shipped default and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tandem.services.config import load_config
from tandem.services.errors import ConfigError


def test_default_config_is_valid_and_embedded() -> None:
    config = load_config()
    assert config.nats.url is None
    assert config.tier_for("planning") == "heavy_reasoning"
    assert config.tier_for("manual_transform") == "cheap"
    assert config.router.fallback.per_status[429].max_retries == 0
    first = config.models[config.tiers[config.tier_for("planning")][0]]
    assert config.providers[first.provider].kind == "llamacpp_embedded"
    assert first.structured_output == "json_schema"


def test_unknown_field_names_its_path(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("two_stage:\n  complexity_treshold: 0.5\n")
    with pytest.raises(ConfigError, match=r"complexity_treshold.*\$\.two_stage"):
        load_config(path)


def test_tier_naming_unknown_model_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("providers: {p: {kind: openai, base_url: 'http://x/v1'}}\n"
                    "models: {m: {provider: p, model: m}}\ntiers: {planning: [m, nope]}\n")
    with pytest.raises(ConfigError, match=r"unknown model 'nope'.*tiers\.planning\[1\]"):
        load_config(path)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("nats: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)


def test_unknown_tier_for_task() -> None:
    with pytest.raises(ConfigError, match="no tier"):
        load_config().tier_for("whatever")
