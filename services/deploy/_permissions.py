"""Per-user NATS permissions, derived from what the actors declare — never a hand-written list.

Each actor class declares, beside its endpoints (class attributes, read with ``getattr`` so an
actor that uses nothing declares nothing):

``calls``
    Subjects it requests or publishes commands to (``tandem.router.complete``…); patterns allowed.
``publishes``
    Events it publishes (``tandem.events.executor.step``…).
``listens``
    Subjects it subscribes to outside :meth:`~tandem.actors.Actor.endpoints` (the task actor's
    per-task answer and checkpoint subjects).
``jetstream``
    JetStream resources it uses, one string each: ``"<kind> <name> [<access> [<keys>]]"`` with kind
    ``kv``, ``objects`` or ``stream``, access ``own`` (the default: create, write, read, consume,
    administer), ``create`` (write, delete objects, and create the stream when it is missing),
    ``write`` (write and read, no stream administration) or ``read``. A name may refer to the
    config: ``"kv {config.plan_cache_bucket}"``. ``keys`` narrows what a ``write`` may write to
    the keys matching a subject pattern (default ``>``, every key): the task actor writes plans
    into the plan cache (``"kv {config.plan_cache_bucket} write *"``: one-token keys, the plan
    fingerprints), never a recipe (``recipe.<name>``).
``public``
    Its endpoint subjects a *client* may request (``tandem.task.get``…).

From these, :func:`actor_permissions` gives the actor's user:

* **subscribe**: its endpoint subjects (as :meth:`endpoints` returns them), ``tandem.<name>.ping``,
  ``tandem.control.cancel``, ``listens``, the micro protocol's ``$SRV.<verb>``,
  ``$SRV.<verb>.<name>`` and ``$SRV.<verb>.<name>.<id>``, and its own inbox ``_INBOX_<name>.>``;
* **publish**: ``calls``, ``publishes``, ``tandem.events.dead_letter.<name>``, the payload object
  store every bus uses for messages over ``max_payload``, and the JetStream API subjects of its
  declared resources — per stream, never ``$JS.API.>``;
* **replies** through ``allow_responses``: the server lets it publish to the reply subject of a
  request it received, and only that one. ``max: -1`` (no count limit) because a request that
  asked for heartbeats gets one every second before its reply; ``expires`` is twice the longest
  endpoint timeout plus a minute (time waiting in the actor's backlog, then running).

:func:`client_permissions` gives the ``client`` user (the CLI, ``tandem chat``, other
services): request the actors' ``public`` endpoints and their ``ping``, publish a submission to
``tandem.task.submit`` (the work-queue stream), ask ``$SRV`` for discovery and status, read
task states (KV ``tandem_tasks``) and the task data object store (inputs it puts there, results
it reads), subscribe to ``tandem.events.>``, to task states as they are written
(``$KV.tandem_tasks.*``) and to its own inbox. Nothing else: no subscription
under ``tandem.router.>`` or any request subject (so no rogue replica can answer first), no
publish to ``tandem.executor.execute`` or under ``tandem.events.>`` (no spoofed task, step or
progress event), no write to the plan cache or to task states.

:func:`admin_permissions` gives the ``admin`` user (an operator's ``tandem plans add|remove`` and
``tandem cache list|clear``): a client's permissions plus the endpoints actors declare as ``admin``
and write access to the plan cache bucket — still no actor subject, event or task state.

Why JetStream API subjects per stream rather than ``$JS.API.>``: ``$JS.API.>`` lets a user
delete or purge any stream, create consumers on the plan cache and read every conversation's
history; per-stream subjects keep each actor to its own buckets at the cost of a longer list,
which is generated anyway.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import msgspec
from tandem.messages import subjects
from tandem.services.bus import PAYLOAD_BUCKET

__all__ = ["ACCESS", "Grant", "Permissions", "actor_permissions", "admin_permissions", "client_permissions", "jetstream_subjects",
           "parse_jetstream", "subject_matches", "user_permissions"]

ACCESS = ("read", "write", "create", "own")
"""JetStream access levels, weakest first."""

_KINDS = {"kv": ("KV_", "$KV"), "objects": ("OBJ_", "$O"), "stream": ("", "")}
_NAME = re.compile(r"[A-Za-z0-9_-]+")
_KEYS = re.compile(r"(?:(?:[A-Za-z0-9_=-]+|\*)\.)*(?:[A-Za-z0-9_=-]+|\*|>)")


class Grant(msgspec.Struct, frozen=True, kw_only=True):
    """One declared JetStream resource: kind (``kv``, ``objects``, ``stream``), name, access and the keys written."""

    kind: str
    name: str
    access: str = "own"
    keys: str = ">"

    @property
    def stream(self) -> str:
        """The JetStream stream behind the resource (``KV_<bucket>``, ``OBJ_<bucket>`` or the stream)."""
        return _KINDS[self.kind][0] + self.name


class Permissions(msgspec.Struct, frozen=True, kw_only=True):
    """What one user may publish and subscribe to.

    Parameters
    ----------
    publish, subscribe : tuple of str
        Allowed subjects (NATS wildcards ``*`` and ``>``); everything else is denied.
    responses_expire_s : int
        Seconds the right to answer a received request lasts (``allow_responses``, unlimited
        count); 0: no ``allow_responses`` (the user serves no requests).
    """

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    responses_expire_s: int = 0

    def to_config(self) -> dict[str, Any]:
        """Return the ``permissions`` map of the user in the nats-server config."""
        conf: dict[str, Any] = {"publish": {"allow": list(self.publish)},
                                "subscribe": {"allow": list(self.subscribe)}}
        if self.responses_expire_s:
            conf["allow_responses"] = {"max": -1, "expires": f"{self.responses_expire_s}s"}
        return conf

    def may_publish(self, subject: str) -> bool:
        """Whether a plain publish to ``subject`` is allowed (replies under ``allow_responses`` aside)."""
        return any(subject_matches(pattern, subject) for pattern in self.publish)

    def may_subscribe(self, subject: str) -> bool:
        """Whether a subscription to ``subject`` (which may hold wildcards) is allowed."""
        return any(subject_matches(pattern, subject) for pattern in self.subscribe)


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether ``pattern`` covers ``subject`` the way nats-server checks a permission.

    A wildcard in ``subject`` (a subscription) is covered only by a wildcard at least as wide.

    Examples
    --------
    >>> subject_matches("tandem.events.>", "tandem.events.task.succeeded.x")
    True
    >>> subject_matches("tandem.task.answer.*", "tandem.task.answer")
    False
    >>> subject_matches("tandem.router.complete", "tandem.router.>")
    False
    """
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s):
            return False
        if token == "*":
            if s[i] == ">":
                return False
            continue
        if token != s[i]:
            return False
    return len(p) == len(s)


