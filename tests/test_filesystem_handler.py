"""The filesystem handler (handlers/filesystem.py over sandboxfs.SandboxFS) against a real component
in real trees: actors/wat/fsprobe.wat calls each theater:simple/filesystem function by the first byte
of a request ('r' read, 'n' read -> size, 'w'/'a' path NUL data, 'x'/'f'/'d' exists/is-file/is-dir,
'c'/'u'/'v' create-dir/remove-file/remove-dir, 'l' list-dir, 'm' metadata) and replies "ERR:" + the
host's err.

Hostile requests (path traversal through every function, symlinks out of the base, a symlink to
/dev/zero, a FIFO, a write past the quota, read_only, allowed_commands) each get an ERR naming the
path and the rule, and nothing else happens: the actor, the node and a neighbour keep running and the
node's memory does not move. The chain holds contents as hash and size (small ones inline too), and
replay serves reads from the node's store without the directory.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sqlite3
from pathlib import Path

import psutil
import pytest

from harness import WAT, Tree, cli, write_manifest
from theater_otp.config.loader import load_manifest
from theater_otp.contentstore import ContentStore
from theater_otp.errors import ConfigError
from theater_otp.home import Home
from theater_otp.worker.handlers.filesystem import DEFAULT_MAX_READ_BYTES, FilesystemSettings

pytestmark = pytest.mark.integration

OPS = "rnwaxfdcuvlm"  # every filesystem function, through fsprobe's opcodes ('r' and 'n' both read)


def fs_manifest(folder: Path, name: str, settings: str, wat: str = "fsprobe.wat") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(f'name = "{name}"\ncomponent = "{WAT / wat}"\n\n[[handler]]\ntype = "filesystem"\n'
                    f'{settings}\n')
    return path


def tree_of(*names: str) -> str:
    children = "".join(f'\n[[supervisor.children]]\nid = "{n}"\nmanifest = "{n}.toml"\n' for n in names)
    return f'[supervisor]\nid = "root"\nintensity = 10\nperiod = 10\n{children}'


def req(tree: Tree, target: str, op: str, path: str = "", data: bytes | None = None) -> bytes:
    payload = op.encode() + path.encode() + (b"\x00" + data if data is not None else b"")
    answer = tree.call("request", {"target": target, "payload": payload, "timeout_ms": 10000}, timeout_s=15)
    assert "ok" in answer, answer
    return answer["ok"]


def call(tree: Tree, target: str, op: str, path: str = "", data: bytes = b"") -> bytes:
    """One filesystem call; 'w' and 'a' carry `data`."""
    return req(tree, target, op, path, data if op in "wa" else None)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- round trips and hostile requests ---------------------------------------------------------


def test_every_function_round_trips_and_every_hostile_request_is_an_err_that_harms_nothing(tmp_path):
    base, ro_base, lim_base, outside = (tmp_path / d for d in ("base", "ro_base", "lim_base", "outside"))
    for d in (base, ro_base, lim_base, outside / "dir"):
        d.mkdir(parents=True)
    (ro_base / "hello.txt").write_bytes(b"read me")
    (outside / "secret.txt").write_bytes(b"TOP SECRET")
    (outside / "dir" / "inner.txt").write_bytes(b"inner")
    fs_manifest(tmp_path, "probe", 'path = "base"\nquota_bytes = 65536')
    fs_manifest(tmp_path, "ro", 'path = "ro_base"\nread_only = true')
    fs_manifest(tmp_path, "limited", 'path = "lim_base"\nallowed_commands = ["read", "create-dir"]')
    fs_manifest(tmp_path, "nd", "new_dir = true")
    write_manifest(tmp_path, "echo", "echo.wat")
    with Tree(tmp_path, tree_of("probe", "ro", "limited", "nd", "echo")) as tree:
        tree.wait_running()

        # -- every function, round trip through the real actor and the real directory
        assert call(tree, "probe", "w", "notes.txt", b"hello") == b"ok"
        assert call(tree, "probe", "a", "notes.txt", b" world") == b"ok"
        assert (base / "notes.txt").read_bytes() == b"hello world"
        assert call(tree, "probe", "r", "notes.txt") == b"hello world"
        assert call(tree, "probe", "n", "notes.txt") == b"11"
        assert call(tree, "probe", "x", "notes.txt") == b"1"
        assert call(tree, "probe", "x", "nothing") == b"0"
        assert call(tree, "probe", "f", "notes.txt") == b"1"
        assert call(tree, "probe", "d", "notes.txt") == b"0"
        assert call(tree, "probe", "c", "sub/deeper") == b"ok"
        assert (base / "sub" / "deeper").is_dir()
        assert call(tree, "probe", "d", "sub") == b"1"
        assert call(tree, "probe", "f", "sub") == b"0"
        assert call(tree, "probe", "w", "sub/deeper/f.bin", b"xyz") == b"ok"
        assert call(tree, "probe", "l", "") == b"notes.txt\nsub/"
        assert call(tree, "probe", "l", "sub") == b"deeper/"
        assert call(tree, "probe", "l", "sub/deeper") == b"f.bin"
        assert call(tree, "probe", "m", "notes.txt") == b"size=11 file=1 dir=0"
        assert call(tree, "probe", "m", "sub") == b"size=0 file=0 dir=1"
        assert call(tree, "probe", "r", "missing") == b'ERR:"missing": No such file or directory'
        assert call(tree, "probe", "u", "sub").startswith(b'ERR:"sub": Is a directory')
        assert call(tree, "probe", "u", "notes.txt") == b"ok"
        assert call(tree, "probe", "x", "notes.txt") == b"0"
        assert call(tree, "probe", "v", "sub") == b"ok"
        assert call(tree, "probe", "l", "") == b""
        assert sorted(os.listdir(base)) == []

        # -- the hostile part: measure, then attack
        pids = tree.pids()
        node = psutil.Process(tree.node_pid)
        rss_before = node.memory_info().rss

        # path traversal, through every function
        for path in ("../x", "a/../../x", "/etc/passwd"):
            for op in OPS:
                answer = call(tree, "probe", op, path, b"owned")
                assert answer.startswith(f"ERR:{json.dumps(path)}: refused: ".encode()), (op, path, answer)
                rule = b"absolute paths are not allowed" if path.startswith("/") else b"leaves the actor's directory"
                assert rule in answer, (op, path, answer)
        assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()

        # symlinks out of the base: to a file and to a directory, through every function
        os.symlink(outside / "secret.txt", base / "link_file")
        os.symlink(outside / "dir", base / "link_dir")
        for path in ("link_file", "link_dir", "link_dir/inner.txt", "link_dir/new"):
            for op in OPS:
                answer = call(tree, "probe", op, path, b"owned")
                assert answer.startswith(f"ERR:{json.dumps(path)}: refused: ".encode()), (op, path, answer)
                assert b"is a symbolic link, and symbolic links are never followed" in answer, (op, path, answer)
        assert (outside / "secret.txt").read_bytes() == b"TOP SECRET"
        assert sorted(os.listdir(outside / "dir")) == ["inner.txt"]
        assert (outside / "dir" / "inner.txt").read_bytes() == b"inner"
        # listing the base names the links but calls neither a file nor a directory
        assert call(tree, "probe", "l", "") == b"link_dir\nlink_file"

        # a symlink to /dev/zero and a FIFO: refused at once, never read (a FIFO would block)
        os.symlink("/dev/zero", base / "zero")
        os.mkfifo(base / "fifo")
        for op, path, rule in (("r", "zero", b"symbolic link"), ("n", "zero", b"symbolic link"),
                               ("r", "fifo", b"is a FIFO"), ("n", "fifo", b"is a FIFO"),
                               ("a", "fifo", b"is a FIFO"), ("w", "fifo", b"is a FIFO"),
                               ("u", "fifo", b"is a FIFO")):
            # an opened FIFO with no peer blocks: the call would never answer (its request times out)
            answer = call(tree, "probe", op, path, b"data")
            assert answer.startswith(f"ERR:{json.dumps(path)}: refused: ".encode()) and rule in answer, answer
            # and nothing is left holding it open for reading (a writer finds no reader: ENXIO)
            with pytest.raises(OSError) as no_reader:
                os.close(os.open(base / "fifo", os.O_WRONLY | os.O_NONBLOCK))
            assert no_reader.value.errno == errno.ENXIO
        assert call(tree, "probe", "m", "fifo") == b"size=0 file=0 dir=0"   # metadata never opens it

        # past the quota: refused naming it, nothing written (no file, no temporary file left)
        answer = call(tree, "probe", "w", "big.bin", b"B" * 70_000)
        assert answer.startswith(b'ERR:"big.bin": refused: ') and b"over its quota of 65536 bytes" in answer
        answer = call(tree, "probe", "a", "big.bin", b"B" * 70_000)
        assert b"over its quota of 65536 bytes" in answer
        assert sorted(os.listdir(base)) == ["fifo", "link_dir", "link_file", "zero"]
        assert call(tree, "probe", "w", "fits.bin", b"F" * 60_000) == b"ok"
        assert b"quota of 65536 bytes" in call(tree, "probe", "a", "fits.bin", b"F" * 6_000)
        assert (base / "fits.bin").read_bytes() == b"F" * 60_000
        assert call(tree, "probe", "u", "fits.bin") == b"ok"

        # read_only: reads work, every write and delete is refused, the file is untouched
        assert call(tree, "ro", "r", "hello.txt") == b"read me"
        assert call(tree, "ro", "l", "") == b"hello.txt"
        for op, path in (("w", "hello.txt"), ("a", "hello.txt"), ("c", "new"), ("u", "hello.txt"), ("v", "new")):
            answer = call(tree, "ro", op, path, b"changed")
            assert answer.startswith(f"ERR:{json.dumps(path)}: refused: the filesystem is read-only".encode()), answer
        assert (ro_base / "hello.txt").read_bytes() == b"read me" and sorted(os.listdir(ro_base)) == ["hello.txt"]

        # allowed_commands = ["read", "create-dir"]: the write and delete groups are refused
        assert call(tree, "limited", "c", "made") == b"ok"
        assert call(tree, "limited", "d", "made") == b"1"
        for op, name, group in (("w", "write-file", "write"), ("a", "append-file", "write"),
                                ("u", "remove-file", "delete"), ("v", "remove-dir", "delete")):
            answer = call(tree, "limited", op, "made", b"x")
            assert answer == (f'ERR:"made": refused: {name} is not allowed (allowed_commands grants neither '
                              f"'{name}' nor '{group}')").encode(), answer
        assert sorted(os.listdir(lim_base)) == ["made"]

        # nothing died, nothing restarted, everyone still answers, the node did not grow
        assert tree.pids() == pids
        assert tree.call("request", {"target": "echo", "payload": b"still here", "timeout_ms": 5000}) == \
            {"ok": b"still here"}
        assert call(tree, "probe", "w", "after.txt", b"fine") == b"ok"
        assert call(tree, "probe", "r", "after.txt") == b"fine"
        assert node.is_running()
        grown = node.memory_info().rss - rss_before
        assert grown < 4 * 1024 * 1024, f"the node's RSS grew by {grown} bytes during the hostile requests"

        # -- new_dir: a directory under HOME/fs/<actor id>, kept across a SIGKILL restart
        assert call(tree, "nd", "w", "keep.txt", b"kept") == b"ok"
        actor_id = tree.node("root/nd")["actor_id"]
        made = list((tree.home / "fs" / actor_id).iterdir())
        assert len(made) == 1 and (made[0] / "keep.txt").read_bytes() == b"kept"
        assert made[0].name.startswith(actor_id + "-") and (made[0].stat().st_mode & 0o777) == 0o700
        first = tree.kill("root/nd")
        tree.wait_for(lambda: tree.node("root/nd")["pid"] not in (None, first)
                      and tree.node("root/nd")["status"] == "running", what="the restart of nd")
        assert tree.node("root/nd")["actor_id"] == actor_id
        assert call(tree, "nd", "r", "keep.txt") == b"kept"
        assert list((tree.home / "fs" / actor_id).iterdir()) == made


# ---- the chain, and replay without the directory ------------------------------------------------


def test_the_chain_holds_hashes_not_contents_and_replay_needs_the_home_not_the_directory(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    fs_manifest(tmp_path, "probe", 'path = "base"')
    small = b"tiny-10-by"
    written = os.urandom(5120).hex().encode()           # 10 KiB, distinctive
    placed = os.urandom(5120).hex().encode()            # 10 KiB the actor only reads (never in a message)
    with Tree(tmp_path, tree_of("probe")) as tree:
        tree.wait_running()
        assert call(tree, "probe", "w", "small.txt", small) == b"ok"
        assert call(tree, "probe", "w", "large.bin", written) == b"ok"
        assert call(tree, "probe", "r", "small.txt") == small
        assert call(tree, "probe", "r", "large.bin") == written
        (base / "placed.bin").write_bytes(placed)
        assert call(tree, "probe", "n", "placed.bin") == b"10240"
        # the rest of the interface, so replay revives each kind of result
        assert call(tree, "probe", "a", "small.txt", b"!") == b"ok"
        assert call(tree, "probe", "c", "d/e") == b"ok"
        assert call(tree, "probe", "l", "") == b"d/\nlarge.bin\nplaced.bin\nsmall.txt"
        assert call(tree, "probe", "m", "large.bin") == b"size=10240 file=1 dir=0"
        assert call(tree, "probe", "x", "d/e") + call(tree, "probe", "f", "d") + call(tree, "probe", "d", "d") \
            == b"101"
        assert call(tree, "probe", "v", "d") == b"ok"
        assert call(tree, "probe", "u", "small.txt") == b"ok"
        assert call(tree, "probe", "r", "../x").startswith(b"ERR:")
        assert call(tree, "probe", "m", "gone").startswith(b"ERR:")

        actor_id = tree.node("root/probe")["actor_id"]
        events = tree.events(actor_id)
        fs_events = [e for e in events if e.event_type.startswith("host.filesystem.")]
        assert {e.event_type for e in fs_events} == {f"host.filesystem.{f}" for f in (
            "write-file", "append-file", "read-file", "create-dir", "list-dir", "metadata", "exists", "is-file",
            "is-dir", "remove-dir", "remove-file")}
        writes = [e.payload() for e in fs_events if e.event_type == "host.filesystem.write-file"]
        assert writes[0]["args"] == ["small.txt", {"sha256": sha(small), "size": 10, "inline": small}]
        assert writes[1]["args"] == ["large.bin", {"sha256": sha(written), "size": 10240}]
        assert writes[0]["result"] == {"ok": None}
        reads = [e.payload() for e in fs_events if e.event_type == "host.filesystem.read-file"]
        assert [r["result"] for r in reads] == [
            {"ok": {"sha256": sha(small), "size": 10, "inline": small}},
            {"ok": {"sha256": sha(written), "size": 10240}},
            {"ok": {"sha256": sha(placed), "size": 10240}},
            {"err": '"../x": refused: the path leaves the actor\'s directory'}]
        (listing,) = [e.payload() for e in fs_events if e.event_type == "host.filesystem.list-dir"]
        assert listing["result"]["ok"][0] == {"is-dir": True, "is-file": False, "name": "d"}
        meta = [e.payload() for e in fs_events if e.event_type == "host.filesystem.metadata"]
        assert meta[0]["result"]["ok"]["size"] == 10240 and meta[0]["result"]["ok"]["path"] == "large.bin"
        assert meta[1]["result"] == {"err": '"gone": No such file or directory'}
        # contents never bloat the chain: no filesystem event holds a large content; what the actor
        # only read from disk is in no event at all
        for e in fs_events:
            assert written[4000:4064] not in e.data and placed[4000:4064] not in e.data, e.event_type
        for e in events:
            assert placed[4000:4064] not in e.data, e.event_type
        with ContentStore(Home.at(tree.home).store_db) as store:
            assert store.blob(sha(placed)) == placed and store.blob(sha(written)) == written
            assert store.blob(sha(small)) is None     # inline in the chain: not kept twice

        # replay serves every call from the chain and the node's store: the directory is not needed
        shutil.rmtree(base)
        replay = cli("replay", "probe", "--json", home=tree.home)
        assert replay.returncode == 0, replay.stdout + replay.stderr
        result = json.loads(replay.stdout)
        assert result["match"] is True and result["replayed"] > 20, result

        # a large read whose content the node's store no longer holds: replay says so plainly
        db = sqlite3.connect(Home.at(tree.home).store_db, timeout=10)
        with db:
            db.execute("DELETE FROM blobs WHERE hash=?", (sha(placed),))
        db.close()
        replay = cli("replay", "probe", home=tree.home)
        assert replay.returncode == 1
        assert f"read-file content {sha(placed)} (10240 bytes) is not in this node's store" in replay.stdout
        assert "replay needs the home the actor ran in" in replay.stdout


# ---- settings -----------------------------------------------------------------------------------


@pytest.mark.unit
def test_settings_are_typed_with_defaults_and_a_relative_path_resolves_against_the_manifest(tmp_path):
    (tmp_path / "data").mkdir()
    m = load_manifest(fs_manifest(tmp_path, "a", 'path = "data"\nquota_bytes = 100\nread_only = true\n'
                                                 'allowed_commands = ["read", "write-file"]\nmax_read_bytes = 5'))
    (h,) = m.handlers
    assert h.settings == FilesystemSettings(path=(tmp_path / "data").resolve(), new_dir=False, read_only=True,
                                            quota_bytes=100, allowed_commands=("read", "write-file"),
                                            max_read_bytes=5)
    seed = tmp_path / "seed.toml"  # the seed's spelling: [[handlers]] with config = { ... }
    seed.write_text(f'name = "s"\ncomponent = "{WAT / "fsprobe.wat"}"\n\n[[handlers]]\ntype = "filesystem"\n'
                    'config = { new_dir = true, allowed_commands = [] }\n')
    (h,) = load_manifest(seed).handlers
    assert h.settings == FilesystemSettings(new_dir=True, allowed_commands=(), max_read_bytes=DEFAULT_MAX_READ_BYTES)


BAD_SETTINGS = [
    ('path = "data"\nnew_dir = true', 7, "handler[0].new_dir", "give either `path`"),
    ("read_only = true", 5, "handler[0].type", "needs a directory: set `path = \"dir\"`"),
    ('path = "afile"', 6, "handler[0].path", "afile is not a directory"),
    ('path = "nowhere"', 6, "handler[0].path", "directory not found"),
    ('path = "data"\nquota_bytes = -5', 7, "handler[0].quota_bytes", "-5 is not valid: expected an integer >= 0"),
    ('path = "data"\nallowed_commands = ["read", "execute-command"]', 7, "handler[0].allowed_commands",
     "'execute-command' is not offered (running host programs would defeat the sandbox)"),
    ('path = "data"\nallowed_commands = ["teleport"]', 7, "handler[0].allowed_commands",
     "'teleport' is not a filesystem command: expected groups (delete, read, write)"),
    ('path = "data"\ncolour = "red"', 7, "handler[0].colour", "unknown setting 'colour': expected allowed_commands"),
    ('path = "data"\nmax_read_bytes = 100000000000', 7, "handler[0].max_read_bytes", "expected an integer <="),
    ('path = "data"\nread_only = "yes"', 7, "handler[0].read_only", "expected true or false"),
]


@pytest.mark.unit
@pytest.mark.parametrize("settings,line,key,message", BAD_SETTINGS, ids=lambda v: str(v)[:24])
def test_bad_settings_are_refused_when_the_manifest_is_read_naming_file_key_and_line(tmp_path, settings, line, key,
                                                                                    message):
    (tmp_path / "data").mkdir()
    (tmp_path / "afile").write_text("")
    path = fs_manifest(tmp_path, "bad", settings)
    with pytest.raises(ConfigError) as info:
        load_manifest(path)
    err = info.value
    assert (err.file, err.line, err.key) == (str(path), line, key), str(err)
    assert message in err.message


def test_validate_and_up_refuse_bad_settings_and_a_component_without_the_grant(tmp_path):
    (tmp_path / "data").mkdir()
    for name, settings, line, text in (
            ("exec", 'path = "data"\nallowed_commands = ["execute-command"]', 7,
             "'execute-command' is not offered (running host programs would defeat the sandbox)"),
            ("both", 'path = "data"\nnew_dir = true', 7, "not both"),
            ("quota", 'path = "data"\nquota_bytes = -5', 7, "expected an integer >= 0")):
        manifest = fs_manifest(tmp_path, name, settings)
        proc = cli("validate", str(manifest))
        assert proc.returncode == 1 and f"{manifest}:{line}: " in proc.stderr and text in proc.stderr, proc.stderr
    write_manifest(tmp_path, "bare", "fsprobe.wat")     # imports theater:simple/filesystem, grants nothing
    proc = cli("validate", str(tmp_path / "bare.toml"))
    assert proc.returncode == 1 and 'add `[[handler]] type = "filesystem"` to the manifest' in proc.stderr
    (tmp_path / "supervision.toml").write_text(tree_of("bare"))
    proc = cli("up", str(tmp_path / "supervision.toml"), "--detach", home=tmp_path / "home")
    assert proc.returncode != 0
    assert "component imports theater:simple/filesystem but the manifest does not grant it" in proc.stderr
    assert 'add `[[handler]] type = "filesystem"` to the manifest' in proc.stderr
