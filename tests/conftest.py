import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True, scope="session")
def _shared_component_cache(tmp_path_factory):
    """Tests compile into one cache per run (never the user's ~/.cache)."""
    os.environ.setdefault("THEATER_OTP_CACHE", str(tmp_path_factory.mktemp("component-cache")))
    yield


#: The modules that take longest (pytest --durations, 2026-12-03), run first: with `--dist loadfile`
#: each module goes whole to one worker in collection order, so a long one collected last would
#: keep one worker busy after the others ran out of work.
LONG_MODULES = ("test_otp_conformance", "test_python_actors", "test_chain_durability", "test_python_handlers",
                "test_replay", "test_actor_supervision", "test_limits", "test_chaos", "test_malformed_frames",
                "test_env_random_runtime", "test_messaging", "test_filesystem_handler", "test_http_client",
                "test_python_http", "test_security", "test_control_fuzz", "test_server_mode", "test_node_fault_props",
                "test_events_push", "test_prestart", "test_dashboard", "test_top")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONG_MODULES)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).stem, len(LONG_MODULES)))
