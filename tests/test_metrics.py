"""The node's Prometheus endpoint (`up --metrics HOST:PORT`, node/metrics.py): scraped from a real
node with a real HTTP client, parsed with prometheus_client's own text parser."""

from __future__ import annotations

import socket

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import Tree, cli, free_port, write_manifest
from theater_otp.node.metrics import parse_address

TREE = """
    [supervisor]
    id = "root"
    intensity = 10
    period = 60
    [[supervisor.children]]
    id = "counter"
    manifest = "counter.toml"
"""


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(samples: dict, metric: str, **labels: str) -> float | None:
    for (sample, got), value in samples.items():
        if sample == metric and all(dict(got).get(k) == v for k, v in labels.items()):
            return value
    return None


@pytest.mark.integration
def test_the_endpoint_counts_messages_exits_restarts_and_reads_mailboxes_memory_and_the_chain(tmp_path):
    write_manifest(tmp_path, "counter", "counter.wat", initial_state="0")
    port = free_port()
    with Tree(tmp_path, TREE, up_args=("--metrics", f"127.0.0.1:{port}")) as tree:
        tree.wait_running()
        for _ in range(3):
            tree.call("send", {"target": "counter", "payload": b"inc"})
        assert tree.call("request", {"target": "counter", "payload": b"get"})["ok"] == b"3"
        samples = _scrape(port)
        assert _value(samples, "theater_messages_in_total", path="root/counter") == 4
        assert _value(samples, "theater_mailbox_depth", path="root/counter", name="counter") is not None
        assert (_value(samples, "theater_actor_rss_bytes", path="root/counter") or 0) > 1_000_000
        assert (_value(samples, "theater_chain_events_stored_total") or 0) > 0
        # the chain-writer's own histogram, asked of it at scrape time
        assert (_value(samples, "theater_chain_commit_seconds_count") or 0) > 0
        assert _value(samples, "theater_chain_commit_seconds_bucket", le="+Inf") == \
            _value(samples, "theater_chain_commit_seconds_count")
        assert _value(samples, "theater_restarts_total", path="root/counter") is None

        old = tree.kill("root/counter")
        tree.wait_for(lambda: tree.node("root/counter")["pid"] not in (None, old)
                      and tree.node("root/counter")["status"] == "running", what="the restart")
        samples = _scrape(port)
        assert _value(samples, "theater_restarts_total", path="root/counter") == 1
        assert _value(samples, "theater_worker_exits_total", reason="killed") == 1
        assert _value(samples, "theater_restart_seconds_count") == 1
        assert (_value(samples, "theater_restart_seconds_sum") or 0) > 0

        # read-only: nothing but GET changes anything, and a write is refused
        assert httpx.post(f"http://127.0.0.1:{port}/metrics", content=b"x", timeout=10).status_code >= 400


@pytest.mark.integration
def test_a_metrics_port_in_use_stops_up_with_one_line_naming_it(tmp_path):
    write_manifest(tmp_path, "counter", "counter.wat", initial_state="0")
    (tmp_path / "supervision.toml").write_text(TREE)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = cli("up", str(tmp_path / "supervision.toml"), "--detach", "--metrics", f"127.0.0.1:{port}",
                  home=tmp_path / "home")
    assert out.returncode != 0
    assert f"cannot serve metrics on 127.0.0.1:{port}" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.unit
def test_an_address_is_host_and_port_and_loopback_by_default():
    assert parse_address("9464") == ("127.0.0.1", 9464)
    assert parse_address("0.0.0.0:80") == ("0.0.0.0", 80)
    assert parse_address("[::1]:9464") == ("::1", 9464)
    for bad in ("", "host:", "host:x", "host:70000", "1.2.3.4:-1"):
        with pytest.raises(ValueError):
            parse_address(bad)
