"""worker: counts the words of a text and hashes it; one of the Python demo team's workers.

State (JSON): {"served": N, "words": N}   (what this incarnation has done)
  request TASK (JSON {"task", "round", "text"})
            -> {"task", "words": N, "counts": {WORD: N}, "sha256": HEX, "served": N}
          "ping"   -> "pong"
  send    "crash"  raises: the supervisor restarts the worker (the reason recorded is this traceback)
          other    logged
"""

import hashlib
import json

import theater_sdk as sdk
from wit_world import exports

DEFAULT = {"served": 0, "words": 0}


def count_words(text):
    counts = {}
    for word in text.lower().split():
        word = word.strip(".,;:!?\"'()")
        if word:
            counts[word] = counts.get(word, 0) + 1
    return counts


class Actor(sdk.Guard, exports.Actor):
    def init(self, state):
        return (sdk.dump(sdk.load(state, DEFAULT)),)


class MessageServerClient(sdk.Guard, sdk.NoChannels, exports.MessageServerClient):
    def handle_send(self, state, params):
        (msg,) = params
        if msg == b"crash":
            raise RuntimeError("worker told to crash")
        sdk.log("worker got", sdk.text(msg))
        return (state,)

    def handle_request(self, state, params):
        request_id, msg = params
        s = sdk.load(state, DEFAULT)
        if msg == b"ping":
            return (state, (b"pong",))
        task = json.loads(msg)
        text = task["text"]
        counts = count_words(text)
        words = sum(counts.values())
        s["served"] += 1
        s["words"] += words
        reply = {"task": task.get("task"), "words": words, "counts": counts,
                 "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(), "served": s["served"]}
        return (sdk.dump(s), (sdk.dump(reply),))

