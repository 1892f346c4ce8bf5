"""Tandem's one error hierarchy.

Every error Tandem raises on purpose derives from :class:`TandemError`; errors
from third-party libraries (nats-py, httpx, msgspec) are translated at the
boundary with ``raise ... from exc``, so callers never need to string-match.

::

    TandemError
    ├── ConfigError                  bad or missing configuration
    ├── BadRequest                   a request (or a name in it) is malformed or out of bounds
    │   └── InvalidName                a subject or KV key is too long or has forbidden characters
    ├── BusError                     NATS could not be reached or used
    │   ├── BusConnectError            the NATS URL is unreachable
    │   ├── BusClosed                  the connection closed for good and could not be reopened
    │   ├── RequestTimeout             no reply within the request timeout
    │   │   └── DeadlineExceeded             the task's absolute deadline has passed
    │   ├── ReplicaLost                the replica serving a request went silent (died)
    │   ├── PayloadTooLarge            a payload exceeds what the bus and its object store carry
    │   ├── NoResponders               nobody serves the subject
    │   └── PermissionDenied           the server refused a publish or subscription to this credential
    ├── RemoteError                  a peer answered with an ``ErrorReply``
    ├── PlanError                    an execution plan is unusable
    │   ├── PlanValidationError        the plan JSON fails decoding/invariants
    │   ├── PlanningFailed             the planner could not produce a plan
    │   │   └── PlanTruncated              the plan was cut off at max_planning_tokens ("planning_failed")
    │   └── RecipeError                a plan recipe is unusable (actors/_recipes.py)
    │       ├── RecipeNotFound             no recipe of that name ("not_found")
    │       └── RecipeInvalid              a recipe fails vetting ("recipe_invalid")
    ├── ExecutionError               running a plan failed
    │   ├── StepFailed                 a step failed and had no recovery (``cause`` = the error's code)
    │   ├── TruncatedOutput            a model answer stopped at its token limit ("truncated_output")
    │   ├── DegenerateOutput           the model repeated itself (actors/_guards.py)
    │   ├── InputTooLarge              a prompt does not fit the model's context (actors/_guards.py)
    │   └── CommandError               a built-in text command was misused
    │       ├── RegexTimeout               one regex search ran past its CPU budget (services/textcmd.py)
    │       ├── OutputTooLarge             a step's output or the plan's buffers grew past their cap
    │       ├── CommandTimeout             a step (its regex work, pandoc) ran past its time limit
    │       └── CommandUnavailable         the command needs a program that is not installed (pandoc)
    ├── LLMError                     a model call failed
    │   ├── ProviderUnavailable        connection refused / DNS / reset
    │   ├── ProviderTimeout            the provider did not answer in time
    │   ├── ProviderStatusError        the provider answered 4xx/5xx
    │   │   └── CredentialRejected         401/403: the API key was refused ("llm_auth")
    │   ├── MalformedResponse          the body is not the documented shape
    │   ├── NoCandidate                no configured model fits the request
    │   └── FallbackExhausted          every candidate failed within the budget
    ├── CancelledWork                the work was cancelled (``tandem.control.cancel``)
    ├── InputError                   a user-supplied file is missing or unreadable
    ├── StoreBusy                    the persistent embedded store is held by another process
    └── ProcessGaveUp                a ``tandem up`` process crashed more often than its restart budget
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "BusClosed",
    "BusConnectError",
    "BusError",
    "CancelledWork",
    "CommandError",
    "ConfigError",
    "CredentialRejected",
    "DeadlineExceeded",
    "DegenerateStream",
    "ExecutionError",
    "FallbackExhausted",
    "InputError",
    "InvalidName",
    "LLMError",
    "MalformedResponse",
    "NoCandidate",
    "NoResponders",
    "PayloadTooLarge",
    "PermissionDenied",
    "PlanError",
    "PlanTruncated",
    "PlanValidationError",
    "PlanningFailed",
    "ProviderStatusError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RemoteError",
    "ReplicaLost",
    "RequestTimeout",
    "StepFailed",
    "StoreBusy",
    "ProcessGaveUp",
    "TandemError",
    "TruncatedOutput",
]


class TandemError(Exception):
    """Base class of every error Tandem raises on purpose.

    Attributes
    ----------
    code : str
        Stable machine-readable code, also used as ``ErrorReply.code`` when the
        error crosses the bus.
    """

    code = "internal"


class ConfigError(TandemError):
    """Raised when the configuration is missing, malformed or inconsistent."""

    code = "config"


class BadRequest(TandemError):
    """Raised when a request, or a value taken from it, is malformed or out of bounds."""

    code = "bad_request"


class InvalidName(BadRequest):
    """Raised when a subject or KV key is too long or contains forbidden characters.

    Parameters
    ----------
    message : str
        What is wrong with the name.
    kind : str
        ``"subject"`` or ``"kv key"``.
    """

    def __init__(self, message: str, *, kind: str = "subject") -> None:
        super().__init__(message)
        self.kind = kind


class BusError(TandemError):
    """Raised when NATS cannot be used."""

    code = "bus"


class BusConnectError(BusError):
    """Raised when the NATS server at the given URL cannot be reached."""

    code = "bus_connect"


class BusClosed(BusError):
    """Raised when the NATS connection closed for good and could not be reopened."""

    code = "bus_closed"


class RequestTimeout(BusError):
    """Raised when a request gets no reply within its timeout."""

    code = "timeout"


class DeadlineExceeded(RequestTimeout):
    """Raised when the absolute deadline of the work in progress has passed.

    Attributes
    ----------
    step : str or None
        What was running when time ran out (a subject, a plan step), when known.
    """

    code = "deadline_exceeded"

    def __init__(self, message: str, *, step: str | None = None) -> None:
        super().__init__(message)
        self.step = step


class ReplicaLost(BusError):
    """Raised when the replica serving a request stopped sending heartbeats (it died or hung).

    Attributes
    ----------
    attempts : int
        How many replicas were tried.
    """

    code = "replica_lost"

    def __init__(self, message: str, *, attempts: int = 1) -> None:
        super().__init__(message)
        self.attempts = attempts


class PayloadTooLarge(BusError):
    """Raised when a payload exceeds what the bus (and its object store) may carry."""

    code = "too_large"


class NoResponders(BusError):
    """Raised when no actor subscribes to the requested subject."""

    code = "no_responders"


class PermissionDenied(BusError):
    """Raised when the NATS server refuses this connection's credential a publish or subscription.

    A secure deployment (``tandem up``) grants each user only what its role needs: a request the
    credential may not send fails with this at once instead of waiting out its timeout.
    """

    code = "permission_denied"


class RemoteError(TandemError):
    """Raised when a peer answers a request with an ``ErrorReply``.

    Parameters
    ----------
    code : str
        The ``ErrorReply.code`` sent by the peer.
    message : str
        The human-readable message sent by the peer.
    path : str or None
        Field path (e.g. ``$.workflow[1].params``) when decoding failed.
    subject : str
        The subject the request was sent to.
    """

    def __init__(self, code: str, message: str, *, path: str | None = None, subject: str = "") -> None:
        self.code = code
        self.message = message
        self.path = path
        self.subject = subject
        where = f" at {path}" if path else ""
        super().__init__(f"{subject}: {code}: {message}{where}" if subject else f"{code}: {message}{where}")


class PlanError(TandemError):
    """Raised when an execution plan cannot be used."""

    code = "plan"


class PlanValidationError(PlanError):
    """Raised when plan JSON fails decoding or the plan's invariants.

    Parameters
    ----------
    message : str
        What is wrong.
    path : str or None
        JSON path of the offending field, e.g. ``$.workflow[2].params.input_fd``.
    """

    code = "plan_invalid"

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.message = message
        self.path = path
        super().__init__(f"{message} - at `{path}`" if path and path not in message else message)


class PlanningFailed(PlanError):
    """Raised when the planner could not produce a valid plan."""

    code = "planning_failed"


class PlanTruncated(PlanningFailed):
    """Raised when the planning model's answer stopped at ``max_planning_tokens``.

    Keeps the code ``planning_failed`` (so the flow still falls back to single
    stage); the message starts with ``truncated_output`` and names the limit.
    """


class ExecutionError(TandemError):
    """Raised when running a plan fails."""

    code = "execution"


class StepFailed(ExecutionError):
    """Raised when a plan step fails and no ``error_recovery`` step covers it.

    Parameters
    ----------
    step : int
        The plan step number that failed.
    action : str
        The step's action, e.g. ``spawn_command``.
    reason : str
        Why it failed.
    cause : str
        The ``code`` of the error that failed the step (``regex_timeout``,
        ``truncated_output`` …), ``""`` when unknown. The error's own code stays
        ``step_failed``; the message starts its reason with the cause's code, so
        a client reading ``ErrorReply.message`` sees it too.
    """

    code = "step_failed"

    def __init__(self, step: int, action: str, reason: str, *, cause: str = "") -> None:
        self.step = step
        self.action = action
        self.cause = cause
        if cause and cause not in reason:
            reason = f"{cause}: {reason}"
        self.reason = reason
        super().__init__(f"step {step} ({action}) failed: {reason}")


class TruncatedOutput(ExecutionError):
    """Raised when a model answer stopped at its output token limit (``finish_reason == "length"``).

    Parameters
    ----------
    message : str
    max_tokens : int
        The limit the answer ran into.
    """

    code = "truncated_output"

    def __init__(self, message: str, *, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        super().__init__(message)


class CommandError(ExecutionError):
    """Raised when a built-in text command is unknown or given bad arguments."""

    code = "command"


class LLMError(TandemError):
    """Raised when a model call fails.

    Attributes
    ----------
    transient : bool
        Whether trying again (or another model) may succeed.
    """

    code = "llm"
    transient = False


class ProviderUnavailable(LLMError):
    """Raised when the provider cannot be connected to."""

    code = "llm_unavailable"
    transient = True


class ProviderTimeout(LLMError):
    """Raised when the provider does not answer within the timeout."""

    code = "llm_timeout"
    transient = True


class ProviderStatusError(LLMError):
    """Raised when the provider answers with an HTTP error status.

    Parameters
    ----------
    status_code : int
        The HTTP status.
    message : str
        The provider's error message, if the body had one.
    retry_after : float or None
        Seconds from a ``Retry-After`` header, if present.
    """

    code = "llm_status"

    def __init__(self, status_code: int, message: str, *, retry_after: float | None = None) -> None:
        self.status_code = status_code
        self.retry_after = retry_after
        self.transient = status_code in (408, 429) or status_code >= 500
        super().__init__(f"HTTP {status_code}: {message}")


class CredentialRejected(ProviderStatusError):
    """Raised when a provider refuses the API key (HTTP 401 or 403).

    Parameters
    ----------
    status_code : int
    message : str
    provider : str
        The provider key in the config.
    api_key_env : str or None
        The environment variable the key came from.
    """

    code = "llm_auth"

    def __init__(self, status_code: int, message: str, *, provider: str = "", api_key_env: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(status_code, message, retry_after=retry_after)
        self.provider = provider
        self.api_key_env = api_key_env


class MalformedResponse(LLMError):
    """Raised when a provider's body is not the documented shape."""

    code = "llm_malformed"


