"""kv: a key-value HTTP service (manifests/http-demo/). Keys are labels of the store handler's named
store "kv", so every value is in the node's home: a crash or a kill -9 loses nothing, and the
replacement answers from the same store.

HTTP (the http-server handler; 127.0.0.1:8088 in the demo):
  GET    /               -> {"service": "kv", "keys": N, "served": N}
  GET    /kv             -> {"keys": [KEY, ...]} (sorted; ?prefix=P keeps the keys starting with P)
  GET    /kv/{key}       -> the value (text/plain when it is UTF-8, else application/octet-stream); 404
  PUT    /kv/{key}       -> stores the body: 201 {"key", "ref", "size"} (200 when the key existed)
  DELETE /kv/{key}       -> {"deleted": KEY}; 404
  Another method on these paths: 405 with Allow; another path: 404.
  GET    /crash          -> raises: a crash (the client gets 500; the supervisor restarts kv)

Messages: request "keys" -> the keys as JSON; send anything -> logged.
State (JSON): {"served": N}: requests this incarnation served (the values are in the store).
"""

import theater_sdk as sdk
from wit_world import exports

STORE = "kv"                # named in the manifest's store handler: the same store after a restart
DEFAULT = {"served": 0}

router = sdk.http.Router(default=DEFAULT)


def _store() -> sdk.Store:
    return sdk.Store(STORE)


def _served(req) -> None:
    req.state["served"] += 1


@router.get("/")
def index(req):
    _served(req)
    return {"service": "kv", "keys": len(_store().labels()), "served": req.state["served"]}


@router.get("/kv")
def keys(req):
    _served(req)
    prefix = req.query.get("prefix", "")
    return {"keys": [k for k in _store().labels() if k.startswith(prefix)]}


@router.get("/kv/{key}")
def get_value(req, key):
    _served(req)
    value = _store().get_label(key)
    if value is None:
        raise sdk.http.HttpError(404, f"no key {key!r}")
    try:
        value.decode("utf-8")
        kind = "text/plain; charset=utf-8"
    except UnicodeDecodeError:
        kind = "application/octet-stream"
    return sdk.http.Response(200, value, {"Content-Type": kind})


@router.put("/kv/{key}")
def put_value(req, key):
    _served(req)
    store = _store()
    existed = store.ref(key) is not None
    try:
        ref = store.set(key, req.body)
    except sdk.HostError as exc:        # the store refused (a quota, a label too long): the client's problem
        raise sdk.http.HttpError(400, str(exc)) from None
    return {"key": key, "ref": ref, "size": len(req.body)}, 200 if existed else 201


@router.delete("/kv/{key}")
def delete_value(req, key):
    _served(req)
    store = _store()
    if store.ref(key) is None:
        raise sdk.http.HttpError(404, f"no key {key!r}")
    store.unlabel(key)                  # the content stays in the store; the key is gone
    return {"deleted": key}


@router.get("/crash")
def crash(req):
    raise RuntimeError("kv told to crash")


class Actor(sdk.Guard, exports.Actor):
    def init(self, state):
        s = sdk.load(state, DEFAULT)
        sdk.log("kv up with", len(_store().labels()), "keys")
        return (sdk.dump(s),)


class HttpServer(sdk.Guard, exports.HttpServer):
    handle_request = router.handler


class MessageServerClient(sdk.Guard, sdk.NoChannels, exports.MessageServerClient):
    def handle_send(self, state, params):
        (msg,) = params
        sdk.log("kv got", sdk.text(msg))
        return (state,)

    def handle_request(self, state, params):
        request_id, msg = params
        if msg == b"keys":
            return (state, (sdk.dump(_store().labels()),))
        return (state, (b"unknown request: " + msg,))
