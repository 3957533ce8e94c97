"""Python actors and the handlers they can be granted: the world `build` generates from the grant, the
SDK's helpers for store, filesystem, environment, random and the runtime, on real trees.

* The generated world imports exactly what the manifest grants (checked on the world text, on the
  bindings componentize-py generates from it, and on built components' imports).
* actors/python/allcaps.py (manifests/allcaps/) uses every handler on request; its answers, its chain,
  a kill -9 (the store and its files survive) and `theater-otp replay` (every recorded state hash
  reproduced).
* The `storage` template: create -> build -> up -> request.

Builds: one componentize-py build and one wasmtime compile per component (allcaps, the storage
template), kept between runs like tests/test_python_actors.py does, under
THEATER_OTP_TEST_BUILDS-handlers (default ~/.cache/theater-otp-test-builds-handlers/<source hash>/):
a second run skips both steps.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest

from harness import REPO, Tree, cli
from pybuilds import kept_build
from theater_otp.pyactor.build import (
    GENERATED_WORLD,
    componentize_executable,
    granted_interfaces,
    input_stamp,
    read_spec,
    write_build_wit,
)
from theater_otp.pyactor.checks import validate
from theater_otp.pyactor.scaffold import create_project
from theater_otp.pyactor.sdk import SDK_FILE
from theater_otp.worker.component import compile_component, new_engine
from theater_otp.worker.handlers import MANIFEST_TYPES, REGISTRY, TYPES_ONLY

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

BUILDS = Path(str(Path(os.environ.get("THEATER_OTP_TEST_BUILDS",
                                      Path.home() / ".cache" / "theater-otp-test-builds"))) + "-handlers")
KEEP_BUILDS = 4
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
ALWAYS = {"theater:simple/runtime", "theater:simple/message-server-host"}


# ---- building once, kept between runs ------------------------------------------------------------

def cached_build(scratch: Path, manifest_rel: str) -> Path:
    """Build the project copied at `scratch` (its manifest at `manifest_rel`) once per machine; return
    the kept manifest."""
    return kept_build(scratch, [manifest_rel], BUILDS, KEEP_BUILDS) / manifest_rel


@pytest.fixture(scope="module")
def allcaps(tmp_path_factory) -> Path:
    """manifests/allcaps built: the repository's layout mirrored (manifest, actors/python/allcaps.py,
    wit/) so the manifest's relative paths hold and no build output lands in the repository."""
    scratch = tmp_path_factory.mktemp("allcaps") / "src"
    (scratch / "manifests").mkdir(parents=True)
    shutil.copytree(REPO / "manifests" / "allcaps", scratch / "manifests" / "allcaps",
                    ignore=shutil.ignore_patterns("build"))
    (scratch / "actors" / "python").mkdir(parents=True)
    shutil.copyfile(REPO / "actors" / "python" / "allcaps.py", scratch / "actors" / "python" / "allcaps.py")
    shutil.copytree(REPO / "wit", scratch / "wit")
    return cached_build(scratch, "manifests/allcaps/manifest.toml")


@pytest.fixture(scope="module")
def notes(tmp_path_factory) -> Path:
    """A project made with `create notes --template storage`, built."""
    scratch = tmp_path_factory.mktemp("notes") / "notes"
    create_project("notes", "storage", scratch)
    return cached_build(scratch, "manifest.toml")


def simple_imports(wasm: Path) -> set[str]:
    """The theater:simple interfaces a built component imports (versions dropped), but `types`, which
    holds only types and needs no grant."""
    compiled = compile_component(wasm, new_engine())
    names = {i.split("@", 1)[0] for i in compiled.imports if i.startswith("theater:simple/")}
    assert "theater:simple/types" in names  # the interfaces above `use` it
    return names - TYPES_ONLY


def one_actor_tree(folder: Path, child: str, manifest: Path) -> Tree:
    return Tree(folder, f"""
        [supervisor]
        id = "root"
        strategy = "one_for_one"
        intensity = 10
        period = 10

        [[supervisor.children]]
        id = "{child}"
        manifest = "{manifest}"
    """)


