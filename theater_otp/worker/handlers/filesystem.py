"""filesystem: one directory per actor, served through `theater_otp.sandboxfs.SandboxFS`.

Settings (one `[[handler]] type = "filesystem"` table):

* `path = "dir"`: the actor's directory (its *base*), resolved against the
  manifest's folder; it must exist and be a directory when the manifest is read;
* or `new_dir = true`: a fresh 0700 directory under `HOME/fs/<actor id>/`, made
  with `sandboxfs.new_actor_dir` at the actor's first filesystem call and kept
  for every later incarnation of the same actor id (a restart finds its files
  again; a new node run gives the actor a new id, so a new directory). Exactly
  one of the two is required.
* `read_only`, `quota_bytes`, `allowed_commands` (groups `read`, `write`,
  `delete` or operation names; Theater's `execute-command` is refused with the
  reason), `max_read_bytes` (default 1 MiB, at most MAX_LIST_BYTES: what one host call can
  hand the guest).

The backend is opened lazily, on the actor's first filesystem call in the
worker, and closed with the actor instance. Every `FsDenied` / `FsError` is the
actor's `err`: its message names the actor's path and the rule.

Chain: contents never bloat it. write-file and append-file record their content
argument as `{"sha256", "size"}`, plus `"inline": bytes` when it is at most
recorded_bytes.INLINE_MAX bytes; read-file records its `ok` the same way, and keeps larger
content in the node's `store.db` (`ContentStore.put_blob`) so that replay
serves it by hash without the directory. Other results are recorded as
returned and revived into their WIT values on replay.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ...config.fields import Fields
from ...contentstore import StoreError
from ...sandboxfs import (
    NOT_OFFERED,
    OPERATIONS,
    FsFailure,
    FsMetadata,
    SandboxFS,
    check_allowed_commands,
    new_actor_dir,
)
from .. import fastabi
from .base import (
    MAX_LIST_BYTES,
    FunctionTable,
    Handler,
    HostAbort,
    HostContext,
    HostFunction,
    record_of,
    recordable,
    same_functions,
)
from .recorded_bytes import NodeBlobs, digest

DEFAULT_MAX_READ_BYTES = 1024 * 1024
#: `max_read_bytes` may not exceed what one host call can copy into the guest (see base.MAX_LIST_BYTES).
MAX_READ_LIMIT = MAX_LIST_BYTES
#: Under HOME: the directories of `new_dir = true` actors, one folder per actor id.
FS_DIR = "fs"


@dataclass(frozen=True)
class FilesystemSettings:
    #: the base directory (resolved, checked to be a directory when the manifest was read)
    path: Path | None = None
    #: a fresh directory under HOME/fs/<actor id> instead of `path`
    new_dir: bool = False
    read_only: bool = False
    quota_bytes: int | None = None
    #: None: every operation; else groups and/or operation names
    allowed_commands: tuple[str, ...] | None = None
    max_read_bytes: int = DEFAULT_MAX_READ_BYTES


# ---- chain records ----------------------------------------------------------------------------

def _record_write(args: tuple, result: Any) -> dict:
    """write-file / append-file: the path as given, the content by hash and size."""
    path, content = args
    shown = digest(content) if isinstance(content, (bytes, bytearray, memoryview, list)) else recordable(content)
    return {"args": [recordable(path), shown], "result": recordable(result)}


def _record_read(args: tuple, result: Any) -> dict:
    data: dict[str, Any] = {"args": [recordable(a) for a in args]}
    if isinstance(result, fastabi.Ok):
        data["result"] = {"ok": digest(result.value)}
    else:
        data["result"] = recordable(result)
    return data


def _tagged(value: Any, revive: Callable[[Any], Any] = lambda v: v) -> Any:
    """A recorded {"ok": v} / {"err": e} back into Ok / Err (anything else as recorded)."""
    if isinstance(value, dict) and len(value) == 1:
        (tag, payload), = value.items()
        if tag == "ok":
            return fastabi.Ok(revive(payload))
        if tag == "err":
            return fastabi.Err(payload)
    return value


def _replay_plain(data: dict) -> Any:
    return _tagged(data.get("result"))


def _replay_list(data: dict) -> Any:
    return _tagged(data.get("result"), lambda entries: [record_of(**e) for e in entries])


def _replay_metadata(data: dict) -> Any:
    return _tagged(data.get("result"), lambda fields: record_of(**fields))


# ---- settings -----------------------------------------------------------------------------------

def _commands_problem(unknown: list[str]) -> str:
    parts = []
    for name in unknown:
        if name in NOT_OFFERED:
            parts.append(f"{name!r} is not offered ({NOT_OFFERED[name]})")
        else:
            parts.append(f"{name!r} is not a filesystem command")
    groups = ", ".join(sorted(set(OPERATIONS.values())))
    return (f"{'; '.join(parts)}: expected groups ({groups}) or operations "
            f"({', '.join(OPERATIONS)})")


def _actor_folder(actor_id: str) -> str:
    """A folder name for an actor id: the id itself when it is a plain name (a UUID), else a hash."""
    if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", actor_id):
        return actor_id
    return "id-" + hashlib.sha256(actor_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def new_dir_base(home_root: Path, actor_id: str) -> Path:
    """The `new_dir` directory of an actor id: the one an earlier incarnation made, else a fresh one."""
    fs_root = home_root / FS_DIR
    folder = fs_root / _actor_folder(actor_id)
    if folder.is_dir():
        made = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
        if made:
            return made[0]
    fs_root.mkdir(mode=0o700, parents=True, exist_ok=True)
    return new_actor_dir(folder, actor_id)


# ---- the live side ------------------------------------------------------------------------------

class _Fs:
    """One actor incarnation's filesystem: the SandboxFS (opened on first use) and, for reads
    kept by hash, the node's content store."""

    def __init__(self, ctx: HostContext, settings: FilesystemSettings | None):
        self.ctx = ctx
        self.settings = settings
        self._sandbox: SandboxFS | None = None
        self.blobs = NodeBlobs(ctx, "read-file content")

    def sandbox(self) -> SandboxFS:
        if self._sandbox is None:
            s = self.settings
            if s is None:
                raise HostAbort("the filesystem handler has no settings (replay serves calls from the chain)")
            if s.new_dir:
                home = self.ctx.actor.home
                if home is None:
                    raise FsFailure("new_dir = true needs the node's home, and this actor has none")
                try:
                    base = new_dir_base(home.root, self.ctx.actor.actor_id)
                except OSError as exc:
                    raise FsFailure(f"the actor's new directory cannot be made: {exc.strerror or exc}") from None
            else:
                assert s.path is not None
                base = s.path
            allowed = frozenset(s.allowed_commands) if s.allowed_commands is not None else None
            self._sandbox = SandboxFS(base, read_only=s.read_only, quota_bytes=s.quota_bytes, allowed=allowed,
                                      max_read_bytes=s.max_read_bytes)
        return self._sandbox

    def close(self) -> None:
        sandbox, self._sandbox = self._sandbox, None
        if sandbox is not None:
            sandbox.close()
        self.blobs.close()

    def read_file(self, path: str) -> bytes:
        data = self.sandbox().read_file(path)
        try:
            self.blobs.keep(data)
        except StoreError as exc:
            self.ctx.services.log_line(f"filesystem: read-file content not kept for replay: {exc}")
            raise FsFailure(f"{json.dumps(str(path)[:120], ensure_ascii=False)}: refused: the content could "
                            f"not be kept in the node's store for replay") from None
        return data

    def replay_read(self, data: dict) -> Any:
        value = data.get("result")
        if isinstance(value, dict) and isinstance(value.get("ok"), dict):
            return fastabi.Ok(self.blobs.fetch(value["ok"]))
        return _tagged(value)


