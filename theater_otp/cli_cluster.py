"""Cluster verbs (docs/cluster.md): `nats` and the cluster views of the node's verbs.

Plain functions with typer's own annotations, like cli_dev's; theater_otp.cli
registers every (verb name, function) pair of CLUSTER_VERBS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: (verb name, function), in the order `--help` lists them
CLUSTER_VERBS: list[tuple[str, Callable[..., Any]]] = []
