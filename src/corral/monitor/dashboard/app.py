"""The dashboard under /dashboard: login with an admin or viewer key, a session cookie, CSRF, pages."""

from __future__ import annotations

import asyncio
import hmac
import secrets
from datetime import UTC, datetime
from functools import partial
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jinja2

from corral.config import MonitorSettings
from corral.errors import AuthenticationError, CorralError, InvalidInputError, NotFoundError
from corral.gateway.auth import KeyRing, hash_key
from corral.gateway.http import Receive, Send, header, read_body
from corral.monitor.dashboard import pages
from corral.monitor.dashboard.sessions import SESSION_TTL_S, Session, SessionStore
from corral.monitor.search import SearchIndex
from corral.store import Store

COOKIE, CSRF_COOKIE = "corral_session", "corral_csrf"
HERE = Path(__file__).parent
SECURITY_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (
        b"content-security-policy",
        b"default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
    ),
    (b"cache-control", b"no-store"),
]


def _plotly_js() -> Path:
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


STATIC = {
    "dashboard.js": (lambda: HERE / "static" / "dashboard.js", b"text/javascript"),
    "dashboard.css": (lambda: HERE / "static" / "dashboard.css", b"text/css"),
    "plotly.min.js": (_plotly_js, b"text/javascript"),
}


