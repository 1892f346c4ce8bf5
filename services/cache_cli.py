"""``tandem cache list|clear``: the plan cache in the persistent embedded store (issue 16.9).

With the default config (no ``nats.url``) the embedded ``nats-server`` keeps
JetStream under :func:`~tandem.services.bus._embedded.default_store_dir`
(``$XDG_STATE_HOME/tandem/nats``), so a plan that ran is reused by the next
identical task. These commands reach that store: through the server of a
running Tandem process that holds it (``<store>/server.json``), else by
starting one on it for the command's duration; ``--nats-url`` (or
``nats.url``) names an external server instead.

Registered in :mod:`tandem.services.cli` with one line::

    app.add_typer(__import__("tandem.services.cache_cli", fromlist=["cache_app"]).cache_app)
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Optional

import msgspec
import nats.errors
import nats.js.errors
import typer
from tandem.messages import ExecutionPlan

from .bus import Bus
from .bus._embedded import EmbeddedNats, default_store_dir, running_server
from .cli import Creds, _fail, _invoke
from .config import Config, load_config, redact_url
from .errors import BusError, InputError, StoreBusy, TandemError

__all__ = ["CacheEntry", "cache_app", "cache_clear", "cache_list", "clear_plans", "list_plans", "store_dir_for"]

cache_app = typer.Typer(name="cache", rich_markup_mode="markdown", help="The plan cache kept in the persistent store (list, clear).",
                        no_args_is_help=True)

_plan = msgspec.json.Decoder(ExecutionPlan)
_PLAN_KEY = re.compile(r"^[0-9a-f]{64}$")  # plan fingerprints (hex SHA-256); recipes live beside them


class CacheEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One cached plan: its fingerprint, what it does, and its size in bytes."""

    fingerprint: str
    task_type: str
    steps: int
    actions: list[str]
    size: int


def store_dir_for(config: Config) -> Path:
    """The persistent store's directory for ``config`` (``nats.store_dir`` or the XDG default)."""
    return Path(config.nats.store_dir).expanduser() if config.nats.store_dir else default_store_dir()


@asynccontextmanager
async def _store_bus(config: Config, url: str | None) -> AsyncIterator[tuple[Bus, str]]:
    """A bus on the plan cache's server: ``url``, the running holder of the store, or one started on it."""
    if url is None:
        holder = running_server(store_dir_for(config))
        if holder is not None and holder.get("url"):
            url = str(holder["url"])
    if url is not None:
        bus = await Bus.connect(url, name="tandem-cache", **config.nats.connect_options())  # $TANDEM_NATS_CREDS
        try:
            yield bus, url
        finally:
            await bus.close()
        return
    async with EmbeddedNats(persistent=True, store_dir=store_dir_for(config), on_busy="error") as server:
        bus = await Bus.connect(server.url, name="tandem-cache")
        try:
            yield bus, server.url
        finally:
            await bus.close()


async def list_plans(bus: Bus, bucket: str) -> list[CacheEntry]:
    """Return the cached plans of KV ``bucket`` (empty when the bucket does not exist).

    Raises
    ------
    BusError
        When JetStream cannot be used.
    """
    try:
        kv = await bus.jetstream.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        return []
    except nats.errors.Error as exc:
        raise BusError(f"cannot open the plan cache {bucket!r}: {exc}") from exc
    try:
        keys = await kv.keys()
    except nats.js.errors.NoKeysError:
        return []
    out = []
    for key in sorted(k for k in keys if _PLAN_KEY.match(k)):  # the bucket also holds recipes ("recipe.*")
        try:
            entry = await kv.get(key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            continue
        data = entry.value or b""
        try:
            plan = _plan.decode(data)
        except msgspec.DecodeError:
            out.append(CacheEntry(fingerprint=key, task_type="(unreadable)", steps=0, actions=[], size=len(data)))
            continue
        out.append(CacheEntry(fingerprint=key, task_type=plan.metadata.task_type, steps=len(plan.workflow),
                              actions=[s.__struct_config__.tag for s in plan.workflow], size=len(data)))
    return out


async def clear_plans(bus: Bus, bucket: str) -> int:
    """Purge every cached plan of ``bucket`` (recipes stay); return how many there were.

    Raises
    ------
    BusError
        When JetStream cannot be used.
    """
    plans = await list_plans(bus, bucket)
    if not plans:
        return 0
    try:
        kv = await bus.jetstream.key_value(bucket)
        for entry in plans:
            await kv.purge(entry.fingerprint)
    except nats.errors.Error as exc:
        raise BusError(f"cannot clear the plan cache {bucket!r}: {exc}") from exc
    return len(plans)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="Config file (default: $TANDEM_CONFIG or the packaged default).")]  # noqa: UP045
UrlOpt = Annotated[Optional[str], typer.Option("--nats-url", help="An external NATS server (default: the persistent embedded store).")]  # noqa: UP045


@cache_app.command("list")
def cache_list(config_path: ConfigOpt = None, nats_url: UrlOpt = None, creds: Creds = None) -> None:
    """List the cached plans (fingerprint, task type, steps) and where the store is."""
    try:
        config = load_config(config_path)
    except TandemError as exc:
        raise _fail(exc) from None
    url = nats_url or config.nats.url

    async def main() -> tuple[list[CacheEntry], str]:
        async with _store_bus(config, url) as (bus, used):
            return await list_plans(bus, config.plan_cache_bucket), used

    entries, used = _invoke(main)
    where = redact_url(used) if url else f"{store_dir_for(config)} ({_size(store_dir_for(config)) // 1024} KiB)"
    sys.stderr.write(f"plan cache {config.plan_cache_bucket!r} on {where}: {len(entries)} plan(s)\n")
    for e in entries:
        sys.stdout.write(f"{e.fingerprint[:16]}  {e.task_type:<20} {e.steps:>2} steps  {e.size:>6} B  "
                         f"{' → '.join(e.actions)}\n")


@cache_app.command("clear")
def cache_clear(
    config_path: ConfigOpt = None,
    nats_url: UrlOpt = None,
    creds: Creds = None,
    all_: Annotated[bool, typer.Option("--all", help="Remove the whole persistent store (plans, task states, "
                                                     "recipes, chat history); refused while Tandem runs on it.")] = False,
) -> None:
    """Delete the cached plans (with --all: the whole persistent store)."""
    try:
        config = load_config(config_path)
    except TandemError as exc:
        raise _fail(exc) from None
    url = nats_url or config.nats.url
    if all_:
        if url is not None:
            raise _fail(InputError("--all removes the embedded store; it cannot clear an external server"))
        store = store_dir_for(config)
        holder = running_server(store)
        if holder is not None:
            raise _fail(StoreBusy(f"the store {store} is in use by tandem (pid {holder.get('pid') or '?'}); stop it first"))
        shutil.rmtree(store, ignore_errors=True)
        sys.stderr.write(f"removed the persistent store {store}\n")
        return

    async def main() -> int:
        async with _store_bus(config, url) as (bus, _):
            return await clear_plans(bus, config.plan_cache_bucket)

    count = _invoke(main)
    sys.stderr.write(f"cleared {count} cached plan(s)\n")
