"""A nats-server and nodes joined through it, for the cluster tests (docs/cluster.md)."""

from __future__ import annotations

from pathlib import Path

from harness import Tree, free_port
from natsfix import NatsFixture


class Cluster:
    """One nats-server with JetStream and the nodes `up` joins to it; `close()` stops the nodes
    (the last booted, usually the supervising one, first) and then the server."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.nats = NatsFixture(folder / "nats", free_port())
        self.nats.start()
        self.trees: dict[str, Tree] = {}

    def up(self, name: str, supervision: str) -> Tree:
        """Boot node `name` (its home in folder/name) with `supervision` as its tree."""
        where = self.folder / name
        where.mkdir()
        tree = Tree(where, supervision, up_args=("--cluster", self.nats.url, "--node-name", name))
        tree.__enter__()
        self.trees[name] = tree
        return tree

    def close(self) -> None:
        for tree in reversed(list(self.trees.values())):
            tree.close()
        self.nats.stop()
