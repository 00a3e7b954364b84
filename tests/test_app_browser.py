"""The Streamlit app in a real browser: `workbench app` on a free localhost port, every page loaded in headless
Debian chromium (through chromedriver and selenium), checked for Streamlit's exception box, for the Maze lab's
vector-field image, for requests that leave localhost (the app must work offline: no CDN), and screenshotted.

Why a browser as well as AppTest (tests/test_app.py): AppTest runs the page scripts, but only a browser shows that
the server starts from the CLI, that the front end renders what the scripts send (images, tables, the page
navigation) and that nothing is fetched from the internet.

Screenshots (full page, 1280 px wide) go to this module's pytest tmp folder; with `WORKBENCH_SCREENSHOTS=DIR` they
are also written to DIR, palette-quantised to stay small (the README's docs/screenshots/ come from this):

    WORKBENCH_SCREENSHOTS=docs/screenshots .venv/bin/python -m pytest -q tests/test_app_browser.py

Chromium is not a Python package: `make test` installs Debian's `chromium` and `chromium-driver` with apt-get when
they are missing. Without them this test fails (it does not skip) and says so.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from workbench import artifacts
from workbench.store import default_store_path

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
VIEWPORT = (1280, 900)
MAX_PAGE_HEIGHT = 4000  # px; a full-page screenshot is cut here
SERVER_START_S, PAGE_READY_S = 90.0, 120.0  # generous upper bounds; every wait returns as soon as it is satisfied
SCREENSHOTS_ENV = "WORKBENCH_SCREENSHOTS"
# Flags that keep headless chromium quiet and local: no sandbox (root in CI), no GPU, and no background fetches
# (without these it tries Google services and logs refused connections).
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
)


@dataclass(frozen=True)
class Page:
    path: str  # URL path: Streamlit names a page after its file, without the number prefix
    title: str  # the page's st.title
    shot: str  # screenshot file name


PAGES = [
    Page("", "goal-workbench", "01_home.png"),
    Page("Organisms", "Organisms", "02_organisms.png"),
    Page("Maze_lab", "Maze lab", "03_maze_lab.png"),
    Page("CoinRun_lab", "CoinRun lab", "04_coinrun_lab.png"),
    Page("Probes_and_batteries", "Probes & batteries", "05_probes_and_batteries.png"),
    Page("Features", "Features", "06_features.png"),
    Page("Personas", "Personas", "07_personas.png"),
]


# ------------------------------------------------------------------------------------------------------ the server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def maze_agents(root: Path) -> list[str]:
    """Maze organisms under `root/agents`, in the order the Maze lab offers them (its default is the first)."""
    folder = root / "agents"
    if not folder.is_dir():
        return []
    found = [p for p in sorted(folder.iterdir()) if (p / artifacts.CONFIG).is_file()]
    return [p.name for p in found if artifacts.read_config(p).get("env", {}).get("kind") == "maze"]


def make_tiny_persona_lm(folder: Path) -> Path:
    """A tiny LM trained for 3 steps on the persona corpus (tests/test_lm_core.py's recipe), as an LM artifact."""
    from tests.test_lm_core import TINY_RECIPE
    from workbench.lm.train import train_recipe

    recipe = folder.parent / "tiny-lm.toml"
    folder.parent.mkdir(parents=True, exist_ok=True)
    recipe.write_text(TINY_RECIPE)
    return train_recipe(recipe, out=folder, progress=False)


def persona_lm(root: Path) -> bool:
    """Whether `root` holds a persona LM with weights (then the Personas page draws its playground)."""
    return (root / "lms" / "persona-lm" / artifacts.WEIGHTS).is_file()


@dataclass
class Server:
    url: str
    port: int
    artifacts_root: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`workbench app --port P` in its own process group, with a test-only results store; always killed."""
    tmp = tmp_path_factory.mktemp("app_server")
    env = dict(os.environ)
    store = tmp / "results.duckdb"
    if default_store_path().is_file():  # a copy, so the Probes page shows real rows and the user's store is untouched
        shutil.copy(default_store_path(), store)
    env["WORKBENCH_STORE"] = str(store)
    env.setdefault("WORKBENCH_APP_PROBE_EPISODES", "20")  # the probe heatmap is fitted on this many mazes
    env["HF_HUB_OFFLINE"] = "1"
    root = artifacts.artifacts_root()
    if not maze_agents(root):  # a checkout without the shipped organisms: a tiny random maze agent stands in
        from tests.conftest import make_tiny_agent

        root = tmp / "artifacts"
        make_tiny_agent(root / "agents" / "tiny-maze")
        make_tiny_persona_lm(root / "lms" / "persona-lm")  # so the Personas playground is drawn and checked
        env["WORKBENCH_ARTIFACTS"] = str(root)
    port = free_port()
    exe = Path(sys.executable).with_name("workbench")
    cmd = [str(exe) if exe.is_file() else "workbench", "app", "--port", str(port)]
    log = (tmp / "server.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://localhost:{port}"
    try:
        wait_for(lambda: healthy(url) or proc.poll() is not None, SERVER_START_S, "the app server to answer")
        if proc.poll() is not None:
            pytest.fail(f"`workbench app` exited with {proc.returncode}:\n{(tmp / 'server.log').read_text()[-3000:]}")
        yield Server(url=url, port=port, artifacts_root=root)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the CLI starts streamlit as a child: end the whole group
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.read().strip() == b"ok"
    except OSError:
        return False


def wait_for(condition: Callable[[], object], timeout: float, what: str, every: float = 0.25) -> object:
    """Poll `condition` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


# ------------------------------------------------------------------------------------------------------ the browser
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: the browser test needs Debian's chromium and chromium-driver. "
            "Run `make test` (it installs them with apt-get), or `apt-get install chromium chromium-driver`."
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: run `make test` (it installs the dev extra, which includes it)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="workbench-chromium-")
    for flag in (*CHROME_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path | None]:
    """(this module's screenshot folder under pytest's tmp, the `WORKBENCH_SCREENSHOTS` folder or None)."""
    extra = os.environ.get(SCREENSHOTS_ENV)
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
    return tmp_path_factory.mktemp("screenshots"), Path(extra) if extra else None


