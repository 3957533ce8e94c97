"""The node's side of its cluster link: the link process, the global names it mirrors, other nodes' liveness.

The link process (cluster/link.py) holds the NATS connection; this part starts
it (again after a crash, with the supervisors' backoff), keeps the mirror of
the global name table that `resolve` reads without a round trip, knows which
nodes are down, and hands each frame another node sent to the part of the node
whose job it is (`on_frame`): the message path (mail.py) and hosted children
(hosting.py) register there.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import zmq

from ..cluster.settings import ClusterSettings
from ..config.model import Backoff
from ..home import Home
from ..protocol import Envelope, encode
from ..protocol.trust import RunSecrets
from .launcher import ChildProcess, Launcher
from .loop import Loop

log = logging.getLogger("theater_otp.node")

#: A link that ended is started again after a pause doubling from 0.2 s up to 5 s.
LINK_RETRY = Backoff(initial_ms=200, max_ms=5_000)

#: NATS delivers at most once: a frame sent with `publish_reliable` and not acknowledged within
#: this is sent again, until acknowledged or its node is declared down.
RESEND_S = 0.5
#: The sequence numbers of reliable frames remembered per sending node run (duplicates dropped).
DEDUP_WINDOW = 4096

#: What handles a frame of one kind from another node.
FrameHandler = Callable[[dict], None]


@dataclass(eq=False)
class RemoteActor:
    """An actor another node runs, as the global name table says. It counts the sends held for it
    here (node/outbox.py reserves on it as on a local worker)."""

    node: str
    actor_id: str
    path: str
    name: str
    incarnation: int
    reserved: int = 0
    reserved_bytes: int = 0


class RemoteNames:
    """The mirror of the global name table, indexed by actor id, path (bare, `node:path`, and its
    suffixes, as the registry does locally) and name. Every lookup is a dictionary lookup."""

    def __init__(self, me: str) -> None:
        self.me = me
        self.by_id: dict[str, RemoteActor] = {}
        self._by_key: dict[str, str] = {}  # the table's key -> actor id
        self._by_ref: dict[str, set[str]] = {}  # path, node:path or name -> actor ids

    def __len__(self) -> int:
        return len(self.by_id)

    def update(self, key: str, record: dict | None) -> None:
        """The table's entry at `key` is now `record` (None: deleted)."""
        old_id = self._by_key.pop(key, None)
        old = self.by_id.pop(old_id, None) if old_id is not None else None
        if old is not None:
            for ref in self._refs(old):
                ids = self._by_ref.get(ref)
                if ids is not None:
                    ids.discard(old.actor_id)
                    if not ids:
                        del self._by_ref[ref]
        if record is None:
            return
        try:
            actor_id = str(record["actor_id"])
            actor = RemoteActor(str(record["node"]), actor_id, str(record["path"]), str(record["name"]),
                                int(record["incarnation"]))
        except (KeyError, TypeError, ValueError):
            log.warning("ignored a malformed name record at %r", key[:80])
            return
        if actor.node == self.me:  # this node's own actors are in its registry
            return
        self._by_key[key] = actor_id
        self.by_id[actor_id] = actor
        for ref in self._refs(actor):
            self._by_ref.setdefault(ref, set()).add(actor_id)

    @staticmethod
    def _refs(actor: RemoteActor) -> tuple[str, ...]:
        """Every name `actor` answers to: its node:path, its path and each path suffix (`w`,
        `team/w`), and its manifest name."""
        parts = actor.path.split("/")
        suffixes = ("/".join(parts[i:]) for i in range(len(parts)))
        return (f"{actor.node}:{actor.path}", actor.name, *suffixes)

    def resolve(self, ref: str) -> RemoteActor | str:
        """The remote actor `ref` names (actor id, path, node:path or name), or why none."""
        actor = self.by_id.get(ref)
        if actor is not None:
            return actor
        ids = self._by_ref.get(ref)
        if not ids:
            return f"no actor named {ref!r} on any node"
        if len(ids) > 1:
            where = sorted(f"{self.by_id[i].node}:{self.by_id[i].path}" for i in ids)[:20]
            return f"{ref!r} is ambiguous across nodes: {', '.join(where)} (use node:path)"
        return self.by_id[next(iter(ids))]

    def on(self, node: str) -> list[RemoteActor]:
        return [a for a in self.by_id.values() if a.node == node]


