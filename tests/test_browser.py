"""The app in a real browser: `streamlit run app.py` driven by Debian's Chromium through Playwright.

Opens every page by its sidebar link, runs the jobs a user would start, checks each page's
figures and key elements and that no exception or error box appears, screenshots each page
and times the click-to-figure delay on a cached run. Uses the bundled demo model when it is
on disk, else a tiny random Llama ($WORKBENCH_BROWSER_MODEL picks another). Screenshots and timings go to $WORKBENCH_SCREENSHOTS
(docs/screenshots to refresh the committed ones) or the test's temporary folder.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import workbench as wb
from workbench import random_models
from workbench.models import bundled_models
from workbench.prompts import load_prompts
from workbench.sparse.inspection import inspect_texts
from workbench.sparse.sweep import record_sweep
from workbench.steering.concepts import bundled_concept_sets, load_concept_set
from workbench.steering.directions import compute_directions
from workbench.steering.evaluation import sweep
from workbench.steering.export import import_vector

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
CHART = "[data-testid='stPlotlyChart'] .main-svg"

playwright_api = pytest.importorskip("playwright.sync_api", reason="the Python package playwright is not installed")
if not Path(CHROMIUM).is_file():
    pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)",
                allow_module_level=True)

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill_store(db: Path, spec: str) -> None:
    """Directions and a steering sweep, computed beforehand (the browser runs the recording and the rest)."""
    model = wb.load_model(spec)
    store = wb.Store(db)
    concepts = load_concept_set(bundled_concept_sets()["sentiment"])
    _, _, direction = compute_directions(model, concepts, store)
    chosen = {layer: v for layer, v in store.direction_vectors(direction).items() if layer >= model.n_layers - 3}
    prompts = load_prompts(ROOT / "data" / "prompts" / "steering_negative.txt")[:2]
    neutral = load_prompts(ROOT / "data" / "prompts" / "neutral.txt")[:4]
    sweep(model, chosen, prompts, [2.0, 4.0, 8.0], neutral, store, max_new_tokens=12, direction_id=direction)
    length = min(256, model.max_positions)
    inspect_texts(model, "delta", length=length, budget=0.25, decode_tokens=8, store=store, model_spec=spec)
    record_sweep(store, spec, model.hf, model.tokenizer, {"lengths": [length]}, budgets=(1.0, 0.25),
                 lengths=(length,), n_items=1, decode_tokens=8, progress=False)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, tiny_dir):
    folder = tmp_path_factory.mktemp("browser")
    spec = os.environ.get("WORKBENCH_BROWSER_MODEL") or (
        "demo" if "demo" in bundled_models() else str(tiny_dir("llama")))
    db = folder / "app.duckdb"
    fill_store(db, spec)
    port = free_port()
    env = {**os.environ, "WORKBENCH_DB": str(db), "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.fileWatcherType", "none", "--server.headless", "true"],
        cwd=ROOT, env=env, stdout=(folder / "server.log").open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.3)
    yield f"http://127.0.0.1:{port}/", spec, folder
    server.terminate()
    server.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def idle(page, timeout_s: float = 120) -> None:
    page.wait_for_selector(IDLE, timeout=timeout_s * 1000)


def rerun(page, action, charts: int = 0, drawn: str = "true") -> float:
    """Seconds from `action()` (a click) until the rerun it causes has finished with `charts` figures drawn
    and the JavaScript condition `drawn` holds."""
    page.evaluate("""() => {
        const app = document.querySelector("[data-testid='stApp']");
        window.rerunDone = false;
        window.rerunWatch?.disconnect();
        window.rerunWatch = new MutationObserver(() => {
            if (app.getAttribute('data-test-script-state') === 'notRunning') window.rerunDone = true;
        });
        window.rerunWatch.observe(app, {attributes: true});
    }""")
    start = time.perf_counter()
    action()
    page.wait_for_function(f"window.rerunDone && document.querySelectorAll(\"{CHART}\").length >= {charts} "
                           f"&& ({drawn})", timeout=120_000)
    return time.perf_counter() - start


def clean(page) -> None:
    exceptions = page.locator("[data-testid='stException']")
    assert exceptions.count() == 0, exceptions.first.inner_text()
    errors = page.locator("[data-testid='stAlertContentError']")
    assert errors.count() == 0, errors.first.inner_text()


def wait_for_job(page, done_text: str, timeout_s: float = 300) -> None:
    page.get_by_text(done_text, exact=True).first.wait_for(timeout=timeout_s * 1000)
    idle(page)


def nav(page, title: str):
    return page.locator("[data-testid='stSidebarNav'] a", has_text=title).first


def load(page, spec: str) -> None:
    """Load `spec` on the Model page and wait until it is loaded."""
    nav(page, "Model and runs").click()
    idle(page)
    spec_box = page.get_by_label("Model spec", exact=True)
    spec_box.fill(spec)
    spec_box.press("Enter")
    page.get_by_role("button", name="Load model").click()
    page.get_by_text(f"{spec}: ").first.wait_for(timeout=120_000)  # this model's line, not the one before's
    page.locator("[data-testid='stSidebar']").get_by_text(f"Model: {spec} (").wait_for(timeout=30_000)  # it follows
    idle(page)


def open_page(page, title: str, charts: int) -> float:
    """Seconds from clicking a page's sidebar link until it has drawn `charts` figures (from the SQL page,
    which draws none, so no figure of the page before counts)."""
    nav(page, "SQL").click()
    idle(page)
    return rerun(page, nav(page, title).click, charts)


def title_drawn(text: str) -> str:
    """A JavaScript condition: some figure's drawn title reads `text`."""
    return f"[...document.querySelectorAll('.gtitle')].some(t => t.textContent === {json.dumps(text)})"


