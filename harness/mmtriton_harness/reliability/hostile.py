"""The hostile-input suite against a running server (raw gRPC), and a few through the web page.

After every case the server must still be ready and answer a valid request correctly.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmtriton import spec
from mmtriton_client.client import MultimodalClient, Sample, parse_result

from .payloads import (
    Case,
    Reference,
    build_cases,
    flac_claiming_seconds,
    png_claiming,
    stereo_48k,
    tiny_png,
)


def choose_reference(client: MultimodalClient, examples: Sequence) -> Reference:
    """The first test sample the server gets right from each modality alone."""
    for ex in examples:
        if not (ex.image and ex.text and ex.audio):
            continue
        if all(
            client.predict(Sample(**{m: getattr(ex, m)})).label == ex.label for m in spec.MODALITIES
        ):
            return Reference(ex.label, ex.image, ex.text, ex.audio)
    raise RuntimeError("no test sample is classified correctly from every modality alone")


def send(raw_client, case: Case):
    """Send one case; the InferResult, or the exception raised."""
    import tritonclient.grpc as grpcclient

    names = case.outputs or (spec.PROBABILITIES.name, spec.WEIGHTS.name, spec.PRESENT.name)
    outputs = [
        grpcclient.InferRequestedOutput(
            n, class_count=spec.NUM_CLASSES if n == spec.PROBABILITIES.name else 0
        )
        for n in names
    ]
    inputs = [t.to_grpc() for t in case.inputs]
    try:
        return raw_client.infer(spec.ENSEMBLE.name, inputs, outputs=outputs, client_timeout=60)
    except Exception as exc:
        return exc


def judge(case: Case, answer) -> tuple[bool, str, str]:
    """(as expected?, gRPC status name, message or answer summary)."""
    if isinstance(answer, Exception):
        status = str(answer.status() if hasattr(answer, "status") else type(answer).__name__)
        status = status.replace("StatusCode.", "")
        message = answer.message() if hasattr(answer, "message") else str(answer)
        words_ok = all(w.lower() in message.lower() for w in case.words)
        return (
            case.expect == "invalid" and status == "INVALID_ARGUMENT" and words_ok,
            status,
            message,
        )
    preds = parse_result(answer, spec.NUM_CLASSES, 0.0)
    present = answer.as_numpy(spec.PRESENT.name)
    ok = case.expect == "valid"
    if case.label is not None:
        ok = ok and all(p.label == case.label for p in preds)
    if case.present is not None:
        ok = ok and np.array_equal(present, np.array(case.present, dtype=np.float32))
    labels = "".join(p.label for p in preds)
    return ok, "OK", f"labels {labels[:40]} present {present.astype(int).tolist()[:3]}"


def run_hostile(url: str, examples: Sequence) -> dict:
    """Every case of the suite; per case what came back and whether the server stayed well."""
    import tritonclient.grpc as grpcclient

    results = []
    with MultimodalClient(url) as client, grpcclient.InferenceServerClient(url) as raw:
        ref = choose_reference(client, examples)
        probe = Sample(image=ref.image, audio=ref.audio)
        for case in build_cases(ref):
            start = time.monotonic()
            answer = send(raw, case)
            elapsed_ms = (time.monotonic() - start) * 1000
            as_expected, status, message = judge(case, answer)
            ready = client.is_ready()
            next_ok = ready and client.predict(probe).label == ref.label
            results.append(
                {
                    "name": case.name,
                    "group": case.group,
                    "expect": case.expect,
                    "status": status,
                    "message": message[:240],
                    "ms": round(elapsed_ms, 1),
                    "as_expected": as_expected,
                    "ready_after": ready,
                    "next_valid_correct": next_ok,
                    "clean": as_expected and ready and next_ok,
                }
            )
    return {
        **split_counts(results),
        "not_clean": [r for r in results if not r["clean"]],
        "cases": results,
    }


def split_counts(results: list[dict]) -> dict:
    """Invalid inputs (must be refused) and odd-but-valid ones (must be answered), counted
    apart: a suite that refused everything must not look clean."""
    invalid = [r for r in results if r["expect"] == "invalid"]
    valid = [r for r in results if r["expect"] == "valid"]
    return {
        "tried": len(results),
        "clean": sum(r["clean"] for r in results),
        "invalid_tried": len(invalid),
        "invalid_refused": sum(r["clean"] for r in invalid),
        "valid_tried": len(valid),
        "valid_answered": sum(r["clean"] for r in valid),
    }


WEB_REFUSALS = ("invalid_input", "no_input")  # the page's error kinds for a user's bad input


def web_cases(ref: Reference, folder: Path) -> list[tuple[str, dict, str | None, tuple[str, ...]]]:
    """(name, /predict arguments, expected error kind, label or None (any label), words)."""
    folder.mkdir(parents=True, exist_ok=True)

    def file(name: str, data: bytes) -> Path:
        path = folder / name
        path.write_bytes(data)
        return path

    return [
        ("web_corrupt_png", {"image": file("c.png", ref.image[:60])}, "invalid_input", ("image",)),
        (
            "web_png_bomb",
            {"image": file("b.png", png_claiming(90_000, 90_000))},
            "invalid_input",
            ("limit",),
        ),
        ("web_bad_wav", {"audio": file("b.wav", ref.audio[:20])}, "invalid_input", ("audio",)),
        (
            "web_flac_hours",
            {"audio": file("h.flac", flac_claiming_seconds(7200))},
            "invalid_input",
            ("limit",),
        ),
        ("web_megabyte_text", {"text": "seven " * 200_000}, "invalid_input", ("limit",)),
        ("web_control_chars", {"text": "\x07\x1b[31m" + ref.text + "\u202e"}, ref.label, ()),
        ("web_nothing", {"text": "   "}, "no_input", ()),
        ("web_non_latin_text", {"text": "семь 七 ٧ 🙂"}, None, ()),
        ("web_stereo_48k_wav", {"audio": file("s.wav", stereo_48k(ref.audio))}, ref.label, ()),
        ("web_1x1_image", {"image": file("p.png", tiny_png())}, None, ()),
    ]


def run_web_hostile(triton_url: str, ref_examples: Sequence, folder: Path) -> dict:
    """Invalid and odd-but-valid inputs through the web page's /predict API (real HTTP)."""
    from gradio_client import Client, handle_file

    from mmtriton.server.process import free_port
    from mmtriton_client.web.app import WebSettings, launch

    with MultimodalClient(triton_url) as client:
        ref = choose_reference(client, ref_examples)
    settings = WebSettings(triton_url=triton_url, n_examples=0)
    page = launch(host="127.0.0.1", port=free_port(), block=False, settings=settings)
    results, api = [], None
    try:
        api = Client(page.url, verbose=False)
        for name, args, expected, words in web_cases(ref, folder):
            image, audio = args.get("image"), args.get("audio")
            answer = api.predict(
                handle_file(str(image)) if image else None,
                args.get("text", ""),
                handle_file(str(audio)) if audio else None,
                api_name="/predict",
            )
            error = answer.get("error") or {}
            got = error.get("kind") or answer.get("label")
            text = error.get("message", "")
            refusal = expected in WEB_REFUSALS
            # expected None: any label, as long as it is an answer
            ok = bool(answer.get("label")) and not error if expected is None else got == expected
            ok = ok and all(w.lower() in text.lower() for w in words)
            after = api.predict(None, ref.text, None, api_name="/predict")
            with MultimodalClient(triton_url) as client:
                ready = client.is_ready()
            results.append(
                {
                    "name": name,
                    "expect": "invalid" if refusal else "valid",
                    "got": got,
                    "message": text[:200],
                    "ready_after": ready,
                    "clean": ok and ready and after.get("label") == ref.label,
                }
            )
    finally:
        if api is not None:
            api.close()
        page.stop()
    return {**split_counts(results), "cases": results}
