"""store: content-addressed storage with labels, persistent under the node's home.

Backend: `contentstore.ContentStore` on `HOME/store.db` (see docs/store.md),
opened on the first call in the worker process. A store is reached by its id:
an id that `new` made (a random UUID: knowing it is the capability) or one the
manifest names in `stores` (shared by every actor whose manifest names it;
created on first use). Any other id is refused.

Settings: `stores = ["team-notes", ...]`, `quota_bytes` (the most bytes of
distinct content one store may hold when this actor adds to it).

Chain: content never goes into the chain. Bytes the actor stores are recorded
as `{"sha256", "size"}`, and so are bytes `get` returns; replay serves a
recorded `get` from the node's store by that hash (`ContentStore.blob`), so a
replay needs the home, not the actor's directory or a live store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from ...config.fields import Fields
from ...contentstore import ContentStore, StoreError, content_hash
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

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@dataclass(frozen=True)
class StoreSettings:
    #: store ids the manifest names (shared stores); created on first use
    stores: tuple[str, ...] = ()
    quota_bytes: int | None = None


def _digest(data: bytes | bytearray) -> dict:
    return {"sha256": content_hash(bytes(data)), "size": len(data)}


def _content_args(args: tuple, result: Any) -> dict:
    """A call that carries bytes (store, store-at-label, replace-content-at-label): the bytes are
    recorded by hash and size; the rest as given."""
    shown = [_digest(a) if isinstance(a, (bytes, bytearray)) else recordable(a) for a in args]
    return {"args": shown, "result": recordable(result)}


def _record_get(args: tuple, result: Any) -> dict:
    data: dict[str, Any] = {"args": [recordable(a) for a in args]}
    if isinstance(result, fastabi.Ok):
        data["result"] = {"ok": _digest(result.value)}
    else:
        data["result"] = recordable(result)
    return data


def _revive(value: Any) -> Any:
    """Recorded plain data back into WIT values: {"hash": h} is a content-ref record."""
    if isinstance(value, dict) and set(value) == {"hash"}:
        return record_of(hash=value["hash"])
    if isinstance(value, list):
        return [_revive(v) for v in value]
    return value


def _replay(data: dict) -> Any:
    value = data.get("result")
    if isinstance(value, dict) and len(value) == 1:
        (tag, payload), = value.items()
        return fastabi.Ok(_revive(payload)) if tag == "ok" else fastabi.Err(payload)
    return value


class _Store:
    """One actor's view of the node's stores: which ids it may reach, its quota, the connection."""

    def __init__(self, ctx: HostContext, settings: StoreSettings):
        self.ctx = ctx
        self.settings = settings
        self._db: ContentStore | None = None
        #: replay's read-only use of store.db (`replay_get`): opened once, never creates the file
        self._replay_db: ContentStore | None = None

    def db(self) -> ContentStore:
        if self._db is None:
            home = self.ctx.actor.home
            if home is None:
                raise HostAbort("the store handler needs the node's home")
            self._db = ContentStore(home.store_db)
            for store_id in self.settings.stores:
                self._db.ensure_store(store_id)
        return self._db

    def close(self) -> None:
        for db in (self._db, self._replay_db):
            if db is not None:
                db.close()
        self._db = self._replay_db = None

    def reach(self, store_id: object) -> str:
        if not isinstance(store_id, str):
            raise StoreError("a store id is a string")
        if store_id in self.settings.stores or _UUID.match(store_id):
            return store_id
        named = ", ".join(repr(s) for s in self.settings.stores) or "none"
        raise StoreError(f"store {store_id!r} is not reachable: use an id `new` returned, or one the manifest "
                         f"names in the store handler's `stores` (it names {named})")

    def replay_get(self, data: dict) -> Any:
        value = data.get("result")
        if isinstance(value, dict) and "ok" in value:
            digest = value["ok"]
            sha = digest.get("sha256") if isinstance(digest, dict) else None
            home = self.ctx.actor.home
            if home is None or not home.store_db.is_file():
                raise HostAbort(f"store content {sha} cannot be served: replay needs the home the actor ran in "
                                f"(its store.db)")
            try:
                if self._replay_db is None:
                    self._replay_db = ContentStore(home.store_db)
                blob = self._replay_db.blob(str(sha))
            except StoreError as exc:
                raise HostAbort(f"store content {sha} cannot be read from the node's store: {exc}") from None
            if blob is None:
                raise HostAbort(f"store content {sha} is not in this node's store: "
                                f"replay needs the home the actor ran in")
            return fastabi.Ok(blob)
        return _replay(data)


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A store function: its StoreError is the actor's `err`, its value the `ok`."""
    def call(*args: Any) -> Any:
        try:
            return fastabi.Ok(fn(*args))
        except StoreError as exc:
            return fastabi.Err(str(exc))
    return call


