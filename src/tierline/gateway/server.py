"""Running the gateway: in the foreground (`tierline serve`) or in a background thread on
an ephemeral loopback port (tests, `tierline bench`, `tierline route`)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
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


def serve(config: Config, *, host: str | None = None, port: int | None = None,
          config_path: str | None = None) -> None:
    host = host or config.server.host
    port = port if port is not None else config.server.port
    problem = open_mode_problem(config, host)
    if problem is not None:
        if problem.fatal:
            raise ConfigError(str(problem))
        log.warning("%s", problem)
    if config.server.workers > 1:
        # the workers re-read the config file: tell them how many they are; their budgets and
        # limits share a ledger, started afresh (spend is re-read from the request log)
        os.environ[WORKERS_ENV] = str(config.server.workers)
        ledger.reset(ledger_path(config))
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
