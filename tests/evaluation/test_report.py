"""write_report: analysis.json and one self-contained report.html, checked as
text and in a real browser (Debian's chromium, headless, driven over the
DevTools protocol through --remote-debugging-pipe, so no client library):
every section renders, every image decodes, a hostile class name shows as
text and runs nothing, and no request leaves the machine. Also the report of
a training run (eval.analyze=True) and of tools/eval.py --analyze."""
from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import time

import pytest

from detkit.data.synthetic import synthetic_coco
from detkit.evaluation import analyze, write_report
from detkit.evaluation.report import SECTIONS

HOSTILE = "<img src=x onerror=alert(1)>"
HOSTILE_FILE = "<script>alert(2)</script>.jpg"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it: "
                                                             "apt-get install -y chromium)")


@pytest.fixture(scope="module")
def hostile_analysis():
    gt, results = synthetic_coco(num_images=30, num_categories=5, max_gt=6, dets_per_image=25, crowd_fraction=0.03,
                                 seed=7)
    gt["categories"][0]["name"] = HOSTILE
    gt["categories"][1]["name"] = '$\\frac{1}{0}$ & "quotes" \'too\''  # TeX for matplotlib, quotes for HTML
    for image in gt["images"]:  # whichever ranks among the worst carries the name
        image["file_name"] = HOSTILE_FILE
    return analyze(gt, results, worst=4)


@pytest.fixture(scope="module")
def report(hostile_analysis, tmp_path_factory):
    return write_report(hostile_analysis, tmp_path_factory.mktemp("report") / "out")


def test_writes_json_and_one_html(report, hostile_analysis):
    folder = os.path.dirname(report)
    assert sorted(os.listdir(folder)) == ["analysis.json", "report.html"]
    with open(os.path.join(folder, "analysis.json")) as f:
        data = json.load(f, parse_constant=lambda name: pytest.fail(f"{name} in analysis.json"))
    assert data["errors"] == hostile_analysis.errors
    assert data["classes"][0] == HOSTILE  # JSON keeps the data as it is; only HTML escapes


def test_html_is_self_contained_and_escaped(report):
    with open(report, encoding="utf-8") as f:
        html = f.read()
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    sources = re.findall(r'\s(?:src|href)\s*=\s*"([^"]*)"', html)
    assert len(sources) == 3 + 4 and all(s.startswith("data:image/png;base64,") for s in sources)
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]*", "", html)  # base64 may hold "//" by chance
    assert re.search(r"https?:|ftp:|//|url\(|@import", text, re.I) is None  # no URL, not even protocol-relative
    assert "<script" not in html.lower() and re.search(r"<[^>]*\son\w+\s*=", html) is None  # no handler in a tag
    assert HOSTILE not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;script&gt;alert(2)&lt;/script&gt;.jpg" in html
    assert "Content-Security-Policy" in html


# --- the browser ---------------------------------------------------------------------------------------


