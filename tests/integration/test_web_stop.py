"""`mmtriton web` stops like a service should: SIGTERM (a Kubernetes stop) exits 0."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from mmtriton.server.process import free_port

pytestmark = pytest.mark.integration


def test_web_page_exits_0_on_sigterm():
    port = free_port()
    command = [sys.executable, "-m", "mmtriton.cli", "web", "--triton-url", "127.0.0.1:1"]
    page = subprocess.Popen(
        [*command, "--port", str(port), "--examples", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert page.poll() is None, page.stderr.read().decode()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the page did not start"
                time.sleep(0.2)
        page.send_signal(signal.SIGTERM)
        assert page.wait(timeout=30) == 0
    finally:
        if page.poll() is None:
            page.kill()
            page.wait()
