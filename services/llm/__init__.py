"""Model providers. Only the router actor uses them."""

from ._azure import AzureOpenAIProvider
from ._base import Completion, Provider
from ._gemini import GeminiProvider
from ._local import LocalModelServer, find_default_gguf
from ._openai import LlamaCppProvider, OpenAIChatProvider
from ._params import ChatParams, estimate_tokens, normalize, unmet_needs

__all__ = [
    "AzureOpenAIProvider",
    "GeminiProvider",
    "ChatParams",
    "Completion",
    "LlamaCppProvider",
    "LocalModelServer",
    "OpenAIChatProvider",
    "Provider",
    "estimate_tokens",
    "find_default_gguf",
    "normalize",
    "unmet_needs",
]
