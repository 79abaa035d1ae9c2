"""HTTP/1.1 exchanges as the agent makes them: one request, its answer streamed.

The agent's own client (`DirectHttp`) is h11's parser on asyncio streams, one connection
per exchange: an idle agent polls every 30 s, longer than any keep-alive is worth, and
httpx with httpcore and anyio held ~6.5 MiB of its resident memory for the same few calls
(docs/performance.md, "Vehicle agent"). The fleet simulator keeps the same connections
(`Http11`) alive, shared by thousands of agents (muto/sim/pool.py). `ViaHttpx` runs the
same exchanges through an `httpx.AsyncClient`: tests' mock transports, and a vehicle that
must reach the cloud through an HTTP(S)_PROXY (httpx honours those; the direct client
does not, so `default_exchanges` picks httpx then).

Every failure is an `HttpError` (`Stalled` when no bytes came within the timeout); a
body is never decoded (the agent asks for identity and refuses anything else itself).
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar
from urllib.parse import urljoin, urlsplit

import h11

from muto.agent.transport.tls import client_tls

if TYPE_CHECKING:
    import httpx

CHUNK = 64 * 1024  # bytes asked of the socket per read
MAX_HEAD = 64 * 1024  # an answer's status line and headers
MAX_REDIRECTS = 20  # as httpx
REDIRECTS = frozenset({301, 302, 303, 307, 308})
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")
USER_AGENT = "muto-agent"
T = TypeVar("T")


class HttpError(Exception):
    """No (complete) answer: the connection failed, broke or spoke bad HTTP."""


class Stalled(HttpError):
    """Nothing arrived (connect, send or the next bytes) within the timeout."""


@dataclass(frozen=True)
class Answer:
    status_code: int
    headers: Mapping[str, str]  # looked up by lower-case name
    body: AsyncIterator[bytes]  # the raw bytes, as they arrive


class Exchanges(Protocol):
    def stream(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        timeout_s: float,
        content: bytes = b"",
        follow_redirects: bool = False,
    ) -> AbstractAsyncContextManager[Answer]: ...

    async def aclose(self) -> None: ...


def default_exchanges(timeout_s: float) -> Exchanges:
    """The direct client, or httpx where a proxy is configured (only httpx speaks it)."""
    if any(os.environ.get(name) or os.environ.get(name.lower()) for name in PROXY_VARIABLES):
        import httpx

        return ViaHttpx(httpx.AsyncClient(timeout=timeout_s, verify=client_tls()), own=True)
    return DirectHttp()


@dataclass(frozen=True)
class Target:
    https: bool
    host: str
    port: int
    authority: str  # the Host header
    path: str  # path and query

    @classmethod
    def parse(cls, url: str) -> Target:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise HttpError(f"invalid URL: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpError(f"not an http(s) URL: {url!r}")
        https = parts.scheme == "https"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = parts.netloc.rpartition("@")[2]
        return cls(https, parts.hostname, port or (443 if https else 80), authority, path)

    def may_see_credentials_of(self, origin: Target) -> bool:
        """httpx's rule for a redirect: the same origin, or the same host upgraded from
        http to https on the default ports; elsewhere Authorization is dropped."""
        if (self.https, self.host, self.port) == (origin.https, origin.host, origin.port):
            return True
        upgraded = not origin.https and origin.port == 80 and self.https and self.port == 443
        return upgraded and self.host == origin.host


class DirectHttp:
    """HTTP/1.1 over a new TCP (TLS: the agent's `client_tls`) connection per exchange.
    `timeout_s` bounds the connect (with the TLS handshake), the send, and every wait
    for the next bytes of the answer; a caller bounds the whole with asyncio.timeout.
    Redirects are followed only when asked (the artifact downloads: a GET, resent as is)."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._tls = tls

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        timeout_s: float,
        content: bytes = b"",
        follow_redirects: bool = False,
    ) -> AsyncIterator[Answer]:
        tls = self._tls or client_tls()

        @asynccontextmanager
        async def once(target: Target, headers: Mapping[str, str]) -> AsyncIterator[Answer]:
            connection = await Http11.open(target, tls, timeout_s)
            try:
                yield await connection.send(method, target, headers, content, timeout_s)
            finally:
                connection.close()

        async with redirected(once, url, headers, follow_redirects) as answer:
            yield answer

    async def aclose(self) -> None:
        pass  # no pool: every connection is closed with its exchange


