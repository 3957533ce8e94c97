"""The node's compiled components: those `up` compiled, and those children started later need.

Compiling a large component takes seconds (a Python actor: 10-30 s), so
`Components.ensure` compiles what is missing on a thread while the loop keeps
serving, then checks each manifest's grants against its component's imports.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ..config.model import ActorManifest
from ..errors import TheaterError
from ..worker.component import CompiledComponent
from ..worker.handlers import granted_types
from .loop import Loop

if TYPE_CHECKING:
    from wasmtime import Engine

log = logging.getLogger("theater_otp.node")


class Components(dict[Path, CompiledComponent]):
    """Compiled components by source path (a dict), and compiling more off the loop."""

    def __init__(self, loop: Loop, compiled: dict[Path, CompiledComponent]):
        super().__init__(compiled)
        self.loop = loop
        self._engine: Engine | None = None  # created on the first compile after `up` (compiling needs one)

    def ensure(self, manifests: Iterable[ActorManifest], then: Callable[[Exception | None], None]) -> None:
        """Make sure these manifests' components are compiled and fit their grants, then call
        `then(error or None)` on the loop (at once when nothing needs compiling)."""
        from ..worker.component import check_actor_abi, compile_component, new_engine

        wanted = list(manifests)

        def check_then() -> None:
            """`then` with the first grant that does not fit its component, or None."""
            try:
                for manifest in wanted:
                    check_actor_abi(self[manifest.component], granted_types(manifest.handlers), manifest.source)
            except TheaterError as exc:
                then(exc)
                return
            then(None)

        missing = sorted({m.component for m in wanted if m.component not in self})
        if not missing:
            check_then()
            return
        engine = self._engine = self._engine or new_engine()

        def finish(result: object) -> None:
            if isinstance(result, Exception):
                then(result)
                return
            assert isinstance(result, dict)
            self.update(result)
            check_then()

        log.info("compiling %s off the loop", ", ".join(str(p) for p in missing))
        self.loop.in_thread(lambda: {path: compile_component(path, engine) for path in missing}, finish,
                            name="compile")


__all__ = ["Components"]
