"""`watch DIR --manifest M`: a change under DIR rebuilds the actor and restarts it on the new
component (a new pid, the new behaviour); a broken source is one error line and the old actor
keeps running. And the progress display: plain lines (or none) when stderr is no terminal, and
nothing extra under --json. Real processes: a `server` node via the harness, a WAT actor (no slow
Python build), `watch` as a subprocess ended by the hidden `--changes N`."""

import json
import subprocess
import time
from pathlib import Path

import pytest

from harness import CLI, WAT, cli, pid_gone
from test_server_mode import Server

pytestmark = pytest.mark.integration

#: echo.wat, but handle-request replies with the static text at offset 64 (16 bytes), not the message
REPLY_V1 = "echo got message"
REPLY_V2 = "echo v2 reply!!!"


def reply_actor(folder: Path) -> Path:
    """A copy of echo.wat whose requests are answered with REPLY_V1, and its manifest."""
    src = folder / "src"
    src.mkdir()
    text = (WAT / "echo.wat").read_text()
    echo_back = ("(i32.store offset=20 (global.get $ret) (local.get $mp))\n"
                 "      (i32.store offset=24 (global.get $ret) (local.get $ml))")
    assert echo_back in text
    text = text.replace(echo_back, "(i32.store offset=20 (global.get $ret) (i32.const 64))\n"
                                   "      (i32.store offset=24 (global.get $ret) (i32.const 16))")
    (src / "reply.wat").write_text(text)
    manifest = src / "manifest.toml"
    manifest.write_text('name = "reply"\ncomponent = "reply.wat"\n')
    return manifest


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def ask(server: Server, target: str) -> str:
    return cli("request", target, "hi", home=server.home, check=True).stdout.strip()


def start_watch(server: Server, manifest: Path, changes: int, log: Path) -> subprocess.Popen:
    """`watch` as a subprocess, returned once it says it is watching."""
    err = open(log, "w")
    proc = subprocess.Popen(CLI + ["watch", str(manifest.parent), "--manifest", str(manifest), "--changes",
                                   str(changes), "--home", str(server.home)],
                            stdout=subprocess.PIPE, stderr=err, text=True)
    err.close()
    deadline = time.monotonic() + 30
    while "watching" not in log.read_text():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "watch never said it was watching"
        time.sleep(0.05)
    return proc


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, list[str]]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, out.splitlines()


def test_a_change_restarts_the_actor_on_the_new_component(tmp_path):
    manifest = reply_actor(tmp_path)
    with Server(tmp_path) as server:
        server.start(manifest)
        old_pid = server.node("root/reply")["pid"]
        assert ask(server, "root/reply") == REPLY_V1
        proc = start_watch(server, manifest, 1, tmp_path / "watch.err")
        edit(manifest.parent / "reply.wat", REPLY_V1, REPLY_V2)
        code, lines = finish(proc)
        assert code == 0, (tmp_path / "watch.err").read_text()
        assert len(lines) == 1 and lines[0].startswith("restarted root/reply (pid "), lines
        node = server.node("root/reply")
        assert node["status"] == "running" and node["pid"] not in (None, old_pid)
        assert str(node["pid"]) in lines[0]
        assert ask(server, "root/reply") == REPLY_V2
        assert server.wait_for(lambda: pid_gone(old_pid), what="the old process gone")
        assert [c["id"] for c in server.call("which_children", {"supervisor": "root"})["children"]] == ["reply"]


def test_a_broken_source_is_one_error_line_and_the_old_actor_keeps_running(tmp_path):
    manifest = reply_actor(tmp_path)
    with Server(tmp_path) as server:
        server.start(manifest)
        old_pid = server.node("root/reply")["pid"]
        log = tmp_path / "watch.err"
        proc = start_watch(server, manifest, 2, log)
        wat = manifest.parent / "reply.wat"
        good = wat.read_text()
        wat.write_text(good.replace("(core module $actor", "(core module $actor (oops", 1))
        deadline = time.monotonic() + 30
        while "error:" not in log.read_text():
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.05)
        errors = [line for line in log.read_text().splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "reply.wat" in errors[0], log.read_text()
        node = server.node("root/reply")
        assert (node["status"], node["pid"]) == ("running", old_pid)
        assert ask(server, "root/reply") == REPLY_V1
        wat.write_text(good.replace(REPLY_V1, REPLY_V2))  # fixed: the second rebuild restarts it
        code, lines = finish(proc)
        assert code == 0 and len(lines) == 1 and lines[0].startswith("restarted root/reply"), lines
        assert ask(server, "root/reply") == REPLY_V2


def test_watch_starts_the_actor_when_it_is_not_running(tmp_path):
    manifest = reply_actor(tmp_path)
    with Server(tmp_path) as server:
        proc = start_watch(server, manifest, 1, tmp_path / "watch.err")
        edit(manifest.parent / "reply.wat", REPLY_V1, REPLY_V2)
        code, lines = finish(proc)
        assert code == 0 and len(lines) == 2, lines
        assert lines[0].startswith("started root/reply") and lines[1].startswith("restarted root/reply")
        assert ask(server, "root/reply") == REPLY_V2


def test_watch_without_a_node_exits_3_in_one_line(tmp_path):
    manifest = reply_actor(tmp_path)
    proc = cli("watch", str(manifest.parent), "--manifest", str(manifest), home=tmp_path / "home")
    assert proc.returncode == 3 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_progress_stays_plain_off_a_terminal_and_json_gets_nothing_extra(tmp_path):
    manifest = reply_actor(tmp_path)
    with Server(tmp_path) as server:
        plain = cli("start", str(manifest), home=server.home, check=True)
        assert plain.stderr == "" and plain.stdout.startswith("started root/reply ")
        as_json = cli("start", str(manifest), "--json", home=server.home, check=True)
        assert as_json.stderr == "" and json.loads(as_json.stdout)["path"] == "root/reply-2"
    up_home = tmp_path / "up-home"
    config = tmp_path / "supervision.toml"
    config.write_text(f'[supervisor]\n[[supervisor.children]]\nid = "reply"\nmanifest = "{manifest}"\n')
    up = cli("up", str(config), "--detach", home=up_home)
    try:
        assert up.returncode == 0, up.stderr
        assert "\x1b" not in up.stderr and "\r" not in up.stderr  # no spinner: stderr is a pipe
        assert up.stderr.splitlines()[0].startswith("tree up: node pid ")
    finally:
        cli("down", home=up_home)


def test_progress_off_a_terminal_prints_plain_lines_or_none(capsys):
    from theater_otp.cli_progress import Progress

    with Progress("compiling") as p:  # capsys: stderr is no terminal
        p.say("compiling big.wasm (40.0 MB)")
        p.step("only a spinner would show this")
    with Progress("starting", plain=False) as p:
        p.say("not printed: this command printed no progress before")
    assert capsys.readouterr().err == "compiling big.wasm (40.0 MB)\n"
