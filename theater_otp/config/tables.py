"""A child spec back as the table supervision.toml would hold: what a node sends another node that
is to run the child (docs/cluster.md), read there with the same rules (`parse_dynamic_child`)."""

from __future__ import annotations

from typing import Any

from .model import ChildSpec, ChildType, SupFlags


def flags_table(flags: SupFlags) -> dict[str, Any]:
    table: dict[str, Any] = {"strategy": flags.strategy.value, "intensity": flags.intensity,
                             "period": flags.period, "auto_shutdown": flags.auto_shutdown.value}
    if flags.backoff is not None:
        table["backoff"] = {"initial_ms": flags.backoff.initial_ms, "max_ms": flags.backoff.max_ms,
                            "reset_after_s": flags.backoff.reset_after_s}
    return table


def spec_table(spec: ChildSpec) -> dict[str, Any]:
    """`spec` as a child table: read back by config.loader.parse_dynamic_child, it is `spec` again
    (manifests by their file's path, read again where the table is read)."""
    table: dict[str, Any] = {"id": spec.id, "type": spec.type.value, "restart": spec.restart.value,
                             "shutdown": spec.shutdown.to_plain(), "significant": spec.significant}
    if spec.node is not None:
        table["node"] = spec.node
    if spec.type is ChildType.WORKER:
        assert spec.manifest is not None and spec.manifest.source is not None
        table["manifest"] = str(spec.manifest.source)
    else:
        table.update(flags_table(spec.flags))
        table["children"] = [spec_table(child) for child in spec.children]
    return table


__all__ = ["flags_table", "spec_table"]
