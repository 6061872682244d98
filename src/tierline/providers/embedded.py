"""The embedded provider: an open-weight GGUF model run in-process with xllamacpp.

One llama.cpp server (`xllamacpp.Server`) per deployment, loaded lazily on first use (or
by `warmup`) in a worker thread. Every call runs on the deployment's own small thread pool
(`parallel` threads, one per llama.cpp slot) so the event loop never blocks; stream chunks
travel from llama.cpp's callback thread to the loop with `call_soon_threadsafe`.

Admission is FIFO: at most `parallel` calls run, at most `queue_size` wait; beyond that
the call fails fast with `UpstreamOverloaded` (HTTP 429) and a `retry_after` estimated from
the queue length and the recent service time. Closing a stream early makes the callback
return True, which stops llama.cpp generating.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tierline.catalog.model import EMBEDDED_N_CTX, Deployment, ProviderSpec
from tierline.errors import (
    ConfigError,
    ContextLengthExceeded,
    UpstreamBadResponse,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamStatusError,
)
from tierline.types import JSON, ChatRequest, ChatResponse, StreamChunk, Usage

_DONE = object()
# Keys llama.cpp must not see (tierline's own / irrelevant to a local model).
_DROP = ("model", "tierline", "stream", "stream_options", "n", "max_completion_tokens")


class _Admission:
    """A FIFO gate: `slots` concurrent holders, at most `limit` waiters."""

    def __init__(self, slots: int, limit: int) -> None:
        self.slots = slots
        self.limit = limit
        self.active = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    def full(self) -> bool:
        return len(self.waiters) >= self.limit

    async def acquire(self) -> None:
        if self.active < self.slots and not self.waiters:
            self.active += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed to us as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(fut)
            raise

    def release(self) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # hand the slot over; `active` is unchanged
                return
        self.active -= 1


class _Engine:
    """One deployment's model: its llama.cpp server, thread pool and admission gate."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.parallel = deployment.parallel
        self.executor = ThreadPoolExecutor(max_workers=self.parallel,
                                           thread_name_prefix=f"embedded-{deployment.name}")
        self.admission = _Admission(self.parallel, deployment.queue_size)
        self.server: Any = None
        self.load_seconds: float | None = None
        self._lock = threading.Lock()
        self.cancels: set[threading.Event] = set()  # cancel flags of running calls
        self.avg_seconds = 1.0  # moving average of a call's duration, for retry_after

    def load(self) -> Any:
        """Load the model once (thread-safe); return the server. Runs in a worker thread."""
        with self._lock:
            if self.server is None:
                self.server = _load_server(self.deployment)
            return self.server

    def record(self, seconds: float) -> None:
        self.avg_seconds = 0.8 * self.avg_seconds + 0.2 * seconds

    def retry_after(self) -> float:
        waiting = len(self.admission.waiters) + 1
        return float(max(1, math.ceil(waiting / self.parallel * self.avg_seconds)))

    def close(self) -> None:
        for flag in list(self.cancels):
            flag.set()
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.server = None


def model_path(deployment: Deployment) -> str:
    """The GGUF file of `deployment`: its `path`, or the builtin model's cached weights."""
    from tierline.models import fetch

    if deployment.path:
        return str(fetch.resolve(deployment.name, deployment.path))
    for name in (deployment.model, deployment.name):
        if fetch.is_builtin(name):
            return str(fetch.resolve(name))
    raise ConfigError(f"embedded deployment {deployment.name!r} needs a `path` to a GGUF file "
                      f"(or a builtin model name as `model`)")


def _load_server(deployment: Deployment) -> Any:
    import xllamacpp

    threads = deployment.threads or os.cpu_count() or 1
    p = xllamacpp.CommonParams()
    p.model.path = model_path(deployment)
    # llama.cpp splits its context over the slots: allocate n_ctx for each of them, so that
    # every request gets the n_ctx tokens that routing and /v1/models promise (the KV cache
    # of the built-in 135M model is ~23 KB per token: ~45 MB per 2048-token slot)
    p.n_ctx = (deployment.n_ctx or EMBEDDED_N_CTX) * deployment.parallel
    p.n_parallel = deployment.parallel
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    p.verbosity = -1  # silence llama.cpp's per-request logging
    return xllamacpp.Server(p)


