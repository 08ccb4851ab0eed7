"""SSRF guard for the callback URLs that webhooks are POSTed to.

A callback URL is chosen by whoever holds an API key, and the workers that POST to it sit
inside the deployment's network: next to Postgres, Redis, S3 and, in a cloud, the instance
metadata service. So a URL is accepted only when it is ``http``/``https``, names a host,
carries no ``user:password@`` and every address its host resolves to is a public unicast
address: no private (RFC 1918, ULA), loopback, link-local, multicast, reserved,
unspecified, shared (CGNAT) or cloud-metadata address, unless private networks are
allowed (dev stacks and tests, ``FACEAUTH_WEBHOOK_ALLOW_PRIVATE_NETWORKS``).

``check_callback_url`` is run when a key's callback is set (gateway, CLI) and again by
the delivery right before it connects (``resolve_callback``), because what a name
resolves to can change between the two (DNS rebinding). The delivery then connects to
one of the very addresses that were checked (``workers/pipeline/webhooks.py`` keeps the
name for the Host header and TLS SNI / certificate check), so a name that answers a
public address to the check and a private one a moment later cannot steer the POST
inside; redirects are never followed.

Residual risk: the guard knows address classes, not your network. A public address of
the deployment's own infrastructure (its load balancer, a public admin endpoint, a
cloud API answering on a public address) is accepted like any other; so is any HTTP
service on the internet, with whatever the event tells it. Deployments that accept
callbacks from untrusted parties should also limit the IO workers' egress (firewall or
an egress proxy applying the same rule).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOWED_SCHEMES = frozenset({"http", "https"})

# Instance-metadata endpoints of the big clouds, by name and by address. Most of the
# addresses are also link-local (refused anyway); they are listed so that the reason
# says so, and so that the IPv6 / non-link-local ones are covered.
METADATA_HOSTNAMES = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.com",
        "metadata.tencentyun.com",
    }
)
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.253",  # AWS DNS resolver
        "169.254.169.123",  # AWS time sync
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::253",
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (classic)
    )
)

# Carrier-grade NAT space (RFC 6598): not "private" for Python < 3.11.4, never public.
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")


def address_refusal(address: IPAddress) -> str | None:
    """Why ``address`` may not be a webhook's destination; None for a public unicast one."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            reason = address_refusal(mapped)
            return None if reason is None else f"{reason} (embedded in {address})"
        if address.teredo is not None:
            return f"{address} is a Teredo address"
    if address in METADATA_ADDRESSES:
        return f"{address} is a cloud metadata address"
    checks = (
        ("is_unspecified", "unspecified"),
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_reserved", "reserved"),
        ("is_private", "private"),
        ("is_site_local", "site-local"),
    )
    for attribute, label in checks:
        if getattr(address, attribute, False):
            return f"{address} is a {label} address"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED_ADDRESS_SPACE:
        return f"{address} is a shared (carrier-grade NAT) address"
    if not address.is_global:
        return f"{address} is not a global address"
    return None


def _parse(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a callback URL, or ValueError."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError("the callback URL is empty")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise ValueError("the callback URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"the callback URL is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise ValueError(f"the callback URL must be http or https, not {scheme or 'nothing'!r}")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError("the callback URL must not carry credentials (user:password@)")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise ValueError("the callback URL names no host")
    if port is None:
        port = 443 if scheme == "https" else 80
    return scheme, host, port


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def resolve_callback(url: str, *, allow_private: bool) -> list[IPAddress]:
    """Check ``url`` and return the addresses its host resolves to now (ValueError if refused).

    The delivery calls this right before connecting, so that a name that turned private
    since the key's callback was set is refused (see the module docstring for what this
    does not close).
    """
    _scheme, host, port = _parse(url)
    if not allow_private and host in METADATA_HOSTNAMES:
        raise ValueError(f"the callback host {host} is a cloud metadata service")
    literal = _literal_address(host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise ValueError(f"the callback host {host} does not resolve: {exc}") from None
        addresses = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            address = _literal_address(str(sockaddr[0]))
            if address is not None and address not in addresses:
                addresses.append(address)
        if not addresses:
            raise ValueError(f"the callback host {host} resolves to no address")
    if not allow_private:
        for address in addresses:
            reason = address_refusal(address)
            if reason is not None:
                raise ValueError(f"the callback host {host} is refused: {reason}")
    return addresses


def check_callback_url(url: str, *, allow_private: bool) -> None:
    """Refuse (ValueError, with the reason) a callback URL a webhook may not be sent to.

    http/https only, a host, no userinfo; unless ``allow_private``, every address the
    host resolves to must be public (no private, loopback, link-local, multicast,
    reserved, unspecified or cloud-metadata address).
    """
    resolve_callback(url, allow_private=allow_private)