def _content(data: Any) -> bytes:
    """Bytes to store: at most what one host call can hand back to the guest on `get`."""
    data = bytes(data)
    if len(data) > MAX_LIST_BYTES:
        raise StoreError(f"content of {len(data)} bytes is over the {MAX_LIST_BYTES}-byte limit of one value "
                         f"(what a `get` can return to an actor)")
    return data


def _ref(value: Any) -> str:
    h = getattr(value, "hash", None)
    if not isinstance(h, str):
        raise StoreError("a content-ref holds a hash string")
    return h


class Store(Handler):
    type = "store"
    interfaces = ("store",)
    summary = "content-addressed storage with labels, kept under the node's home"

    def parse_settings(self, fields: Fields) -> StoreSettings:
        stores = fields.str_list("stores", ())
        assert stores is not None
        for name in stores:
            if not name or len(name) > 256:
                raise fields.error("stores", f"{name!r} is not valid: expected a store id of 1 to 256 "
                                             f"characters", name)
        quota = fields.int("quota_bytes", None, minimum=0, maximum=2**53)
        fields.done()
        return StoreSettings(stores, quota)

    def functions(self, ctx: HostContext) -> FunctionTable:
        settings: StoreSettings = ctx.settings or StoreSettings()
        st = _Store(ctx, settings)
        ctx.on_close(st.close)
        quota = settings.quota_bytes

        def db() -> ContentStore:
            return st.db()

        ops: dict[str, Callable[..., Any]] = {
            "new": lambda: db().new_store(),
            "store": lambda sid, data: record_of(hash=db().put(st.reach(sid), _content(data), quota)),
            "get": lambda sid, ref: db().get(st.reach(sid), _ref(ref)),
            "exists": lambda sid, ref: db().exists(st.reach(sid), _ref(ref)),
            "label": lambda sid, label, ref: db().label(st.reach(sid), label, _ref(ref)),
            "get-by-label": lambda sid, label: _maybe_ref(db().get_by_label(st.reach(sid), label)),
            "remove-label": lambda sid, label: db().remove_label(st.reach(sid), label),
            "remove-from-label": lambda sid, label, ref: db().remove_from_label(st.reach(sid), label, _ref(ref)),
            "store-at-label": lambda sid, label, data: record_of(
                hash=db().store_at_label(st.reach(sid), label, _content(data), quota)),
            "replace-content-at-label": lambda sid, label, data: record_of(
                hash=db().replace_content_at_label(st.reach(sid), label, _content(data), quota)),
            "replace-at-label": lambda sid, label, ref: db().replace_at_label(st.reach(sid), label, _ref(ref)),
            "list-labels": lambda sid: db().list_labels(st.reach(sid)),
            "list-all-content": lambda sid: [record_of(hash=h) for h in db().list_all_content(st.reach(sid))],
            "calculate-total-size": lambda sid: db().calculate_total_size(st.reach(sid)),
        }
        with_content = {"store", "store-at-label", "replace-content-at-label"}
        table: dict[str, HostFunction] = {}
        for name, op in ops.items():
            if name == "get":
                table[name] = HostFunction(_guard(op), record=_record_get, replay=st.replay_get)
            elif name in with_content:
                table[name] = HostFunction(_guard(op), record=_content_args, replay=_replay)
            else:
                table[name] = HostFunction(_guard(op), replay=_replay)
        return same_functions(table, *self.provides())


def _maybe_ref(h: str | None) -> Any:
    return record_of(hash=h) if h is not None else None


HANDLER = Store()
