"""A real browser for the browser tests: Playwright (PyPI) driving the system's Chromium.

No browser is downloaded: Playwright launches the Chromium found by ``chromium_path`` (Debian's
``chromium`` package, or ``T2A_CHROMIUM``). Without one, or without Playwright, the tests skip
with a message saying how to enable them. Screenshots go to ``tests/artifacts/`` (git-ignored).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome", "/usr/bin/chromium")
HOW = ("install Chromium (Debian: `apt-get install -y chromium`; .ci/run does it) or point T2A_CHROMIUM "
       "at a Chrome/Chromium executable, and `pip install playwright` (the dev extra); "
       "no `playwright install` download is needed")


def chromium_path() -> str | None:
    """The Chromium executable to drive: $T2A_CHROMIUM, else the first of CANDIDATES found."""
    wanted = os.environ.get("T2A_CHROMIUM")
    for name in ([wanted] if wanted else []) + list(CANDIDATES):
        path = shutil.which(name) or (name if os.path.isfile(name) and os.access(name, os.X_OK) else None)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    if path is None:
        pytest.skip(f"browser tests need Chromium: {HOW}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(f"browser tests need Playwright: {HOW}")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path)
        yield b
        b.close()


def record_requests(context) -> list[str]:
    """Every request a context makes to anything but file:, data: and blob: URLs."""
    seen: list[str] = []
    context.on("request", lambda r: seen.append(r.url) if not r.url.startswith(("file:", "data:", "blob:")) else None)
    return seen


MEDIA_READY = """() => [...document.images].every(i => i.complete && i.naturalWidth > 0)
    && [...document.querySelectorAll('audio')].every(a => a.readyState >= 1 && a.duration > 0)"""
