"""kvwatch: every interval_ms (2 s in the demo) it GETs kv's key list over HTTP and logs what it sees
(manifests/http-demo/). It calls out through the http-client handler (allowed_hosts lists only
127.0.0.1), so each call is a `host.http-client.send-http` event in its chain.

It works from messages it sends itself: init sends "tick GEN"; each tick looks, sleeps interval_ms
with the timing handler (never time.sleep: that is a crash) and sends the next tick. A tick of an
older generation is dropped, so `start` never makes two loops.

State (JSON): {"url", "interval_ms", "running", "generation", "looks", "failures", "last"}
  send    "tick GEN"   one look, sleep, next tick;  "start" / "stop" the loop;  "look" one look now
  request "status"     the state as JSON;  "look"  one look now, replies what it saw
"""

import theater_sdk as sdk
from wit_world import exports

DEFAULT = {"url": "http://127.0.0.1:8088/kv", "interval_ms": 2000, "running": True, "generation": 0,
           "looks": 0, "failures": 0, "last": None}


def _look(s: dict) -> str:
    """GET the key list; log and remember what came back (the keys, another status, or the error)."""
    s["looks"] += 1
    try:
        resp = sdk.http.fetch("GET", s["url"], headers={"Accept": "application/json"})
        if resp.ok:
            found = resp.json().get("keys", [])
            seen = (f"kv has {len(found)} key{'s' * (len(found) != 1)}: {', '.join(found)}" if found
                    else "kv has no keys")
        else:
            s["failures"] += 1
            seen = f"kv answered {resp.status}: {resp.text().strip()[:200]}"
    except (sdk.HostError, ValueError, AttributeError) as exc:   # refused, down, or not JSON
        s["failures"] += 1
        seen = f"GET {s['url']} failed: {exc}"
    s["last"] = seen
    sdk.log("kvwatch:", seen)
    return seen


def _schedule(s: dict) -> None:
    sdk.send(sdk.actor_id(), f"tick {s['generation']}")


class Actor(sdk.Guard, exports.Actor):
    def init(self, state):
        s = sdk.load(state, DEFAULT)
        sdk.log("kvwatch up: every", s["interval_ms"], "ms GET", s["url"])
        if s["running"]:
            _schedule(s)            # the loop starts once init has returned
        return (sdk.dump(s),)


class MessageServerClient(sdk.Guard, sdk.NoChannels, exports.MessageServerClient):
    def handle_send(self, state, params):
        (msg,) = params
        s = sdk.load(state, DEFAULT)
        cmd, _, arg = sdk.text(msg).partition(" ")
        if cmd == "tick":
            if s["running"] and arg == str(s["generation"]):
                _look(s)
                try:
                    sdk.sleep(s["interval_ms"])
                except sdk.HostError:   # interrupted: the actor is being stopped
                    return (sdk.dump(s),)
                _schedule(s)
        elif cmd == "look":
            _look(s)
        elif cmd == "start":
            s["running"] = True
            s["generation"] += 1
            _schedule(s)
        elif cmd == "stop":
            s["running"] = False
        else:
            sdk.log("kvwatch: unknown message", sdk.text(msg))
        return (sdk.dump(s),)

    def handle_request(self, state, params):
        request_id, msg = params
        s = sdk.load(state, DEFAULT)
        if msg == b"look":
            reply = _look(s).encode()
        elif msg == b"status":
            reply = sdk.dump(s)
        else:
            reply = b"unknown request: " + msg
        return (sdk.dump(s), (reply,))