class Dashboard:
    """Served by the gateway process; every store read runs in a worker thread."""

    def __init__(self, store: Store, keys: KeyRing, settings: MonitorSettings) -> None:
        self.store = store
        self.keys = keys
        self.settings = settings
        self.index = SearchIndex(store)
        self.sessions = SessionStore(store, keys.admin_hash)
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(HERE / "templates")),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self._static: dict[str, bytes] = {}

    # -- plumbing ----------------------------------------------------------------------------------------
    async def _send(
        self, send: Send, status: int, body: bytes, ctype: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()
    ) -> None:
        headers = [(b"content-type", ctype), *SECURITY_HEADERS, *extra]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _redirect(self, send: Send, to: str, *extra: tuple[bytes, bytes]) -> None:
        await self._send(send, 303, b"", b"text/plain", ((b"location", to.encode()), *extra))

    def _render(self, template: str, **context: Any) -> bytes:
        context.setdefault("charts", False)
        context.setdefault("session", None)
        return self.env.get_template(template).render(**context).encode()

    @staticmethod
    def _cookies(scope: dict[str, Any]) -> dict[str, str]:
        cookie = SimpleCookie()
        try:
            cookie.load(header(scope, b"cookie") or "")
        except Exception:  # noqa: BLE001 - a malformed cookie header is no session
            return {}
        return {k: m.value for k, m in cookie.items()}

    @staticmethod
    def _set_cookie(name: str, value: str, max_age: int) -> tuple[bytes, bytes]:
        return (
            b"set-cookie",
            f"{name}={value}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age={max_age}".encode(),
        )

    async def _session(self, scope: dict[str, Any]) -> Session | None:
        token = self._cookies(scope).get(COOKIE)
        return await asyncio.to_thread(self.sessions.get, token) if token else None

    # -- entry -------------------------------------------------------------------------------------------
    async def handle(
        self, method: str, path: str, scope: dict[str, Any], receive: Receive, send: Send
    ) -> None:
        sub = path[len("/dashboard"):].strip("/")  # fmt: skip
        if sub == "login":
            await (self._login_form(scope, send) if method == "GET" else self._login(scope, receive, send))
            return
        if sub == "static/dashboard.css":
            await self._static_file("dashboard.css", send)
            return
        session = await self._session(scope)
        if session is None:
            await self._redirect(send, "/dashboard/login")
            return
        try:
            if method == "POST" and sub == "logout":
                await self._logout(scope, receive, send, session)
            elif method != "GET":
                raise InvalidInputError(f"use GET here, not {method}")
            elif sub.startswith("static/"):
                await self._static_file(sub[len("static/"):], send)  # fmt: skip
            else:
                body = await asyncio.to_thread(self._page, sub, _query(scope), session)
                await self._send(send, 200, body, b"text/html; charset=utf-8")
        except CorralError as exc:
            status = exc.http_status
            body = self._render("base.html", title=f"Error: {exc}", session=session)
            await self._send(send, status, body, b"text/html; charset=utf-8")

    def _page(self, sub: str, query: dict[str, str], session: Session) -> bytes:
        parts = sub.split("/") if sub else []
        now = datetime.now(UTC)
        if not parts:
            context = pages.overview(self.store, now)
        elif parts[0] == "deployments" and len(parts) == 2:
            hours = _number(query.get("hours", "24"), "hours")
            grain = query.get("grain") or ("m" if hours <= 3 else "h" if hours <= 24 * 14 else "d")
            context = pages.deployment(self.store, parts[1], now, hours, grain)
            return self._render("deployment.html", session=session, **context)
        elif parts[0] == "traces" and len(parts) <= 2:
            context = (
                pages.trace(self.store, parts[1]) if len(parts) == 2 else pages.traces(self.index, query)
            )
            return self._render(
                "trace.html" if len(parts) == 2 else "traces.html", session=session, **context
            )
        elif parts[0] == "drift" and len(parts) <= 2:
            report_id = int(_number(parts[1], "report id")) if len(parts) == 2 else None
            context = pages.drift(self.store, report_id, query.get("deployment") or None)
            return self._render("drift.html", session=session, **context)
        elif parts == ["alerts"]:
            return self._render("alerts.html", session=session, **pages.alerts(self.store, self.settings))
        elif parts == ["registry"]:
            return self._render("registry.html", session=session, **pages.registry(self.store))
        else:
            raise NotFoundError(f"no dashboard page /dashboard/{sub}")
        return self._render("overview.html", session=session, **context)

    # -- login, logout, static ---------------------------------------------------------------------------
    async def _login_form(self, scope: dict[str, Any], send: Send, error: str | None = None) -> None:
        csrf = secrets.token_urlsafe(24)
        body = self._render("login.html", title="Log in", csrf=csrf, error=error)
        await self._send(send, 401 if error else 200, body, b"text/html; charset=utf-8",
                         (self._set_cookie(CSRF_COOKIE, csrf, 3600),))  # fmt: skip

    async def _login(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        form = await _form(receive)
        expected = self._cookies(scope).get(CSRF_COOKIE, "")
        if not expected or not hmac.compare_digest(expected, form.get("csrf", "")):
            await self._login_form(scope, send, "the form expired; please try again")
            return
        raw = form.get("key", "").strip()
        try:
            key = await self.keys.authenticate(f"Bearer {raw}")
        except AuthenticationError:
            key = None
        if key is None or not (key.is_admin or key.is_viewer):
            await self._login_form(scope, send, "that key is not an admin or viewer key")
            return
        token, _ = await asyncio.to_thread(self.sessions.create, hash_key(raw), key)
        await self._redirect(send, "/dashboard", self._set_cookie(COOKIE, token, SESSION_TTL_S))

    async def _logout(self, scope: dict[str, Any], receive: Receive, send: Send, session: Session) -> None:
        form = await _form(receive)
        if not hmac.compare_digest(session.csrf, form.get("csrf", "")):
            raise InvalidInputError("missing or wrong CSRF token")
        await asyncio.to_thread(self.sessions.end, session)
        await self._redirect(send, "/dashboard/login", self._set_cookie(COOKIE, "", 0))

    async def _static_file(self, name: str, send: Send) -> None:
        if name not in STATIC:
            raise NotFoundError(f"no static file {name}")
        if name not in self._static:
            self._static[name] = await asyncio.to_thread(partial(STATIC[name][0]().read_bytes))
        await self._send(send, 200, self._static[name], STATIC[name][1])


def _query(scope: dict[str, Any]) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode("utf-8", "replace")).items()}


async def _form(receive: Receive) -> dict[str, str]:
    body = await read_body(receive, 64 * 1024)
    return {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


def _number(value: str, name: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise InvalidInputError(f"{name} must be a number") from None
