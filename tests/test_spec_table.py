"""config/tables.py: a child spec sent to another node as a table is read back there as the same spec."""

from __future__ import annotations

import pytest

from harness import write_manifest
from theater_otp.config.loader import load_supervision, parse_dynamic_child
from theater_otp.config.model import SupFlags
from theater_otp.config.tables import spec_table

pytestmark = pytest.mark.unit


def test_every_child_of_a_tree_comes_back_the_same(tmp_path):
    write_manifest(tmp_path, "counter", "counter.wat", initial_state="0")
    write_manifest(tmp_path, "echo", "echo.wat")
    (tmp_path / "supervision.toml").write_text(f"""
[supervisor]
id = "root"
strategy = "rest_for_one"
intensity = 7
period = 9

[[supervisor.children]]
id = "a"
manifest = "{tmp_path / 'counter.toml'}"
restart = "transient"
shutdown = "brutal_kill"
node = "any"

[[supervisor.children]]
id = "team"
type = "supervisor"
strategy = "one_for_all"
intensity = 3
period = 2
auto_shutdown = "any_significant"
backoff = {{ initial_ms = 50, max_ms = 800, reset_after_s = 10 }}
node = "n3"
shutdown = "infinity"

  [[supervisor.children.children]]
  id = "t1"
  manifest = "{tmp_path / 'echo.toml'}"
  restart = "temporary"
  significant = true
  shutdown = 250

  [[supervisor.children.children]]
  id = "t2"
  manifest = "{tmp_path / 'counter.toml'}"
  node = "n1"
""")
    root = load_supervision(tmp_path / "supervision.toml")
    for child in root.children:
        again = parse_dynamic_child(spec_table(child), "test", root.flags)
        assert again == child
    assert spec_table(root.children[1])["children"][1]["node"] == "n1"
    assert parse_dynamic_child(spec_table(root.children[0]), "test", SupFlags()).node == "any"
