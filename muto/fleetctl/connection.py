"""Where the control plane is and who is asking: flags, then MUTO_URL / MUTO_TOKEN, then
the context file `muto login` wrote. Every answer is the API's envelope; every failure
is one exception carrying the exit code the CLI ends with (docs/cli.md)."""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from muto.domain.wire import id_refusal

# Exit codes, documented in docs/cli.md.
OK = 0
REFUSED = 1  # the API answered with an error (400, 409, 413, 422, 5xx)
USAGE = 2  # bad flags or arguments (argparse's own code)
NOT_FOUND = 3  # unknown vehicle, release, rollout, token
UNAUTHENTICATED = 4  # no token, an unknown or revoked one (401), or not allowed (403)
UNREACHABLE = 5  # no server answered at the URL

DEFAULT_URL = "http://127.0.0.1:8080"
# A write sent with an Idempotency-Key (`Api.write`) is sent up to this many times, the
# same key each time, when its answer is lost or says to come back: the API answers a
# resend as it answered the first, with no second write (docs/api.md).
WRITE_ATTEMPTS = 3
RESEND_AFTER_S = 0.5  # then twice that
RESEND_STATUSES = frozenset({502, 503, 504})  # a proxy without a replica; `unavailable`


class FleetError(Exception):
    """A failure the CLI reports in one line and ends with `exit_code`."""

    def __init__(self, message: str, exit_code: int, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.code = code  # the API's machine code, when the API answered

    def line(self) -> str:
        return f"error: {self.code}: {self.message}" if self.code else f"error: {self.message}"


def context_path(environ: Mapping[str, str] | None = None) -> Path:
    """MUTO_CONTEXT, else $XDG_CONFIG_HOME/muto/context.json (~/.config by default)."""
    env = os.environ if environ is None else environ
    if env.get("MUTO_CONTEXT"):
        return Path(env["MUTO_CONTEXT"])
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "muto" / "context.json"


def save_context(url: str, token: str, path: Path) -> None:
    """Write the context readable by its owner only (0600 from the first byte)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"url": url, "token": token}, f)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT


def load_context(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FleetError(f"cannot read {path}: {exc}; run `muto login` again", USAGE) from None
    if not isinstance(found, dict):
        raise FleetError(f"{path} is not a muto context; run `muto login` again", USAGE)
    return {k: v for k, v in found.items() if isinstance(v, str)}


@dataclass(frozen=True)
class Connection:
    url: str
    token: str | None

    @classmethod
    def resolve(
        cls, args: argparse.Namespace, environ: Mapping[str, str] | None = None
    ) -> Connection:
        env = os.environ if environ is None else environ
        where = context_path(env)
        saved = load_context(where)
        given, source = next(
            (value, source)
            for value, source in (
                (args.url, "--url"),
                (env.get("MUTO_URL"), "MUTO_URL"),
                (saved.get("url"), f"the context {where}"),
                (DEFAULT_URL, "the default"),
            )
            if value
        )
        url = checked_url(given, source)
        given_token = env.get("MUTO_TOKEN", "").strip()  # as a token file's: `$(cat F)`
        token = checked_token(given_token, "MUTO_TOKEN") if given_token else None
        if args.token_file:
            token = read_token(Path(args.token_file))
        elif token is None and saved.get("url", "").rstrip("/") == url and saved.get("token"):
            # the login's token goes only to the login's server
            token = checked_token(saved["token"], f"the context {where}")
        return cls(url, token)

    def client(self, timeout: float = 30.0) -> Api:
        return Api(self, timeout)


def checked_url(text: str, source: str) -> str:
    """`text` without its trailing '/', or FleetError(USAGE) saying what is wrong with it:
    unchecked, a URL httpx cannot parse ('http://[::1') was a traceback, and one without
    scheme or host ('not-a-url') failed at the request as if no server were there."""
    why = _url_problem(text)
    if why:
        raise FleetError(
            f"{source}: {text!r} is not the control plane's URL ({why}), e.g. {DEFAULT_URL}",
            USAGE,
        )
    return text.rstrip("/")


def _url_problem(text: str) -> str | None:
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as exc:
        return str(exc)
    if url.scheme not in ("http", "https"):
        return "it must start with http:// or https://"
    if not url.host:
        return "no host"
    if url.port is not None and not 0 < url.port < 65536:
        return f"no port {url.port}"
    if url.query or url.fragment:
        return "a query or fragment has no place in it"
    return None


def api_path(*segments: str) -> str:
    """`/rollouts/ro-1/pause` from its segments, each percent-encoded whole. An id is one
    segment: spliced in raw, '/', '?', '#' or '..' in it named another resource (the id
    `../../tokens/T/revoke#` of `muto rollouts pause` revoked token T)."""
    parts = []
    for segment in segments:
        if not segment:
            raise FleetError("an id cannot be empty", USAGE)
        encoded = quote(segment, safe="")
        # quote() keeps dots, and URL resolution (httpx's too) removes the segments '.'
        # and '..': encoded, the server reads them back as the id '.' or '..' (404).
        parts.append(encoded.replace(".", "%2E") if encoded in (".", "..") else encoded)
    return "/" + "/".join(parts)


def check_id(kind: str, text: str) -> str:
    """`text` if the server's identifier rule (muto.domain.wire.ID_PATTERN) allows it for
    vehicles, rollouts, stacks and versions; otherwise FleetError(USAGE): nothing by that
    name can exist, so asking the server is no use."""
    refusal = id_refusal(kind, text)
    if refusal is not None:
        raise FleetError(refusal, USAGE)
    return text


def id_argument(kind: str) -> Callable[[str], str]:
    """An argparse `type` for an id positional: a bad one is a usage error (exit 2)."""

    def parse(text: str) -> str:
        try:
            return check_id(kind, text)
        except FleetError as exc:
            raise argparse.ArgumentTypeError(exc.message) from None

    return parse


def read_token(path: Path) -> str:
    try:
        held = path.read_bytes().strip()
    except OSError as exc:
        raise FleetError(f"cannot read the token file {path}: {exc.strerror}", USAGE) from None
    if not held:
        raise FleetError(f"the token file {path} is empty", USAGE)
    return checked_token(held.decode("latin-1"), f"the token file {path}")


def checked_token(token: str, source: str) -> str:
    """`token` if it is visible ASCII, as every bearer token is; otherwise FleetError(USAGE)
    naming `source` and the position, never the token itself (a secret). Unchecked, a
    non-ASCII token was a traceback in httpx, a newline 'cannot reach the control plane'
    and a control character the server's 400."""
    for position, char in enumerate(token, 1):
        if not "!" <= char <= "~":
            raise FleetError(
                f"{source} does not hold a token: character {position} is not visible "
                "ASCII (a token is letters, digits and punctuation, on one line)",
                USAGE,
            )
    return token


def connection_arguments(p: argparse.ArgumentParser) -> None:
    """--url and --token-file on every verb (a token never goes on the command line)."""
    p.add_argument(
        "--url", default=None, help=f"the API (default: MUTO_URL, the login context, {DEFAULT_URL})"
    )
    p.add_argument(
        "--token-file",
        default=None,
        metavar="FILE",
        help="a file holding the bearer token (default: MUTO_TOKEN, the login context)",
    )


class Api:
    """The HTTP API through httpx: `call` returns the envelope of a success, or raises
    FleetError with the API's code and the exit code for it."""

    def __init__(self, connection: Connection, timeout: float) -> None:
        self.connection = connection
        token = connection.token
        headers = {"Authorization": f"Bearer {checked_token(token, 'the token')}"} if token else {}
        base_url = checked_url(connection.url, "the URL")  # a Connection made by hand too
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str | int] | None = None,
        content: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        response = self.send(
            method,
            path,
            json=json_body,
            params=dict(params or {}),
            content=content,
            headers=headers,
        )
        return answer(response, self.connection)

    def write(self, method: str, path: str, *, json_body: Any) -> dict[str, Any]:
        """A write that its body alone does not make idempotent (a desired-state
        assignment, a token, a rollout without an id): sent with a new Idempotency-Key
        per call, and resent with that same key, up to WRITE_ATTEMPTS in all, when no
        answer came (a timeout, a dropped connection, no server) or the answer was 502,
        503 or 504. A resend the first request's write already answered is answered as
        it was, and writes nothing (a token's, 409: its secret is not shown twice)."""
        key = str(uuid.uuid4())
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            last = attempt == WRITE_ATTEMPTS
            try:
                response = self.http.request(
                    method, path, json=json_body, headers={"Idempotency-Key": key}
                )
            except httpx.TransportError as exc:
                if last:
                    raise self._unreachable(exc) from None
            else:
                if last or response.status_code not in RESEND_STATUSES:
                    return answer(response, self.connection)
            time.sleep(RESEND_AFTER_S * 2 ** (attempt - 1))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def exists(self, path: str) -> bool:
        """HEAD: True for 200, False for 404, FleetError otherwise."""
        response = self.send("HEAD", path)
        if response.status_code == 404:
            return False
        if response.is_success:
            return True
        return answer(response, self.connection) is None  # raises: not a success

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: Exception) -> FleetError:
        return FleetError(
            f"cannot reach the control plane at {self.connection.url} "
            f"({exc.__class__.__name__}): is `muto cloud serve` running there? "
            "Set the URL with --url, MUTO_URL or `muto login URL --token-file F`",
            UNREACHABLE,
        )


