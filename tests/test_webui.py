"""llama-server's web UI, offline, in a real browser: `serve --model smollm2`, then headless Chromium.

Chromium is driven through Selenium and Debian's chromedriver, which is packaged together with
Debian's chromium and therefore always matches it (the driver never has to be downloaded, which
this test must not do). ``.ci/run`` installs both; elsewhere the browser test says why it skips.
Set ``WEBUI_SCREENSHOT=path.png`` to keep a screenshot of the answered chat.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from helpers import llamacpp
from helpers.client import http_get, wait_until_ready
from helpers.process import free_port
from helpers.webui import ui_dir

pytestmark = [pytest.mark.llama, pytest.mark.usefixtures("no_orphans")]
QUESTION = "What is the capital of France? Answer in one sentence."
#: The UI keeps its settings in the browser; greedy decoding and a short reply make its answer repeatable.
UI_CONFIG = {"temperature": 0, "max_tokens": 64}


@pytest.fixture(scope="module")
def served(llama_bin):
    """`python -m helpers serve --model smollm2` in its own process group, as a learner starts it."""
    if not json.loads((llama_bin / "build.json").read_text()).get("web_ui"):
        pytest.fail(f"this llama.cpp build has no web UI (see {ui_dir().parent / 'build.log'})")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "helpers", "serve", "--model", "smollm2", "--port", str(port),
                             "--parallel", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, timeout_s=180, is_alive=lambda: proc.poll() is None)
        yield base, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        output = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, output
    assert "stopped." in output


def test_the_ui_and_the_api_answer(served):
    base, _ = served
    assert http_get(base + "/", headers={"Accept-Encoding": "gzip"})[0] == 200  # the UI's files are stored gzipped
    request = urllib.request.Request(base + "/v1/chat/completions", method="POST",
                                     headers={"Content-Type": "application/json"},
                                     data=json.dumps({"messages": [{"role": "user", "content": QUESTION}],
                                                      "max_tokens": 24, "temperature": 0}).encode())
    with urllib.request.urlopen(request, timeout=60) as resp:
        answer = json.loads(resp.read())
    assert answer["choices"][0]["message"]["content"].strip()


@pytest.fixture(scope="module")
def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("no headless browser here: Debian's chromium and chromium-driver are not installed "
                    "(apt-get install chromium chromium-driver; .ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:
        yield session
    finally:
        session.quit()


def test_a_question_typed_in_the_ui_gets_a_streamed_answer(served, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    base, _ = served
    browser.get(base + "/")
    browser.execute_script("localStorage.setItem('LlamaUi.config', arguments[0])", json.dumps(UI_CONFIG))
    browser.refresh()
    wait = WebDriverWait(browser, 60, poll_frequency=0.05)
    box = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "textarea")))  # "Type a message..."
    box.click()
    box.send_keys(QUESTION)
    box.send_keys(Keys.ENTER)
    answers = (By.CSS_SELECTOR, '[aria-label="Assistant message with actions"]')
    state = {"text": "", "since": time.monotonic(), "seen": 0}

    def answered(driver) -> bool:  # noqa: ANN001 - a selenium driver
        """An answer that has stopped growing for 1.5 s: it streamed in, then the stream ended."""
        found = driver.find_elements(*answers)
        text = found[-1].text.strip() if found else ""
        if text != state["text"]:
            state.update(text=text, since=time.monotonic(), seen=state["seen"] + 1)
            return False
        return bool(text) and time.monotonic() - state["since"] > 1.5

    wait.until(answered)
    assert QUESTION in browser.find_element(By.TAG_NAME, "body").text  # the question is on the page
    assert "Paris" in state["text"], state  # SmolLM2's greedy answer, as the API gives it too
    if os.environ.get("WEBUI_SCREENSHOT"):
        browser.save_screenshot(os.environ["WEBUI_SCREENSHOT"])


def test_the_build_embeds_the_ui_built_from_the_pinned_source(llama_bin):
    assert (ui_dir() / "index.html").exists()
    assert (llamacpp.fetch_source() / "tools" / "ui" / "dist" / "index.html").exists()
