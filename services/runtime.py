"""Bring up what a command needs: NATS (embedded or given), the bus and actors."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from tandem.messages import Ping, Pong, subjects

from .bus import Bus, EmbeddedNats
from .config import Config
from .errors import NoResponders, RequestTimeout

__all__ = ["ephemeral_requested", "find_running", "open_bus", "start_actors"]

log = logging.getLogger("tandem.runtime")


def ephemeral_requested(store: str = "persistent") -> bool:
    """Whether the embedded server should use a temporary store: ``TANDEM_EPHEMERAL=1`` or ``store == "ephemeral"``."""
    return os.environ.get("TANDEM_EPHEMERAL", "").strip().lower() in ("1", "true", "yes") or store == "ephemeral"


@asynccontextmanager
async def open_bus(url: str | None, *, name: str = "tandem", store: str = "persistent",
                   store_dir: str | Path | None = None, **connect_options: Any) -> AsyncIterator[tuple[Bus, str]]:
    """Connect to ``url``, or start an embedded ``nats-server`` when ``url`` is ``None``.

    Parameters
    ----------
    url : str or None
    name : str
        Client name.
    store : {"persistent", "ephemeral"}
        The embedded server's store (``nats.store``): ``persistent`` keeps
        JetStream (plan cache, tasks) under ``store_dir`` across runs;
        ``TANDEM_EPHEMERAL=1`` forces ``ephemeral``. When another process holds
        the persistent store, this one runs on a temporary store with a warning.
    store_dir : str, Path or None
        ``nats.store_dir``; ``None``: :func:`~tandem.services.bus.default_store_dir`.
    **connect_options
        Passed to :meth:`Bus.connect` for ``url`` (``credentials``, ``tls``, ``inbox_prefix``:
        :meth:`tandem.services.config.NatsConfig.connect_options`); unused by the embedded server.

    Yields
    ------
    tuple of (Bus, str)
        The connected bus and the URL in use.

    Raises
    ------
    BusConnectError
        When ``url`` cannot be reached.
    BusError
        When the embedded server cannot start.
    """
    async with AsyncExitStack() as stack:
        if url is None:
            persistent = not ephemeral_requested(store)
            server = await stack.enter_async_context(EmbeddedNats(
                persistent=persistent, store_dir=Path(store_dir).expanduser() if store_dir and persistent else None))
            url = server.url
            log.info("embedded nats-server on %s (store: %s)", url, server.store or "temporary")
            connect_options = {}
        bus = await Bus.connect(url, name=name, **connect_options)
        stack.push_async_callback(bus.close)
        yield bus, url


async def find_running(bus: Bus, names: Iterable[str], *, timeout: float = 0.5) -> set[str]:
    """Return which of the actors ``names`` already serve on the bus (``tandem.<name>.ping``)."""
    running: set[str] = set()
    for name in names:
        try:
            await bus.request(subjects.ping(name), Ping(), Pong, timeout=timeout, responders_wait=0)
        except (NoResponders, RequestTimeout):
            continue
        running.add(name)
    return running


@asynccontextmanager
async def start_actors(
    bus: Bus, config: Config, names: Iterable[str], factories: dict[str, Callable[..., object]] | None = None,
    **kwargs: object,
) -> AsyncIterator[list[str]]:
    """Run supervised actors ``names`` in this process until the block exits.

    Parameters
    ----------
    bus, config
    names : iterable of str
        Actor names (keys of :data:`actors.ACTORS`).
    factories : dict or None
        Overrides of actor constructors (tests inject e.g. a router with a mock transport).
    **kwargs
        Passed to every constructor.

    Yields
    ------
    list of str
        The names started, once every one of them serves.
    """
    from tandem.actors import ACTORS, supervise

    table = {**ACTORS, **(factories or {})}
    started = list(names)
    async with anyio.create_task_group() as tg:
        for name in started:
            make = table[name]
            await tg.start(lambda task_status, m=make: supervise(lambda: m(bus, config, **kwargs), task_status=task_status))
        try:
            yield started
        finally:
            tg.cancel_scope.cancel()
