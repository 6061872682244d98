"""The HTTP transport shared by every networked adapter (one pooled aiohttp session per
vendor), plus the mapping of transport failures and upstream error statuses onto
`tierline.errors`, and a small SSE reader.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import os
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from tierline.catalog.model import Deployment, ProviderSpec
from tierline.errors import (
    ContentPolicyError,
    ContextLengthExceeded,
    UpstreamBadResponse,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from tierline.providers.fasthttp import FastPool

_CONTEXT_RE = re.compile(
    r"context[_ ]length|context window|maximum context|too many tokens|prompt is too long"
    r"|reduce the length",
    re.I,
)
_POLICY_RE = re.compile(r"content[_ ]policy|content[_ ]filter|safety system", re.I)


@dataclass(slots=True)
class Timeouts:
    connect: float
    first_token: float
    idle: float
    total: float

    @classmethod
    def of(cls, spec: ProviderSpec) -> Timeouts:
        return cls(spec.connect_timeout, spec.first_token_timeout, spec.idle_timeout,
                   spec.total_timeout)

    def of_deployment(self, dep: Deployment) -> Timeouts:
        """These timeouts with the deployment's own overrides."""
        if dep.first_token_timeout is None and dep.idle_timeout is None and \
                dep.total_timeout is None:
            return self
        return Timeouts(self.connect, dep.first_token_timeout or self.first_token,
                        dep.idle_timeout or self.idle, dep.total_timeout or self.total)


#: a retry-after beyond this is not a retry hint but an outage (or garbage): capped
MAX_RETRY_AFTER = 86_400.0


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from `retry-after-ms` or `retry-after` (seconds or an HTTP date);
    None when absent or unreadable. Never negative, never infinite (capped at a day)."""
    ms = headers.get("retry-after-ms")
    if ms:
        v = _finite(ms)
        if v is not None:
            return min(MAX_RETRY_AFTER, max(0.0, v / 1000.0))
    s = headers.get("retry-after")
    if not s:
        return None
    v = _finite(s)
    if v is None:
        try:
            when = email.utils.parsedate_to_datetime(s)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        v = when.timestamp() - time.time()
    return min(MAX_RETRY_AFTER, max(0.0, v))


def _finite(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def error_message_of(body: bytes) -> str:
    """The upstream's error message, shortened; never echoes request content wholesale."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body[:200].decode("utf-8", "replace").strip()
        return text or "no error body"
    msg: Any = None
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data))
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail") or err.get("type")
        elif isinstance(err, str):
            msg = err
        else:
            msg = data.get("message")
    return str(msg)[:300] if msg else "no error message"


def status_error(
    status: int, body: bytes, headers: Mapping[str, str], deployment: str
) -> UpstreamError:
    msg = error_message_of(body)
    text = f"upstream {deployment!r} returned HTTP {status}: {msg}"
    retry_after = parse_retry_after(headers)
    if status in (400, 413, 422) and _CONTEXT_RE.search(msg):
        return ContextLengthExceeded(text, upstream_status=status, deployment=deployment)
    if status == 400 and _POLICY_RE.search(msg):
        return ContentPolicyError(text, upstream_status=status, deployment=deployment)
    return UpstreamStatusError(text, upstream_status=status, deployment=deployment,
                               retry_after=retry_after)


def redirect_error(status: int, headers: Mapping[str, str], deployment: str
                   ) -> UpstreamStatusError:
    """A 3xx answer: never followed (the credentials, vendor headers and the prompt would
    go along to wherever it points), so an upstream error naming where it pointed."""
    try:  # a malformed Location (`http://[::1`) must not escape as a ValueError
        loc = urlsplit(headers.get("location") or "")
        where = f" to {loc.scheme}://{loc.hostname}" if loc.scheme and loc.hostname else ""
    except ValueError:
        where = ""
    return UpstreamStatusError(
        f"upstream {deployment!r} answered HTTP {status} with a redirect{where}; redirects "
        "are not followed (check the provider's base_url)",
        upstream_status=status, deployment=deployment)


def is_redirect(status: int) -> bool:
    return 300 <= status < 400


class _Body(Protocol):
    async def readany(self) -> bytes: ...


