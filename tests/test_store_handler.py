"""The store handler (handlers/store.py over contentstore.ContentStore) against a real component in
real trees: actors/wat/storeprobe.wat calls each theater:simple/store function by the first byte of a
request ('p' store, 'g' get, 'n' get -> size, 'e' exists, 'L' store-at-label, 'l' label, 'b'
get-by-label, 'r' remove-label, 'k' list-labels, 't' total size, 'i' its store id) and replies
"ERR:" + the host's err. Its state is its store id: `new`'s id, or the manifest's initial_state.

Covered: every round trip, errors that leave the actor running, the quota, persistence across a
SIGKILL restart and across down/up of the node, shared stores and their reach, the chain (hashes,
never contents), replay, and bad manifests refused by `validate` and `up`.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest

from harness import WAT, Tree, cli, write_manifest
from theater_otp.contentstore import ContentStore
from theater_otp.home import Home

pytestmark = pytest.mark.integration


def store_manifest(folder: Path, name: str, settings: str = "", initial_state: str | None = None) -> Path:
    path = folder / f"{name}.toml"
    state = f'initial_state = "{initial_state}"\n' if initial_state is not None else ""
    path.write_text(f'name = "{name}"\ncomponent = "{WAT / "storeprobe.wat"}"\n{state}\n'
                    f'[[handler]]\ntype = "store"\n{settings}\n')
    return path


def tree_of(*names: str) -> str:
    children = "".join(f'\n[[supervisor.children]]\nid = "{n}"\nmanifest = "{n}.toml"\n' for n in names)
    return f'[supervisor]\nid = "root"\nintensity = 10\nperiod = 10\n{children}'


def call(tree: Tree, target: str, op: str, arg: bytes | str = b"", data: bytes | str | None = None) -> bytes:
    """One request: op + arg (+ NUL + data for 'L' and 'l'); the actor's reply."""
    arg = arg.encode() if isinstance(arg, str) else arg
    data = data.encode() if isinstance(data, str) else data
    payload = op.encode() + arg + (b"\x00" + data if data is not None else b"")
    answer = tree.call("request", {"target": target, "payload": payload, "timeout_ms": 10000}, timeout_s=15)
    assert "ok" in answer, answer
    return answer["ok"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def total(tree: Tree, target: str) -> int:
    reply = call(tree, target, "t")
    assert len(reply) == 8, reply
    return struct.unpack("<Q", reply)[0]


def restarted(tree: Tree, path: str, old_pid: int) -> bool:
    n = tree.node(path)
    return n["pid"] not in (None, old_pid) and n["status"] == "running"


# ---- one tree: round trips, errors, quota, shared stores, restarts, the chain, replay ------------


def test_store_functions_errors_quota_sharing_persistence_chain_and_replay(tmp_path):
    store_manifest(tmp_path, "probe")
    store_manifest(tmp_path, "quota", "quota_bytes = 10")
    store_manifest(tmp_path, "teama", 'stores = ["team"]', initial_state="team")
    store_manifest(tmp_path, "teamb", 'stores = ["team", "other"]', initial_state="team")
    store_manifest(tmp_path, "outsider", 'stores = ["other"]', initial_state="team")
    supervision = tree_of("probe", "quota", "teama", "teamb", "outsider")
    payload = os.urandom(100).hex().encode()          # 200 distinctive bytes the actor stores
    placed = os.urandom(100).hex().encode()           # 200 bytes the actor only reads (never in a message)
    with Tree(tmp_path, supervision) as tree:
        pids = tree.wait_running()

        # -- the probe's own store, made by `new` in init: a UUID
        sid = call(tree, "probe", "i").decode()
        assert len(sid) == 36 and sid.count("-") == 4, sid

        # -- put / get / exists
        h = call(tree, "probe", "p", b"Hello")
        assert h == sha(b"Hello").encode()
        assert call(tree, "probe", "g", h) == b"Hello"
        assert call(tree, "probe", "n", h) == b"5"
        assert call(tree, "probe", "e", h) == b"1"
        assert call(tree, "probe", "e", sha(b"never stored")) == b"0"
        assert call(tree, "probe", "p", payload) == sha(payload).encode()
        assert call(tree, "probe", "g", sha(payload)) == payload
        empty = call(tree, "probe", "p")                              # empty content is content too
        assert empty == sha(b"").encode() and call(tree, "probe", "g", empty) == b""

        # -- labels
        assert call(tree, "probe", "k") == b""
        assert call(tree, "probe", "b", "notes") == b"none"
        notes = call(tree, "probe", "L", "notes", b"first note")
        assert notes == sha(b"first note").encode()
        assert call(tree, "probe", "b", "notes") == notes
        assert call(tree, "probe", "l", "greeting", h) == b"ok"
        assert call(tree, "probe", "b", "greeting") == h
        assert call(tree, "probe", "L", "notes", b"second note") == sha(b"second note").encode()
        assert call(tree, "probe", "b", "notes") == sha(b"second note").encode()     # the newest
        assert call(tree, "probe", "L", "a-first", b"x") == sha(b"x").encode()
        assert call(tree, "probe", "k") == b"a-first\ngreeting\nnotes"               # sorted
        assert call(tree, "probe", "r", "a-first") == b"ok"
        assert call(tree, "probe", "k") == b"greeting\nnotes"
        assert call(tree, "probe", "b", "a-first") == b"none"
        assert call(tree, "probe", "g", sha(b"x")) == b"x"                          # content stays

        # -- total size: distinct content once, however often it is stored
        size = 5 + 200 + 0 + len(b"first note") + len(b"second note") + 1
        assert total(tree, "probe") == size
        assert call(tree, "probe", "p", b"Hello") == h
        assert call(tree, "probe", "p", payload) == sha(payload).encode()
        assert call(tree, "probe", "L", "again", b"Hello") == h
        assert total(tree, "probe") == size

        # -- errors: an err for the actor, which keeps running
        unknown = sha(b"nobody stored this")
        assert call(tree, "probe", "g", unknown) == f"ERR:no content {unknown} in store {sid!r}".encode()
        assert call(tree, "probe", "g", "zz").startswith(b"ERR:not a content hash: 'zz'")
        assert call(tree, "probe", "e", h.upper()).startswith(b"ERR:not a content hash")
        assert call(tree, "probe", "l", "lbl", unknown).startswith(f"ERR:no content {unknown}".encode())
        assert call(tree, "probe", "r", "no-such-label") == f"ERR:no label 'no-such-label' in store {sid!r}".encode()
        assert call(tree, "probe", "L", "", b"data").startswith(b"ERR:label must not be empty")
        assert call(tree, "probe", "g", h) == b"Hello"
        assert call(tree, "probe", "?") == b"ERR:unknown op"

        # -- quota_bytes = 10: the 10th byte fits, the 11th is refused naming the quota
        qsid = call(tree, "quota", "i").decode()
        ten = b"0123456789"
        assert call(tree, "quota", "p", ten) == sha(ten).encode()
        answer = call(tree, "quota", "p", b"!")
        assert answer == (f"ERR:store {qsid!r} is over its quota of 10 bytes: it holds 10 bytes and storing "
                          f"1 more would make 11").encode(), answer
        assert b"quota of 10 bytes" in call(tree, "quota", "L", "lbl", b"!")
        assert call(tree, "quota", "k") == b""                                       # nothing half-done
        assert call(tree, "quota", "p", ten) == sha(ten).encode()                    # held already: free
        assert call(tree, "quota", "e", sha(b"!")) == b"0"
        assert total(tree, "quota") == 10

        # -- a shared store: both manifests name "team", both see one store
        assert call(tree, "teama", "i") == b"team" and call(tree, "teamb", "i") == b"team"
        shared = call(tree, "teama", "L", "board", b"team content")
        assert call(tree, "teamb", "g", shared) == b"team content"
        assert call(tree, "teamb", "b", "board") == shared
        assert call(tree, "teamb", "p", b"from b") == sha(b"from b").encode()
        assert call(tree, "teama", "g", sha(b"from b")) == b"from b"
        assert total(tree, "teama") == total(tree, "teamb") == len(b"team content") + len(b"from b")
        # the probe's own store is not the team's, and the reverse
        assert call(tree, "teama", "e", h) == b"0"
        assert call(tree, "probe", "e", shared) == b"0"
        # a manifest that does not name "team" cannot reach it, whatever its state says
        assert call(tree, "outsider", "i") == b"team"
        for op, arg in (("p", b"sneak"), ("g", shared), ("e", shared), ("b", b"board"), ("k", b""), ("t", b"")):
            answer = call(tree, "outsider", op, arg)
            assert answer.startswith(b"ERR:store 'team' is not reachable"), (op, answer)
            assert b"names in the store handler's `stores` (it names 'other')" in answer, answer
        assert call(tree, "teama", "e", sha(b"sneak")) == b"0"

        # content placed in the shared store from outside: the actor reads it, no message carries it
        with ContentStore(Home.at(tree.home).store_db) as db:
            assert db.put("team", placed) == sha(placed)
        assert call(tree, "teama", "n", sha(placed)) == b"200"

        # nothing died, nothing restarted
        assert tree.pids() == pids

        # -- the chain: content by hash and size, never the bytes
        probe_id = tree.node("root/probe")["actor_id"]
        events = tree.events(probe_id)
        host = [e for e in events if e.event_type.startswith("host.store.")]
        assert {e.event_type for e in host} == {f"host.store.{f}" for f in (
            "new", "store", "get", "exists", "label", "get-by-label", "remove-label", "store-at-label",
            "list-labels", "calculate-total-size")}
        stores = [e.payload() for e in host if e.event_type == "host.store.store"]
        assert stores[0] == {"args": [sid, {"sha256": h.decode(), "size": 5}], "result": {"ok": {"hash": h.decode()}}}
        assert stores[1]["args"][1] == {"sha256": sha(payload), "size": 200}
        gets = [e.payload() for e in host if e.event_type == "host.store.get"]
        assert gets[0] == {"args": [sid, {"hash": h.decode()}], "result": {"ok": {"sha256": h.decode(), "size": 5}}}
        assert {"args": [sid, {"hash": sha(payload)}], "result": {"ok": {"sha256": sha(payload), "size": 200}}} \
            in gets
        assert {"args": [sid, {"hash": unknown}], "result": {"err": f"no content {unknown} in store {sid!r}"}} \
            in gets
        (at_label, *_) = [e.payload() for e in host if e.event_type == "host.store.store-at-label"]
        assert at_label["args"] == [sid, "notes", {"sha256": sha(b"first note"), "size": 10}]
        for e in host:
            assert payload not in e.data, e.event_type
        # what the team actor only read: in no event of its chain, nor anywhere in chain.db
        team_id = tree.node("root/teama")["actor_id"]
        team_events = tree.events(team_id)
        (placed_get,) = [e.payload() for e in team_events if e.event_type == "host.store.get"
                         and e.payload()["args"][1] == {"hash": sha(placed)}]
        assert placed_get["result"] == {"ok": {"sha256": sha(placed), "size": 200}}
        for e in team_events:
            assert placed not in e.data, e.event_type
        chain_db = Home.at(tree.home).chain_db
        for f in (chain_db, Path(f"{chain_db}-wal")):
            if f.exists():
                assert placed not in f.read_bytes(), f

        # -- replay: get is served from store.db by hash; every result kind revives
        for name in ("probe", "teama", "quota"):
            out = cli("replay", name, "--json", home=tree.home)
            assert out.returncode == 0, out.stdout + out.stderr
            result = json.loads(out.stdout)
            assert result["match"] is True and result["replayed"] > 1, (name, result)

        # -- SIGKILL: the restarted incarnation starts from initial_state = "team", and finds the content
        old = tree.kill("root/teama")
        tree.wait_for(lambda: restarted(tree, "root/teama", old), what="the restart of teama")
        assert call(tree, "teama", "i") == b"team"
        assert call(tree, "teama", "g", shared) == b"team content"
        assert call(tree, "teama", "b", "board") == shared
        assert call(tree, "teama", "n", sha(placed)) == b"200"

    # -- down, then up on the same home: the shared store and everything in store.db are still there
    with Tree(tmp_path, supervision) as tree:
        tree.wait_running()
        assert call(tree, "teamb", "g", shared) == b"team content"
        assert call(tree, "teama", "g", sha(b"from b")) == b"from b"
        assert call(tree, "teama", "k") == b"board"
        assert total(tree, "teama") == len(b"team content") + len(b"from b") + 200
        assert call(tree, "quota", "i").decode() != qsid            # a new incarnation: a fresh store
    with ContentStore(Home.at(tree.home).store_db) as db:         # the probe's first store is kept too
        assert db.get(sid, h.decode()) == b"Hello" and db.get(qsid, sha(ten)) == ten
    # replay with the node down: the first run's teama (both incarnations, its gets served from
    # store.db) and the second run's (a new actor id)
    for target, incarnations in ((team_id, [1, 2]), ("teama", [1])):
        out = cli("replay", target, "--json", home=tree.home)
        assert out.returncode == 0, out.stdout + out.stderr
        result = json.loads(out.stdout)
        assert result["match"] is True and result["incarnations"] == incarnations, result
    # a home without store.db: replay says what it needs, and writes nothing into the home
    store_db = Home.at(tree.home).store_db
    for f in store_db.parent.glob(store_db.name + "*"):
        f.rename(tmp_path / f.name)
    out = cli("replay", team_id, home=tree.home)
    assert out.returncode == 1
    assert f"store content {sha(b'from b')} cannot be served: replay needs the home the actor ran in " \
           f"(its store.db)" in out.stdout, out.stdout + out.stderr
    assert not list(store_db.parent.glob(store_db.name + "*"))


# ---- manifests ----------------------------------------------------------------------------------


BAD = [
    ("neg", "quota_bytes = -1", "handler[0].quota_bytes", "-1 is not valid: expected an integer >= 0"),
    ("word", 'quota_bytes = "big"', "handler[0].quota_bytes", "'big' is not valid: expected an integer >= 0"),
    ("str", 'stores = "team"', "handler[0].stores", "'team' is not valid: expected a list of strings"),
    ("unknown", "quota = 3", "handler[0].quota", "unknown setting 'quota': expected quota_bytes, stores"),
]


def test_validate_and_up_refuse_bad_settings_and_a_component_without_the_grant(tmp_path):
    for name, settings, key, text in BAD:
        manifest = store_manifest(tmp_path, name, settings)
        proc = cli("validate", str(manifest))
        assert proc.returncode == 1, (name, proc.stdout, proc.stderr)
        assert f"{manifest}:6: " in proc.stderr and key in proc.stderr and text in proc.stderr, proc.stderr
    # and `up` refuses the tree before starting anything
    (tmp_path / "supervision.toml").write_text(tree_of("neg"))
    proc = cli("up", str(tmp_path / "supervision.toml"), "--detach", home=tmp_path / "home")
    assert proc.returncode == 1, proc.stderr
    assert f"{tmp_path / 'neg.toml'}:6: " in proc.stderr and "quota_bytes" in proc.stderr, proc.stderr

    write_manifest(tmp_path, "bare", "storeprobe.wat")     # imports theater:simple/store, grants nothing
    proc = cli("validate", str(tmp_path / "bare.toml"))
    assert proc.returncode == 1 and 'add `[[handler]] type = "store"` to the manifest' in proc.stderr, proc.stderr
    (tmp_path / "supervision.toml").write_text(tree_of("bare"))
    proc = cli("up", str(tmp_path / "supervision.toml"), "--detach", home=tmp_path / "home2")
    assert proc.returncode != 0
    assert "component imports theater:simple/store but the manifest does not grant it" in proc.stderr, proc.stderr
    assert 'add `[[handler]] type = "store"` to the manifest' in proc.stderr
