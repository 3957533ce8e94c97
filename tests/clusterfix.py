"""A nats-server and nodes joined through it, for the cluster tests (docs/cluster.md)."""

from __future__ import annotations

from pathlib import Path

from harness import Tree, free_port
from natsfix import NatsFixture


def leaf_tree(node: str, counter: Path, echo: Path) -> str:
    """The tree the cluster tests give each node but the supervising one: root `r<digit>` with a
    counter `c<digit>` and an echo `e<digit>` (n2 -> r2, c2, e2)."""
    digit = node[1:]
    return f"""
        [supervisor]
        id = "r{digit}"
        strategy = "one_for_one"

        [[supervisor.children]]
        id = "c{digit}"
        manifest = "{counter}"

        [[supervisor.children]]
        id = "e{digit}"
        manifest = "{echo}"
    """


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
