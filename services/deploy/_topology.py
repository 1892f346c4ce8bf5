"""What ``tandem up`` runs: the topology asked for, and the deployment rendered from it.

:class:`Topology` is the request (replicas per actor, cluster size, secure or open);
:func:`render` turns it into a :class:`Deployment`: the nats-server config files, the
client URL, one credential per actor and one for clients, and the environment of each
process. The supervisor (``_supervisor``) only starts what a :class:`Deployment` lists.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from tandem.services.errors import ConfigError

if TYPE_CHECKING:
    from tandem.services.config import Config

__all__ = ["CLIENT", "CLUSTER_NAME", "Deployment", "NodeSpec", "Topology", "inbox_prefix", "parse_replicas", "render",
           "user_names"]


def parse_replicas(text: str) -> dict[str, int]:
    """Parse ``"router=2,executor=2"`` into ``{"router": 2, "executor": 2}``.

    Raises
    ------
    ValueError
        On an unknown actor, a missing ``=`` or a count that is not an integer in 0..32.
    """
    from tandem.actors import ACTORS

    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, count = part.partition("=")
        name = name.strip()
        if not eq or name not in ACTORS or not count.strip().isdigit() or not 0 <= int(count) <= 32:
            raise ValueError(f"--replicas {part!r}: expected NAME=COUNT with NAME one of {', '.join(ACTORS)} "
                             "and COUNT 0..32")
        out[name] = int(count)
    return out


class Topology(msgspec.Struct, frozen=True, kw_only=True):
    """The processes ``tandem up`` runs.

    Parameters
    ----------
    replicas : dict of str to int
        Actor name (a key of :data:`tandem.actors.ACTORS`) → number of processes; actors not
        listed run one; 0 runs none.
    cluster : {1, 3}
        nats-server nodes; with 3, a cluster on loopback and JetStream replicas = 3.
    secure : bool
        Generate one nkey user per actor and one for clients, with per-subject permissions
        derived from the actors' declarations; ``False``: an open server (for comparison).
    host : str
        Interface the servers listen on.
    port : int
        Client port of the first node (the others: the next free ports); 0 picks free ports.
    max_payload : int
        The servers' ``max_payload``, bytes (1 MiB, the nats-server default, written
        explicitly; at least 256 KiB); larger messages go through the JetStream object store.
    monitoring : bool
        Open each node's HTTP monitoring port (``/varz``, ``/jsz``) on a free port.
    """

    replicas: dict[str, int] = msgspec.field(default_factory=dict)
    cluster: int = 1
    secure: bool = True
    host: str = "127.0.0.1"
    port: int = 4222
    max_payload: int = 1024 * 1024
    monitoring: bool = False

    def count(self, actor: str) -> int:
        """Processes of ``actor`` (1 unless :attr:`replicas` says otherwise)."""
        return self.replicas.get(actor, 1)


class NodeSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One nats-server: its name, generated config file, client URL, cluster port and store.

    ``cluster_port`` is 0 on a single server; ``http_port`` is 0 without monitoring.
    Start it with ``nats-server -c <config_path>`` (:meth:`command`).
    """

    name: str
    config_path: str
    client_url: str
    cluster_port: int
    store_dir: str
    http_port: int = 0

    def command(self, binary: str) -> list[str]:
        """Return the argv that starts this node with ``binary`` (``find_nats_server()``)."""
        return [binary, "-c", self.config_path]


