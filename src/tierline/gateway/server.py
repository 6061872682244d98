"""Running the gateway: in the foreground (`tierline serve`) or in a background thread on
an ephemeral loopback port (tests, `tierline bench`, `tierline route`)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from pathlib import Path
from types import TracebackType

import uvicorn

from tierline.config import Config
from tierline.errors import ConfigError
from tierline.gateway import h1server
from tierline.gateway.app import Gateway, create_app
from tierline.gateway.h1server import H1Server
from tierline.keys import ledger
from tierline.keys.auth import open_mode_problem
from tierline.keys.ledger import ledger_path

log = logging.getLogger("tierline.server")


def _uvicorn_config(app: Gateway | str, host: str, port: int, *, log_level: str,
                    workers: int = 1) -> uvicorn.Config:
    try:
        import uvloop  # noqa: F401
        loop = "uvloop"
    except ImportError:  # pragma: no cover - platforms without uvloop
        loop = "asyncio"
    return uvicorn.Config(app, host=host, port=port, loop=loop, http="httptools",
                          lifespan="on", log_level=log_level, access_log=False,
                          server_header=False, date_header=False, proxy_headers=False,
                          timeout_keep_alive=75, backlog=4096, workers=workers,
                          factory=isinstance(app, str))


WORKER_CONFIG_ENV = "TIERLINE_WORKER_CONFIG"
WORKERS_ENV = "TIERLINE_WORKERS"


def worker_app() -> Gateway:
    """The app of one worker process (`server.workers` > 1): the config comes from the
    file the parent loaded, through the environment."""

    return create_app(worker_config(os.environ.get(WORKER_CONFIG_ENV) or None))


def worker_config(path: str | None) -> Config:
    """The config of one worker process: the file, with the parent's worker count."""
    from tierline.config import load_config

    config = load_config(path)
    n = os.environ.get(WORKERS_ENV)
    if n and n.isdigit():
        config.server.workers = int(n)
    return config


def check_serve_args(host: str | None, port: int | None, workers: int | None) -> None:
    """The host, port and worker count of `tierline serve` (None: not given): ConfigError,
    one line, exit code 2. (Out of range, a port wrapped around modulo 65536 and a worker
    count below 1 silently ran one process.)"""
    if port is not None and (isinstance(port, bool) or not 0 <= port <= 65535):
        raise ConfigError(f"--port must be between 1 and 65535 (0: any free port), got {port}")
    if workers is not None and (isinstance(workers, bool) or not 1 <= workers <= 64):
        raise ConfigError(f"--workers must be between 1 and 64, got {workers}")
    if port == 0 and workers is not None and workers > 1:
        raise ConfigError("--workers needs a fixed --port (with 0 each worker would listen "
                          "on a random port of its own)")
    if host is not None and not host.strip():
        raise ConfigError("--host must not be empty")


def check_request_log(config: Config) -> None:
    """Open (create) the request log once, so that a path that cannot be one is a one-line
    error at start-up rather than a traceback in the app or in every worker."""
    if config.server.request_log == "off":
        return
    from tierline.accounting.log import connect

    connect(config.request_log_path(), timeout=5.0).close()


#: the open lock file of this process's ledger (kept open for the life of the process)
_ledger_lock: int | None = None


def claim_ledger(path: Path) -> bool:
    """Take a shared lock on the ledger's lock file for the life of this process; reset the
    ledger first when no other live gateway holds it. True when it was reset.

    A second gateway with workers on the same key store (another port) must not unlink the
    ledger under the running one: it joins it instead (the two then share budgets and limits,
    which is what one key store means). The lock dies with the process, even by SIGKILL."""
    global _ledger_lock
    import fcntl

    lock_path = Path(str(path) + ".lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise ConfigError(f"cannot open the workers' ledger lock {lock_path}: "
                          f"{e.strerror or e}") from None
    reset = False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.warning("another gateway uses the ledger %s (the same key store): sharing it, "
                    "not starting it afresh", path)
    else:
        ledger.reset(path)
        reset = True
    fcntl.flock(fd, fcntl.LOCK_SH)  # held until this process exits
    if _ledger_lock is not None:
        os.close(_ledger_lock)
    _ledger_lock = fd
    return reset


def serve(config: Config, *, host: str | None = None, port: int | None = None,
          config_path: str | None = None) -> None:
    host = host or config.server.host
    port = port if port is not None else config.server.port
    check_serve_args(host, port, config.server.workers)
    problem = open_mode_problem(config, host)
    if problem is not None:
        if problem.fatal:
            raise ConfigError(str(problem))
        log.warning("%s", problem)
    # before anything is started or reset: a host that is not ours, a port in use
    h1server.check_port(host, port)
    check_request_log(config)
    if config.server.workers > 1:
        # the workers re-read the config file: tell them how many they are; their budgets and
        # limits share a ledger, started afresh (spend is re-read from the request log)
        # unless another live gateway on the same key store uses it
        os.environ[WORKERS_ENV] = str(config.server.workers)
        claim_ledger(ledger_path(config))
    app = create_app(config)
    if not app.keys.enabled():
        log.warning("no API keys configured: the gateway runs open, on %s only "
                    "(set keys.master_key and create keys to require them)", host)
    names = ", ".join(app.catalog.deployments) or "none"
    log.info("serving %d deployments: %s", len(app.catalog.deployments), names)
    workers = config.server.workers
    if config.server.http == "tierline":
        if workers > 1:
            log.info("starting %d worker processes", workers)
            h1server.run_workers(workers, host, port, config_path)
        else:
            h1server.run(app, host, port)
        return
    if workers > 1:
        # N processes share the port; each runs its own app (budgets, limits and circuit
        # breakers are per process; the request log is one SQLite file in WAL mode)
        os.environ[WORKER_CONFIG_ENV] = config_path or ""
        log.info("starting %d worker processes", workers)
        cfg = _uvicorn_config("tierline.gateway.server:worker_app", host, port,
                              log_level="info", workers=workers)
        uvicorn.run("tierline.gateway.server:worker_app", factory=True, workers=workers,
                    host=host, port=port, loop=cfg.loop, http="httptools", lifespan="on",
                    log_level="info", access_log=False, server_header=False,
                    date_header=False, proxy_headers=False, timeout_keep_alive=75,
                    backlog=4096)
        return
    uvicorn.Server(_uvicorn_config(app, host, port, log_level="info")).run()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class GatewayThread:
    """`with GatewayThread(config) as g: g.base_url` — a real HTTP gateway on loopback."""

    def __init__(self, config: Config | None = None, *, app: Gateway | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app or create_app(config)
        self.host = host
        self.port = port or free_port(host)
        self._server: uvicorn.Server | H1Server
        if self.app.config.server.http == "tierline":
            self._server = H1Server.for_gateway(self.app, self.host, self.port)
        else:
            self._server = uvicorn.Server(_uvicorn_config(self.app, self.host, self.port,
                                                          log_level="warning"))
        self._thread = threading.Thread(target=self._run, name="tierline-gateway", daemon=True)

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def _run(self) -> None:
        # the same event loop as `tierline serve` (uvloop where installed)
        with asyncio.Runner(loop_factory=h1server.new_loop) as runner:
            runner.run(self._server.serve())

    def start(self) -> GatewayThread:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if isinstance(self._server, H1Server):
            self._server.request_exit()
        else:
            self._server.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> GatewayThread:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