class ClusterLink:
    """The link process and what it tells the node."""

    def __init__(self, loop: Loop, launcher: Launcher, home: Home, secrets: RunSecrets, router: zmq.Socket,
                 settings: ClusterSettings, give_up: Callable[[str], None], stopping: Callable[[], bool],
                 on_change: Callable[[], None]):
        self.loop = loop
        self.launcher = launcher
        self.home = home
        self.secrets = secrets
        self.router = router
        self.settings = settings
        self.me = settings.node_name
        self.give_up = give_up
        self.stopping = stopping
        #: called when the link becomes ready (`up` waits for it)
        self.on_change = on_change
        self.process: ChildProcess | None = None
        self.ready = False
        self.failures = 0
        self.names = RemoteNames(self.me)
        #: other nodes heard from (heartbeats), and those whose heartbeats stopped
        self.live: set[str] = set()
        self.down: set[str] = set()
        #: what to run when a node is heard from again, or for the first time (hosting retries starts)
        self.up_hooks: list[Callable[[str], None]] = []
        #: frame kind from another node -> its handler (registered by mail.py and hosting.py)
        self.frame_handlers: dict[str, FrameHandler] = {}
        #: frame kind -> what to run when the link could not carry a frame of that kind (mail answers
        #: the request or tells the sender its message was not delivered)
        self.not_carried_hooks: dict[str, Callable[[dict, str], None]] = {}
        #: what to run when a node is declared down (mail fails its requests, hosting its children)
        self.down_hooks: list[Callable[[str], None]] = []
        #: names put while the link was not ready: told once it is
        self._local: dict[str, dict] = {}
        #: frames from other nodes that no handler takes, or that failed
        self.dropped = 0
        #: frames on this node's subjects that were not ours at all (the link counts them)
        self.foreign = 0
        #: the link's last report on the chains' copy in JetStream (lag, events acknowledged)
        self.replica: dict = {}
        #: reliable frames sent and not acknowledged: seq -> (node, frame); this run's tag, so a
        #: restarted node's numbering is never taken for duplicates of the old one's
        self._rseq = itertools.count(1)
        self._run = os.urandom(6).hex()
        self._unacked: dict[int, tuple[str, dict]] = {}
        #: per (node, its run): the reliable seqs taken, oldest first
        self._taken: dict[tuple[str, str], tuple[deque[int], set[int]]] = {}

    # ---- the process ------------------------------------------------------------------------------

    def start(self) -> None:
        from ..cluster.link import LinkConfig

        cfg = LinkConfig(self.home, os.getpid(), self.settings.url, self.me, self.secrets.link)
        self.process = self.launcher.start_link(cfg)
        self.loop.watch(self.process.sentinel)

    def on_exit(self, up_waiting: bool) -> None:
        """The link ended: started again (it reconnects and is told every local name), unless it
        could not use NATS while `up` waits, which fails `up` with the link's reason."""
        from ..cluster.link import EXIT_LINK_ERROR

        assert self.process is not None
        code = self.process.exitcode()
        self.loop.unwatch(self.process.sentinel)
        self.process.release()
        self.process = None
        self.ready = False
        for node in sorted(self.live):  # no link, no connection: as in Erlang, `noconnection` for all
            self.down.add(node)
            for hook in self.down_hooks:
                hook(node)
        self.live.clear()
        if self.stopping():
            return
        if code == EXIT_LINK_ERROR and up_waiting:
            return  # its link_error frame gave up already
        self.failures += 1
        delay = LINK_RETRY.delay_s(self.failures - 1)
        log.error("cluster link exited (%s): starting a new one in %.1f s", code, delay)
        self.loop.after(delay, self._restart)

    def _restart(self) -> None:
        if self.process is None and not self.stopping():
            self.start()

    def stop(self) -> None:
        """Say goodbye on NATS (the link deletes this node's key) and wait briefly for it."""
        if self.process is None:
            return
        self._tell("bye", {})
        self.process.proc.join(2)
        self.kill()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill_and_reap()
            self.process = None

    # ---- to the link ------------------------------------------------------------------------------

    def counters(self) -> dict[str, object]:
        """What `tree` shows of the cluster."""
        return {"node": self.me, "url": self.settings.url, "connected": self.ready,
                "live_nodes": sorted(self.live - self.down), "down_nodes": sorted(self.down),
                "remote_actors": len(self.names), "dropped_frames": self.dropped, "foreign_frames": self.foreign,
                "replica": self.replica}

    def reachable(self, node: str) -> bool:
        return self.ready and (node == self.me or node in self.live)

    def _tell(self, kind: str, body: Any) -> None:
        try:
            self.router.send_multipart([self.secrets.link, encode(Envelope(kind, "node", "link", 0, body))],
                                       zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the link is gone: it is started again and told the names
            log.warning("could not tell the cluster link %s: %s", kind, exc)

    def publish(self, node: str, frame: dict) -> str | None:
        """Send `frame` to `node`; None, or why it cannot go (the node is down, the link not ready)."""
        if node in self.down:
            return f"node {node} is down (noconnection)"
        if not self.ready:
            return "this node's cluster link is not connected (noconnection)"
        frame["from"] = self.me
        self._tell("publish", {"node": node, "frame": msgpack.packb(frame, use_bin_type=True)})
        return None

    def publish_reliable(self, node: str, frame: dict) -> str | None:
        """Send `frame` to `node` until it acknowledges it (taken once there, whatever the resends);
        None, or why it cannot go (the node is down). While the link reconnects it waits."""
        if node in self.down:
            return f"node {node} is down (noconnection)"
        seq = next(self._rseq)
        frame.update({"rs": seq, "rr": self._run})
        self._unacked[seq] = (node, frame)
        if self.ready:
            self.publish(node, frame)
        self.loop.after(RESEND_S, lambda: self._resend(seq))
        return None

    def _resend(self, seq: int) -> None:
        entry = self._unacked.get(seq)
        if entry is None:
            return
        node, frame = entry
        if node in self.down:  # what waited on it was failed by the down hooks
            del self._unacked[seq]
            return
        if self.ready and node in self.live:
            self.publish(node, frame)
        self.loop.after(RESEND_S, lambda: self._resend(seq))

    def _take_reliable(self, frame: dict) -> bool:
        """Acknowledge a reliable frame; False if it was taken before (a resend)."""
        sender, seq, run = str(frame["from"]), frame["rs"], str(frame.get("rr"))
        if not isinstance(seq, int):
            raise TypeError("rs")
        self.publish(sender, {"k": "rack", "rs": seq})
        order, seen = self._taken.setdefault((sender, run), (deque(), set()))
        if seq in seen:
            return False
        order.append(seq)
        seen.add(seq)
        if len(order) > DEDUP_WINDOW:
            seen.discard(order.popleft())
        return True

    def names_put(self, actor_id: str, name: str, path: str, incarnation: int) -> None:
        body = {"actor_id": actor_id, "name": name, "path": path, "incarnation": incarnation}
        self._local[actor_id] = body
        if self.ready:
            self._tell("names_put", body)

    def names_delete(self, actor_id: str, name: str, path: str) -> None:
        if self._local.pop(actor_id, None) is not None and self.ready:
            self._tell("names_delete", {"actor_id": actor_id, "name": name, "path": path})

    # ---- from the link ------------------------------------------------------------------------------

    def on_message(self, env: Envelope) -> None:
        body = env.body
        if env.kind == "remote_in" and isinstance(body, dict):
            sender = body.get("from")
            if isinstance(sender, str) and sender in self.down:  # a frame from it is as good as a heartbeat
                self._node_up(sender)
            if body.get("k") == "rack":
                if isinstance(body.get("rs"), int):
                    self._unacked.pop(body["rs"], None)
                return
            handler = self.frame_handlers.get(str(body.get("k")))
            if handler is None:
                self._drop(f"unknown frame kind {str(body.get('k'))[:40]!r} from node {str(body.get('from'))[:40]}")
                return
            try:
                if "rs" in body and not self._take_reliable(body):
                    return
                handler(body)
            except (KeyError, TypeError, ValueError) as exc:  # a frame from another node that is not well formed
                self._drop(f"malformed {body.get('k')!r} frame from node {str(body.get('from'))[:40]}: {exc!r}")
        elif env.kind == "names" and isinstance(body, list):
            for item in body:
                if isinstance(item, list) and len(item) == 2 and isinstance(item[0], str):
                    self.names.update(item[0], item[1] if isinstance(item[1], dict) else None)
        elif env.kind == "node_down" and isinstance(body, dict):
            node = str(body.get("node"))
            self.down.add(node)
            self.live.discard(node)
            for hook in self.down_hooks:
                hook(node)
        elif env.kind == "node_up" and isinstance(body, dict):
            self._node_up(str(body.get("node")))
        elif env.kind == "link_ready":
            self.ready = True
            self.failures = 0
            for name_body in self._local.values():  # a new link (or NATS back): the table hears them again
                self._tell("names_put", name_body)
            log.info("cluster link ready: node %s on %s", self.me, self.settings.url)
            self.on_change()
        elif env.kind == "not_carried" and isinstance(body, dict) and isinstance(body.get("frame"), bytes):
            try:
                lost = msgpack.unpackb(body["frame"], raw=False)
            except Exception:  # our own frame: cannot be malformed, but the link's word is not trusted blindly
                return
            if isinstance(lost, dict):
                log.warning("a %s frame for node %s was not carried: %s", lost.get("k"), body.get("node"),
                            body.get("why"))
                carried_hook = self.not_carried_hooks.get(str(lost.get("k")))
                if carried_hook is not None:
                    carried_hook(lost, f"could not reach node {body.get('node')}: {body.get('why')}")
        elif env.kind == "replica" and isinstance(body, dict):
            self.replica = body
        elif env.kind == "foreign" and isinstance(body, dict) and isinstance(body.get("count"), int):
            self.foreign = body["count"]
        elif env.kind == "link_error" and isinstance(body, dict):
            self.give_up(str(body.get("why", "the cluster link failed")))
        else:
            log.error("dropped %r from the cluster link", env.kind[:80])

    def _node_up(self, node: str) -> None:
        self.down.discard(node)
        self.live.add(node)
        for hook in self.up_hooks:
            hook(node)

    def _drop(self, why: str) -> None:
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.warning("dropped a frame from the cluster: %s (%d so far)", why, self.dropped)

    def resolve(self, ref: str) -> RemoteActor | str:
        """The remote actor `ref` names, or why none (its node is down counts as none)."""
        found = self.names.resolve(ref)
        if isinstance(found, RemoteActor) and found.node in self.down:
            return f"actor {found.path} is on node {found.node}, which is down (noconnection)"
        return found


__all__ = ["ClusterLink", "FrameHandler", "LINK_RETRY", "RemoteActor", "RemoteNames"]
