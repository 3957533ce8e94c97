"""supervision.toml and actor manifests: TOML in, frozen records out.

This package is the only place that reads configuration files; the rest of
the code sees `ChildSpec`, `SupFlags` and `ActorManifest` records only. The
readers live in `config.loader` (which reads each handler's settings through
the handler registry); this package's top level holds only the records, so
the handler modules can use them without an import cycle.
"""

from .model import (
    ActorManifest,
    AutoShutdown,
    ChildSpec,
    ChildType,
    HandlerConfig,
    RestartType,
    Shutdown,
    Strategy,
    SupFlags,
)

__all__ = [
    "ActorManifest", "AutoShutdown", "ChildSpec", "ChildType", "HandlerConfig",
    "RestartType", "Shutdown", "Strategy", "SupFlags",
]