def parse_jetstream(text: str, config: Any = None) -> Grant:
    """Read one ``jetstream`` declaration, ``"<kind> <name> [<access> [<keys>]]"``.

    Raises
    ------
    ValueError
        On an unknown kind or access, a name that is not a valid stream or bucket name, or
        ``keys`` on anything but a ``kv`` ``write`` (or a pattern that is not a subject pattern).

    Examples
    --------
    >>> parse_jetstream("kv tandem_tasks read")
    Grant(kind='kv', name='tandem_tasks', access='read', keys='>')
    >>> parse_jetstream("kv tandem_plans write *").keys
    '*'
    """
    parts = text.split()
    if len(parts) not in (2, 3, 4) or parts[0] not in _KINDS or (len(parts) >= 3 and parts[2] not in ACCESS):
        raise ValueError(f"jetstream declaration {text!r}: expected '<kv|objects|stream> <name> "
                         "[read|write|create|own [<keys>]]'")
    name = parts[1].format(config=config) if "{" in parts[1] else parts[1]
    if not _NAME.fullmatch(name):
        raise ValueError(f"jetstream declaration {text!r}: {name!r} is not a stream or bucket name")
    keys = parts[3] if len(parts) == 4 else ">"
    if len(parts) == 4 and (parts[0] != "kv" or parts[2] != "write" or not _KEYS.fullmatch(keys)):
        raise ValueError(f"jetstream declaration {text!r}: keys narrow a 'kv <bucket> write' only, "
                         "as a subject pattern ('*', 'plan.>' …)")
    return Grant(kind=parts[0], name=name, access=parts[2] if len(parts) >= 3 else "own", keys=keys)


