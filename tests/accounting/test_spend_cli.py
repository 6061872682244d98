"""`tierline spend` on a real request log: --since is parsed (an unreadable date is an
error, not an empty answer), and a file that is not a request log is a one-line error."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tierline.accounting.log import LogRecord, RequestLog
from tierline.cli import main


def _ts(day: int, hour: int = 12) -> float:
    return datetime(2025, 6, day, hour, tzinfo=UTC).timestamp()


@pytest.fixture
def log(tmp_path: Path) -> Path:
    db = tmp_path / "requests.sqlite3"
    rl = RequestLog(db)
    for i, ts in enumerate((_ts(1), _ts(2, 1), _ts(3))):
        rl.write(LogRecord(id=f"r{i}", ts=ts, status=200, deployment="m/x",
                           cost_pico=1_000_000))
    rl.close()
    return db


def test_since(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def requests(since: str) -> int:
        assert main(["spend", "--log", str(log), "--json", "--since", since]) == 0
        return sum(r["requests"] for r in json.loads(capsys.readouterr().out)["rows"])

    assert requests("2025-06-02") == 2
    assert requests("2025-06-02T02:00") == 1
    assert requests("2025-06-02T03:00+02:00") == 2  # = 01:00 UTC
    assert requests("2025-06-04") == 0


@pytest.mark.parametrize("since", ["garbage", "yesterday", "2025-13-01"])
def test_bad_since_is_an_error(log: Path, since: str,
                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["spend", "--log", str(log), "--since", since]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tierline: error: --since expects a date") and since in err


def test_not_a_request_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("this is not SQLite\n" * 100)
    assert main(["spend", "--log", str(junk)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tierline: error:") and "not a tierline request log" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["x#y", "a?b", "p%41q"])
def test_a_log_path_with_uri_characters(tmp_path: Path, name: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """`file:{path}?mode=ro` unquoted cut the path at `#` / `?` (and created a stray file)."""
    db = tmp_path / name / "r.sqlite3"
    rl = RequestLog(db)
    rl.write(LogRecord(id="r1", ts=_ts(1), status=200, deployment="m/x", cost_pico=7))
    rl.close()
    assert main(["spend", "--log", str(db), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"][0]["cost_pico"] == 7
    assert [p.name for p in tmp_path.iterdir()] == [name]
