"""coordinator: dispatches word-count tasks to the workers and forwards the results to the aggregator.

Part of the Python demo team (manifests/python-demo). Every round it takes the next document of
CORPUS, gives each worker (by name) a slice of its lines with a request, and sends every reply (or
the failure, when a worker is down or restarting) to the aggregator. Rounds run on their own, one
every `interval_ms`, through a message the coordinator sends itself after sleeping.

State (JSON): {"workers": [NAME, ...], "aggregator": NAME, "self": NAME, "interval_ms": MS,
               "running": BOOL, "generation": N, "round": N, "dispatched": N, "failed": N,
               "last_errors": [TEXT, ...]}
  send    "tick GEN"  one round, then sleep interval_ms and send itself "tick GEN" again
                      (a tick of an older generation is dropped: `start` never makes two loops)
          "go"        one round now
          "start"     (re)start the loop;  "stop"  stop it after the current round
  request "status"    the state as JSON
          "go"        one round now; replies its results as JSON
"""

import theater_sdk as sdk
from wit_world import exports

DEFAULT = {
    "workers": ["w1", "w2", "w3"],
    "aggregator": "aggregator",
    "self": "coordinator",
    "interval_ms": 1000,
    "running": True,
    "generation": 0,
    "round": 0,
    "dispatched": 0,
    "failed": 0,
    "last_errors": [],
}

CORPUS = [
    "the actor model treats actors as the universal primitives of concurrent computation\n"
    "in response to a message an actor can make local decisions create more actors\n"
    "send more messages and determine how to respond to the next message received",
    "let it crash is the erlang way of handling failure\n"
    "a supervisor watches its children and restarts them when they fail\n"
    "one for one restarts only the child that failed one for all restarts them all",
    "webassembly components run sandboxed with only the capabilities they are granted\n"
    "every message in and every host call out is recorded in a hash chain\n"
    "the chain lets you replay and audit what an agent did and why",
    "a team of agents splits a task into parts and each part goes to a worker\n"
    "the workers reply with their results and an aggregator keeps the running totals\n"
    "when a worker dies its supervisor starts a fresh one in milliseconds",
]


def _round(s):
    """One round: a slice of the next document to each worker, every outcome to the aggregator."""
    s["round"] += 1
    lines = CORPUS[(s["round"] - 1) % len(CORPUS)].split("\n")
    workers = s["workers"]
    outcomes = []
    for i, worker in enumerate(workers):
        part = "\n".join(lines[i::len(workers)])
        task = {"task": f"{s['round']}-{worker}", "round": s["round"], "text": part}
        try:
            result = sdk.request_json(worker, task)
            report = {"round": s["round"], "worker": worker, "words": result["words"],
                      "counts": result["counts"], "sha256": result["sha256"]}
            s["dispatched"] += 1
        except (sdk.CallError, ValueError, KeyError) as exc:  # worker down, restarting or confused
            report = {"round": s["round"], "worker": worker, "error": str(exc)}
            s["failed"] += 1
            s["last_errors"] = (s["last_errors"] + [f"round {s['round']} {worker}: {exc}"])[-5:]
        outcomes.append(report)
        try:
            sdk.send(s["aggregator"], report)
        except sdk.CallError as exc:
            sdk.log("coordinator: aggregator unreachable:", str(exc))
    return outcomes


def _schedule(s):
    sdk.send(s["self"], f"tick {s['generation']}")


class Actor(sdk.Guard, exports.Actor):
    def init(self, state):
        s = sdk.load(state, DEFAULT)
        sdk.log("coordinator up: workers", ", ".join(s["workers"]), "-> aggregator", s["aggregator"])
        if s["running"]:
            _schedule(s)  # an actor may message itself from init: the loop starts once we are ready
        return (sdk.dump(s),)


class MessageServerClient(sdk.Guard, sdk.NoChannels, exports.MessageServerClient):
    def handle_send(self, state, params):
        (msg,) = params
        s = sdk.load(state, DEFAULT)
        cmd, _, arg = sdk.text(msg).partition(" ")
        if cmd == "tick":
            if s["running"] and arg == str(s["generation"]):
                _round(s)
                try:
                    sdk.sleep(s["interval_ms"])
                except sdk.CallError:  # interrupted: the actor is being stopped
                    return (sdk.dump(s),)
                _schedule(s)
        elif cmd == "go":
            _round(s)
        elif cmd == "start":
            s["running"] = True
            s["generation"] += 1
            _schedule(s)
        elif cmd == "stop":
            s["running"] = False
        else:
            sdk.log("coordinator: unknown message", sdk.text(msg))
        return (sdk.dump(s),)

    def handle_request(self, state, params):
        request_id, msg = params
        s = sdk.load(state, DEFAULT)
        if msg == b"go":
            reply = sdk.dump(_round(s))
        elif msg == b"status":
            reply = sdk.dump(s)
        else:
            reply = b"unknown request: " + msg
        return (sdk.dump(s), (reply,))

