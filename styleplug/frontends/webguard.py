"""The web demo's front door: an ASGI middleware in front of Gradio's routes.

It decides what the demo knows about a request before Gradio sees it:
- **who the client is.** The socket's peer, unless that peer is a proxy the operator trusts
  (``--trusted-proxy``); then the nearest untrusted address in ``X-Forwarded-For``. Forwarded
  headers from anyone else are removed, so nobody can choose their address, or the host name
  that result URLs are built from (``X-Forwarded-Host``);
- **who is listening.** Open event streams (``/queue/data``) are counted per session, so a job
  whose visitor never opened its stream, or closed it, can be dropped;
- **failed logins** are slowed down (a second each) and, after too many from one address, refused
  for a while;
- **file inputs** are checked by the demo's own rule alone, with one refusal for every path:
  the file markers are taken out of event calls, so that Gradio neither words its own refusal
  (with the path) nor prints a traceback for each probe;
- **with a login**, nothing describes the API to a visitor who has not logged in
  (``/openapi.json``, ``/info``, and the API description embedded in the login page).

It imports neither Gradio nor TensorFlow, and keeps no state outside its ``Guard``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_FORWARDED = (b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto", b"x-forwarded-port", b"forwarded")
# What describes the API: refused before login when the demo has one.
_API_DESCRIPTIONS = ("/openapi.json", "/info")
_API_INFO_IN_PAGE = re.compile(rb"window\.gradio_api_info = .*?;</script>", re.S)
# The routes that call events, and the most a call's JSON may weigh (files are uploaded elsewhere).
_EVENT_CALLS = ("/run/predict", "/queue/join")
_MAX_CALL_BYTES = 2**20


class Guard:
    """The state behind the middleware: trusted proxies, open streams, failed logins."""

    def __init__(self, trusted_proxies: Iterable[str] = (), login_delay: float = 1.0, max_failed_logins: int = 10,
                 lockout_seconds: float = 600.0) -> None:
        self.trusted = [ipaddress.ip_network(proxy, strict=False) for proxy in trusted_proxies]
        self.login_delay, self.max_failed_logins, self.lockout_seconds = login_delay, max_failed_logins, lockout_seconds
        self._streams: Counter[str] = Counter()
        self._failures: defaultdict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def listening(self, session: str) -> bool:
        """Whether ``session`` has an event stream open now."""
        with self._lock:
            return self._streams[session] > 0

    @contextmanager
    def streaming(self, session: str) -> Iterator[None]:
        """Count an open event stream of ``session`` while the block runs."""
        with self._lock:
            self._streams[session] += 1
        try:
            yield
        finally:
            with self._lock:
                self._streams[session] -= 1
                if not self._streams[session]:
                    del self._streams[session]

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)

    def client(self, scope: Scope) -> str:
        """The client's address, with ``scope``'s forwarded headers kept only when a trusted proxy sent them."""
        peer = (scope.get("client") or ("unknown", 0))[0]
        headers = scope["headers"]
        if not self._is_trusted(peer):
            scope["headers"] = [(name, value) for name, value in headers if name not in _FORWARDED]
            return peer
        hops = [hop.strip() for name, value in headers if name == b"x-forwarded-for"
                for hop in value.decode("latin-1").split(",") if hop.strip()]
        for proto in (value.decode("latin-1").strip() for name, value in headers if name == b"x-forwarded-proto"):
            if proto in ("http", "https"):
                scope["scheme"] = proto
        # The nearest hop that is not one of our proxies; what lies beyond it, its client could have written.
        return next((hop for hop in reversed(hops) if not self._is_trusted(hop)), peer)

    def login_wait(self, client: str) -> float:
        """Seconds until ``client`` may try to log in again (0: now)."""
        with self._lock:
            failures = self._failures[client]
            while failures and failures[0] < time.monotonic() - self.lockout_seconds:
                failures.popleft()
            if len(failures) < self.max_failed_logins:
                return 0.0
            return failures[0] + self.lockout_seconds - time.monotonic()

    def login_failed(self, client: str) -> None:
        with self._lock:
            self._failures[client].append(time.monotonic())


class GuardMiddleware:
    """The ASGI middleware; ``Guard`` holds what it learns. Pass it to Gradio as
    ``app_kwargs={"middleware": [starlette.middleware.Middleware(GuardMiddleware, guard=guard)]}``."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app, self.guard = app, guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = self.guard.client(scope)
        scope["client"] = (client, (scope.get("client") or ("", 0))[1])
        path = scope["path"].rstrip("/")
        if scope["type"] == "http" and _needs_login(scope) and not _logged_in(scope):
            if path.endswith(_API_DESCRIPTIONS):
                await _respond(send, 401, {"error": "Not authenticated"})
                return
            if scope["method"] == "GET" and not path.rpartition("/")[2].count("."):  # a page, not an asset
                await self.app(scope, receive, _without_api_info(send))
                return
        if scope.get("method") == "POST" and (path.endswith(_EVENT_CALLS) or "/call/" in path):
            body = await _read_body(receive)
            if body is None:
                await _respond(send, 413, {"error": "request too large"})
                return
            body = _without_file_markers(body)
            scope["headers"] = [*((name, value) for name, value in scope["headers"] if name != b"content-length"),
                                (b"content-length", str(len(body)).encode())]
            await self.app(scope, _replay(body, receive), send)
        elif path.endswith("/login") and scope.get("method") == "POST":
            await self._login(scope, receive, send, client)
        elif path.endswith("/queue/data"):
            session = parse_qs(scope["query_string"].decode("latin-1")).get("session_hash", [""])[0]
            with self.guard.streaming(session):
                await self.app(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _login(self, scope: Scope, receive: Receive, send: Send, client: str) -> None:
        wait = self.guard.login_wait(client)
        if wait:
            await _respond(send, 429, {"detail": f"too many failed logins from your address; try again in {wait / 60:.0f} min."})
            return

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                if message["status"] >= 400:  # a wrong password: slow the next guess down
                    self.guard.login_failed(client)
                    await asyncio.sleep(self.guard.login_delay)
            await send(message)

        await self.app(scope, receive, watched)


def _needs_login(scope: Scope) -> bool:
    app = scope.get("app")
    return getattr(app, "auth", None) is not None


def _logged_in(scope: Scope) -> bool:
    """Whether the request carries one of the login tokens that Gradio's app handed out."""
    app = scope["app"]
    cookies: SimpleCookie = SimpleCookie()
    for name, value in scope["headers"]:
        if name == b"cookie":
            try:
                cookies.load(value.decode("latin-1"))
            except CookieError:
                return False
    tokens = getattr(app, "tokens", {})
    names = (f"access-token-{app.cookie_id}", f"access-token-unsecure-{app.cookie_id}")
    return any(name in cookies and cookies[name].value in tokens for name in names)


async def _read_body(receive: Receive) -> bytes | None:
    """The request's whole body, or None past ``_MAX_CALL_BYTES``."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > _MAX_CALL_BYTES:
            return None
        if not message.get("more_body"):
            return body


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands over ``body`` first, then whatever the connection says (a disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


def _without_file_markers(body: bytes) -> bytes:
    """An event call with Gradio's file markers (``meta: {_type: gradio.FileData}``) taken out of its data."""
    try:
        call = json.loads(body)
    except ValueError:
        return body

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: strip(item) for key, item in value.items() if key != "meta"}
        if isinstance(value, list):
            return [strip(item) for item in value]
        return value

    if isinstance(call, dict) and "data" in call:
        call["data"] = strip(call["data"])
    return json.dumps(call).encode()


def _without_api_info(send: Send) -> Send:
    """``send`` for a page, with the API description that Gradio embeds in it taken out."""
    start: dict[str, Any] = {}
    body: list[bytes] = []

    async def rewrite(message: Message) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
            return
        if message["type"] != "http.response.body":
            await send(message)
            return
        body.append(message.get("body", b""))
        if message.get("more_body"):
            return
        content = _API_INFO_IN_PAGE.sub(b"window.gradio_api_info = null;</script>", b"".join(body))
        headers = [(name, value) for name, value in start.get("headers", []) if name != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(content)).encode())]})
        await send({"type": "http.response.body", "body": content})

    return rewrite


async def _respond(send: Send, status: int, content: dict[str, Any]) -> None:
    body = json.dumps(content).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
