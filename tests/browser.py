"""A real headless browser (Chromium) for the report's page: load it, let its own check run, screenshot it."""

import re
import shutil
import subprocess

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def available():
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def find_browser():
    path = available()
    if path:
        return path
    pytest.skip(
        f"no headless browser ({', '.join(BROWSERS)}); `apt-get install chromium` (.ci/run does as root)"
    )


def _run(browser, *args, timeout=120):
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--virtual-time-budget=10000", *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def load(page, screenshot=None):
    """The page's DOM after load: (data-check, data-images, problems listed by the page, DOM text)."""
    browser = find_browser()
    done = _run(browser, "--dump-dom", page.resolve().as_uri())
    assert done.returncode == 0, f"{browser} failed on {page}: {done.stderr[-2000:]}"
    dom = done.stdout
    check = re.search(r'<html[^>]*data-check="(\w+)"', dom)
    images = re.search(r'<html[^>]*data-images="(\d+)"', dom)
    problems = re.findall(r"<li>([^<]*)</li>", dom.split('id="page-problems"', 1)[-1])
    if screenshot is not None:
        shot = _run(browser, f"--screenshot={screenshot}", "--window-size=1400,3000", page.resolve().as_uri())
        assert shot.returncode == 0 and screenshot.is_file(), f"no screenshot: {shot.stderr[-2000:]}"
    return (check.group(1) if check else None), (int(images.group(1)) if images else 0), problems, dom
