"""The backend of the actors' `filesystem` capability: one directory per actor,
served to hostile code through a small set of operations.

Pure Python over the `os` module; the wasm host wires each function to the
actor's import of the same name and hands the message of `FsDenied` /
`FsError` back to the actor as its error. docs/filesystem.md has the rules;
the short version:

- every path is relative to the actor's directory (the *base*), normalized
  lexically, and refused if it would leave it, is absolute, holds a NUL byte,
  is over 4096 bytes, or names the sandbox's own temporary files;
- the path is resolved one component at a time with `openat(O_NOFOLLOW)`
  relative to a directory fd held since construction, and every symbolic link
  met on the way or at the end is refused, so a link swapped in between two
  calls (or during one) is refused as well;
- only regular files and directories are served; a FIFO, socket or device is
  refused, checked on the opened fd (opened with O_NONBLOCK so a FIFO cannot
  block);
- reads are bounded by `max_read_bytes`, writes by the quota (checked before
  anything is written), and every write replaces the file atomically
  (temporary file in the same directory, fsync, rename).

Messages name the path as the actor gave it and the rule, never the base's
host path nor a host exception.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import secrets
import stat
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Iterable, Mapping, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Every operation the capability offers -> the `allowed_commands` group that
#: grants it. The single source of truth: an `allowed_commands` entry is either
#: a group ("read", "write", "delete") or one of these operation names.
OPERATIONS: Mapping[str, str] = MappingProxyType({
    "read-file": "read",
    "exists": "read",
    "is-file": "read",
    "is-dir": "read",
    "list-dir": "read",
    "metadata": "read",
    "write-file": "write",
    "append-file": "write",
    "create-dir": "write",
    "remove-file": "delete",
    "remove-dir": "delete",
})

#: The groups, derived from OPERATIONS.
COMMAND_GROUPS: frozenset[str] = frozenset(OPERATIONS.values())

#: Names a manifest may carry from Theater's spec that this backend refuses on
#: purpose, with the reason (for the manifest validator's message).
NOT_OFFERED: Mapping[str, str] = MappingProxyType({
    "execute-command": "running host programs would defeat the sandbox",
})

MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
DEFAULT_MAX_READ_BYTES = 64 * 1024 * 1024

#: Names of the temporary files of atomic writes. Actors cannot name them,
#: list-dir hides them, and construction removes leftovers of a crashed write.
TMP_PREFIX = ".sandboxfs-tmp-"

_WRITE_GROUPS = frozenset({"write", "delete"})
_CHUNK = 1024 * 1024
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | _O_CLOEXEC
_DIR_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | _O_CLOEXEC
_FILE_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _O_CLOEXEC
_TMP_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _O_CLOEXEC


class FsFailure(Exception):
    """Base of the two errors an operation raises; `message` goes to the actor."""

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)


class FsDenied(FsFailure):
    """The request breaks a sandbox rule (path, symlink, kind, limit, grant)."""


class FsError(FsFailure):
    """The request was allowed but failed (not found, not a directory, I/O)."""


class _Missing(FsError):
    """Not found (ENOENT, or a non-directory in the middle of the path):
    exists/is-file/is-dir turn it into False."""


@dataclass(frozen=True)
class FsMetadata:
    """What metadata() returns. `path` is the actor's path, normalized ("."
    for the base itself); times are ms since the epoch, None when unknown."""

    name: str
    path: str
    size: int
    is_file: bool
    is_dir: bool
    created: int | None
    modified: int | None
    accessed: int | None


def check_allowed_commands(names: Iterable[object]) -> list[str]:
    """The entries of an `allowed_commands` list that name neither a group nor
    an operation (in the order given, each once). Empty means all are known."""
    unknown: list[str] = []
    for name in names:
        if not (isinstance(name, str) and (name in COMMAND_GROUPS or name in OPERATIONS)):
            shown = name if isinstance(name, str) else repr(name)
            if shown not in unknown:
                unknown.append(shown)
    return unknown


def new_actor_dir(root: Path, actor_id: str) -> Path:
    """A fresh, empty directory (mode 0700) under `root` for a manifest's
    `new_dir = true`; its name starts with a filesystem-safe form of
    `actor_id` and ends with a random suffix, so every call gets its own."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", str(actor_id)).strip("_-")[:64] or "actor"
    try:
        root = Path(root)
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        made = Path(tempfile.mkdtemp(prefix=safe + "-", dir=root))
        os.chmod(made, 0o700)  # mkdtemp's 0700 is masked by the umask
        return made
    except OSError as e:
        raise FsError(f"cannot create a directory for actor {actor_id!r}: {e.strerror or e}") from e