def _as_bytes(content: Any) -> Any:
    return bytes(content) if isinstance(content, (bytearray, memoryview, list)) else content


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The backend's refusal or failure is the actor's `err` (its message); a value its `ok`."""
    def call(*args: Any) -> Any:
        try:
            return fastabi.Ok(fn(*args))
        except FsFailure as exc:
            return fastabi.Err(exc.message)
    return call


def _entries(entries: list[tuple[str, bool, bool]]) -> list[Any]:
    return [record_of(name=name, is_file=is_file, is_dir=is_dir) for name, is_file, is_dir in entries]


def _metadata(m: FsMetadata) -> Any:
    return record_of(name=m.name, path=m.path, size=m.size, is_file=m.is_file, is_dir=m.is_dir,
                     created=m.created, modified=m.modified, accessed=m.accessed)


class Filesystem(Handler):
    type = "filesystem"
    interfaces = ("filesystem",)
    summary = "one directory per actor: files and directories under a base it cannot leave"

    def parse_settings(self, fields: Fields) -> FilesystemSettings:
        raw_path = fields.raw.get("path")
        path = fields.path("path")
        new_dir = fields.bool("new_dir", False)
        if path is not None and new_dir:
            raise fields.error("new_dir", "give either `path` (an existing directory) or `new_dir = true` "
                                          "(a fresh one under the node's home), not both", True)
        if path is None and not new_dir:
            raise fields.where.error(f"{fields.key}.type", "the filesystem handler needs a directory: set "
                                                           "`path = \"dir\"` (an existing directory, relative to the "
                                                           "manifest) or `new_dir = true`", "filesystem")
        if path is not None:
            if not path.exists():
                raise fields.error("path", f"{raw_path!r} is not valid: directory not found: {path}", raw_path)
            if not path.is_dir():
                raise fields.error("path", f"{raw_path!r} is not valid: {path} is not a directory", raw_path)
        read_only = fields.bool("read_only", False)
        quota = fields.int("quota_bytes", None, minimum=0, maximum=2**53)
        allowed = fields.str_list("allowed_commands", None)
        if allowed is not None:
            unknown = check_allowed_commands(allowed)
            if unknown:
                raise fields.error("allowed_commands", _commands_problem(unknown), list(allowed))
        max_read = fields.int("max_read_bytes", DEFAULT_MAX_READ_BYTES, minimum=0, maximum=MAX_READ_LIMIT)
        fields.done()
        assert max_read is not None
        return FilesystemSettings(path=path, new_dir=new_dir, read_only=read_only, quota_bytes=quota,
                                  allowed_commands=allowed, max_read_bytes=max_read)

    def functions(self, ctx: HostContext) -> FunctionTable:
        fs = _Fs(ctx, ctx.settings)
        ctx.on_close(fs.close)

        def sb() -> SandboxFS:
            return fs.sandbox()

        table: dict[str, HostFunction] = {
            "read-file": HostFunction(_guard(fs.read_file), record=_record_read, replay=fs.replay_read),
            "write-file": HostFunction(_guard(lambda p, c: sb().write_file(p, _as_bytes(c))),
                                       record=_record_write, replay=_replay_plain),
            "append-file": HostFunction(_guard(lambda p, c: sb().append_file(p, _as_bytes(c))),
                                        record=_record_write, replay=_replay_plain),
            "exists": HostFunction(_guard(lambda p: sb().exists(p)), replay=_replay_plain),
            "is-file": HostFunction(_guard(lambda p: sb().is_file(p)), replay=_replay_plain),
            "is-dir": HostFunction(_guard(lambda p: sb().is_dir(p)), replay=_replay_plain),
            "create-dir": HostFunction(_guard(lambda p: sb().create_dir(p)), replay=_replay_plain),
            "remove-file": HostFunction(_guard(lambda p: sb().remove_file(p)), replay=_replay_plain),
            "remove-dir": HostFunction(_guard(lambda p: sb().remove_dir(p)), replay=_replay_plain),
            "list-dir": HostFunction(_guard(lambda p: _entries(sb().list_dir(p))), replay=_replay_list),
            "metadata": HostFunction(_guard(lambda p: _metadata(sb().metadata(p))), replay=_replay_metadata),
        }
        return same_functions(table, *self.provides())


HANDLER = Filesystem()
