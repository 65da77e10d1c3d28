"""The status page in a real browser (headless Chromium via chromedriver) against a running aiosd and fake kernel."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.aiosd_harness import free_port, merge_yaml
from tests.support.daemon_process import close_daemon, daemon_config, start_daemon, write_by_rename
from tests.support.fake_kernel import FakeKernel, LLMFailure, ServerError

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
RETRIES = 'retry: {max_retries: 2, on_status: [429], backoff: {initial: "10ms", max: "10ms", jitter: 0.0}}'


@pytest.fixture
def kernel():
    with FakeKernel(record=False) as fake:
        yield fake


@pytest.fixture
def daemon(tmp_path, kernel):
    port = free_port()
    running = start_daemon(tmp_path, merge_yaml(daemon_config(kernel.url, port), RETRIES), port)
    yield running
    close_daemon(running)


@pytest.fixture
def browser(tmp_path):
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: apt-get install chromium chromium-driver (.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--window-size=1400,2200", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def post(daemon, content: str, model: str = "sonnet") -> httpx.Response:
    return httpx.post(daemon.url + "/v1/chat/completions", timeout=10,
                      json={"model": model, "messages": [{"role": "user", "content": content}]})


def wait_until(browser, condition, what: str, timeout: float = 20.0):
    try:
        return WebDriverWait(browser, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
                             ).until(lambda d: condition(d))
    except TimeoutException:
        shown = browser.find_element(By.TAG_NAME, "body").text
        raise AssertionError(f"the page never showed {what}; it shows:\n{shown}") from None


def text_of(browser, element_id: str) -> str:
    return browser.find_element(By.ID, element_id).text


def test_the_page_shows_the_kernel_requests_a_chart_and_a_refused_edit(tmp_path, daemon, kernel, browser):
    kernel.script(ServerError())
    failed = post(daemon, "this one fails")
    kernel.script(LLMFailure(429), "after one retry")
    retried = post(daemon, "this one is retried")
    answered = [post(daemon, f"plain {i}") for i in range(3)]
    assert (failed.status_code, retried.status_code) == (502, 200)
    assert retried.headers["x-aiosd-attempts"] == "2" and all(r.status_code == 200 for r in answered)
    failed_id, retried_id = failed.headers["x-request-id"], retried.headers["x-request-id"]

    browser.get(daemon.url + "/")  # redirects to /ui/
    assert browser.current_url == daemon.url + "/ui/"

    # The kernel: its URL, up (it answered since the failure), its slots.
    address = kernel.url.removeprefix("http://")  # the kernel's name holds its host and port
    wait_until(browser, lambda d: address in text_of(d, "kernels") and "up" in text_of(d, "kernels"), "the kernel up")

    # The failed request's row: its id, 502, the outcome; the retried one with its 2 attempts.
    def cells_of(request_id: str):
        # Read in one go inside the page: a poll may redraw the table between two WebDriver calls.
        return browser.execute_script(
            "for (const tr of document.querySelectorAll('#requests tbody tr')) {"
            "  const cells = [...tr.cells].map((td) => td.textContent);"
            "  if (cells[1] === arguments[0]) return {cells, failed: tr.classList.contains('failed')};"
            "} return null;", request_id)

    failed_row = wait_until(browser, lambda d: cells_of(failed_id), "the failed request's row")
    cells = failed_row["cells"]
    assert cells[1] == failed_id and cells[3] == "sonnet" and cells[4] == "kernel_error" and cells[5] == "502"
    assert failed_row["failed"]
    assert cells_of(retried_id)["cells"][4:7] == ["ok", "200", "2"]

    # A chart with something in it: the request rate's line rises above zero.
    wait_until(browser,
               lambda d: float(d.find_element(By.CSS_SELECTOR, "#chart-rate svg").get_attribute("data-max")) > 0,
               "a non-empty request-rate chart")
    assert browser.find_elements(By.CSS_SELECTOR, "#chart-latency svg path.series.kernel")

    # A click on the failed row opens its log lines, found by its request id.
    def click_row(d) -> bool:
        for row in d.find_elements(By.CSS_SELECTOR, "#requests tbody tr"):
            if failed_id in row.text:
                row.click()
                return True
        return False

    wait_until(browser, click_row, "a failed row to click")
    wait_until(browser, lambda d: "502" in text_of(d, "log-lines") and failed_id in text_of(d, "log-lines"),
               "the failed request's log lines")

    # An invalid edit, applied through the daemon's real config watch: the page shows it refused.
    write_by_rename(daemon.config_path, merge_yaml(daemon.config_path.read_text(), "kernel: {max_concurrency: zero}"))
    wait_until(browser, lambda d: d.find_element(By.ID, "refused").is_displayed(), "the refused edit", timeout=30)
    assert "kernel.max_concurrency" in text_of(browser, "refused-problems")
    assert "REFUSED" in text_of(browser, "config")

    screenshot = Path(tmp_path) / "status-page.png"
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000

    # Nothing the page did was blocked by its own Content-Security-Policy, and no script failed.
    errors = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []


def test_with_auth_keys_the_page_asks_for_a_key_once(tmp_path, kernel, browser):
    key = "sk-browser-test-key-0123456789abcdef"
    port = free_port()
    config = merge_yaml(daemon_config(kernel.url, port), f'auth: {{keys: ["{key}"]}}')
    running = start_daemon(tmp_path, config, port)
    try:
        browser.get(running.url + "/ui/")
        wait_until(browser, lambda d: d.find_element(By.ID, "key-form").is_displayed(), "the key form")
        assert not browser.find_element(By.ID, "main").is_displayed()
        browser.find_element(By.ID, "key-input").send_keys("wrong-key")
        browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
        wait_until(browser, lambda d: "refused" in text_of(d, "key-error"), "the wrong key refused")
        # Waiting for a key, not for aiosd: no "connecting…" beside "key needed".
        assert text_of(browser, "connection") == "key needed" and text_of(browser, "summary") == ""
        browser.find_element(By.ID, "key-input").send_keys(key)
        browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
        address = kernel.url.removeprefix("http://")
        wait_until(browser, lambda d: d.find_element(By.ID, "main").is_displayed() and address in text_of(d, "kernels"),
                   "the status after the key")
        assert browser.execute_script("return sessionStorage.getItem('aiosd-key')") == key
        browser.refresh()  # kept for the browser session: not asked again
        wait_until(browser, lambda d: d.find_element(By.ID, "main").is_displayed(), "the status after a reload")
        assert not browser.find_element(By.ID, "key-form").is_displayed()
        assert key not in browser.page_source
    finally:
        close_daemon(running)


def test_on_a_phone_nothing_overflows_sideways_and_an_ejected_kernels_slots_are_out(tmp_path, kernel, browser):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused, a long "why"
    pool = (f'kernels:\n  - {{url: "{dead}", name: dead, max_concurrency: 2}}\n'
            f'  - {{url: "{kernel.url}", name: live, max_concurrency: 2}}\n'
            'health: {consecutive_failures: 1, base_ejection: 60s, max_ejection: 60s}\n')
    port = free_port()
    running = start_daemon(tmp_path, merge_yaml(daemon_config(kernel.url, port), pool), port)
    try:
        assert post(running, "fails over from dead to live").status_code == 200
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                {"width": 390, "height": 844, "deviceScaleFactor": 3, "mobile": True})
        browser.get(running.url + "/ui/")
        wait_until(browser, lambda d: "ejected" in text_of(d, "kernels") and "connection refused"
                   in text_of(d, "kernels"), "the dead kernel ejected, and why")
        # Capacity: only the live kernel's 2 slots count; the dead one's are out, with the reason.
        wait_until(browser, lambda d: "of 2 slots in use; 2 slots out: dead (2 slots): ejected, connection refused"
                   in text_of(d, "queue-summary"), "the slots out")
        wait_until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-rate svg"), "the charts")
        layout = browser.execute_script(
            "const width = window.innerWidth;"
            "const right = (sel) => Math.max(...[...document.querySelectorAll(sel)]"
            "  .map((e) => e.getBoundingClientRect().right));"
            "return {width, page: document.documentElement.scrollWidth, why: right('#kernels td.reason'),"
            "        charts: right('.chart svg'), sections: right('section')};")
        assert layout["width"] == 390
        assert layout["page"] <= layout["width"], layout  # no sideways scrolling of the page
        assert max(layout["why"], layout["charts"], layout["sections"]) <= layout["width"], layout
        screenshot = Path(tmp_path) / "phone.png"  # kept in pytest's temp directory for a look
        assert browser.save_screenshot(str(screenshot))
    finally:
        close_daemon(running)


def test_charts_span_the_time_aiosd_has_run_and_requests_are_listed_by_when_they_finished(daemon, kernel, browser):
    import threading
    import time

    from tests.support.fake_kernel import Hang

    hang = Hang()
    kernel.script(hang)
    slow: list[httpx.Response] = []
    started = threading.Thread(target=lambda: slow.append(post(daemon, "slow")))
    started.start()
    kernel.wait_for_in_flight(1)
    second = int(time.time())
    while int(time.time()) == second:  # the next request starts in a later second than the slow one
        time.sleep(0.02)
    fast = post(daemon, "fast")
    hang.release()
    started.join(10)
    assert fast.status_code == 200 and slow[0].status_code == 200

    browser.get(daemon.url + "/ui/")
    wait_until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#requests tbody tr:not(.empty)")) >= 2,
               "both requests")
    header = browser.find_element(By.CSS_SELECTOR, "#requests thead th").text
    rows = browser.execute_script(
        "return [...document.querySelectorAll('#requests tbody tr')]"
        "  .map((tr) => [...tr.cells].map((td) => td.textContent));")
    assert header == "finished"
    # Newest first by when each finished: the slow one (started first, finished last) on top, and the times
    # shown go down the list, never up.
    assert rows[0][1] == slow[0].headers["x-request-id"] and rows[1][1] == fast.headers["x-request-id"]
    assert rows[0][0] >= rows[1][0]

    # A daemon up for seconds: the charts span its first minute, not 15 minutes with the data squeezed at "now".
    span = browser.find_element(By.CSS_SELECTOR, "#chart-rate svg").get_attribute("data-span")
    start = browser.find_element(By.CSS_SELECTOR, "#chart-rate svg text[data-axis=start]").text
    assert (span, start) == ("60", "−1 min")
    assert text_of(browser, "chart-span") == "Since aiosd started (1 min)"
