"""What ``tandem up`` runs: the topology asked for, and the deployment rendered from it.

:class:`Topology` is the request (replicas per actor, cluster size, secure or open);
:func:`render` turns it into a :class:`Deployment`: the nats-server config files, the
client URL, one credential per actor and one for clients, and the environment of each
process. The supervisor (``_supervisor``) only starts what a :class:`Deployment` lists.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

__all__ = ["Deployment", "NodeSpec", "Topology", "parse_replicas", "render"]


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
    """

    replicas: dict[str, int] = msgspec.field(default_factory=dict)
    cluster: int = 1
    secure: bool = True
    host: str = "127.0.0.1"
    port: int = 4222

    def count(self, actor: str) -> int:
        """Processes of ``actor`` (1 unless :attr:`replicas` says otherwise)."""
        return self.replicas.get(actor, 1)


class NodeSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One nats-server: its name, generated config file, client URL, cluster port and store."""

    name: str
    config_path: str
    client_url: str
    cluster_port: int
    store_dir: str


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
    """

    directory: str
    nodes: list[NodeSpec]
    url: str
    credentials: dict[str, str]
    inbox_prefixes: dict[str, str]
    jetstream_replicas: int

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


def render(topology: Topology, directory: Path) -> Deployment:
    """Write the nats-server config(s) and credentials for ``topology`` into ``directory``.

    Raises
    ------
    ConfigError
        When the topology cannot be rendered (a port in use, cluster size not 1 or 3).
    """
    raise NotImplementedError("issue 15: being written")