class Chromium:
    """Headless chromium driven over the DevTools protocol on a pipe: commands
    go to its fd 3, replies and events come from its fd 4, each a JSON
    message ended by a NUL byte."""

    FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--remote-debugging-pipe", "--window-size=1280,900"]

    def __init__(self, user_data_dir: str):
        to_child, self._to_chromium = os.pipe()
        self._from_chromium, from_child = os.pipe()

        def child_fds():  # move the pipe ends to 3 and 4 without clobbering each other
            a, b = fcntl.fcntl(to_child, fcntl.F_DUPFD, 10), fcntl.fcntl(from_child, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.process = subprocess.Popen([CHROMIUM, *self.FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=False,
                                        preexec_fn=child_fds)
        os.close(to_child)
        os.close(from_child)
        self._buffer, self._next_id, self.events = b"", 0, []

    def send(self, method: str, session: str | None = None, timeout: float = 30.0, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_chromium, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict:
        """The first event `method`; JavaScript dialogs that open meanwhile are
        recorded and dismissed (an alert would hold the page's load forever)."""
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read(timeout)
            self.events.append(event)
            if event.get("method") == "Page.javascriptDialogOpening":
                self.send("Page.handleJavaScriptDialog", event.get("sessionId"), accept=True)
            if event.get("method") == method:
                return event

    def _read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_chromium], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._from_chromium, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_chromium)
        os.close(self._from_chromium)


def open_in_browser(path: str, user_data_dir: str, screenshot: str) -> tuple[dict, list[str], list[dict]]:
    """Loads `path`, screenshots the whole page into `screenshot`; returns
    (facts the page reports, URLs it requested, JavaScript dialogs opened)."""
    browser = Chromium(user_data_dir)
    try:
        target = next(t for t in browser.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        session = browser.send("Target.attachToTarget", targetId=target["targetId"], flatten=True)["sessionId"]
        for domain in ("Page", "Network", "Runtime"):
            browser.send(f"{domain}.enable", session)
        url = "file://" + os.path.abspath(path)
        browser.send("Page.navigate", session, url=url)
        browser.wait_for("Page.loadEventFired")
        facts = browser.send("Runtime.evaluate", session, expression=PAGE_FACTS, returnByValue=True)["result"]["value"]
        shot = browser.send("Page.captureScreenshot", session, format="png", captureBeyondViewport=True)
        with open(screenshot, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        requests = [e["params"]["request"]["url"] for e in browser.events
                    if e.get("method") == "Network.requestWillBeSent" and e.get("sessionId") == session]
        dialogs = [e for e in browser.events if e.get("method") == "Page.javascriptDialogOpening"]
        return facts, [u for u in requests if u != url], dialogs
    finally:
        browser.close()


PAGE_FACTS = """(() => ({
  sections: Object.fromEntries([...document.querySelectorAll('main > section')].map(
      s => [s.id, s.getBoundingClientRect().height > 40 && s.querySelector('h2') !== null])),
  images: [...document.images].map(i => ({complete: i.complete, width: i.naturalWidth})),
  text: document.body.innerText,
  injected: document.querySelectorAll('img[src="x"], [onerror], script').length,
  title: document.title,
}))()"""


def check_in_browser(report: str, tmp_path, expected_images: int) -> dict:
    screenshot = str(tmp_path / "report.png")
    facts, requests, dialogs = open_in_browser(report, str(tmp_path / "profile"), screenshot)
    assert facts["title"] == "detkit evaluation report"
    assert facts["sections"] == {name: True for name in SECTIONS}
    assert len(facts["images"]) == expected_images
    assert all(i["complete"] and i["width"] > 0 for i in facts["images"]), facts["images"]
    assert [u for u in requests if not u.startswith("data:")] == []  # nothing left the machine, not even file://x
    assert dialogs == []
    import cv2

    picture = cv2.imread(screenshot)
    assert picture is not None and picture.shape[1] >= 1200 and picture.shape[0] > 2000  # the whole page
    return facts


@needs_chromium
def test_report_in_a_browser(report, tmp_path):
    facts = check_in_browser(report, tmp_path, expected_images=3 + 4)
    assert facts["injected"] == 0  # the hostile name made no element and no handler
    assert HOSTILE in facts["text"] and "<script>alert(2)</script>.jpg" in facts["text"]  # shown as text


# --- training and tools/eval.py --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def analysed_run(tmp_path_factory, shapes_root):
    """One epoch of the tiny SSD with eval.analyze=True."""
    from dataclasses import replace

    from detkit.engine import train
    from tests.helpers import tiny_ssd_config

    config = tiny_ssd_config(shapes_root, epochs=1)
    config = replace(config, eval=replace(config.eval, analyze=True, vis_images=0),
                     data=replace(config.data, num_workers=0))  # no worker process to start
    work_dir = str(tmp_path_factory.mktemp("analysed"))
    train(config, work_dir, progress=False)
    return config, work_dir


def test_training_logs_the_error_breakdown_and_writes_the_report(analysed_run):
    _, work_dir = analysed_run
    with open(os.path.join(work_dir, "metrics.jsonl")) as f:
        evals = [r for r in map(json.loads, f) if r["type"] == "eval"]
    assert len(evals) == 1 and "errors" in evals[0]
    errors = evals[0]["errors"]
    if errors is not None:  # None: the one-epoch model detected nothing yet
        assert set(errors["AP50"]) == {"cls", "loc", "both", "dupe", "bkg", "miss", "FP", "FN"}
        assert os.path.isfile(os.path.join(work_dir, "report.html"))
        with open(os.path.join(work_dir, "analysis.json")) as f:
            assert json.load(f)["stats"]["AP50"] == evals[0]["AP50"]


def test_config_checks_eval_analyze():
    from detkit.config import Config, ConfigError, apply_overrides

    assert apply_overrides(Config(), ["eval.analyze=True"]).eval.analyze is True
    with pytest.raises(ConfigError, match="eval.analyze=True .* needs eval.metric='coco'"):
        apply_overrides(Config(), ["eval.analyze=True", "eval.metric=voc", "eval.key=mAP"])


@needs_chromium
def test_tools_eval_analyze_writes_a_report_a_browser_opens(trained, tmp_path, capsys):
    from tests.tools.test_tools import tool

    checkpoint = os.path.join(trained[1], "last.pth")
    out = tmp_path / "eval"
    assert tool("eval").main([checkpoint, "--out", str(out), "--device", "cpu", "--analyze"]) == 0
    printed = capsys.readouterr().out
    assert "biggest error type" in printed and "most confused" in printed
    with open(out / "analysis.json") as f:
        analysis = json.load(f)
    with open(out / "metrics.json") as f:
        assert analysis["stats"] == json.load(f)["stats"]  # the same images, the same matching
    images = 3 + len(analysis["worst"])
    assert all(w["image_found"] for w in analysis["worst"])  # drawn on the Shapes images themselves
    check_in_browser(str(out / "report.html"), tmp_path, expected_images=images)


def test_tools_eval_analyze_needs_coco_ground_truth(trained, tmp_path):
    from tests.tools.test_tools import tool

    checkpoint = os.path.join(trained[1], "last.pth")
    with pytest.raises(ValueError, match="--analyze needs COCO ground truth"):  # before predicting anything
        tool("eval").main([checkpoint, "--data", "voc", "--voc-root", str(tmp_path), "--analyze"])
