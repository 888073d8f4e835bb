"""Headless Chromium driven over the DevTools protocol on a pipe: no driver, no websocket library.

Chromium started with ``--remote-debugging-pipe`` reads JSON commands, each
ended by a NUL byte, on file descriptor 3 and writes replies and events on
4. This is enough to load a page, evaluate script in it, send real mouse
events, resize the window, and take screenshots and PDFs, from the standard
library alone. Used by the attention page test (and to look at the page).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

NAMES = ("chromium", "chromium-browser", "google-chrome")
PATIENCE_S = 120  # a reply this late means the browser hung, not that the machine is slow


def find_chromium() -> str | None:
    return os.environ.get("CHROMIUM") or next(filter(None, map(shutil.which, NAMES)), None)


class BrowserError(RuntimeError):
    pass


class Chromium:
    """One headless browser with one page; ``errors`` collects script exceptions and console errors,
    ``requests`` every URL the page asked for."""

    def __init__(self, width: int = 1024, height: int = 768, binary: str | None = None) -> None:
        binary = binary or find_chromium()
        if binary is None:
            raise BrowserError(f"no Chromium found (looked for {', '.join(NAMES)} and $CHROMIUM)")
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        to_browser, from_browser = os.pipe(), os.pipe()  # (read, write) each
        child_ends = (to_browser[0], from_browser[1])

        def wire() -> None:  # in the child: its fd 3 reads our commands, its fd 4 writes the replies
            ends = [fcntl.fcntl(fd, fcntl.F_DUPFD, 5) for fd in child_ends]  # above 4: the dup2s cannot clobber them
            os.dup2(ends[0], 3)
            os.dup2(ends[1], 4)

        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--hide-scrollbars", "--remote-debugging-pipe", f"--user-data-dir={self.profile}", "about:blank"],
            preexec_fn=wire, pass_fds=(3, 4), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        for fd in child_ends:
            os.close(fd)
        self.write_fd, self.read_fd = to_browser[1], from_browser[0]
        self.buffer, self.next_id, self.events = b"", 0, []
        self.errors: list[str] = []
        self.requests: list[str] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.page(f"{domain}.enable")
        self.resize(width, height)

    # ---- protocol

    def _send(self, method: str, params: dict[str, Any], session: str | None) -> int:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        return self.next_id

    def _next_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            if not select.select([self.read_fd], [], [], max(deadline - time.monotonic(), 0))[0]:
                raise BrowserError(f"Chromium sent nothing for {PATIENCE_S} s")
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium exited (code {self.process.poll()})")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        message = json.loads(raw)
        self._note(message)
        return message

    def _note(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description") or details.get("text", "exception"))
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            self.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(params["entry"]["text"])
        elif method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method:
            self.events.append(message)

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        sent = self._send(method, params, session)
        deadline = time.monotonic() + PATIENCE_S
        while True:
            message = self._next_message(deadline)
            if message.get("id") == sent:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message["result"]

    def page(self, method: str, **params: Any) -> dict[str, Any]:
        return self.call(method, self.session, **params)

    def wait_for(self, event: str) -> dict[str, Any]:
        deadline = time.monotonic() + PATIENCE_S
        while True:
            for i, message in enumerate(self.events):
                if message["method"] == event:
                    return self.events.pop(i)
            self._next_message(deadline)

    # ---- what a test does

    def open(self, url: str) -> None:
        self.events.clear()
        self.page("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")
        self.settle()

    def settle(self) -> None:
        """Let layout, resize observers and paint run (two animation frames)."""
        self.js("new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(() => done(true))))")

    def js(self, expression: str) -> Any:
        """The value of ``expression`` (awaited if a promise); a script error raises."""
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise BrowserError(f"{expression[:80]}: {details.get('exception', {}).get('description', details)}")
        return result["result"].get("value")

    def resize(self, width: int, height: int = 768) -> None:
        self.page("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        self.settle()

    def print_media(self, on: bool) -> None:
        self.page("Emulation.setEmulatedMedia", media="print" if on else "")
        self.settle()

    def centre(self, selector: str) -> tuple[float, float]:
        """The middle of an element's text where it has some (what a reader points at), else of its box."""
        box = self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                      " const range = document.createRange(); range.selectNodeContents(e);"
                      " const t = range.getBoundingClientRect();"
                      " const r = t.width && t.height ? t : e.getBoundingClientRect();"
                      " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        return box[0], box[1]

    def scroll_to(self, selector: str) -> None:
        self.js(f"document.querySelector({json.dumps(selector)}).scrollIntoView({{block: 'center'}})")
        self.settle()

    def hover(self, selector: str) -> None:
        self.scroll_to(selector)
        x, y = self.centre(selector)
        self.page("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        self.settle()

    def click(self, selector: str) -> None:
        self.scroll_to(selector)
        x, y = self.centre(selector)
        self.page("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.page("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
        self.settle()

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": full_page}
        if full_page:
            size = self.js("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}
        path.write_bytes(base64.b64decode(self.page("Page.captureScreenshot", **params)["data"]))
        return path

    def pdf(self, path: Path) -> Path:
        data = self.page("Page.printToPDF", printBackground=True, preferCSSPageSize=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except BrowserError:
            pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.write_fd)
        os.close(self.read_fd)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.browser PAGE OUT.png [--width W] [--click SEL] [--hover SEL] [--full]``: a screenshot
    of a page after the given clicks and hovers (in order), as the README's picture of the attention page."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.browser", description=main.__doc__.split(":")[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--click", action="append", default=[], metavar="SELECTOR")
    parser.add_argument("--hover", metavar="SELECTOR", help="hovered last, after the clicks")
    parser.add_argument("--full", action="store_true", help="the whole page, not the window")
    args = parser.parse_args(argv)
    with Chromium(args.width, args.height) as browser:
        browser.open(args.page.resolve().as_uri())
        for selector in args.click:
            browser.click(selector)
        if args.hover:
            browser.hover(args.hover)
        browser.screenshot(args.out, full_page=args.full)
        if browser.errors:
            raise SystemExit(f"script errors on the page: {browser.errors}")
    print(args.out)


if __name__ == "__main__":
    main()