def _q(path: object) -> str:
    """The actor's path quoted for a message: JSON string syntax (so NUL and
    control characters show escaped), cut short when long."""
    if not isinstance(path, str):
        return f"<{type(path).__name__}, not a string>"
    shown = path if len(path) <= 120 else path[:100] + "..."
    return json.dumps(shown, ensure_ascii=False).encode("utf-8", "backslashreplace").decode("utf-8")


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "a special file"


def _ms(ns: int | None) -> int | None:
    if ns is None or ns < 0:
        return None
    return ns // 1_000_000


def _as_bytes(content: object, q: str) -> bytes:
    if isinstance(content, (bytes, bytearray, memoryview)):
        return bytes(content)
    raise FsError(f"{q}: the content must be bytes, not {type(content).__name__}")


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _close(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


class SandboxFS:
    """The filesystem of one actor, confined to `base`.

    `read_only` refuses the write and delete groups; `quota_bytes` caps the
    total size of regular files under base; `allowed` is the manifest's
    `allowed_commands` (None: everything is allowed); `max_read_bytes` caps
    one read-file. Holds a directory fd on base until close(); one instance
    per directory at a time (the quota's running total assumes it).
    """

    def __init__(
        self,
        base: Path,
        read_only: bool = False,
        quota_bytes: int | None = None,
        allowed: frozenset[str] | None = None,
        max_read_bytes: int = DEFAULT_MAX_READ_BYTES,
    ):
        self._base_fd: int | None = None
        self._lock = threading.Lock()
        if quota_bytes is not None and quota_bytes < 0:
            raise ValueError(f"quota_bytes must be >= 0, not {quota_bytes}")
        if max_read_bytes < 0:
            raise ValueError(f"max_read_bytes must be >= 0, not {max_read_bytes}")
        if allowed is not None:
            unknown = check_allowed_commands(allowed)
            if unknown:
                raise ValueError(f"unknown filesystem allowed_commands: {', '.join(unknown)}")
            allowed = frozenset(allowed)
        self.read_only = read_only
        self.quota_bytes = quota_bytes
        self.allowed = allowed
        self.max_read_bytes = max_read_bytes
        self._usage = 0
        try:
            self._base_fd = os.open(os.fspath(base), os.O_RDONLY | os.O_DIRECTORY | _O_CLOEXEC)
            self._usage = self._tree(self._base_fd, remove=False)
        except OSError as e:
            self.close()
            raise FsError(f"the actor's directory cannot be used: {e.strerror or e}") from e

    # -- lifecycle --------------------------------------------------------

    def close(self) -> None:
        """Release the base fd; later calls fail with FsError. Waits for a
        call in progress, so its fd number cannot be reused under it."""
        lock = getattr(self, "_lock", None)
        if lock is None:  # __init__ failed before the lock existed
            fd, self._base_fd = getattr(self, "_base_fd", None), None
            _close(fd)
            return
        with lock:
            fd, self._base_fd = self._base_fd, None
            _close(fd)

    def __enter__(self) -> SandboxFS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    @property
    def usage_bytes(self) -> int:
        """Bytes of regular files under base, as this instance accounts them."""
        return self._usage

    # -- the operations ---------------------------------------------------

    def read_file(self, path: str) -> bytes:
        return self._run("read-file", path, self._read_file)

    def write_file(self, path: str, content: bytes) -> None:
        return self._run("write-file", path, lambda c, q: self._write_file(c, q, content))

    def append_file(self, path: str, content: bytes) -> None:
        return self._run("append-file", path, lambda c, q: self._append_file(c, q, content))

    def exists(self, path: str) -> bool:
        return self._run("exists", path, lambda c, q: self._lookup(c, q) is not None)

    def is_file(self, path: str) -> bool:
        def impl(c: tuple[str, ...], q: str) -> bool:
            st = self._lookup(c, q)
            return st is not None and stat.S_ISREG(st.st_mode)
        return self._run("is-file", path, impl)

    def is_dir(self, path: str) -> bool:
        def impl(c: tuple[str, ...], q: str) -> bool:
            st = self._lookup(c, q)
            return st is not None and stat.S_ISDIR(st.st_mode)
        return self._run("is-dir", path, impl)

    def create_dir(self, path: str) -> None:
        return self._run("create-dir", path, self._create_dir)

    def remove_file(self, path: str) -> None:
        return self._run("remove-file", path, self._remove_file)

    def remove_dir(self, path: str) -> None:
        return self._run("remove-dir", path, self._remove_dir)

    def list_dir(self, path: str) -> list[tuple[str, bool, bool]]:
        return self._run("list-dir", path, self._list_dir)

    def metadata(self, path: str) -> FsMetadata:
        return self._run("metadata", path, self._metadata)

    # -- the boundary -----------------------------------------------------

    def _run(self, op: str, path: object, impl: Callable[[tuple[str, ...], str], T]) -> T:
        """Grant, read-only and path checks, then `impl(components, quoted)`;
        whatever goes wrong leaves as FsDenied or FsError."""
        q = _q(path)
        try:
            with self._lock:
                if self._base_fd is None:
                    raise FsError(f"{q}: the filesystem is closed")
                group = OPERATIONS[op]
                if self.allowed is not None and op not in self.allowed and group not in self.allowed:
                    raise FsDenied(
                        f"{q}: refused: {op} is not allowed "
                        f"(allowed_commands grants neither {op!r} nor {group!r})")
                if self.read_only and group in _WRITE_GROUPS:
                    raise FsDenied(f"{q}: refused: the filesystem is read-only ({op} modifies it)")
                return impl(self._parse(path, q), q)
        except _Missing as e:
            raise FsError(e.message) from None
        except FsFailure:
            raise
        except OSError as e:
            raise FsError(f"{q}: {e.strerror or 'input/output error'}") from e
        except Exception as e:  # the actor boundary: nothing else may leave
            log.exception("sandboxfs %s failed unexpectedly", op)
            raise FsError(f"{q}: internal error ({type(e).__name__})") from e

    @staticmethod
    def _parse(path: object, q: str) -> tuple[str, ...]:
        """The path's components under base, '.' and '' dropped and '..'
        resolved lexically; () is base itself."""
        if not isinstance(path, str):
            raise FsDenied(f"{q}: refused: the path is not a string")
        if "\x00" in path:
            raise FsDenied(f"{q}: refused: the path contains a NUL byte")
        try:
            size = len(path.encode("utf-8"))
        except UnicodeEncodeError:
            raise FsDenied(f"{q}: refused: the path is not valid UTF-8") from None
        if size > MAX_PATH_BYTES:
            raise FsDenied(f"{q}: refused: the path is longer than {MAX_PATH_BYTES} bytes")
        if path.startswith("/"):
            raise FsDenied(
                f"{q}: refused: absolute paths are not allowed (paths are relative to the actor's directory)")
        parts: list[str] = []
        for comp in path.split("/"):
            if comp in ("", "."):
                continue
            if comp == "..":
                if not parts:
                    raise FsDenied(f"{q}: refused: the path leaves the actor's directory")
                parts.pop()
                continue
            if comp.startswith(TMP_PREFIX):
                raise FsDenied(f"{q}: refused: names starting with {TMP_PREFIX!r} are reserved")
            if len(comp.encode("utf-8")) > MAX_NAME_BYTES:
                raise FsDenied(f"{q}: refused: a path component is longer than {MAX_NAME_BYTES} bytes")
            parts.append(comp)
        return tuple(parts)

    # -- resolution -------------------------------------------------------

    def _refuse_or_fail(self, e: OSError, dir_fd: int, name: str, q: str, shown: str) -> FsFailure:
        """The error for a failed open of `name` (shown to the actor as
        `shown`) in `dir_fd`: a symlink is refused, a missing entry or a
        non-directory in the middle of the path is _Missing. The lstat here
        only words the message; the refusal itself came from the open."""
        if e.errno in (errno.ENOTDIR, errno.ELOOP):
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                st = None
            if st is not None and stat.S_ISLNK(st.st_mode):
                return self._symlink(q, shown)
            if st is not None and not stat.S_ISDIR(st.st_mode):
                return _Missing(f"{q}: {_q(shown)} is {_kind(st.st_mode)}, not a directory")
        if e.errno == errno.ENOENT:
            return _Missing(f"{q}: No such file or directory")
        return FsError(f"{q}: {e.strerror or 'input/output error'}")

    @staticmethod
    def _symlink(q: str, shown: str) -> FsDenied:
        return FsDenied(f"{q}: refused: {_q(shown)} is a symbolic link, and symbolic links are never followed")

    def _open_base(self) -> int:
        """The base fd, for an operation `_run` let through (it checked the fd is open)."""
        if self._base_fd is None:
            raise FsError("the filesystem is closed")
        return self._base_fd

    def _walk(self, comps: tuple[str, ...], q: str, *, create: bool = False) -> int:
        """An O_PATH fd (the caller closes it) of the directory `comps`, each
        component opened with O_NOFOLLOW|O_DIRECTORY relative to the last, so
        no symlink is ever followed. `create` makes missing ones (mkdir -p)."""
        fd = os.open(".", _DIR_PATH, dir_fd=self._base_fd)
        try:
            for i, name in enumerate(comps):
                try:
                    nxt = os.open(name, _DIR_PATH, dir_fd=fd)
                except OSError as e:
                    if not (create and e.errno == errno.ENOENT):
                        raise self._refuse_or_fail(e, fd, name, q, "/".join(comps[: i + 1])) from None
                    try:
                        os.mkdir(name, 0o700, dir_fd=fd)
                    except FileExistsError:
                        pass  # made by someone else meanwhile; the open below checks what it is
                    try:
                        nxt = os.open(name, _DIR_PATH, dir_fd=fd)
                    except OSError as e2:
                        raise self._refuse_or_fail(e2, fd, name, q, "/".join(comps[: i + 1])) from None
                os.close(fd)
                fd = nxt
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _lstat_in(self, parent: int, comps: tuple[str, ...], q: str) -> os.stat_result:
        """lstat of the last component in `parent`; a symlink is refused."""
        try:
            st = os.stat(comps[-1], dir_fd=parent, follow_symlinks=False)
        except OSError as e:
            raise self._refuse_or_fail(e, parent, comps[-1], q, "/".join(comps)) from None
        if stat.S_ISLNK(st.st_mode):
            raise self._symlink(q, "/".join(comps))
        return st

    def _stat(self, comps: tuple[str, ...], q: str) -> os.stat_result:
        if not comps:
            return os.fstat(self._open_base())
        parent = self._walk(comps[:-1], q)
        try:
            return self._lstat_in(parent, comps, q)
        finally:
            os.close(parent)

    def _lookup(self, comps: tuple[str, ...], q: str) -> os.stat_result | None:
        try:
            return self._stat(comps, q)
        except _Missing:
            return None

    def _open_regular(self, parent: int, comps: tuple[str, ...], q: str) -> tuple[int, os.stat_result]:
        """Open an existing regular file for reading: lstat first (so a device
        or FIFO is not even opened), then O_NOFOLLOW|O_NONBLOCK and fstat on
        the fd, which is what counts if the entry was swapped meanwhile."""
        self._require_regular(self._lstat_in(parent, comps, q), comps, q)
        try:
            fd = os.open(comps[-1], _FILE_READ, dir_fd=parent)
        except OSError as e:
            raise self._refuse_or_fail(e, parent, comps[-1], q, "/".join(comps)) from None
        try:
            st = os.fstat(fd)
            self._require_regular(st, comps, q)
            return fd, st
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def _require_regular(st: os.stat_result, comps: tuple[str, ...], q: str) -> None:
        if stat.S_ISREG(st.st_mode):
            return
        if stat.S_ISDIR(st.st_mode):
            raise FsError(f"{q}: Is a directory")
        raise FsDenied(
            f"{q}: refused: {_q('/'.join(comps))} is {_kind(st.st_mode)}; "
            "only regular files and directories are allowed")

    # -- implementations --------------------------------------------------

    def _read_file(self, comps: tuple[str, ...], q: str) -> bytes:
        if not comps:
            raise FsError(f"{q}: Is a directory")
        parent = self._walk(comps[:-1], q)
        try:
            fd, st = self._open_regular(parent, comps, q)
        finally:
            os.close(parent)
        try:
            limit = self.max_read_bytes
            if st.st_size > limit:
                raise FsDenied(
                    f"{q}: refused: the file is {st.st_size} bytes, over the read limit of {limit} bytes")
            chunks: list[bytes] = []
            got = 0
            while True:
                chunk = os.read(fd, min(_CHUNK, limit + 1 - got))
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
                got += len(chunk)
                if got > limit:  # it grew while we read
                    raise FsDenied(f"{q}: refused: the file is over the read limit of {limit} bytes")
        finally:
            os.close(fd)

    def _check_quota(self, q: str, delta: int, writing: int) -> int:
        new = max(0, self._usage + delta)
        if self.quota_bytes is not None and delta > 0 and new > self.quota_bytes:
            raise FsDenied(
                f"{q}: refused: writing {writing} bytes would take the actor's directory to "
                f"{new} bytes, over its quota of {self.quota_bytes} bytes")
        return new

    def _writable_target(self, comps: tuple[str, ...], q: str) -> None:
        if not comps:
            raise FsDenied(f"{q}: refused: the path names the actor's directory itself, not a file")

    def _write_file(self, comps: tuple[str, ...], q: str, content: object) -> None:
        self._writable_target(comps, q)
        data = _as_bytes(content, q)
        parent = self._walk(comps[:-1], q)
        try:
            try:
                old = self._lstat_in(parent, comps, q)
            except _Missing:
                old = None
            if old is not None:
                self._require_regular(old, comps, q)
            old_size = old.st_size if old is not None else 0
            new_usage = self._check_quota(q, len(data) - old_size, len(data))
            mode = stat.S_IMODE(old.st_mode) & 0o777 if old is not None else None
            self._replace(parent, comps[-1], mode, lambda out: _write_all(out, data))
            self._usage = new_usage
        finally:
            os.close(parent)

    def _append_file(self, comps: tuple[str, ...], q: str, content: object) -> None:
        self._writable_target(comps, q)
        data = _as_bytes(content, q)
        parent = self._walk(comps[:-1], q)
        src: int | None = None
        try:
            try:
                src, old = self._open_regular(parent, comps, q)
            except _Missing:
                old = None
            old_size = old.st_size if old is not None else 0
            self._check_quota(q, len(data), len(data))
            copied = 0

            def fill(out: int) -> None:
                nonlocal copied
                while src is not None:
                    chunk = os.read(src, _CHUNK)
                    if not chunk:
                        break
                    _write_all(out, chunk)
                    copied += len(chunk)
                _write_all(out, data)

            mode = stat.S_IMODE(old.st_mode) & 0o777 if old is not None else None
            self._replace(parent, comps[-1], mode, fill)
            self._usage = max(0, self._usage + copied + len(data) - old_size)
        finally:
            _close(src)
            os.close(parent)

    def _replace(self, parent: int, name: str, mode: int | None, fill: Callable[[int], None]) -> None:
        """Atomically put a new file at `name`: a temporary file in the same
        directory is filled, fsynced and renamed over it, then the directory
        is fsynced. On any failure the temporary file is removed and `name`
        is as it was."""
        for _ in range(16):
            tmp = TMP_PREFIX + secrets.token_hex(8)
            try:
                out = os.open(tmp, _TMP_CREATE, 0o600, dir_fd=parent)
                break
            except FileExistsError:
                continue
        else:
            raise FsError("cannot create a temporary file")  # pragma: no cover
        try:
            try:
                fill(out)
                if mode is not None:
                    os.fchmod(out, mode)
                os.fsync(out)
            finally:
                os.close(out)
            os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=parent)
            except OSError:
                pass
            raise
        dfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | _O_CLOEXEC, dir_fd=parent)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def _create_dir(self, comps: tuple[str, ...], q: str) -> None:
        os.close(self._walk(comps, q, create=True))

    def _remove_file(self, comps: tuple[str, ...], q: str) -> None:
        if not comps:
            raise FsDenied(f"{q}: refused: the path names the actor's directory itself, not a file")
        parent = self._walk(comps[:-1], q)
        try:
            st = self._lstat_in(parent, comps, q)
            if stat.S_ISDIR(st.st_mode):
                raise FsError(f"{q}: Is a directory (remove-dir removes directories)")
            self._require_regular(st, comps, q)
            os.unlink(comps[-1], dir_fd=parent)  # unlink never follows a link
            self._usage = max(0, self._usage - st.st_size)
        finally:
            os.close(parent)

    def _remove_dir(self, comps: tuple[str, ...], q: str) -> None:
        if not comps:
            raise FsDenied(f"{q}: refused: the actor's directory itself cannot be removed")
        parent = self._walk(comps[:-1], q)
        try:
            st = self._lstat_in(parent, comps, q)
            if not stat.S_ISDIR(st.st_mode):
                raise FsError(f"{q}: Not a directory (it is {_kind(st.st_mode)})")
            try:
                top = os.open(comps[-1], _DIR_READ, dir_fd=parent)
            except OSError as e:
                raise self._refuse_or_fail(e, parent, comps[-1], q, "/".join(comps)) from None
            try:
                self._tree(top, remove=True)
            finally:
                os.close(top)
            os.rmdir(comps[-1], dir_fd=parent)
        finally:
            os.close(parent)

    def _list_dir(self, comps: tuple[str, ...], q: str) -> list[tuple[str, bool, bool]]:
        if comps:
            parent = self._walk(comps[:-1], q)
            try:
                try:
                    fd = os.open(comps[-1], _DIR_READ, dir_fd=parent)
                except OSError as e:
                    raise self._refuse_or_fail(e, parent, comps[-1], q, "/".join(comps)) from None
            finally:
                os.close(parent)
        else:
            fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | _O_CLOEXEC, dir_fd=self._base_fd)
        try:
            with os.scandir(fd) as it:
                out = []
                for entry in it:
                    if entry.name.startswith(TMP_PREFIX):
                        continue
                    try:
                        entry.name.encode("utf-8")
                    except UnicodeEncodeError:
                        continue  # not UTF-8 on disk: no actor path can name it
                    out.append((entry.name, entry.is_file(follow_symlinks=False),
                                entry.is_dir(follow_symlinks=False)))
        finally:
            os.close(fd)
        out.sort(key=lambda t: t[0])
        return out

    def _metadata(self, comps: tuple[str, ...], q: str) -> FsMetadata:
        st = self._stat(comps, q)
        is_file = stat.S_ISREG(st.st_mode)
        birth = getattr(st, "st_birthtime_ns", None)  # both platform-dependent (not on Linux)
        birth_s = getattr(st, "st_birthtime", None)
        if birth is None and birth_s is not None:
            birth = int(birth_s * 1e9)
        return FsMetadata(
            name=comps[-1] if comps else ".",
            path="/".join(comps) or ".",
            size=st.st_size if is_file else 0,
            is_file=is_file,
            is_dir=stat.S_ISDIR(st.st_mode),
            created=_ms(birth),
            modified=_ms(st.st_mtime_ns),
            accessed=_ms(st.st_atime_ns),
        )

    # -- whole trees ------------------------------------------------------

    def _tree(self, top: int, *, remove: bool) -> int:
        """Walk the tree under the directory fd `top` (iteratively, every
        step an *at call relative to the parent's fd, no symlink followed).
        remove=False: return the bytes of its regular files, deleting stale
        temporary files. remove=True: delete everything under `top` (not
        `top` itself), taking each regular file's size off the usage as it
        goes. Symlinks and special files are unlinked, never opened."""
        total = 0
        stack: list[tuple[int, Iterable[tuple[str, bool]], str]] = [(top, iter(self._entries(top)), "")]
        try:
            while stack:
                fd, entries, _ = stack[-1]
                for name, is_dir in entries:
                    try:
                        if is_dir:
                            child = os.open(name, _DIR_READ, dir_fd=fd)
                            try:
                                listed = self._entries(child)
                            except BaseException:
                                os.close(child)
                                raise
                            stack.append((child, iter(listed), name))
                            break
                        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    except OSError as e:
                        # counting: an entry that vanished or changed kind since
                        # it was listed is skipped (see "behind the sandbox's back")
                        if remove or e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                            raise
                        continue
                    regular = stat.S_ISREG(st.st_mode)
                    if remove:
                        os.unlink(name, dir_fd=fd)
                        if regular:
                            self._usage = max(0, self._usage - st.st_size)
                    elif regular and name.startswith(TMP_PREFIX):
                        try:
                            os.unlink(name, dir_fd=fd)
                        except FileNotFoundError:
                            pass
                    elif regular:
                        total += st.st_size
                else:
                    _, _, name = stack.pop()
                    if stack:
                        os.close(fd)
                        if remove:
                            os.rmdir(name, dir_fd=stack[-1][0])
        finally:
            for fd, _, _ in stack[1:]:
                os.close(fd)
        return total

    @staticmethod
    def _entries(fd: int) -> list[tuple[str, bool]]:
        with os.scandir(fd) as it:
            return [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
