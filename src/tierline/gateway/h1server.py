"""The gateway's HTTP server: listening socket(s), start-up / shutdown of the app, idle
keep-alive sweeping, graceful stop, and N worker processes sharing a port.

`H1Server(app, host, port).serve()` starts the app (providers, request log, router), then
accepts connections (`h1.H1Connection`; beyond `max_connections` open ones, a new connection
is closed at once); a sweeper closes idle connections and answers 408 to requests whose head
or body is not received in time (`request_header_timeout`, `request_body_timeout`);
`request_exit()` (or SIGINT / SIGTERM with `install_signals=True`) stops accepting, closes
idle connections, lets requests in flight finish for up to `graceful_timeout` seconds,
cancels the rest and shuts the app down.

`run_workers(n, ...)` runs n processes, each its own event loop and app, on one port
(SO_REUSEPORT: the kernel spreads connections over them); a worker that dies is replaced.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from tierline.gateway.chat import RequestIds
from tierline.gateway.h1 import H1Connection

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from tierline.gateway.app import Gateway

log = logging.getLogger("tierline.server")


class H1Server:
    def __init__(self, app: Gateway, host: str, port: int, *, keep_alive_timeout: float = 75.0,
                 request_header_timeout: float = 10.0, request_body_timeout: float = 30.0,
                 max_connections: int = 4096, graceful_timeout: float = 30.0,
                 backlog: int = 4096, reuse_port: bool = False) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.keep_alive_timeout = keep_alive_timeout
        self.request_header_timeout = request_header_timeout
        self.request_body_timeout = request_body_timeout
        self.max_connections = max_connections
        self.refused = 0  # connections closed at once (max_connections reached)
        self._refused_logged = -1e9
        self.graceful_timeout = graceful_timeout
        self.backlog = backlog
        self.reuse_port = reuse_port
        self.connections: set[H1Connection] = set()
        # ids (`x-request-id`) for the replies the server makes itself (protocol errors,
        # a crashed app): the app's own sequence when it has one, so ids stay unique
        ids: Callable[[], str] | None = getattr(app, "new_request_id", None)
        self.new_request_id: Callable[[], str] = ids if callable(ids) else RequestIds()
        self.should_exit = False
        self.started = False
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set by serve
        self._exit: asyncio.Event | None = None

    @classmethod
    def for_gateway(cls, app: Gateway, host: str, port: int, *,
                    reuse_port: bool = False) -> H1Server:
        """A server with the gateway config's settings (timeouts, connection limit)."""
        s = app.config.server
        return cls(app, host, port, keep_alive_timeout=s.keep_alive_timeout,
                   request_header_timeout=s.request_header_timeout,
                   request_body_timeout=s.request_body_timeout,
                   max_connections=s.max_connections, reuse_port=reuse_port)

    def refused_connection(self) -> None:
        self.refused += 1
        now = self.loop.time()
        if now - self._refused_logged >= 60:
            self._refused_logged = now
            log.warning("%d connections open (server.max_connections): new ones are closed "
                        "(%d so far)", self.max_connections, self.refused)

    def request_exit(self) -> None:
        """Ask the server to stop (thread-safe)."""
        self.should_exit = True
        if self._exit is not None:
            self.loop.call_soon_threadsafe(self._exit.set)

    async def serve(self, *, install_signals: bool = False) -> None:
        self.loop = asyncio.get_running_loop()
        self._exit = asyncio.Event()
        if self.should_exit:
            return
        await self.app.startup()
        server: asyncio.Server | None = None
        try:
            server = await self.loop.create_server(
                lambda: H1Connection(self), self.host, self.port, backlog=self.backlog,
                reuse_port=self.reuse_port or None)
            if install_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    self.loop.add_signal_handler(sig, self.request_exit)
            self.started = True
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                log.info("listening on http://%s:%d", f"[{host}]" if ":" in host else host,
                         port)
            sweep = self.loop.call_later(self._sweep_every(), self._sweep)
            try:
                await self._exit.wait()
            finally:
                sweep.cancel()
            server.close()
            await self._drain_connections()
        finally:
            if server is not None:
                server.close()
            await self.app.shutdown()
            self.started = False

    def _sweep_every(self) -> float:
        shortest = min(self.keep_alive_timeout, self.request_header_timeout,
                       self.request_body_timeout)
        return max(0.05, min(1.0, shortest / 4))

    def _sweep(self) -> None:
        now = self.loop.time()
        for c in list(self.connections):
            if c.active is None and now - c.last_activity > self.keep_alive_timeout:
                # idle; or a client that does not read its replies: if it read some since
                # the last sweep, that is progress, else what it left unread is dropped
                buffered = c.write_buffered()
                if buffered and buffered < c.swept_buffer:
                    c.swept_buffer = buffered
                    c.last_activity = now
                    continue
                c.close(abort=buffered > 0)
            elif now > c.recv_deadline and not c.read_paused and not c.closing:
                c.timed_out()
            else:
                c.swept_buffer = c.write_buffered()
        if not self.should_exit:
            self.loop.call_later(self._sweep_every(), self._sweep)

    async def _drain_connections(self) -> None:
        for c in list(self.connections):
            if c.active is None:
                c.close()
        deadline = time.monotonic() + self.graceful_timeout
        while any(c.active is not None for c in self.connections) \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        tasks = [c.task for c in self.connections if c.task is not None]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for c in list(self.connections):
            c.close()


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - platforms without uvloop
        return asyncio.new_event_loop()


