"""report.html in headless Chromium: no console errors, no failed or external requests,
and a screenshot that shows a rendered page (not a blank one).

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe`` (file
descriptors 3 and 4, NUL-separated JSON), so no port, websocket library or driver is needed.
Skipped only where /usr/bin/chromium is absent (CI installs the Debian ``chromium`` package).
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import select
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from surgeon.report import write_report_files

CHROMIUM = Path(os.environ.get("SURGEON_CHROMIUM", "/usr/bin/chromium"))
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
)
WIDTH, HEIGHT = 1200, 900
"""The viewport; the screenshot covers the whole page, up to MAX_HEIGHT pixels."""
MAX_HEIGHT = 6000
TIMEOUT_S = 60.0

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt chromium)"),
]


@dataclass
class PageLoad:
    """What happened while Chromium loaded one page."""

    errors: list[str] = field(default_factory=list)
    """Console errors, uncaught exceptions, log errors (failed loads, CSP violations)."""
    requests: list[str] = field(default_factory=list)
    """Every URL the page requested, the page itself included."""
    screenshot: bytes = b""
    """PNG of the whole page, WIDTH pixels wide."""


class Pipe:
    """A DevTools-protocol connection over Chromium's remote-debugging pipe."""

    def __init__(self, write_fd: int, read_fd: int) -> None:
        self.write_fd, self.read_fd = write_fd, read_fd
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None, session: str = "") -> Any:
        """Send a command and wait for its result (events that arrive meanwhile are kept)."""
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        while True:
            reply = self.receive()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def post(self, method: str) -> None:
        """Send a command without waiting for its reply (``Browser.close`` may not answer)."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": {}}
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")

    def wait_for(self, method: str, deadline: float) -> None:
        """Wait until an event named ``method`` has arrived."""
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self.receive(deadline))

    def drain(self, seconds: float) -> None:
        """Collect events for ``seconds`` more (late console messages, failed loads)."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self.events.append(self.receive(deadline))
        except TimeoutError:
            pass

    def receive(self, deadline: float | None = None) -> dict[str, Any]:
        deadline = deadline or time.monotonic() + TIMEOUT_S
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.read_fd], [], [], left)[0]:
                raise TimeoutError("no message from chromium")
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the debugging pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)


@contextmanager
def chromium() -> Iterator[Pipe]:
    """A headless Chromium with a fresh profile, stopped (by its pid) on exit."""
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_child_r, from_child_w)]

    # Chromium reads commands from fd 3 and writes replies to fd 4. Our pipe ends are first
    # copied above 10 so that the dup2 onto 3 and 4 in the child cannot clobber each other;
    # fds 3 and 4 are open in the parent (at the latest these pipes took them), so pass_fds
    # can keep them.
    def child_fds() -> None:  # runs in the child, before exec
        os.dup2(high[0], 3)
        os.dup2(high[1], 4)

    with tempfile.TemporaryDirectory(prefix="surgeon-chromium-") as profile:
        proc = subprocess.Popen(
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=child_fds,
            pass_fds=(3, 4),
        )
        for fd in (to_child_r, from_child_w, *high):
            os.close(fd)
        pipe = Pipe(to_child_w, from_child_r)
        try:
            yield pipe
            pipe.post("Browser.close")
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=20)
            os.close(to_child_w)
            os.close(from_child_r)


