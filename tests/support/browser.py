"""A real headless Chromium for the console's browser tests, driven by Playwright.

Playwright cannot download its own browser here (offline machines, CI without network to
its CDN), so it drives Debian's ``chromium`` package at :data:`CHROMIUM` (``.ci/run``
installs it when missing). A missing chromium or Playwright skips the browser tests on a
developer's machine and fails them under ``CI=true``, like a missing Redis or Postgres
(``tests.support.servers.skip_or_fail``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tests.support.paths import REPO
from tests.support.servers import skip_or_fail

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, LocatorAssertions, Page

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "SCREENSHOTS", "chromium", "expect", "screenshot"]

#: Debian's chromium: the only browser the tests use (never a downloaded one).
CHROMIUM = Path("/usr/bin/chromium")

#: Root in CI, hence no sandbox; the rest keeps a headless run quiet and offline.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

#: Where the screenshot of each console page goes (a test artefact; var/ is git-ignored).
SCREENSHOTS = REPO / "var" / "screenshots"


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium, closed on exit; skipped (failed under CI) when unavailable."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as error:
        skip_or_fail(f"Playwright is not installed ({error}); pip install -e '.[dev]'")
        raise  # unreachable: skip_or_fail raises
    if not CHROMIUM.is_file():
        skip_or_fail(f"{CHROMIUM} is missing; install Debian's chromium package")
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS), headless=True
            )
        except Error as error:
            skip_or_fail(f"cannot start {CHROMIUM}: {error}")
            raise
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Page, name: str) -> Path:
    """Save the whole page as ``var/screenshots/<name>.png`` and return the path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def expect(locator: Locator) -> LocatorAssertions:
    """Playwright's ``expect``: assertions that wait (up to 5 s) for the page to get there,
    e.g. after a click whose form post and redirect are still loading."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)