# ---- the generated world (no build) --------------------------------------------------------------

def project(folder: Path, handlers: str = "", build_extra: str = "", wit: Path | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "app.py").write_text("X = 1\n")
    (folder / "manifest.toml").write_text(textwrap.dedent(f"""\
        name = "w"
        component = "build/actor.wasm"

        [build]
        wit = "{wit or REPO / 'wit'}"
        {build_extra}
    """) + textwrap.dedent(handlers))
    return folder / "manifest.toml"


def world_lines(text: str) -> tuple[list[str], list[str]]:
    imports = re.findall(r"^\s*import ([a-z-]+);", text, re.M)
    exports = re.findall(r"^\s*export ([a-z-]+);", text, re.M)
    return imports, exports


def test_generated_world_imports_exactly_the_grant(tmp_path):
    bare = read_spec(project(tmp_path / "bare"))
    assert bare.world == GENERATED_WORLD
    imports, exports = world_lines(bare.world_wit)
    assert sorted(imports) == ["message-server-host", "runtime"]            # no timing any more
    assert exports == ["actor", "message-server-client"] and list(bare.world_imports) == imports

    store = read_spec(project(tmp_path / "store", '[[handler]]\ntype = "store"\nstores = ["s"]\n'))
    assert set(store.world_imports) == {"runtime", "message-server-host", "store"}
    assert input_stamp(store, "x") != input_stamp(bare, "x")               # a changed grant rebuilds

    everything = "".join(f'[[handlers]]\ntype = "{t}"\n' for t in MANIFEST_TYPES)  # the other spelling
    full = read_spec(project(tmp_path / "full", everything))
    imports, exports = world_lines(full.world_wit)
    assert set(imports) == {i for t in {"runtime", "message-server", *MANIFEST_TYPES} for i in REGISTRY[t].interfaces}
    assert {"timing", "supervisor", "store", "filesystem", "environment", "random"} <= set(imports)
    # the supervisor handler's optional callbacks, and what the serving handlers need exported
    assert exports[:3] == ["actor", "message-server-client", "supervisor-handlers"]
    assert sorted(exports[3:]) == ["http-handlers", "http-server", "websocket-server"]
    for t in MANIFEST_TYPES:  # the registry is the only source of interface names
        assert set(REGISTRY[t].interfaces) <= set(granted_interfaces({"runtime", "message-server", t}))

    # the generated WIT is valid: componentize-py makes bindings for it, one module per import
    wit = write_build_wit(full)
    assert (wit / "theater-otp-granted.wit").read_text() == full.world_wit
    out = tmp_path / "bindings"
    proc = subprocess.run([componentize_executable(), "-d", str(wit), "-w", GENERATED_WORLD, "bindings", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    modules = {p.stem for p in (out / "wit_world" / "imports").glob("*.py")} - {"__init__", "types", "http_types",
                                                                              "websocket_types"}
    assert modules == {i.replace("-", "_") for i in imports}
    bare_wit = write_build_wit(bare)
    shutil.rmtree(out)
    subprocess.run([componentize_executable(), "-d", str(bare_wit), "-w", GENERATED_WORLD, "bindings", str(out)],
                   check=True, capture_output=True, timeout=120)
    assert {p.stem for p in (out / "wit_world" / "imports").glob("*.py")} == {"__init__", "types", "runtime",
                                                                               "message_server_host"}


def test_explicit_world_and_old_wit_folders(tmp_path):
    fixed = read_spec(project(tmp_path / "fixed", '[[handler]]\ntype = "timing"\n', 'world = "actor-world"'))
    assert fixed.world == "actor-world" and fixed.world_wit is None and fixed.extra_wit == ()
    assert write_build_wit(fixed) == fixed.wit                              # as before: the WIT folder itself
    # a project whose wit/ predates the store handler: theater-otp's store.wit joins the build's copy
    old = tmp_path / "oldwit"
    old.mkdir()
    for f in ("actor.wit", "message-server.wit", "runtime.wit", "types.wit", "timing.wit", "supervisor.wit"):
        shutil.copyfile(REPO / "wit" / f, old / f)
    spec = read_spec(project(tmp_path / "old", '[[handler]]\ntype = "store"\n', wit=old))
    assert [f.name for f in spec.extra_wit] == ["store.wit"]
    built = write_build_wit(spec)
    assert built == spec.build_wit and (built / "store.wit").is_file() and not (old / "store.wit").exists()
    without = read_spec(project(tmp_path / "old2", "", wit=old))
    assert without.extra_wit == () and input_stamp(without, "x") != input_stamp(spec, "x")


# ---- the SDK without a component (stub bindings) -------------------------------------------------

class _Err(Exception):
    def __init__(self, value):
        super().__init__(value)
        self.value = value


def load_sdk(monkeypatch, **imports: types.ModuleType):
    """theater_sdk.py imported against stub bindings holding only `imports` (+ runtime, messaging)."""
    def module(name: str, **fns) -> types.ModuleType:
        m = types.ModuleType(name)
        for k, v in fns.items():
            setattr(m, k, v)
        return m

    cpt = module("componentize_py_types", Err=_Err)
    wit_types = module("types", ChannelAccept=lambda accepted, message: (accepted, message))
    runtime = imports.pop("runtime", None) or module(
        "runtime", log=lambda msg: None, get_env=lambda name: None, get_current_time=lambda: 1234)
    msh = module("message_server_host", send=lambda target, msg: (_ for _ in ()).throw(_Err(f"no actor {target!r}")))
    pkg = module("wit_world", __path__=[])
    imp = module("wit_world.imports", __path__=[], runtime=runtime, message_server_host=msh)
    monkeypatch.setitem(sys.modules, "componentize_py_types", cpt)
    monkeypatch.setitem(sys.modules, "wit_world", pkg)
    monkeypatch.setitem(sys.modules, "wit_world.imports", imp)
    for name, mod in {"runtime": runtime, "message_server_host": msh, "types": wit_types, **imports}.items():
        setattr(imp, name, mod)
        monkeypatch.setitem(sys.modules, f"wit_world.imports.{name}", mod)
    spec = importlib.util.spec_from_file_location("theater_sdk_under_test", SDK_FILE)
    sdk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sdk)
    return sdk


def test_sdk_without_grants_imports_and_says_what_to_grant(monkeypatch):
    sdk = load_sdk(monkeypatch)
    assert sdk.CallError is sdk.HostError and issubclass(sdk.NotGranted, sdk.HostError)
    for call, handler in ((lambda: sdk.fs.read_text("a"), "filesystem"), (lambda: sdk.Store("s").get("ab"), "store"),
                          (lambda: sdk.Store.new(), "store"), (lambda: sdk.env.all(), "environment"),
                          (lambda: sdk.rand.uuid(), "random"), (lambda: sdk.sleep(5), "timing")):
        with pytest.raises(sdk.NotGranted) as err:
            call()
        assert f'`[[handler]] type = "{handler}"`' in str(err.value) and f"theater:simple/{handler}" in str(err.value)
    assert sdk.env.get("HOME", "unset") == "unset"       # runtime.get-env: nothing visible without the handler
    assert sdk.now_ms() == 1234                           # the runtime's clock when timing is not granted
    with pytest.raises(sdk.CallError, match="no actor 'ghost'") as err:  # messaging errors: the same class
        sdk.send("ghost", "hi")
    assert err.value.call == "message-server-host.send"
    with pytest.raises(sdk.NotGranted, match="actor-id"):  # a runtime.wit older than the function
        sdk.actor_id()


def test_sdk_wraps_the_bindings(monkeypatch):
    calls = []

    def refuse(path):
        raise _Err(f"{path!r}: refused: the path leaves the actor's directory")

    filesystem = types.ModuleType("filesystem")
    filesystem.read_file = refuse
    filesystem.append_file = lambda path, data: calls.append(("append", path, data))
    random = types.ModuleType("random")
    random.random_range = lambda low, high: calls.append(("range", low, high)) or high - 1
    store = types.ModuleType("store")

    class ContentRef:
        def __init__(self, hash):
            self.hash = hash

    store.ContentRef = ContentRef
    store.replace_content_at_label = lambda sid, label, data: calls.append((sid, label, data)) or ContentRef("f" * 64)
    store.get_by_label = lambda sid, label: None
    sdk = load_sdk(monkeypatch, filesystem=filesystem, random=random, store=store)
    with pytest.raises(sdk.HostError) as err:
        sdk.fs.read_text("../x")
    assert str(err.value) == "'../x': refused: the path leaves the actor's directory"
    assert err.value.call == "filesystem.read-file" and not isinstance(err.value, sdk.NotGranted)
    sdk.fs.append_text("log.txt", "é")
    assert sdk.rand.randrange(-5, 5) == 4 and sdk.rand.randrange(3) == 2
    assert sdk.Store("notes").set_json("k", {"b": 1, "a": [1]}) == "f" * 64
    assert sdk.Store("notes").get_json("missing", {"d": 1}) == {"d": 1}
    assert calls == [("append", "log.txt", "é".encode()), ("range", 0, 10), ("range", 0, 3),
                     ("notes", "k", b'{"a":[1],"b":1}')]
    with pytest.raises(ValueError):
        sdk.rand.randrange(5, 5)


# ---- allcaps: every handler from Python ----------------------------------------------------------

def test_allcaps_imports_exactly_its_grant(allcaps):
    wasm = read_spec(allcaps).output
    assert simple_imports(wasm) == ALWAYS | {f"theater:simple/{i}" for i in
                                             ("store", "filesystem", "environment", "random")}
    stamp = json.loads(read_spec(allcaps).stamp_file.read_text())
    assert stamp["world"] == GENERATED_WORLD
    report = validate(allcaps.parent / "supervision.toml")
    assert report.ok, [str(p) for p in report.problems]


@pytest.fixture(scope="module")
def allcaps_tree(tmp_path_factory, allcaps):
    before = os.environ.get("ALLCAPS_GREETING")
    os.environ["ALLCAPS_GREETING"] = "hello from the node"      # allowed_vars: read from the node's environment
    try:
        folder = tmp_path_factory.mktemp("allcaps-tree")
        (folder / "chan.toml").write_text(f'name = "chan"\ncomponent = "{REPO / "actors" / "wat" / "chan.wat"}"\n')
        t = Tree(folder, f"""
            [supervisor]
            id = "root"
            strategy = "one_for_one"
            intensity = 10
            period = 10

            [[supervisor.children]]
            id = "allcaps"
            manifest = "{allcaps}"

            [[supervisor.children]]
            id = "chan"
            manifest = "chan.toml"
        """)
        with t:
            t.wait_running(timeout=60)
            yield t
    finally:
        if before is None:
            os.environ.pop("ALLCAPS_GREETING", None)
        else:
            os.environ["ALLCAPS_GREETING"] = before


def ask(tree: Tree, op: str, **args) -> dict:
    out = cli("request", "allcaps", json.dumps({"op": op, **args}), home=tree.home, check=True)
    return json.loads(out.stdout)


def node(tree: Tree) -> dict:
    return tree.node("root/allcaps")


def test_allcaps_uses_every_handler(allcaps_tree):
    t = allcaps_tree
    actor = node(t)
    # runtime
    who = ask(t, "whoami")
    assert who["id"] == actor["actor_id"] and who["name"] == "allcaps" and who["version"]
    assert abs(who["now_ms"] / 1000 - time.time()) < 60
    info = ask(t, "system")
    assert info["cpu_count"] == os.cpu_count() and info["memory_total"] > 0 and info["os_type"]
    assert ask(t, "log", level="warn", msg="careful") == {"ok": True}
    assert ask(t, "metric", name="widgets", value=2.5) == {"ok": True}
    assert ask(t, "event", type="allcaps.custom", data={"n": 1}) == {"ok": True}
    # store
    put = ask(t, "put", label="greeting", text="hello")
    assert put["ref"] == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"  # sha256("hello")
    added = ask(t, "add", label="greeting", text="hello again")
    assert ask(t, "get", label="greeting") == {"text": "hello again", "ref": added["ref"]}
    assert ask(t, "get", label="nothing") == {"text": None, "ref": None}
    assert ask(t, "blob", ref=put["ref"]) == {"text": "hello", "has": True}
    listing = ask(t, "store")
    assert "greeting" in listing["labels"] and {put["ref"], added["ref"]} <= set(listing["refs"])
    assert listing["size"] >= len("hello") + len("hello again")
    private = ask(t, "private")
    assert UUID4.match(private["id"]) and private["text"] == "private bytes"
    # filesystem
    assert ask(t, "write", path="logs/a.txt", text="one\n") == {"size": 4}
    assert ask(t, "append", path="logs/a.txt", text="two\n") == {"size": 8}
    assert ask(t, "read", path="logs/a.txt") == {"text": "one\ntwo\n"}
    assert ask(t, "ls", path="logs") == {"names": ["a.txt"],
                                         "entries": [{"name": "a.txt", "is_file": True, "is_dir": False}]}
    st = ask(t, "stat", path="logs/a.txt")
    assert st["size"] == 8 and st["is_file"] and st["path"] == "logs/a.txt"
    assert ask(t, "mkdir", path="tmp/x") == {"exists": True, "is_dir": True, "is_file": False}
    assert ask(t, "rmtree", path="tmp") == {"exists": False, "is_dir": False, "is_file": False}
    on_disk = list((t.home / "fs").rglob("a.txt"))            # new_dir: a folder under the node's home
    assert len(on_disk) == 1 and on_disk[0].read_text() == "one\ntwo\n"
    # environment
    env = ask(t, "env", name="ALLCAPS_GREETING")
    assert env == {"value": "hello from the node", "default": "hello from the node", "has": True,
                   "all": {"ALLCAPS_GREETING": "hello from the node", "COLOUR": "blue", "MODE": "test"}}
    assert ask(t, "env", name="HOME")["value"] is None and ask(t, "env", name="HOME")["default"] == "unset"
    # random (seeded in the manifest)
    r = ask(t, "rand", n=16)
    assert len(bytes.fromhex(r["bytes"])) == 16 and -5 <= r["range"] < 5 and 1 <= r["int"] <= 6
    assert 0 <= r["float"] < 1 and UUID4.match(r["uuid"]) and r["choice"] in "abc"
    # refused calls: the SDK's exceptions with the host's messages
    errors = ask(t, "errors")
    assert errors["fs_escape"][:1] == ["HostError"] and "leaves the actor's directory" in errors["fs_escape"][1]
    assert errors["fs_escape"][2] == "filesystem.read-file"
    assert errors["fs_missing"][0] == "HostError" and "no/such/file.txt" in errors["fs_missing"][1]
    assert "not reachable" in errors["store_unreachable"][1] and errors["store_unreachable"][2] == "store.store"
    assert errors["store_missing_blob"][2] == "store.get"
    assert "unknown log level 'loud'" in errors["log_level"][1]
    assert "nan" in errors["metric_nan"][1]
    assert errors["timing"][0] == "NotGranted" and '`[[handler]] type = "timing"`' in errors["timing"][1]
    summary = ask(t, "summary")
    assert summary["calls"]["put"] == 1 and summary["errors"] == 7 and summary["uuids"] == [r["uuid"]]
    assert summary["refs"]["greeting"] == added["ref"]
    # the chain holds each handler's calls
    types_ = {e.event_type for e in t.events(actor["actor_id"])}
    for wanted in ("host.store.replace-content-at-label", "host.store.store-at-label", "host.store.get",
                   "host.store.new", "host.filesystem.write-file", "host.filesystem.append-file",
                   "host.filesystem.read-file", "host.filesystem.list-dir", "host.filesystem.remove-dir",
                   "host.environment.get-var", "host.environment.list-vars", "host.random.random-bytes",
                   "host.random.generate-uuid", "host.runtime.get-actor-id", "host.runtime.record-metric",
                   "host.runtime.record-event", "host.runtime.log-at", "host.runtime.get-system-info"):
        assert wanted in types_, wanted
    assert not any(ty.startswith("host.timing.") for ty in types_)


def test_allcaps_store_and_files_survive_kill_and_replay_matches(allcaps_tree):
    t = allcaps_tree
    ref = ask(t, "put", label="durable", text="written before the kill")["ref"]
    ask(t, "write", path="durable.txt", text="on disk")
    # channels: to a WAT actor that accepts (and refuses "no"), so the replay covers them too
    opened = ask(t, "channel", to="chan", msg="ping")
    assert opened["channel"].startswith("ch-") and opened["refused"] == "root/chan refused the channel: not today"
    chan_log = bytes(t.call("request", {"target": "chan", "payload": b"g", "timeout_ms": 5000})["ok"]).decode()
    assert f"msg {opened['channel']} ping" in chan_log and f"close {opened['channel']}" in chan_log
    before = node(t)
    t.kill("root/allcaps")
    after = t.wait_for(lambda: (n := node(t))["pid"] not in (None, before["pid"]) and n["status"] == "running" and n,
                       timeout=30, what="allcaps restarted")
    assert after["restarts"] == before["restarts"] + 1 and after["actor_id"] == before["actor_id"]
    assert ask(t, "summary")["calls"] == {}                        # the state began again from initial_state ...
    assert ask(t, "get", label="durable") == {"text": "written before the kill", "ref": ref}   # ... the store did not
    assert ask(t, "read", path="durable.txt") == {"text": "on disk"}                            # nor its files
    assert "durable" in ask(t, "store")["labels"]
    actor_id = after["actor_id"]
    t.close()
    recorded = [e.payload() for e in t.events(actor_id, "message.request")]
    assert len(recorded) >= 5 and all(p.get("state_sha256") for p in recorded)
    out = cli("replay", "allcaps", "--json", home=t.home, timeout=300)
    result = json.loads(out.stdout)
    assert out.returncode == 0 and result["match"] is True, out.stdout
    assert result["incarnations"] == [1, 2] and result["divergence"] is None


# ---- the storage template ------------------------------------------------------------------------

def test_storage_template_builds_and_runs(notes, tmp_path):
    manifest_text = notes.read_text()
    assert 'type = "store"' in manifest_text and 'new_dir = true' in manifest_text
    assert re.search(r"^world\s*=", manifest_text, re.M) is None      # the world is generated
    assert simple_imports(read_spec(notes).output) == ALWAYS | {"theater:simple/store", "theater:simple/filesystem"}
    assert validate(notes.parent / "supervision.toml").ok
    t = one_actor_tree(tmp_path, "notes", notes)
    with t:
        t.wait_running(timeout=60)

        def req(text: str) -> str:
            return cli("request", "notes", text, home=t.home, check=True).stdout.rstrip("\n")

        assert req("add buy milk") == "1" and req("add call Ada") == "2"
        assert [n["text"] for n in json.loads(req("list"))] == ["buy milk", "call Ada"]
        assert req("get 2") == "call Ada"
        today = req("today").splitlines()
        assert len(today) == 2 and today[0].endswith(" buy milk") and today[1].endswith(" call Ada")
        files = json.loads(req("files"))
        assert len(files) == 1 and re.match(r"^\d{4}-\d{2}-\d{2}\.md$", files[0])
        stats = json.loads(req("stats"))
        assert stats["notes"] == 2 and stats["added"] == 2 and stats["labels"] == ["notes"]
        cli("send", "notes", "boom", home=t.home, check=True)       # a crash: restarted from initial_state
        t.wait_for(lambda: t.node("root/notes")["restarts"] == 1 and t.node("root/notes")["status"] == "running",
                   timeout=30, what="the restart")
        assert [n["text"] for n in json.loads(req("list"))] == ["buy milk", "call Ada"]
        assert json.loads(req("stats"))["added"] == 0
