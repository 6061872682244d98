"""`tierline keys create | list | revoke` through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tierline.cli import main
from tierline.keys.store import KeyStore


@pytest.fixture
def config_file(tmp_path: Path) -> str:
    p = tmp_path / "tierline.yaml"
    p.write_text(f"keys:\n  store: {tmp_path / 'keys.sqlite3'}\n")
    return str(p)


def test_create_list_revoke(config_file: str, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["keys", "create", "--config", config_file, "--name", "ci", "--models",
               "tier:small,auto", "--budget-usd", "2.5", "--period", "day", "--rpm", "30",
               "--tpm", "5000", "--region", "eu", "--zdr", "--open-weight", "--json"])
    assert rc == 0
    created = json.loads(capsys.readouterr().out)
    secret, kid = created["key"], created["id"]
    assert created["models"] == ["tier:small", "auto"] and created["period"] == "day"
    assert created["zdr"] and created["open_weight"] and created["region"] == "eu"

    assert main(["keys", "create", "--config", config_file, "--name", "plain"]) == 0
    out = capsys.readouterr().out
    assert "tl-" in out and "cannot be shown again" in out

    assert main(["keys", "list", "--config", config_file, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [k["name"] for k in listed] == ["ci", "plain"]
    assert secret not in json.dumps(listed)

    assert main(["keys", "list", "--config", config_file]) == 0
    out = capsys.readouterr().out
    assert kid in out and "$2.5/day" in out and "30 rpm" in out and secret not in out

    assert main(["keys", "revoke", "--config", config_file, kid]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["keys", "revoke", "--config", config_file, "key_nope"]) == 1

    s = KeyStore(tmp_path / "keys.sqlite3")
    try:
        assert s.authenticate(secret) is None
        assert s.get(kid) is not None and s.get(kid).revoked  # type: ignore[union-attr]
    finally:
        s.close()
    assert secret.encode() not in (tmp_path / "keys.sqlite3").read_bytes()


def test_bad_values_are_one_line_errors(config_file: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create", "--config", config_file, "--name", "x", "--rpm", "0"]) == 2
    err = capsys.readouterr().err
    assert "--rpm" in err and "positive integer" in err and "Traceback" not in err
    assert main(["keys", "create", "--config", config_file, "--name", "x", "--models",
                 ","]) == 2  # not "every model"
    assert "names nothing" in capsys.readouterr().err


def test_empty_list(config_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "list", "--config", config_file]) == 0
    assert "no keys" in capsys.readouterr().out
