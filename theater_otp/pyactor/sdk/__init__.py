"""The actor-side SDK (`theater_sdk.py`): bundled into each Python actor by componentize-py.

It is not imported by theater-otp itself; `theater-otp create` copies it into a new project and
`theater-otp build` adds this folder to componentize-py's Python path for projects without a copy.
"""

from pathlib import Path

SDK_DIR = Path(__file__).resolve().parent
SDK_FILE = SDK_DIR / "theater_sdk.py"