def choose(page, label: str, option: str, charts: int, drawn: str = "true") -> float:
    """Seconds from picking `option` in the selectbox labelled `label` until the page has redrawn."""
    box = page.locator("[data-testid='stSelectbox']", has_text=label).first.get_by_role("combobox")
    for _ in range(3):  # a click that lands while the page redraws is lost: click until the list opens
        box.click()
        try:
            page.get_by_role("listbox").wait_for(timeout=3000)
            break
        except playwright_api.TimeoutError:
            idle(page)
    return rerun(page, page.get_by_role("option", name=option, exact=True).click, charts, drawn)


def progress_done(page) -> int:
    """How many steps the running job's progress bar says are done ('label… done/total (...)'), -1 for none."""
    bars = page.locator("[data-testid='stProgress']")
    if bars.count() == 0:
        return -1
    found = re.search(r"(\d+)/(\d+)", bars.first.inner_text())
    return int(found.group(1)) if found else -1


def shoot(page, name: str, out: Path) -> None:
    """A screenshot of the whole page: the viewport grows to the height of Streamlit's scrolling main area."""
    size = page.viewport_size
    height = page.evaluate("document.querySelector(\"[data-testid='stMainBlockContainer']\").scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": min(int(height) + 120, 6000)})
    page.wait_for_timeout(600)  # plotly redraws at the new size
    page.screenshot(path=str(out / f"{name}.png"))
    page.set_viewport_size(size)


