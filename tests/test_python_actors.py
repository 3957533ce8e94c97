"""Python actors end to end: `create` a project, `build` it with componentize-py, boot it under a
supervisor, talk to it, crash it (the Python traceback is the recorded reason), watch it restart;
`build` errors show the traceback; a second build is instant; `validate` lists every problem.

Build cache: a componentize-py build takes 15-40 s and compiling its ~19 MB component another
15-30 s, so the built project is kept between runs in a stable folder keyed by the hash of its
sources: THEATER_OTP_TEST_BUILDS, default ~/.cache/theater-otp-test-builds/<hash>/ (the project,
its build/actor.wasm and a copy of the compiled artifact). conftest.py points THEATER_OTP_CACHE at a
fresh folder per run, so the artifact is copied into it before `build` runs: a second run (or CI's
second run on the same machine) skips both componentize-py and wasmtime. Delete the folder to force
a cold build. Changing the template or the SDK changes the hash, so stale builds are never used; the
three newest builds are kept, older ones deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from harness import REPO, Tree, cli, walk
from theater_otp.cli_dev import build, create, validate
from theater_otp.pyactor.build import extract_error, input_stamp, read_spec
from theater_otp.pyactor.scaffold import create_project
from theater_otp.worker.component import artifact_path

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]  # the first, cold build alone can take a minute or two

BUILDS = Path(os.environ.get("THEATER_OTP_TEST_BUILDS", Path.home() / ".cache" / "theater-otp-test-builds"))
NAME = "pyecho"

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command()(create)
app.command()(build)
app.command()(validate)
runner = CliRunner()

#: The same three commands for a subprocess (the error build runs in the background).
DEV_CLI = textwrap.dedent("""
    import typer
    from theater_otp.cli_dev import build, create, validate
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(create)
    app.command()(build)
    app.command()(validate)
    app()
