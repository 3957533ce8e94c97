"""Nodes joined over NATS (docs/cluster.md). Imported only when a node or a verb is given a cluster."""
