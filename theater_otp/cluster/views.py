"""Cluster views: one control command asked of every live node over NATS (docs/cluster.md).

`tree --cluster URL` and `list --cluster URL` use this instead of the local control socket. It
connects to NATS (giving up after CONNECT_TIMEOUT_S with an error naming the URL), reads the node
names from the `theater-nodes` bucket and sends the command to every node at once, on its
`theater.node.<node>.ctl` subject, where the node's cluster link answers it from the node's
control socket (cluster/link.py).

Each node's answer is `{"ok": RESULT}` or `{"error": {"code", "message"}}`. Besides the node's own
errors (code as the node gave it):

- `down`: nobody answers on the node's subject (its link is gone: the node was killed, or its
  link has not reconnected), or it did not answer within the timeout and sent no heartbeat in that
  time either. A node killed without its goodbye keeps its key in `theater-nodes` until a node
  with the same name claims it again; this module only reads the bucket, so such a node is listed
  as down, never waited on beyond the timeout;
- `timeout`: its link is alive (heartbeats) but no answer came within the timeout;
- `bad_reply`: an answer that is not a msgpack map with `ok` or `error`;
- `bad_key`: a key in the bucket that is not a node name (nothing to ask).

Importing this module loads nats-py: only `--cluster` command lines import it (the CLI's plain
`tree` stays fast).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack
import nats
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import BucketNotFoundError

from ..errors import TheaterError
from . import names as nm

#: Connecting to NATS and reading the nodes bucket each give up after this.
CONNECT_TIMEOUT_S = 5.0
#: How long each node has to answer, by default.
REQUEST_TIMEOUT_S = 3.0
#: Every node's heartbeat subject (cluster/link.py publishes on theater.hb.<node>).
_HEARTBEATS = "theater.hb.*"


class ClusterUnreachable(TheaterError):
    """No view of the cluster at all: NATS cannot be reached, or it has no usable JetStream."""


@dataclass
class Survey:
    """What `survey` found: each node's answer, and the record it keeps in `theater-nodes`."""

    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: dict[str, nm.NodeRecord] = field(default_factory=dict)

    @property
    def answered(self) -> list[str]:
        """The nodes that answered with a result, in name order."""
        return sorted(name for name, answer in self.answers.items() if "ok" in answer)


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _why(exc: BaseException) -> str:
    text = str(exc)
    return type(exc).__name__ + (f": {text}" if text else "")


async def _connect(url: str, timeout_s: float) -> Any:
    last: list[BaseException] = []

    async def quiet(exc: Exception) -> None:  # nats-py's default error callback logs each attempt
        last.append(exc)

    started = time.monotonic()
    try:
        # max_reconnect_attempts=1: nats-py (2.16) retries a first connect forever with 0
        return await asyncio.wait_for(
            nats.connect(servers=[url], name="theater-otp view", connect_timeout=min(2.0, timeout_s),
                         allow_reconnect=False, max_reconnect_attempts=1, reconnect_time_wait=0.1,
                         error_cb=quiet),
            timeout_s)
    except Exception as exc:  # nats-py raises many kinds for "no server": refused, DNS, timeout, bad URL
        cause = last[-1] if last else exc
        if isinstance(cause, TimeoutError):  # asyncio's too
            waited = time.monotonic() - started
            raise ClusterUnreachable(f"cannot reach NATS at {url}: no answer within {waited:.1f} s") from None
        raise ClusterUnreachable(f"cannot reach NATS at {url} ({_why(cause)})") from None


async def _read_nodes(nc: Any, url: str, timeout_s: float) -> dict[str, nm.NodeRecord | None]:
    """The keys of the nodes bucket, each with its record (None if the value is not one)."""
    js = nc.jetstream(timeout=timeout_s)
    try:
        kv = await js.key_value(nm.NODES_BUCKET)
    except BucketNotFoundError:  # no node ever joined through this server
        return {}
    except Exception as exc:
        raise ClusterUnreachable(f"NATS at {url} has no usable JetStream ({_why(exc)}); "
                                 f"is it the cluster's server (started with -js)?") from None
    watcher = await kv.watchall(ignore_deletes=True)
    found: dict[str, nm.NodeRecord | None] = {}
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClusterUnreachable(f"NATS at {url} did not list the {nm.NODES_BUCKET} bucket "
                                         f"within {timeout_s:.0f} s")
            try:
                entry = await watcher.updates(timeout=left)
            except NatsTimeout:
                continue  # the deadline check above ends it
            if entry is None:  # the watcher's marker: every current key was delivered
                return found
            if entry.operation in ("DEL", "PURGE"):
                found.pop(entry.key, None)
            else:
                found[entry.key] = nm.NodeRecord.from_bytes(entry.value or b"")
    finally:
        await watcher.stop()


