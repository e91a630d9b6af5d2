"""The Gradio page, mounted with a /metrics route into one FastAPI app.

``create_blocks`` builds the page, ``create_app`` the ASGI app (page at ``/``, Prometheus at
``/metrics``), ``launch`` serves it with uvicorn (blocking, or in a thread for tests and
``mmtriton up``). The page talks to Triton only through ``MultimodalClient``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import Response
from gradio.components.label import LabelData
from prometheus_client import CollectorRegistry

from mmtriton import spec
from mmtriton.paths import gallery_dir

from ..client import DEFAULT_URL, ChannelOptions
from .gallery import prepare_gallery
from .handlers import Classifier, PageResult, classify, weights_rows
from .metrics import WebMetrics

TITLE = "mmtriton · multimodal digit classifier"
INTRO = (
    "Give any mix of an **image** (upload one or draw a digit), **text** and **audio** "
    "(upload or record someone saying a digit). Triton encodes each one and fuses them; the "
    "chart shows how much each modality counted."
)
# Local fonts only: the default theme would fetch Google Fonts from the browser.
THEME = gr.themes.Default(
    font=["ui-sans-serif", "system-ui", "sans-serif"],
    font_mono=["ui-monospace", "SFMono-Regular", "monospace"],
)


def _select_brush_js(after_reset: bool) -> str:
    """JS that clicks the pad's Brush tool (the pad otherwise asks to "select the draw tool").

    The pad renders some time after the event fires (longer on a busy machine), so it keeps
    looking for up to 5 s instead of trying once. ``after_reset``: a reset of the pad is under
    way, which will switch it to the Image tool; a brush still selected is then waited on until
    the reset deselects it, and selected again. The button is found by its place, first of the
    pad's tool group (a pad without upload sources has no Image tool: Brush, then Eraser), not
    by its label: Gradio translates labels ("Pincel" in a Spanish browser).
    """
    return (
        "() => { const afterReset = %s; let tries = 0; const pick = () => {"
        " const brush = document.querySelector("
        "'#sketchpad .toolbar-wrap .half-container:not(.right) button');"
        " if (brush && !brush.classList.contains('highlight')) { brush.click(); return; }"
        " if (brush && !afterReset) return;"
        " if (++tries < 50) setTimeout(pick, 100);"
        " }; setTimeout(pick, 50); }"
    ) % ("true" if after_reset else "false")


SELECT_BRUSH_JS = _select_brush_js(after_reset=False)
# What Clear gives the pad: a new empty value every time. The pad resets its canvas only when its
# value changes, so the null a ClearButton sends worked once and then, the value being null
# already, left every later drawing on the canvas (sent with the next digit). The reset also
# switches the pad to its Image tool, so Clear selects the brush again once the reset is done.
CLEAR_PAD_JS = "() => ({background: null, layers: [], composite: null})"
RESELECT_BRUSH_JS = _select_brush_js(after_reset=True)
# Small uploads (a 28x28 MNIST digit) are shown enlarged, with crisp pixels.
CSS = """
#status {min-height: 3em}
#image-upload img {min-width: 60%; min-height: 60%; object-fit: contain; image-rendering: pixelated}
"""


def raw_image(**kwargs) -> gr.Image:
    """A gr.Image that hands over the uploaded file untouched (no Pillow on the web server).

    The server decodes and validates images, so an unreadable file gets the server's
    INVALID_ARGUMENT message rather than a Pillow error here. (An instance override, not a
    subclass: Gradio writes a .pyi stub next to the module of every Component subclass.)
    """
    image = gr.Image(type="filepath", image_mode=None, **kwargs)

    def preprocess(payload):
        return None if payload is None or not payload.path else str(payload.path)

    image.preprocess = preprocess  # type: ignore[method-assign]
    return image


def prediction_label(**kwargs) -> gr.Label:
    """A gr.Label that also takes a ready {"label", "confidences"} value as it is.

    gr.Label's own postprocess names the heading after the most likely class; "Not sure" needs
    another heading over the same probabilities (`PageResult.label_value`). An instance override,
    as in `raw_image`.
    """
    label = gr.Label(**kwargs)
    default = label.postprocess

    def postprocess(value):
        if isinstance(value, dict) and isinstance(value.get("confidences"), list):
            return LabelData(**value)
        return default(value)

    label.postprocess = postprocess  # type: ignore[method-assign]
    return label


@dataclass
class WebSettings:
    """Everything the page needs; the command line and tests fill it."""

    triton_url: str = DEFAULT_URL
    ssl: bool = False
    root_certificates: str | None = None  # path of a PEM CA file (as tritonclient wants); TLS
    timeout_s: float = 10.0
    channel: ChannelOptions = field(default_factory=ChannelOptions)  # load balancing, keepalive
    auth: tuple[str, str] | None = None
    max_file_size: int = 2 * max(spec.LIMITS.max_image_bytes, spec.LIMITS.max_audio_bytes)
    concurrency_limit: int = 8
    queue_size: int = 64
    n_examples: int = 8
    examples_root: Path | None = None  # artifacts folder; default mmtriton.paths.artifacts_dir()
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)


def _weights_frame(result: PageResult | None) -> pd.DataFrame:
    rows = weights_rows(result.prediction) if result and result.prediction else []
    return pd.DataFrame(rows, columns=["modality", "weight", "used"])


def create_blocks(settings: WebSettings, classifier: Classifier, metrics: WebMetrics) -> gr.Blocks:
    """The page: inputs, outputs, examples, and the /predict API endpoint."""
    gallery = prepare_gallery(settings.n_examples, settings.examples_root)

    def on_classify(image, sketch, text, audio, source):
        result = classify(classifier, metrics, image, sketch, text, audio, source)
        return (
            result.status,
            result.label_value(),
            _weights_frame(result),
            result.latency_text(),
        )

    def api_predict(image, text, audio) -> dict:
        return classify(classifier, metrics, image, None, text, audio).as_dict()

    with gr.Blocks(title=TITLE, analytics_enabled=False) as blocks:
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        source = gr.State("upload")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                with gr.Tabs(selected="upload") as image_tabs:
                    with gr.Tab("Upload an image", id="upload") as upload_tab:
                        image = raw_image(
                            sources=["upload", "clipboard"],
                            label="Image",
                            elem_id="image-upload",
                            height=280,
                        )
                    with gr.Tab("Draw a digit", id="draw") as draw_tab:
                        sketch = gr.Sketchpad(
                            type="numpy",
                            image_mode="RGBA",
                            canvas_size=(280, 280),
                            fixed_canvas=True,
                            brush=gr.Brush(default_size=12, colors=["#000000"], color_mode="fixed"),
                            layers=False,
                            label="Draw a digit with the mouse",
                            elem_id="sketchpad",
                        )
                text = gr.Textbox(
                    label="Text",
                    placeholder="e.g. “the digit seven”",
                    max_length=spec.LIMITS.max_text_chars,
                    elem_id="text",
                )
                audio = gr.Audio(
                    sources=["upload", "microphone"],
                    type="filepath",
                    format=None,  # send the file as it is; the server decodes WAV/FLAC/OGG
                    label="Audio",
                    elem_id="audio",
                )
                with gr.Row():
                    submit = gr.Button("Classify", variant="primary", elem_id="classify")
                    clear = gr.ClearButton(value="Clear")
            with gr.Column(scale=1):
                status = gr.Markdown("Give an input and press **Classify**.", elem_id="status")
                label = prediction_label(
                    num_top_classes=3, label="Prediction", elem_id="prediction"
                )
                chart = gr.BarPlot(
                    _weights_frame(None),
                    x="modality",
                    y="weight",
                    color="used",
                    color_map={"given": "#f97316", "not given": "#94a3b8"},
                    y_lim=[0, 1],
                    title="Fusion weight per modality",
                    elem_id="weights",
                    sort=list(spec.MODALITIES),
                )
                latency = gr.Textbox(label="Latency", interactive=False, elem_id="latency")
        if gallery.rows:
            gr.Examples(
                examples=gallery.rows,
                inputs=[image, text, audio],
                label="Test-set examples (click one to fill the inputs)",
                examples_per_page=len(gallery.rows),
            )
        elif gallery.note:
            gr.Markdown(f"*{gallery.note}*", elem_id="gallery-note")

        upload_tab.select(lambda: "upload", None, source, api_visibility="private", queue=False)
        draw_tab.select(lambda: "draw", None, source, api_visibility="private", queue=False)
        draw_tab.select(None, js=SELECT_BRUSH_JS)  # the pad opens ready to draw
        sketch.clear(None, js=RESELECT_BRUSH_JS)  # its own "Clear canvas" icon deselects it too
        # An uploaded or example image brings its tab to the front and becomes the image used.
        image.change(
            lambda v: ("upload", gr.Tabs(selected="upload")) if v else (gr.skip(), gr.skip()),
            image,
            [source, image_tabs],
            api_visibility="private",
            queue=False,
        )
        submit.click(
            on_classify,
            [image, sketch, text, audio, source],
            [status, label, chart, latency],
            api_visibility="private",
            concurrency_id="triton",
        )
        text.submit(
            on_classify,
            [image, sketch, text, audio, source],
            [status, label, chart, latency],
            api_visibility="private",
            concurrency_id="triton",
        )
        clear.add([image, text, audio, label, latency])
        clear.click(
            None, None, sketch, js=CLEAR_PAD_JS, api_visibility="private", queue=False
        ).then(None, js=RESELECT_BRUSH_JS)
        clear.click(
            lambda: ("Give an input and press **Classify**.", _weights_frame(None)),
            None,
            [status, chart],
            api_visibility="private",
            queue=False,
        )
        # The API: the same classification as JSON (gradio_client: api_name="/predict").
        api_out = gr.JSON(visible=False)
        api_trigger = gr.Button(visible=False)
        api_trigger.click(
            api_predict,
            [image, text, audio],
            api_out,
            api_name="predict",
            api_description="Classify image/text/audio (any non-empty subset); returns JSON.",
            concurrency_id="triton",
        )
    blocks.queue(default_concurrency_limit=settings.concurrency_limit, max_size=settings.queue_size)
    return blocks


def create_app(
    triton_url: str = DEFAULT_URL, settings: WebSettings | None = None, **options
) -> FastAPI:
    """The ASGI app: the page at ``/`` and Prometheus metrics at ``/metrics``.

    ``options`` are WebSettings fields (timeout_s=, auth=, root_certificates=, ...).
    """
    settings = settings or WebSettings(triton_url=triton_url, **options)
    metrics = WebMetrics(settings.registry)
    classifier = Classifier(
        settings.triton_url,
        timeout_s=settings.timeout_s,
        ssl=settings.ssl or settings.root_certificates is not None,
        root_certificates=settings.root_certificates,
        channel=settings.channel,
    )
    blocks = create_blocks(settings, classifier, metrics)
    app = FastAPI(title=TITLE, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics(request: Request) -> Response:
        body, content_type = metrics.exposition(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict:
        return {"status": "ok"}

    app = gr.mount_gradio_app(
        app,
        blocks,
        path="/",
        auth=settings.auth,
        auth_message="This page is password protected." if settings.auth else None,
        max_file_size=settings.max_file_size,
        allowed_paths=[str(gallery_dir(settings.examples_root))],  # the gallery's files
        ssr_mode=False,
        mcp_server=False,
        footer_links=["api"],
        run_history=False,
        theme=THEME,
        css=CSS,
    )
    app.state.classifier = classifier
    app.state.metrics = metrics
    app.state.blocks = blocks
    return app


class WebServer:
    """A running page: uvicorn in a background thread (``launch(block=False)``)."""

    def __init__(self, server, thread: threading.Thread, host: str, port: int) -> None:
        self._server, self.thread, self.host, self.port = server, thread, host, port

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to exit and wait for the thread."""
        self._server.should_exit = True
        self.thread.join(timeout)
        classifier = getattr(self._server.config.app.state, "classifier", None)
        if classifier is not None:
            classifier.close()


def launch(
    triton_url: str = DEFAULT_URL,
    *,
    host: str = "0.0.0.0",
    port: int = spec.DEFAULT_WEB_PORT,
    block: bool = True,
    settings: WebSettings | None = None,
    startup_timeout_s: float = 30.0,
    **options,
) -> WebServer | None:
    """Serve the page. Blocks until interrupted, or (block=False) returns a started WebServer."""
    import uvicorn

    app = create_app(triton_url, settings=settings, **options)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=3,  # Gradio keeps event streams open; do not wait on them
    )
    server = uvicorn.Server(config)
    if block:
        server.run()
        return None
    thread = threading.Thread(target=server.run, name=f"mmtriton-web-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the web page could not start on {host}:{port}")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError(f"the web page did not start within {startup_timeout_s:.0f} s")
        time.sleep(0.05)
    return WebServer(server, thread, host, port)
