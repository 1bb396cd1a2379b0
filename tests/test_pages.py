"""The pages a researcher reads, rendered by a real browser (Debian's headless Chromium through
chromedriver): the report of a real small sweep, its MLflow runs page and its Optuna dashboard.
Screenshots of the three go to docs/screenshots/, which the README shows. Run by `make test-ui`."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.runner import run_sweep
from orchestrator.spec import load_spec

pytestmark = [pytest.mark.browser, pytest.mark.ray, pytest.mark.usefixtures("ray_cluster")]

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = Path(os.environ.get("DUALSWEEP_SCREENSHOTS", ROOT / "docs" / "screenshots"))
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER), "make test-ui installs chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # This machine's network is closed: Chromium's background connections would only fail.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def reported_sweep(tmp_path_factory):
    """Two methods of different families across two batch sizes, one search trial and two seeds
    per cell, then its report."""
    directory = tmp_path_factory.mktemp("pages")
    path = directory / "pages.yaml"
    path.write_text(
        f"name: pages\nstorage: {directory / 'runs'}\ntracking: {{uri: 'sqlite:///{directory / 'mlflow.db'}'}}\n"
        "trial: {data: {name: digits}, epochs: 2, model: {width: 64, projector: 64-32}}\n"
        "grid: {method: [simclr, vicreg], batch_size: [64, 128]}\n"
        "search: {trials_per_cell: 1, params: {optim.lr: {type: loguniform, low: 0.05, high: 0.5}}}\n"
        "scheduler: {type: none}\nseeds: [1, 2]\n"
        "claims:\n"
        "  - {id: G2, kind: gap_within, methods: [simclr, vicreg], tolerance: 0.5}\n"
        "  - {id: G7, kind: flat_along, axis: batch_size, methods: [simclr], tolerance: 0.5}\n"
    )
    loaded = load_spec(path)
    assert run_sweep(loaded, address=None, verbose=0).errors == 0
    assert main(["report", str(loaded.sweep_dir)]) == 0
    return loaded


def wait_for(driver, condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while True:
        value = condition(driver)
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not rendered within {seconds:.0f} s; page text: " \
                                            f"{driver.find_element('tag name', 'body').text[:500]!r}"
        time.sleep(0.5)


def screenshot(driver, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def test_report_page_renders_the_verdicts_and_every_figure(browser, reported_sweep):
    page = reported_sweep.sweep_dir / "report" / "report.html"
    browser.get(page.as_uri())
    rows = browser.find_elements("css selector", "#verdicts tr")
    text = " ".join(row.text for row in rows)
    assert "G2" in text and "G7" in text
    assert re.search(r"supported|contradicted|inconclusive", text)
    images = browser.find_elements("css selector", "figure img")
    assert len(images) >= 4
    for image in images:  # decoded by the browser, not a broken-image placeholder
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 100", image), \
            image.get_attribute("alt")
    screenshot(browser, "report")


def serve_ui(sweep_dir: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    server = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "ui", str(sweep_dir)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    urls = {}
    while len(urls) < 2:
        line = server.stdout.readline()
        assert line, "dualsweep ui exited before printing its URLs"
        name, _, url = line.partition(": ")
        if url.startswith("http://127.0.0.1:"):
            urls[name] = url.strip()
    return server, urls


def wait_until_served(url: str, server: subprocess.Popen, seconds: float = 120) -> None:
    """The servers take a while to start on a small machine."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            assert server.poll() is None, "dualsweep ui exited"
            assert time.monotonic() < deadline, f"{url} did not answer within {seconds:.0f} s"
            time.sleep(1)


def test_mlflow_runs_page_and_optuna_dashboard(browser, reported_sweep):
    server, urls = serve_ui(reported_sweep.sweep_dir)
    try:
        runs_url = urls["MLflow UI"]
        assert re.search(r"/#/experiments/\d+/runs$", runs_url), runs_url
        wait_until_served(runs_url.split("/#")[0], server)
        browser.get(runs_url)
        # The runs page (not the GenAI pages) lists the sweep's parent run, named after the sweep.
        body = lambda d: d.find_element("tag name", "body").text  # noqa: E731
        wait_for(browser, lambda d: re.search(r"\b[1-9]\d* matching runs?\b", body(d)), 90, "the runs table")
        rows = wait_for(browser, lambda d: [e.text for e in d.find_elements("css selector", "[role=row], tr")
                                            if re.search(r"\bpages\b", e.text)], 30, "the parent run's row")
        assert rows, body(browser)[:500]
        assert "/runs" in browser.current_url and "Training runs" in body(browser)
        screenshot(browser, "mlflow_runs")

        wait_until_served(urls["Optuna dashboard"], server)
        browser.get(urls["Optuna dashboard"])
        wait_for(browser, lambda d: "pages.c00" in d.find_element("tag name", "body").text, 60, "the sweep's studies")
        text = browser.find_element("tag name", "body").text
        assert all(f"pages.c0{i}" in text for i in range(4)), text[:500]
        screenshot(browser, "optuna_dashboard")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