async def _ask(nc: Any, node: str, request: bytes, timeout_s: float, heard: dict[str, float]) -> dict[str, Any]:
    if nm.valid_node_name(node) is not None:
        return _error("bad_key", f"{node!r} in {nm.NODES_BUCKET} is not a node name")
    subject = nm.subject_ctl(node)
    asked_at = time.monotonic()
    try:
        msg = await nc.request(subject, request, timeout=timeout_s)
    except NoRespondersError:
        return _error("down", f"node {node} is down: nothing answers on {subject} (its key in "
                              f"{nm.NODES_BUCKET} is stale)")
    except NatsTimeout:
        if heard.get(node, 0.0) < asked_at:
            return _error("down", f"node {node} is down: no answer and no heartbeat within {timeout_s:g} s")
        return _error("timeout", f"node {node} did not answer within {timeout_s:g} s (its link is alive)")
    except Exception as exc:  # the connection went away while asking
        return _error("unreachable", f"asking node {node} failed: {_why(exc)}")
    try:
        answer = msgpack.unpackb(msg.data, raw=False)
    except Exception:  # noqa: BLE001 - anything undecodable is simply not an answer
        answer = None
    if isinstance(answer, dict) and "ok" in answer:
        return {"ok": answer["ok"]}
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        error = answer["error"]
        return _error(str(error.get("code", "error")), str(error.get("message", "")))
    return _error("bad_reply", f"node {node} answered with something that is not a control reply")


async def survey(url: str, kind: str, body: Any, timeout_s: float = REQUEST_TIMEOUT_S,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S) -> Survey:
    """Send control command `kind` with `body` to every node in the `theater-nodes` bucket of the
    NATS server at `url`, all at once; each has `timeout_s` to answer. Raises ClusterUnreachable
    if NATS cannot be reached within `connect_timeout_s` or has no JetStream."""
    nc = await _connect(url, connect_timeout_s)
    try:
        heard: dict[str, float] = {}

        async def beat(msg: Any) -> None:
            heard[msg.subject.rpartition(".")[2]] = time.monotonic()

        await nc.subscribe(_HEARTBEATS, cb=beat)
        nodes = await _read_nodes(nc, url, connect_timeout_s)
        request = msgpack.packb({"kind": kind, "body": body}, use_bin_type=True)
        names = sorted(nodes)
        answers = await asyncio.gather(*(_ask(nc, node, request, timeout_s, heard) for node in names))
        records = {name: record for name, record in nodes.items() if record is not None}
        return Survey(answers=dict(zip(names, answers)), records=records)
    finally:
        try:
            await asyncio.wait_for(nc.close(), 2.0)
        except Exception:  # noqa: BLE001 - closing a connection that broke: nothing left to do
            pass


async def ask_all(url: str, kind: str, body: Any, timeout_s: float = REQUEST_TIMEOUT_S) -> dict[str, dict[str, Any]]:
    """Node name -> `{"ok": result}` or `{"error": {"code", "message"}}` for control command `kind`
    sent to every live node of the cluster at `url` (see `survey`)."""
    return (await survey(url, kind, body, timeout_s)).answers


def survey_sync(url: str, kind: str, body: Any, timeout_s: float = REQUEST_TIMEOUT_S) -> Survey:
    """`survey` for synchronous callers (the CLI)."""
    return asyncio.run(survey(url, kind, body, timeout_s))


def ask_all_sync(url: str, kind: str, body: Any, timeout_s: float = REQUEST_TIMEOUT_S) -> dict[str, dict[str, Any]]:
    """`ask_all` for synchronous callers."""
    return survey_sync(url, kind, body, timeout_s).answers


__all__ = ["CONNECT_TIMEOUT_S", "REQUEST_TIMEOUT_S", "ClusterUnreachable", "Survey", "ask_all", "ask_all_sync",
           "survey", "survey_sync"]
