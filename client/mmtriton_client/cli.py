"""`mmtriton infer`: send one sample to a running server and print the prediction."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .channel import LB_POLICIES, ChannelOptions
from .client import DEFAULT_URL, ClientError, MultimodalClient, Prediction, RetryPolicy, Sample

# One-line help of this `mmtriton` subcommand (mmtriton/cli.py reads it without importing).
COMMAND_HELP = "send one request to a running server"

# A one-shot command should not hang for long on a server that is down; 5 s covers a quick
# restart (the library's default budget, for services, covers a whole heal).
CLI_RETRY_BUDGET_S = 5.0


def add_channel_arguments(parser: argparse.ArgumentParser, lb_default: str = "pick_first") -> None:
    """The gRPC channel options shared by `mmtriton infer` and `mmtriton web`."""
    defaults = ChannelOptions()
    parser.add_argument(
        "--grpc-lb",
        choices=LB_POLICIES,
        default=lb_default,
        help="gRPC load balancing over the addresses the target resolves to: round_robin "
        "spreads requests over all of them (use with a dns:/// headless-Service target); "
        f"default {lb_default}",
    )
    parser.add_argument(
        "--grpc-keepalive",
        type=float,
        metavar="S",
        help="ping an idle connection after S seconds and drop it if no answer comes "
        "(default: no pings)",
    )
    parser.add_argument(
        "--grpc-max-reconnect-backoff",
        type=float,
        metavar="S",
        default=defaults.max_reconnect_backoff_s,
        help="longest wait between reconnection attempts to a lost server "
        f"(default {defaults.max_reconnect_backoff_s:g} s)",
    )


def channel_options(args: argparse.Namespace) -> ChannelOptions:
    """ChannelOptions from the options added by `add_channel_arguments` (ValueError if bad)."""
    return ChannelOptions(
        lb_policy=args.grpc_lb,
        keepalive_time_s=args.grpc_keepalive,
        max_reconnect_backoff_s=args.grpc_max_reconnect_backoff,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mmtriton infer`."""
    parser.add_argument(
        "--url",
        default=DEFAULT_URL,
        help="gRPC target: HOST:PORT, dns:///HOST:PORT or ipv4:A:P,B:Q (default %(default)s)",
    )
    parser.add_argument("--image", type=Path, help="image file (PNG, JPEG, WebP, ...)")
    parser.add_argument("--text", help="text, e.g. 'the digit seven'")
    parser.add_argument("--audio", type=Path, help="audio file (WAV, FLAC, OGG)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    parser.add_argument(
        "--retry-budget",
        type=float,
        default=CLI_RETRY_BUDGET_S,
        metavar="S",
        help="seconds to keep retrying while the server is unavailable or healing "
        f"(default {CLI_RETRY_BUDGET_S:g}; 0: no retry)",
    )
    parser.add_argument("--ssl", action="store_true", help="gRPC over TLS")
    parser.add_argument("--root-cert", type=Path, help="CA certificate for --ssl")
    add_channel_arguments(parser)


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def answer_text(prediction: Prediction) -> str:
    """The label, or "not sure" with the best guess when the model is below its threshold."""
    if prediction.confident:
        return prediction.label
    best, p = prediction.top(1)[0]
    return (
        f"not sure (best guess {best} at {100 * p:.2f} %, below the model's "
        f"{100 * prediction.threshold:g} % confidence threshold)"
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of `mmtriton infer`; exit 2 for bad input, 1 for server errors (an answer
    the model is not sure of is still an answer: exit 0, `"confident": false` in the JSON)."""
    for f in (args.image, args.audio):
        if f is not None and not f.is_file():
            return _error(f"no such file: {f}")
    try:
        channel = channel_options(args)
    except ValueError as exc:
        return _error(str(exc))
    retry = (
        RetryPolicy(attempts=1)
        if args.retry_budget <= 0
        else RetryPolicy(budget_s=args.retry_budget)
    )
    root = str(args.root_cert) if args.root_cert else None  # tritonclient opens the path
    try:
        sample = Sample.from_files(args.image, args.text, args.audio)
        sample.validate()  # bad input is named before any connection is made
        with MultimodalClient(
            args.url,
            timeout_s=args.timeout,
            retry=retry,
            ssl=args.ssl,
            root_certificates=root,
            channel=channel,
        ) as client:
            prediction = client.predict(sample)
    except OSError as exc:  # a file that exists but cannot be read
        return _error(f"cannot read {exc.filename}: {exc.strerror}")
    except ClientError as exc:
        print(f"error ({exc.status}): {exc}", file=sys.stderr)
        if exc.status == "UNAVAILABLE":
            print(f"is the server running at {args.url}? start it with `make run`", file=sys.stderr)
        return 2 if exc.status == "INVALID_ARGUMENT" else 1
    if args.json:
        print(json.dumps(prediction.as_dict()))
        return 0
    print(f"label: {answer_text(prediction)}   ({prediction.latency_ms:.1f} ms)")
    for label, p in prediction.top(3):
        print(f"  {label:>6}  {100 * p:6.2f} %")
    weights = ", ".join(
        f"{m} {w:.2f}" for m, w in prediction.weights.items() if m in prediction.modalities
    )
    print(f"modalities: {'+'.join(prediction.modalities)}   fusion weights: {weights}")
    return 0
