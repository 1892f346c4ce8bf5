"""JetStream KV buckets that validate keys and heal when their stream is lost."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, KeyValueConfig
from nats.js.kv import KeyValue

from ..errors import BusError
from ._deadline import remaining
from ._limits import validate_kv_key

if TYPE_CHECKING:
    from ._nats import Bus

__all__ = ["UNAVAILABLE_RETRY_S", "HealingKeyValue", "is_stream_lost"]

log = logging.getLogger("tandem.bus")

T = TypeVar("T")

_STREAM_NOT_FOUND = 10059  # JSStreamNotFoundErr
_KV_OP, _KV_DEL, _KV_PURGE, _MARKER_REASON = "KV-Operation", "DEL", "PURGE", "Nats-Marker-Reason"
_LIST_INACTIVE = 10.0  # seconds a key listing's consumer outlives a client that vanished mid-listing


UNAVAILABLE_RETRY_S = 30.0
"""Seconds a KV operation keeps retrying while JetStream is briefly unavailable (a server
restarting, a stream leader election after a cluster node died; seen here: up to about 10 s
on a 3-node cluster on a loaded 2-core machine) before it fails with
:class:`~tandem.services.errors.BusError`; never past the current deadline."""

_TRANSIENT = (nats.js.errors.ServiceUnavailableError, nats.errors.NoRespondersError, nats.errors.TimeoutError)
# A write retried after a timeout that did land is safe: puts, deletes and purges are idempotent, and a
# revision-checked create/update then fails with a wrong-last-sequence conflict, which callers re-read.


def is_stream_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the JetStream stream behind a bucket does not exist (any more).

    ``NoStreamResponseError`` (a write nobody stored) also counts; it is ambiguous: a stream
    between leaders answers the same way, which :class:`HealingKeyValue` tells apart by
    asking for the stream's info before it recreates anything.
    """
    if isinstance(exc, nats.js.errors.KeyNotFoundError):
        return False
    if isinstance(exc, (nats.js.errors.NoStreamResponseError, nats.js.errors.BucketNotFoundError)):
        return True
    return isinstance(exc, nats.js.errors.NotFoundError) and getattr(exc, "err_code", None) == _STREAM_NOT_FOUND


