"""How handlers put bytes in the chain: by hash and size, inline when small, the rest kept by hash.

A file's content, an HTTP body: the chain is an audit log, and whole contents
would bloat it. `digest(data)` is what the chain records. Bytes an actor
*received* (a file read, a response body) must come back on replay without the
directory or the network, so a handler keeps the larger ones in the node's
`store.db` with `NodeBlobs.keep`; replay gets them back with `NodeBlobs.fetch`.

Not a handler (no HANDLER): the registry leaves it alone.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ...contentstore import ContentStore, StoreError
from .base import HostAbort, HostContext

#: Bytes up to this size are recorded inline as well as by hash.
INLINE_MAX = 256


def digest(data: bytes | bytearray | memoryview | list) -> dict[str, Any]:
    """The chain's record of some bytes: {"sha256", "size"}, plus "inline" when small."""
    data = bytes(data)
    shown: dict[str, Any] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    if len(data) <= INLINE_MAX:
        shown["inline"] = data
    return shown


class NodeBlobs:
    """The node's blob store for one actor incarnation, opened on first use; `close()` via
    ctx.on_close. `what` names the bytes in errors ("read-file content", "response body")."""

    def __init__(self, ctx: HostContext, what: str):
        self.ctx = ctx
        self.what = what
        self._db: ContentStore | None = None

    def _store(self) -> ContentStore:
        if self._db is None:
            home = self.ctx.actor.home
            if home is None or (self.ctx.replaying and not home.store_db.exists()):
                raise StoreError("replay needs the home the actor ran in (its store.db)")
            self._db = ContentStore(home.store_db)
        return self._db

    def keep(self, data: bytes) -> None:
        """Keep bytes the actor received, when too large to be inline (raises StoreError)."""
        if len(data) > INLINE_MAX:
            self._store().put_blob(data)

    def fetch(self, recorded: dict) -> bytes:
        """The bytes a `digest` stands for: inline, or from the store; a HostAbort naming them if
        they cannot be had (replay stops there, with that reason)."""
        if "inline" in recorded:
            return bytes(recorded["inline"])
        sha, size = recorded.get("sha256"), recorded.get("size")
        try:
            blob = self._store().blob(str(sha))
        except StoreError as exc:
            raise HostAbort(f"{self.what} {sha} ({size} bytes) cannot be served: {exc}") from None
        if blob is None:
            raise HostAbort(f"{self.what} {sha} ({size} bytes) is not in this node's store: replay needs the "
                            f"home the actor ran in")
        return blob

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()
