"""nats-server configuration files, written from Python values.

The nats-server config format accepts JSON-style values (quoted strings, ``[...]`` lists,
``{...}`` maps), so :func:`dump` writes every string with :func:`json.dumps` quoting: a path
or subject holding a space, a ``#`` or a ``$`` cannot change the file's meaning.

:func:`node_config` builds one node's config: client listen address, ``server_name``,
explicit ``max_payload``, JetStream with its own ``store_dir``, optional ``http`` monitoring,
the cluster block (routes to the other nodes on loopback) and, when secure, the
``authorization`` block listing one nkey user per actor and one for clients.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

__all__ = ["ClusterSpec", "UserEntry", "dump", "node_config"]


class ClusterSpec(msgspec.Struct, frozen=True, kw_only=True):
    """The cluster block of one node: its route port and the routes to its peers."""

    name: str
    host: str
    port: int
    routes: list[str]


class UserEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One user of the ``authorization`` block: an nkey public key and its permissions map."""

    name: str
    nkey: str
    permissions: dict[str, Any]


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    raise TypeError(f"cannot write {type(value).__name__} into a nats-server config")


def dump(value: Mapping[str, Any], *, indent: int = 0) -> str:
    """Write ``value`` as nats-server config text (``key: value`` lines, nested blocks).

    Parameters
    ----------
    value : mapping
        Keys are config names; values are str, int, bool, lists or nested mappings. A key
        starting with ``#`` writes its value as a comment line.

    Returns
    -------
    str

    Examples
    --------
    >>> print(dump({"port": 4222, "jetstream": {"store_dir": "/tmp/s"}}), end="")
    port: 4222
    jetstream {
      store_dir: "/tmp/s"
    }
    """
    pad = "  " * indent
    lines: list[str] = []
    for key, item in value.items():
        if key.startswith("#"):
            lines.extend(f"{pad}# {line}".rstrip() for line in str(item).splitlines())
        elif isinstance(item, Mapping):
            lines.append(f"{pad}{key} {{")
            lines.append(dump(item, indent=indent + 1).rstrip("\n"))
            lines.append(f"{pad}}}")
        elif isinstance(item, Sequence) and not isinstance(item, str):
            lines.append(f"{pad}{key}: {_list(item, indent)}")
        else:
            lines.append(f"{pad}{key}: {_scalar(item)}")
    return "\n".join(line for line in lines if line) + "\n"


def _list(items: Sequence[Any], indent: int) -> str:
    if not items:
        return "[]"
    if all(not isinstance(i, Mapping) for i in items):
        flat = ", ".join(_scalar(i) for i in items)
        if len(flat) < 80:
            return f"[{flat}]"
    pad = "  " * (indent + 1)
    body = []
    for item in items:
        if isinstance(item, Mapping):
            inner = dump(item, indent=indent + 2).rstrip("\n")
            body.append(f"{pad}{{\n{inner}\n{pad}}}")
        else:
            body.append(f"{pad}{_scalar(item)}")
    return "[\n" + "\n".join(body) + "\n" + "  " * indent + "]"


def node_config(*, server_name: str, host: str, port: int, store_dir: str, max_payload: int,
                http_port: int = 0, cluster: ClusterSpec | None = None,
                users: Sequence[UserEntry] | None = None, header: str = "") -> str:
    """Return the config text of one nats-server node.

    Parameters
    ----------
    server_name : str
        Unique per node (JetStream clustering requires it).
    host, port : str, int
        Client listen address.
    store_dir : str
        This node's JetStream store.
    max_payload : int
        Largest message the server accepts, bytes (set explicitly, not left to the default).
    http_port : int
        Monitoring port (``/varz``, ``/jsz``…) on ``host``; 0: no monitoring endpoint.
    cluster : ClusterSpec or None
        Routes to the other nodes; ``None`` for a single server.
    users : sequence of UserEntry or None
        nkey users with their permissions; ``None``: an open server (anyone may connect).
    header : str
        Comment written at the top.

    Returns
    -------
    str
    """
    conf: dict[str, Any] = {}
    if header:
        conf["#"] = header
    conf |= {"server_name": server_name, "listen": f"{host}:{port}", "max_payload": max_payload,
             "jetstream": {"store_dir": store_dir}}
    if http_port:
        conf["http"] = f"{host}:{http_port}"
    if cluster is not None:
        conf["cluster"] = {"name": cluster.name, "listen": f"{cluster.host}:{cluster.port}", "routes": cluster.routes}
    if users is not None:
        conf["authorization"] = {"users": [
            {"# user": u.name, "nkey": u.nkey, "permissions": u.permissions} for u in users]}
    return dump(conf)
