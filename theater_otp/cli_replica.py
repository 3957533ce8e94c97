"""Verbs for the chains replicated to JetStream (docs/cluster.md, "Chains off the box").

Plain functions with typer's own annotations, like cli_dev's; theater_otp.cli
registers every (verb name, function) pair of REPLICA_VERBS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: (verb name, function), in the order `--help` lists them
REPLICA_VERBS: list[tuple[str, Callable[..., Any]]] = []
