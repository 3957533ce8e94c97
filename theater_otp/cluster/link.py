"""The cluster link: the one process through which a node talks to NATS (docs/cluster.md).

It is to NATS what the HTTP gateway is to HTTP: the node starts it, it connects
to the node's router with a token identity, and everything network-shaped
(connecting, reconnecting, heartbeats, the global name table, other nodes'
frames, control requests from other machines) happens here, in asyncio, so the
node's loop never waits on the network and a NATS fault costs this process at
most (the node starts it again).

Frames with the node (Envelope kinds):
  node -> link  `publish` {node, frame}: a frame for another node's `.in` subject
                `names_put` {actor_id, name, path, incarnation} / `names_delete` {actor_id, name, path}
                `bye`: the node stops; the link says goodbye on NATS and exits 0
  link -> node  `link_ready` {node}, `link_error` {why} (then it exits 2)
                `not_carried` {node, frame, why}: a `publish` NATS refused (too big, closed)
                `remote_in` {frame}: a frame another node published for this one
                `names` [[actor_id, record-or-None], ...]: the global table changed
                `node_down` {node} / `node_up` {node}

Frames between nodes are msgpack maps with at least `k` (kind) and `from` (node name).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time
from dataclasses import dataclass
from typing import Any

import msgpack
import zmq
import zmq.asyncio

from ..home import Home
from ..proc import child_signals, die_with_parent, flush_and_exit, setup_child_logging
from ..protocol import Envelope, ProtocolError, decode, encode
from . import names as nm

log = logging.getLogger("theater_otp.cluster")

#: Every node publishes a heartbeat this often...
HEARTBEAT_S = 0.25
#: ...and one silent for this long is down (its hosted children exit with `noconnection`).
DOWN_AFTER_S = 1.5
#: `up --cluster` gives up on a server that does not answer within this.
CONNECT_TIMEOUT_S = 5.0
#: How often the link tells the node how far the chains' copy on JetStream is behind.
REPLICA_REPORT_S = 1.0
#: A heartbeat with this payload says the node is leaving.
BYE = b"bye"
#: Under this server max_payload, a message of an actor's default message_bytes (1 MiB) with its
#: envelope, or its chain event, cannot cross: the link says so when it connects.
MIN_PAYLOAD = 2 * 1024 * 1024
#: Every node's heartbeat subject.
HEARTBEATS = "theater.hb.*"
#: Most bytes of one frame from another node (bigger ones are dropped and counted).
MAX_REMOTE_FRAME = 64 << 20
EXIT_LINK_ERROR = 2


@dataclass(frozen=True)
class LinkConfig:
    """What the node hands its link at start (pickled through the forkserver, never on argv)."""

    home: Home
    node_pid: int
    url: str
    node_name: str
    #: the link's identity on the node's router (protocol/trust.py)
    identity: bytes
    connect_timeout_s: float = CONNECT_TIMEOUT_S


class Link:
    """One node's NATS connection, its heartbeat, the global names it mirrors, and its frames."""

    def __init__(self, cfg: LinkConfig):
        self.cfg = cfg
        self.ctx = zmq.asyncio.Context()
        self.node = self.ctx.socket(zmq.DEALER)
        self.node.setsockopt(zmq.IDENTITY, cfg.identity)
        self.node.setsockopt(zmq.LINGER, 1000)
        self.node.setsockopt(zmq.SNDHWM, 0)
        self.node.setsockopt(zmq.RCVHWM, 0)
        self.node.connect(cfg.home.router_endpoint)
        self.nc: Any = None
        self.names_kv: Any = None
        self.nodes_kv: Any = None
        #: other nodes by name -> monotonic time of their last heartbeat
        self.seen: dict[str, float] = {}
        self.down: set[str] = set()
        #: frames from other nodes that were not ours (bad msgpack, no kind, too big)
        self.dropped = 0
        self.stopping = asyncio.Event()
        self.tasks: list[asyncio.Task] = []

    # ---- to the node ----------------------------------------------------------------------------

    async def tell(self, kind: str, body: Any) -> None:
        await self.node.send(encode(Envelope(kind, "link", "node", 0, body)))

    # ---- start ----------------------------------------------------------------------------------

    async def run(self) -> int:
        import nats
        from nats.js.errors import BucketNotFoundError

        cfg = self.cfg
        try:
            self.nc = await asyncio.wait_for(
                nats.connect(servers=[cfg.url], name=f"theater-otp {cfg.node_name}", connect_timeout=2,
                             allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                             error_cb=self._nats_error, disconnected_cb=self._disconnected,
                             reconnected_cb=self._reconnected),
                cfg.connect_timeout_s)
        except (asyncio.TimeoutError, OSError, Exception) as exc:  # nats-py raises many kinds for "no server"
            return await self._fail(f"cannot reach NATS at {cfg.url} within {cfg.connect_timeout_s:.0f} s "
                                    f"({type(exc).__name__}{': ' + str(exc) if str(exc) else ''})")
        if self.nc.max_payload < MIN_PAYLOAD:
            log.warning("NATS at %s takes messages up to %d bytes: a frame or chain event bigger than that "
                        "cannot cross (set max_payload to %d or more; `theater-otp nats` does)", cfg.url,
                        self.nc.max_payload, MIN_PAYLOAD)
        js = self.nc.jetstream(timeout=5)
        try:
            self.nodes_kv = await self._bucket(js, nm.NODES_BUCKET, BucketNotFoundError)
            self.names_kv = await self._bucket(js, nm.NAMES_BUCKET, BucketNotFoundError)
        except Exception as exc:  # JetStream off on that server, or a stream with other settings
            return await self._fail(f"NATS at {cfg.url} has no usable JetStream ({type(exc).__name__}: {exc}); "
                                    f"start the server with -js (`theater-otp nats` does)")
        taken = await self._claim_name()
        if taken is not None:
            return await self._fail(taken)
        await self.nc.subscribe(nm.subject_in(cfg.node_name), cb=self._on_in)
        await self.nc.subscribe(nm.subject_ctl(cfg.node_name), cb=self._on_ctl)
        await self.nc.subscribe(HEARTBEATS, cb=self._on_heartbeat)
        await self.nc.flush()
        watcher = await self.names_kv.watchall()
        self.tasks = [asyncio.create_task(self._heartbeat()), asyncio.create_task(self._liveness()),
                      asyncio.create_task(self._mirror(watcher)), asyncio.create_task(self._from_node())]
        # one heartbeat period and a half: every live node has been heard (node_up) before the
        # node starts its tree, so a `node = "any"` child placed at boot sees them all
        await asyncio.sleep(HEARTBEAT_S * 1.5)
        await self.tell("link_ready", {"node": cfg.node_name, "url": cfg.url})
        self.tasks.append(asyncio.create_task(self._replicate()))
        log.info("cluster link for %s connected to %s", cfg.node_name, cfg.url)
        await self.stopping.wait()
        for task in self.tasks:
            task.cancel()
        await self._goodbye()
        return 0

    async def _bucket(self, js: Any, name: str, not_found: type[Exception]) -> Any:
        try:
            return await js.key_value(name)
        except not_found:
            return await js.create_key_value(bucket=name, history=1)

    async def _fail(self, why: str) -> int:
        log.error("%s", why)
        await self.tell("link_error", {"why": why})
        await asyncio.sleep(0.05)  # let the frame leave before the exit
        return EXIT_LINK_ERROR

    async def _claim_name(self) -> str | None:
        """Take this node's key in the nodes bucket; None, or why not (a live node holds it)."""
        from nats.js.errors import KeyWrongLastSequenceError

        cfg = self.cfg
        record = nm.NodeRecord(cfg.node_name, cfg.node_pid, socket.gethostname(), time.time_ns(),
                               int(HEARTBEAT_S * 1000)).to_bytes()
        key = nm.node_key(cfg.node_name)
        try:
            await self.nodes_kv.create(key, record)
            return None
        except KeyWrongLastSequenceError:
            pass
        entry = await self.nodes_kv.get(key)
        holder = nm.NodeRecord.from_bytes(entry.value or b"")
        if await self._alive(cfg.node_name):
            who = f" (pid {holder.pid} on {holder.host})" if holder is not None else ""
            return f"node name {cfg.node_name!r} is taken by a live node{who} on {cfg.url}: pick another --node-name"
        await self.nodes_kv.update(key, record, last=entry.revision)  # its holder is gone: ours now
        return None

    async def _alive(self, node: str) -> bool:
        """Whether `node` sends heartbeats (listened to for DOWN_AFTER_S)."""
        beat = asyncio.Event()

        async def heard(msg: Any) -> None:
            beat.set()

        sub = await self.nc.subscribe(nm.subject_hb(node), cb=heard)
        try:
            await asyncio.wait_for(beat.wait(), DOWN_AFTER_S)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            await sub.unsubscribe()

    # ---- chains off the box (cluster/replica.py) -------------------------------------------------

    async def _replicate(self) -> None:
        """Copy every stored event of this node's chain.db to JetStream, and tell the node how far
        behind the copy is (`tree` shows it) once a second."""
        from .replica import Replicator

        def problem(actor_id: str, why: str) -> None:
            log.error("chain %s is no longer replicated: %s", actor_id, why)

        replicator = Replicator(self.cfg.home, self.cfg.node_name, nc=self.nc, on_problem=problem)
        task = asyncio.create_task(replicator.run(self.stopping))
        try:
            while not task.done():
                await asyncio.sleep(REPLICA_REPORT_S)
                await self.tell("replica", {"lag": replicator.lag, "acked_events": replicator.acked_events,
                                            "stopped_chains": len(replicator.problems)})
            task.result()
        except asyncio.CancelledError:
            task.cancel()
            raise

    # ---- heartbeats -----------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        subject = nm.subject_hb(self.cfg.node_name)
        while True:
            if self.nc.is_connected:
                try:
                    await self.nc.publish(subject, b"")
                except Exception as exc:  # reconnecting: the next beat tries again
                    log.debug("heartbeat not sent: %s", exc)
            await asyncio.sleep(HEARTBEAT_S)

    async def _on_heartbeat(self, msg: Any) -> None:
        node = msg.subject.rpartition(".")[2]
        if node == self.cfg.node_name:
            return
        if msg.data == BYE:  # it stopped on purpose: down now, not after DOWN_AFTER_S
            if node not in self.down and node in self.seen:
                self.down.add(node)
                log.info("node %s left the cluster", node)
                await self.tell("node_down", {"node": node})
            return
        first = node not in self.seen
        self.seen[node] = time.monotonic()
        if first or node in self.down:
            self.down.discard(node)
            log.info("node %s is %s", node, "up" if first else "up again")
            await self.tell("node_up", {"node": node})

    async def _liveness(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            now = time.monotonic()
            for node, at in list(self.seen.items()):
                if node not in self.down and now - at > DOWN_AFTER_S:
                    self.down.add(node)
                    log.warning("node %s sent no heartbeat for %.1f s: down", node, now - at)
                    await self.tell("node_down", {"node": node})

    # ---- names ----------------------------------------------------------------------------------

    async def _mirror(self, watcher: Any) -> None:
        """Every change of the names bucket goes to the node, in batches."""
        batch: list[list[Any]] = []
        while True:
            try:
                entry = await watcher.updates(timeout=0.05 if batch else 3600)
            except Exception:  # nats.errors.TimeoutError: a quiet moment; hand over what came
                entry = None
            if entry is not None:  # the bucket holds one key per actor id (the node indexes names, paths)
                record = None if entry.operation in ("DEL", "PURGE") else nm.NameRecord.from_bytes(entry.value or b"")
                batch.append([entry.key, None if record is None else dataclasses.asdict(record)])
                if len(batch) < 500:
                    continue
            if batch:
                await self.tell("names", batch)
                batch = []

    async def _put_names(self, body: dict) -> None:
        record = nm.NameRecord(self.cfg.node_name, str(body["actor_id"]), str(body["path"]), str(body["name"]),
                               int(body["incarnation"]))
        data = record.to_bytes()
        await self.names_kv.put(nm.id_key(record.actor_id), data)

    async def _delete_names(self, body: dict) -> None:
        try:
            await self.names_kv.delete(nm.id_key(str(body["actor_id"])))
        except Exception as exc:  # already gone, or NATS away: the table heals when the node comes back
            log.debug("names delete: %s", exc)

    # ---- frames ---------------------------------------------------------------------------------

    async def _from_node(self) -> None:
        while True:
            frame = await self.node.recv()
            try:
                env = decode(frame, peer="node")
            except ProtocolError as exc:
                log.error("dropped a malformed frame from the node: %s", exc)
                continue
            body = env.body if isinstance(env.body, dict) else {}
            try:
                if env.kind == "publish":
                    try:
                        await self.nc.publish(nm.subject_in(str(body["node"])), body["frame"])
                    except Exception as exc:  # too big for the server, or the connection is closed
                        await self.tell("not_carried", {"node": body.get("node"), "frame": body.get("frame"),
                                                        "why": f"{type(exc).__name__}: {exc}"})
                        raise
                elif env.kind == "names_put":
                    await self._put_names(body)
                elif env.kind == "names_delete":
                    await self._delete_names(body)
                elif env.kind == "bye":
                    self.stopping.set()
                    return
                else:
                    log.error("dropped unknown frame %r from the node", env.kind[:80])
            except Exception as exc:  # one frame's failure (NATS away, bad body) costs that frame only
                log.warning("could not carry %r: %s: %s", env.kind, type(exc).__name__, exc)

    async def _on_in(self, msg: Any) -> None:
        data = msg.data
        frame = None
        if len(data) <= MAX_REMOTE_FRAME:
            try:
                frame = msgpack.unpackb(data, raw=False)
            except Exception:  # not ours: counted below
                frame = None
        if not isinstance(frame, dict) or not isinstance(frame.get("k"), str) or not isinstance(frame.get("from"), str):
            await self._foreign(msg.subject)
            return
        await self.tell("remote_in", frame)

    async def _foreign(self, subject: str) -> None:
        """A frame on one of our subjects that is not ours: dropped, counted, the count told to the
        node (`tree` shows it)."""
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.warning("dropped a frame on %s that is not ours (%d so far)", subject, self.dropped)
        await self.tell("foreign", {"count": self.dropped})

    async def _on_ctl(self, msg: Any) -> None:
        """A control command from another machine, answered by this node's control socket."""
        try:
            request = msgpack.unpackb(msg.data, raw=False)
            kind, args = str(request["kind"]), request.get("body") or {}
        except Exception:  # not ours
            await self._foreign(msg.subject)
            return
        answer = await self._control(kind, args)
        if msg.reply:
            await self.nc.publish(msg.reply, msgpack.packb(answer, use_bin_type=True))

    async def _control(self, kind: str, args: Any) -> dict:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.cfg.home.control_endpoint)
        try:
            await sock.send(encode(Envelope(kind, "cluster", "node", 1, args)))
            if not await sock.poll(10_000):
                return {"error": {"code": "timeout", "message": f"node {self.cfg.node_name} did not answer {kind!r}"}}
            env = decode(await sock.recv(), peer="node")
            if env.kind == "error":
                return {"error": env.body}
            return {"ok": env.body}
        finally:
            sock.close()

    # ---- NATS connection events -------------------------------------------------------------

    async def _nats_error(self, exc: Exception) -> None:
        log.warning("nats: %s: %s", type(exc).__name__, exc)

    async def _disconnected(self) -> None:
        if self.stopping.is_set():  # our own goodbye closes the connection
            return
        log.warning("disconnected from NATS at %s: reconnecting", self.cfg.url)

    async def _reconnected(self) -> None:
        log.info("reconnected to NATS at %s", self.cfg.url)

    async def _goodbye(self) -> None:
        try:
            await self.nc.publish(nm.subject_hb(self.cfg.node_name), BYE)
            await self.nodes_kv.delete(nm.node_key(self.cfg.node_name))
            await self.nc.drain()
        except Exception as exc:  # NATS away at the end: the others see the heartbeats stop
            log.debug("goodbye: %s", exc)


def link_main(cfg: LinkConfig) -> None:
    """The link process (a child of the node's forkserver): exits 0 when the node says `bye`,
    EXIT_LINK_ERROR when NATS cannot be used, 1 when the link itself failed (the node starts another)."""
    die_with_parent(cfg.node_pid)
    child_signals()
    setup_child_logging(cfg.home.log_file, "cluster-link")
    code = 1
    try:
        code = asyncio.run(Link(cfg).run())
    except Exception:  # the link itself failed: logged, the node starts a new one
        log.exception("cluster link failed")
    flush_and_exit(code)


__all__ = ["CONNECT_TIMEOUT_S", "DOWN_AFTER_S", "EXIT_LINK_ERROR", "HEARTBEAT_S", "Link", "LinkConfig", "link_main"]
