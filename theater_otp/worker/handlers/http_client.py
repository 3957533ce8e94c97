"""http-client: outgoing HTTP for an actor, to the hosts its manifest allows (see docs/http.md).

Settings (one `[[handler]] type = "http-client"` table):

* `allowed_hosts`: exact host names, IP literals and `*.domain` patterns (a
  pattern matches names *under* the domain, never the domain itself). None
  listed: no host may be reached.
* `timeout_ms` (default 10000): the whole call's deadline. Connecting (DNS
  included), writing and each read get at most the time left, so a server that
  trickles bytes cannot hold the actor past it.
* `max_request_bytes`, `max_response_bytes` (default 1 MiB, at most
  MAX_LIST_BYTES): the request body the actor may send, the response body it
  may receive (read as a stream; reading stops past the limit).
* `follow_redirects` (default false): follow at most MAX_REDIRECTS redirects,
  each to an allowed host.

Every refusal or failure is the actor's `err`, naming the host or the limit.
The client (httpx, one `httpx.Client` per actor incarnation) is made on the
first call in the worker and closed with the instance.

Chain (`host.http-client.send-http`): the request as method, URI, header
names in order (values only for the non-secret names in RECORDED_VALUES), the
body by hash and size (inline when small: recorded_bytes.py); the response's
status, every header pair and its body the same way, larger bodies kept in
the node's `store.db` (`ContentStore.put_blob`); the elapsed ms and the
redirects followed. Replay rebuilds the response from that record and the
node's store, never touching the network.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...config.fields import Fields
from ...contentstore import StoreError
from .. import fastabi
from .base import (
    MAX_LIST_BYTES,
    FunctionTable,
    Handler,
    HostAbort,
    HostContext,
    HostFunction,
    record_of,
    same_functions,
)
from .recorded_bytes import NodeBlobs, digest

if TYPE_CHECKING:  # httpx is imported in the worker, on the first call (see _client)
    import httpx

DEFAULT_TIMEOUT_MS = 10_000
#: The longest `timeout_ms`: a call blocks the actor's worker for up to this long.
MAX_TIMEOUT_MS = 600_000
DEFAULT_MAX_BYTES = 1024 * 1024
MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: Request headers whose values the chain records; every other header is recorded by name only
#: (Authorization, cookies, API keys: values that may be secrets).
RECORDED_VALUES = frozenset({
    "accept", "accept-encoding", "accept-language", "cache-control", "content-encoding", "content-language",
    "content-type", "if-match", "if-modified-since", "if-none-match", "if-unmodified-since", "range",
    "user-agent"})
#: Request headers the client sets itself: the target comes from the URL, the framing from the body.
CLIENT_HEADERS = frozenset({"host", "content-length", "transfer-encoding"})
#: Dropped from a redirect to another origin (as browsers and httpx do).
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
USER_AGENT = "theater-otp"

# httpx logs every request at INFO: in the node's log that is a line per actor call, and the chain
# already records each one
logging.getLogger("httpx").setLevel(logging.WARNING)

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


# ---- settings -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class HttpClientSettings:
    #: exact host names and IP literals (normalised: lower case, IPs in their compressed form)
    hosts: frozenset[str] = frozenset()
    #: `*.domain` patterns, kept as ".domain"
    suffixes: tuple[str, ...] = ()
    #: the manifest's list as written, for messages
    allowed_hosts: tuple[str, ...] = ()
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    max_request_bytes: int = DEFAULT_MAX_BYTES
    max_response_bytes: int = DEFAULT_MAX_BYTES
    follow_redirects: bool = False

    def allows(self, host: str) -> bool:
        """Whether a URL's host (as `_url_host` gives it) may be reached."""
        if host in self.hosts:
            return True
        if _ip(host) is not None:
            return False  # a pattern names domains: an IP literal must be listed as it is
        return any(host.endswith(s) and len(host) > len(s) for s in self.suffixes)

    def refusal(self, host: str) -> str:
        if not self.allowed_hosts:
            return f"host {host!r} is not allowed: this actor's allowed_hosts is empty, so no host is"
        listed = ", ".join(self.allowed_hosts)
        return f"host {host!r} is not allowed: allowed_hosts lists {listed}"


