"""``render``: the nats-server configs a deployment runs with, checked by the real binary (``nats-server -t``)."""

from __future__ import annotations

import socket
import stat
import subprocess
from pathlib import Path

import pytest
from tandem.services.bus import find_nats_server
from tandem.services.deploy import Topology, render
from tandem.services.errors import ConfigError


def _check(config: str) -> None:
    """``nats-server -t``: parse the config and exit (the binary is the authority on its format)."""
    done = subprocess.run([find_nats_server(), "-t", "-c", config], check=False, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr + done.stdout


def test_open_single_node(tmp_path: Path) -> None:
    deployment = render(Topology(port=0, secure=False), tmp_path)
    [node] = deployment.nodes
    text = Path(node.config_path).read_text()
    assert "max_payload: 1048576" in text and "jetstream {" in text and 'server_name: "tandem-n1"' in text
    assert "cluster" not in text and "authorization" not in text
    assert deployment.url == node.client_url and deployment.jetstream_replicas == 1
    assert deployment.credentials == {} and deployment.inbox_prefixes["router"] == "_INBOX_router"
    _check(node.config_path)


def test_three_node_cluster_routes_to_the_two_others(tmp_path: Path) -> None:
    deployment = render(Topology(port=0, cluster=3, secure=False, monitoring=True), tmp_path)
    assert deployment.jetstream_replicas == 3 and len(deployment.url.split(",")) == 3
    ports = {n.cluster_port for n in deployment.nodes}
    assert len(ports) == 3 and 0 not in ports and all(n.http_port for n in deployment.nodes)
    for node in deployment.nodes:
        text = Path(node.config_path).read_text()
        others = sorted(f"nats-route://127.0.0.1:{p}" for p in ports - {node.cluster_port})
        assert all(route in text for route in others) and f"127.0.0.1:{node.cluster_port}" in text
        assert node.store_dir in text
        _check(node.config_path)
    assert len({n.store_dir for n in deployment.nodes}) == 3


def test_env_for_an_actor_replica(tmp_path: Path) -> None:
    deployment = render(Topology(port=0, secure=False, cluster=3), tmp_path)
    env = deployment.env_for("executor", "executor.2")
    assert env == {"TANDEM_NATS_URL": deployment.url, "TANDEM_NATS_REPLICAS": "3",
                   "TANDEM_NATS_INBOX_PREFIX": "_INBOX_executor", "TANDEM_INSTANCE_ID": "executor.2"}


def test_refuses_what_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cluster"):
        render(Topology(port=0, cluster=2), tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(ConfigError, match="in use"):
            render(Topology(port=s.getsockname()[1]), tmp_path)
    repo = Path(__file__).resolve().parents[2]
    with pytest.raises(ConfigError, match="source tree"):
        render(Topology(port=0), repo / "build" / "deploy")


def test_config_files_are_private(tmp_path: Path) -> None:
    deployment = render(Topology(port=0, secure=False), tmp_path)
    assert stat.S_IMODE(Path(deployment.nodes[0].config_path).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "nats").stat().st_mode) == 0o700