def run(app: Gateway, host: str, port: int, *, reuse_port: bool = False) -> None:
    """Serve in the foreground until SIGINT / SIGTERM."""
    server = H1Server.for_gateway(app, host, port, reuse_port=reuse_port)
    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(server.serve(install_signals=True))


def check_port(host: str, port: int) -> None:
    """Fail early (ConfigError, one line), in the parent, if `host:port` cannot be listened
    on: a host that does not resolve or is not an address of this machine, or a port that
    something already listens on.

    The probe binds every address the server would, *without* SO_REUSEPORT: a bind with it
    succeeds beside a listener of the same user that set it too (another tierline gateway
    with workers), and the kernel would then spread connections over both gateways."""
    from tierline.errors import ConfigError

    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        reason = e.strerror if isinstance(e, socket.gaierror) and e.strerror else str(e)
        raise ConfigError(f"cannot listen on {where}: {reason}") from None
    for family, type_, proto, _, addr in {(i[0], i[1], i[2], "", i[4]) for i in infos}:
        try:
            with socket.socket(family, type_, proto) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server
                if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind(addr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ConfigError(f"cannot listen on {where}: address already in use "
                                  f"(another gateway or program listens there)") from None
            raise ConfigError(f"cannot listen on {where}: {e.strerror or e}") from None


def run_workers(n: int, host: str, port: int, config_path: str | None) -> None:
    """n worker processes on one port; each builds its app from `config_path`."""
    check_port(host, port)
    ctx = multiprocessing.get_context("spawn")
    procs: dict[int, BaseProcess] = {}
    stopping = False

    def start(i: int) -> None:
        p = ctx.Process(target=_worker_main, args=(host, port, config_path, os.getpid()),
                        name=f"tierline-worker-{i}")
        p.start()
        procs[i] = p

    def stop(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for p in procs.values():
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    started = {i: time.monotonic() for i in range(n)}
    for i in range(n):
        start(i)
    while procs:
        time.sleep(0.2)
        for i, p in list(procs.items()):
            if p.is_alive():
                continue
            p.join()
            if stopping:
                del procs[i]
                continue
            if time.monotonic() - started[i] < 5.0:
                log.error("worker %d exited at start-up (code %s); stopping", i, p.exitcode)
                stop(signal.SIGTERM, None)
                del procs[i]
                continue
            log.warning("worker %d exited (code %s); starting a new one", i, p.exitcode)
            started[i] = time.monotonic()
            start(i)


def _exit_with_parent(parent: int) -> None:
    """Make this worker exit when the parent gateway process dies (even by SIGKILL): the
    kernel sends SIGTERM (Linux: PR_SET_PDEATHSIG), and a thread watching the parent pid
    covers other systems and a parent that died before the call."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - no prctl: the thread does it
            pass

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                log.warning("the gateway's parent process %d is gone; this worker stops",
                            parent)
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(35.0)  # the graceful stop's limit, then no matter what
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, name="tierline-parent-watch", daemon=True).start()


def _worker_main(host: str, port: int, config_path: str | None,
                 parent: int | None = None) -> None:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if parent is not None:
        _exit_with_parent(parent)
    from tierline.errors import TierlineError
    from tierline.gateway.app import create_app
    from tierline.gateway.server import worker_config

    try:
        run(create_app(worker_config(config_path)), host, port, reuse_port=True)
    except TierlineError as e:  # a start-up error: one line, as the parent prints them
        print(f"tierline: error: {e.message}", file=sys.stderr)
        sys.exit(2)
