"""The headless browser the page tests drive: where Chromium is, how it is started, and how a
test waits for the page a click navigates to (a click returns before the next page is there)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

CHROMEDRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists()
                                                 else None)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MISSING = "Chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver)"


def headless_chrome(*extra_args: str) -> Any:
    """A headless Chromium under chromedriver; skips the test where either is missing."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(MISSING)
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extras")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", *extra_args):
        options.add_argument(arg)
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)


def present(driver: Any, by: str, value: str, timeout: float = 30) -> Any:
    """The element once the page that has it is there (a click's navigation may take a moment,
    through redirects or a validation, on a busy machine)."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(expected_conditions.presence_of_element_located((by, value)))
