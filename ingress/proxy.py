"""Running behind a TLS-terminating proxy: which URL a provider called.

URL-signing providers (HubSpot v3) sign the public ``https://`` URL they called, while the
app sees the proxy's internal request (``http://10.0.0.11:3003/...``). Two settings give the
public URL back, and neither trusts what a client could send on its own:

* ``HOOKSYNC_TRUSTED_PROXIES``: requests whose peer address is in one of these networks have
  their ``X-Forwarded-For/-Proto/-Host/-Port/-Prefix`` applied (Werkzeug's ``ProxyFix``,
  one hop: the values the listed proxy set). From any other peer the headers are ignored.
* ``HOOKSYNC_PUBLIC_URL``: the base URL providers call; the signed URL is it plus the
  request's path and query, whatever the proxy forwarded.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from werkzeug.middleware.proxy_fix import ProxyFix

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["TrustedProxyFix", "public_request_url"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxyFix:
    """WSGI middleware: ``ProxyFix`` for requests from a trusted proxy, nothing for others.

    ``ProxyFix`` alone counts hops and trusts whoever connects; a client reaching ``web``
    directly could then claim any scheme or host. Checking the peer address first keeps the
    forwarded headers of everyone else ignored.
    """

    def __init__(self, app: WSGIApplication, networks: Iterable[_Network]) -> None:
        self.app = app
        self.networks = tuple(networks)
        # One hop of each header: the values the trusted proxy itself appended or set.
        self.fixed = ProxyFix(app, x_for=1, x_proto=1, x_host=1, x_port=1, x_prefix=1)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        if is_trusted(environ.get("REMOTE_ADDR"), self.networks):
            return self.fixed(environ, start_response)
        return self.app(environ, start_response)


def is_trusted(address: str | None, networks: Iterable[_Network]) -> bool:
    """True when ``address`` (the TCP peer) lies in one of ``networks``."""
    if not address:
        return False
    try:
        peer = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return False  # a unix socket peer, or garbage: not a listed proxy
    return any(peer in network for network in networks)


def public_request_url(url: str, root_url: str, public_url: str | None) -> str:
    """The URL the provider called: ``public_url`` + the part of ``url`` after the app's root.

    Args:
        url: The full request URL as the app sees it (``request.url``).
        root_url: The app's root as the app sees it (``request.root_url``).
        public_url: ``HOOKSYNC_PUBLIC_URL`` without a trailing slash; None keeps ``url``.
    """
    if public_url is None:
        return url
    root = root_url.rstrip("/")
    rest = url[len(root) :] if url.startswith(root) else url
    return public_url + rest
