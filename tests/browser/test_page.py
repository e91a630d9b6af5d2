"""The web page in headless Chromium against a real tritonserver.

Uses the system Chromium (never a Playwright download). Screenshots go to reports/screenshots/;
with MMTRITON_UPDATE_DOC_IMAGES=1 the full multimodal one also replaces docs/images/web.png
(the README's screenshot), so an ordinary test run never changes a tracked file.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect, sync_playwright

from mmtriton.paths import PROJECT_ROOT
from mmtriton_build.examples import load_examples
from mmtriton_client.client import MultimodalClient, Sample

from ..conftest import free_port, require_repository, start_triton
from ..integration.repository_variant import repository_with_threshold

pytestmark = [pytest.mark.browser, pytest.mark.integration]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
SCREENSHOTS = PROJECT_ROOT / "reports" / "screenshots"
DOC_IMAGE = PROJECT_ROOT / "docs" / "images" / "web.png"
ANSWER_S = 30_000  # ms to wait for an answer (the first request warms the encoders)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        # `make test` installs it (scripts/install-system-deps.sh): missing means a broken set-up.
        pytest.fail(f"{CHROMIUM} is not installed: run `make system-deps` (Debian chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _serve(triton_url: str, n_examples: int = 8):
    from mmtriton_client.web.app import WebSettings, launch

    settings = WebSettings(triton_url=triton_url, n_examples=n_examples, timeout_s=10)
    return launch(host="127.0.0.1", port=free_port(), block=False, settings=settings)


@pytest.fixture(scope="module")
def web(triton_server, example, tmp_path_factory):
    with MultimodalClient(triton_server.grpc_url) as client:  # warm the encoders up
        client.predict(Sample(example.image, example.text, example.audio))
    server = _serve(triton_server.grpc_url)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def example(built_artifacts):
    return next(e for e in load_examples(built_artifacts, 32) if e.image and e.text and e.audio)


@pytest.fixture
def page(browser, web) -> Iterator[Page]:
    """A fresh tab on the page; fails the test if the page asked anything of the internet."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    tab = context.new_page()
    outside = []
    tab.on(
        "request",
        lambda r: (
            outside.append(r.url)
            if r.url.startswith(("http:", "https:", "ws:", "wss:")) and "127.0.0.1" not in r.url
            else None
        ),
    )
    tab.goto(web.url)
    expect(tab.get_by_role("button", name="Classify")).to_be_visible()
    yield tab
    context.close()
    assert not outside, f"the page made requests outside: {outside}"


def _shot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


def _classify(page: Page, expected_status: str) -> str:
    page.get_by_role("button", name="Classify").click()
    status = page.locator("#status")
    expect(status).to_contain_text(expected_status, timeout=ANSWER_S)
    expect(page.locator(".pending")).to_have_count(0)  # outputs no longer greyed out
    return status.inner_text()


def _top_label(page: Page) -> str:
    return page.locator("#prediction [data-testid='label-output-value']").inner_text().strip()


def test_upload_text_and_audio_give_the_right_label(page, example, tmp_path):
    (tmp_path / "digit.png").write_bytes(example.image)
    (tmp_path / "digit.wav").write_bytes(example.audio)
    page.locator("#image-upload input[type=file]").set_input_files(tmp_path / "digit.png")
    page.locator("#text textarea").fill(example.text)
    page.locator("#audio input[type=file]").set_input_files(tmp_path / "digit.wav")
    expect(page.locator("#image-upload img")).to_be_visible()
    status = _classify(page, "Predicted")
    assert "image (upload) + text + audio" in status
    assert _top_label(page) == example.label
    expect(page.locator("#latency textarea")).to_have_value(re.compile(r"\d+\.\d ms"))
    shot = _shot(page, "web-upload")
    if os.environ.get("MMTRITON_UPDATE_DOC_IMAGES") == "1":
        shutil.copyfile(shot, DOC_IMAGE)


