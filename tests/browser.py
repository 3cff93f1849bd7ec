"""Open a page in headless Chromium (Debian's chromium and chromedriver, driven by Selenium) and read it back.

``scripts/test.sh`` installs the browser and sets ``HPC_HPO_TEST_BROWSER=1``, so that a
missing browser fails the browser tests instead of skipping them.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# As the machine's notes advise: a closed network makes Chromium's background connections fail loudly.
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,1800"]


@dataclass
class Page:
    title: str
    text: str
    images: list[dict]  # alt, complete, width, height (natural size), as the browser decoded them
    console: list[dict]  # the browser's console messages (level, message)


def need_browser() -> None:
    missing = [what for what, ok in (("chromium", Path(CHROMIUM).exists()), ("chromedriver", Path(CHROMEDRIVER).exists()))
               if not ok]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium")
    if missing:
        message = f"needs {', '.join(missing)} (scripts/test.sh installs them)"
        if os.environ.get("HPC_HPO_TEST_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)


def open_page(path: Path, user_data: Path) -> Page:
    need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={user_data}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.get(path.resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, "
            "width: i.naturalWidth, height: i.naturalHeight}))")
        text = driver.execute_script("return document.body.innerText")
        return Page(driver.title, text, images, driver.get_log("browser"))
    finally:
        driver.quit()
