"""`theater-otp`: parse, call, render. Domain errors become one line on stderr and an exit code.

Exit codes: 0 ok; 1 user or configuration error (or the tree gave up);
2 usage error; 3 no node running at the home directory.

Start-up time is part of the interface: `theater-otp tree` answers within 250 ms, interpreter
start included, for a tree of 1,000 actors. So importing this module costs little: typer (with
the pydantic it parses with, ~150 ms) is imported when the typer app is first built
(`_typer_app`), each verb imports what it needs itself, and `main()` runs `tree` without typer
when its arguments are plain ones (`_tree_argv`). Verbs declare their options with `_Opt` and
`_Arg`, which become `typer.Option` and `typer.Argument` when the app is built.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Optional, Sequence, TypeVar, cast, get_args, get_origin

from .chain.logs import log_line
from .errors import NodeNotRunning, RemoteError, TheaterError
from .home import Home

if TYPE_CHECKING:
    import typer

    from .chain.store import Durability
    from .client import ControlClient

_F = TypeVar("_F", bound=Callable[..., Any])


class _Opt:
    """`typer.Option(*decls, **settings)`, made when the typer app is built (`_typer_app`)."""

    def __init__(self, *decls: str, **settings: Any):
        self.decls = decls
        self.settings = settings

    def build(self, typer_module: Any) -> Any:
        return typer_module.Option(*self.decls, **self.settings)


class _Arg(_Opt):
    """`typer.Argument(**settings)`, made when the typer app is built."""

    def __init__(self, **settings: Any):
        super().__init__(**settings)

    def build(self, typer_module: Any) -> Any:
        return typer_module.Argument(**self.settings)


#: (command name or None for the function's name, function) in the order `--help` lists them.
_VERBS: list[tuple[str | None, Callable[..., Any]]] = []


def _verb(name: str | None = None) -> Callable[[_F], _F]:
    """Register a function as a verb of the typer app (built on first use)."""
    def register(fn: _F) -> _F:
        _VERBS.append((name, fn))
        return fn
    return register


@functools.cache
def _typer_app() -> typer.Typer:
    """The typer app of every verb, built once. Each verb's annotations are resolved here and its
    `_Opt`/`_Arg` markers replaced by typer's own, in place, before typer reads them."""
    import typing

    import typer

    from .chain.store import Durability
    from .cli_dev import build, create, validate

    # rich_markup_mode=None: plain help and usage errors; rich's import doubled the time of `--help`
    app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                      rich_markup_mode=None, help="Run WebAssembly actors as a supervised, traced tree of OS processes.")
    late_names = {"Durability": Durability}  # imported here, not at the top, for the start-up time
    for name, fn in _VERBS:
        hints = typing.get_type_hints(fn, localns=late_names, include_extras=True)
        fn.__annotations__ = {key: _typer_hint(hint, typer) for key, hint in hints.items()}
        app.command(name, short_help=_summary(fn))(fn)
    from .cli_cluster import CLUSTER_VERBS
    from .cli_replica import REPLICA_VERBS

    # theater_otp.cli_dev, cli_cluster and cli_replica declare theirs with typer's own markers
    for fn in (create, build, validate):
        app.command(short_help=_summary(fn))(fn)
    for verb, fn in (*CLUSTER_VERBS, *REPLICA_VERBS):
        app.command(verb, short_help=_summary(fn))(fn)
    return app


def _summary(fn: Callable[..., Any]) -> str:
    """The first paragraph of a verb's docstring, whole: `--help` lists it (click would cut it at 45 characters)."""
    return " ".join((fn.__doc__ or "").strip().split("\n\n")[0].split())


def _typer_hint(hint: Any, typer_module: Any) -> Any:
    if get_origin(hint) is not Annotated:
        return hint
    base, *meta = get_args(hint)
    return Annotated[(base, *(m.build(typer_module) if isinstance(m, _Opt) else m for m in meta))]


def __getattr__(name: str) -> Any:
    if name == "app":  # `theater_otp.cli.app`, as before the app was built lazily
        return _typer_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


HomeOpt = Annotated[Optional[Path], _Opt("--home", envvar="THEATER_OTP_HOME",
                                         help="The node's state directory (default ~/.theater-otp).")]
JsonOpt = Annotated[bool, _Opt("--json", help="Print JSON for scripts.")]
TargetArg = Annotated[str, _Arg(help="Actor path (root/team/a), child id, name or actor id.")]
PayloadArg = Annotated[Optional[str], _Arg(help="The message, as UTF-8 text.")]
FileOpt = Annotated[Optional[Path], _Opt("--file", help="Read the message bytes from this file.")]


