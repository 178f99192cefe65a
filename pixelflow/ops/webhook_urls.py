"""Which URLs a webhook may be sent to, checked when an endpoint is registered and again at each
delivery (a name may resolve elsewhere later: DNS rebinding).

A URL is ``http`` or ``https`` with a host name or address, no user name or password, at most
2048 characters. Every address its host resolves to must be public: loopback, link-local
(cloud metadata at 169.254.169.254), private, shared, multicast, reserved and unspecified
addresses are refused unless they are in ``PIXELFLOW_WEBHOOK_ALLOWED_NETWORKS`` (the local
stack allows loopback). The dispatcher then connects to the very address it checked.

Example:
    >>> address_allowed(ipaddress.ip_address("93.184.216.34"), [])
    True
    >>> address_allowed(ipaddress.ip_address("169.254.169.254"), []), address_allowed(ipaddress.ip_address("10.0.0.8"), [])
    (False, False)
    >>> address_allowed(ipaddress.ip_address("127.0.0.1"), networks(["127.0.0.0/8"]))
    True
    >>> check_url("ftp://example.com/")
    Traceback (most recent call last):
    pixelflow.errors.PixelFlowError: invalid_webhook_url: A webhook URL is http:// or https:// with a host, without a user name or password, at most 2048 characters.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Iterable
from urllib.parse import SplitResult, urlsplit

from pixelflow.errors import ErrorCode, PixelFlowError

MAX_URL = 2048
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Target:
    """Where one delivery goes: the URL, its host name, and the checked address to connect to."""

    url: SplitResult
    host: str
    port: int
    address: IPAddress

    @property
    def connect_url(self) -> str:
        """The URL with the checked address in place of the host name."""
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return self.url._replace(netloc=f"{host}:{self.port}").geturl()

    @property
    def host_header(self) -> str:
        default = 443 if self.url.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def networks(cidrs: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The allowed networks of ``PIXELFLOW_WEBHOOK_ALLOWED_NETWORKS``."""
    return [ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip()]


def address_allowed(address: IPAddress, allowed: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """Whether a webhook may be delivered to ``address``: a public address, or one of ``allowed``."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in allowed if network.version == address.version):
        return True
    return address.is_global and not (address.is_multicast or address.is_reserved or address.is_unspecified)


def check_url(url: str) -> SplitResult:
    """``url`` parsed, if it is a URL a webhook can be sent to.

    Raises:
        PixelFlowError: ``invalid_webhook_url``.
    """
    try:
        parsed = urlsplit(url) if isinstance(url, str) else None
        port = parsed.port if parsed else None  # raises for a port out of range
    except ValueError:
        parsed, port = None, None
    if (parsed is None or len(url) > MAX_URL or parsed.scheme not in ("http", "https") or not parsed.hostname
            or parsed.username is not None or parsed.password is not None or port == 0
            or any(c.isspace() or ord(c) < 32 for c in url)):
        raise PixelFlowError(ErrorCode.INVALID_WEBHOOK_URL, "A webhook URL is http:// or https:// with a host, "
                             "without a user name or password, at most 2048 characters.")
    return parsed


def resolve(url: str, allowed_networks: Iterable[str], resolver=socket.getaddrinfo) -> Target:
    """Check ``url`` and every address its host resolves to now; the address to connect to.

    Raises:
        PixelFlowError: ``invalid_webhook_url`` for a malformed URL or a host that does not
            resolve, ``webhook_address_not_allowed`` when an address is not public (and not in
            ``allowed_networks``).
    """
    parsed = check_url(url)
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        infos = resolver(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        raise PixelFlowError(ErrorCode.INVALID_WEBHOOK_URL, f"The webhook host {host!r} does not resolve.") from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
    if not addresses:
        raise PixelFlowError(ErrorCode.INVALID_WEBHOOK_URL, f"The webhook host {host!r} does not resolve.")
    allowed = networks(allowed_networks)
    refused = [a for a in addresses if not address_allowed(a, allowed)]
    if refused:
        raise PixelFlowError(ErrorCode.WEBHOOK_ADDRESS_NOT_ALLOWED,
                             f"The webhook host {host!r} resolves to {refused[0]}, a loopback, link-local, private or "
                             "reserved address; webhooks go to public addresses only (see "
                             "PIXELFLOW_WEBHOOK_ALLOWED_NETWORKS).", {"address": str(refused[0])})
    return Target(parsed, host, port, addresses[0])