def _ip(host: str) -> str | None:
    """The compressed form of an IP literal (`[::1]` or `::1`), or None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]")).compressed
    except ValueError:
        return None


def _host_entry(entry: str) -> tuple[str, bool] | str:
    """An `allowed_hosts` entry as (normalised host or ".suffix", is_pattern), or why it is invalid."""
    text = entry.strip().lower()
    if not text:
        return "an empty host name"
    if "://" in text or "/" in text:
        return "a host name, not a URL: write the host alone (e.g. \"api.example.com\")"
    ip = _ip(text)
    if ip is not None:
        return ip, False
    if ":" in text:
        return "a host without a port: allowed_hosts names hosts, any port of an allowed host may be reached"
    if text == "*":
        return "a host name or a `*.domain` pattern (`*` alone would allow every host)"
    pattern = text.startswith("*.")
    name = text[2:] if pattern else text
    name = name[:-1] if name.endswith(".") else name   # "example.com." is example.com
    if "*" in name:
        return "a `*.` pattern is only allowed at the start, e.g. \"*.example.com\""
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        return "a host name (letters, digits, '-', '_', dot-separated; non-ASCII names in their xn-- form)"
    if pattern and labels[-1].isdigit():
        return "a pattern names a domain, not part of an IP address"
    return ("." + name, True) if pattern else (name, False)


def _url_host(url: "httpx.URL") -> str:
    """The URL's host as allowed_hosts matches it: ASCII (IDNA), lower case, no trailing dot,
    an IP literal in its compressed form."""
    host = url.raw_host.decode("ascii", "replace").lower().rstrip(".")
    return _ip(host) or host


# ---- the chain record ---------------------------------------------------------------------------

def _body_record(data: bytes | bytearray | memoryview | None) -> dict[str, Any] | None:
    return None if data is None else digest(data)


def _request_record(req: Any) -> dict:
    """The actor's request as the chain keeps it: header names in order, values only when
    RECORDED_VALUES names them (None otherwise), the body by hash and size."""
    headers = []
    for pair in getattr(req, "headers", None) or ():
        try:
            name, value = pair
        except (TypeError, ValueError):
            continue
        name = str(name)
        headers.append([name, str(value) if name.lower() in RECORDED_VALUES else None])
    body = getattr(req, "body", None)
    return {"method": getattr(req, "method", None), "uri": getattr(req, "uri", None), "headers": headers,
            "body": _body_record(body) if isinstance(body, (bytes, bytearray, memoryview)) else None}


class _Sent(fastabi.Ok):
    """The `ok` of a call, with what the chain records beside the response (elapsed, redirects)."""

    __slots__ = ("info",)

    def __init__(self, value: Any, info: dict):
        super().__init__(value)
        self.info = info


class _Failed(fastabi.Err):
    __slots__ = ("info",)

    def __init__(self, value: str, info: dict):
        super().__init__(value)
        self.info = info


def _record(args: tuple, result: Any) -> dict:
    data: dict[str, Any] = {"request": _request_record(args[0]) if args else None}
    if isinstance(result, fastabi.Ok):
        resp = result.value
        data["result"] = {"ok": {"status": getattr(resp, "status", None),
                                 "headers": [[n, v] for n, v in getattr(resp, "headers", None) or ()],
                                 "body": _body_record(getattr(resp, "body", None))}}
    elif isinstance(result, fastabi.Err):
        data["result"] = {"err": result.value}
    else:  # a host bug's "internal error ..." string
        data["result"] = {"err": str(result)}
    info = getattr(result, "info", None) or {}
    data["elapsed_ms"] = info.get("elapsed_ms")
    data["redirects"] = list(info.get("redirects", ()))
    return data


# ---- the live side ------------------------------------------------------------------------------

class _Refused(Exception):
    """A call refused or failed: its message is the actor's `err`."""


