"""Tandem's actors. Each runs as its own process (``tandem serve NAME``) or in-process."""

from collections.abc import Callable

from tandem.services.bus import Bus
from tandem.services.config import Config

from ._base import Actor, Endpoint
from ._supervisor import ActorCrashed, supervise
from .chat import ChatActor
from .choice_parser import ChoiceParserActor
from .context import ContextActor
from .executor import ExecutorActor
from .planner import PlannerActor
from .router import RouterActor
from .task import TaskActor

__all__ = ["ACTORS", "ChatActor", "ContextActor", "ChoiceParserActor", "Actor", "ActorCrashed", "Endpoint", "ExecutorActor", "PlannerActor", "RouterActor", "TaskActor", "supervise"]

ACTORS: dict[str, Callable[[Bus, Config], Actor]] = {
    "planner": PlannerActor,
    "router": RouterActor,
    "executor": ExecutorActor,
    "choice": ChoiceParserActor,
    "task": TaskActor,
    "context": ContextActor,
    "chat": ChatActor,
}
"""Actor name → constructor ``(bus, config) -> Actor``."""
