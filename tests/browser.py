"""Browser tests' tools: Debian's Chromium driven by Playwright (sync API), a user logged in to
Airflow's simple auth manager, and full-page screenshots of each step.

Playwright's own browser download does not work here: tests launch /usr/bin/chromium (or
$CAMPAIGN_TEST_CHROMIUM), which ``make test`` installs (apt-get) when missing. A missing Chromium
fails the tests with a clear message; nothing is skipped.

Screenshots go to tests/artifacts/screenshots/<test name>/NN-<name>.png (git-ignored); the
folder of a test is emptied at its first screenshot of a session, so what is there is one run's.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.stack import PROJECT

CHROMIUM = Path(os.environ.get("CAMPAIGN_TEST_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = PROJECT / "tests" / "artifacts" / "screenshots"
WAIT_MS = 30_000  # the default for every wait of a page; a wait that needs longer says so itself
VIEWPORT = {"width": 1440, "height": 1300}  # tall enough for a whole trigger form or approval form
expect.set_options(timeout=WAIT_MS)  # expect's own default is 5 s, not the context's


def require_chromium() -> None:
    """Fail (never skip) when Chromium is missing: `make test` installs it, so its absence is a broken set-up."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's Chromium "
            "(`make test` installs it with apt-get install chromium; Playwright's own browser download does not work here)",
            pytrace=False,
        )


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium, closed on exit (``--no-sandbox`` when root: Chromium's sandbox refuses root)."""
    require_chromium()
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            yield browser
        finally:
            browser.close()


def login(browser: Browser, url: str, user: str, password: str | None = None) -> Page:
    """A new browser context (its own cookies) with ``user`` logged in through the login page."""
    context: BrowserContext = browser.new_context(viewport=VIEWPORT, base_url=url)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto(f"{url}/auth/login")
    expect(page.get_by_text("Sign into Airflow"), "the simple auth manager's login page").to_be_visible()
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password or user)
    page.get_by_role("button", name="Sign in").click()
    expect(page, f"{user} to leave the login page for Airflow's UI after signing in").not_to_have_url(re.compile(r"/auth/login"))
    expect(page.get_by_role("link", name="Dags", exact=True), f"Airflow's navigation bar for {user}").to_be_visible()
    return page


def _test_name() -> str:
    current = os.environ.get("PYTEST_CURRENT_TEST", "no-test")  # "tests/test_x.py::test_y[p] (call)"
    return re.sub(r"[^\w.-]+", "_", current.split("::")[-1].split(" ")[0])


_counters: dict[str, int] = {}


def shot(page: Page, name: str) -> Path:
    """A full-page screenshot of ``page`` as tests/artifacts/screenshots/<test>/NN-<name>.png."""
    test = _test_name()
    folder = SCREENSHOTS / test
    if test not in _counters:
        shutil.rmtree(folder, ignore_errors=True)
        _counters[test] = 0
    _counters[test] += 1
    folder.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^\w.-]+", "-", name)
    path = folder / f"{_counters[test]:02d}-{slug}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page_as(browser: Browser) -> Iterator[Callable[[str, str], Page]]:
    """``page_as(url, user)``: a logged-in page; at the test's end each gets a last screenshot and is closed."""
    pages: list[tuple[str, Page]] = []

    def open_page(url: str, user: str) -> Page:
        page = login(browser, url, user)
        pages.append((user, page))
        return page

    yield open_page
    for user, page in pages:
        with contextlib.suppress(Exception):  # the page may be gone with the failure being reported
            shot(page, f"end-as-{user}")
        page.context.close()
