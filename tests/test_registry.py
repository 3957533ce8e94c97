"""The registry's indexed lookups give what a scan of every actor gives (issue 11: resolving a
name scanned every actor, so each lookup grew with the tree)."""

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theater_otp.node.registry import Registry

pytestmark = pytest.mark.unit


@dataclass
class _Proc:
    sentinel: int


@dataclass(eq=False)
class _Handle:
    """What the registry reads of a WorkerHandle."""

    path: str
    identity: bytes
    process: _Proc
    name: str


def _scan(reg: Registry, ref: str, from_path: str | None):
    """The lookup as it was, scanning every path and worker: the reference."""
    for path, aid in reg.actor_ids.items():
        if aid == ref:
            return path
    if ref in reg.actor_ids:
        return ref
    if from_path and "/" in from_path:
        sibling = from_path.rsplit("/", 1)[0] + "/" + ref
        if sibling in reg.actor_ids:
            return sibling
    suffix = sorted(p for p in reg.actor_ids if p.endswith("/" + ref))
    if len(suffix) == 1:
        return suffix[0]
    if suffix:
        return None
    named = sorted({h.path for h in reg.workers.values() if h.name == ref})
    if len(named) == 1:
        return named[0]
    return None


segment = st.sampled_from(["a", "b", "c", "w", "team", "x1"])
paths = st.lists(st.lists(segment, min_size=0, max_size=3).map(lambda parts: "/".join(["root", *parts])),
                 min_size=1, max_size=25, unique=True)


@settings(max_examples=300, deadline=None)
@given(tree=paths, names=st.lists(st.sampled_from(["alpha", "beta", "w", "a"]), min_size=25, max_size=25),
       live=st.lists(st.booleans(), min_size=25, max_size=25), gone=st.lists(st.booleans(), min_size=25, max_size=25),
       refs=st.lists(st.one_of(segment, st.sampled_from(["alpha", "beta", "root", "team/w", "a/b", "nope", ""])),
                     max_size=10),
       from_index=st.integers(min_value=0, max_value=24))
def test_indexed_resolve_matches_a_scan_of_every_actor(tree, names, live, gone, refs, from_index):
    reg = Registry()
    handles = []
    for i, path in enumerate(tree):
        reg.actor_id_for(path)
        if live[i]:
            h = _Handle(path, f"{path}/1".encode(), _Proc(1000 + i), names[i])
            reg.add(h)  # type: ignore[arg-type]
            handles.append((h, gone[i]))
    for h, is_gone in handles:  # some workers end: their names stop resolving
        if is_gone:
            reg.remove(h)  # type: ignore[arg-type]
    from_path = tree[from_index % len(tree)]
    for ref in refs + [reg.actor_ids[tree[0]]]:
        got = reg.resolve_path(ref, from_path)
        want = _scan(reg, ref, from_path)
        assert (got if isinstance(got, str) else None) == want, (ref, from_path)