def _draw_one(page: Page, across: float = 0.5) -> None:
    """A "1": one vertical stroke dragged with the mouse, `across` the pad's width (0..1)."""
    canvas = page.locator("#sketchpad canvas").first
    expect(canvas).to_be_visible()
    box = canvas.bounding_box()
    x, top, height = box["x"] + box["width"] * across, box["y"] + box["height"] * 0.2, box["height"]
    page.mouse.move(x, top)
    page.mouse.down()
    for i in range(1, 21):
        page.mouse.move(x, top + i * height * 0.03)
    page.mouse.up()


def test_drawing_a_digit_on_the_pad(page):
    page.get_by_role("tab", name="Draw a digit").click()
    expect(page.locator("#sketchpad canvas").first).to_be_visible()
    expect(page.get_by_text("select the draw tool")).to_have_count(0)  # the brush is ready
    _draw_one(page)
    status = _classify(page, "Predicted")
    assert "from image (drawing)" in status
    assert _top_label(page) in {str(d) for d in range(10)}
    _shot(page, "web-drawing")


@pytest.fixture
def sent_images(web) -> Iterator[list[bytes | None]]:
    """The image of every sample the page hands to its Triton client, in order (the real call
    still goes to Triton)."""
    classifier = web._server.config.app.state.classifier
    sent: list[bytes | None] = []
    real = classifier.predict

    def recording(sample):
        sent.append(sample.image)
        return real(sample)

    classifier.predict = recording
    yield sent
    del classifier.predict  # the class's method again


def _ink_bands(png: bytes) -> list[tuple[int, int]]:
    """The column ranges that hold dark pixels, left to right (one per vertical stroke)."""
    gray = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    bands: list[list[int]] = []
    for x in np.flatnonzero((gray < 128).any(axis=0)):
        if bands and x == bands[-1][1] + 1:
            bands[-1][1] = int(x)
        else:
            bands.append([int(x), int(x)])
    return [(a, b) for a, b in bands]


def test_clear_empties_the_pad_and_leaves_the_brush_ready(page, sent_images):
    # Three rounds: Clear used to deselect the brush the first time and, from the second time
    # on, to leave the earlier strokes on the pad, sent along with the next digit.
    page.get_by_role("tab", name="Draw a digit").click()
    bands = []
    for n, across in enumerate((0.35, 0.5, 0.65)):
        if n:
            page.get_by_role("button", name="Clear", exact=True).click()
            expect(page.locator("#status")).to_contain_text("Give an input")
            expect(page.get_by_text("select the draw tool")).to_have_count(0)
        _draw_one(page, across)  # no click on the brush: it must be ready
        assert "from image (drawing)" in _classify(page, "Predicted")
        assert len(sent_images) == n + 1 and sent_images[-1], sent_images
        bands.append(_ink_bands(sent_images[-1]))
        assert len(bands[-1]) == 1, f"drawing {n + 1} holds {bands[-1]}: earlier strokes kept"
    assert bands[0][0][1] < bands[1][0][0] and bands[1][0][1] < bands[2][0][0], bands


def test_the_pads_own_clear_icon_leaves_the_brush_ready(page, sent_images):
    page.get_by_role("tab", name="Draw a digit").click()
    _draw_one(page, 0.35)
    page.get_by_role("button", name="Clear canvas").click()
    expect(page.get_by_text("select the draw tool")).to_have_count(0)
    _draw_one(page, 0.65)  # no click on the brush
    assert "from image (drawing)" in _classify(page, "Predicted")
    assert len(_ink_bands(sent_images[-1])) == 1, _ink_bands(sent_images[-1])


