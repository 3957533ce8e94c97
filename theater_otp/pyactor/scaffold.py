"""`theater-otp create`: lay out a Python actor project from a template.

A project is a folder with app.py (one class per exported WIT interface),
theater_sdk.py (the helpers, bundled into the component), manifest.toml,
supervision.toml (a one-actor tree to try it), the theater:simple WIT in wit/,
README.md and .gitignore. `theater-otp build` turns it into build/actor.wasm.
"""

from __future__ import annotations

import re
import shutil
import string
from dataclasses import dataclass
from pathlib import Path

from ..errors import TheaterError
from .sdk import SDK_FILE

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
PACKAGE = "theater:simple"
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


class ScaffoldError(TheaterError):
    """`create` cannot lay out the project (bad name, folder in the way, no WIT to copy)."""


@dataclass(frozen=True)
class Template:
    world: str             # the fixed world that would fit (a comment in the manifest; build generates one)
    implements: tuple[str, ...]
    initial_state: str
    handlers: str          # TOML text of the [[handler]] tables (`${name}` is replaced)
    description: str
    try_lines: str         # shell lines for the README
    extra_classes: str = ""
    grant_note: str = ""   # README: what the handlers are for


_WORLD_NOTE = ("# No `world` here: build generates one that imports exactly the handlers granted below.\n"
               "# A fixed world imports all of its interfaces (grant every one), e.g.:\n")

TEMPLATES: dict[str, Template] = {
    "basic": Template(
        world="actor-world",
        implements=("actor", "message-server-client"),
        initial_state='{"count": 0}',
        handlers='# timing: sdk.now_ms() in "roll" reads its clock.\n'
                 '[[handler]]\ntype = "timing"\n',
        description="Counts the messages it gets; `get` replies the count.",
        try_lines='theater-otp send ${name} hi\ntheater-otp request ${name} get\ntheater-otp state ${name}\n'
                  'theater-otp send ${name} boom        # a Python exception: crash, traceback, restart\n'
                  'theater-otp tree',
        grant_note="`timing` (its clock in `roll`)",
    ),
    "message-server": Template(
        world="actor-world",
        implements=("actor", "message-server-client"),
        initial_state='{"data": {}}',
        handlers='# Messaging (message-server) and runtime are every actor\'s: no [[handler]] needed.\n',
        description="A key-value store that talks to other actors: set/get/wait/ask/tell.",
        try_lines='theater-otp request ${name} "set colour blue"\ntheater-otp request ${name} "get colour"\n'
                  'theater-otp request ${name} "wait size" &    # answered when size is set\n'
                  'theater-otp request ${name} "set size 9"\ntheater-otp request ${name} "ask ${name} get colour"',
        grant_note="nothing beyond runtime and messaging, which every actor has",
    ),
    "supervisor": Template(
        world="supervisor-actor",
        implements=("actor", "message-server-client", "supervisor-handlers"),
        initial_state='{"spawn": []}',
        handlers='# The runtime restarts crashed children one_for_one; this actor is told through supervisor-handlers\n'
                 '# (the generated world exports it because the supervisor handler is granted).\n'
                 '[[handler]]\ntype = "supervisor"\nstrategy = "one_for_one"\nintensity = 5\nperiod = 10\n',
        description="Spawns and watches child actors through theater:simple/supervisor.",
        try_lines='theater-otp request ${name} "spawn ../worker/manifest.toml"   # any built actor manifest\n'
                  'theater-otp request ${name} children\ntheater-otp tree\ntheater-otp request ${name} events',
        extra_classes=", `SupervisorHandlers`",
        grant_note="`supervisor` (spawning and watching children)",
    ),
    "storage": Template(
        world="actor-world",
        implements=("actor", "message-server-client"),
        initial_state='{"added": 0}',
        handlers='# store: the notes, under the label "notes" of the named store "${name}" (kept in the\n'
                 '# node\'s home: they survive restarts).\n'
                 '[[handler]]\ntype = "store"\nstores = ["${name}"]\n\n'
                 '# filesystem: a daily file notes/YYYY-MM-DD.md in a folder of its own under the node\'s home.\n'
                 '[[handler]]\ntype = "filesystem"\nnew_dir = true\n',
        description="Keeps notes in a store label and appends each to a daily file.",
        try_lines='theater-otp request ${name} "add buy milk"\ntheater-otp request ${name} "add call Ada"\n'
                  'theater-otp request ${name} list\ntheater-otp request ${name} today\n'
                  'theater-otp request ${name} stats\n'
                  'theater-otp send ${name} boom            # a crash: restarted from initial_state\n'
                  'theater-otp request ${name} list         # the notes survived the restart',
        grant_note="`store` (the notes) and `filesystem` (the daily files)",
    ),
    "http": Template(
        world="",           # no fixed world exports http-server: the generated one does
        implements=("actor", "message-server-client", "http-server"),
        initial_state='{"requests": 0}',
        handlers='# http-server: the node\'s HTTP gateway listens on host:port and hands every request to\n'
                 '# HttpServer.handle_request (the generated world exports theater:simple/http-server).\n'
                 '# port: the port to serve (required, 1-65535); `up` refuses a port another process holds.\n'
                 '# Also: max_body_bytes (413 beyond), timeout_ms, hold_ms (see docs/http.md).\n'
                 '[[handler]]\ntype = "http-server"\nport = 8080\nhost = "127.0.0.1"\n\n'
                 '# store: the items, one label each in the named store "${name}" (kept in the node\'s home:\n'
                 '# they survive restarts).\n'
                 '[[handler]]\ntype = "store"\nstores = ["${name}"]\n',
        description="A small JSON API over HTTP: GET /, GET /items, GET/PUT/DELETE /items/{id}.",
        try_lines='curl -s http://127.0.0.1:8080/\n'
                  'curl -s -X PUT --data \'{"title": "buy milk"}\' http://127.0.0.1:8080/items/1   # 201\n'
                  'curl -s http://127.0.0.1:8080/items/1\n'
                  'curl -s http://127.0.0.1:8080/items\n'
                  'curl -si -X POST http://127.0.0.1:8080/items/1     # 405, with Allow\n'
                  'curl -s -X DELETE http://127.0.0.1:8080/items/1\n'
                  'curl -s http://127.0.0.1:8080/boom                 # a crash: 500, restarted; items stay\n'
                  'theater-otp events ${name} --type http.request --limit 5',
        extra_classes=", `HttpServer`",
        grant_note="`http-server` (port 8080) and `store` (the items)",
    ),
}