def _err(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _exit(code: int) -> typer.Exit:
    """`typer.Exit(code)`, for a verb to raise: typer is loaded whenever a verb runs under it."""
    import typer
    return typer.Exit(code=code)


def _fail(exc: TheaterError) -> typer.Exit:
    _err(str(exc))
    return _exit(exc.exit_code)


def _client(home: Path | Home | None) -> ControlClient:
    from .client import ControlClient
    return ControlClient(Home.at(home))


def _payload(text: str | None, file: Path | None) -> bytes:
    if text is not None and file is None:
        return text.encode("utf-8")
    if file is None or text is not None:  # neither or both
        _err("give the message either as an argument or with --file PATH")
        raise _exit(2)
    from .worker.handlers.base import MAX_LIST_BYTES
    try:
        with open(file, "rb") as f:
            data = f.read(MAX_LIST_BYTES + 1)  # bounded: a huge file or a device is not read whole
    except OSError as exc:
        _err(f"cannot read {file}: {exc.strerror}")
        raise _exit(1) from None
    if len(data) > MAX_LIST_BYTES:
        _err(f"{file} is over {MAX_LIST_BYTES} bytes, the largest message an actor can take")
        raise _exit(2)
    return data


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def _as_text(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": data.hex()}


#: `up --durability`'s default, Durability.DISK's value (typer makes it the member; chain.store loads late).
_DISK = cast("Durability", "disk")


# ---- up / down -------------------------------------------------------------------------------

MetricsOpt = Annotated[Optional[str], _Opt(
    "--metrics", help="Serve Prometheus metrics on HOST:PORT (a bare PORT: loopback), read-only (docs/metrics.md).")]
DashboardOpt = Annotated[Optional[str], _Opt(
    "--dashboard", metavar="[ADDR]",
    help="Serve a web dashboard on ADDR (alone: 127.0.0.1:0, a free loopback port) and print its URL, "
         "token included; it ends with the node (docs/dashboard.md).")]


def _dashboard_argv(argv: list[str]) -> list[str]:
    """`--dashboard` with no ADDR after it (the end, another option, or a word with no `:` that is
    no port, such as the config) gets the default one: typer has no options with an optional value.
    A word with a `:` is taken as the ADDR, and a bad one is then reported as such."""
    from .dashboard import DEFAULT_ADDRESS

    out = list(argv)
    for i in reversed([i for i, a in enumerate(out) if a == "--dashboard"]):
        given = out[i + 1] if i + 1 < len(out) else None
        if given is None or given.startswith("-") or (":" not in given and not given.isdigit()):
            out.insert(i + 1, DEFAULT_ADDRESS)
    return out


@_verb()
def up(
    config: Annotated[Path, _Arg(help="The supervision.toml of the tree to boot.")],
    home: HomeOpt = None,
    detach: Annotated[bool, _Opt("--detach", "-d", help="Return once the tree is running.")] = False,
    durability: Annotated[Durability, _Opt(
        "--durability", help="What the chain-writer's ack promises: disk (fsync per group commit: survives a power "
        "loss) or process (in the OS: survives any process's death, not a power loss; replies wait less).",
        case_sensitive=False)] = _DISK,
    metrics: MetricsOpt = None,
    dashboard: DashboardOpt = None,
    cluster: ClusterOpt = None,
    node_name: NodeNameOpt = None,
) -> None:
    """Boot a supervision tree: a node process, a chain-writer, one process per actor."""
    _boot(home, ["--config", str(config.resolve()), *_metrics_args(metrics), *_cluster_args(cluster, node_name)],
          detach, durability, "tree", dashboard)


DetachOpt = Annotated[bool, _Opt("--detach", "-d", help="Return once the node is running.")]


def _metrics_args(metrics: str | None) -> list[str]:
    return [] if metrics is None else ["--metrics", metrics]


ClusterOpt = Annotated[Optional[str], _Opt("--cluster", help="Join the nodes of this NATS server (nats://HOST:PORT, "
                                                               "JetStream on; `theater-otp nats` starts one).")]
NodeNameOpt = Annotated[Optional[str], _Opt("--node-name", help="This node's name in the cluster (default: the "
                                                                  "host name); unique among the live nodes.")]


def _cluster_args(cluster: str | None, node_name: str | None) -> list[str]:
    if cluster is None:
        if node_name is not None:
            _err("--node-name needs --cluster")
            raise _exit(2)
        return []
    return ["--cluster", cluster, *([] if node_name is None else ["--node-name", node_name])]


@_verb()
def server(
    home: HomeOpt = None,
    detach: DetachOpt = False,
    config: Annotated[Optional[Path], _Opt("--config", help="A supervision.toml with only [supervisor] settings "
                                                            "(strategy, intensity, period): no children.")] = None,
    durability: Annotated[Durability, _Opt(
        "--durability", help="What the chain-writer's ack promises: disk or process (as for `up`).",
        case_sensitive=False)] = _DISK,
    metrics: MetricsOpt = None,
    dashboard: DashboardOpt = None,
    cluster: ClusterOpt = None,
    node_name: NodeNameOpt = None,
) -> None:
    """Start a node with an empty root supervisor (one_for_one); add actors with `start`."""
    node_args = ["--server", *_metrics_args(metrics), *_cluster_args(cluster, node_name)] + \
        ([] if config is None else ["--config", str(config.resolve())])
    _boot(home, node_args, detach, durability, "server", dashboard)


def _boot(home: Path | None, node_args: list[str], detach: bool, durability: Durability, what: str,
          dashboard: str | None = None) -> None:
    """Start a node (`python -m theater_otp.node` with `node_args`) and wait on its status pipe;
    with `detach`, return once it runs, else wait for it to stop. `what` names it (tree, server).
    `dashboard`: an address to start the dashboard on once the node is ready (its URL to stdout)."""
    import subprocess

    from .chain.store import Durability

    durability = Durability(durability)  # the default is its value: this module imports chain.store late
    if dashboard is not None:
        from .dashboard import DashboardError, parse_address
        try:
            parse_address(dashboard)
        except DashboardError as exc:
            _err(str(exc))
            raise _exit(2) from None

    # the node checks the config and the home (one check, in one place) and says on the status
    # pipe: `progress <text>` while it compiles, then `ready` or `error <exit code> <message>`
    h = Home.at(home)
    h.prepare()
    read_fd, write_fd = os.pipe()
    cmd = [sys.executable, "-m", "theater_otp.node", "--home", str(h.root), *node_args,
           "--status-fd", str(write_fd), "--durability", durability.value]
    if not detach:
        cmd.append("--log-stderr")
    log = open(h.root / "node.stderr", "ab") if detach else None
    proc = subprocess.Popen(cmd, pass_fds=(write_fd,), start_new_session=detach, stdin=subprocess.DEVNULL,
                            stdout=log or None, stderr=log or None)
    os.close(write_fd)
    if log:
        log.close()
    from .cli_progress import Progress

    line = ""
    with os.fdopen(read_fd) as status, Progress(f"starting the {what}: checking the config, compiling components"
                                                ) as progress:
        for raw in status:
            line = raw.strip()
            if not line.startswith("progress "):
                break
            progress.say(line.removeprefix("progress "))
    if line != "ready":
        proc.wait()
        code_text, _, message = line.removeprefix("error ").partition(" ")
        if not code_text.isdigit() or not message:
            code_text, message = "1", f"the node exited with code {proc.returncode}"
        _err(message)
        raise _exit(int(code_text))
    home_flag = "" if h.root == Home.at(None).root else f" --home {h.root}"
    print(f"{what} up: node pid {proc.pid}, home {h.root}", file=sys.stderr)
    if dashboard is not None:
        _start_dashboard(h, proc, dashboard, detach)
    if what == "server":
        print(f"start actors with `theater-otp start MANIFEST{home_flag}`", file=sys.stderr)
    if detach:
        return
    print(f"watch it with `theater-otp tree{home_flag}` in another terminal; Ctrl-C stops the {what}",
          file=sys.stderr)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node gets Ctrl-C too and stops the tree
    code = proc.wait()
    print(f"{what} stopped" if code == 0 else f"node exited with code {code}", file=sys.stderr)
    raise _exit(code)


def _start_dashboard(h: Home, node: Any, address: str, detach: bool) -> None:
    """Start the dashboard for the node `node` (a Popen) and print its URL; if it cannot start, stop
    the node (as a `--metrics` port in use does) and exit 1 with one line naming the cause."""
    from .dashboard import DashboardError, start

    try:
        pid, url = start(h.root, node.pid, address, h.root / "dashboard.log" if detach else None)
    except DashboardError as exc:
        _err(str(exc))
        try:
            with _client(h) as c:
                c.call("down", timeout_s=120)
        except TheaterError:
            pass  # it stopped already
        node.wait()
        raise _exit(1) from None
    print(f"dashboard (pid {pid}; the token in the URL is its password; it ends with the node):", file=sys.stderr)
    print(url, flush=True)


@_verb()
def down(home: HomeOpt = None, json_out: JsonOpt = False,
         timeout: Annotated[float, _Opt(help="Seconds to wait for the tree to stop.")] = 120.0) -> None:
    """Stop the tree in reverse start order, then the node."""
    try:
        with _client(home) as c:
            pid = c.call("ping")["node_pid"]
            result = c.call("down", timeout_s=timeout)
    except TheaterError as exc:
        raise _fail(exc) from None
    deadline = time.monotonic() + 10
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if json_out:
        _print_json({"stopped": True, "node_pid": pid, **(result or {})})
    else:
        print(f"tree stopped (node pid {pid})")


def _pid_alive(pid: int) -> bool:
    import psutil
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# ---- tree ------------------------------------------------------------------------------------

ViewClusterOpt = Annotated[Optional[str], _Opt(
    "--cluster", metavar="URL", help="Ask every live node of the cluster on this NATS server (nats://HOST:PORT) "
    "instead of the local node: `tree` shows a section per node, `list` a NODE column (docs/cluster.md).")]


@_verb()
def tree(
    path: Annotated[Optional[str], _Arg(
        metavar="PATH", help="Show only this part of the tree: a supervisor's path (root/team) or id, or an actor's "
        "path, id, unique path suffix or name.")] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
    depth: Annotated[Optional[int], _Opt("--depth", min=0, help="Show N levels below the start (0: the start "
                                                                "alone).")] = None,
    watch: Annotated[bool, _Opt("--watch", "-w", help="Redraw it every --interval seconds until Ctrl-C; an actor "
                                                      "that restarted is highlighted (↻) for a few seconds.")] = False,
    interval: Annotated[float, _Opt("--interval", min=0.05, help="Seconds between redraws (--watch).")] = 1.0,
    frames: Annotated[Optional[int], _Opt("--frames", min=1, hidden=True, help="Stop after N refreshes.")] = None,
    cluster: ViewClusterOpt = None,
) -> None:
    """Show the supervision tree: pids, status, restarts, uptime."""
    if watch and json_out:
        _err("--watch draws text; for JSON use `tree --json` (once) or `top --json`")
        raise _exit(2)
    if cluster is not None:
        if watch or path is not None:
            _err("--cluster shows every node's whole tree: it takes neither PATH nor --watch")
            raise _exit(2)
        code = _show_cluster_tree(cluster, json_out=json_out, depth=depth)
    elif watch:
        code = _watch_tree(home=home, depth=depth, path=path, interval=interval, frames=frames)
    else:
        code = _show_tree(home=home, json_out=json_out, depth=depth, path=path)
    if code:
        raise _exit(code)


def _watch_tree(home: Path | None, depth: int | None, path: str | None, interval: float, frames: int | None) -> int:
    """`tree --watch`: the tree redrawn every `interval` seconds (rich Live on a terminal; else each
    frame that differs from the one before, printed in turn), actors whose pid or restarts changed
    marked for a few seconds. Ctrl-C ends it with 0; `frames` bounds the refreshes. Returns the exit code."""
    from contextlib import ExitStack

    from rich.live import Live

    from .cli_top import marked_tree, tree_order, wait, watch_marks

    console = _console()
    previous: dict[str, tuple[int | None, int]] | None = None
    until: dict[str, float] = {}
    shown_last: tuple | None = None
    try:
        with _client(home) as c, _Interrupt() as stop, ExitStack() as stack:
            live = stack.enter_context(Live(console=console, auto_refresh=False)) if console.is_terminal else None
            start_path = None if path is None else _live_target(c, c.call("tree"), path)[0]
            count = 0
            while not stop.stopped:
                snapshot = c.call("tree")
                start = snapshot if start_path is None else _find_path(snapshot, start_path)
                if start is None:
                    raise TheaterError(f"{path!r} is not in the tree any more")
                previous, marked = watch_marks(previous, start, time.monotonic(), until)
                top = start if depth is None else _cut(start, depth)
                shown = marked_tree(_render_tree(top, here=_here(snapshot)), tree_order(top), marked)
                if live is not None:
                    live.update(shown, refresh=True)
                else:  # a pipe or a file: a frame when something other than the uptimes changed
                    key = (tuple(sorted(previous.items())), tuple(sorted(marked)),
                           tuple((n["path"], n["status"]) for n in _walk(top)))
                    if key != shown_last:
                        shown_last = key
                        _write(functools.partial(console.print, shown, soft_wrap=True))
                count += 1
                if (frames is not None and count >= frames) or wait(stop, interval):
                    break
    except TheaterError as exc:
        _err(str(exc))
        return exc.exit_code
    return 0


_DECIMAL = re.compile(r"0|[1-9][0-9]*")


def _tree_argv(argv: list[str]) -> dict[str, Any] | None:
    """`_show_tree`'s arguments if `argv` is a `tree` command line of plain arguments, so `main()`
    can run it without typer; else None, and typer parses it (help, errors, anything unusual).

    Plain: each at most once, in any order, `--json`, `--home DIR` or `--home=DIR`, `--depth N` or
    `--depth=N` with N written as a decimal integer ≥ 0, and one PATH; no value empty or starting
    with "-". Invariant: for such a line, typer passes `tree` the same values (tests/test_cli_tree.py).
    """
    if not argv or argv[0] != "tree":
        return None
    args: dict[str, Any] = {"home": None, "json_out": False, "depth": None, "path": None}
    seen: set[str] = set()
    tokens = iter(argv[1:])
    for token in tokens:
        value: Any
        if token == "--json":
            key, value = "json_out", True
        elif token in ("--home", "--depth"):
            key, value = token[2:], next(tokens, "")
        elif token.startswith(("--home=", "--depth=")):
            key, value = token[2:].split("=", 1)
        elif not token.startswith("-"):
            key, value = "path", token
        else:
            return None
        if key in seen or value == "" or (isinstance(value, str) and value.startswith("-")):
            return None
        seen.add(key)
        if key == "home":
            value = Path(value)
        elif key == "depth":
            if not _DECIMAL.fullmatch(value):
                return None
            value = int(value)
        args[key] = value
    return args


def _show_tree(home: Path | None, json_out: bool, depth: int | None, path: str | None) -> int:
    """`tree`: the running tree from `path` (default: the root) down `depth` levels (default: all),
    as text or JSON on stdout. Returns the exit code; an error is one line on stderr."""
    try:
        with _client(home) as c:
            snapshot = c.call("tree")
            start = snapshot if path is None else _find_path(snapshot, _live_target(c, snapshot, path)[0])
            if start is None:  # resolved, then gone from the tree before we looked (deleted)
                raise TheaterError(f"{path!r} is not in the tree any more")
    except TheaterError as exc:
        _err(str(exc))
        return exc.exit_code
    top = start if depth is None else _cut(start, depth)
    text = json.dumps(top, indent=2, default=str) + "\n" if json_out else _render_tree(top, here=_here(snapshot))
    _write_text(text)
    return 0


def _write_text(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `tree | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _show_cluster_tree(url: str, json_out: bool, depth: int | None) -> int:
    """`tree --cluster URL`: every live node's tree (cut at `depth`), one section per node in name
    order, a node that did not answer as one line with its error; JSON: {"nodes": {name: tree or
    {"error": ...}}}. Exit code 0 if any node answered, 1 if none did (or NATS was not reached)."""
    from .cluster.views import survey_sync

    try:
        found = survey_sync(url, "tree", {})
    except TheaterError as exc:
        _err(str(exc))
        return exc.exit_code
    nodes: dict[str, Any] = {}
    for name in sorted(found.answers):
        answer = found.answers[name]
        if "ok" not in answer:
            nodes[name] = answer
        else:
            nodes[name] = answer["ok"] if depth is None else _cut(answer["ok"], depth)
    if json_out:
        text = json.dumps({"nodes": nodes}, indent=2, default=str) + "\n"
    else:
        sections = []
        for name, shown in nodes.items():
            if "ok" in found.answers[name]:
                sections.append(f"== {name} ==\n" + _render_tree(shown, here=name))
            else:
                sections.append(f"== {name} ==  {_node_error(shown)}\n")
        text = "\n".join(sections)
    _write_text(text)
    return _cluster_code(url, found.answers)


def _node_error(answer: dict) -> str:
    error = answer.get("error")
    if not isinstance(error, dict):
        return f"error: {error}"
    return f"error ({error.get('code', 'error')}): {error.get('message', '')}"


def _cluster_code(url: str, answers: dict[str, dict]) -> int:
    """0 if any node answered, else 1 (and, for an empty cluster, a line saying so)."""
    if not answers:
        _err(f"no live nodes in the cluster at {url}: none holds a key in the theater-nodes bucket")
    return 0 if any("ok" in answer for answer in answers.values()) else 1


def _cut(node: dict, depth: int) -> dict:
    """A copy of `node` without the levels below `depth` (0: the node alone), and without what it
    hosts for other nodes. A node whose children are left out has `"children": []` and
    `"hidden_children"`: how many it has."""
    if depth < 0:
        raise ValueError(f"depth must be 0 or more, not {depth}")
    if "hosted" in node:  # what a node runs for other nodes is not in its tree's levels: left out
        node = {k: v for k, v in node.items() if k != "hosted"}
    children = node["children"]
    if depth == 0:
        return {**node, "children": [], "hidden_children": len(children)} if children else node
    return {**node, "children": [_cut(child, depth - 1) for child in children]}


def _render_tree(top: dict, here: str | None = None) -> str:
    """The tree under `top` as text, one line per node, as one string: a tree of 1,000 actors is
    one write. The first line is `top`: the root with the node's pid, any other node with its path.
    An actor that runs on another cluster node than `here` (a hosted child; `here` defaults to the
    node named in a root snapshot) ends with `@NODE`."""
    if here is None:
        here = _here(top)
    if "node_pid" in top:
        head = f"{top['id']}  [{top['strategy']}]  node pid {top['node_pid']}"
    else:
        head = _tree_row(top, top["path"], here)
    lines = [head + _hidden(top)]
    _tree_rows(top["children"], "", lines, here)
    hosted = top.get("hosted") or []
    if hosted:  # run here for other nodes' supervisors: labelled with their full path (owner:path)
        lines.append("hosted for other nodes:")
        for node in hosted:
            node = {**node, "node": here}
            lines.append(f"  {_tree_row(node, node['path'], here)}{_hidden(node)}")
            if node["children"]:
                _tree_rows(node["children"], "  ", lines, here)
    lines.append("")
    return "\n".join(lines)


def _here(snapshot: dict) -> str | None:
    """The cluster node a root snapshot comes from (its `cluster` counters), or None."""
    cluster = snapshot.get("cluster")
    return cluster.get("node") if isinstance(cluster, dict) else None


def _tree_rows(children: list[dict], prefix: str, lines: list[str], here: str | None = None) -> None:
    last = len(children) - 1
    for i, node in enumerate(children):
        row = _tree_row(node, node["id"], here)
        lines.append(f"{prefix}{'└── ' if i == last else '├── '}{row}{_hidden(node)}")
        if node["children"]:
            _tree_rows(node["children"], prefix + ("    " if i == last else "│   "), lines, here)


def _tree_row(node: dict, label: str, here: str | None = None) -> str:
    if node["kind"] == "supervisor":
        restarts = f"  restarts {node['restarts']}" if node["restarts"] else ""
        return f"{label}  [{node['strategy']}]  {node['status']}{restarts}"
    pid = f"pid {node['pid']}" if node["pid"] else "pid -"
    up_s = f"  up {_duration(node['uptime'])}" if node.get("uptime") is not None else ""
    away = node.get("node")
    at = f"  @{away}" if away and away != here else ""
    return f"{label:<12} {node['status']:<10} {pid:<10} restarts {node['restarts']}{up_s}{at}"


def _hidden(node: dict) -> str:
    n = node.get("hidden_children")
    return f"  ({n} {'child' if n == 1 else 'children'} below --depth)" if n else ""


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


# ---- top -------------------------------------------------------------------------------------

@_verb()
def top(
    home: HomeOpt = None,
    json_out: Annotated[bool, _Opt("--json", help="Print one snapshot as JSON (two samples --interval apart, for "
                                                  "the rates) and exit.")] = False,
    interval: Annotated[float, _Opt("--interval", min=0.05, help="Seconds between refreshes.")] = 2.0,
    frames: Annotated[Optional[int], _Opt("--frames", min=1, hidden=True, help="Stop after N refreshes.")] = None,
) -> None:
    """A live table of the actors: CPU %, RSS and USS, mailbox depth, messages in and out per second,
    restarts and the last crash reason (Ctrl-C quits).

    Each refresh is one `tree` call, psutil per worker pid and one read-only query of the chain store
    (messages per second count the message events stored since the refresh before)."""
    from .cli_top import Sampler, frame_title, top_table, wait

    h = Home.at(home)
    try:
        with _client(h) as c, _Interrupt() as stop:
            sampler = Sampler(h, lambda: c.call("tree"))
            try:
                if json_out:
                    sampler.sample()
                    if wait(stop, interval):
                        return
                    frame = sampler.sample()
                    _write(lambda: _print_json({"node_pid": frame.node_pid, "interval_s": round(frame.elapsed or 0, 3),
                                                "actors": [r.to_plain() for r in frame.rows]}))
                    return
                _top_live(sampler, stop, interval, frames, frame_title, top_table, wait)
            finally:
                sampler.close()
    except TheaterError as exc:
        raise _fail(exc) from None


def _console() -> Any:
    """A rich Console for stdout; not a terminal (a pipe, a file): plain text, as wide as the lines."""
    from rich.console import Console

    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=1000)


def _top_live(sampler: Any, stop: _Interrupt, interval: float, frames: int | None, title: Callable[..., str],
              table: Callable[..., Any], wait: Callable[..., bool]) -> None:
    """`top`'s refresh loop: rich Live on a terminal, else one table per refresh printed in turn."""
    from rich.live import Live

    console = _console()
    live = Live(console=console, auto_refresh=False) if console.is_terminal else None
    count = 0
    try:
        if live is not None:
            live.start()
        while not stop.stopped:
            frame = sampler.sample()
            shown = table(frame, title(frame, interval))
            if live is not None:
                live.update(shown, refresh=True)
            else:
                _write(functools.partial(console.print, shown))
            count += 1
            if (frames is not None and count >= frames) or wait(stop, interval):
                break
    finally:
        if live is not None:
            live.stop()


# ---- messages --------------------------------------------------------------------------------

@_verb()
def send(target: TargetArg, payload: PayloadArg = None, file: FileOpt = None, home: HomeOpt = None,
         json_out: JsonOpt = False) -> None:
    """Send a one-way message to an actor."""
    data = _payload(payload, file)
    try:
        with _client(home) as c:
            result = c.call("send", {"target": target, "payload": data})
    except TheaterError as exc:
        raise _fail(exc) from None
    if json_out:
        _print_json({"sent": True, "to": result["delivered_to"], "bytes": len(data)})
    else:
        print(f"sent {len(data)} bytes to {result['delivered_to']}", file=sys.stderr)


@_verb()
def request(target: TargetArg, payload: PayloadArg = None, file: FileOpt = None, home: HomeOpt = None,
            json_out: JsonOpt = False,
            timeout: Annotated[float, _Opt(help="Seconds to wait for the reply.")] = 30.0) -> None:
    """Send a request to an actor and print its reply."""
    import math

    from .config.fields import MAX_SETTING

    if not (math.isfinite(timeout) and 0.001 <= timeout <= MAX_SETTING / 1000):
        _err(f"--timeout must be a number of seconds from 0.001 to {MAX_SETTING // 1000}, not {timeout}")
        raise _exit(2)
    data = _payload(payload, file)
    try:
        with _client(home) as c:
            result = c.call("request", {"target": target, "payload": data, "timeout_ms": int(timeout * 1000)},
                            timeout_s=timeout + 5)
    except TheaterError as exc:
        raise _fail(exc) from None
    reply = result.get("ok")
    if json_out:
        _print_json({"reply": _as_text(reply)})
    elif reply is not None:
        sys.stdout.buffer.write(reply + (b"" if reply.endswith(b"\n") else b"\n"))


@_verb()
def state(target: TargetArg, home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Print an actor's current state."""
    try:
        with _client(home) as c:
            result = c.call("state", {"target": target})
    except TheaterError as exc:
        raise _fail(exc) from None
    data = result.get("ok")
    if json_out:
        _print_json({"state": _as_text(data), "bytes": None if data is None else len(data)})
    elif data is None:
        print("(no state)")
    else:
        sys.stdout.buffer.write(data + b"\n")


# ---- the dynamic child API -------------------------------------------------------------------

SupArg = Annotated[str, _Arg(help="Supervisor path (root/team) or unique id.")]
ChildArg = Annotated[str, _Arg(help="Child id (for simple_one_for_one: the instance id).")]


def _api(home: Path | None, kind: str, body: dict, json_out: bool, render) -> None:
    try:
        with _client(home) as c:
            result = c.call(kind, body, timeout_s=3600)
    except RemoteError as exc:
        if json_out:
            _print_json({"ok": False, "error": exc.code, "message": str(exc)})
        else:
            _err(str(exc))
        raise _exit(1) from None
    except TheaterError as exc:
        raise _fail(exc) from None
    if json_out:
        _print_json(result)
    else:
        render(result)


@_verb("start-child")
def start_child(
    supervisor: SupArg,
    manifest: Annotated[Optional[Path], _Arg(help="Actor manifest (optional for simple_one_for_one).")] = None,
    child_id: Annotated[Optional[str], _Opt("--id", help="Child id (default: the manifest's name).")] = None,
    restart: Annotated[Optional[str], _Opt(help="permanent | transient | temporary")] = None,
    shutdown: Annotated[Optional[str], _Opt(help="ms | brutal_kill | infinity")] = None,
    significant: Annotated[bool, _Opt("--significant", help="Mark the child significant.")] = False,
    home: HomeOpt = None, json_out: JsonOpt = False,
) -> None:
    """Add a child to a running supervisor and start it (OTP start_child)."""
    body: dict[str, Any] = {"supervisor": supervisor, "restart": restart, "significant": significant or None}
    if manifest is not None:
        if not manifest.is_file():
            _err(f"{manifest}: manifest file not found")
            raise _exit(1)
        body["manifest"] = str(manifest.resolve())
        if child_id is None:
            from .config.loader import load_manifest
            try:
                child_id = load_manifest(manifest).name
            except TheaterError as exc:
                raise _fail(exc) from None
    body["id"] = child_id
    if shutdown is not None:
        body["shutdown"] = int(shutdown) if shutdown.isdigit() else shutdown
    _api(home, "start-child", body, json_out,
         lambda r: print(f"started {r['result']['path']} (pid {r['result']['pid']})"))


@_verb("terminate-child")
def terminate_child(supervisor: SupArg, child: ChildArg, home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Stop a child per its shutdown spec and keep its spec (OTP terminate_child)."""
    _api(home, "terminate-child", {"supervisor": supervisor, "id": child}, json_out, lambda r: print("ok"))


@_verb("restart-child")
def restart_child(supervisor: SupArg, child: ChildArg, home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Start a stopped child again (OTP restart_child)."""
    _api(home, "restart-child", {"supervisor": supervisor, "id": child}, json_out,
         lambda r: print(f"restarted {r['result']['path']} (pid {r['result']['pid']})"))


@_verb("delete-child")
def delete_child(supervisor: SupArg, child: ChildArg, home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Remove a stopped child's spec (OTP delete_child)."""
    _api(home, "delete-child", {"supervisor": supervisor, "id": child}, json_out, lambda r: print("ok"))


@_verb("which-children")
def which_children(supervisor: SupArg, home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """A supervisor's children, newest first (OTP which_children)."""
    def render(r: dict) -> None:
        for row in r["children"]:
            child = row["child"] if row["child"] is not None else "undefined"
            pid = f"pid {row['pid']}" if row.get("pid") else ""
            print(f"{row['id']:<16} {row['type']:<10} {child!s:<12} {pid}")
    _api(home, "which-children", {"supervisor": supervisor}, json_out, render)


@_verb("count-children")
def count_children(supervisor: SupArg, home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Counts of specs, active children, supervisors and workers (OTP count_children)."""
    _api(home, "count-children", {"supervisor": supervisor}, json_out,
         lambda r: print(f"specs {r['specs']}  active {r['active']}  supervisors {r['supervisors']}  "
                         f"workers {r['workers']}"))


# ---- server mode: start, stop, restart, list -----------------------------------------------

def _child_id_for(name: str) -> str:
    """A child id (config.rules.ID_RE) made from a manifest's name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")[:200] or "actor"


@_verb()
def start(
    manifest: Annotated[Path, _Arg(help="The actor's manifest.")],
    parent: Annotated[Optional[str], _Opt("--parent", help="The supervisor to start it under: its path or unique "
                                                           "id (default: the root).")] = None,
    restart: Annotated[Optional[str], _Opt(help="permanent (the default) | transient | temporary")] = None,
    id_only: Annotated[bool, _Opt("--id-only", help="Print the actor id alone (for pipes).")] = False,
    monitor: Annotated[bool, _Opt("--monitor", help="Then print the actor's events as they are stored, from its "
                                                    "start (Ctrl-C stops).")] = False,
    home: HomeOpt = None, json_out: JsonOpt = False,
) -> None:
    """Start an actor under the root (or --parent) of a running node and print its actor id.

    Its child id is the manifest's name, made unique among its siblings (name, name-2, ...). It is
    OTP's start_child, as `start-child` runs it: the node checks the manifest and the component
    before anything starts."""
    from .cli_progress import Progress

    try:
        with _client(home) as c:
            def progress(text: str) -> Any:
                return Progress(text, spinner=not json_out, plain=False)
            result = start_target(c, manifest, parent, restart, progress)
    except TheaterError as exc:
        raise _fail(exc) from None
    if json_out:
        _print_json(result)
    elif id_only:
        print(result["actor_id"])
    else:
        print(f"started {result['path']} (pid {result['pid']}), actor id {result['actor_id']}")
    if monitor:
        from .chain.follow import Filter

        sys.stdout.flush()
        _follow(Home.at(home), Filter(), json_out, [result["actor_id"]], follow=True)


def _child_of(c: ControlClient, ref: str) -> tuple[str, str, dict, dict]:
    """(supervisor path, child id, its `tree` node, its supervisor's) of the actor (or nested
    supervisor) `ref` names in the running tree; RemoteError `not_found` when nothing does."""
    snapshot = c.call("tree")
    path = _live_target(c, snapshot, ref)[0]
    if "/" not in path:
        raise TheaterError(f"{path} is the root supervisor: stop the node with `theater-otp down`")
    sup, child = path.rsplit("/", 1)
    return sup, child, _find_path(snapshot, path) or {"path": path}, _find_path(snapshot, sup) or {}


def start_target(c: ControlClient, manifest: Path, parent: str | None = None, restart: str | None = None,
                 waiting: Callable[[str], Any] | None = None) -> dict:
    """Start the actor of `manifest` under `parent` (default: the root) with a child id from its
    name made unique (name, name-2, ...); return start_child's result (path, pid, actor_id, ...).
    `waiting(text)`, a context manager, is shown while the node checks and compiles. `start` and
    the dashboard's start form both come here."""
    import contextlib

    from .config.loader import load_manifest

    try:
        base = _child_id_for(load_manifest(manifest).name)
        sup = parent if parent is not None else c.call("tree")["path"]
        taken = {row["id"] for row in c.call("which_children", {"supervisor": sup})["children"]}
        body: dict[str, Any] = {"supervisor": sup, "manifest": str(manifest.resolve()), "restart": restart}
        for n in range(1, 10_000):
            child_id = base if n == 1 else f"{base}-{n}"
            if child_id in taken:
                continue
            try:
                text = f"starting {sup}/{child_id}: the node checks and compiles its component"
                with (waiting(text) if waiting is not None else contextlib.nullcontext()):
                    return cast(dict, c.call("start_child", {**body, "id": child_id}, timeout_s=3600)["result"])
            except RemoteError as exc:  # started meanwhile by someone else: take the next name
                if exc.code not in ("already_started", "already_present"):
                    raise
                taken.add(child_id)
        raise TheaterError(f"no free child id for {base!r} under {sup}")
    except RemoteError as exc:
        where = str(manifest.resolve())
        if exc.code == "invalid_child_spec" and where not in str(exc) and not str(exc).startswith("start-child:"):
            raise RemoteError(exc.code, f"{where}: component: {exc}") from None  # a compile error names the component only
        raise


def stop_target(c: ControlClient, ref: str) -> dict:
    """Stop the actor (or nested supervisor) `ref` names per its shutdown spec and remove it
    (terminate_child, then delete_child); return its `tree` node. `stop` and the dashboard's stop
    button (theater_otp/dashboard) both come here."""
    sup, child, node, _ = _child_of(c, ref)
    c.call("terminate_child", {"supervisor": sup, "id": child}, timeout_s=3600)
    try:
        c.call("delete_child", {"supervisor": sup, "id": child})
    except RemoteError as exc:  # a temporary or simple_one_for_one child is forgotten when it stops
        if exc.code not in ("not_found", "simple_one_for_one"):
            raise
    return node


def restart_target(c: ControlClient, ref: str) -> dict:
    """Stop the actor (or nested supervisor) `ref` names per its shutdown spec and start it again
    (terminate_child, then restart_child); return restart_child's result (path, pid, ...). `restart`
    and the dashboard's restart button both come here. TheaterError for a child that cannot be."""
    sup, child, node, parent = _child_of(c, ref)
    if node.get("restart") == "temporary":
        raise TheaterError(f"{node['path']} is temporary: its supervisor forgets it when it stops, so it "
                           f"cannot be restarted; `stop` it and `start` it again")
    if parent.get("strategy") == "simple_one_for_one":
        raise TheaterError(f"{node['path']} is a simple_one_for_one instance: it cannot be restarted; "
                           f"`stop` it and start another")
    c.call("terminate_child", {"supervisor": sup, "id": child}, timeout_s=3600)
    return cast(dict, c.call("restart_child", {"supervisor": sup, "id": child}, timeout_s=3600)["result"])


@_verb()
def stop(target: TargetArg, home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Stop an actor per its shutdown spec and remove it (OTP terminate_child, then delete_child)."""
    try:
        with _client(home) as c:
            node = stop_target(c, target)
    except TheaterError as exc:
        raise _fail(exc) from None
    if json_out:
        _print_json({"stopped": node["path"], "actor_id": node.get("actor_id")})
    else:
        print(f"stopped {node['path']}")


@_verb("restart")
def restart_(target: TargetArg, home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Stop an actor per its shutdown spec and start it again (OTP terminate_child, then restart_child)."""
    try:
        with _client(home) as c:
            result = restart_target(c, target)
    except TheaterError as exc:
        raise _fail(exc) from None
    if json_out:
        _print_json(result)
    else:
        print(f"restarted {result['path']} (pid {result['pid']})")


@_verb()
def watch(
    folder: Annotated[Path, _Arg(metavar="DIR", help="The folder to watch (the actor's sources).")],
    manifest: Annotated[Path, _Opt("--manifest", "-m", help="The manifest of the actor to rebuild and restart.")],
    home: HomeOpt = None,
    changes: Annotated[Optional[int], _Opt("--changes", min=1, hidden=True,
                                           help="End after N rebuilds (for tests).")] = None,
) -> None:
    """Rebuild an actor when its sources change and restart it in the running node (until Ctrl-C).

    Polls DIR every half second. A change builds the actor of --manifest as `build` does (a WAT
    actor: its .wat is the component), compiles and checks it, then stops the running actor and
    starts it again on the new component (started under the root if it is not running); one line
    per restart. A broken source is one `error:` line: the old actor keeps running."""
    from .cli_watch import run

    if not folder.is_dir():
        _err(f"{folder}: not a folder")
        raise _exit(1)
    if not manifest.is_file():
        _err(f"{manifest}: manifest file not found")
        raise _exit(1)
    try:
        code = run(folder, manifest, Home.at(home), changes)
    except TheaterError as exc:
        raise _fail(exc) from None
    raise _exit(code)


@_verb("list")
def list_(home: HomeOpt = None, json_out: JsonOpt = False, cluster: ViewClusterOpt = None) -> None:
    """One row per actor: actor id, name, path, status, restarts, uptime, mailbox depth, RSS."""
    if cluster is not None:
        code = _list_cluster(cluster, json_out)
        if code:
            raise _exit(code)
        return
    try:
        with _client(home) as c:
            snapshot = c.call("tree")
    except TheaterError as exc:
        raise _fail(exc) from None
    rows = _actor_rows(snapshot, lambda node: True)
    if json_out:
        _write(lambda: _print_json(rows))
        return
    if not rows:
        print("no actors", file=sys.stderr)
        return
    table: list[tuple[str, ...]] = [("ACTOR ID", "NAME", "PATH", "STATUS", "RESTARTS", "UPTIME", "MAILBOX", "RSS")]
    table += [_list_cells(r) for r in rows]
    _write(lambda: print(_table(table)))


def _actor_rows(snapshot: dict, local: Callable[[dict], bool], where: str | None = None) -> list[dict]:
    """`list`'s rows for the actors of a tree snapshot; RSS read for those `local` says run here.
    With `where` (the snapshot's cluster node), each row also has "node": the node it runs on."""
    import psutil

    rows = []
    for node in _walk(snapshot):
        if node["kind"] != "actor":
            continue
        rss = None
        if node["pid"] and local(node):
            try:
                rss = psutil.Process(node["pid"]).memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        row = {key: node.get(key) for key in ("actor_id", "id", "name", "path", "status", "pid", "restarts",
                                              "incarnation", "uptime", "mailbox")} | {"rss": rss}
        if where is not None:
            row["node"] = node.get("node") or where
        rows.append(row)
    return rows


def _list_cells(r: dict) -> tuple[str, ...]:
    return (r["actor_id"] or "-", r["name"], r["path"], r["status"], str(r["restarts"]),
            "-" if r["uptime"] is None else _duration(r["uptime"]),
            "-" if r["mailbox"] is None else str(r["mailbox"]),
            "-" if r["rss"] is None else f"{r['rss'] / 2**20:.1f} MiB")


def _table(table: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table)


def _list_cluster(url: str, json_out: bool) -> int:
    """`list --cluster URL`: every live node's actors, a NODE column first (the node whose tree
    holds the actor; `n1@n2` for a child supervised on n1 that runs on n2), then one line per node
    that did not answer. RSS only for actors running on this host. JSON: {"nodes": {name: rows
    (each with "node": where it runs) or {"error": ...}}}. Returns the exit code."""
    import socket

    from .cluster.views import survey_sync

    try:
        found = survey_sync(url, "tree", {})
    except TheaterError as exc:
        _err(str(exc))
        return exc.exit_code
    host = socket.gethostname()

    def on_this_host(node: dict) -> bool:
        record = found.records.get(node.get("node") or "")
        return record is not None and record.host == host

    nodes: dict[str, Any] = {}
    for name in sorted(found.answers):
        answer = found.answers[name]
        if "ok" not in answer:
            nodes[name] = answer
            continue
        nodes[name] = _actor_rows(answer["ok"], on_this_host, where=name)
    if json_out:
        _write(lambda: _print_json({"nodes": nodes}))
        return _cluster_code(url, found.answers)
    table: list[tuple[str, ...]] = [("NODE", "ACTOR ID", "NAME", "PATH", "STATUS", "RESTARTS", "UPTIME", "MAILBOX",
                                     "RSS")]
    failed = []
    for name, rows in nodes.items():
        if isinstance(rows, dict):
            failed.append(f"{name}  {_node_error(rows)}")
            continue
        table += [(name if r["node"] == name else f"{name}@{r['node']}", *_list_cells(r)) for r in rows]
    if len(table) == 1 and found.answered:
        print("no actors", file=sys.stderr)
    lines = ([_table(table)] if len(table) > 1 else []) + failed
    if lines:
        _write(lambda: print("\n".join(lines)))
    return _cluster_code(url, found.answers)


# ---- events, subscribe, logs -----------------------------------------------------------------

TypeOpt = Annotated[Optional[str], _Opt("--type", help="Only this event type (or prefix, e.g. message).")]
AllOpt = Annotated[bool, _Opt("--all", help="Every chain, those that begin later too.")]


@_verb()
def events(
    actor: Annotated[Optional[str], _Arg(help="Actor path, id or name; or a supervisor path.")] = None,
    all_: AllOpt = False,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
    type_: TypeOpt = None,
    limit: Annotated[Optional[int], _Opt("--limit", help="Only the last N events.")] = None,
    since: Annotated[Optional[str], _Opt(
        "--since", help="Only events from this seq (120), this long ago (90s, 5m, 2h, 1d) "
                        "or this time (2026-11-26T14:05, local time unless it has an offset).")] = None,
    follow: Annotated[bool, _Opt("--follow", "-f", help="Then print each new event as it is stored, pushed by the "
                                                        "chain-writer (Ctrl-C stops).")] = False,
) -> None:
    """List the events of an actor's (or supervisor's) chain, or of every chain (--all).

    With --follow, what is stored first, then every new event as it is stored, each once and in seq
    order per chain (docs/events.md). With --all, the chains are merged by timestamp and each line
    starts with the chain's path."""
    from .chain.follow import Filter
    from .chain.store import connect, read_events

    if (actor is None) == (not all_):
        _err("give an ACTOR or --all")
        raise _exit(2)
    try:
        since_seq, since_ns = _parse_since(since)
    except ValueError as exc:
        _err(str(exc))
        raise _exit(2) from None
    wanted = Filter(event_type=type_, since_seq=since_seq, since_ns=since_ns)
    if actor is None:
        h = Home.at(home)
        if not h.chain_db.exists():
            _err(f"no event store at {h.chain_db} (has a tree run with this --home?)")
            raise _exit(1)
        _sync_chain(h)
        _follow(h, wanted, json_out, every=True, limit=limit, follow=follow)
        return
    h, actor_id, label = _chain_for(home, actor)
    if follow:
        _follow(h, wanted, json_out, [actor_id], limit=limit, header=(label, actor_id))
        return
    conn = connect(h.chain_db, readonly=True)
    try:
        rows = read_events(conn, actor_id, event_type=type_, since_seq=since_seq, since_ns=since_ns,
                           limit=limit, last=limit is not None)
    finally:
        conn.close()
    if not json_out:
        print(f"# {label}  ({actor_id})  {len(rows)} event(s)", file=sys.stderr)
    def print_rows() -> None:
        for e in rows:
            _print_event(e, json_out)
    _write(print_rows)


@_verb()
def subscribe(
    targets: Annotated[Optional[list[str]], _Arg(
        metavar="ID|-", help="Actor ids, paths or names (or supervisor paths); `-` reads more from stdin, one a "
                             "line, as they come.")] = None,
    all_: AllOpt = False,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
    type_: TypeOpt = None,
) -> None:
    """Print new events as they are stored, pushed by the chain-writer, until Ctrl-C or SIGTERM.

    Only new events: those stamped from the moment subscribe started (an id read later from stdin
    gets its events from that moment too, so `... | theater-otp subscribe -` misses nothing of a
    new actor). When stdin closes, subscribe keeps following the ids it read (exit 1 if there
    were none). Each line starts with the chain's path; --json prints one event object a line."""
    from .chain.follow import Filter

    start_ns = time.time_ns()
    refs = list(targets or [])
    from_stdin = "-" in refs
    refs = [r for r in refs if r != "-"]
    if all_ == bool(refs or from_stdin):
        _err("give actor ids, `-` (ids on stdin) or --all")
        raise _exit(2)
    h = Home.at(home)
    if not h.chain_db.exists():
        _err(f"no event store at {h.chain_db} (has a tree run with this --home?)")
        raise _exit(1)
    chains: list[str] = []
    for ref in refs:
        try:
            chains.append(_resolve_chain(h, ref)[0])
        except TheaterError as exc:
            raise _fail(exc) from None
    wanted = Filter(event_type=type_, since_ns=start_ns)
    _follow(h, wanted, json_out, chains, every=all_, stdin=from_stdin, labels=True)


#: `logs --level` names and the chain's log-at levels, lowest first (`log(msg)` is info).
_LOG_LEVELS = {"trace": 0, "debug": 1, "info": 2, "warn": 3, "warning": 3, "error": 4}


@_verb()
def logs(
    actor: TargetArg,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
    follow: Annotated[bool, _Opt("--follow", "-f", help="Then print each new line as it is stored (Ctrl-C "
                                                        "stops).")] = False,
    since: Annotated[Optional[str], _Opt(
        "--since", help="Only lines from this long ago (90s, 5m, 2h, 1d) or this time (2026-11-26T14:05).")] = None,
    level: Annotated[Optional[str], _Opt(
        "--level", help="Only lines at this level or above: trace, debug, info, warning (warn) or error.")] = None,
) -> None:
    """An actor's log lines, every incarnation's, from its chain.

    The source is the chain: each call of the actor's runtime `log(msg)` (level info) or
    `log-at(level, msg)` / the seed's `log(level, msg)` is a `host.runtime.log` or
    `host.runtime.log-at` event, at every level (trace and debug too, which node.log leaves out),
    and a `log.truncated` event (a warning line here) counts what went over log_bytes_per_s. What
    a toolchain actor prints on WASI stdout or stderr is a `log.output` event per line (shown as
    `stdout: ...`, level info). So the lines are durable, survive restarts and follow by push
    like events."""
    from .chain.follow import Filter

    threshold = 0
    if level is not None:
        if level.lower() not in _LOG_LEVELS:
            _err(f"--level {level!r}: expected debug, info, warning or error (or trace, warn)")
            raise _exit(2)
        threshold = _LOG_LEVELS[level.lower()]
    try:
        since_seq, since_ns = _parse_since(since)
    except ValueError as exc:
        _err(str(exc))
        raise _exit(2) from None

    def is_line(e: Any) -> bool:
        line = log_line(e)
        return line is not None and _LOG_LEVELS.get(line[0], 2) >= threshold

    h, actor_id, label = _chain_for(home, actor)
    wanted = Filter(since_seq=since_seq, since_ns=since_ns, extra=is_line)
    _follow(h, wanted, json_out, [actor_id], follow=follow, render=_print_log_line)


def _print_log_line(e: Any, json_out: bool, label: str | None) -> None:
    line = log_line(e)
    if line is None:
        return
    lvl, text = line
    if json_out:
        print(json.dumps({"actor_id": e.actor_id, "seq": e.seq, "incarnation": e.incarnation,
                          "timestamp": e.timestamp, "level": lvl, "message": text}))
        return
    print(f"{_stamp(e.timestamp)}  #{e.incarnation:<3} {lvl.upper():<5}  {text}")


def _follow(h: Home, wanted: Any, json_out: bool, chains: Sequence[str] = (), *, every: bool = False,
            limit: int | None = None, follow: bool = True, stdin: bool = False, labels: bool = False,
            header: tuple[str, str] | None = None, render: Callable[[Any, bool, str | None], None] | None = None
            ) -> None:
    """Print the backlog of `chains` (or of every chain) that `wanted` accepts, then, with `follow`,
    each new event as it is stored until SIGINT or SIGTERM (exit 0). `stdin`: also follow the
    chains named on stdin, one a line, as they come. `labels` (and `every`): each text line
    starts with its chain's path."""
    import sqlite3

    from .chain.follow import Follower

    out = render or _print_event_labelled
    labels = labels or every
    paths: dict[str, str] = {}

    def label(actor_id: str) -> str | None:
        if not labels:
            return None
        if actor_id not in paths:
            try:
                row = f.db().execute("SELECT path FROM actors WHERE actor_id = ?", (actor_id,)).fetchone()
            except sqlite3.Error:
                row = None
            named = row[0] if row and row[0] and not actor_id.startswith("supervisor:") else actor_id
            paths[actor_id] = f"{named:<16}"
        return paths[actor_id]

    def emit(batch: list[Any]) -> None:
        def print_batch() -> None:
            for e in batch:
                out(e, json_out, label(e.actor_id))
        if batch:
            _write(print_batch)

    with _Interrupt() as stop, Follower(h, wanted) as f:
        try:
            backlog = f.follow_all(limit) if every else [e for c in chains for e in f.follow(c, limit)]
        except sqlite3.Error as exc:
            _err(f"cannot read {h.chain_db}: {exc}")
            raise _exit(1) from None
        if header is not None and not json_out:
            print(f"# {header[0]}  ({header[1]})  {len(backlog)} event(s)", file=sys.stderr)
        emit(backlog)
        if not follow:
            return
        if labels:  # subscribe: it follows from here (scripts and tests wait for this line)
            what = "every chain" if every else f"{len(chains)} chain(s)" + (" and those named on stdin" if stdin else "")
            print(f"# following {what} (Ctrl-C stops)", file=sys.stderr, flush=True)
        fds = [stop.fileno()] + ([sys.stdin.fileno()] if stdin else [])
        pending = b""
        while not stop.stopped:
            got, ready = f.next_events(None, fds)
            emit(got)
            if stdin and sys.stdin.fileno() in ready:
                data = os.read(sys.stdin.fileno(), 65536)
                lines = (pending + data).split(b"\n")
                pending = lines.pop() if data else b""  # at the end of stdin, the last line is whole
                for raw in lines:
                    ref = raw.decode("utf-8", "replace").strip()
                    if not ref:
                        continue
                    try:
                        actor_id = _resolve_chain(h, ref)[0]
                    except TheaterError as exc:
                        _err(str(exc))
                        continue
                    emit(f.follow(actor_id))
                if not data:  # stdin closed: keep following the chains it named
                    fds.remove(sys.stdin.fileno())
                    if not f.next_seq:
                        _err("no actor ids on stdin")
                        raise _exit(1)
            if stop.fileno() in ready:
                stop.clear()


def _write(print_all: Callable[[], None]) -> None:
    """Print (and flush) through `print_all`; a closed stdout (`| head`) ends the command quietly."""
    try:
        print_all()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise _exit(0) from None


class _Interrupt:
    """SIGINT and SIGTERM as a flag and a readable socket, so a loop asleep in zmq_poll wakes and
    ends cleanly (exit 0, no traceback). Restores the previous handlers on exit."""

    def __enter__(self) -> "_Interrupt":
        import socket

        self.stopped = False
        self._r, self._w = socket.socketpair()
        for s in (self._r, self._w):
            s.setblocking(False)
        self._old_fd = signal.set_wakeup_fd(self._w.fileno())
        self._old = {sig: signal.signal(sig, self._on) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _on(self, signum: int, frame: Any) -> None:
        self.stopped = True

    def fileno(self) -> int:
        return self._r.fileno()

    def clear(self) -> None:
        try:
            self._r.recv(4096)
        except BlockingIOError:
            pass

    def __exit__(self, *exc: object) -> None:
        signal.set_wakeup_fd(self._old_fd)
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._r.close()
        self._w.close()


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNIT_NS = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}


def _parse_since(text: str | None) -> tuple[int, int | None]:
    """`--since` as (first seq, earliest timestamp in ns or None): a seq, a duration ago, or a time."""
    if text is None:
        return 0, None
    text = text.strip()
    if text.isdigit():
        return int(text), None
    if m := _DURATION.match(text):
        return 0, time.time_ns() - int(float(m.group(1)) * _UNIT_NS[m.group(2)])
    import datetime

    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {text!r}: give a seq (120), a duration (90s, 5m, 2h, 1d) "
                         f"or a time (2026-11-26T14:05)") from None
    return 0, int(moment.timestamp() * 1e9)  # a naive time is local time, as `events` prints it


def _print_event(e, json_out: bool) -> None:
    _print_event_labelled(e, json_out, None)


def _print_event_labelled(e: Any, json_out: bool, label: str | None) -> None:
    if json_out:
        print(json.dumps(e.to_plain(), default=str))
        return
    summary = json.dumps(e.to_plain()["data"], default=str, separators=(",", ":"))
    if len(summary) > 110:
        summary = summary[:107] + "..."
    prefix = f"{label}  " if label is not None else ""
    print(f"{prefix}{e.seq:>6}  {_stamp(e.timestamp)}  #{e.incarnation:<3} {e.event_type:<28} {summary}")


def _stamp(ns: int) -> str:
    """A chain timestamp as local HH:MM:SS.mmm."""
    return time.strftime("%H:%M:%S", time.localtime(ns / 1e9)) + f".{ns // 1_000_000 % 1000:03d}"


@_verb()
def verify(
    actor: Annotated[Optional[str], _Arg(help="Actor (or supervisor) to verify; default: all.")] = None,
    all_: Annotated[bool, _Opt("--all", help="Verify every chain in the store (the default).")] = False,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Check chains: seq from 0 without gaps, parent links, and each event's SHA-256. Exit 1 on the first bad event."""
    import sqlite3

    from .chain.store import connect, count_events
    from .chain.verify import verify_store

    h = Home.at(home)
    if not h.chain_db.exists():
        _err(f"no event store at {h.chain_db}")
        raise _exit(1)
    try:
        actor_id, label = _resolve_chain(h, actor) if actor and not all_ else (None, "all chains")
    except TheaterError as exc:
        raise _fail(exc) from None
    _sync_chain(h)
    conn = connect(h.chain_db, readonly=True)
    try:
        problems = verify_store(conn, actor_id)
        try:
            cut = conn.execute("SELECT actor_id, MIN(from_seq), SUM(events), MAX(why) FROM cut_records" +
                               (" WHERE actor_id = ?" if actor_id else "") + " GROUP BY actor_id",
                               (actor_id,) if actor_id else ()).fetchall()
        except sqlite3.OperationalError:  # a store from before cut_records existed
            cut = []
        counted = count_events(conn, actor_id)
    finally:
        conn.close()
    for a, seq, n, why in cut:
        print(f"note: {n} event(s) of chain {a} from seq {seq} were cut at a writer start ({why}); "
              f"they are kept in the cut_records table", file=sys.stderr)
    if json_out:
        _print_json({"ok": not problems, "events": counted[0], "chains": counted[1],
                     "cut": [{"actor_id": a, "from_seq": seq, "events": n, "why": why} for a, seq, n, why in cut],
                     "problems": [{"actor_id": p.actor_id, "seq": p.seq, "what": p.what,
                                   "expected": p.expected, "found": p.found} for p in problems]})
    elif problems:
        for p in problems:
            print(f"FAIL {p}")
    else:
        print(f"ok: {label}: {counted[0]} events in {counted[1]} chain(s) verify")
    if problems:
        raise _exit(1)


@_verb()
def inspect(actor: TargetArg, home: HomeOpt = None, json_out: JsonOpt = False,
            last: Annotated[int, _Opt("--last", help="How many recent events to show.")] = 5) -> None:
    """An actor in detail: manifest, status, restarts, chain head, last events."""
    from .chain.store import connect, read_events

    h, actor_id, path = _chain_for(home, actor)
    live: dict[str, Any] = {}
    try:
        with _client(h) as c:
            live = _find_path(c.call("tree"), path) or {}
    except NodeNotRunning:
        pass
    conn = connect(h.chain_db, readonly=True)
    try:
        head = conn.execute("SELECT head_seq, head_hash, incarnation, name FROM actors WHERE actor_id = ?",
                            (actor_id,)).fetchone() or (-1, None, 0, None)
        recent = read_events(conn, actor_id, limit=last, last=True)
        starts = read_events(conn, actor_id, event_type="actor.start", limit=1, last=True)
    finally:
        conn.close()
    payload = starts[0].payload() if starts else None
    start = payload if isinstance(payload, dict) else {}  # actor.start's data is a map
    limits = live.get("limits") or start.get("limits")
    head_hash = head[1].hex() if head[1] else None
    info: dict[str, object] = {"path": path, "actor_id": actor_id, "name": head[3] or start.get("name"),
            "manifest": live.get("manifest"), "version": live.get("version"),
            "status": live.get("status", "not running (node down)" if not live else None),
            "pid": live.get("pid"), "restarts": live.get("restarts"), "incarnation": head[2],
            "uptime": live.get("uptime"), "component": start.get("component"),
            "component_path": start.get("component_path"), "granted": start.get("granted"),
            "limits": limits, "mailbox": live.get("mailbox"),
            "refused": live.get("refused"),
            "chain_head": {"seq": head[0], "hash": head_hash},
            "last_events": [e.to_plain() for e in recent]}
    if json_out:
        _print_json(info)
        return
    for key in ("path", "actor_id", "name", "manifest", "version", "status", "pid", "restarts", "incarnation", "uptime",
                "component", "component_path", "granted", "mailbox", "refused"):
        if info[key] is not None:
            print(f"{key:<15} {info[key]}")
    if limits:
        print(f"{'limits':<15} " + "  ".join(f"{k} = {v}" for k, v in limits.items()))
    print(f"{'chain head':<15} seq {head[0]}  {head_hash or '-'}")
    print("last events:")
    for e in recent:
        _print_event(e, False)


def _walk(node: dict):
    yield node
    for child in node.get("children", []):
        yield from _walk(child)


@_verb()
def replay(
    actor: Annotated[str, _Arg(help="Actor path, id or name.")],
    home: HomeOpt = None,
    json_out: JsonOpt = False,
    until: Annotated[Optional[int], _Opt("--until", help="Stop after this seq.")] = None,
    incarnation: Annotated[Optional[int], _Opt("--incarnation", help="Replay only this incarnation.")] = None,
    component: Annotated[Optional[Path], _Opt("--component", help="Replay with this component instead.")] = None,
) -> None:
    """Re-run an actor's component against its recorded chain and compare every event."""
    from .chain.store import connect, read_events
    from .worker.replay import replay as run_replay

    h, actor_id, label = _chain_for(home, actor)
    conn = connect(h.chain_db, readonly=True)
    try:
        events_ = read_events(conn, actor_id)
    finally:
        conn.close()
    if not events_:
        _err(f"no events recorded for {label}")
        raise _exit(1)
    try:
        result = run_replay(events_, until=until, incarnation=incarnation, component=component, home=h)
    except (FileNotFoundError, ValueError, TheaterError) as exc:
        _err(str(exc))
        raise _exit(1) from None
    if json_out:
        d = result.divergence
        _print_json({"actor_id": actor_id, "path": label, "replayed": result.replayed,
                     "incarnations": result.incarnations, "match": d is None,
                     "divergence": None if d is None else {"seq": d.event.seq, "event_type": d.event.event_type,
                                                           "incarnation": d.event.incarnation, "why": d.why}})
    else:
        print(f"{label}: {result.summary()}")
    if result.divergence is not None:
        raise _exit(1)


def _chain_for(home: Path | None, ref: str) -> tuple[Home, str, str]:
    """(home, chain id, label) for a CLI argument, or a one-line error and exit 1."""
    h = Home.at(home)
    try:
        actor_id, label = _resolve_chain(h, ref)
    except TheaterError as exc:
        raise _fail(exc) from None
    _sync_chain(h)
    return h, actor_id, label


def _sync_chain(home: Home) -> None:
    """If a node runs, wait until the events it emitted so far are durable, so what `tree` just
    showed (a restart, an exit) is in the store we are about to read. Best effort: a node that
    is down or busy only means reading what is already there."""
    try:
        with _client(home) as c:
            c.call("sync", timeout_s=5)
    except TheaterError:
        pass


def _resolve_chain(home: Home, ref: str) -> tuple[str, str]:
    """The chain id for `ref`: ask a running node first, then the store (node down)."""
    from .chain.store import connect, find_actor
    from .errors import TheaterError as _TE

    if ref.startswith("supervisor:"):
        return ref, ref
    if not home.chain_db.exists():
        raise _TE(f"no event store at {home.chain_db} (has a tree run with this --home?)")
    try:
        with _client(home) as c:
            live_path, live_id = _live_target(c, c.call("tree"), ref)
            return (f"supervisor:{live_path}", live_path) if live_id is None else (live_id, live_path)
    except NodeNotRunning:
        pass
    except RemoteError as exc:
        if exc.code != "not_found":
            raise
    conn = connect(home.chain_db, readonly=True)
    try:
        rows = find_actor(conn, ref) or find_actor(conn, f"supervisor:{ref}")
        if not rows:
            rows = [(a, p, n) for a, p, n in conn.execute(
                "SELECT actor_id, path, name FROM actors WHERE actor_id = ?", (f"supervisor:{ref}",))]
        if not rows:
            raise _TE(f"no actor or supervisor named {ref!r} in {home.chain_db}")
        actor_id, path, _name = rows[0]  # the best match, newest first
        return actor_id, path or actor_id
    finally:
        conn.close()


def _live_target(c: ControlClient, snapshot: dict, ref: str) -> tuple[str, str | None]:
    """(path, actor id; None for a supervisor) of what `ref` names in the running tree `snapshot`:
    a supervisor by its path or its own id (the first in tree order), else the actor the node's
    `resolve` finds (actor id, path, unique path suffix or unique name). How every verb resolves
    a target against a running node; RemoteError `not_found` when nothing matches."""
    for sup in _supervisor_paths(snapshot):
        if ref in (sup, sup.rsplit("/", 1)[-1]):
            return sup, None
    found = c.call("resolve", {"target": ref})
    return found["path"], found["actor_id"]


def _find_path(snapshot: dict, path: str) -> dict | None:
    """The node at `path` in a `tree` snapshot, or None."""
    return next((node for node in _walk(snapshot) if node["path"] == path), None)


def _supervisor_paths(node: dict):
    if node["kind"] == "supervisor":
        yield node["path"]
        for child in node["children"]:
            yield from _supervisor_paths(child)


def main() -> None:
    """The console script. `tree` with plain arguments runs without typer: typer's import is most of
    the verb's time. Every other command line, `tree --help` and bad arguments included, goes
    through the typer app."""
    args = _tree_argv(sys.argv[1:])
    if args is not None:
        sys.exit(_show_tree(**args))
    from .chain.event import MalformedRecord

    if "--dashboard" in sys.argv[2:] and sys.argv[1] in ("up", "server"):
        sys.argv[1:] = _dashboard_argv(sys.argv[1:])
    try:
        _typer_app()()
    except TheaterError as exc:  # a domain error escaped a command: still one line
        _err(str(exc))
        sys.exit(exc.exit_code)
    except MalformedRecord as exc:  # a damaged chunk in the store: say so, point at verify
        _err(f"the event store holds a damaged record ({exc}); `theater-otp verify` says where")
        sys.exit(1)


if __name__ == "__main__":
    main()