def jetstream_subjects(grant: Grant) -> list[str]:
    """Return the subjects a user publishes to for ``grant`` (JetStream API, data, acks, flow control).

    ``read``: stream info, message get (direct and API), ephemeral consumers (KV watch, object
    get) and their flow control. ``write`` adds the bucket's data subjects (``$KV.<b>.>``,
    ``$O.<b>.>``; ``$KV.<b>.<keys>`` when the grant names its keys) but no purge (which could empty the whole stream): a writer's object deletes
    leave the chunks to the bucket's TTL. ``create`` adds creating the stream and purging
    (deleting one's objects), not updating or deleting the stream: for the shared payload
    store, where every large request is deleted by its sender once answered. ``own`` adds the rest of the stream's API (create,
    update, purge, delete), durable consumers, pulls and acks.
    """
    stream = grant.stream
    subs = ["$JS.API.STREAM.NAMES",  # nats-py finds a stream by subject with it (names only)
            f"$JS.API.STREAM.INFO.{stream}", f"$JS.API.STREAM.MSG.GET.{stream}", f"$JS.API.DIRECT.GET.{stream}",
            f"$JS.API.DIRECT.GET.{stream}.>", f"$JS.API.CONSUMER.CREATE.{stream}", f"$JS.API.CONSUMER.CREATE.{stream}.>",
            f"$JS.API.CONSUMER.INFO.{stream}.>", f"$JS.API.CONSUMER.DELETE.{stream}.>", f"$JS.FC.{stream}.>"]
    if grant.access in ("write", "create", "own"):
        data = _KINDS[grant.kind][1]
        if data:
            subs.append(f"{data}.{grant.name}.{grant.keys}")
    if grant.access == "create":
        subs += [f"$JS.API.STREAM.CREATE.{stream}", f"$JS.API.STREAM.PURGE.{stream}"]
    if grant.access == "own":
        subs += [f"$JS.API.STREAM.*.{stream}", f"$JS.API.STREAM.MSG.*.{stream}", f"$JS.API.CONSUMER.*.{stream}",
                 f"$JS.API.CONSUMER.*.{stream}.>", f"$JS.API.CONSUMER.*.*.{stream}.>", f"$JS.ACK.{stream}.>"]
    return subs


_PAYLOADS = f"objects {PAYLOAD_BUCKET}"
"""Every bus may offload a message over ``max_payload`` into this object store, and fetch one."""


def _default_config() -> Any:
    from tandem.services.config import Config

    return Config()


def _endpoint_actor(name: str, config: Any) -> Any:
    """An actor instance, only to read its endpoints (constructors store the bus; none is used)."""
    from tandem.actors import ACTORS

    return ACTORS[name](None, config)  # type: ignore[arg-type]


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _srv(name: str) -> list[str]:
    return [pattern for verb in ("PING", "INFO", "STATS")
            for pattern in (f"$SRV.{verb}", f"$SRV.{verb}.{name}", f"$SRV.{verb}.{name}.*")]


def actor_permissions(name: str, config: Any = None) -> Permissions:
    """Return the permissions of actor ``name`` (a key of :data:`tandem.actors.ACTORS`).

    Parameters
    ----------
    name : str
    config : Config or None
        Supplies bucket names and endpoint timeouts; the default config when ``None``.

    Raises
    ------
    KeyError
        When ``name`` is not an actor.
    ValueError
        When a declaration is malformed.
    """
    from ._topology import inbox_prefix

    config = config if config is not None else _default_config()
    actor = _endpoint_actor(name, config)
    cls = type(actor)
    endpoints = actor.endpoints()
    grants = [parse_jetstream(text, config) for text in (*getattr(cls, "jetstream", ()), _PAYLOADS)]
    own_access = {g.stream: g.access for g in grants}
    grants = [g for g in grants if own_access[g.stream] == g.access]  # a resource declared twice: the first wins
    subscribe = _unique([*(ep.subject for ep in endpoints), subjects.ping(name), subjects.CONTROL_CANCEL,
                         *getattr(cls, "listens", ()), *_srv(name), f"{inbox_prefix(name)}.>"])
    publish = _unique([*getattr(cls, "calls", ()), *getattr(cls, "publishes", ()),
                       f"tandem.events.dead_letter.{name}",
                       *(s for g in grants for s in jetstream_subjects(g))])
    longest = max([5.0, *(ep.timeout for ep in endpoints)])
    # a request may wait in the actor's backlog (heartbeating) before it runs for up to its timeout
    return Permissions(publish=publish, subscribe=subscribe, responses_expire_s=2 * math.ceil(longest) + 60)


