"""The filesystem capability's backend against real files: every operation
round-trips, and a hostile actor's paths (traversal, symlinks, special files,
swaps between and during calls) never reach outside its directory."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from theater_otp import sandboxfs
from theater_otp.sandboxfs import (
    COMMAND_GROUPS,
    NOT_OFFERED,
    OPERATIONS,
    TMP_PREFIX,
    FsDenied,
    FsError,
    FsFailure,
    FsMetadata,
    SandboxFS,
    check_allowed_commands,
    new_actor_dir,
)

pytestmark = pytest.mark.unit


# -- helpers ---------------------------------------------------------------

def snapshot(root: Path) -> dict[str, tuple]:
    """Everything under root, without following links: kind, size, content
    hash, mtime, link target."""
    out: dict[str, tuple] = {".": (os.lstat(root).st_mode, os.lstat(root).st_mtime_ns)}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            s = os.lstat(p)
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(s.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISREG(s.st_mode):
                out[rel] = ("file", s.st_size, s.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            else:
                out[rel] = (stat.S_IFMT(s.st_mode), s.st_mtime_ns)
    return out


def call(fs: SandboxFS, op: str, path: object):
    """Call operation `op` (hyphenated name) with a small content where needed."""
    fn = getattr(fs, op.replace("-", "_"))
    if op in ("write-file", "append-file"):
        return fn(path, b"pwned")
    return fn(path)


def refused(fn, *args, base: Path | None = None, kind=FsDenied) -> str:
    """Run fn(*args), expect `kind`; check the message is clean; return it."""
    with pytest.raises(FsFailure) as info:
        fn(*args)
    assert type(info.value) is kind, (type(info.value), info.value.message)
    msg = info.value.message
    assert isinstance(msg, str) and msg
    if base is not None:
        assert str(base) not in msg
        assert str(base.parent) not in msg
    assert "Traceback" not in msg and "Errno" not in msg
    return msg


@pytest.fixture
def world(tmp_path):
    """base/ (the actor's directory) and outside/ next to it holding a secret."""
    base = tmp_path / "base"
    outside = tmp_path / "outside"
    base.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    (outside / "sub").mkdir()
    (outside / "sub" / "deep.txt").write_bytes(b"deep")
    return base, outside


ALL_OPS = sorted(OPERATIONS)


# -- round trips -----------------------------------------------------------

def test_every_operation_round_trips(world):
    base, _ = world
    with SandboxFS(base) as fs:
        assert fs.list_dir("") == [] and fs.list_dir(".") == []
        fs.write_file("a.txt", b"hello")
        assert (base / "a.txt").read_bytes() == b"hello"
        assert fs.read_file("a.txt") == b"hello"
        fs.append_file("a.txt", b" world")
        assert fs.read_file("./a.txt") == b"hello world"
        fs.append_file("new.log", b"first")  # append creates
        assert fs.read_file("new.log") == b"first"
        fs.write_file("a.txt", b"")  # overwrite, to empty
        assert fs.read_file("a.txt") == b""

        assert fs.exists("a.txt") and fs.is_file("a.txt") and not fs.is_dir("a.txt")
        assert not fs.exists("nope") and not fs.is_file("nope") and not fs.is_dir("nope")
        assert fs.exists("") and fs.is_dir("") and fs.is_dir(".") and not fs.is_file("")
        assert not fs.exists("a.txt/below")  # a file in the middle: not there

        fs.create_dir("d/e/f")  # mkdir -p
        fs.create_dir("d/e/f")  # and idempotent
        fs.create_dir("")
        assert fs.is_dir("d/e") and stat.S_IMODE(os.stat(base / "d/e/f").st_mode) == 0o700
        fs.write_file("d/e/f/x.bin", bytes(range(256)))
        fs.write_file("d/b.txt", b"b")
        assert fs.read_file("d//e/./f/../f/x.bin") == bytes(range(256))

        assert fs.list_dir("") == [("a.txt", True, False), ("d", False, True), ("new.log", True, False)]
        assert fs.list_dir("d") == [("b.txt", True, False), ("e", False, True)]
        assert fs.list_dir("d/e/") == [("f", False, True)]

        m = fs.metadata("d/e/./f/x.bin")
        assert isinstance(m, FsMetadata)
        assert (m.name, m.path, m.size, m.is_file, m.is_dir) == ("x.bin", "d/e/f/x.bin", 256, True, False)
        now_ms = time.time() * 1000
        assert abs(m.modified - now_ms) < 60_000 and abs(m.accessed - now_ms) < 60_000
        assert m.created is None or abs(m.created - now_ms) < 60_000
        md = fs.metadata("d")
        assert (md.name, md.path, md.is_file, md.is_dir, md.size) == ("d", "d", False, True, 0)
        mb = fs.metadata("")
        assert (mb.name, mb.path, mb.is_dir) == (".", ".", True)

        fs.remove_file("d/b.txt")
        assert not (base / "d/b.txt").exists()
        fs.remove_dir("d")  # recursive
        assert not (base / "d").exists()
        assert fs.list_dir("") == [("a.txt", True, False), ("new.log", True, False)]


def test_errors_that_are_not_refusals(world):
    base, _ = world
    with SandboxFS(base) as fs:
        fs.write_file("f", b"x")
        fs.create_dir("d")
        assert "No such file" in refused(fs.read_file, "missing", base=base, kind=FsError)
        assert "No such file" in refused(fs.write_file, "missing/x", b"", base=base, kind=FsError)
        assert "directory" in refused(fs.read_file, "d", base=base, kind=FsError)
        assert "directory" in refused(fs.read_file, "", base=base, kind=FsError)
        assert "directory" in refused(fs.write_file, "d", b"x", base=base, kind=FsError)
        assert "remove-dir" in refused(fs.remove_file, "d", base=base, kind=FsError)
        assert "Not a directory" in refused(fs.remove_dir, "f", base=base, kind=FsError)
        assert "not a directory" in refused(fs.list_dir, "f", base=base, kind=FsError)
        assert "not a directory" in refused(fs.create_dir, "f/x", base=base, kind=FsError)
        assert "not a directory" in refused(fs.create_dir, "f", base=base, kind=FsError)
        assert "bytes" in refused(fs.write_file, "g", "text", base=base, kind=FsError)
        refused(fs.metadata, "missing", base=base, kind=FsError)
        refused(fs.remove_file, "missing", base=base, kind=FsError)
        refused(fs.remove_dir, "missing", base=base, kind=FsError)
        # the base itself is not a file target and cannot be removed
        for op in ("write-file", "append-file", "remove-file", "remove-dir"):
            for p in ("", ".", "a/.."):
                refused(call, fs, op, p, base=base)
    with pytest.raises(FsError, match="closed"):
        fs.read_file("f")


# -- traversal -------------------------------------------------------------

BAD_PATHS = [
    "..", "../x", "../outside/secret.txt", "a/../../x", "a/./../..", "./../base/x",
    "/etc/passwd", "/", "//x", "a/b/../../..",
    "x\x00", "\x00", "a/\x00/b",
    "a" * 4097, "a/" * 2049, "x" * 256,
    TMP_PREFIX + "0123", "d/" + TMP_PREFIX + "x",
    "\udcff", 7, None, b"bytes",
]


@pytest.mark.parametrize("op", ALL_OPS)
def test_traversal_is_refused_by_every_operation(world, op):
    base, outside = world
    before = snapshot(base.parent)
    with SandboxFS(base) as fs:
        for path in BAD_PATHS:
            msg = refused(call, fs, op, path, base=base)
            assert "refused" in msg
    assert snapshot(base.parent) == before


def test_refusal_message_names_the_path_and_the_rule(world):
    base, _ = world
    with SandboxFS(base) as fs:
        assert refused(fs.read_file, "../x") == '"../x": refused: the path leaves the actor\'s directory'
        assert refused(fs.read_file, "/etc/passwd").startswith('"/etc/passwd": refused: absolute')
        assert refused(fs.read_file, "a\x00b").startswith('"a\\u0000b": refused: the path contains a NUL')
        assert "longer than 4096 bytes" in refused(fs.read_file, "a" * 5000)


def test_dotdot_inside_the_base_is_fine(world):
    base, _ = world
    with SandboxFS(base) as fs:
        fs.create_dir("a/b")
        fs.write_file("a/b/../c.txt", b"c")
        assert (base / "a/c.txt").read_bytes() == b"c"
        assert fs.metadata("a/b/../../a/c.txt").path == "a/c.txt"
        assert fs.list_dir("a/..") == [("a", False, True)]


# -- symlinks --------------------------------------------------------------

@pytest.fixture
def links(world):
    base, outside = world
    (base / "real").mkdir()
    (base / "real" / "ok.txt").write_bytes(b"ok")
    os.symlink(outside / "secret.txt", base / "ln_file")        # absolute, to a file
    os.symlink("../outside", base / "ln_dir")                    # relative, to a dir
    os.symlink("real", base / "ln_inside")                       # even one that stays inside
    os.symlink("real/ok.txt", base / "ln_inside_file")
    os.symlink("/dev/zero", base / "ln_zero")
    os.symlink("/dev/null", base / "ln_null")
    os.symlink("nowhere", base / "ln_dangling")
    os.symlink(outside / "sub", base / "real" / "ln_mid")       # deeper
    return base, outside


LINK_PATHS = [
    "ln_file", "ln_dir", "ln_dir/secret.txt", "ln_dir/sub/deep.txt", "ln_dir/new",
    "ln_inside", "ln_inside/ok.txt", "ln_inside_file", "ln_zero", "ln_null", "ln_dangling",
    "ln_dangling/x", "real/ln_mid", "real/ln_mid/deep.txt", "real/ln_mid/new/x",
]


@pytest.mark.parametrize("op", ALL_OPS)
def test_symlinks_are_refused_by_every_operation(links, op):
    base, outside = links
    before = snapshot(base.parent)
    with SandboxFS(base) as fs:
        for path in LINK_PATHS:
            msg = refused(call, fs, op, path, base=base)
            assert "symbolic link" in msg, msg
            assert str(outside) not in msg and "/dev/" not in msg
    assert snapshot(base.parent) == before


def test_symlink_message_names_the_link(links):
    base, _ = links
    with SandboxFS(base) as fs:
        assert refused(fs.read_file, "real/ln_mid/deep.txt") == (
            '"real/ln_mid/deep.txt": refused: "real/ln_mid" is a symbolic link, '
            "and symbolic links are never followed")
        assert "symbolic link" in refused(fs.read_file, "ln_zero")


def test_list_dir_shows_links_as_neither_file_nor_dir_and_remove_dir_unlinks_them(links):
    base, outside = links
    before_outside = snapshot(outside)
    with SandboxFS(base) as fs:
        listing = dict((n, (f, d)) for n, f, d in fs.list_dir(""))
        assert listing["ln_dir"] == (False, False) and listing["ln_file"] == (False, False)
        assert listing["real"] == (False, True)
        fs.remove_dir("real")  # holds ln_mid -> outside/sub: the link goes, outside stays
    assert not (base / "real").exists()
    assert snapshot(outside) == before_outside


def test_a_directory_swapped_for_a_symlink_between_two_calls_is_refused(world):
    base, outside = world
    (outside / "sub" / "f").write_bytes(b"outside")
    with SandboxFS(base) as fs:
        fs.create_dir("d")
        fs.write_file("d/f", b"inside")
        assert fs.read_file("d/f") == b"inside"
        # swap behind the sandbox's back
        os.rename(base / "d", base / "d.old")
        os.symlink(outside / "sub", base / "d")
        for op in ALL_OPS:
            path = "d/f" if op not in ("create-dir", "list-dir") else "d"
            assert "symbolic link" in refused(call, fs, op, path, base=base)
        assert (outside / "sub" / "f").read_bytes() == b"outside"


def test_racing_swaps_during_calls_never_reach_outside(world):
    """A thread flips d between a real directory and a symlink to outside
    while reads and writes go through d: each call either works inside or is
    refused/fails, and nothing outside is read or written."""
    base, outside = world
    (outside / "sub" / "f").write_bytes(b"outside")
    (base / "d").mkdir()
    (base / "d" / "f").write_bytes(b"inside")
    os.symlink(outside / "sub", base / "evil")
    before = snapshot(outside)
    stop = threading.Event()

    flip_errors: list[BaseException] = []

    def flipper():
        try:
            while not stop.is_set():
                os.rename(base / "d", base / "d.real")
                os.rename(base / "evil", base / "d")
                os.rename(base / "d", base / "evil")
                os.rename(base / "d.real", base / "d")
        except BaseException as e:  # noqa: BLE001 - reported by the test
            flip_errors.append(e)

    fs = SandboxFS(base)
    t = threading.Thread(target=flipper, daemon=True)
    t.start()
    outcomes = {"ok": 0, "failed": 0}
    try:
        with fs:
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                for fn in (lambda: fs.read_file("d/f"), lambda: fs.write_file("d/w", b"w"),
                           lambda: fs.append_file("d/w", b"a"), lambda: fs.list_dir("d"),
                           lambda: fs.metadata("d/f"), lambda: fs.remove_file("d/w")):
                    try:
                        got = fn()
                    except FsFailure:
                        outcomes["failed"] += 1
                        continue
                    outcomes["ok"] += 1
                    assert got != b"outside"
                    if isinstance(got, list):
                        assert ("f", True, False) in got
                    if isinstance(got, FsMetadata):
                        assert got.size == len(b"inside")
    finally:
        stop.set()
        t.join(5)
    assert not flip_errors
    assert snapshot(outside) == before
    assert outcomes["ok"] > 0


# -- special files ---------------------------------------------------------

def _in_thread(fn, timeout=5.0):
    result: dict = {}

    def run():
        try:
            result["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            result["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "the call hung"
    return result


def test_a_fifo_is_refused_without_hanging(world):
    base, _ = world
    os.mkfifo(base / "pipe")
    with SandboxFS(base) as fs:
        for op in ("read-file", "write-file", "append-file", "remove-file"):
            r = _in_thread(lambda: call(fs, op, "pipe"))
            assert isinstance(r.get("error"), FsDenied), r
            assert "FIFO" in r["error"].message and "only regular files and directories" in r["error"].message
        assert fs.exists("pipe") and not fs.is_file("pipe") and not fs.is_dir("pipe")
        assert fs.list_dir("") == [("pipe", False, False)]
        assert fs.metadata("pipe").size == 0
    assert stat.S_ISFIFO(os.lstat(base / "pipe").st_mode)


def test_a_fifo_swapped_in_after_the_check_is_caught_on_the_fd(world, monkeypatch):
    """The lstat pre-check sees a file; by the open it is a FIFO: O_NONBLOCK
    keeps the open from blocking and the fstat on the fd refuses it."""
    base, _ = world
    (base / "x").write_bytes(b"file")
    real_open = os.open

    def swapping_open(path, flags, *a, **kw):
        if path == "x" and not flags & os.O_PATH:
            os.unlink(base / "x")
            os.mkfifo(base / "x")
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(sandboxfs.os, "open", swapping_open)
    with SandboxFS(base) as fs:
        r = _in_thread(lambda: fs.read_file("x"))
    assert isinstance(r.get("error"), FsDenied) and "FIFO" in r["error"].message


def test_a_device_file_is_refused(world):
    base, _ = world
    try:
        os.mknod(base / "zero", 0o600 | stat.S_IFCHR, os.makedev(1, 5))
    except (PermissionError, OSError) as e:
        pytest.skip(f"cannot mknod here: {e}")
    with SandboxFS(base) as fs:
        for op in ("read-file", "write-file", "append-file", "remove-file"):
            assert "character device" in refused(call, fs, op, "zero", base=base)
        assert fs.exists("zero") and not fs.is_file("zero")


def test_device_files_through_symlinks_are_refused(links):
    base, _ = links
    with SandboxFS(base) as fs:
        for p in ("ln_zero", "ln_null"):
            r = _in_thread(lambda: fs.read_file(p))
            assert isinstance(r.get("error"), FsDenied)


# -- limits ----------------------------------------------------------------

def test_reads_are_bounded(world):
    base, _ = world
    (base / "big").write_bytes(b"x" * 101)
    (base / "fits").write_bytes(b"x" * 100)
    with SandboxFS(base, max_read_bytes=100) as fs:
        assert fs.read_file("fits") == b"x" * 100
        msg = refused(fs.read_file, "big", base=base)
        assert "101 bytes" in msg and "read limit of 100 bytes" in msg


def test_quota_exact_fit_and_one_byte_over(world):
    base, _ = world
    (base / "existing").write_bytes(b"e" * 40)
    with SandboxFS(base, quota_bytes=100) as fs:
        assert fs.usage_bytes == 40
        fs.write_file("a", b"a" * 60)  # exactly 100
        assert fs.usage_bytes == 100
        msg = refused(fs.write_file, "b", b"b", base=base)
        assert "quota of 100 bytes" in msg and "101 bytes" in msg
        assert not (base / "b").exists()
        refused(fs.append_file, "a", b"!", base=base)
        assert (base / "a").read_bytes() == b"a" * 60
        fs.write_file("empty", b"")  # zero bytes always fit
        assert sorted(os.listdir(base)) == ["a", "empty", "existing"]  # no temp file left


def test_quota_overwrite_append_and_remove_accounting(world):
    base, _ = world
    with SandboxFS(base, quota_bytes=100) as fs:
        fs.write_file("f", b"x" * 90)
        fs.write_file("f", b"y" * 100)  # replacing counts new - old: 100 fits
        assert fs.usage_bytes == 100
        refused(fs.write_file, "f", b"z" * 101)
        assert (base / "f").read_bytes() == b"y" * 100
        fs.write_file("f", b"s" * 10)  # shrinking frees
        assert fs.usage_bytes == 10
        fs.append_file("f", b"t" * 85)
        assert fs.usage_bytes == 95
        refused(fs.append_file, "f", b"u" * 6)
        fs.append_file("f", b"u" * 5)
        assert fs.usage_bytes == 100 and (base / "f").stat().st_size == 100
        fs.remove_file("f")
        assert fs.usage_bytes == 0
        fs.create_dir("d/e")
        fs.write_file("d/e/g", b"g" * 70)
        fs.write_file("d/h", b"h" * 30)
        refused(fs.write_file, "i", b"i")
        fs.remove_dir("d")
        assert fs.usage_bytes == 0
        fs.write_file("i", b"i" * 100)
    # a new instance computes the same usage from the disk
    with SandboxFS(base, quota_bytes=100) as again:
        assert again.usage_bytes == 100


def test_construction_counts_only_regular_files_and_clears_stale_temp_files(world):
    base, outside = world
    (outside / "huge").write_bytes(b"h" * 1000)
    (base / "d").mkdir()
    (base / "d" / "f").write_bytes(b"f" * 7)
    (base / "g").write_bytes(b"g" * 3)
    os.symlink(outside, base / "ln")  # not followed: outside's bytes do not count
    os.symlink(outside / "huge", base / "lnf")
    os.mkfifo(base / "pipe")
    (base / "d" / (TMP_PREFIX + "dead")).write_bytes(b"crashed write")
    with SandboxFS(base) as fs:
        assert fs.usage_bytes == 10
        assert not (base / "d" / (TMP_PREFIX + "dead")).exists()


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(world, monkeypatch):
    base, _ = world
    with SandboxFS(base) as fs:
        fs.write_file("f", b"old")
        usage = fs.usage_bytes

        def broken_fsync(fd):
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(sandboxfs.os, "fsync", broken_fsync)
        msg = refused(fs.write_file, "f", b"new content", base=base, kind=FsError)
        assert msg == '"f": Input/output error'
        refused(fs.append_file, "f", b"more", base=base, kind=FsError)
        refused(fs.write_file, "g", b"new", base=base, kind=FsError)
        monkeypatch.undo()
        assert (base / "f").read_bytes() == b"old"
        assert os.listdir(base) == ["f"]
        assert fs.usage_bytes == usage


def test_overwrite_keeps_the_mode_and_does_not_write_through_a_hard_link(world):
    base, outside = world
    os.link(outside / "secret.txt", base / "hard")  # placed by the host
    os.chmod(base / "hard", 0o640)
    with SandboxFS(base) as fs:
        fs.write_file("hard", b"replaced")
        fs.append_file("hard", b"!")
    assert (base / "hard").read_bytes() == b"replaced!"
    assert stat.S_IMODE(os.stat(base / "hard").st_mode) == 0o640
    assert (outside / "secret.txt").read_bytes() == b"secret"


def test_remove_dir_handles_a_tree_deeper_than_the_recursion_limit(world):
    base, _ = world
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(1200):
            os.mkdir("n", dir_fd=fd)
            nxt = os.open("n", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        with open(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd), "wb") as f:
            f.write(b"12345")
    finally:
        os.close(fd)
    with SandboxFS(base) as fs:
        assert fs.usage_bytes == 5
        fs.remove_dir("n")
        assert fs.usage_bytes == 0
    assert os.listdir(base) == []


# -- grants ----------------------------------------------------------------

def test_operations_table_and_allowed_commands_check():
    assert COMMAND_GROUPS == {"read", "write", "delete"}
    assert {op for op, g in OPERATIONS.items() if g == "read"} == {
        "read-file", "exists", "is-file", "is-dir", "list-dir", "metadata"}
    assert {op for op, g in OPERATIONS.items() if g == "write"} == {"write-file", "append-file", "create-dir"}
    assert {op for op, g in OPERATIONS.items() if g == "delete"} == {"remove-file", "remove-dir"}
    for op in OPERATIONS:  # every operation is a method
        assert callable(getattr(SandboxFS, op.replace("-", "_")))
    assert check_allowed_commands(["read", "write-file", "delete"]) == []
    assert check_allowed_commands(["read", "execute-command", "rm -rf", "read_file", "rm -rf", 3]) == [
        "execute-command", "rm -rf", "read_file", "3"]
    assert "execute-command" in NOT_OFFERED
    with pytest.raises(ValueError, match="execute-command"):
        SandboxFS(Path("/nonexistent"), allowed=frozenset({"execute-command"}))


def test_allowed_groups_and_single_operations(world):
    base, _ = world
    (base / "f").write_bytes(b"f")
    with SandboxFS(base, allowed=frozenset({"read"})) as fs:
        assert fs.read_file("f") == b"f" and fs.exists("f") and fs.list_dir("") == [("f", True, False)]
        msg = refused(fs.write_file, "g", b"g", base=base)
        assert msg == "\"g\": refused: write-file is not allowed (allowed_commands grants neither 'write-file' nor 'write')"
        refused(fs.remove_file, "f", base=base)
    with SandboxFS(base, allowed=frozenset({"read-file", "append-file"})) as fs:
        assert fs.read_file("f") == b"f"
        fs.append_file("f", b"+")
        for op in ("exists", "is-file", "is-dir", "list-dir", "metadata", "write-file", "create-dir",
                   "remove-file", "remove-dir"):
            assert f"{op} is not allowed" in refused(call, fs, op, "f", base=base)
    with SandboxFS(base, allowed=frozenset()) as fs:
        for op in ALL_OPS:
            refused(call, fs, op, "f", base=base)
    with SandboxFS(base, allowed=frozenset({"delete"})) as fs:
        fs.remove_file("f")
    assert os.listdir(base) == []


def test_read_only(world):
    base, _ = world
    (base / "f").write_bytes(b"f")
    (base / "d").mkdir()
    before = snapshot(base)
    with SandboxFS(base, read_only=True) as fs:
        assert fs.read_file("f") == b"f" and fs.is_dir("d") and fs.metadata("f").size == 1
        for op in ("write-file", "append-file", "create-dir", "remove-file", "remove-dir"):
            for p in ("f", "d", "new"):
                assert "read-only" in refused(call, fs, op, p, base=base)
    assert snapshot(base) == before


# -- new_dir ---------------------------------------------------------------

def test_new_actor_dir(tmp_path):
    root = tmp_path / "actors"
    a = new_actor_dir(root, "counter")
    b = new_actor_dir(root, "counter")
    c = new_actor_dir(root, "../../evil/../name")
    assert a != b and a.parent == root and b.parent == root and c.parent == root
    assert a.name.startswith("counter-") and c.name.startswith("evil_name-")
    for d in (a, b, c):
        assert d.is_dir() and os.listdir(d) == [] and stat.S_IMODE(d.stat().st_mode) == 0o700
    with SandboxFS(a) as fs:
        fs.write_file("x", b"x")


# -- property: nothing outside is ever touched -----------------------------

# Names that exist inside (a, f, ln_*, pipe) and in the sentinel (a, f,
# secret.txt), so a path that escaped would hit something real.
COMPONENTS = ["..", "..", ".", "", "a", "f", "x", "ln_out", "ln_out", "ln_file", "ln_zero", "ln_in",
              "pipe", "secret.txt", "sentinel", "base", "\x00", TMP_PREFIX + "x"]
component_paths = st.builds(lambda lead, parts: lead + "/".join(parts),
                            st.sampled_from(["", "", "", "/", "./", "../", "ln_out/", "a/"]),
                            st.lists(st.sampled_from(COMPONENTS), max_size=4))
paths = st.one_of(component_paths, component_paths, component_paths, st.text(max_size=20))
ops = st.lists(st.tuples(st.sampled_from(ALL_OPS), paths), min_size=1, max_size=12)


def _build_world(root: Path) -> tuple[Path, Path]:
    base = root / "base"
    sentinel = root / "sentinel"
    for d in (base / "a" / "b", sentinel / "a"):
        d.mkdir(parents=True)
    (sentinel / "secret.txt").write_bytes(b"secret")
    (sentinel / "f").write_bytes(b"secret")
    (sentinel / "a" / "f").write_bytes(b"secret")
    (base / "a" / "f").write_bytes(b"inside")
    os.symlink("../sentinel", base / "ln_out")
    os.symlink(sentinel / "secret.txt", base / "a" / "ln_file")
    os.symlink("/dev/zero", base / "ln_zero")
    os.symlink("a", base / "ln_in")
    os.mkfifo(base / "pipe")
    return base, sentinel


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops, quota=st.sampled_from([None, 0, 20, 10_000]))
def test_no_path_reaches_outside_and_only_fs_errors_escape(ops, quota):
    root = Path(tempfile.mkdtemp(prefix="sandboxfs-prop-"))
    try:
        base, sentinel = _build_world(root)
        before = snapshot(sentinel)
        fs = SandboxFS(base, quota_bytes=quota)
        try:
            for op, path in ops:
                try:
                    result = call(fs, op, path)
                except FsFailure as e:
                    assert type(e) in (FsDenied, FsError)
                    assert str(root) not in e.message
                    continue
                if op == "read-file":
                    assert result != b"secret"
            usage = fs.usage_bytes
        finally:
            fs.close()
        assert snapshot(sentinel) == before
        assert sorted(os.listdir(root)) == ["base", "sentinel"]
        assert not any(n.startswith(TMP_PREFIX) for _, _, names in os.walk(base) for n in names)
        with SandboxFS(base) as again:  # the running total matches the disk
            assert again.usage_bytes == usage
        if quota is not None:
            assert usage <= max(quota, len(b"inside"))
    finally:
        shutil.rmtree(root)
