"""`mmtriton infer`: send one sample to a running server and print the prediction."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .client import DEFAULT_URL, ClientError, MultimodalClient, RetryPolicy, Sample


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mmtriton infer`."""
    parser.add_argument("--url", default=DEFAULT_URL, help="gRPC address HOST:PORT")
    parser.add_argument("--image", type=Path, help="image file (PNG, JPEG, WebP, ...)")
    parser.add_argument("--text", help="text, e.g. 'the digit seven'")
    parser.add_argument("--audio", type=Path, help="audio file (WAV, FLAC, OGG)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    parser.add_argument("--ssl", action="store_true", help="gRPC over TLS")
    parser.add_argument("--root-cert", type=Path, help="CA certificate for --ssl")


def run(args: argparse.Namespace) -> int:
    """Entry point of `mmtriton infer`; exit 2 for bad input, 1 for server errors."""
    for f in (args.image, args.audio):
        if f is not None and not f.is_file():
            print(f"error: no such file: {f}", file=sys.stderr)
            return 2
    sample = Sample.from_files(args.image, args.text, args.audio)
    root = str(args.root_cert) if args.root_cert else None  # tritonclient opens the path
    try:
        with MultimodalClient(
            args.url,
            timeout_s=args.timeout,
            retry=RetryPolicy(attempts=2),
            ssl=args.ssl,
            root_certificates=root,
        ) as client:
            prediction = client.predict(sample)
    except ClientError as exc:
        print(f"error ({exc.status}): {exc}", file=sys.stderr)
        if exc.status == "UNAVAILABLE":
            print(f"is the server running at {args.url}? start it with `make run`", file=sys.stderr)
        return 2 if exc.status == "INVALID_ARGUMENT" else 1
    if args.json:
        print(json.dumps(prediction.as_dict()))
        return 0
    print(f"label: {prediction.label}   ({prediction.latency_ms:.1f} ms)")
    for label, p in prediction.top(3):
        print(f"  {label:>6}  {100 * p:6.2f} %")
    weights = ", ".join(
        f"{m} {w:.2f}" for m, w in prediction.weights.items() if m in prediction.modalities
    )
    print(f"modalities: {'+'.join(prediction.modalities)}   fusion weights: {weights}")
    return 0