class Deployment(msgspec.Struct, frozen=True, kw_only=True):
    """A rendered :class:`Topology`: what to start and how each process connects.

    Parameters
    ----------
    directory : str
        Where the generated files live (configs, stores, credentials with mode 0600).
    nodes : list of NodeSpec
    url : str
        Every node's client URL, comma-joined (``--nats-url`` accepts it).
    credentials : dict of str to str
        User (``"planner"`` … and ``"client"``) → nkey seed file; empty when not secure.
    inbox_prefixes : dict of str to str
        User → the reply-subject prefix its permissions allow (``_INBOX_<user>``).
    jetstream_replicas : int
        Replicas of the streams, KV buckets and object stores (3 on a 3-node cluster).
    max_payload : int
        The servers' ``max_payload``.
    """

    directory: str
    nodes: list[NodeSpec]
    url: str
    credentials: dict[str, str]
    inbox_prefixes: dict[str, str]
    jetstream_replicas: int
    max_payload: int = 1024 * 1024

    def env_for(self, user: str, instance: str | None = None) -> dict[str, str]:
        """Environment of a process connecting as ``user`` (an actor name or ``"client"``).

        Sets ``TANDEM_NATS_URL``, ``TANDEM_NATS_CREDS`` (when secure),
        ``TANDEM_NATS_INBOX_PREFIX``, ``TANDEM_NATS_REPLICAS`` and, for an actor replica,
        ``TANDEM_INSTANCE_ID`` (its OpenTelemetry ``service.instance.id``, e.g. ``router.2``).
        """
        env = {"TANDEM_NATS_URL": self.url, "TANDEM_NATS_REPLICAS": str(self.jetstream_replicas)}
        if user in self.credentials:
            env["TANDEM_NATS_CREDS"] = self.credentials[user]
        if user in self.inbox_prefixes:
            env["TANDEM_NATS_INBOX_PREFIX"] = self.inbox_prefixes[user]
        if instance is not None:
            env["TANDEM_INSTANCE_ID"] = instance
        return env


def render(topology: Topology, directory: Path, *, config: Config | None = None) -> Deployment:
    """Write the nats-server config(s) and credentials for ``topology`` into ``directory``.

    Layout of ``directory``::

        nats/n1.conf …        one config per node (mode 0600: it lists the users' public keys)
        store/n1/ …           each node's JetStream store (kept across renders and restarts)
        creds/ (0700)         when secure: <user>.nk, one nkey seed per actor and client (0600)

    Rendering again rotates every credential (new seeds, new config) and picks ports again
    when ``topology.port`` is 0; the stores are kept.

    Parameters
    ----------
    topology : Topology
    directory : Path
        Created when missing. Must not lie inside Tandem's source tree (credentials are
        never written into the repository).
    config : Config or None
        The config the actors will run with: its bucket names and endpoint timeouts go into
        the permissions (the default config when ``None``).

    Returns
    -------
    Deployment

    Raises
    ------
    ConfigError
        When the topology cannot be rendered (a port in use, cluster size not 1 or 3, a
        directory inside the source tree).

    Examples
    --------
    >>> deployment = render(Topology(port=0, cluster=3), Path(tempfile.mkdtemp()))  # doctest: +SKIP
    >>> deployment.url  # doctest: +SKIP
    'nats://127.0.0.1:41231,nats://127.0.0.1:40415,nats://127.0.0.1:35701'
    """
    from ._natsconf import ClusterSpec, node_config

    directory = _prepare(topology, directory)
    names = [f"n{i}" for i in range(1, topology.cluster + 1)]
    ports = _client_ports(topology)
    cluster_ports = [_free_port(topology.host) for _ in names] if topology.cluster > 1 else [0] * len(names)
    http_ports = [_free_port(topology.host) for _ in names] if topology.monitoring else [0] * len(names)
    credentials, users = _write_users(directory, config) if topology.secure else ({}, None)
    prefixes = {user: inbox_prefix(user) for user in user_names()}

    nodes: list[NodeSpec] = []
    for i, name in enumerate(names):
        store = directory / "store" / name
        store.mkdir(parents=True, exist_ok=True)
        cluster = None
        if topology.cluster > 1:
            cluster = ClusterSpec(name=CLUSTER_NAME, host=topology.host, port=cluster_ports[i],
                                  routes=[f"nats-route://{topology.host}:{p}"
                                          for j, p in enumerate(cluster_ports) if j != i])
        text = node_config(
            server_name=f"tandem-{name}", host=topology.host, port=ports[i], store_dir=str(store),
            max_payload=topology.max_payload, http_port=http_ports[i], cluster=cluster, users=users,
            header=(f"Generated by tandem up ({'secure' if topology.secure else 'OPEN: no authentication'}); "
                    "rendering again replaces this file and rotates the credentials."))
        path = directory / "nats" / f"{name}.conf"
        _write_secret(path, text.encode())
        nodes.append(NodeSpec(name=name, config_path=str(path), client_url=f"nats://{topology.host}:{ports[i]}",
                              cluster_port=cluster_ports[i], store_dir=str(store), http_port=http_ports[i]))
    return Deployment(directory=str(directory), nodes=nodes, url=",".join(n.client_url for n in nodes),
                      credentials=credentials, inbox_prefixes=prefixes,
                      jetstream_replicas=3 if topology.cluster == 3 else 1, max_payload=topology.max_payload)


