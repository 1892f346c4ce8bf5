"""The multi-process deployment: topology, generated nats-server config and permissions, supervisor."""

from ._topology import (
    CLIENT,
    CLUSTER_NAME,
    Deployment,
    NodeSpec,
    Topology,
    inbox_prefix,
    parse_replicas,
    render,
    user_names,
)

__all__ = ["CLIENT", "CLUSTER_NAME", "Deployment", "NodeSpec", "Topology", "inbox_prefix", "parse_replicas", "render",
           "user_names"]
