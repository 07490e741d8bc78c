"""Waiting for a `hub serve` subprocess to answer, shared by the end-to-end tests."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import httpx


def wait_until_ready(
    process: subprocess.Popen[Any], port: int, timeout: float = 30
) -> subprocess.Popen[Any]:
    """Return ``process`` once its hub answers /health/ready; kill it and fail (with what it
    printed, where its output is piped) if it exits or does not answer within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            printed = process.communicate()[1] if process.stderr else ""
            raise RuntimeError(f"hub serve did not start: {printed!r}")
        time.sleep(0.1)