MIN_MAX_PAYLOAD = 256 * 1024
"""Smallest ``max_payload`` rendered: nats-py's object store (where larger messages go) publishes
128 KiB chunks, and one chunk must fit in a message with its headers."""

CLUSTER_NAME = "tandem"
"""The ``cluster { name }`` of a three-node deployment."""

CLIENT = "client"
"""The user every non-actor process (CLI, chat, other services) connects as."""


def _prepare(topology: Topology, directory: Path) -> Path:
    """Check what cannot be rendered; create ``directory/nats`` (0700); return ``directory`` resolved."""
    if topology.cluster not in (1, 3):
        raise ConfigError(f"--cluster {topology.cluster}: a deployment runs 1 nats-server or a cluster of 3")
    if not MIN_MAX_PAYLOAD <= topology.max_payload <= 64 * 1024 * 1024:
        raise ConfigError(f"max_payload {topology.max_payload}: expected {MIN_MAX_PAYLOAD // 1024} KiB .. 64 MiB "
                          "(the object store sends 128 KiB chunks, which must fit in one message)")
    directory = Path(directory).expanduser().resolve()
    if directory.is_relative_to(_SOURCE_TREE):
        raise ConfigError(f"{directory} is inside Tandem's source tree ({_SOURCE_TREE}); credentials are never "
                          "written into the repository: pick a directory outside it")
    (directory / "nats").mkdir(parents=True, exist_ok=True)
    os.chmod(directory / "nats", 0o700)
    return directory


def _write_users(directory: Path, config: Config | None) -> tuple[dict[str, str], list[Any]]:
    """Write a fresh nkey seed per user into ``directory/creds`` (0700, files 0600); return the seed
    files by user and the config's user entries (public key and permissions)."""
    from ._natsconf import UserEntry
    from ._permissions import user_permissions

    creds_dir = directory / "creds"
    creds_dir.mkdir(exist_ok=True)
    os.chmod(creds_dir, 0o700)
    credentials: dict[str, str] = {}
    users: list[UserEntry] = []
    for user, permissions in user_permissions(config).items():
        seed, public = _new_user_key()
        path = creds_dir / f"{user}.nk"
        _write_secret(path, seed + b"\n")
        credentials[user] = str(path)
        users.append(UserEntry(name=user, nkey=public, permissions=permissions.to_config()))
    return credentials, users


def user_names() -> list[str]:
    """Return every user a secure deployment has: each actor's name, then ``client``."""
    from tandem.actors import ACTORS

    return [*ACTORS, CLIENT]


def inbox_prefix(user: str) -> str:
    """Return the reply-subject prefix of ``user``: ``_INBOX_<user>``.

    Examples
    --------
    >>> inbox_prefix("router")
    '_INBOX_router'
    """
    return f"_INBOX_{user}"


_SOURCE_TREE = Path(__file__).resolve().parents[2]


def _new_user_key() -> tuple[bytes, str]:
    import nkeys

    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed, nkeys.from_seed(seed).public_key.decode()


def _write_secret(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the start (never readable by others, not even briefly)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _client_ports(topology: Topology) -> list[int]:
    if topology.port == 0:
        return [_free_port(topology.host) for _ in range(topology.cluster)]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((topology.host, topology.port))
        except OSError as exc:
            raise ConfigError(f"port {topology.port} on {topology.host} is in use ({exc.strerror}): stop what "
                              "listens there or pass --port 0") from exc
    return [topology.port, *(_free_port(topology.host) for _ in range(topology.cluster - 1))]
