"""``taskdash serve`` in a real headless browser (Debian's chromium) driven over the DevTools protocol.

The page renders the terminal with xterm.js on a canvas, so the DOM holds no terminal text: a script
injected before the page loads records what arrives on the page's websocket (the dashboard's screen
output), and the test reads it back with ``Runtime.evaluate``. A screenshot is saved next to it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskdash.cmd_serve import is_loopback, served_command, served_environment
from taskdash.procs import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

RECORD_WS = """
(() => {
  window.__taskdash = [];
  const Orig = window.WebSocket;
  function Recording(...args) {
    const ws = new Orig(...args);
    ws.addEventListener('message', (ev) => {
      try {
        const d = ev.data;
        window.__taskdash.push(typeof d === 'string' ? d : new TextDecoder().decode(d));
      } catch (e) {}
    });
    return ws;
  }
  Recording.prototype = Orig.prototype;
  for (const k of ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED']) Recording[k] = Orig[k];
  window.WebSocket = Recording;
})();
"""
ANSI = re.compile(r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b[PX^_].*?\x1b\\|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b.")


def _wait_http(url: str, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - local test URL
                return resp.read()
        except Exception as exc:  # noqa: BLE001
            last = exc
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer: {last}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(5)


@pytest.fixture()
def served(redis_url: str, demo_app: Any, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``taskdash serve`` on a free port against the test Redis, with messages waiting in ``emails``."""
    for _ in range(3):
        demo_app.send_task("demo_tasks.tasks.send_email", args=("a@example.com",))
    port = free_port()
    log = tmp_path / "serve.log"
    env = dict(os.environ, TASKDASH_CONFIG=str(tmp_path / "none.toml"))
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            # -A: queue names also come from the app (a publisher in this process may have declared
            # `emails` in an earlier test, and kombu's process-wide declare cache outlives FLUSHALL)
            [sys.executable, "-m", "taskdash", "serve", "--port", str(port), "--broker", redis_url,
             "-A", "demo_tasks", "--interval", "0.5"],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/", 30)
        yield f"http://127.0.0.1:{port}/", log
    finally:
        _stop(proc)


async def _cdp_read_terminal(devtools_port: int, url: str, shot: Path, want: list[str], timeout: float) -> str:
    import aiohttp

    targets = json.loads(_wait_http(f"http://127.0.0.1:{devtools_port}/json/list", 20))
    page = next(t for t in targets if t.get("type") == "page")
    async with aiohttp.ClientSession() as session, session.ws_connect(
            page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
        ids = iter(range(1, 1_000_000))

        async def call(method: str, **params: Any) -> dict[str, Any]:
            mid = next(ids)
            await ws.send_json({"id": mid, "method": method, "params": params})
            while True:
                msg = json.loads((await ws.receive(timeout=30)).data)
                if msg.get("id") == mid:
                    if "error" in msg:
                        raise AssertionError(f"{method}: {msg['error']}")
                    return msg.get("result", {})

        await call("Page.enable")
        await call("Page.addScriptToEvaluateOnNewDocument", source=RECORD_WS)
        await call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            res = await call("Runtime.evaluate", expression="(window.__taskdash || []).join('')",
                             returnByValue=True)
            text = ANSI.sub("", res.get("result", {}).get("value") or "")
            if all(w.lower() in text.lower() for w in want):
                break
            await asyncio.sleep(0.5)
        with contextlib.suppress(Exception):  # the screenshot is for humans; the text is the check
            data = (await call("Page.captureScreenshot", format="png"))["data"]
            shot.write_bytes(base64.b64decode(data))
        return text


@pytest.mark.skipif(CHROMIUM is None, reason="chromium missing (apt-get install -y chromium; .ci/run installs it)")
def test_headless_chromium_sees_the_queue_panel(served: tuple[str, Path], tmp_path: Path) -> None:
    url, log = served
    devtools = free_port()
    profile = tmp_path / "chromium-profile"
    browser = subprocess.Popen(
        [str(CHROMIUM), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-extensions", "--no-first-run", "--window-size=1280,800", f"--user-data-dir={profile}",
         f"--remote-debugging-port={devtools}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    shot = tmp_path / "serve.png"
    try:
        text = asyncio.run(_cdp_read_terminal(devtools, url, shot, ["Queues", "emails", "read-only"], 60))
    finally:
        _stop(browser)
    assert "Queues" in text and "emails" in text, f"terminal text seen by the browser: {text[-2000:]!r}\n" \
                                                  f"serve log: {log.read_text()[-2000:]}"
    assert "read-only" in text.lower()  # served read-only by default
    assert shot.exists() and shot.stat().st_size > 1000


def test_serve_defaults_are_safe(redis_url: str) -> None:
    from collectors.core.config import resolve_settings

    assert served_command(True).endswith("-m taskdash --read-only")
    assert "--read-only" not in served_command(False)
    settings = resolve_settings(broker="redis://:s3cret@127.0.0.1:1/0", env={})
    env = served_environment(settings, read_only=True)
    assert env["TASKDASH_READ_ONLY"] == "1" and env["TASKDASH_BROKER"].endswith("127.0.0.1:1/0")
    assert "s3cret" not in served_command(True)  # credentials go through the environment only
    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("0.0.0.0")
    from click.testing import CliRunner

    from taskdash.cli import cli

    res = CliRunner().invoke(cli, ["serve", "--help"])
    assert res.exit_code == 0 and "127.0.0.1" in res.output and "--allow-writes" in res.output