CLIENT_JETSTREAM = ("kv tandem_tasks read", "objects tandem_task_inputs write", "objects tandem_task_data read",
                    f"{_PAYLOADS} create")
"""What a client reads and writes directly: task states (``TaskClient.get``), task inputs too large
for a message (written; their own bucket), results too large for a message (read only, so a client
cannot overwrite a result), and messages over ``max_payload`` (the bus creates that store on first
use, which may be a client's)."""


def _declared_endpoints(role: str, config: Any) -> dict[str, tuple[str, ...]]:
    """Actor name → the endpoint subjects it declares under ``role`` (``public`` or ``admin``).

    Raises
    ------
    ValueError
        When an actor declares a subject it does not serve.
    """
    from tandem.actors import ACTORS

    out: dict[str, tuple[str, ...]] = {}
    for name, cls in ACTORS.items():
        declared = tuple(getattr(cls, role, ()))
        if declared:
            served = {ep.subject for ep in _endpoint_actor(name, config).endpoints()}
            if not set(declared) <= served:
                raise ValueError(f"{name} declares as {role} {sorted(set(declared) - served)}, which it does not serve")
            out[name] = declared
    return out


def client_permissions(config: Any = None) -> Permissions:
    """Return the permissions of the ``client`` user (see the module docstring).

    Derived from the actors' ``public`` declarations; each must name one of that actor's
    endpoints.

    Raises
    ------
    ValueError
        When an actor declares as public a subject it does not serve.
    """
    from tandem.actors import ACTORS

    from ._topology import CLIENT, inbox_prefix

    config = config if config is not None else _default_config()
    declared = _declared_endpoints("public", config)
    public = [subject for name in ACTORS for subject in (*declared.get(name, ()), subjects.ping(name))]
    grants = [parse_jetstream(text, config) for text in CLIENT_JETSTREAM]
    publish = _unique([*public, subjects.TASK_SUBMIT, "$SRV.PING", "$SRV.INFO", "$SRV.STATS", "$SRV.*.*",
                       "$SRV.*.*.*", *(s for g in grants for s in jetstream_subjects(g))])
    # task states as they are written (TaskClient.run takes the final one from there, not with a read after the
    # end): states it may read anyway; it still cannot write one
    return Permissions(publish=publish, subscribe=(subjects.EVENTS_ALL, f"$KV.{subjects.TASK_BUCKET}.*",
                                                   f"{inbox_prefix(CLIENT)}.>"))


ADMIN_JETSTREAM = ("kv {config.plan_cache_bucket} write",)
"""What the ``admin`` user writes directly, beyond a client: the plan cache (``tandem cache list|clear``
list its keys and purge plans)."""


def admin_permissions(config: Any = None) -> Permissions:
    """Return the permissions of the ``admin`` user: a client that also manages Tandem.

    Everything :func:`client_permissions` allows, plus the endpoints actors declare as ``admin``
    (the planner's recipe management behind ``tandem plans add|remove``) and
    :data:`ADMIN_JETSTREAM` (``tandem cache list|clear``). Kept apart from ``client`` so that the
    credential every service shares cannot store a recipe the planner then offers a model.

    Raises
    ------
    ValueError
        When an actor declares as admin a subject it does not serve.
    """
    config = config if config is not None else _default_config()
    client = client_permissions(config)
    admin = [subject for declared in _declared_endpoints("admin", config).values() for subject in declared]
    grants = [parse_jetstream(text, config) for text in ADMIN_JETSTREAM]
    return Permissions(publish=_unique([*client.publish, *admin, *(s for g in grants for s in jetstream_subjects(g))]),
                       subscribe=client.subscribe)


def user_permissions(config: Any = None) -> dict[str, Permissions]:
    """Return every user's permissions: each actor's, then the client's and the admin's."""
    from tandem.actors import ACTORS

    from ._topology import ADMIN, CLIENT

    config = config if config is not None else _default_config()
    users = {name: actor_permissions(name, config) for name in ACTORS}
    users[CLIENT] = client_permissions(config)
    users[ADMIN] = admin_permissions(config)
    return users
