"""aggregator: keeps the Python demo team's running totals.

State (JSON): {"results": N, "failures": N, "last_round": N, "total_words": N,
               "by_worker": {NAME: {"results": N, "words": N, "failures": N}},
               "words": {WORD: N}, "last_error": TEXT | null}
  send    RESULT (JSON from the coordinator: {"round", "worker", "words", "counts", "sha256"}
                  or {"round", "worker", "error"})  -> folded into the totals
  request "totals"  -> the state as JSON
          "top N"   -> the N most frequent words as JSON [[WORD, COUNT], ...]
"""

import json

import theater_sdk as sdk
from wit_world import exports

DEFAULT = {"results": 0, "failures": 0, "last_round": 0, "total_words": 0, "by_worker": {}, "words": {},
           "last_error": None}
MAX_WORDS = 500


def fold(s, result):
    worker = str(result.get("worker", "?"))
    mine = s["by_worker"].setdefault(worker, {"results": 0, "words": 0, "failures": 0})
    s["last_round"] = max(s["last_round"], int(result.get("round", 0)))
    if "error" in result:
        s["failures"] += 1
        mine["failures"] += 1
        s["last_error"] = f"{worker}: {result['error']}"
        return
    s["results"] += 1
    s["total_words"] += int(result["words"])
    mine["results"] += 1
    mine["words"] += int(result["words"])
    for word, n in result.get("counts", {}).items():
        s["words"][word] = s["words"].get(word, 0) + int(n)
    if len(s["words"]) > MAX_WORDS:  # keep the state bounded: drop the rarest words
        keep = sorted(s["words"].items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_WORDS]
        s["words"] = dict(keep)


class Actor(sdk.Guard, exports.Actor):
    def init(self, state):
        return (sdk.dump(sdk.load(state, DEFAULT)),)


class MessageServerClient(sdk.Guard, sdk.NoChannels, exports.MessageServerClient):
    def handle_send(self, state, params):
        (msg,) = params
        s = sdk.load(state, DEFAULT)
        fold(s, json.loads(msg))
        return (sdk.dump(s),)

    def handle_request(self, state, params):
        request_id, msg = params
        s = sdk.load(state, DEFAULT)
        cmd, _, arg = sdk.text(msg).partition(" ")
        if cmd == "totals":
            reply = sdk.dump(s)
        elif cmd == "top":
            n = int(arg or 10)
            reply = sdk.dump(sorted(s["words"].items(), key=lambda kv: (-kv[1], kv[0]))[:n])
        else:
            reply = b"unknown request: " + msg
        return (state, (reply,))