def by_testid(driver, testid: str, css: str = "") -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, f'[data-testid="{testid}"]{css}')


def finished(driver, title: str) -> bool:
    """The page's script has run to its end and its output is drawn: Streamlit marks its root with the script state
    (`data-test-script-state`, what Streamlit's own browser tests wait on), the title is shown, no spinner is left
    and every image in the main area has loaded."""
    from selenium.webdriver.common.by import By

    idle = by_testid(driver, "stApp", '[data-test-script-state="notRunning"][data-test-connection-state="CONNECTED"]')
    titles = [h.text.strip() for h in driver.find_elements(By.TAG_NAME, "h1")]
    images = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMain"] img')
    drawn = all(driver.execute_script("return arguments[0].complete", img) for img in images)
    return bool(idle) and title in titles and not by_testid(driver, "stSpinner") and drawn


def wait_ready(driver, title: str, extra: Callable[[], bool] = lambda: True) -> None:
    """Wait until the page is finished (and `extra` holds) on two polls in a row, so a rerun starting is seen. An
    element replaced by a rerun while it is read (selenium's StaleElementReferenceException) counts as not ready."""
    from selenium.common.exceptions import StaleElementReferenceException

    streak = [0]

    def settled() -> bool:
        try:
            ready = finished(driver, title) and extra()
        except StaleElementReferenceException:
            ready = False
        streak[0] = streak[0] + 1 if ready else 0
        return streak[0] >= 2

    wait_for(settled, PAGE_READY_S, f"page {title!r} to finish running")


