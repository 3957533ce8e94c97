"""allcaps: one Python actor that uses every handler it can be granted (store, filesystem, environment,
random) and the runtime's functions, through theater_sdk. Built against the world `theater-otp build`
generates from manifests/allcaps/manifest.toml: it imports exactly those interfaces (no timing).

Requests are JSON objects {"op": OP, ...}; the reply is JSON. Every request counts in the state:

State (JSON): {"calls": {OP: N}, "refs": {LABEL: REF}, "uuids": [last 5], "errors": N}
  runtime      {"op": "whoami"}                          -> {"id", "name", "version", "now_ms"}
               {"op": "system"}                          -> the host's system_info
               {"op": "log", "level", "msg"}             -> {"ok": true}
               {"op": "metric", "name", "value"}         -> {"ok": true}
               {"op": "event", "type", "data"}           -> {"ok": true}
  store        {"op": "put", "label", "text"}            -> {"ref"}: the text, alone under the label
               {"op": "add", "label", "text"}            -> {"ref"}: the text, added to the label
               {"op": "get", "label"}                    -> {"text"} (null: no such label)
               {"op": "blob", "ref"}                     -> {"text"}
               {"op": "store"}                           -> {"labels", "refs", "size"}
               {"op": "private"}                         -> a store made by `new`: {"id", "ref", "text"}
  filesystem   {"op": "write" | "append", "path", "text"}-> {"size"}
               {"op": "read", "path"}                    -> {"text"}
               {"op": "ls", "path"}                      -> {"names", "entries"}
               {"op": "mkdir" | "rm" | "rmtree", "path"} -> {"exists"}
               {"op": "stat", "path"}                    -> the metadata
  environment  {"op": "env", "name"}                     -> {"value", "has", "all"}
  random       {"op": "rand", "n"}                       -> {"bytes" (hex), "range", "int", "float", "uuid", "choice"}
  channels     {"op": "channel", "to", "msg"}            -> {"channel", "refused"}: open, send, close, then
                                                            an open the other end refuses ("no")
  errors       {"op": "errors"}                          -> each refused call: {WHAT: [exception class, message, call]}
               {"op": "summary"}                         -> the state
  send "crash" raises (a crash; the store and the files stay).
"""

import json

import theater_sdk as sdk
from wit_world import exports

DEFAULT = {"calls": {}, "refs": {}, "uuids": [], "errors": 0}
STORE = "allcaps"           # named in the manifest's store handler: survives restarts


def _store():
    return sdk.Store(STORE)


def _runtime(s, req):
    op = req["op"]
    if op == "whoami":
        return {"id": sdk.actor_id(), "name": sdk.actor_name(), "version": sdk.theater_version(),
                "now_ms": sdk.now_ms()}
    if op == "system":
        return sdk.system_info()
    if op == "log":
        sdk.log_at(req.get("level", "info"), req["msg"])
    elif op == "metric":
        sdk.metric(req["name"], req["value"])
    elif op == "event":
        sdk.event(req["type"], req.get("data", ""))
    return {"ok": True}


def _storage(s, req):
    op, store = req["op"], _store()
    if op in ("put", "add"):
        ref = store.set(req["label"], req["text"]) if op == "put" else store.add(req["label"], req["text"])
        s["refs"][req["label"]] = ref
        return {"ref": ref}
    if op == "get":
        data = store.get_label(req["label"])
        return {"text": None if data is None else sdk.text(data), "ref": store.ref(req["label"])}
    if op == "blob":
        return {"text": sdk.text(store.get(req["ref"])), "has": store.has(req["ref"])}
    if op == "store":
        return {"labels": store.labels(), "refs": store.refs(), "size": store.size()}
    # "private": a store only this incarnation knows (its id is the capability)
    mine = sdk.Store.new()
    ref = mine.put(b"private bytes")
    mine.label("it", ref)
    return {"id": mine.id, "ref": ref, "text": sdk.text(mine.get_label("it"))}