def test_the_pad_is_ready_to_draw_in_another_language(browser, web, sent_images):
    # Gradio translates the pad's tool labels ("Pincel"): the brush is found by its place.
    context = browser.new_context(locale="es-ES", viewport={"width": 1280, "height": 1000})
    try:
        page = context.new_page()
        page.goto(web.url)
        page.get_by_role("tab", name="Draw a digit").click()
        expect(page.locator("#sketchpad canvas").first).to_be_visible()
        expect(page.get_by_text("seleccione la herramienta de dibujo")).to_have_count(0)
        _draw_one(page)
        assert "from image (drawing)" in _classify(page, "Predicted")
        assert sent_images and _ink_bands(sent_images[-1])
    finally:
        context.close()


def test_not_sure_is_shown_instead_of_a_label(browser, tmp_path):
    # A model whose threshold (0.999) this text never reaches: the page must say so.
    repository = repository_with_threshold(require_repository(), tmp_path / "repo", "0.999")
    triton = start_triton(tmp_path / "triton", repository=repository)
    web = _serve(triton.grpc_url, n_examples=0)
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    try:
        page = context.new_page()
        page.goto(web.url)
        page.locator("#text textarea").fill("is it a one or a seven")
        status = _classify(page, "Not sure")
        shown = r"best guess \d at \d+\.\d %, below the model's 99\.9 % confidence threshold"
        assert re.search(shown, status), status
        assert _top_label(page) == "Not sure"
        rows = page.locator("#prediction .confidence-set")
        expect(rows).to_have_count(3)  # the probabilities stay visible
        assert all(re.search(r"\d+%", t) for t in rows.all_inner_texts()), rows.all_inner_texts()
        _shot(page, "web-not-sure")
    finally:
        context.close()
        web.stop()
        triton.stop()


def test_one_modality_is_enough(page, example, tmp_path):
    (tmp_path / "digit.png").write_bytes(example.image)
    page.locator("#image-upload input[type=file]").set_input_files(tmp_path / "digit.png")
    status = _classify(page, "Predicted")
    assert status.strip().endswith("from image (upload).")
    assert _top_label(page) == example.label


def test_no_input_and_bad_files_get_clear_messages(page, tmp_path):
    _classify(page, "Nothing to classify yet")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    page.locator("#image-upload input[type=file]").set_input_files(broken)
    _classify(page, "The input could not be used: Image could not be read (")
    _shot(page, "web-bad-file")
    big = tmp_path / "big.wav"
    big.write_bytes(b"RIFF" + b"\0" * (12 * 1024 * 1024 - 4))
    page.locator("#audio input[type=file]").set_input_files(big)
    expect(page.locator("#audio")).not_to_contain_text("Drop Audio Here", timeout=15_000)
    _classify(page, "The audio file is too large: 12.0 MiB; the limit is 10.0 MiB")


def test_server_down_then_back(browser, tmp_path):
    triton = start_triton(tmp_path / "triton")
    web = _serve(triton.grpc_url, n_examples=0)
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    try:
        page = context.new_page()
        page.goto(web.url)
        page.locator("#text textarea").fill("the digit seven")
        _classify(page, "Predicted")
        triton.stop()
        _classify(page, "is not reachable right now")
        _shot(page, "web-server-down")
        triton.start()  # same ports
        triton.wait_ready(timeout=180)
        _classify(page, "Predicted")
        assert _top_label(page) == "7"
    finally:
        context.close()
        web.stop()
        triton.stop()


def test_an_example_fills_every_input(page):
    page.get_by_role("tab", name="Draw a digit").click()
    row = page.locator("table tbody tr").filter(has_text=".wav").first
    digit = re.search(r"digit-(\d)\.wav", row.inner_text()).group(1)
    row.click()
    expect(page.locator("#text textarea")).not_to_have_value("")
    expect(page.get_by_role("tab", name="Upload an image")).to_have_attribute(
        "aria-selected", "true"
    )  # the example's image is the one sent, not the (empty) pad
    status = _classify(page, "Predicted")
    assert "from image (upload) + text + audio" in status
    assert _top_label(page) == digit