@asynccontextmanager
async def redirected(
    once: Callable[[Target, Mapping[str, str]], AbstractAsyncContextManager[Answer]],
    url: str,
    headers: Mapping[str, str],
    follow: bool,
) -> AsyncIterator[Answer]:
    """The answer of `once` at `url`, or, when asked to `follow`, at the end of its
    redirects (a GET, resent as is; Authorization only where httpx would send it)."""
    target = Target.parse(url)
    for _ in range(MAX_REDIRECTS + 1):
        async with once(target, headers) as answer:
            location = answer.headers.get("location") if follow else None
            if location is None or answer.status_code not in REDIRECTS:
                yield answer
                return
        url = urljoin(url, location)
        origin, target = target, Target.parse(url)
        if not target.may_see_credentials_of(origin):
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
    raise HttpError(f"more than {MAX_REDIRECTS} redirects")


class Http11:
    """One HTTP/1.1 connection: h11 on asyncio streams, exchanges one after the other.
    `DirectHttp` makes one exchange per connection; the fleet simulator keeps them
    alive (`keep_alive`) for the next exchange once `reusable`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer, self._timeout = reader, writer, 0.0
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self.answered = False  # a byte of the current exchange's answer has arrived

    @classmethod
    async def open(cls, target: Target, tls: ssl.SSLContext, timeout_s: float) -> Http11:
        where = f"{target.host}:{target.port}"
        try:
            async with asyncio.timeout(timeout_s):
                reader, writer = await asyncio.open_connection(
                    target.host,
                    target.port,
                    ssl=tls if target.https else None,
                    server_hostname=target.host if target.https else None,
                    ssl_handshake_timeout=timeout_s if target.https else None,
                )
        except TimeoutError:
            raise Stalled(f"ConnectTimeout: {where}: no connection within {timeout_s}s") from None
        except OSError as exc:  # refused, unreachable, name not found, certificate failed
            raise HttpError(f"ConnectError: {where}: {exc}") from exc
        return cls(reader, writer)

    async def send(
        self,
        method: str,
        target: Target,
        headers: Mapping[str, str],
        content: bytes,
        timeout_s: float,
        *,
        keep_alive: bool = False,
    ) -> Answer:
        """Sends the request and reads the answer's head; its body streams from the
        answer. `timeout_s` bounds the send and every wait for the next bytes."""
        self._timeout, self.answered = timeout_s, False
        head = [("Host", target.authority), ("User-Agent", USER_AGENT), ("Accept", "*/*")]
        head += [(k, v) for k, v in headers.items() if k.lower() not in ("host", "connection")]
        if not keep_alive:
            head.append(("Connection", "close"))  # one exchange per connection
        if content or method in ("POST", "PUT", "PATCH"):
            head.append(("Content-Length", str(len(content))))
        try:
            data = self._h11.send(h11.Request(method=method, target=target.path, headers=head))
            if content:
                data = (data or b"") + (self._h11.send(h11.Data(data=content)) or b"")
            data = (data or b"") + (self._h11.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError as exc:
            raise HttpError(f"LocalProtocolError: {exc}") from exc
        try:
            self._writer.write(data)
            await self._within("WriteTimeout", self._writer.drain())
        except OSError as exc:  # reset while sending
            raise HttpError(f"WriteError: {exc}") from exc
        event = await self._next_event()
        while isinstance(event, h11.InformationalResponse):  # 100 Continue and the like
            event = await self._next_event()
        if not isinstance(event, h11.Response):
            raise HttpError(f"RemoteProtocolError: expected an answer, got {event!r}")
        names = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in event.headers]
        found: dict[str, str] = {}
        for name, value in names:  # h11 gives names in lower case
            found[name] = f"{found[name]}, {value}" if name in found else value
        return Answer(event.status_code, found, self._body())

    async def _body(self) -> AsyncIterator[bytes]:
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return
            else:
                raise HttpError(f"RemoteProtocolError: unexpected {event!r} in a body")

    async def _next_event(self) -> object:
        try:
            while (event := self._h11.next_event()) is h11.NEED_DATA:
                data = await self._within("ReadTimeout", self._reader.read(CHUNK))
                self.answered = self.answered or bool(data)
                self._h11.receive_data(data)  # b"": the server closed
        except h11.RemoteProtocolError as exc:
            raise HttpError(f"RemoteProtocolError: {exc}") from exc
        except OSError as exc:  # reset, broken TLS
            raise HttpError(f"ReadError: {exc}") from exc
        return event

    async def _within(self, what: str, step: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self._timeout):
                return await step
        except TimeoutError:
            raise Stalled(f"{what}: nothing for {self._timeout}s") from None

    def reusable(self) -> bool:
        """Whether the exchange ended cleanly and both sides keep the connection, then
        ready for the next one. What of the answer's body is already received is read
        here (an answer to a report is rarely read to its end, but mostly arrived with
        its head); a body that is still coming, a request not fully sent, a connection
        the server closes (`Connection: close`) or broke: not reusable."""
        try:
            while self._h11.their_state is h11.SEND_BODY:
                if self._h11.next_event() is h11.NEED_DATA:
                    return False
        except h11.RemoteProtocolError:
            return False
        if (self._h11.our_state, self._h11.their_state) != (h11.DONE, h11.DONE):
            return False
        if self._h11.trailing_data[0]:  # more than was answered: not ours to guess
            return False
        self._h11.start_next_cycle()
        return not self.gone()

    def gone(self) -> bool:
        """Closed or broken by the server, or sent something unasked (while kept alive,
        nothing reads it, so it waits in the reader)."""
        reader = self._reader
        unread = getattr(reader, "_buffer", b"")  # not public; its length, if it is there
        return (
            reader.at_eof()
            or reader.exception() is not None
            or self._writer.is_closing()
            or len(unread) > 0
        )

    def close(self) -> None:
        self._writer.close()  # abandons whatever of the answer was not read


class ViaHttpx:
    """The same exchanges through an httpx client (its transport, hooks and proxies)."""

    def __init__(self, client: httpx.AsyncClient, *, own: bool = False) -> None:
        self.client = client
        self._own = own  # a shared client (the simulator's) is not ours to close

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        timeout_s: float,
        content: bytes = b"",
        follow_redirects: bool = False,
    ) -> AsyncIterator[Answer]:
        import httpx

        try:
            request = self.client.build_request(
                method, url, headers=headers, content=content or None, timeout=timeout_s
            )
            response = await self.client.send(
                request, stream=True, follow_redirects=follow_redirects
            )
        except httpx.TimeoutException as exc:
            raise Stalled(f"{type(exc).__name__}: {exc}") from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise HttpError(f"{type(exc).__name__}: {exc}") from exc
        try:
            yield Answer(response.status_code, response.headers, _raw(response))
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        if self._own:
            await self.client.aclose()


async def _raw(response: httpx.Response) -> AsyncIterator[bytes]:
    import httpx

    if response.is_stream_consumed:  # built in memory (a mock transport): read already
        yield response.content
        return
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    except httpx.TimeoutException as exc:
        raise Stalled(f"{type(exc).__name__}: {exc}") from exc
    except httpx.HTTPError as exc:
        raise HttpError(f"{type(exc).__name__}: {exc}") from exc


def exchanges_of(client: httpx.AsyncClient | Exchanges | None, timeout_s: float) -> Exchanges:
    """What a component was given: an httpx client (wrapped, not owned), its own
    Exchanges, or nothing (the default for this process)."""
    if client is None:
        return default_exchanges(timeout_s)
    if hasattr(client, "build_request"):  # an httpx.AsyncClient, without importing httpx
        return ViaHttpx(client)  # type: ignore[arg-type]
    return client  # type: ignore[return-value]