class UpstreamResponse(Protocol):
    """What adapters use of a streaming response (aiohttp's, or fasthttp's)."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def content(self) -> _Body: ...

    async def read(self) -> bytes: ...

    def release(self) -> Any: ...


#: the variables that select a proxy (NO_PROXY exempts hosts). ALL_PROXY is not used: aiohttp
#: speaks to http:// proxies only, named per scheme.
_PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")


class HttpClient:
    """A pooled keep-alive client for one vendor. Created lazily on the running loop.

    Requests go through `fasthttp` (httptools) unless the provider sets
    `transport: aiohttp` or a proxy is configured in the environment; aiohttp then, through
    the proxy HTTP_PROXY / HTTPS_PROXY name for the URL's scheme unless NO_PROXY exempts the
    host. Neither client follows redirects: a 3xx is an `UpstreamStatusError`.
    """

    def __init__(self, spec: ProviderSpec) -> None:
        self.spec = spec
        self.timeouts = Timeouts.of(spec)
        self._session: aiohttp.ClientSession | None = None
        self.fast = spec.transport != "aiohttp" and not any(os.environ.get(v)
                                                             for v in _PROXY_VARS)
        self._pools: dict[str, FastPool] = {}
        self._proxies: dict[str, tuple[URL | None, aiohttp.BasicAuth | None]] = {}

    def _pool(self, url: str) -> tuple[FastPool, str] | None:
        if not self.fast:
            return None
        u = urlsplit(url)
        if u.scheme not in ("http", "https"):
            return None
        origin = f"{u.scheme}://{u.netloc}"
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = FastPool(
                origin, max_connections=self.spec.max_connections,
                connect_timeout=self.timeouts.connect)
        return pool, (u.path or "/") + (f"?{u.query}" if u.query else "")

    def proxy_for(self, url: str) -> tuple[URL | None, aiohttp.BasicAuth | None]:
        """The environment's proxy for this URL's origin (and its credentials), or None.

        What aiohttp's `trust_env=True` would pick (HTTP(S)_PROXY, NO_PROXY, proxy credentials
        in the proxy URL or ~/.netrc), looked up once per origin. `trust_env` itself is not
        used: it would also read ~/.netrc for the *upstream* host on every request and
        replace the provider's own Authorization header with what it finds there.
        """
        u = URL(url)
        origin = f"{u.scheme}://{u.host}:{u.port}"
        found = self._proxies.get(origin)
        if found is None:
            try:
                found = get_env_proxy_for_url(u)
            except LookupError:
                found = (None, None)
            self._proxies[origin] = found
        return found

    def aio_options(self, url: str) -> dict[str, Any]:
        """The keyword arguments of every aiohttp request: no redirects, the proxy."""
        proxy, auth = self.proxy_for(url)
        return {"allow_redirects": False, "proxy": proxy, "proxy_auth": auth}

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.spec.max_connections, ttl_dns_cache=300, keepalive_timeout=60
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, connect=self.timeouts.connect),
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
                json_serialize=lambda o: orjson.dumps(o).decode(),
            )
        return self._session

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        url: str,
        *,
        deployment: str,
        headers: Mapping[str, str],
        body: bytes | None = None,
        timeout: float | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One request read to the end. Raises UpstreamTimeout / UpstreamConnectionError."""
        limit = timeout if timeout is not None else min(self.timeouts.total,
                                                       self.timeouts.first_token)
        fast = self._pool(url)
        hdrs: Mapping[str, str]
        try:
            async with asyncio.timeout(limit):
                if fast is not None:
                    r = await fast[0].request(method, fast[1], headers, body)
                    try:
                        data = await r.read()
                    finally:
                        r.release()
                    status, hdrs = r.status, r.headers
                else:
                    async with self.session().request(method, url, data=body, headers=headers,
                                                      **self.aio_options(url)) as resp:
                        data = await resp.read()
                        status, hdrs = resp.status, resp.headers
        except TimeoutError as e:
            raise UpstreamTimeout(f"upstream {deployment!r} timed out after {limit:g}s",
                                  deployment=deployment) from e
        except aiohttp.ClientError as e:
            raise UpstreamConnectionError(
                f"connection to upstream {deployment!r} failed: {type(e).__name__}",
                deployment=deployment,
            ) from e
        if is_redirect(status):
            raise redirect_error(status, hdrs, deployment)
        return status, hdrs, data

    async def open_stream(
        self, url: str, *, deployment: str, headers: Mapping[str, str], body: bytes | None,
        first_token: float | None = None, method: str = "POST",
    ) -> UpstreamResponse:
        """Send the request and return the response once headers arrived. An error status
        is the caller's to check; a redirect raises `UpstreamStatusError`."""
        fast = self._pool(url)
        limit = first_token or self.timeouts.first_token
        resp: UpstreamResponse
        try:
            async with asyncio.timeout(limit):
                if fast is not None:
                    resp = await fast[0].request(method, fast[1], headers, body)
                else:
                    resp = await self.session().request(method, url, data=body,
                                                        headers=headers,
                                                        **self.aio_options(url))
        except TimeoutError as e:
            raise UpstreamTimeout(
                f"upstream {deployment!r} sent no response within "
                f"{limit:g}s", deployment=deployment) from e
        except aiohttp.ClientError as e:
            raise UpstreamConnectionError(
                f"connection to upstream {deployment!r} failed: {type(e).__name__}",
                deployment=deployment,
            ) from e
        if is_redirect(resp.status):
            resp.release()
            raise redirect_error(resp.status, resp.headers, deployment)
        return resp

    async def read_error(self, resp: UpstreamResponse, deployment: str) -> UpstreamError:
        try:
            async with asyncio.timeout(self.timeouts.idle):
                body = await resp.read()
        except (TimeoutError, aiohttp.ClientError):
            body = b""
        finally:
            resp.release()
        return status_error(resp.status, body, resp.headers, deployment)


