"""Test helpers shared by the API and province suites: a free loopback port, and a small headless-Chromium
driver (the DevTools protocol over a websocket) that navigates, evaluates JavaScript, takes screenshots and
collects what the page reports as an error.

``exceptions`` holds uncaught JavaScript exceptions only; ``errors`` holds those plus console errors and
browser log errors (CSP violations, failed loads). A page test asserts on the one it means."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


class Chromium:
    """Enough of the DevTools protocol: navigate, evaluate JavaScript, take a screenshot."""

    def __init__(self, width: int = 1440, height: int = 1100) -> None:
        exe = chromium_path()
        if exe is None:
            raise RuntimeError("chromium is not installed (apt-get install chromium; .ci/setup-system.sh does)")
        self.profile = tempfile.mkdtemp(prefix="icswatch-chromium-")
        self.proc = subprocess.Popen(
            [exe, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.ws: Any = None
        port_file = Path(self.profile) / "DevToolsActivePort"
        end = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > end or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not start")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        pages: list[dict[str, Any]] = []
        while not pages and time.monotonic() < end:
            pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json", timeout=5).json() if t.get("type") == "page"]
            time.sleep(0.05)
        from websockets.sync.client import connect

        self.ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024, open_timeout=20).__enter__()
        self._id = 0
        self.exceptions: list[str] = []  # uncaught JavaScript exceptions
        self.errors: list[str] = []  # exceptions, console errors, browser log errors
        self.call("Runtime.enable")
        self.call("Page.enable")
        self.call("Log.enable")  # CSP violations and failed loads are reported here
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 60.0) -> dict[str, Any]:
        self._id += 1
        my = self._id
        self.ws.send(json.dumps({"id": my, "method": method, "params": params or {}}))
        end = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, end - time.monotonic())))
            if msg.get("id") == my:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            event = msg.get("method")
            if event == "Runtime.exceptionThrown":
                text = json.dumps(msg["params"].get("exceptionDetails", {}))[:800]
                self.exceptions.append(text)
                self.errors.append(text)
            elif event == "Log.entryAdded" and msg["params"]["entry"].get("level") == "error":
                self.errors.append(json.dumps(msg["params"]["entry"])[:800])
            elif event == "Runtime.consoleAPICalled" and msg["params"].get("type") == "error":
                self.errors.append(json.dumps(msg["params"].get("args", []))[:800])

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", {"url": url})

    def eval(self, expression: str) -> Any:
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"JavaScript error: {r['exceptionDetails']}")
        return r.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                v = self.eval(expression)
            except RuntimeError:
                v = None
            if v:
                return v
            time.sleep(0.1)
        raise TimeoutError(f"waited {timeout} s for {expression}")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        if self.ws is not None:
            try:
                self.ws.__exit__(None, None, None)
            except Exception:  # noqa: BLE001 - the browser may already be gone
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.profile, ignore_errors=True)
