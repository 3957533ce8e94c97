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