def loaded_images(driver) -> list:
    """Images in the main area (st.image / st.pyplot) that have finished loading."""
    images = driver.find_elements("css selector", '[data-testid="stMain"] [data-testid="stImage"] img')
    return [
        img for img in images if driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
    ]


def attention_view(driver) -> str:
    """The text of the circuitsvis view rendered inside the Personas page's iframe ("" until it is drawn).

    The iframe's document (srcdoc) is entered with selenium's `switch_to.frame`; the view counts as rendered once
    circuitsvis's root `div#circuits-vis-*` holds an element that is not its script and at least one canvas (the
    head patterns). Always switches back to the page."""
    frames = driver.find_elements("css selector", '[data-testid="stMain"] iframe')
    for frame in frames:
        driver.switch_to.frame(frame)
        try:
            text = driver.execute_script(
                "const r = document.querySelector('[id^=\"circuits-vis-\"]');"
                "if (!r) return '';"
                "const drawn = Array.from(r.children).some(c => c.tagName !== 'SCRIPT');"
                "return drawn && r.querySelector('canvas') ? r.innerText : '';"
            )
        finally:
            driver.switch_to.default_content()
        if text:
            return text
    return ""


def charts_drawn(driver) -> bool:
    """Every Vega-Lite chart in the main area (st.bar_chart) has drawn its canvas or svg."""
    charts = by_testid(driver, "stVegaLiteChart")
    return all(c.find_elements("css selector", "canvas, svg") for c in charts)


def external_requests(driver, port: int) -> list[str]:
    """Resources the page fetched from anywhere but this app server (an offline app fetches none)."""
    names = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    local = (f"http://localhost:{port}", f"ws://localhost:{port}", "data:", "blob:")
    return [n for n in names if not n.startswith(local)]


def screenshot(driver, name: str, shots: tuple[Path, Path | None]) -> Path:
    """A full-page screenshot: the viewport grows to the page's scroll height for the shot, then shrinks back.

    Streamlit scrolls its main area and sidebar inside their own containers, so the document itself never gets
    taller than the window; the viewport is resized through the DevTools protocol instead."""
    height = driver.execute_script(
        "const m = document.querySelector('[data-testid=\"stMain\"]');"
        "const s = document.querySelector('[data-testid=\"stSidebarContent\"]');"
        "return Math.max(m ? m.scrollHeight : 0, s ? s.scrollHeight : 0);"
    )
    metrics = {"width": VIEWPORT[0], "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {**metrics, "height": min(max(int(height), VIEWPORT[1]), MAX_PAGE_HEIGHT)}
    )
    try:
        time.sleep(0.5)  # let the layout settle at the new size
        png = driver.get_screenshot_as_png()
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    folder, extra = shots
    path = folder / name
    path.write_bytes(png)
    if extra is not None:
        from PIL import Image

        image = Image.open(io.BytesIO(png)).convert("RGB")
        image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(extra / name, optimize=True)
    return path


# ------------------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("page", PAGES, ids=[p.shot.removesuffix(".png") for p in PAGES])
def test_page_renders_without_exception(server: Server, browser, shots, page: Page) -> None:
    browser.get(f"{server.url}/{page.path}")
    playground = page.path == "Personas" and persona_lm(server.artifacts_root)
    if page.path == "Maze_lab":
        wait_ready(browser, page.title, extra=lambda: bool(loaded_images(browser)))
    elif playground:
        wait_ready(browser, page.title, extra=lambda: bool(attention_view(browser)) and charts_drawn(browser))
    else:
        wait_ready(browser, page.title)
    errors = [e.text for e in by_testid(browser, "stException")]
    assert not errors, f"{page.title}: Streamlit exception on the page:\n" + "\n".join(errors)
    assert not external_requests(browser, server.port), "the app fetched resources from outside localhost"
    if page.path == "Maze_lab":
        image = loaded_images(browser)[0]  # the first figure on the page is the vector field
        assert image.size["width"] >= 200 and image.size["height"] >= 200
        assert any("Decision square" in m.text for m in by_testid(browser, "stMetric"))
    if page.path == "Personas":
        if playground:  # the attention view is drawn offline, inside its iframe; the answers and chart are shown
            assert "Head Selector" in attention_view(browser) and "H0" in attention_view(browser)
            assert any("No steering" in m.text for m in by_testid(browser, "stMetric"))
            assert by_testid(browser, "stVegaLiteChart")
        else:
            assert any("persona-lm" in w.text for w in by_testid(browser, "stAlert"))
    path = screenshot(browser, page.shot, shots)
    assert path.stat().st_size > 10_000  # a blank page compresses to far less