async def iter_sse_batches(
    resp: UpstreamResponse, *, deployment: str, first_timeout: float, idle_timeout: float,
    total_timeout: float,
) -> AsyncIterator[list[tuple[str, bytes]]]:
    """Yield the server-sent events of a body, one list per network read: [(event, data)].

    `event` is "" when the stream names none. One timeout per read (first event, idle gap,
    total), not per line; transport failures become UpstreamError. Batching per read lets
    the gateway forward several events in one write.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total_timeout
    content = resp.content
    buf = b""
    wait = first_timeout
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise UpstreamTimeout(f"upstream {deployment!r} stream exceeded "
                                      f"{total_timeout:g}s", deployment=deployment)
            limit = min(wait, remaining)
            try:
                async with asyncio.timeout(limit):
                    data = await content.readany()
            except TimeoutError as e:
                raise UpstreamTimeout(
                    f"upstream {deployment!r} stream stalled for {limit:g}s",
                    deployment=deployment) from e
            wait = idle_timeout
            if not data:  # end of body: a last event without its blank line counts
                tail = buf.strip(b"\r\n")
                if tail:
                    batch = _parse_events([tail])
                    if batch:
                        yield batch
                return
            buf += data
            if b"\r" in buf:
                buf = buf.replace(b"\r\n", b"\n")
            if b"\n\n" not in buf:
                if len(buf) > 8 * 1024 * 1024:
                    raise UpstreamBadResponse(
                        f"upstream {deployment!r} sent an oversized stream event",
                        deployment=deployment)
                continue
            *blocks, buf = buf.split(b"\n\n")
            batch = _parse_events(blocks)
            if batch:
                yield batch
    except aiohttp.ClientError as e:
        raise UpstreamConnectionError(
            f"upstream {deployment!r} stream broke: {type(e).__name__}", deployment=deployment
        ) from e


def _parse_events(blocks: list[bytes]) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for block in blocks:
        if block.startswith(b"data: ") and b"\n" not in block:  # the common case
            out.append(("", block[6:]))
            continue
        event = ""
        data: list[bytes] = []
        for line in block.split(b"\n"):
            if line.startswith(b"data:"):
                v = line[5:]
                data.append(v[1:] if v.startswith(b" ") else v)
            elif line.startswith(b"event:"):
                event = line[6:].strip().decode("utf-8", "replace")
            # ":" comments, "id:" and "retry:" fields are ignored
        if data:
            out.append((event, b"\n".join(data)))
    return out


async def iter_sse(
    resp: UpstreamResponse, *, deployment: str, first_timeout: float, idle_timeout: float,
    total_timeout: float,
) -> AsyncIterator[tuple[str, bytes]]:
    """Yield (event, data) pairs of a server-sent-events body (see `iter_sse_batches`)."""
    async for batch in iter_sse_batches(resp, deployment=deployment,
                                        first_timeout=first_timeout,
                                        idle_timeout=idle_timeout, total_timeout=total_timeout):
        for item in batch:
            yield item


def loads_object(raw: bytes, deployment: str, what: str) -> dict[str, Any]:
    """Parse a JSON object or raise UpstreamBadResponse."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise UpstreamBadResponse(f"upstream {deployment!r} sent malformed JSON in {what}",
                                  deployment=deployment) from e
    if not isinstance(obj, dict):
        raise UpstreamBadResponse(f"upstream {deployment!r} sent a non-object {what}",
                                  deployment=deployment)
    return obj
