"""The multi-process deployment: topology, generated nats-server config and permissions, supervisor."""

from ._topology import Deployment, NodeSpec, Topology, parse_replicas, render

__all__ = ["Deployment", "NodeSpec", "Topology", "parse_replicas", "render"]