class DegenerateStream(LLMError):
    """Raised when a streamed answer loops and the stream is stopped before ``max_tokens``.

    Same code as the executor's check on a finished answer: to the user both
    say the model repeated itself.
    """

    code = "degenerate_output"


class NoCandidate(LLMError):
    """Raised when no configured model can serve the request."""

    code = "llm_no_candidate"


class FallbackExhausted(LLMError):
    """Raised when every candidate failed, or attempts or the wait budget ran out.

    Parameters
    ----------
    message : str
    chain : list of str
        One entry per attempt: ``"model: error"``.
    """

    code = "llm_exhausted"

    def __init__(self, message: str, chain: list[str]) -> None:
        self.chain = chain
        super().__init__(f"{message}; chain: " + " → ".join(chain) if chain else message)


class CancelledWork(TandemError):
    """Raised when a request's work was cancelled on purpose (its task was cancelled)."""

    code = "cancelled"


class InputError(TandemError):
    """Raised when a user-supplied input or plan file is missing or unreadable."""

    code = "input"


class StoreBusy(TandemError):
    """Raised when the persistent embedded NATS store is locked by another Tandem process."""

    code = "store_busy"


class ProcessGaveUp(TandemError):
    """Raised when a process of a ``tandem up`` deployment crashed more often than its restart budget allows."""

    code = "process_gave_up"