class _Deadline:
    """The deadline of the call in progress (monotonic seconds), shared by the client's sockets."""

    def __init__(self) -> None:
        self.at: float | None = None

    def clamp(self, timeout: float | None) -> float:
        """A socket operation's timeout: at most the time left (a tiny positive one once it has
        passed, so the operation times out with its own kind of error)."""
        if self.at is None:
            return timeout if timeout is not None else 0.001
        left = max(self.at - time.monotonic(), 0.001)
        return left if timeout is None else min(timeout, left)


def _resolve(host: str, port: int, timeout: float) -> list[str]:
    """The addresses of a name, within `timeout` (getaddrinfo has no timeout of its own: it runs in
    a daemon thread that is left behind if the resolver is slower than the deadline)."""
    import httpcore

    found: list[Any] = []

    def run() -> None:
        try:
            found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            found.append(exc)

    worker = threading.Thread(target=run, name="http-client-dns", daemon=True)
    worker.start()
    worker.join(timeout)
    if not found:
        raise httpcore.ConnectTimeout(f"resolving {host} timed out")
    if isinstance(found[0], OSError):
        raise httpcore.ConnectError(f"cannot resolve {host}: {found[0].strerror or found[0]}")
    addresses: list[str] = []
    for *_, sockaddr in found[0]:
        if sockaddr[0] not in addresses:
            addresses.append(str(sockaddr[0]))
    return addresses


def _deadline_backend(deadline: _Deadline) -> Any:
    """An httpcore network backend whose every connect, TLS handshake, read and write is bounded
    by the call's deadline (httpcore takes each phase's timeout once per request, so a server that
    sends a byte just before each read timeout would otherwise never time out)."""
    import httpcore

    class Stream(httpcore.NetworkStream):
        def __init__(self, inner: Any):
            self._inner = inner

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            return self._inner.read(max_bytes, deadline.clamp(timeout))

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            self._inner.write(buffer, deadline.clamp(timeout))

        def close(self) -> None:
            self._inner.close()

        def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                      timeout: float | None = None) -> Any:
            return Stream(self._inner.start_tls(ssl_context, server_hostname, deadline.clamp(timeout)))

        def get_extra_info(self, info: str) -> Any:
            return self._inner.get_extra_info(info)

    class Backend(httpcore.NetworkBackend):
        def __init__(self) -> None:
            self._inner = httpcore.SyncBackend()

        def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                        socket_options: Any = None) -> Any:
            addresses = [host] if _ip(host) else _resolve(host, port, deadline.clamp(timeout))
            last: Exception | None = None
            for address in addresses:
                try:
                    return Stream(self._inner.connect_tcp(address, port, deadline.clamp(timeout), local_address,
                                                          socket_options))
                except httpcore.ConnectTimeout:
                    raise
                except httpcore.ConnectError as exc:
                    last = exc
            raise last or httpcore.ConnectError(f"{host} has no address")

        def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> Any:
            raise httpcore.ConnectError("unix sockets are not offered")

        def sleep(self, seconds: float) -> None:
            time.sleep(min(seconds, deadline.clamp(seconds)))

    return Backend()


