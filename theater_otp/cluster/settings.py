"""What `--cluster URL --node-name N` mean, checked in one place for the CLI and the node."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import TheaterError
from .names import valid_node_name


class ClusterError(TheaterError):
    """A cluster setting that cannot be used (exit code 2, like other bad arguments)."""

    exit_code = 2


@dataclass(frozen=True)
class ClusterSettings:
    """A node's place in a cluster: the NATS server it joins and its unique name there."""

    url: str
    node_name: str


def default_node_name() -> str:
    """The host name, cut to what a node name may hold."""
    name = re.sub(r"[^a-z0-9_-]", "-", socket.gethostname().lower()).strip("-")[:32]
    return name or "node"


def cluster_settings(url: str, node_name: str | None) -> ClusterSettings:
    """The checked settings, or a ClusterError naming the bad one."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ClusterError(f"--cluster {url!r}: {exc}") from None
    if parts.scheme not in ("nats", "tls") or not parts.hostname:
        raise ClusterError(f"--cluster {url!r}: expected nats://HOST:PORT")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ClusterError(f"--cluster {url!r}: expected nats://HOST:PORT, without a path or query")
    name = default_node_name() if node_name is None else node_name
    problem = valid_node_name(name)
    if problem is not None:
        raise ClusterError(f"--node-name {name!r}: {problem}")
    normal = f"{parts.scheme}://{parts.hostname}:{port or 4222}"
    return ClusterSettings(normal, name)


__all__ = ["ClusterError", "ClusterSettings", "cluster_settings", "default_node_name"]
