"""Run a request down a fallback chain: retries with exponential backoff and full jitter
(honouring retry-after), fail-over on retryable errors, context-length errors and (if
configured) content-policy refusals, circuit breakers updated on every attempt.

Streams fail over only until the first chunk that carries something (text, a tool call, a
finish reason, usage) arrived: `open_stream` returns the deployment, the chunks up to that
one and the rest of the iterator, so the gateway commits to a deployment only once it has
something to send.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tierline.accounting import tokens
from tierline.accounting.pricing import cost_pico
from tierline.catalog.model import Deployment
from tierline.config import ResilienceSettings
from tierline.errors import (
    ContentPolicyError,
    ContextLengthExceeded,
    NoDeploymentAvailable,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamStatusError,
    log_text,
)
from tierline.providers.base import Provider
from tierline.resilience.breaker import Breakers
from tierline.routing.filters import window_of
from tierline.types import ChatRequest, ChatResponse, StreamChunk, Usage

T = TypeVar("T")


@dataclass(slots=True)
class Attempt:
    deployment: str
    error: str | None = None
    error_type: str | None = None
    status: int | None = None


@dataclass
class Trace:
    """Everything tried for one client request (goes to the request log)."""

    attempts: list[Attempt] = field(default_factory=list)
    # spend on attempts that did not produce the answer (a hedge that lost the race)
    extra_pico: int = 0
    extra_estimated: bool = False

    def failed(self, dep: Deployment, err: UpstreamError) -> None:
        self.attempts.append(Attempt(dep.name, log_text(err), type(err).__name__,
                                     err.upstream_status))

    def ok(self, dep: Deployment) -> None:
        self.attempts.append(Attempt(dep.name))


class Executor:
    def __init__(self, providers: dict[str, Provider], settings: ResilienceSettings,
                 breakers: Breakers, *, rng: random.Random | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.providers = providers
        self.settings = settings
        self.breakers = breakers
        self.rng = rng or random.Random()
        self._sleep = sleep

    def _delay(self, attempt: int, err: UpstreamError) -> float | None:
        """Seconds to wait before retrying the same deployment, or None to fail over."""
        s = self.settings
        if attempt >= s.retries or not err.retryable or isinstance(err, UpstreamOverloaded):
            return None  # a full local queue: go elsewhere now rather than wait in line
        if err.retry_after is not None:
            return err.retry_after if err.retry_after <= s.max_retry_after else None
        return self.rng.uniform(0, min(s.backoff_max, s.backoff_base * (2 ** attempt)))

    def _next_ok(self, err: UpstreamError, dep: Deployment, rest: list[Deployment]) -> bool:
        """May the chain go on after `err` on `dep`?"""
        if isinstance(err, ContextLengthExceeded):
            return any(window_of(d) > window_of(dep) for d in rest)
        if isinstance(err, ContentPolicyError):
            return self.settings.fallback_on_content_policy
        if isinstance(err, UpstreamStatusError) and not err.retryable:
            # the upstream rejected the request itself (400/404/422), or our key (401/403)
            return err.upstream_status in (401, 403, 404)
        return True

    # -- hedging ----------------------------------------------------------------------------
    async def complete(self, req: ChatRequest, chain: list[Deployment], trace: Trace
                       ) -> tuple[Deployment, ChatResponse]:
        """The chain, hedged: if the first deployment has not answered after
        `hedge_after` seconds, the rest of the chain races it; the first answer wins, the
        other call is cancelled and its cost (reported, or estimated from the prompt) is
        added to the request's spend."""
        async def lose(result: tuple[Deployment, ChatResponse]) -> None:
            dep, resp = result
            trace.extra_pico += cost_pico(resp.usage, dep.price)
        return await self._hedged(req, chain, trace, self._complete, lose)

    async def open_stream(self, req: ChatRequest, chain: list[Deployment], trace: Trace
                          ) -> tuple[Deployment, list[StreamChunk], AsyncIterator[StreamChunk],
                                     float]:
        """Like `complete`, the race being for the first chunk that carries something."""
        async def lose(result: tuple[Deployment, list[StreamChunk],
                                     AsyncIterator[StreamChunk], float]) -> None:
            dep = result[0]
            await aclose_quietly(result[2])
            trace.extra_pico += _prompt_estimate(req, dep)
            trace.extra_estimated = True
        return await self._hedged(req, chain, trace, self._open_stream, lose)

    async def _hedged(self, req: ChatRequest, chain: list[Deployment], trace: Trace,
                      run: Callable[[ChatRequest, list[Deployment], Trace], Awaitable[T]],
                      lose: Callable[[T], Awaitable[None]]) -> T:
        after = self.settings.hedge_after
        if after is None or len(chain) < 2:
            return await run(req, chain, trace)
        first = asyncio.ensure_future(run(req, chain[:1], trace))
        try:
            early, _ = await asyncio.wait({first}, timeout=after)
        except BaseException:  # the client went away (or shutdown): stop the call too
            if first.done() and not first.cancelled() and first.exception() is None:
                await lose(first.result())
            first.cancel()
            raise
        if early:
            err = first.exception()
            if err is None:
                return first.result()
            if not isinstance(err, UpstreamError) or not self._next_ok(err, chain[0],
                                                                        chain[1:]):
                raise err
            return await run(req, chain[1:], trace)
        second = asyncio.ensure_future(run(req, chain[1:], trace))
        racers: dict[asyncio.Future[T], Deployment] = {first: chain[0], second: chain[1]}
        pending: set[asyncio.Future[T]] = {first, second}
        errors: list[BaseException] = []
        try:
            while pending:
                done, pending = await asyncio.wait(pending,
                                                   return_when=asyncio.FIRST_COMPLETED)
                winners = [t for t in done if t.exception() is None]
                errors.extend(e for t in done if (e := t.exception()) is not None)
                if winners:
                    for extra in winners[1:]:
                        await lose(extra.result())
                    for t in pending:
                        t.cancel()
                        trace.attempts.append(Attempt(racers[t].name, "hedge: lost the race, "
                                                      "cancelled", "HedgeCancelled"))
                        trace.extra_pico += _prompt_estimate(req, racers[t])
                        trace.extra_estimated = True
                    return winners[0].result()
        except BaseException:
            for t in pending:
                t.cancel()
            raise
        raise errors[-1]

    async def _down_chain(self, chain: list[Deployment], trace: Trace,
                          attempt: Callable[[Deployment], Awaitable[T]]) -> T:
        """Try `attempt` on each deployment in turn: retries with backoff on the same one,
        then fail-over, by the rules of `_delay` and `_next_ok`; once the prompt has
        overflowed a context window, no deployment with a window that small is tried again,
        whatever failed in between."""
        last: UpstreamError | None = None
        too_small = 0  # the largest context window the prompt has overflowed
        for i, dep in enumerate(chain):
            if window_of(dep) <= too_small:
                continue
            n = 0
            while True:
                probe = self.breakers.before_call(dep.name)
                try:
                    return await attempt(dep)
                except UpstreamError as e:
                    e.deployment = e.deployment or dep.name
                    trace.failed(dep, e)
                    self._record_failure(dep, e, probe)
                    last = e
                    if isinstance(e, ContextLengthExceeded):
                        too_small = max(too_small, window_of(dep))
                    delay = self._delay(n, e)
                    if delay is not None:
                        n += 1
                        await self._sleep(delay)
                        continue
                    if not self._next_ok(e, dep, chain[i + 1:]):
                        raise
                    break
        raise self._exhausted(chain, last)

    async def _complete(self, req: ChatRequest, chain: list[Deployment], trace: Trace
                        ) -> tuple[Deployment, ChatResponse]:
        async def attempt(dep: Deployment) -> tuple[Deployment, ChatResponse]:
            resp = await self.providers[dep.provider].complete(req, dep)
            self.breakers.success(dep.name)
            trace.ok(dep)
            return dep, resp
        return await self._down_chain(chain, trace, attempt)

    async def _open_stream(self, req: ChatRequest, chain: list[Deployment], trace: Trace
                           ) -> tuple[Deployment, list[StreamChunk],
                                      AsyncIterator[StreamChunk], float]:
        """Returns (deployment, the chunks up to the first one that carries something, the
        rest, monotonic time of that chunk). Chunks that carry nothing (the role-only chunk
        every OpenAI-style stream opens with, Anthropic's `message_start`) are held back,
        so a stream that fails before its first token still fails over: nothing has reached
        the client. The stream's success is recorded by its consumer, at its end."""
        async def attempt(dep: Deployment) -> tuple[Deployment, list[StreamChunk],
                                                     AsyncIterator[StreamChunk], float]:
            it = self.providers[dep.provider].stream(req, dep)
            head: list[StreamChunk] = []
            try:
                while True:
                    chunk = await anext(it)
                    head.append(chunk)
                    if carries_something(chunk):
                        break
            except StopAsyncIteration:
                await aclose_quietly(it)
                if not head:
                    raise UpstreamError(f"upstream {dep.name!r} sent an empty stream",
                                        deployment=dep.name) from None
            except BaseException:
                await aclose_quietly(it)
                raise
            return dep, head, it, time.monotonic()
        return await self._down_chain(chain, trace, attempt)

    def _record_failure(self, dep: Deployment, e: UpstreamError, probe: bool) -> None:
        # a request the upstream rejected on its merits says nothing about its health (the
        # probe, if this was it, gives its slot back: no verdict)
        if e.retryable or not isinstance(e, UpstreamStatusError):
            self.breakers.failure(dep.name)
        elif probe:
            self.breakers.release(dep.name)

    @staticmethod
    def _exhausted(chain: list[Deployment], last: UpstreamError | None) -> Exception:
        if last is None:
            return NoDeploymentAvailable("no deployment could be tried")
        if len(chain) == 1:
            return last
        err = NoDeploymentAvailable(
            f"all {len(chain)} deployments failed; last: {last.message}")
        return err


def carries_something(chunk: StreamChunk) -> bool:
    """Does this chunk tell the client anything (text, a tool call, a refusal, a finish
    reason, usage)? A role-only delta does not."""
    if chunk.usage is not None:
        return True
    for c in chunk.data.get("choices") or ():
        if not isinstance(c, dict):
            return True
        if c.get("finish_reason") is not None:
            return True
        d = c.get("delta")
        if isinstance(d, dict) and any(v for k, v in d.items() if k != "role"):
            return True
    return False


def _prompt_estimate(req: ChatRequest, dep: Deployment) -> int:
    """What a cancelled call probably cost: its prompt, counted locally."""
    return cost_pico(Usage(prompt_tokens=tokens.count_messages(req.messages)), dep.price)


async def aclose_quietly(it: object) -> None:
    """Close an async iterator; errors while closing a broken stream are not news."""
    close = getattr(it, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:
            pass
