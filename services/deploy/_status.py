"""``tandem status``: who serves on the bus, from the NATS micro protocol (``$SRV.STATS`` / ``$SRV.INFO``).

Every actor replica answers ``$SRV.STATS`` with its endpoints' request and error counts and
``$SRV.INFO`` with their schema hashes (see :mod:`tandem.actors._base`). :func:`gather_status`
asks both once, collects the replies for a moment and groups them per actor;
:func:`render_status` draws the tables.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import anyio

__all__ = ["ActorStatus", "EndpointStatus", "InstanceStatus", "Status", "gather_status", "render_status"]


@dataclass
class EndpointStatus:
    """One endpoint of one actor, summed over its instances."""

    name: str
    subject: str
    requests: int = 0
    errors: int = 0
    last_error: str = ""


@dataclass
class InstanceStatus:
    """One running actor instance (one replica's actor, in one process)."""

    actor: str
    id: str
    pid: int | None
    version: str
    started: str
    name: str = ""  # the process name ``tandem up`` gave it (``router.2``), when known
    requests: int = 0
    errors: int = 0


@dataclass
class ActorStatus:
    """One actor: its instances and its endpoints' counters summed over them."""

    name: str
    instances: list[InstanceStatus] = field(default_factory=list)
    endpoints: list[EndpointStatus] = field(default_factory=list)
    expected: int | None = None  # replicas ``tandem up`` runs, when known


@dataclass
class Status:
    """What :func:`gather_status` found."""

    url: str
    actors: list[ActorStatus]
    mismatches: list[dict[str, str]]

    def to_json(self) -> str:
        """Return the status as indented JSON (``tandem status --json``)."""
        return json.dumps(asdict(self), indent=2)

    def missing(self) -> list[str]:
        """Return ``"router: 1 of 2"`` for every actor with fewer instances than expected."""
        return [f"{a.name}: {len(a.instances)} of {a.expected}" for a in self.actors
                if a.expected is not None and len(a.instances) < a.expected]


async def _collect(nc: Any, subject: str, wait: float) -> list[dict[str, Any]]:
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    replies: list[dict[str, Any]] = []
    try:
        await nc.publish(subject, b"", reply=inbox)
        with anyio.move_on_after(wait):
            async for msg in sub.messages:
                try:
                    replies.append(json.loads(msg.data))
                except ValueError:
                    continue
    finally:
        try:
            await sub.unsubscribe()
        except Exception:  # noqa: BLE001 - the connection is closing: nothing left to unsubscribe
            pass
    return replies


async def gather_status(bus: Any, url: str, *, wait: float = 0.5, names: dict[int, str] | None = None,
                        replicas: dict[str, int] | None = None) -> Status:
    """Ask every actor instance for ``$SRV.STATS`` and compare ``$SRV.INFO`` schemas with this client's.

    Parameters
    ----------
    bus : Bus
        Connected bus.
    url : str
        Shown in the report (redacted by the caller).
    wait : float
        Seconds to gather replies for.
    names : dict of int to str or None
        Process pid → name given by ``tandem up`` (``router.2``), to label instances.
    replicas : dict of str to int or None
        Actor → replicas expected (``tandem up``'s topology), to flag missing ones.

    Returns
    -------
    Status
    """
    from tandem.services.schema import check_schemas

    stats: list[dict[str, Any]] = []
    mismatches: list[Any] = []

    async def get_stats() -> None:
        stats.extend(await _collect(bus.nc, "$SRV.STATS", wait))

    async def get_mismatches() -> None:
        mismatches.extend(await check_schemas(bus, wait=wait))

    async with anyio.create_task_group() as tg:
        tg.start_soon(get_stats)
        tg.start_soon(get_mismatches)
    actors: dict[str, ActorStatus] = {}
    endpoints: dict[str, dict[str, EndpointStatus]] = defaultdict(dict)
    seen: set[str] = set()
    for reply in stats:
        actor, instance = str(reply.get("name", "?")), str(reply.get("id", "?"))
        if instance in seen:
            continue
        seen.add(instance)
        meta = reply.get("metadata") or {}
        pid = int(meta["pid"]) if str(meta.get("pid", "")).isdigit() else None
        inst = InstanceStatus(actor=actor, id=instance, pid=pid, version=str(reply.get("version", "")),
                              started=str(reply.get("started", "")),
                              name=str(meta.get("instance") or (names or {}).get(pid or -1, "")))
        for ep in reply.get("endpoints") or ():
            e = endpoints[actor].setdefault(ep.get("subject", "?"), EndpointStatus(ep.get("name", "?"), ep.get("subject", "?")))
            n, errs = int(ep.get("num_requests") or 0), int(ep.get("num_errors") or 0)
            e.requests += n
            e.errors += errs
            inst.requests += n
            inst.errors += errs
            if ep.get("last_error"):
                e.last_error = str(ep["last_error"])
        actors.setdefault(actor, ActorStatus(actor)).instances.append(inst)
    for name, count in (replicas or {}).items():
        if count:
            actors.setdefault(name, ActorStatus(name))
    out = []
    for name in sorted(actors):
        a = actors[name]
        a.instances.sort(key=lambda i: (i.name or "~", i.id))
        a.endpoints = sorted(endpoints[name].values(), key=lambda e: e.subject)
        a.expected = (replicas or {}).get(name)
        out.append(a)
    return Status(url=url, actors=out, mismatches=[
        {"actor": m.actor, "instance": m.instance_id, "version": m.version, "subject": m.subject,
         "theirs": m.theirs, "ours": m.ours} for m in mismatches])


def _age(started: str) -> str:
    """``"2026-11-30T13:52:15.123Z"`` → ``"3m"`` (how long the instance has served); ``"?"`` if unreadable."""
    from datetime import UTC, datetime

    try:
        seconds = int((datetime.now(UTC) - datetime.fromisoformat(started.replace("Z", "+00:00"))).total_seconds())
    except ValueError:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def render_status(status: Status, *, endpoints: bool = True) -> list[Any]:
    """Return rich renderables: the instances table, the endpoints table, the schema mismatches."""
    from rich.table import Table
    from rich.text import Text

    instances = Table("actor", "instance", "pid", "version", "up", "requests", "errors", box=None, highlight=False,
                      title=f"actors on {status.url}", title_justify="left")
    for a in status.actors:
        count = f"{len(a.instances)}" + (f"/{a.expected}" if a.expected is not None else "")
        style = "red" if a.expected is not None and len(a.instances) < a.expected else ""
        instances.add_row(Text(f"{a.name} ({count})", style=style), "", "", "", "", "", "")
        for i in a.instances:
            instances.add_row("", Text(i.name or i.id), str(i.pid or "?"), Text(i.version), _age(i.started),
                              str(i.requests), Text(str(i.errors), style="red" if i.errors else ""))
    out: list[Any] = [instances]
    if endpoints:
        table = Table("actor", "endpoint", "subject", "requests", "errors", "last error", box=None, highlight=False)
        for a in status.actors:
            for e in a.endpoints:
                table.add_row(Text(a.name), Text(e.name), Text(e.subject), str(e.requests),
                              Text(str(e.errors), style="red" if e.errors else ""), Text(e.last_error[:80]))
        out.append(table)
    for m in status.mismatches:
        out.append(Text(f"schema mismatch: {m['actor']} {m['instance']} (version {m['version']}) on {m['subject']}: "
                        f"{m['theirs'][:19]}… ≠ this client's {m['ours'][:19]}…", style="yellow"))
    for line in status.missing():
        out.append(Text(f"missing replicas: {line}", style="red"))
    return out
