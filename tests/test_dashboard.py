"""The web dashboard (`up --dashboard`, theater_otp/dashboard/, docs/dashboard.md), driven in a real
headless Chromium (selenium, Debian's chromium + chromedriver, installed by `make browser`) against a
real node: the tree on the page, a SIGKILLed worker's restart count changing there, the restart
button recorded in the supervisor's chain, an actor's events and logs, and 403 without the token.

THEATER_OTP_SCREENSHOTS=DIR saves the page as DIR/dashboard-tree.png and DIR/dashboard-actor.png
(docs/ holds the ones made so)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import httpx
import psutil
import pytest

from harness import Tree, cli, wait_gone, write_manifest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

TREE = """
    [supervisor]
    id = "root"
    intensity = 10
    period = 60
    [[supervisor.children]]
    id = "counter"
    manifest = "counter.toml"
    [[supervisor.children]]
    id = "team"
    type = "supervisor"
    intensity = 10
    period = 60
      [[supervisor.children.children]]
      id = "echo"
      manifest = "echo.toml"
      [[supervisor.children.children]]
      id = "tally"
      manifest = "counter.toml"
"""


def _browser():
    """A headless Chromium through chromedriver, or a skip saying why there is none."""
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip(f"no headless browser here: {CHROMIUM} and {CHROMEDRIVER} are needed (`make browser` installs "
                    f"Debian's chromium and chromium-driver with apt-get; it could not on this machine)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,900"):
        opts.add_argument(flag)
    return webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))


class DashboardTree(Tree):
    """A Tree booted with `up --detach --dashboard`: `url` is what up printed, `dashboard_pid` its process."""

    def __enter__(self) -> "DashboardTree":
        proc = cli("up", str(self.config), "--detach", "--dashboard", home=self.home)
        if proc.returncode != 0:
            raise AssertionError(f"up failed: {proc.stderr}")
        self.url = proc.stdout.strip().splitlines()[-1]
        found = re.search(r"dashboard \(pid (\d+)", proc.stderr)
        assert found, proc.stderr
        self.dashboard_pid = int(found.group(1))
        self.node_pid = self.tree()["node_pid"]
        return self

    def close(self) -> None:
        super().close()
        if psutil.pid_exists(self.dashboard_pid):  # it ends with the node; a failed test still leaves none
            left = wait_gone([psutil.Process(self.dashboard_pid)], 5)
            for p in left:
                p.kill()


def _cell(driver, path: str, name: str) -> str:
    """The text of a tree cell, read in the page (the rows are redrawn with each tree it gets)."""
    return driver.execute_script(
        "const c = document.querySelector(arguments[0]); return c ? c.textContent : '';",
        f"tr[data-path='{path}'] .{name}")


def _texts(driver, css: str) -> list[str]:
    return driver.execute_script("return [...document.querySelectorAll(arguments[0])].map(e => e.textContent);", css)


def _click(driver, css: str) -> None:
    """Click what `css` finds, found again if a redraw replaced it in between."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for _ in range(20):
        try:
            driver.find_element(By.CSS_SELECTOR, css).click()
            return
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"{css} kept being redrawn")


def _shot(driver, name: str) -> None:
    folder = os.environ.get("THEATER_OTP_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / name))


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_the_dashboard_shows_the_tree_live_restarts_from_its_button_and_refuses_requests_without_the_token(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    write_manifest(tmp_path, "counter", "counter.wat", initial_state="0")
    write_manifest(tmp_path, "echo", "echo.wat")
    driver = _browser()
    try:
        with DashboardTree(tmp_path, TREE) as tree:
            pids = tree.wait_running()
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=[A-Za-z0-9_-]{20,}", tree.url), tree.url
            base, token = tree.url.split("?token=")

            # without the right token: 403 for the page, its assets and the API; with it, 200
            for path in ("", "static/app.js", "api/tree", "api/stream"):
                assert httpx.get(base + path, timeout=10).status_code == 403, path
                assert httpx.get(f"{base}{path}?token=x{token}", timeout=10).status_code == 403, path
            assert httpx.post(base + "api/restart", json={"target": "root/counter"}, timeout=10).status_code == 403
            assert httpx.get(f"{base}api/tree?token={token}", timeout=10).status_code == 200
            assert httpx.get(f"{base}static/app.js", headers={"X-Dashboard-Token": token},
                             timeout=10).status_code == 200

            wait = WebDriverWait(driver, 20, poll_frequency=0.05)
            driver.get(tree.url)
            # the tree: every supervisor and actor, with its status, pid and restarts
            wait.until(lambda d: _cell(d, "root/counter", "pid") == str(pids["root/counter"]))
            for path in ("root", "root/team", "root/counter", "root/team/echo", "root/team/tally"):
                assert _cell(driver, path, "path"), path
            assert _cell(driver, "root/counter", "restarts") == "0"
            assert _cell(driver, "root/counter", "status") == "running"

            # kill -9 a worker: its restart count and pid change on the page, the latency chart gets a bar
            old = tree.kill("root/counter")
            wait.until(lambda d: _cell(d, "root/counter", "restarts") == "1")
            wait.until(lambda d: _cell(d, "root/counter", "pid") not in ("", str(old)))
            wait.until(lambda d: _texts(d, "#latency rect.exit"))
            _shot(driver, "dashboard-tree.png")

            # an actor's events and logs stream live
            tree.call("send", {"target": "echo", "payload": b"hello"})
            _click(driver, "tr[data-path='root/team/echo'] td.path")
            wait.until(lambda d: any("echo got message" in t for t in _texts(d, "#logs li")))
            wait.until(lambda d: any("message.send" in t for t in _texts(d, "#timeline li")))
            tree.call("send", {"target": "echo", "payload": b"again"})
            wait.until(lambda d: len([t for t in _texts(d, "#logs li") if "echo got message" in t]) == 2)

            # the restart button: terminate_child + restart_child, recorded in the supervisor's chain
            tally = pids["root/team/tally"]
            _click(driver, "button.restart[data-path='root/team/tally']")
            wait.until(lambda d: "restart: root/team/tally" in d.find_element(By.ID, "message").text)
            stopped = tree.supervisor_events("root/team", "supervisor.child_stopped")
            started = tree.supervisor_events("root/team", "supervisor.child_started")
            assert [e["child"] for e in stopped] == ["tally"]
            assert [(e["child"], e["incarnation"]) for e in started if e["child"] == "tally"] == [("tally", 1),
                                                                                               ("tally", 2)]
            new = tree.node("root/team/tally")["pid"]
            assert new not in (None, tally)
            wait.until(lambda d: _cell(d, "root/team/tally", "pid") == str(new))
            wait.until(lambda d: _texts(d, "#latency rect.stop"))
            _shot(driver, "dashboard-actor.png")

            # the start form: the CLI's start (start_child under the root), the new actor on the page
            field = driver.find_element(By.ID, "start-manifest")
            field.send_keys(str(tmp_path / "echo.toml"))
            _click(driver, "#start-button")
            wait.until(lambda d: "start: " in d.find_element(By.ID, "message").text)
            started_pid = tree.wait_for(lambda: tree.node("root/echo")["pid"], what="the started echo")
            wait.until(lambda d: _cell(d, "root/echo", "pid") == str(started_pid))
            assert [e["child"] for e in tree.supervisor_events("root", "supervisor.child_started")
                    if e["child"] == "echo"] == ["echo"]
            dashboard = psutil.Process(tree.dashboard_pid)
        # `down` (the harness's close): the dashboard ends with the node
        assert not wait_gone([dashboard], 5), "the dashboard outlived its node"
    finally:
        driver.quit()