def _not_ours(response: httpx.Response) -> str:
    """An answer without the API's error shape: a proxy's own page (haproxy's 503 while
    every replica is unready), said without its HTML."""
    reason = response.reason_phrase or "no reason given"
    if "html" in response.headers.get("content-type", "") or response.text.lstrip().startswith("<"):
        return (
            f"{response.status_code} {reason} from a proxy in front of the control plane, "
            "not the API (its replicas not ready: the database down or refusing writes?)"
        )
    return response.text[:200] or f"{response.status_code} {reason}"


def answer(response: httpx.Response, connection: Connection) -> dict[str, Any]:
    """The envelope of a 2xx; otherwise FleetError naming the API's code and message."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success and isinstance(body, dict):
        return body
    error = body.get("error") if isinstance(body, dict) else None
    code = str(error.get("code")) if isinstance(error, dict) else f"http_{response.status_code}"
    message = str(error.get("message")) if isinstance(error, dict) else _not_ours(response)
    status = response.status_code
    if status == 401:
        how = (
            "no token was given: pass --token-file, set MUTO_TOKEN "
            "or run `muto login URL --token-file F`"
            if connection.token is None
            else "the token is unknown or revoked: "
            "get an operator token (`muto cloud token create --operator`)"
        )
        raise FleetError(f"not authenticated at {connection.url}: {how}", UNAUTHENTICATED, code)
    if status == 403:
        raise FleetError(f"{message} (an operator token is needed)", UNAUTHENTICATED, code)
    if status == 404:
        raise FleetError(message, NOT_FOUND, code)
    details = error.get("details") if isinstance(error, dict) else None
    if details:
        message = f"{message} {json.dumps(details, separators=(',', ':'))}"
    raise FleetError(message, REFUSED, code)