def repo_wit_dir() -> Path:
    """The project's theater:simple WIT (the `wit/` folder beside the theater_otp package)."""
    wit = Path(__file__).resolve().parents[2] / "wit"
    if not (wit / "worlds.wit").is_file():
        raise ScaffoldError(f"cannot find the theater:simple WIT at {wit}: theater-otp must be installed from "
                            f"its source tree (pip install -e .)")
    return wit


def _world_note(tpl: Template) -> str:
    if not tpl.world:
        return "# No `world` here: build generates one from the handlers granted below.\n"
    return f'{_WORLD_NOTE}# world = "{tpl.world}"\n'


def manifest_text(name: str, tpl: Template) -> str:
    implements = ", ".join(f'"{PACKAGE}/{i}"' for i in tpl.implements)
    return (
        f'# Actor manifest: read by `theater-otp up` (through supervision.toml), `build` and `validate`.\n'
        f'name = "{name}"\n'
        f'version = "0.1.0"\n'
        f'description = "{tpl.description}"\n'
        f'component = "build/actor.wasm"     # written by `theater-otp build`\n'
        f"initial_state = '{tpl.initial_state}'\n"
        f'\n'
        f'[interface]                          # checked by `theater-otp validate`\n'
        f'implements = [{implements}]\n'
        f'\n'
        f'[build]                              # read by `theater-otp build`; the runtime ignores it\n'
        f'module = "app"                       # app.py: the classes named after the exported interfaces\n'
        f'wit = "wit"\n'
        f'{_world_note(tpl)}'
        f'\n'
        f'{string.Template(tpl.handlers).safe_substitute(name=name)}'
    )


def supervision_text(name: str) -> str:
    return (
        f'# A one-actor tree to try {name}: `theater-otp up supervision.toml`.\n'
        f'[supervisor]\n'
        f'id = "root"\n'
        f'strategy = "one_for_one"\n'
        f'intensity = 5\n'
        f'period = 10\n'
        f'\n'
        f'[[supervisor.children]]\n'
        f'id = "{name}"\n'
        f'manifest = "manifest.toml"\n'
    )


def create_project(name: str, template: str = "basic", target: Path | None = None) -> Path:
    """Write a new project for actor `name` into `target` (default ./NAME); return its folder."""
    if not _NAME_RE.match(name):
        raise ScaffoldError(f"{name!r} is not a valid actor name: use letters, digits, '_', '-' or '.', "
                            f"starting with a letter")
    tpl = TEMPLATES.get(template)
    if tpl is None:
        raise ScaffoldError(f"unknown template {template!r}: expected {', '.join(TEMPLATES)}")
    folder = (target if target is not None else Path(name)).expanduser()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ScaffoldError(f"{folder}: already exists and is not an empty folder; choose another --dir")
    wit = repo_wit_dir()
    values = {"name": name, "template": template, "world": tpl.world, "extra_classes": tpl.extra_classes,
              "grant_note": tpl.grant_note,
              "try_lines": string.Template(tpl.try_lines).safe_substitute(name=name)}
    app = string.Template((TEMPLATE_DIR / template / "app.py.tmpl").read_text()).safe_substitute(values)
    readme = string.Template((TEMPLATE_DIR / "README.md.tmpl").read_text()).safe_substitute(values)

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "app.py").write_text(app)
    shutil.copyfile(SDK_FILE, folder / "theater_sdk.py")
    (folder / "manifest.toml").write_text(manifest_text(name, tpl))
    (folder / "supervision.toml").write_text(supervision_text(name))
    (folder / "README.md").write_text(readme)
    (folder / ".gitignore").write_text("build/\n__pycache__/\n")
    (folder / "wit").mkdir(exist_ok=True)
    for f in sorted(wit.glob("*.wit")):
        shutil.copyfile(f, folder / "wit" / f.name)
    return folder