def _files(s, req):
    op, path = req["op"], req.get("path", ".")
    if op in ("write", "append"):
        if "/" in path:
            sdk.fs.mkdir(path.rsplit("/", 1)[0])
        (sdk.fs.write_text if op == "write" else sdk.fs.append_text)(path, req["text"])
        return {"size": sdk.fs.stat(path)["size"]}
    if op == "read":
        return {"text": sdk.fs.read_text(path)}
    if op == "ls":
        return {"names": sdk.fs.listdir(path), "entries": sdk.fs.scandir(path)}
    if op == "stat":
        return sdk.fs.stat(path)
    {"mkdir": sdk.fs.mkdir, "rm": sdk.fs.remove, "rmtree": sdk.fs.rmtree}[op](path)
    return {"exists": sdk.fs.exists(path), "is_dir": sdk.fs.is_dir(path), "is_file": sdk.fs.is_file(path)}


def _environment(s, req):
    name = req["name"]
    return {"value": sdk.env.get(name), "default": sdk.env.get(name, "unset"), "has": sdk.env.has(name),
            "all": sdk.env.all()}


def _random(s, req):
    uuid = sdk.rand.uuid()
    s["uuids"] = (s["uuids"] + [uuid])[-5:]
    return {"bytes": sdk.rand.bytes(req.get("n", 8)).hex(), "range": sdk.rand.randrange(-5, 5),
            "int": sdk.rand.randint(1, 6), "float": sdk.rand.random(), "uuid": uuid,
            "choice": sdk.rand.choice(["a", "b", "c"])}


def _errors(s, req):
    """Calls the host refuses: each raises the SDK's exception with the host's message."""
    attempts = {
        "fs_escape": lambda: sdk.fs.read_text("../outside.txt"),
        "fs_missing": lambda: sdk.fs.read_text("no/such/file.txt"),
        "store_unreachable": lambda: sdk.Store("not-in-the-manifest").put(b"x"),
        "store_missing_blob": lambda: _store().get("0" * 64),
        "log_level": lambda: sdk.log_at("loud", "too loud"),
        "metric_nan": lambda: sdk.metric("bad", float("nan")),
        "timing": lambda: sdk.sleep(1),          # not granted: no timing import at all
    }
    found = {}
    for what, call in attempts.items():
        try:
            call()
            found[what] = None
        except sdk.HostError as exc:
            found[what] = [type(exc).__name__, str(exc), exc.call]
            s["errors"] += 1
    return found


def _channel(s, req):
    """Open a channel to req["to"], send on it, close it; then ask for one the other end refuses."""
    channel = sdk.open_channel(req["to"], "hello")
    sdk.send_on_channel(channel, req.get("msg", "ping"))
    sdk.close_channel(channel)
    try:
        sdk.open_channel(req["to"], "no")
        refused = None
    except sdk.HostError as exc:
        refused = str(exc)
    return {"channel": channel, "refused": refused}


OPS = {"whoami": _runtime, "system": _runtime, "log": _runtime, "metric": _runtime, "event": _runtime,
       "put": _storage, "add": _storage, "get": _storage, "blob": _storage, "store": _storage, "private": _storage,
       "write": _files, "append": _files, "read": _files, "ls": _files, "stat": _files, "mkdir": _files,
       "rm": _files, "rmtree": _files, "env": _environment, "rand": _random, "errors": _errors,
       "channel": _channel}


class Actor(sdk.Guard, exports.Actor):
    def init(self, state):
        s = sdk.load(state, DEFAULT)
        sdk.log_at("info", "allcaps up as", sdk.actor_name(), "with", len(_store().labels()), "labels")
        sdk.event("allcaps.init", {"labels": _store().labels()})
        return (sdk.dump(s),)


class MessageServerClient(sdk.Guard, sdk.NoChannels, exports.MessageServerClient):
    def handle_send(self, state, params):
        (msg,) = params
        if msg == b"crash":
            raise RuntimeError("allcaps told to crash")
        sdk.log("allcaps got", sdk.text(msg))
        return (state,)

    def handle_request(self, state, params):
        request_id, msg = params
        s = sdk.load(state, DEFAULT)
        req = json.loads(msg)
        op = req.get("op")
        if op == "summary":
            reply = json.loads(sdk.dump(s))
        elif op in OPS:
            reply = OPS[op](s, req)
        else:
            raise sdk.Err(f"unknown op {op!r}: expected summary, {', '.join(OPS)}")
        s["calls"][op] = s["calls"].get(op, 0) + 1
        return (sdk.dump(s), (sdk.dump(reply),))
