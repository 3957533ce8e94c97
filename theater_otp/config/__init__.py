"""supervision.toml and actor manifests: TOML in, frozen records out.

This package is the only place that reads configuration files; the rest of
the code sees `ChildSpec`, `SupFlags` and `ActorManifest` records only.
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
from .loader import load_manifest, load_supervision, parse_child_spec, parse_dynamic_child

__all__ = [
    "ActorManifest", "AutoShutdown", "ChildSpec", "ChildType", "HandlerConfig",
    "RestartType", "Shutdown", "Strategy", "SupFlags",
    "load_manifest", "load_supervision", "parse_child_spec", "parse_dynamic_child",
]