def _map_error(err: Any, name: str) -> UpstreamError:
    """A llama.cpp error object (`{"code", "message", "type"}`) as a tierline error."""
    if not isinstance(err, dict):
        return UpstreamBadResponse(f"embedded model {name!r} failed: {str(err)[:200]}",
                                   deployment=name)
    msg = str(err.get("message") or err.get("type") or "error")[:300]
    text = f"embedded model {name!r}: {msg}"
    if err.get("type") == "exceed_context_size_error" or "context size" in msg:
        return ContextLengthExceeded(text, deployment=name)
    code = err.get("code")
    if isinstance(code, int) and 400 <= code < 500 and code != 429:
        return UpstreamStatusError(text, upstream_status=code, deployment=name)
    return UpstreamBadResponse(text, deployment=name)


class EmbeddedProvider:
    """Provider for deployments whose vendor wire is `embedded`."""

    def __init__(self, spec: ProviderSpec) -> None:
        self.spec = spec
        self._engines: dict[str, _Engine] = {}
        self._engines_lock = threading.Lock()

    # -- engines -------------------------------------------------------------------------

    def _engine(self, deployment: Deployment) -> _Engine:
        with self._engines_lock:
            eng = self._engines.get(deployment.name)
            if eng is None:
                eng = self._engines[deployment.name] = _Engine(deployment)
            return eng

    async def warmup(self, deployment: Deployment) -> float:
        """Load the deployment's model now; return the seconds it took (0 if loaded)."""
        eng = self._engine(deployment)
        if eng.server is not None:
            return 0.0
        t0 = time.perf_counter()
        await asyncio.get_running_loop().run_in_executor(eng.executor, eng.load)
        return time.perf_counter() - t0

    async def _admit(self, eng: _Engine) -> None:
        if eng.admission.full():
            ra = eng.retry_after()
            raise UpstreamOverloaded(
                f"embedded model {eng.deployment.name!r} is overloaded "
                f"({len(eng.admission.waiters)} requests queued)",
                deployment=eng.deployment.name, retry_after=ra,
                headers={"retry-after": str(int(ra))})
        await eng.admission.acquire()

    # -- request shaping -----------------------------------------------------------------

    def _body(self, request: ChatRequest, deployment: Deployment, stream: bool) -> JSON:
        src = request.body
        body = {k: v for k, v in src.items() if k not in _DROP}
        limits = [v for v in (src.get("max_tokens"), src.get("max_completion_tokens"),
                              request.max_output_tokens, deployment.max_output_tokens)
                  if isinstance(v, int) and v > 0]
        if limits:
            body["max_tokens"] = min(limits)
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    @staticmethod
    def _n(request: ChatRequest) -> int:
        n = request.body.get("n")
        return n if isinstance(n, int) and n > 1 else 1

    def _finish(self, body: JSON, deployment: Deployment) -> JSON:
        body["model"] = deployment.name
        body.pop("timings", None)
        return body

    # -- calls ---------------------------------------------------------------------------

    @staticmethod
    def _load(eng: _Engine) -> Any:
        """Worker thread: the loaded server; a load failure fails this call (failover)."""
        name = eng.deployment.name
        try:
            return eng.load()
        except ConfigError as e:
            raise UpstreamConnectionError(f"embedded model {name!r} unavailable: {e.message}",
                                          deployment=name) from e
        except Exception as e:
            raise UpstreamConnectionError(f"embedded model {name!r} failed to load: "
                                          f"{type(e).__name__}: {str(e)[:200]}",
                                          deployment=name) from e

    def _run_complete(self, eng: _Engine, body: JSON, n: int,
                      cancelled: threading.Event) -> JSON:
        """Worker thread: `n` completions, each run as a stream so `cancelled` stops it.

        llama.cpp's own `n` under-counts usage, so choices are generated one by one.
        """
        from tierline.models.assemble import assemble

        name = eng.deployment.name
        server = self._load(eng)
        results: list[JSON] = []
        for i in range(n):
            b = {**body, "stream": True, "stream_options": {"include_usage": True}}
            if i and isinstance(b.get("seed"), int):
                b["seed"] = b["seed"] + i
            chunks: list[JSON] = []

            def cb(chunk: Any, chunks: list[JSON] = chunks) -> bool:
                chunks.append(chunk)
                return cancelled.is_set()  # True makes llama.cpp stop generating

            try:
                server.handle_chat_completions(b, cb)
            except ValueError as e:
                raise UpstreamStatusError(f"embedded model {name!r} rejected the request: "
                                          f"{str(e)[:200]}", upstream_status=400,
                                          deployment=name) from e
            except Exception as e:
                raise UpstreamBadResponse(f"embedded model {name!r} failed: "
                                          f"{type(e).__name__}", deployment=name) from e
            for c in chunks:
                if not isinstance(c, dict) or "error" in c:
                    raise _map_error(c.get("error") if isinstance(c, dict) else c, name)
            if cancelled.is_set():
                raise UpstreamBadResponse(f"embedded call to {name!r} was cancelled",
                                          deployment=name)
            results.append(assemble(chunks))
        out = results[0]
        if n > 1:
            completion = 0
            for i, r in enumerate(results):
                r["choices"][0]["index"] = i
                completion += int((r.get("usage") or {}).get("completion_tokens") or 0)
            out["choices"] = [r["choices"][0] for r in results]
            usage = dict(out.get("usage") or {})
            usage["completion_tokens"] = completion
            usage["total_tokens"] = int(usage.get("prompt_tokens") or 0) + completion
            out["usage"] = usage
        return out

    async def complete(self, request: ChatRequest, deployment: Deployment) -> ChatResponse:
        eng = self._engine(deployment)
        body = self._body(request, deployment, stream=False)
        await self._admit(eng)
        loop = asyncio.get_running_loop()
        cancelled = threading.Event()
        t0 = time.perf_counter()
        try:
            fut = loop.run_in_executor(eng.executor, self._run_complete, eng, body,
                                       self._n(request), cancelled)
        except BaseException:
            eng.admission.release()
            raise
        eng.cancels.add(cancelled)
        fut.add_done_callback(lambda f: self._done(eng, t0, f))
        try:
            result = await asyncio.shield(fut)
        finally:
            cancelled.set()  # when this task was cancelled: stop generating
            eng.cancels.discard(cancelled)
        result = self._finish(result, deployment)
        usage = Usage.from_openai(result.get("usage")) or Usage(estimated=True)
        return ChatResponse(body=result, usage=usage)

    def _done(self, eng: _Engine, t0: float, fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled():
            fut.exception()  # retrieved here: a cancelled caller may never await it
        eng.record(time.perf_counter() - t0)
        eng.admission.release()

    def _run_stream(self, eng: _Engine, body: JSON,
                    emit: Callable[[object], None], cancelled: threading.Event) -> None:
        """Worker thread: run a streaming completion, pushing chunks through `emit`."""
        name = eng.deployment.name

        def send(item: object) -> None:
            try:
                emit(item)
            except RuntimeError:  # the event loop is gone
                cancelled.set()

        def cb(chunk: Any) -> bool:
            if not cancelled.is_set():
                send(chunk)
            return cancelled.is_set()  # True makes llama.cpp stop generating

        try:
            if not cancelled.is_set():
                self._load(eng).handle_chat_completions(body, cb)
        except ValueError as e:
            send(UpstreamStatusError(f"embedded model {name!r} rejected the request: "
                                     f"{str(e)[:200]}", upstream_status=400, deployment=name))
        except UpstreamError as e:
            send(e)
        except Exception as e:
            send(UpstreamBadResponse(f"embedded model {name!r} failed: {type(e).__name__}",
                                     deployment=name))
        finally:
            send(_DONE)

    async def stream(
        self, request: ChatRequest, deployment: Deployment
    ) -> AsyncIterator[StreamChunk]:
        name = deployment.name
        if self._n(request) > 1:
            raise UpstreamStatusError(f"embedded model {name!r} cannot stream n > 1",
                                      upstream_status=400, deployment=name, param="n")
        eng = self._engine(deployment)
        body = self._body(request, deployment, stream=True)
        await self._admit(eng)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancelled = threading.Event()
        eng.cancels.add(cancelled)

        def emit(item: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        t0 = time.perf_counter()
        try:
            fut = loop.run_in_executor(eng.executor, self._run_stream, eng, body, emit,
                                       cancelled)
        except BaseException:
            eng.admission.release()
            raise
        fut.add_done_callback(lambda f: self._done(eng, t0, f))
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                if not isinstance(item, dict):
                    raise UpstreamBadResponse(f"embedded model {name!r} sent a non-object "
                                              f"chunk", deployment=name)
                if "error" in item:
                    raise _map_error(item["error"], name)
                usage = Usage.from_openai(item.get("usage")) if item.get("usage") else None
                yield StreamChunk(data=self._finish(item, deployment), usage=usage)
        finally:
            cancelled.set()
            eng.cancels.discard(cancelled)

    async def aclose(self) -> None:
        with self._engines_lock:
            engines = list(self._engines.values())
            self._engines.clear()
        loop = asyncio.get_running_loop()
        for eng in engines:
            await loop.run_in_executor(None, eng.close)