def _new_client(deadline: _Deadline, timeout_ms: int) -> "httpx.Client":
    """One actor incarnation's client: pooled keep-alive connections, per-phase timeouts, the
    deadline backend, no proxy or certificate settings from the environment, no cookie jar."""
    import http.cookiejar

    import httpcore
    import httpx

    class Transport(httpx.HTTPTransport):
        def __init__(self) -> None:  # noqa: D107 - HTTPTransport.__init__ only builds `_pool`
            # httpx 0.28.1 (pinned) keeps its httpcore pool in `_pool`: the pool HTTPTransport would
            # build, given the deadline backend (httpx offers no public way to pass one)
            ssl_context = httpx.create_ssl_context(trust_env=False)
            self._pool = httpcore.ConnectionPool(ssl_context=ssl_context, max_connections=10,
                                                 max_keepalive_connections=10, keepalive_expiry=5.0,
                                                 network_backend=_deadline_backend(deadline))

    class NoCookies(http.cookiejar.DefaultCookiePolicy):
        def set_ok(self, cookie: Any, request: Any) -> bool:
            return False

    seconds = timeout_ms / 1000
    client = httpx.Client(transport=Transport(), timeout=httpx.Timeout(seconds), follow_redirects=False,
                          trust_env=False, cookies=http.cookiejar.CookieJar(policy=NoCookies()))
    # the actor's request goes out as it wrote it: no compression asked for (the body it gets is
    # the bytes the server sent, never decoded past max_response_bytes)
    del client.headers["accept-encoding"]
    client.headers["user-agent"] = USER_AGENT
    return client


def _method(value: Any) -> str:
    if not isinstance(value, str) or not _TOKEN.match(value) or len(value) > 32:
        raise _Refused(f"method {value!r} is not valid: expected an HTTP method such as GET or POST")
    if value.upper() == "CONNECT":
        raise _Refused("method 'CONNECT' is not offered: the client does not open tunnels")
    return value


def _headers(value: Any) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    for pair in value or ():
        name, text = pair
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise _Refused(f"header name {name!r} is not valid: expected an HTTP token")
        if name.lower() in CLIENT_HEADERS:
            raise _Refused(f"header {name!r} is set by the client (from the URL and the body), not by the actor")
        if not isinstance(text, str) or any(c in text for c in "\r\n\x00"):
            raise _Refused(f"the value of header {name!r} is not valid: it holds a CR, LF or NUL")
        out.append((name.encode("ascii"), text.encode("utf-8")))
    return out


