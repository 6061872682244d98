"""`tierline serve` start-up: bad arguments and unusable hosts, ports and request logs are one
line on stderr and exit code 2 (no traceback); `--workers` never shares a port another
gateway listens on, never resets a ledger a live gateway uses, and its workers do not
outlive their parent."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.gateway.test_workers import serve_two_workers, wait_ready
from tierline.gateway.server import free_port


def serve(data: Path, *args: str) -> tuple[int, str]:
    """`tierline serve ARGS` in a subprocess (a bad argument used to start a server that
    never returns); its exit code and stderr."""
    env = {**os.environ, "TIERLINE_DATA_DIR": str(data)}
    env.pop("TIERLINE_CONFIG", None)
    try:
        r = subprocess.run([sys.executable, "-m", "tierline.cli", "serve", *args], env=env,
                           capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"`tierline serve {' '.join(args)}` kept running") from e
    return r.returncode, r.stderr


def one_line_error(err: str, *words: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and " WARNING " not in ln]
    assert len(lines) == 1 and lines[0].startswith("tierline: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], err
    return lines[0]


@pytest.mark.parametrize(("args", "words"), [
    (["--port", "70000"], ["--port", "70000"]),  # wrapped around to 4464 and ran
    (["--port", "-5"], ["--port", "-5"]),  # gaierror traceback
    (["--workers", "0"], ["--workers", "0"]),  # silently ran one process
    (["--workers", "-1"], ["--workers", "-1"]),
    (["--port", "0", "--workers", "2"], ["--workers", "fixed --port"]),
])
def test_bad_port_or_workers(tmp_path: Path, args: list[str], words: list[str]) -> None:
    code, err = serve(tmp_path, *args, "--config", open_config(tmp_path))
    assert code == 2, err
    one_line_error(err, *words)


def open_config(path: Path, extra: str = "") -> str:
    cfg = path / "open.yaml"
    cfg.write_text("keys:\n  require: false\ncatalog:\n  builtin: false\n" + extra)
    return str(cfg)


@pytest.mark.parametrize(("host", "words"), [
    ("foo.invalid", ["cannot listen on foo.invalid"]),  # socket.gaierror
    ("10.99.99.99", ["cannot listen on 10.99.99.99", "assign"]),  # OSError errno 99
])
def test_a_host_that_cannot_be_listened_on(tmp_path: Path, host: str,
                                           words: list[str]) -> None:
    code, err = serve(tmp_path, "--config", open_config(tmp_path), "--host", host,
                      "--port", str(free_port()))
    assert code == 2, err
    one_line_error(err, *words)


def test_a_port_in_use_single_process(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, err = serve(tmp_path, "--config", open_config(tmp_path), "--port", str(port))
    assert code == 2, err
    one_line_error(err, "address already in use", str(port))


@pytest.mark.parametrize("kind", ["under a file", "a directory"])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_request_log_that_cannot_be_opened(tmp_path: Path, kind: str,
                                             workers: str) -> None:
    data = tmp_path
    (data / "plain").write_text("x")
    (data / "dir.sqlite3").mkdir()
    where = data / "plain" / "x.sqlite3" if kind == "under a file" else data / "dir.sqlite3"
    cfg = open_config(data, f"server:\n  request_log: {where}\n")
    code, err = serve(data, "--config", cfg, "--port", str(free_port()),
                      "--workers", workers)
    assert code == 2, err
    one_line_error(err, "cannot open request log", str(where))


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # a zombie waiting for its reaper


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT, /proc")
def test_workers_do_not_share_a_port_with_a_running_gateway_nor_reset_its_ledger(
        tmp_path: Path) -> None:
    import asyncio

    port = free_port()
    first = serve_two_workers(tmp_path, "http://127.0.0.1:9/v1", port)
    try:
        asyncio.run(wait_ready(f"http://127.0.0.1:{port}/v1"))
        ledger = tmp_path / "keys.ledger.sqlite3"
        inode = ledger.stat().st_ino
        second = serve_two_workers(tmp_path, "http://127.0.0.1:9/v1", port)
        try:
            out, _ = second.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # it serves on the same port (the old behaviour)
            second.send_signal(signal.SIGTERM)
            second.communicate(timeout=30)
            raise
        assert second.returncode == 2, out.decode()[-2000:]
        text = out.decode()
        assert "address already in use" in text and "Traceback" not in text, text
        assert ledger.stat().st_ino == inode  # the running gateway's ledger is untouched
        # a second gateway on another port, on the same key store: joins the ledger
        other_port = free_port()
        third = serve_two_workers(tmp_path, "http://127.0.0.1:9/v1", other_port)
        try:
            asyncio.run(wait_ready(f"http://127.0.0.1:{other_port}/v1"))
            assert ledger.stat().st_ino == inode
        finally:
            third.send_signal(signal.SIGTERM)
            third.communicate(timeout=30)
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_workers_exit_when_their_parent_is_killed(tmp_path: Path) -> None:
    import asyncio

    port = free_port()
    proc = serve_two_workers(tmp_path, "http://127.0.0.1:9/v1", port)
    kids: list[int] = []
    try:
        asyncio.run(wait_ready(f"http://127.0.0.1:{port}/v1"))
        kids = _children(proc.pid)
        assert len(kids) >= 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 20
        while not all(_gone(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(_gone(k) for k in kids), "orphaned workers keep serving"
        with socket.socket() as s:  # nobody listens on the port any more
            assert s.connect_ex(("127.0.0.1", port)) != 0
    finally:
        for k in kids:  # orphans (the old behaviour): do not leave them running
            if not _gone(k):
                os.kill(k, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
