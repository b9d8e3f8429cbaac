"""The ``Host`` check: a guard against DNS rebinding for a server bound to one address.

A page on any site can make a browser send requests to ``127.0.0.1:8000`` under the site's own
name (its DNS answer is switched to 127.0.0.1 after the page loaded): the browser then lets the
page read the answers, trajectories and ``/info`` included. Such a request carries the site's
name in ``Host``. So a server bound to one address answers only a ``Host`` that is:

- an IP literal (``127.0.0.1``, ``[::1]``, ``10.0.0.7``): a page served from an IP address is
  its own origin, no rebinding involved; this covers the bound address, tunnels and mapped ports
  (the port is never checked: ``ssh -L 9000:localhost:8000`` sends ``localhost:9000``);
- ``localhost`` or the bound name;
- listed in ``--allowed-hosts`` (exact names, or ``*.example.org`` for its subdomains).

Anything else gets ``421`` JSON naming the flag. ``--allowed-hosts '*'`` answers every ``Host``.
A server bound to every interface (``0.0.0.0``, ``::``) is reached by names the server cannot
know (node names, service DNS, proxies) and is readable by the whole network already, so it
checks ``Host`` only when ``--allowed-hosts`` is given; ``--token`` is what protects it.

>>> check = HostCheck.allowing("127.0.0.1", ("search.example",))
>>> [check.allows(h) for h in ("localhost:8000", "[::1]", "search.example", "evil.example")]
[True, True, True, False]
>>> HostCheck.allowing("0.0.0.0", None) is None
True
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence

from .web import json_response

log = logging.getLogger(__name__)

WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})


def host_name(header: str) -> str:
    """The name in a ``Host`` value: no port, no brackets, lower case, no trailing dot.

    >>> host_name("[::1]:8000"), host_name("LocalHost.:80"), host_name("10.0.0.7")
    ('::1', 'localhost', '10.0.0.7')
    """
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0].rstrip(".") if header.count(":") <= 1 else header


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostCheck:
    """Which ``Host`` names a server answers (see the module docstring)."""

    def __init__(self, names: frozenset[str], suffixes: tuple[str, ...]):
        self.names, self.suffixes = names, suffixes

    @classmethod
    def allowing(cls, bind_host: str | None, allowed: Sequence[str] | None) -> HostCheck | None:
        """The check for a server bound to ``bind_host`` (None: not known, e.g. an app under
        test) with the ``--allowed-hosts`` list; None when every ``Host`` is answered."""
        allowed = tuple(a.strip().lower().rstrip(".") for a in allowed or () if a.strip())
        if "*" in allowed:
            return None
        if not allowed and (bind_host is None or bind_host in WILDCARD_BINDS):
            return None
        names = {"localhost", *(a for a in allowed if not a.startswith("*."))}
        if bind_host and bind_host not in WILDCARD_BINDS:
            names.add(host_name(bind_host))
        suffixes = tuple(a[1:] for a in allowed if a.startswith("*."))
        return cls(frozenset(names), suffixes)

    def allows(self, header: str | None) -> bool:
        if header is None:  # HTTP/1.0 without Host: not a browser
            return True
        name = host_name(header)
        return name in self.names or name.endswith(self.suffixes) or _is_ip(name)


class HostGuard:
    """ASGI middleware: a request whose ``Host`` the check refuses gets 421 JSON."""

    def __init__(self, app, check: HostCheck):
        self.app, self.check = app, check

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = next((v for k, v in scope["headers"] if k == b"host"), None)
            text = host.decode("latin-1") if host is not None else None
            if not self.check.allows(text):
                name = host_name(text or "")[:200]
                log.info("refused a request for Host %r (not in --allowed-hosts)", name)
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                detail = (
                    f"Host {name!r} is not this server's address: a page elsewhere may be "
                    f"reaching it by DNS rebinding; if {name!r} is a name of this server, start "
                    f"it with --allowed-hosts {name} (or --allowed-hosts '*' to answer any Host)"
                )
                response = json_response({"error": "misdirected_request", "detail": detail}, 421)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