def _header_text(value: bytes) -> str:
    """A response header's bytes as the actor's string: UTF-8 when they are, else Latin-1 (lossless)."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


class _Http:
    """One actor incarnation's HTTP client: its settings, the httpx client (made on the first call),
    and for replay the node's content store."""

    def __init__(self, ctx: HostContext, settings: HttpClientSettings | None):
        self.ctx = ctx
        self.settings = settings
        self.deadline = _Deadline()
        self._client: "httpx.Client | None" = None
        self.blobs = NodeBlobs(ctx, "http-client response body")

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
        self.blobs.close()

    def client(self) -> "httpx.Client":
        if self._client is None:
            assert self.settings is not None
            self._client = _new_client(self.deadline, self.settings.timeout_ms)
        return self._client

    # -- one call

    def send(self, req: Any) -> Any:
        settings = self.settings
        if settings is None:
            raise HostAbort("the http-client handler has no settings (replay serves calls from the chain)")
        info: dict[str, Any] = {"elapsed_ms": 0, "redirects": []}
        try:
            import httpx
            client = self.client()
        except ImportError as exc:  # pragma: no cover - httpx is a dependency
            return _Failed(f"the http-client handler is not available: {exc}", info)
        started = time.monotonic()
        self.deadline.at = started + settings.timeout_ms / 1000
        try:
            response = self._exchange(client, req, settings, info)
            return _Sent(response, info)
        except _Refused as refused:
            return _Failed(str(refused), info)
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:  # one _exchange did not name
            return _Failed(f"HTTP request failed: {type(exc).__name__}: {exc}", info)
        finally:
            self.deadline.at = None
            info["elapsed_ms"] = int((time.monotonic() - started) * 1000)

    def _exchange(self, client: "httpx.Client", req: Any, settings: HttpClientSettings, info: dict) -> Any:
        import httpx

        method = _method(getattr(req, "method", None))
        url = self._check_url(getattr(req, "uri", None), settings, None)
        headers = _headers(getattr(req, "headers", None))
        body = getattr(req, "body", None)
        if body is not None:
            body = bytes(body)
            if len(body) > settings.max_request_bytes:
                raise _Refused(f"request body of {len(body)} bytes is over max_request_bytes = "
                               f"{settings.max_request_bytes}")
        while True:
            host = _url_host(url)
            try:
                status, reply_headers, content = self._one(client, method, url, headers, body, settings, host)
            except httpx.TimeoutException:
                raise _Refused(f"{host}: no complete response within timeout_ms = {settings.timeout_ms} ms") \
                    from None
            except httpx.ConnectError as exc:
                raise _Refused(self._connect_failure(host, url, exc)) from None
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                raise _Refused(f"{host}: the connection failed: {exc}") from None
            except httpx.LocalProtocolError as exc:
                raise _Refused(f"{host}: the request is not valid HTTP: {exc}") from None
            location = next((v for n, v in reply_headers if n.lower() == "location"), None)
            if not settings.follow_redirects or status not in REDIRECT_STATUSES or location is None:
                break
            if len(info["redirects"]) >= MAX_REDIRECTS:
                raise _Refused(f"{host}: too many redirects (at most {MAX_REDIRECTS} are followed)")
            try:
                target = url.join(location)
            except httpx.InvalidURL as exc:
                raise _Refused(f"{host}: redirect to an invalid URL {location!r}: {exc}") from None
            target = self._check_url(str(target), settings, host)
            if (target.scheme, target.raw_host, target.port) != (url.scheme, url.raw_host, url.port):
                headers = [(n, v) for n, v in headers if n.decode().lower() not in CREDENTIAL_HEADERS]
            if status == 303 and method != "HEAD" or status in (301, 302) and method == "POST":
                method, body = "GET", None
                headers = [(n, v) for n, v in headers
                           if n.decode().lower() not in ("content-type", "content-encoding")]
            info["redirects"].append(str(target))
            url = target
        if content:
            try:  # a large body is kept in the node's store, so replay needs no network
                self.blobs.keep(content)
            except StoreError as exc:
                self.ctx.services.log_line(f"http-client: response body not kept for replay: {exc}")
                raise _Refused(f"{_url_host(url)}: the response body ({len(content)} bytes) could not be kept "
                               f"in the node's store for replay") from None
        return record_of(status=status, headers=reply_headers, body=content or None)

    def _check_url(self, uri: Any, settings: HttpClientSettings, redirected_from: str | None) -> "httpx.URL":
        """The URL parsed and checked before any connection: scheme, credentials, host allowed."""
        import httpx

        via = f"redirect from {redirected_from} refused: " if redirected_from else ""
        if not isinstance(uri, str) or not uri:
            raise _Refused(f"{via}invalid URL {uri!r}: expected an absolute http or https URL")
        try:
            url = httpx.URL(uri)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise _Refused(f"{via}invalid URL {uri[:200]!r}: {exc}") from None
        if url.scheme not in ("http", "https"):
            if not url.scheme:
                raise _Refused(f"{via}invalid URL {uri[:200]!r}: expected an absolute http or https URL")
            raise _Refused(f"{via}scheme {url.scheme!r} is not supported: only http and https URLs")
        if not url.raw_host:
            raise _Refused(f"{via}invalid URL {uri[:200]!r}: it names no host")
        if url.port is not None and not 0 < url.port < 65536:
            raise _Refused(f"{via}invalid URL {uri[:200]!r}: port {url.port} is not in 1-65535")
        if url.userinfo:
            raise _Refused(f"{via}URL {uri[:200]!r} carries credentials: send them in an Authorization header "
                           f"(the chain records header names, not their values)")
        host = _url_host(url)
        if not settings.allows(host):
            raise _Refused(via + settings.refusal(host))
        return url

    @staticmethod
    def _connect_failure(host: str, url: "httpx.URL", exc: Exception) -> str:
        text = str(exc)
        port = url.port or (443 if url.scheme == "https" else 80)
        if "refused" in text.lower():
            return f"{host}: connection to port {port} refused"
        return f"{host}: cannot connect to port {port}: {text}"

    def _one(self, client: "httpx.Client", method: str, url: "httpx.URL", headers: list, body: bytes | None,
             settings: HttpClientSettings, host: str) -> tuple[int, list[tuple[str, str]], bytes]:
        """One exchange: the response's status, headers and body, read as a stream and abandoned past
        max_response_bytes or the deadline."""
        limit = settings.max_response_bytes
        with client.stream(method, url, headers=headers, content=body) as response:
            reply_headers = [(_header_text(n), _header_text(v)) for n, v in response.headers.raw]
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise _Refused(f"{host}: response body of {int(declared)} bytes is over max_response_bytes = "
                               f"{limit}")
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_raw():
                size += len(chunk)
                if size > limit:
                    raise _Refused(f"{host}: response body is over max_response_bytes = {limit} "
                                   f"(reading stopped after {size} bytes)")
                chunks.append(chunk)
                if self.deadline.at is not None and time.monotonic() > self.deadline.at:
                    import httpx
                    raise httpx.ReadTimeout("the call's deadline passed")
            return response.status_code, reply_headers, b"".join(chunks)

    # -- replay

    def replay(self, data: dict) -> Any:
        info = {"elapsed_ms": data.get("elapsed_ms"), "redirects": list(data.get("redirects") or ())}
        value = data.get("result")
        if not isinstance(value, dict) or len(value) != 1:
            raise HostAbort(f"http-client: the recorded result is malformed: {value!r}"[:300])
        (tag, payload), = value.items()
        if tag == "err":
            return _Failed(payload, info)
        body = payload.get("body")
        content: bytes | None = None
        if isinstance(body, dict):
            content = self.blobs.fetch(body)
        headers = [(str(n), str(v)) for n, v in payload.get("headers") or ()]
        return _Sent(record_of(status=payload.get("status"), headers=headers, body=content), info)


