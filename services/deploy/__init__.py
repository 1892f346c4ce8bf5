"""The multi-process deployment: topology, generated nats-server config and permissions, supervisor.

:func:`render` and the types are imported with the package (cheap: ``tandem up --help`` reads
them); the permissions (which import the actors) and the compose file are loaded on first use.
"""

from typing import Any

from ._topology import (
    ADMIN,
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

__all__ = ["ADMIN", "CLIENT", "CLUSTER_NAME", "Deployment", "NodeSpec", "Permissions", "ProcessGaveUp", "Supervisor", "Topology",
           "actor_permissions", "admin_permissions", "client_permissions", "compose_yaml", "inbox_prefix", "parse_replicas", "render",
           "render_containers", "user_names", "user_permissions"]

_LAZY = {"Permissions": "_permissions", "actor_permissions": "_permissions", "admin_permissions": "_permissions",
         "client_permissions": "_permissions",
         "user_permissions": "_permissions", "compose_yaml": "_compose", "render_containers": "_compose",
         "Supervisor": "_supervisor", "ProcessGaveUp": "_supervisor"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
