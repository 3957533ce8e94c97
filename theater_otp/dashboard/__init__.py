"""The web dashboard: `theater-otp up ... --dashboard [ADDR]` / `server --dashboard [ADDR]`.

Its own process (`python -m theater_otp.dashboard`), started by the CLI's `_boot` once the node is
ready; an aiohttp server on loopback with a random token, a static page (static/) that streams the
tree, each actor's events and logs and the restart latencies over Server-Sent Events, and restart /
stop buttons that call the CLI's own `restart_target` / `stop_target`. It ends when the node ends
(a pidfd on the node's pid). See docs/dashboard.md.
"""

from .launch import DEFAULT_ADDRESS, DashboardError, parse_address, start

__all__ = ["DEFAULT_ADDRESS", "DashboardError", "parse_address", "start"]
