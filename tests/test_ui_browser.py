"""The registry web page in a real browser: Debian's chromium driven by selenium, against
a ``--auth on`` server on both configurations (tests/ui_helpers.py seeds it).

Each step is checked against the registry itself (opened in-process on the same store),
and each page is saved as a screenshot under ``test-artifacts/ui/<configuration>/`` for
review (the directory is ignored by git; CI keeps it as an artifact).
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from artfs.server.ui import views

from .backends import backend_params
from .ui_helpers import UiRegistry, ui_registry

pytest.importorskip("selenium")
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "ui"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="needs Debian's chromium and chromium-driver (scripts/setup.sh installs them)",
)


@pytest.fixture(scope="module", params=backend_params())
def ui(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[UiRegistry]:
    yield from ui_registry(request.param, tmp_path_factory.mktemp("uib"), "--auth", "on")


@pytest.fixture
def browser(ui: UiRegistry) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    assert CHROMIUM is not None and DRIVER is not None
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: WebDriver, ui: UiRegistry, name: str) -> None:
    """The whole page, beyond the window (Chrome DevTools' captureBeyondViewport)."""
    where = SHOTS / ui.spec.backend.replace("+", "-")
    where.mkdir(parents=True, exist_ok=True)
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 4000), "scale": 1}
    png = driver.execute_cdp_cmd(  # type: ignore[attr-defined]
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )["data"]
    (where / f"{name}.png").write_bytes(base64.b64decode(png))


def login(driver: WebDriver, token: str) -> None:
    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.ID, "login").click()


def signed_in(driver: WebDriver) -> None:
    """Wait for a page that shows the session (its log-out form).

    The login form answers at the address asked for, so the address alone cannot tell
    the form from the page after it: a test that went on at once could navigate before
    the session cookie was set (CI saw the next page answer with the login form).
    """
    script = "return !!document.querySelector('form.logout') && !document.getElementById('token')"
    WebDriverWait(driver, 15).until(lambda d: d.execute_script(script))


def wait_url(driver: WebDriver, ending: str) -> None:
    """Wait for a click's navigation to land (a click returns before the next page loads)."""
    WebDriverWait(driver, 15).until(lambda d: d.current_url.endswith(ending))


def texts(driver: WebDriver, css: str) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)]


def test_click_from_the_project_list_to_a_lineage_graph(ui: UiRegistry, browser: WebDriver) -> None:
    reg = ui.open()
    try:
        d = browser
        d.get(f"{ui.url}/ui/")
        assert d.find_element(By.ID, "token").get_attribute("type") == "password"
        shot(d, ui, "01-login")
        login(d, ui.reader)
        signed_in(d)
        wait_url(d, "/ui/")
        # Projects: what the reader may read, and nothing else.
        readable = [p.name for p in reg.list_projects() if p.name == "vision"]
        assert texts(d, "#projects a.project") == readable
        shot(d, ui, "02-projects")
        d.find_element(By.LINK_TEXT, "vision").click()
        wait_url(d, "/ui/p/vision")
        # Artifacts with their types and latest versions.
        arts = {a.name: a for a in reg.list_artifacts("vision")}
        table = d.find_element(By.ID, "artifacts")
        for row in table.find_elements(By.CSS_SELECTOR, "tbody tr"):
            name, kind, latest = (c.text for c in row.find_elements(By.TAG_NAME, "td")[:3])
            assert kind == arts[name].type
            assert latest == f"v{max(v.number for v in arts[name].versions)}"
        assert sorted(texts(d, "#artifacts a.artifact")) == sorted(arts)
        shot(d, ui, "03-artifacts")
        d.find_element(By.CSS_SELECTOR, "a.artifact[href$='/vision/data']").click()
        wait_url(d, "/ui/p/vision/data")
        # Versions: aliases, sizes, files, creator, metadata.
        art = reg.get_artifact("vision", "data")
        assert texts(d, "#versions a.version") == [f"v{n}" for n in (1, 0)]
        row = d.find_element(By.CSS_SELECTOR, "#versions tr[data-version='1']")
        info = reg.get_version("vision", "data", "v1")
        assert texts(d, "#versions tr[data-version='1'] .alias") == sorted(
            a for a, n in art.aliases.items() if n == 1
        )
        cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
        assert cells[5:9] == [
            views.human_size(info.total_size),
            str(info.file_count),
            info.creator,
            views.iso(info.created),
        ]
        shot(d, ui, "04-versions")
        d.find_element(By.LINK_TEXT, "v1").click()
        wait_url(d, "/ui/p/vision/data/v1")
        # The version: its files with sizes and digests, the command lines.
        assert d.find_element(By.ID, "ref").text.startswith("vision/data:v1")
        manifest = reg.get_manifest("vision", "data", 1)
        shown = {
            r.find_element(By.CSS_SELECTOR, "a.file").text: r.find_element(
                By.CSS_SELECTOR, "code.sha"
            ).text
            for r in d.find_elements(By.CSS_SELECTOR, "#files tr.file")
        }
        assert shown == {p: e.sha256 for p, e in manifest.items()}
        commands = d.find_element(By.ID, "commands").text
        assert "artfs get vision/data:v1" in commands and ".version('vision/data:v1')" in commands
        shot(d, ui, "05-version")
        # On to the model made from it, and its lineage graph.
        d.get(f"{ui.url}/ui/p/vision/model/v0")
        d.find_element(By.ID, "lineage-link").click()
        wait_url(d, "/ui/p/vision/model/v0/lineage")
        graph = reg.lineage("vision", "model", 0, up=3, down=3, can_read=lambda p: p == "vision")
        drawn = d.find_elements(By.CSS_SELECTOR, "#graph svg g.node")
        assert sorted(g.get_attribute("data-id") or "" for g in drawn) == sorted(
            n.id for n in graph.nodes
        )
        labels = sorted(g.text for g in drawn)
        assert labels == sorted(n.label for n in graph.nodes)
        assert "(hidden)" in labels and not any("nlp" in x for x in labels)
        assert len(d.find_elements(By.CSS_SELECTOR, "#graph svg path.edge")) == len(graph.edges)
        root = d.find_element(By.CSS_SELECTOR, "#graph svg g.node.root")
        assert root.get_attribute("data-id") == "vision/model:v0"
        # inputs are drawn left of the version, consumers right of it
        x = {g.get_attribute("data-id"): g.rect["x"] for g in drawn}
        assert x["vision/data:v1"] < x["vision/model:v0"] < x["vision/eval:v0"]
        shot(d, ui, "06-lineage")
        # Nodes are links: on to the input's page.
        d.find_element(By.CSS_SELECTOR, "#graph svg g.node[data-id='vision/data:v1']").click()
        wait_url(d, "/ui/p/vision/data/v1")
        assert d.find_element(By.ID, "ref").text.startswith("vision/data:v1")
    finally:
        reg.close()