""")


def invoke(*args: str):
    return runner.invoke(app, list(args))


# ---- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def error_build(tmp_path_factory):
    """A project whose app.py imports a missing module, built in the background while the other tests
    run (componentize-py needs ~25 s to get to the app's code, failing or not)."""
    folder = tmp_path_factory.mktemp("broken") / "broken"
    create_project("broken", "basic", folder)
    app_py = folder / "app.py"
    app_py.write_text(app_py.read_text().replace("import theater_sdk as sdk\n",
                                                 "import theater_sdk as sdk\nimport not_a_module_xyz\n", 1))
    script = folder.parent / "dev_cli.py"
    script.write_text(DEV_CLI)
    proc = subprocess.Popen([sys.executable, str(script), "build", str(folder)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=folder.parent)
    yield folder, proc
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def project(tmp_path_factory, error_build) -> Path:
    """The `basic` template built with `build`, reused across runs from the stable build folder."""
    scratch = tmp_path_factory.mktemp("scaffold") / NAME
    create_project(NAME, "basic", scratch)
    key = input_stamp(read_spec(scratch))[:24]
    keep = BUILDS / key
    folder = keep / NAME
    if not (folder / "manifest.toml").is_file():
        keep.mkdir(parents=True, exist_ok=True)
        tmp = keep / f".{NAME}-{uuid.uuid4().hex[:8]}"
        shutil.copytree(scratch, tmp)
        os.replace(tmp, folder)
    kept_artifact = keep / "artifact.cwasm"
    stamp_file = folder / "build" / "actor.wasm.stamp"
    if stamp_file.is_file() and kept_artifact.is_file():
        wanted = artifact_path(json.loads(stamp_file.read_text())["wasm_sha256"])
        if not wanted.is_file():  # seed this run's component cache: no wasmtime compile
            wanted.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(kept_artifact, wanted)
    result = invoke("build", str(folder), "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["ok"] and Path(out["wasm"]).is_file() and Path(out["artifact"]).is_file()
    if not kept_artifact.is_file():
        shutil.copyfile(out["artifact"], kept_artifact)
    # keep the three newest builds (another branch's template may come back), drop older ones (~55 MB each)
    others = sorted((d for d in BUILDS.iterdir() if d.is_dir() and d != keep and not d.name.startswith(".")),
                    key=lambda d: d.stat().st_mtime, reverse=True)
    for stale in others[2:]:
        shutil.rmtree(stale, ignore_errors=True)
    return folder


@pytest.fixture()
def tree(tmp_path, project):
    t = Tree(tmp_path, f"""
        [supervisor]
        id = "root"
        strategy = "one_for_one"
        intensity = 10
        period = 10

        [[supervisor.children]]
        id = "{NAME}"
        manifest = "{project / 'manifest.toml'}"
    """)
    with t:
        t.wait_running(timeout=30)
        yield t


def actor_node(t: Tree) -> dict:
    return next(n for n in walk(t.tree()) if n.get("path") == f"root/{NAME}")


# ---- create --------------------------------------------------------------------------------------

@pytest.mark.parametrize("template,world,classes", [
    ("basic", "actor-world", ["Actor", "MessageServerClient"]),
    ("message-server", "actor-world", ["Actor", "MessageServerClient"]),
    ("supervisor", "supervisor-actor", ["Actor", "MessageServerClient", "SupervisorHandlers"]),
])
def test_create_lays_out_a_project(tmp_path, template, world, classes):
    folder = tmp_path / "thing"
    result = invoke("create", "thing", "--template", template, "--dir", str(folder), "--json")
    assert result.exit_code == 0, result.stderr
    files = set(json.loads(result.stdout)["files"])
    assert {"app.py", "theater_sdk.py", "manifest.toml", "supervision.toml", "README.md",
            "wit/worlds.wit", "wit/actor.wit", "wit/message-server.wit"} <= files
    app_py = (folder / "app.py").read_text()
    for cls in classes:  # one class per exported interface, subclassing the WIT class itself
        mixins = "sdk.Guard, sdk.NoChannels" if cls == "MessageServerClient" else "sdk.Guard"
        assert f"class {cls}({mixins}, exports.{cls}):" in app_py
    compile(app_py, "app.py", "exec")  # valid Python
    manifest = (folder / "manifest.toml").read_text()
    assert 'component = "build/actor.wasm"' in manifest
    # no world is named: build makes one from the grant (the fixed world is shown as a comment)
    assert f'# world = "{world}"' in manifest
    assert not any(line.strip().startswith("world =") for line in manifest.splitlines())
    assert (folder / "wit" / "worlds.wit").read_text() == (REPO / "wit" / "worlds.wit").read_text()
    # not built yet: validate says so, and how to fix it
    result = invoke("validate", str(folder))
    assert result.exit_code == 1
    assert "component file not found" in result.stderr and "theater-otp build" in result.stderr


def test_create_refuses_what_it_cannot_do(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    for args, expected in ((["create", "taken", "--dir", str(tmp_path / "taken")], "already exists"),
                           (["create", "9lives", "--dir", str(tmp_path / "n")], "not a valid actor name"),
                           (["create", "ok", "--template", "nope", "--dir", str(tmp_path / "t")], "unknown template")):
        result = invoke(*args)
        assert result.exit_code == 1
        assert result.stderr.startswith("error: ") and expected in result.stderr
        assert result.stderr.count("\n") == 1  # one line


# ---- build ---------------------------------------------------------------------------------------

def test_second_build_is_instant(project):
    """Instant because nothing runs, shown by the files, not a clock: neither componentize-py nor
    wasmtime touched the component or its compiled artifact (same inode, mtime and bytes)."""
    spec = read_spec(project)
    wasm = spec.output
    artifact = artifact_path(json.loads(spec.stamp_file.read_text())["wasm_sha256"])

    def fingerprint(path: Path) -> tuple:
        st = path.stat()
        return st.st_ino, st.st_mtime_ns, st.st_size, hashlib.sha256(path.read_bytes()).hexdigest()

    before = {wasm: fingerprint(wasm), artifact: fingerprint(artifact)}
    result = invoke("build", str(project), "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["skipped"] and not out["componentized"] and not out["compiled"]
    assert (Path(out["wasm"]), Path(out["artifact"])) == (wasm, artifact)
    assert {path: fingerprint(path) for path in before} == before, "an unchanged build rewrote its outputs"
    assert result.stderr == ""  # nothing to report


def test_build_stamp_covers_sources(project, tmp_path):
    """A changed .py file changes the stamp (so build would run again); an untouched copy does not."""
    copy = tmp_path / "copy"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns("build"))
    before = input_stamp(read_spec(copy))
    assert before == input_stamp(read_spec(project))
    (copy / "helpers.py").write_text("X = 1\n")
    assert input_stamp(read_spec(copy)) != before


def test_build_error_shows_the_traceback(error_build):
    folder, proc = error_build
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1, stderr
    lines = [ln for ln in stderr.splitlines() if not ln.startswith(("building ", "  componentize-py:"))]
    assert lines[0].startswith("error: ") and "ModuleNotFoundError: No module named 'not_a_module_xyz'" in lines[0]
    rest = "\n".join(lines[1:])
    assert rest.startswith("Traceback (most recent call last):")
    assert f'File "{folder}/app.py", line' in rest  # the bundle's /0/app.py mapped back to the file
    assert "import not_a_module_xyz" in rest
    for noise in ("Stack backtrace", "AssertionError", "Caused by", "sys.exit(script())", "anyhow"):
        assert noise not in stderr
    assert len(lines) < 10
    assert not (folder / "build" / "actor.wasm").exists()


SYNTAX_ERROR_OUTPUT = """Traceback (most recent call last):
  File "/venv/bin/componentize-py", line 8, in <module>
    sys.exit(script())
             ^^^^^^^^
AssertionError:   File "/0/app.py", line 23
    return (state, (msg,)
           ^
SyntaxError: '(' was never closed


Caused by:
    SyntaxError: '(' was never closed (app.py, line 23)

Stack backtrace:
   0: <anyhow::Error>::msg::<alloc::string::String>
"""

MISSING_CLASS_OUTPUT = """Traceback (most recent call last):
  File "/venv/bin/componentize-py", line 8, in <module>
    sys.exit(script())
             ^^^^^^^^
AssertionError: AttributeError: module 'app' has no attribute 'MessageServerClient'. Did you mean: 'MessageServerKlient'?


Caused by:
    AttributeError: module 'app' has no attribute 'MessageServerClient'
"""

HOST_CALL_AT_BUILD_OUTPUT = """Traceback (most recent call last):
  File "/venv/bin/componentize-py", line 8, in <module>
    sys.exit(script())
             ^^^^^^^^
AssertionError: 

Caused by:
    0: error while executing at wasm backtrace:
           0: 0xa08aca - <unknown>!<wasm function 87>
           1: 0x9fa917 - <unknown>!adapter log
    1: called trapping stub: theater:simple/runtime#log
"""


def test_build_error_extraction_keeps_only_the_python_error(tmp_path):
    summary, details = extract_error(SYNTAX_ERROR_OUTPUT, [tmp_path])
    assert summary == "SyntaxError: '(' was never closed"
    assert details.startswith(f'  File "{tmp_path}/app.py", line 23') and "Stack backtrace" not in details
    summary, details = extract_error(MISSING_CLASS_OUTPUT, [tmp_path])
    assert summary.startswith("AttributeError: module 'app' has no attribute 'MessageServerClient'")
    assert details == ""
    summary, details = extract_error(HOST_CALL_AT_BUILD_OUTPUT, [tmp_path])
    assert "theater:simple/runtime#log at build time" in summary and "inside the methods" in summary


# ---- running it ----------------------------------------------------------------------------------

def test_python_actor_handles_messages(tree, project):
    home = tree.home
    assert cli("send", NAME, "hi", home=home, check=True).returncode == 0
    assert cli("send", NAME, "there", home=home, check=True).returncode == 0
    assert cli("request", NAME, "get", home=home, check=True).stdout.strip() == "2"
    state = json.loads(cli("request", NAME, "state", home=home, check=True).stdout)
    assert state == {"count": 2, "last": "there"}
    assert json.loads(cli("state", NAME, home=home, check=True).stdout) == state
    assert cli("request", NAME, "echo me", home=home, check=True).stdout.strip() == "echo me"
    # its own log line went to the chain
    node = actor_node(tree)
    logs = [e.payload() for e in tree.events(node["actor_id"], "host.runtime.log")]
    assert any(f"{NAME} started with count" in json.dumps(p) for p in logs)


def test_python_exception_is_a_crash_with_its_traceback_then_a_restart(tree):
    home = tree.home
    node = actor_node(tree)
    cli("send", NAME, "hi", home=home, check=True)
    cli("send", NAME, "boom", home=home, check=True)
    tree.wait_for(lambda: actor_node(tree)["restarts"] == 1 and actor_node(tree)["status"] == "running",
                  timeout=20, what="the restart after the Python exception")
    crash = [e.payload() for e in tree.events(node["actor_id"], "actor.crash")]
    assert len(crash) == 1
    reason = crash[0]["reason"]
    assert "Traceback (most recent call last)" in reason
    assert "ValueError: boom: a deliberate crash" in reason
    assert 'app.py", line' in reason and "in handle_send" in reason
    assert "theater_sdk.py" not in reason  # the SDK's wrapper frame is left out
    exited = [e.payload() for e in tree.events(node["actor_id"], "lifecycle.exited")]
    assert exited and "ValueError: boom" in exited[-1]["reason"]["detail"]
    restarts = tree.supervisor_events("root", "supervisor.child_terminated")
    assert any("ValueError: boom" in json.dumps(r) for r in restarts)
    # the new incarnation starts from initial_state and serves requests
    assert cli("request", NAME, "get", home=home, check=True).stdout.strip() == "0"


def test_sigkill_restarts_the_python_actor(tree):
    before = actor_node(tree)
    tree.kill(f"root/{NAME}")
    after = tree.wait_for(lambda: (n := actor_node(tree))["pid"] not in (None, before["pid"])
                          and n["status"] == "running" and n, timeout=20, what="a new pid")
    assert after["restarts"] == before["restarts"] + 1
    assert cli("request", NAME, "get", home=tree.home, check=True).stdout.strip() == "0"


# ---- validate ------------------------------------------------------------------------------------

def test_validate_accepts_the_built_project(project):
    result = invoke("validate", str(project / "manifest.toml"))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("ok: ")
    result = invoke("validate", str(project / "supervision.toml"), "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["ok"] and out["kind"] == "supervision" and len(out["components"]) == 1


def test_validate_reports_every_problem_of_a_manifest(project, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(textwrap.dedent(f"""\
        name = "bad"
        component = "{project / 'build' / 'actor.wasm'}"
        initial_state = 5

        [interface]
        implements = ["actor", "supervisor-handlers", "nonsense"]

        [[handler]]
        type = "gpu"
    """))
    result = invoke("validate", str(bad), "--json")
    assert result.exit_code == 1
    problems = json.loads(result.stdout)["problems"]
    keys = {p["key"] for p in problems}
    assert {"initial_state", "handler[0].type", "interface.implements[1]", "interface.implements[2]",
            "handler"} <= keys, problems
    assert all(p["file"] == str(bad) for p in problems)
    by_key = {p["key"]: p["message"] for p in problems}
    assert "does not export" in by_key["interface.implements[1]"]          # supervisor-handlers
    assert "theater:simple/timing" in by_key["handler"]                      # imported, not granted
    assert "message-server-client" in by_key["interface.implements"]        # exported, not listed
    assert next(p for p in problems if p["key"] == "handler[0].type")["line"] == 9
    # the text form: one `error:` line per problem, each naming file and key
    result = invoke("validate", str(bad))
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == len(problems) >= 6
    assert all(str(bad) in ln for ln in lines)
    assert f"{len(problems)} problem(s)" in result.stderr


def test_validate_reports_every_problem_of_a_tree(project, tmp_path):
    (tmp_path / "nohandler.toml").write_text(textwrap.dedent(f"""\
        name = "nohandler"
        component = "{project / 'build' / 'actor.wasm'}"
    """))
    sup = tmp_path / "supervision.toml"
    sup.write_text(textwrap.dedent(f"""\
        [supervisor]
        id = "root"
        strategy = "one_for_some"

        [[supervisor.children]]
        id = "a"
        manifest = "{project / 'manifest.toml'}"
        restart = "sometimes"

        [[supervisor.children]]
        id = "a"
        manifest = "{project / 'manifest.toml'}"

        [[supervisor.children]]
        id = "team"
        type = "supervisor"
        intensity = -1

          [[supervisor.children.children]]
          id = "ghost"
          manifest = "missing.toml"

          [[supervisor.children.children]]
          id = "nh"
          manifest = "nohandler.toml"
    """))
    result = invoke("validate", str(sup), "--json")
    assert result.exit_code == 1
    problems = json.loads(result.stdout)["problems"]
    where = {(Path(p["file"]).name, p["key"]) for p in problems}
    assert {("supervision.toml", "supervisor.strategy"),
            ("supervision.toml", "supervisor.children[0].restart"),
            ("supervision.toml", "supervisor.children[1].id"),
            ("supervision.toml", "supervisor.children[2].intensity"),
            ("supervision.toml", "supervisor.children[2].children[0].manifest"),
            ("nohandler.toml", "handler")} <= where, problems


# ---- the demo team (slow: three cold builds) -----------------------------------------------------

@pytest.mark.slow
def test_python_demo_team_survives_a_worker_kill(tmp_path):
    sup = REPO / "manifests" / "python-demo" / "supervision.toml"
    result = invoke("build", str(sup), "--json")
    assert result.exit_code == 0, result.stderr
    assert invoke("validate", str(sup)).exit_code == 0
    t = Tree(tmp_path, sup.read_text())
    t.config.unlink()
    t.config = sup  # relative manifest paths resolve against the real file
    with t:
        t.wait_running(timeout=60)

        def totals() -> dict:
            return json.loads(cli("request", "aggregator", "totals", home=t.home, check=True).stdout)

        t.wait_for(lambda: totals()["results"] >= 6, timeout=30, what="two rounds of results")
        t.kill("root/workers/w2")
        t.wait_running(timeout=30)
        before = totals()["results"]
        t.wait_for(lambda: totals()["results"] >= before + 6, timeout=30, what="rounds after the kill")
        assert t.node("root/workers/w2")["restarts"] == 1
        assert t.node("root/coordinator")["restarts"] == 0 and t.node("root/aggregator")["restarts"] == 0


def test_replay_of_a_python_actor_reading_clock_and_random_matches_bit_for_bit(tree):
    """Issue 4: WASI wall-clock, monotonic-clock and random reads are served and recorded by the host,
    so a replay of a componentize-py actor (both incarnations) reproduces every event hash exactly."""
    rolls = [json.loads(cli("request", NAME, "roll", home=tree.home).stdout) for _ in range(3)]
    assert all(1 <= r["dice"] <= 6 for r in rolls)
    tree.kill(f"root/{NAME}")
    tree.wait_for(lambda: actor_node(tree)["status"] == "running" and actor_node(tree)["restarts"] == 1,
                  timeout=30, what="restart")
    rolls.append(json.loads(cli("request", NAME, "roll", home=tree.home).stdout))
    actor_id = actor_node(tree)["actor_id"]
    tree.close()
    types = [e.event_type for e in tree.events(actor_id)]
    assert types.count("host.wasi:clocks/wall-clock.now") >= 4
    assert types.count("host.wasi:clocks/monotonic-clock.now") >= 4
    assert all(isinstance(r["uptime"], float) for r in rolls)
    assert "host.wasi:random/random.get-random-bytes" in types
    out = cli("replay", NAME, "--json", home=tree.home, timeout=300)
    result = json.loads(out.stdout)
    assert out.returncode == 0 and result["match"] is True, out.stdout
    assert result["incarnations"] == [1, 2]
    replies = [e.payload()["reply"] for e in tree.events(actor_id, "message.request")]
    assert [json.loads(r) for r in replies] == rolls     # what replay matched is what the user saw
