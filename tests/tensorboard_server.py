"""TensorBoard served by one of our commands in a subprocess, for the tests: its address read
from TensorBoard's own banner, its data asked over HTTP as its web page asks. Loopback only,
every wait bounded."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 60
LOAD_TIMEOUT_S = 30
# Proxies from the environment must not see loopback requests.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
SERVE = (sys.executable, "-m", "sweeps.serve_tensorboard")


def get(url: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with OPENER.open(request, timeout=10) as response:
        return json.loads(response.read())


class Server:
    """``command`` with ``overrides`` in its own process group, so that stopping it stops a
    ``make`` around the server as well."""

    def __init__(self, *overrides: str, command: Sequence[str] = SERVE) -> None:
        self.proc = subprocess.Popen(
            [*command, *overrides],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.put(line)

    def url(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            found = re.search(r"TensorBoard [\d.]+ at (http://\S+/) ", line)
            if found:
                return found.group(1).rstrip("/")
            if self.proc.poll() is not None and self.lines.empty():
                break
        raise AssertionError(f"no TensorBoard address in time; stderr: {''.join(self.seen)}")

    def runs(self, url: str, expected: set[str]) -> list[str]:
        """The runs TensorBoard lists, once it lists ``expected`` (or its time is up)."""
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        runs: list[str] = []
        while time.monotonic() < deadline and not expected <= set(runs):
            time.sleep(0.2)
            runs = get(f"{url}/data/runs")
        return runs

    def stop(self) -> int:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)
            raise
