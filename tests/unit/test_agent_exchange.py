"""The agent's own HTTP client (muto/agent/transport/exchange.py) against real local
servers: redirects keep a download's Range and drop its bearer token at another origin,
a redirect loop ends, a silent server is a Stalled, bad HTTP is an HttpError, and a
configured proxy hands the exchanges to httpx (which speaks it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from muto.agent.transport.exchange import (
    DirectHttp,
    HttpError,
    Stalled,
    ViaHttpx,
    default_exchanges,
)

Reply = Callable[[str], bytes]  # request path -> the whole raw answer


@asynccontextmanager
async def server(reply: Reply, seen: list[dict[str, str]]) -> AsyncIterator[str]:
    """A server on 127.0.0.1 that records each request's headers (lower-case names)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            path = head[0].split()[1]
            fields = (line.partition(":") for line in head[1:] if line)
            seen.append({"path": path, **{k.lower(): v.strip() for k, _, v in fields}})
            writer.write(reply(path))
            await writer.drain()
        finally:
            writer.close()

    listening = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{listening.sockets[0].getsockname()[1]}"
    finally:
        listening.close()


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 206 Partial Content\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


def moved(location: str) -> bytes:
    return f"HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\n\r\n".encode()


async def get(url: str, *, follow: bool = True, timeout_s: float = 10) -> tuple[int, bytes]:
    headers = {"Authorization": "Bearer tok", "Range": "bytes=5-"}
    http = DirectHttp()
    async with http.stream(
        "GET", url, headers=headers, timeout_s=timeout_s, follow_redirects=follow
    ) as answer:
        return answer.status_code, b"".join([chunk async for chunk in answer.body])


def test_a_redirect_keeps_the_range_and_drops_the_token_at_another_origin() -> None:
    async def scenario() -> tuple[tuple[int, bytes], list[dict[str, str]]]:
        seen: list[dict[str, str]] = []
        async with server(lambda path: ok(b"tail"), seen) as elsewhere:

            def reply(path: str) -> bytes:
                return moved("/second") if path == "/first" else moved(f"{elsewhere}/blob")

            async with server(reply, seen) as origin:
                return await get(f"{origin}/first"), seen

    got, seen = asyncio.run(scenario())
    assert got == (206, b"tail")
    assert [s["path"] for s in seen] == ["/first", "/second", "/blob"]
    assert [s.get("authorization") for s in seen] == ["Bearer tok", "Bearer tok", None]
    assert {s["range"] for s in seen} == {"bytes=5-"}


def test_a_redirect_is_an_answer_unless_asked_to_follow_and_a_loop_ends() -> None:
    async def scenario() -> tuple[int, str]:
        async with server(lambda path: moved(path), []) as origin:
            status, _ = await get(f"{origin}/loop", follow=False)
            with pytest.raises(HttpError, match="more than 20 redirects") as raised:
                await get(f"{origin}/loop")
            return status, str(raised.value)

    assert asyncio.run(scenario())[0] == 302


def test_silence_is_stalled_and_bad_http_is_an_error() -> None:
    async def scenario() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # says nothing until the client gives up
            writer.close()

        listening = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = listening.sockets[0].getsockname()[1]
        try:
            with pytest.raises(Stalled, match="ReadTimeout"):
                await get(f"http://127.0.0.1:{port}/", timeout_s=0.2)
        finally:
            listening.close()
        async with server(lambda path: b"SMTP ready\r\n\r\n", []) as origin:
            with pytest.raises(HttpError, match="RemoteProtocolError"):
                await get(f"{origin}/")
        with pytest.raises(HttpError, match="not an http"):
            await get("ftp://127.0.0.1/blob")

    asyncio.run(scenario())


def test_a_configured_proxy_hands_the_exchanges_to_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    assert isinstance(default_exchanges(10), DirectHttp)
    monkeypatch.setenv("https_proxy", "http://proxy.depot:3128")
    via = default_exchanges(10)
    assert isinstance(via, ViaHttpx)
    asyncio.run(via.aclose())
