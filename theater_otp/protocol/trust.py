"""Who may say what on a tree's local sockets: the run's secrets and the identities made from them.

Every process on the node's sockets (workers, the chain-writer, the HTTP gateway) is one the node
started, and the node hands each its identity when it starts it: pickled through the forkserver,
never on a command line or in the environment, which other processes can read. Each identity ends
in a random token, so no other process can guess one, nor take one before its owner connects (a
ROUTER keeps the first peer that claims an identity). The receivers only listen to the identities
the node registered (docs/security.md):

* the node's router: frames from an identity that is not a live worker or the gateway are dropped
  and counted;
* the chain-writer: `events` only from a producer the node registered, and only for that producer's
  actor and incarnation; `register`, `producer`, `sync` and `stop` only from the node;
* the gateway: an answer only from the worker its request went to.

The chain-writer proves itself the other way: every `ack` carries the run's writer proof, which only
the node and the processes it started know, so an ack from a process that took over chain.sock's
path cannot make anyone believe an event is stored.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

#: Random bytes in each token (hex: twice as many characters).
TOKEN_BYTES = 16


def new_token() -> str:
    return secrets.token_hex(TOKEN_BYTES)


def worker_identity(actor_id: str, incarnation: int, token: str) -> bytes:
    """A worker's identity on the router, the gateway and the chain socket."""
    return f"{actor_id}/{incarnation}/{token}".encode()


def same(a: bytes | None, b: bytes) -> bool:
    """Constant-time comparison of a presented secret with the expected one."""
    return isinstance(a, bytes) and hmac.compare_digest(a, b)


@dataclass(frozen=True)
class RunSecrets:
    """The secrets of one node run, made when the node starts and never written anywhere."""

    #: the node's identity on the chain socket: events from it are the node's (trusted)
    node: bytes
    #: the HTTP gateway's identity on the node's router
    gateway: bytes
    #: the cluster link's identity on the node's router (docs/cluster.md)
    link: bytes
    #: what the chain-writer puts in every ack
    writer_proof: bytes

    @classmethod
    def new(cls) -> "RunSecrets":
        return cls(node=f"node/{new_token()}".encode(), gateway=f"http-gateway/{new_token()}".encode(),
                   link=f"cluster-link/{new_token()}".encode(), writer_proof=new_token().encode())


__all__ = ["TOKEN_BYTES", "RunSecrets", "new_token", "same", "worker_identity"]