class HttpClient(Handler):
    type = "http-client"
    interfaces = ("http-client",)
    summary = "outgoing HTTP to the hosts the manifest allows, recorded so replay needs no network"

    def parse_settings(self, fields: Fields) -> HttpClientSettings:
        listed = fields.str_list("allowed_hosts", ())
        assert listed is not None
        hosts: set[str] = set()
        suffixes: list[str] = []
        for entry in listed:
            parsed = _host_entry(entry)
            if isinstance(parsed, str):
                raise fields.error("allowed_hosts", f"{entry!r} is not valid: expected {parsed}", list(listed))
            name, pattern = parsed
            if pattern:
                if name not in suffixes:
                    suffixes.append(name)
            else:
                hosts.add(name)
        timeout = fields.int("timeout_ms", DEFAULT_TIMEOUT_MS, minimum=1, maximum=MAX_TIMEOUT_MS)
        max_request = fields.int("max_request_bytes", DEFAULT_MAX_BYTES, minimum=0, maximum=MAX_LIST_BYTES)
        max_response = fields.int("max_response_bytes", DEFAULT_MAX_BYTES, minimum=0, maximum=MAX_LIST_BYTES)
        follow = fields.bool("follow_redirects", False)
        fields.done()
        assert timeout is not None and max_request is not None and max_response is not None
        return HttpClientSettings(hosts=frozenset(hosts), suffixes=tuple(suffixes), allowed_hosts=tuple(listed),
                                  timeout_ms=timeout, max_request_bytes=max_request,
                                  max_response_bytes=max_response, follow_redirects=follow)

    def functions(self, ctx: HostContext) -> FunctionTable:
        http = _Http(ctx, ctx.settings)
        ctx.on_close(http.close)
        table = {"send-http": HostFunction(http.send, record=_record, replay=http.replay)}
        return same_functions(table, *self.provides())


HANDLER = HttpClient()
