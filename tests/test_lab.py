"""`make lab` serves the repository, so a learner can open the notebooks and the banks in JupyterLab; every relative
link in a notebook's Markdown points at a file that exists."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
TOKEN = "xmodal-test-token"
pytestmark = pytest.mark.maintainer


def lab_command(root: Path = ROOT) -> str:
    """The Makefile's own `lab` command (`make -n lab` in ``root``), joined into one shell line."""
    listing = subprocess.run(["make", "-n", "lab"], cwd=root, capture_output=True, text=True, check=True).stdout
    commands = [line for line in listing.replace("\\\n", " ").splitlines() if "jupyter lab" in line]
    assert len(commands) == 1, listing
    return commands[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


@contextlib.contextmanager
def lab_server(root: Path, runtime: Path) -> Iterator[str]:
    """The Makefile's own lab command, run in ``root`` without a browser on a free port; yields the server's URL."""
    port = free_port()
    command = f"{lab_command(root)} --no-browser --ServerApp.port={port} --IdentityProvider.token={TOKEN}"
    server = subprocess.Popen(
        ["bash", "-c", f"exec {command}"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime)},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if status(f"{base}/api/contents?token={TOKEN}") == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert server.poll() is None, "`make lab`'s command exited at once (as root without --allow-root?)"
        yield base
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_make_lab_serves_the_notebooks_and_the_banks(tmp_path: Path) -> None:
    with lab_server(ROOT, tmp_path) as base:
        for path in ("notebooks/00_start.ipynb", "questions/03_contrastive.md", "questions/zh/03_contrastive.md"):
            assert status(f"{base}/api/contents/{path}?token={TOKEN}&content=0") == 200, path


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb")))
def test_relative_links_in_notebooks_resolve(name: str) -> None:
    for cell in nbformat.read(ROOT / "notebooks" / name, as_version=4).cells:
        if cell.cell_type != "markdown":
            continue
        for target in LINK.findall(cell.source):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            assert (ROOT / "notebooks" / target.split("#", 1)[0]).resolve().exists(), f"{name}: broken link {target}"
