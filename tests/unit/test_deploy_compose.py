"""``compose.yaml`` is generated from the topology ``tandem up`` runs, and checked in up to date.

No container engine runs here: the file is checked for consistency (same actors, replicas,
environment, users and permissions as ``tandem up``), and the nats-server configs it mounts are
checked by the real binary (``nats-server -t``).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from tandem.actors import ACTORS
from tandem.services.bus import find_nats_server
from tandem.services.deploy import Topology, render
from tandem.services.deploy._compose import (
    COMPOSE_TOPOLOGY,
    SECRET_TARGET,
    compose_yaml,
    container_deployment,
    render_containers,
)

ROOT = Path(__file__).resolve().parents[2]


def test_checked_in_compose_file_is_the_generated_one() -> None:
    assert (ROOT / "compose.yaml").read_text(encoding="utf-8") == compose_yaml(), (
        "compose.yaml is stale: regenerate it with `python -m tandem.services.deploy._compose --write compose.yaml`")


def test_every_actor_replica_is_a_service_with_its_own_identity_and_credential() -> None:
    document = yaml.safe_load(compose_yaml())
    services = document["services"]
    deployment = container_deployment()
    assert {"nats1", "nats2", "nats3", "jaeger"} <= set(services)
    for name in ACTORS:
        replicas = [s for s in services if re.fullmatch(rf"{name}-\d+", s)]
        assert len(replicas) == COMPOSE_TOPOLOGY.count(name), name
        for i, service in enumerate(sorted(replicas), start=1):
            spec = services[service]
            assert spec["command"] == ["serve", name]
            assert spec["environment"].items() >= deployment.env_for(name, f"{name}.{i}").items()
            assert spec["environment"]["TANDEM_NATS_CREDS"] == SECRET_TARGET
            assert spec["secrets"] == [{"source": f"{name}_nkey", "target": SECRET_TARGET}]
            assert spec["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
        assert document["secrets"][f"{name}_nkey"]["file"].endswith(f"/creds/{name}.nk")
    assert deployment.jetstream_replicas == 3
    for i in (1, 2, 3):
        assert f"/nats/n{i}.conf:/etc/nats/nats.conf:ro" in services[f"nats{i}"]["volumes"][0]


def _users_and_permissions(text: str) -> str:
    """The authorization block without the keys (which differ between two renderings)."""
    block = text[text.index("authorization {"):]
    return re.sub(r'nkey: "U[A-Z0-9]+"', "nkey: *", block)


def test_the_mounted_configs_have_the_users_and_permissions_of_tandem_up(tmp_path: Path) -> None:
    render_containers(tmp_path / "compose")
    local = render(Topology(port=0, cluster=3), tmp_path / "up")
    up = _users_and_permissions(Path(local.nodes[0].config_path).read_text())
    for i in (1, 2, 3):
        config = tmp_path / "compose" / "nats" / f"n{i}.conf"
        text = config.read_text()
        assert _users_and_permissions(text) == up
        assert 'store_dir: "/data"' in text and "nats-route://nats" in text and f"nats-route://nats{i}:" not in text
        done = subprocess.run([find_nats_server(), "-t", "-c", str(config)], check=False, capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0, done.stderr + done.stdout
    assert sorted(p.name for p in (tmp_path / "compose" / "creds").iterdir()) == sorted(
        f"{u}.nk" for u in [*ACTORS, "client", "admin"])
