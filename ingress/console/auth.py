"""Console login, logout and CSRF protection (ARCHITECTURE.md §9).

The operator logs in with the API key (``HOOKSYNC_SECRET_KEY``); the session is Flask's
signed cookie. Every POST under ``/ui`` carries a per-session CSRF token, checked before the
view runs. Nothing here stores or echoes the key: the cookie holds only ``logged_in`` and the
CSRF token, signed with a key *derived* from the API key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from markupsafe import Markup, escape
from werkzeug.wrappers import Response

from ingress.auth import current_context, has_valid_api_key

__all__ = [
    "CSRF_FIELD",
    "configure_sessions",
    "csrf_field",
    "csrf_token",
    "guard",
    "is_logged_in",
    "register",
    "safe_next",
    "session_secret",
]

#: The form field (and session key) of the CSRF token.
CSRF_FIELD = "csrf_token"

#: The label mixed into the API key to derive the session-signing key: a different purpose
#: gets a different key, so a leaked session key never reveals the API key.
_SESSION_KEY_LABEL = b"hooksync console session v1"

#: Endpoints of the console reachable without a session.
_PUBLIC_ENDPOINTS = frozenset({"console.login", "console.static"})


def session_secret(api_key: str) -> str:
    """The Flask ``SECRET_KEY`` of the console, derived from the API key.

    HMAC-SHA256(api key, label): no new variable to configure, and every gunicorn worker and
    every machine with the same ``HOOKSYNC_SECRET_KEY`` derives the same key, so a session
    made by one worker is valid on the others. Rotating the API key logs every operator out.
    The one-way derivation keeps the API key itself out of the signing key.
    """
    return hmac.new(api_key.encode(), _SESSION_KEY_LABEL, hashlib.sha256).hexdigest()


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with ``Secure`` set whenever the request is https.

    A fixed ``SESSION_COOKIE_SECURE=True`` would break the plain-http console of a laptop;
    a fixed False would let a browser send the cookie over http after an https login.
    """

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(request.is_secure)


def configure_sessions(app: Flask, api_key: str) -> None:
    """Set the app's session cookie up for the console (signed, HttpOnly, SameSite=Lax,
    Secure over https, sent only to ``/ui``)."""
    app.session_interface = _SessionInterface()
    app.config["SECRET_KEY"] = session_secret(api_key)
    app.config["SESSION_COOKIE_NAME"] = "hooksync_console"
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SESSION_COOKIE_PATH"] = "/ui"


def is_logged_in() -> bool:
    """True when the request's session was opened by a login."""
    return bool(session.get("logged_in"))


def csrf_token() -> str:
    """This session's CSRF token, created on first use."""
    token = session.get(CSRF_FIELD)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session[CSRF_FIELD] = token
    return token


def csrf_field() -> Markup:
    """The hidden ``<input>`` carrying the CSRF token (a Jinja global for every form)."""
    return Markup('<input type="hidden" name="{}" value="{}">').format(
        CSRF_FIELD, escape(csrf_token())
    )


def safe_next(target: str | None) -> str:
    """``target`` when it is a path under ``/ui`` on this site, else the console's home."""
    default = url_for("console.home")
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target or not target.startswith("/"):
        return default
    if target.startswith("//") or not (parts.path == "/ui" or parts.path.startswith("/ui/")):
        return default
    return target


def guard() -> Response | tuple[str, int] | None:
    """The console's ``before_request``: log-in required, and a valid CSRF token on POST."""
    if request.endpoint in _PUBLIC_ENDPOINTS and request.method != "POST":
        return None
    if request.method == "POST" and not _csrf_ok():
        return render_template("console/forbidden.html", title="Form expired"), 403
    if request.endpoint in _PUBLIC_ENDPOINTS:
        return None
    if not is_logged_in():
        return redirect(url_for("console.login", next=request.full_path.rstrip("?")))
    return None


def _csrf_ok() -> bool:
    expected = session.get(CSRF_FIELD)
    sent = request.form.get(CSRF_FIELD, "")
    if not isinstance(expected, str) or not expected:
        return False
    return hmac.compare_digest(sent.encode(), expected.encode())


def register(bp: Blueprint) -> None:
    """Add the login and logout views and the guard to the console blueprint."""
    bp.before_request(guard)
    bp.add_url_rule("/login", "login", login, methods=["GET", "POST"])
    bp.add_url_rule("/logout", "logout", logout, methods=["POST"])


def login() -> Any:
    """The login form; a right key opens the session and follows ``next`` (under /ui)."""
    target = safe_next(request.values.get("next"))
    if request.method == "GET":
        if is_logged_in():
            return redirect(target)
        csrf_token()  # the login form is CSRF-protected too (login CSRF)
        return render_template("console/login.html", title="Log in", next=target, error=None)
    key = request.form.get("api_key", "")
    # The same constant-time check as the API's bearer header.
    if not has_valid_api_key(f"Bearer {key}", current_context().settings.secret_key):
        page = render_template(
            "console/login.html", title="Log in", next=target, error="Wrong API key."
        )
        return page, 401
    # A fresh session on login: no token or value chosen before it survives (fixation).
    session.clear()
    session["logged_in"] = True
    csrf_token()
    session.permanent = False
    return redirect(target)


def logout() -> Response:
    """Close the session (POST with the CSRF token) and go back to the login page."""
    session.clear()
    return redirect(url_for("console.login"))
