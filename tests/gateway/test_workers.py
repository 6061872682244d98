"""`tierline serve --workers 2`: two processes share the port; SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tierline.gateway.server import free_port


def test_two_workers_serve_one_port_and_stop_on_sigterm(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "server:\n  request_log: " + str(tmp_path / "r.sqlite3") + "\n"
        "catalog:\n  builtin: false\n"
        "providers:\n  up:\n    wire: openai\n    base_url: http://127.0.0.1:9/v1\n"
        "    requires_key: false\n"
        "deployments:\n  - name: m\n    provider: up\n    model: m\n"
        "    price: {input: 1, output: 1}\n    context_window: 8000\n")
    port = free_port()
    env = {**os.environ, "TIERLINE_DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "tierline.cli", "serve", "--config",
                             str(cfg), "--port", str(port), "--workers", "2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        ok = 0
        while time.monotonic() < deadline and ok < 20:
            try:
                with httpx.Client(timeout=2) as c:  # new connections: spread over workers
                    r = c.get(f"http://127.0.0.1:{port}/v1/models")
                ok += r.status_code == 200 and r.json()["data"][0]["id"] == "m"
            except httpx.HTTPError:
                time.sleep(0.1)
        assert ok == 20
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) >= 2  # the workers (plus multiprocessing's resource tracker)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode()[-2000:]
    assert b"Traceback" not in out, out.decode()[-2000:]