class HealingKeyValue(KeyValue):
    """A :class:`nats.js.kv.KeyValue` bound to a :class:`Bus`, not to one connection.

    Differences from nats-py's bucket (same methods, same exceptions otherwise):

    * every key goes through :func:`~tandem.services.bus.validate_kv_key` first
      (:class:`~tandem.services.errors.InvalidName`, code ``bad_request``);
    * when the bucket's stream is gone (bucket deleted, server restarted with an empty
      store), the bucket is recreated with its original configuration and the operation
      is tried once more; reads of a lost bucket simply find no key;
    * while JetStream is briefly unavailable (503, no responders, a timeout, a stream between leaders:
      a server restarting, a cluster node dying) an operation is retried with backoff for up
      to :data:`UNAVAILABLE_RETRY_S` seconds, then fails with
      :class:`~tandem.services.errors.BusError`; a bucket that still exists is never recreated;
    * it uses the bus's *current* JetStream context, so it survives
      :meth:`Bus.reconnect <tandem.services.bus.Bus.reconnect>`.

    Parameters
    ----------
    bus : Bus
    config : nats.js.api.KeyValueConfig
        How to (re)create the bucket.
    direct : bool
        Whether the stream allows direct get.
    """

    def __init__(self, bus: Bus, config: KeyValueConfig, *, direct: bool) -> None:
        self._bus = bus
        self.config = config
        assert config.bucket is not None
        super().__init__(name=config.bucket, stream=f"KV_{config.bucket}", pre=f"$KV.{config.bucket}.",
                         js=bus.jetstream, direct=direct)

    @property  # type: ignore[override]
    def _js(self) -> JetStreamContext:
        return self._bus.jetstream

    @_js.setter
    def _js(self, _: JetStreamContext) -> None:
        pass  # always the bus's current context

    @property
    def bucket(self) -> str:
        """The bucket's name."""
        return self._name

    async def recreate(self) -> None:
        """Create the bucket again with its configuration (a no-op when it exists).

        Raises
        ------
        BusError
            When JetStream refuses.
        """
        try:
            await self._bus.jetstream.create_key_value(self.config)
        except nats.js.errors.BadRequestError:
            pass  # created meanwhile by someone else, with another configuration: use it
        except nats.errors.Error as exc:
            raise BusError(f"cannot recreate JetStream KV {self._name!r}: {exc}") from exc

    async def _gone(self, exc: nats.errors.Error) -> bool:
        """Whether the bucket's stream is really gone (not just between leaders or servers)."""
        if not isinstance(exc, nats.js.errors.NoStreamResponseError):
            return True
        try:
            await self._bus.jetstream.stream_info(self._stream)
        except nats.js.errors.NotFoundError:
            return True
        except nats.errors.Error:
            return False  # cannot tell yet: treat as unavailable and ask again
        return False

    async def _healing(self, op: Callable[[], Awaitable[T]], *, read: bool = False) -> T:
        """Run ``op``; wait out a briefly unavailable JetStream; recreate a lost bucket once (a read: a miss)."""
        budget = remaining(UNAVAILABLE_RETRY_S)
        give_up = anyio.current_time() + max(0.0, UNAVAILABLE_RETRY_S if budget is None else budget)
        delay, recreated, started = 0.1, False, anyio.current_time()
        while True:
            try:
                return await op()
            except nats.errors.Error as exc:
                lost = is_stream_lost(exc)
                if not lost and not isinstance(exc, _TRANSIENT):
                    raise
                if lost and await self._gone(exc):
                    if read:  # nothing stored any more: a miss, like a missing key
                        raise nats.js.errors.KeyNotFoundError(message=f"bucket {self._name} lost") from exc
                    if recreated:
                        raise BusError(f"JetStream KV {self._name!r} lost and not recreated: {exc!r}") from exc
                    log.warning("KV bucket %s is gone (%s); recreating it", self._name, type(exc).__name__)
                    await self.recreate()
                    recreated = True
                    continue
                if anyio.current_time() + delay > give_up:
                    raise BusError(f"JetStream KV {self._name!r} unavailable for {give_up - started:.3g}s: "
                                   f"{type(exc).__name__}: {exc}") from exc
                log.info("KV bucket %s unavailable (%s); retrying", self._name, type(exc).__name__)
                await anyio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def get(self, key: str, revision: int | None = None, validate_keys: bool = True) -> KeyValue.Entry:
        validate_kv_key(key)
        return await self._healing(lambda: super(HealingKeyValue, self).get(key, revision, validate_keys), read=True)

    async def put(self, key: str, value: bytes, validate_keys: bool = True) -> int:
        validate_kv_key(key)
        return await self._healing(lambda: super(HealingKeyValue, self).put(key, value, validate_keys))

    async def create(self, key: str, value: bytes, *args: Any, **kwargs: Any) -> int:
        validate_kv_key(key)
        return await self._healing(lambda: super(HealingKeyValue, self).create(key, value, *args, **kwargs))

    async def update(self, key: str, value: bytes, *args: Any, **kwargs: Any) -> int:
        validate_kv_key(key)
        return await self._healing(lambda: super(HealingKeyValue, self).update(key, value, *args, **kwargs))

    async def delete(self, key: str, *args: Any, **kwargs: Any) -> bool:
        validate_kv_key(key)
        return await self._healing(lambda: super(HealingKeyValue, self).delete(key, *args, **kwargs))

    async def purge(self, key: str, *args: Any, **kwargs: Any) -> bool:
        validate_kv_key(key)
        return await self._healing(lambda: super(HealingKeyValue, self).purge(key, *args, **kwargs))

    async def watch(self, keys: Any, *args: Any, **kwargs: Any) -> KeyValue.KeyWatcher:
        return await self._healing(lambda: super(HealingKeyValue, self).watch(keys, *args, **kwargs))

    async def last_revision(self, keys: str) -> int:
        """Return the revision of the newest change (a put, delete or purge) to a key matching ``keys``.

        One JetStream request (the stream's last message on ``$KV.<bucket>.<keys>``, wildcards
        allowed); ``0`` when no such key was ever written (or the bucket is lost). A watcher on the
        same keys has seen every change up to now once it has delivered this revision.
        """
        try:
            msg = await self._healing(lambda: self._js.get_msg(self._stream, subject=f"{self._pre}{keys}"), read=True)
        except (nats.js.errors.NotFoundError, nats.js.errors.KeyNotFoundError):
            return 0
        return msg.seq or 0

    async def keys(self, filters: list[str] | None = None, **kwargs: Any) -> list[str]:
        """Return the bucket's keys (those not deleted), optionally only those containing one of ``filters``.

        One JetStream round trip: a short-lived push consumer (last message per key, headers
        only) is created on an inbox subscribed beforehand; its create reply says how many
        keys are coming, they arrive on the inbox, and the consumer is deleted without waiting.
        nats-py's ``keys()`` takes three round trips (consumer create, then its info twice)
        and leaves its ordered consumer on the server for five minutes, so a process listing
        keys per request (the planner's recipes) piled up consumers until the server refused
        more (``maximum consumers limit reached``). When the listing cannot be completed that
        way (a message lost, an old server), nats-py's watcher is used, its consumer deleted.

        Raises
        ------
        nats.js.errors.NoKeysError
            When the bucket has no key (as nats-py).
        """
        try:
            keys = await self._healing(self._list_keys)
        except (nats.errors.TimeoutError, nats.js.errors.APIError) as exc:
            log.debug("KV %s: one-round-trip key listing failed (%r); using a watcher", self._name, exc)
            keys = await self._keys_by_watch()
        if filters:
            keys = [k for k in keys if any(f in k for f in filters)]
        if not keys:
            raise nats.js.errors.NoKeysError
        return keys

    async def _list_keys(self) -> list[str]:
        nc = self._bus.nc
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        name = ""
        try:
            info = await self._js.add_consumer(self._stream, ConsumerConfig(
                deliver_subject=inbox, deliver_policy=DeliverPolicy.LAST_PER_SUBJECT, ack_policy=AckPolicy.NONE,
                filter_subject=f"{self._pre}>", headers_only=True, mem_storage=True, num_replicas=1,
                inactive_threshold=_LIST_INACTIVE))
            name = info.name or ""
            keys: list[str] = []
            more = (info.num_pending or 0) + (info.delivered.consumer_seq if info.delivered else 0) > 0
            while more:
                msg = await sub.next_msg(timeout=self._js._timeout)
                if not msg.reply:  # a status message (idle heartbeat, flow control): not a key
                    continue
                more = msg.metadata.num_pending > 0
                headers = msg.headers or {}
                op = headers.get(_KV_OP)
                if op is None and _MARKER_REASON in headers:  # nats-server 2.11+ TTL/age/remove markers
                    continue
                if op not in (_KV_DEL, _KV_PURGE):
                    keys.append(msg.subject[len(self._pre):])
            return keys
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await sub.unsubscribe()
                    if name:  # no reply awaited: the server deletes it, or its inactivity threshold does
                        await nc.publish(f"$JS.API.CONSUMER.DELETE.{self._stream}.{name}", b"")
                except (nats.errors.Error, OSError) as exc:  # the connection is going away
                    log.debug("KV %s: dropping a key listing's consumer: %r", self._name, exc)

    async def _keys_by_watch(self) -> list[str]:
        """nats-py's listing (an ordered consumer), deleting the consumer afterwards."""
        watcher = await self.watchall(ignore_deletes=True, meta_only=True, inactive_threshold=_LIST_INACTIVE)
        keys: list[str] = []
        try:
            # nats-py asks for the consumer's info once more here; that round trip also gives
            # the first keys time to arrive before an empty bucket's end marker could be taken
            # for the end (its watch() decides "empty" from num_pending and delivered == 0)
            await watcher._sub.consumer_info()
            async for entry in watcher:
                if not entry:  # None: the end of the keys present when the watch began
                    break
                keys.append(entry.key)
        finally:
            with anyio.CancelScope(shield=True):
                await self.drop_watcher(watcher)
        return keys

    async def drop_watcher(self, watcher: KeyValue.KeyWatcher) -> None:
        """Stop a watcher of this bucket and delete its consumer without waiting (never raises a bus error).

        nats-py's ``stop()`` only unsubscribes, leaving the consumer on the server until its
        inactivity threshold (five minutes by default).
        """
        sub = getattr(watcher, "_sub", None)
        consumer = getattr(sub, "_consumer", None)
        try:
            await watcher.stop()
            if consumer:  # no reply awaited: the server deletes it or its inactivity threshold does
                await self._bus.nc.publish(f"$JS.API.CONSUMER.DELETE.{self._stream}.{consumer}", b"")
        except (nats.errors.Error, OSError) as exc:  # the connection is going away
            log.debug("KV %s: dropping a key listing's consumer: %r", self._name, exc)