def load_page(path: Path) -> PageLoad:
    """Open ``path`` in a fresh headless Chromium and record errors, requests, screenshot."""
    with chromium() as cdp:
        target = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        sid = session["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            cdp.send(f"{domain}.enable", session=sid)
        cdp.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
            session=sid,
        )
        cdp.send("Page.navigate", {"url": path.resolve().as_uri()}, session=sid)
        cdp.wait_for("Page.loadEventFired", time.monotonic() + TIMEOUT_S)
        cdp.drain(0.5)
        metrics = cdp.send("Page.getLayoutMetrics", session=sid)
        height = min(MAX_HEIGHT, int(metrics["cssContentSize"]["height"]))
        clip = {"x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1}
        shot = cdp.send(
            "Page.captureScreenshot",
            {"format": "png", "clip": clip, "captureBeyondViewport": True},
            session=sid,
        )
    out = PageLoad(screenshot=base64.b64decode(shot["data"]))
    for event in cdp.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Network.requestWillBeSent":
            out.requests.append(params["request"]["url"])
        elif method == "Network.loadingFailed":
            out.errors.append(f"load failed: {params.get('errorText')}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            description = details.get("exception", {}).get("description", "")
            out.errors.append(f"exception: {details.get('text')} {description}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.errors.append(f"console.{params['type']}: {params.get('args')}")
        elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
            entry = params["entry"]
            out.errors.append(f"log {entry['level']}: {entry.get('text')} {entry.get('url', '')}")
    return out


def assert_rendered(png: bytes) -> None:
    """The full-page screenshot shows text, tables and plots all the way down, not a blank."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    width, height = image.size
    assert width == WIDTH and height >= 500
    colours = image.getcolors(maxcolors=width * height)
    assert colours is not None
    assert len(colours) > 200, f"only {len(colours)} colours: page looks blank"
    white = sum(count for count, rgb in colours if rgb == (255, 255, 255))
    assert white < 0.95 * width * height, "page is almost entirely white"
    grey = image.convert("L")
    hist = grey.histogram()
    n = sum(hist)
    mean = sum(i * c for i, c in enumerate(hist)) / n
    variance = sum(c * (i - mean) ** 2 for i, c in enumerate(hist)) / n
    assert variance > 100.0, f"pixel variance {variance:.1f}: page looks blank"
    # dark pixels (text, lines) in the top, middle and bottom thirds: laid out all the way down
    for k in range(3):
        band = grey.crop((0, k * height // 3, width, (k + 1) * height // 3))
        dark = sum(band.histogram()[:128])
        assert dark > 500, f"third {k + 1} of the page is empty"


@pytest.mark.parametrize("kind", ["diagnose", "alone", "repair"])
def test_report_html_renders_cleanly(
    kind: str, tiny_reports: dict[str, Any], tmp_path: Path
) -> None:
    written = write_report_files(tiny_reports[kind], tmp_path)
    html = tmp_path / "report.html"
    assert html in written
    page = load_page(html)
    assert page.errors == []
    plots = [p for p in written if p.suffix == ".png"]
    assert [r for r in page.requests if not r.startswith("data:")] == [html.resolve().as_uri()]
    assert sum(r.startswith("data:image/png;base64,") for r in page.requests) == len(plots)
    assert_rendered(page.screenshot)
    (tmp_path / "screenshot.png").write_bytes(page.screenshot)


def test_detector_sees_broken_pages(tmp_path: Path) -> None:
    """The checks above would catch a missing file, a script error and an external URL."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="img-src \'self\' data:">'
        '</head><body><img src="missing.png"><img src="https://example.invalid/x.png">'
        "<script>notDefined()</script></body></html>"
    )
    page = load_page(bad)
    text = "\n".join(page.errors)
    assert "ERR_FILE_NOT_FOUND" in text
    assert "notDefined" in text
    assert "example.invalid" in text  # blocked by the CSP, reported as an error
    assert len(page.requests) >= 2


@pytest.mark.slow
def test_organism_report_renders_cleanly(organism_dir: Path, tmp_path: Path) -> None:
    """The report of a real diagnose run on the organism (ft-harmful vs base) in Chromium."""
    from surgeon.demo import demo_settings
    from surgeon.runs import run_diagnose

    settings, _ = demo_settings(organism_dir)
    settings = replace(settings, max_prompts=32, n_causal=8, max_new_tokens=16)
    out = run_diagnose(
        str(organism_dir / "ft-harmful"), str(organism_dir / "base"), settings, tmp_path / "r"
    )
    html = out.out_dir / "report.html"
    page = load_page(html)
    assert page.errors == []
    assert [r for r in page.requests if not r.startswith("data:")] == [html.resolve().as_uri()]
    assert_rendered(page.screenshot)
