"""Verbs for the chains replicated to JetStream (docs/cluster.md, "Chains off the box";
docs/replication.md): `verify-remote` and `restore`.

Plain functions with typer's own annotations, like cli_dev's; theater_otp.cli
registers every (verb name, function) pair of REPLICA_VERBS. Errors are one
`error: ...` line on stderr and exit 1; progress goes to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

ActorArg = Annotated[str, typer.Argument(help="Actor id, path or name (or supervisor:<path>) whose chain to use.")]
ClusterOpt = Annotated[str, typer.Option("--cluster", help="The NATS server the chains were replicated to "
                                                            "(nats://HOST:PORT).")]
NodeNameOpt = Annotated[str, typer.Option("--node-name", help="The node whose chains were replicated "
                                                               "(stream THEATER_CHAIN_<name>).")]
ReplicaHomeOpt = Annotated[Optional[Path], typer.Option("--home", envvar="THEATER_OTP_HOME",
                                                        help="The node's state directory (default ~/.theater-otp).")]
ReplicaJsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
RestoreForceOpt = Annotated[bool, typer.Option("--force", help="Replace a local chain that is intact and longer "
                                                                "than the copy, or diverges from it (the replaced "
                                                                "events are kept in cut_records).")]


def _err(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def verify_remote(actor: ActorArg, cluster: ClusterOpt, node_name: NodeNameOpt, home: ReplicaHomeOpt = None,
                  json_out: ReplicaJsonOpt = False) -> None:
    """Check the replicated copy of a chain: hash chain, and against the local chain. Exit 1 if it fails.

    The copy is read from JetStream (stream THEATER_CHAIN_<node>) and checked with the code
    `verify` uses; with a local chain.db (--home) the two must agree event by event up to the
    shorter, and the first seq where they diverge is reported."""
    from .cluster.remote_chain import RemoteChainError
    from .cluster.remote_chain import verify_remote as run_verify
    from .home import Home

    try:
        report = run_verify(cluster, node_name, actor, Home.at(home), say=_say)
    except RemoteChainError as exc:
        _err(str(exc))
        raise typer.Exit(code=1) from None
    if json_out:
        print(json.dumps(report.to_plain(), indent=2))
    else:
        for line in report.lines():
            print(line)
    if not report.ok:
        raise typer.Exit(code=1)


def restore(actor: ActorArg, cluster: ClusterOpt, node_name: NodeNameOpt, home: ReplicaHomeOpt = None,
            force: RestoreForceOpt = False, json_out: ReplicaJsonOpt = False) -> None:
    """Rebuild a lost or damaged local chain from its replicated copy (the node must be down).

    The copy must verify. A local chain that is intact and longer than the copy, or diverges
    from it, is left alone unless --force; whatever is cut is kept in chain.db's cut_records."""
    from .cluster.remote_chain import RemoteChainError
    from .cluster.remote_chain import restore as run_restore
    from .home import Home

    try:
        result = run_restore(cluster, node_name, actor, Home.at(home), force=force, say=_say)
    except RemoteChainError as exc:
        _err(str(exc))
        raise typer.Exit(code=1) from None
    if json_out:
        print(json.dumps(result.to_plain(), indent=2))
        return
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    label = result.path or result.actor_id
    if result.up_to_date:
        print(f"ok: {label}: up to date ({result.head_seq + 1} events)")
        return
    cut = f", cut {result.cut} (kept in cut_records)" if result.cut else ""
    print(f"ok: {label}: restored {result.appended} event(s) after {result.kept} kept{cut}; "
          f"head seq {result.head_seq}")


#: (verb name, function), in the order `--help` lists them
REPLICA_VERBS: list[tuple[str, Callable[..., Any]]] = [
    ("verify-remote", verify_remote),
    ("restore", restore),
]
