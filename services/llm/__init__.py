"""Model providers. Only the router actor uses them."""

from ._local import LocalModelServer, find_default_gguf
from ._openai import Completion, OpenAIChatProvider

__all__ = ["Completion", "LocalModelServer", "OpenAIChatProvider", "find_default_gguf"]
