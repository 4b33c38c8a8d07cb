"""The learner's path in a real browser (``make e2e``, not part of ``make test``).

JupyterLab is started with the Makefile's own ``lab`` command on a copy of the repository (so the run's outputs and
autosaves never touch the working tree), headless Chromium opens notebook 00 through chromedriver, runs every cell
from the Run menu, and the test reads the rendered outputs: the environment's ``[OK]`` lines and the warm-up's verdict.
It skips with a reason where Chromium, chromedriver or selenium is missing.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_lab import ROOT, TOKEN, lab_server

pytestmark = pytest.mark.e2e

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)
MISSING = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver) and selenium"


def repository_copy(target: Path) -> Path:
    """The tracked files of the repository, with the virtual environment linked in (``make -n lab`` reads it)."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in tracked.splitlines():
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, destination)
    (target / ".venv").symlink_to(ROOT / ".venv")
    return target


@pytest.fixture
def lab_url(tmp_path: Path) -> Iterator[str]:
    with lab_server(repository_copy(tmp_path / "xmodal"), tmp_path / "runtime") as base:
        yield base


def test_notebook_00_runs_in_headless_chromium(lab_url: str) -> None:
    webdriver = pytest.importorskip("selenium.webdriver", reason=MISSING)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip(MISSING)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    browser = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path), options=options)
    try:
        browser.get(f"{lab_url}/lab/tree/notebooks/00_start.ipynb?token={TOKEN}")
        wait = WebDriverWait(browser, 90)
        wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")))
        wait.until(
            ready.presence_of_element_located((By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator, .jp-KernelStatus"))
        )
        menu(browser, wait, "Run", "Run All Cells")
        outputs = WebDriverWait(browser, 120).until(lambda b: verdict_text(b))
    finally:
        browser.quit()
    ok_lines = [line for line in outputs.splitlines() if line.startswith("[OK]")]
    assert len(ok_lines) >= 3, outputs
    assert "[TODO] start.cosine_similarity_matrix" in outputs, outputs
    assert "[FAIL]" not in outputs and "Traceback" not in outputs, outputs


def menu(browser, wait, top: str, item: str) -> None:
    """Click ``top`` in JupyterLab's menu bar, then ``item`` in the menu it opens."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready

    bar = f"//li[contains(@class,'lm-MenuBar-item')][.//div[normalize-space()='{top}']]"
    wait.until(ready.element_to_be_clickable((By.XPATH, bar))).click()
    entry = f"//li[contains(@class,'lm-Menu-item')][.//div[normalize-space()='{item}']]"
    wait.until(ready.element_to_be_clickable((By.XPATH, entry))).click()


def verdict_text(browser) -> str | None:
    """Every rendered output's text once the kernel is idle and a verdict is shown, else None (keep waiting)."""
    from selenium.webdriver.common.by import By

    text = "\n".join(e.text for e in browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output"))
    busy = browser.find_elements(By.XPATH, "//*[contains(@class,'jp-InputPrompt') and contains(., '[*]')]")
    return text if "start.cosine_similarity_matrix" in text and not busy else None