def test_token_prompt_returns_to_the_page_asked(ui: UiRegistry, browser: WebDriver) -> None:
    d = browser
    d.get(f"{ui.url}/ui/p/vision/many?page=2")
    login(d, "artfs_not-a-real-token")
    assert "unknown token" in d.find_element(By.ID, "login-error").text
    login(d, ui.reader)
    signed_in(d)
    wait_url(d, "/ui/p/vision/many?page=2")
    assert "page 2 of 3" in d.find_element(By.CSS_SELECTOR, ".pager").text
    # The session keeps the token: other pages need no prompt; nlp stays out of reach.
    d.get(f"{ui.url}/ui/p/nlp/corpus")
    assert "no read right on project 'nlp'" in d.find_element(By.ID, "error").text
    shot(d, ui, "07-forbidden")
    d.find_element(By.CSS_SELECTOR, "form.logout button").click()
    wait_url(d, "/ui/login")
    d.get(f"{ui.url}/ui/p/vision")
    assert d.find_elements(By.ID, "token")


def test_compare_two_versions(ui: UiRegistry, browser: WebDriver) -> None:
    reg = ui.open()
    try:
        d = browser
        d.get(f"{ui.url}/ui/")
        login(d, ui.reader)
        signed_in(d)
        wait_url(d, "/ui/")
        d.get(f"{ui.url}/ui/p/vision/data")
        d.find_element(By.CSS_SELECTOR, "input[name='a'][value='0']").click()
        d.find_element(By.CSS_SELECTOR, "input[name='b'][value='1']").click()
        d.find_element(By.ID, "compare").click()
        WebDriverWait(d, 15).until(lambda d: "/compare?" in d.current_url)
        url = urlsplit(d.current_url)
        assert url.path == "/ui/p/vision/data/compare"
        assert parse_qs(url.query) == {"a": ["0"], "b": ["1"]}
        a = reg.get_manifest("vision", "data", 0)
        b = reg.get_manifest("vision", "data", 1)
        changed = sorted(p for p in a if p in b and a[p].sha256 != b[p].sha256)
        added, removed = sorted(set(b) - set(a)), sorted(set(a) - set(b))
        summary = d.find_element(By.ID, "summary").text
        assert summary.startswith(
            f"{len(changed)} changed ({views.human_size(sum(b[p].size for p in changed))}), "
            f"{len(added)} added"
        )
        assert texts(d, "#diff td.path") == changed
        meta = {
            r.find_element(By.TAG_NAME, "td").text
            for r in d.find_elements(By.CSS_SELECTOR, "#metadata-diff tr.differs")
        }
        ma = reg.get_version("vision", "data", "v0").metadata
        mb = reg.get_version("vision", "data", "v1").metadata
        assert meta == {k for k in set(ma) | set(mb) if ma.get(k) != mb.get(k)}
        shot(d, ui, "08-compare")
        d.find_element(By.ID, "tab-added").click()
        wait_url(d, "show=added")
        assert texts(d, "#diff td.path") == added
        d.find_element(By.ID, "tab-removed").click()
        wait_url(d, "show=removed")
        assert texts(d, "#diff td.path") == removed
    finally:
        reg.close()