def test_every_page_in_a_real_browser(app_url, browser, tmp_path):
    url, spec, folder = app_url
    out = Path(os.environ.get("WORKBENCH_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    timings = {"model": spec if "tiny-models" not in spec else "tiny random llama (no demo model on disk)"}
    page.goto(url)
    idle(page)
    clean(page)

    load(page, spec)
    page.get_by_role("button", name="Record").click()
    wait_for_job(page, "Recorded run 1.")
    page.locator(CHART).first.wait_for()
    clean(page)
    shoot(page, "model-and-runs", out)

    timings["attention_first_open_s"] = open_page(page, "Attention", 3)  # reads the maps from Parquet
    clean(page)
    timings["attention_open_s"] = open_page(page, "Attention", 3)
    last = page.locator("[data-testid='stSelectbox']", has_text="Layer").get_by_role("combobox").input_value()
    timings["attention_head_change_s"] = choose(page, "Head", "1", 3, title_drawn(f"layer {last}, head 1"))
    timings["attention_layer_change_s"] = choose(page, "Layer", "0", 3, title_drawn("layer 0, head 1"))
    clean(page)
    shoot(page, "attention", out)

    nav(page, "Massive activations").click()
    idle(page)
    page.locator("[data-testid='stCheckbox']", has_text="Ratio only").locator("label").first.click()
    idle(page)
    ratio = page.locator("[data-testid='stNumberInput']", has_text="Ratio to the median").locator("input")
    ratio.fill("20")  # the demo's largest activation is about 60x its layer's median: nothing is 1000x
    ratio.press("Enter")
    idle(page)
    page.get_by_role("button", name="Detect").click()
    page.locator(CHART).nth(1).wait_for(timeout=60_000)
    idle(page)
    clean(page)
    charts = page.locator(CHART).count()
    page.get_by_role("button", name="Run ablation").click()
    page.locator(CHART).nth(charts).wait_for(timeout=120_000)  # the ablation's bars
    idle(page)
    clean(page)
    timings["massive_prompt_change_s"] = choose(page, "Top activations of prompt", "1", 2)
    shoot(page, "massive-activations", out)
    timings["massive_open_s"] = open_page(page, "Massive activations", 3)
    clean(page)

    timings["directions_open_s"] = open_page(page, "Concept directions", 3)
    clean(page)
    page.get_by_role("button", name="Compute directions").click()  # a job of the user's own, stored
    page.get_by_text("Stored directions as analysis").first.wait_for(timeout=300_000)
    idle(page)
    clean(page)
    shoot(page, "concept-directions", out)

    open_page(page, "Steering", 1)
    page.get_by_role("button", name="Generate").click()
    wait_for_job(page, "Unsteered")
    shoot(page, "steering", out)
    clean(page)
    assert page.locator("[data-testid='stCode']").count() == 2
    with page.expect_download() as download:  # the vector, as a file llama.cpp-free tools read
        page.get_by_role("button", name="safetensors").click()
    exported = tmp_path / download.value.suggested_filename
    download.value.save_as(exported)
    vectors, meta = import_vector(exported)
    assert vectors and meta["site"] == "resid_post"

    # a long job: its progress bar advances, and Cancel stops it keeping the settings it finished
    prompts_box = page.locator("[data-testid='stNumberInput']", has_text="Prompts").locator("input")
    prompts_box.fill("16")
    prompts_box.press("Enter")
    idle(page)
    page.get_by_role("button", name="Run sweep").click()
    page.locator("[data-testid='stProgress']").first.wait_for(timeout=60_000)
    seen = [progress_done(page)]
    deadline = time.monotonic() + 120
    while max(seen) < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(250)
        seen.append(progress_done(page))
    assert max(seen) >= 2 and seen == sorted(seen), seen  # the bar moves forward, never back
    page.get_by_role("button", name="Cancel").click()
    page.get_by_text("cancelled: what finished before is stored").first.wait_for(timeout=120_000)
    idle(page)
    store = wb.Store(folder / "app.duckdb")
    stopped = store.analyses("steering-sweep").iloc[0]
    summary = json.loads(stopped.summary)
    assert summary["status"] == "partial" and 2 <= summary["done"] < summary["total"]
    assert len(store.steering_sweep(int(stopped.analysis_id))) == summary["done"] - 1  # the unsteered run first
    timings["sweep_steps_before_cancel"] = summary["done"]

    timings["sparse_open_s"] = open_page(page, "Sparse attention", 3)  # recall, selections, accuracy curve
    clean(page)
    timings["sparse_layer_change_s"] = choose(page, "Layer", "2", 3)
    clean(page)
    shoot(page, "sparse-attention", out)

    timings["lens_open_s"] = open_page(page, "Logit lens", 2)  # the layer x position map, KL by layer
    clean(page)
    shoot(page, "logit-lens", out)
    choose(page, "Layer", "1", 2)
    page.get_by_role("button", name="Attention at layer 1").click()  # the same layer on the Attention page
    page.wait_for_url(re.compile(r"/attention/?$"), timeout=120_000)  # after the prompt is recorded
    idle(page)
    clean(page)
    chosen = page.locator("[data-testid='stSelectbox']", has_text="Layer").first.get_by_role("combobox")
    assert chosen.input_value() == "1"

    if "demo-hybrid" in bundled_models():  # the delta-rule memory of the bundled hybrid
        load(page, "demo-hybrid")
        # writes, state, spans, retention, effective attention, survival
        timings["memory_open_s"] = open_page(page, "Delta-rule memory", 6)
        clean(page)
        timings["memory_head_change_s"] = choose(page, "Head", "1", 6)
        clean(page)
        shoot(page, "delta-rule-memory", out)

    # transformers' own Gated DeltaNet hybrid (a tiny random Qwen3-Next): its memory, and a second prompt's
    load(page, str(random_models.build("qwen3_next", tmp_path)))
    open_page(page, "Delta-rule memory", 6)
    clean(page)
    compare = page.get_by_label("Second prompt", exact=False)
    compare.fill("key 1093 : value 5512\nQuestion: what is the value of key 4821? Answer:")
    timings["memory_compare_s"] = rerun(page, lambda: compare.press("Control+Enter"), 8)
    clean(page)

    nav(page, "SQL").click()
    idle(page)
    rerun(page, page.get_by_role("button", name="Run query").click)
    page.locator("[data-testid='stDataFrame']").wait_for()
    clean(page)
    shoot(page, "sql", out)

    (out / "timings.json").write_text(json.dumps(timings, indent=1) + "\n")
    print(json.dumps(timings, indent=1))  # measured, not asserted: speed is no pass/fail matter on shared CI