def test_maze_lab_cheese_move_redraws_the_vector_field(server: Server, browser) -> None:
    """Typing a new cheese row into the sidebar reruns the page and replaces the vector-field image."""
    from selenium.webdriver.common.keys import Keys

    from workbench.rl.agent import load_agent

    name = maze_agents(server.artifacts_root)[0]  # the Maze lab's default organism, maze seed 0, ood split
    level = load_agent(server.artifacts_root / "agents" / name).world.levels("ood", 1, 0)  # as the page draws it
    cheese, mouse = tuple(int(v) for v in level.cheese[0]), tuple(int(v) for v in level.mouse[0])
    free = [tuple(int(v) for v in c) for c in level.free_cells(0) if tuple(int(v) for v in c) not in (cheese, mouse)]
    # Move the cheese along its column (or, failing that, its row), so one input changes.
    moves = [("Cheese row", c[0]) for c in free if c[1] == cheese[1]] + [
        ("Cheese col", c[1]) for c in free if c[0] == cheese[0]
    ]
    assert moves, "maze 0 has no free cell in the cheese's row or column"
    label, value = moves[0]

    browser.get(f"{server.url}/Maze_lab")
    wait_ready(browser, "Maze lab", extra=lambda: bool(loaded_images(browser)))
    before = loaded_images(browser)[0].get_attribute("src")
    (field,) = browser.find_elements("css selector", f'input[aria-label="{label}"]')
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(str(value), Keys.ENTER)

    def redrawn() -> bool:
        images = loaded_images(browser)
        return bool(images) and images[0].get_attribute("src") != before

    wait_ready(browser, "Maze lab", extra=redrawn)
    assert not by_testid(browser, "stException")
    (field,) = browser.find_elements("css selector", f'input[aria-label="{label}"]')
    assert field.get_attribute("value") == str(value)


def test_maze_lab_draws_a_typed_checkpoint(server: Server, browser, tmp_path: Path) -> None:
    """A published-format checkpoint typed into the Maze lab's sidebar (env procgen-maze, the default for this page)
    replaces the organism: procgen's maze is drawn with the policy's vector field, and no exception appears."""
    from selenium.webdriver.common.keys import Keys

    from workbench.rl.policies import ImpalaPolicy
    from workbench.rl.published import published_config, save_published

    checkpoint = save_published(ImpalaPolicy(published_config()), tmp_path / "model.pth")
    browser.get(f"{server.url}/Maze_lab")
    wait_ready(browser, "Maze lab", extra=lambda: bool(loaded_images(browser)))
    before = loaded_images(browser)[0].get_attribute("src")
    (field,) = browser.find_elements("css selector", 'input[aria-label="Checkpoint path (or subject reference)"]')
    field.send_keys(str(checkpoint), Keys.ENTER)

    def redrawn() -> bool:
        images = loaded_images(browser)
        return bool(images) and images[0].get_attribute("src") != before

    wait_ready(browser, "Maze lab", extra=redrawn)
    assert not by_testid(browser, "stException")
    assert any("Decision square" in m.text for m in by_testid(browser, "stMetric"))
    assert "the world is 25x25" in browser.find_element("tag name", "body").text  # procgen's world, not 15x15
