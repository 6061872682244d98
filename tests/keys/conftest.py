"""Fixtures for the key tests: a temp key store and a config pointing at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tierline.config import Config, parse_config
from tierline.keys.store import KeyStore


def make_config(tmp: Path, **keys: object) -> Config:
    return parse_config({"keys": {"store": str(tmp / "keys.sqlite3"), **keys},
                         "server": {"request_log": str(tmp / "requests.sqlite3")}})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[KeyStore]:
    s = KeyStore(tmp_path / "keys.sqlite3")
    yield s
    s.close()
