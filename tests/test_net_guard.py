"""The SSRF guard on webhook callback URLs (literal addresses and localhost only: no DNS)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from shared import net_guard
from shared.net_guard import address_refusal, check_callback_url, resolve_callback

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"


@pytest.mark.parametrize(
    "url",
    [
        f"https://{PUBLIC_V4}/hooks",
        f"http://{PUBLIC_V4}:8080/hooks?x=1",
        f"https://[{PUBLIC_V6}]/hooks",
        "HTTPS://8.8.8.8/",
    ],
)
def test_public_addresses_are_accepted(url: str) -> None:
    check_callback_url(url, allow_private=False)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8000/h", "loopback"),
        ("http://127.8.9.10/h", "loopback"),
        ("http://[::1]/h", "loopback"),
        ("http://10.0.0.5/h", "private"),
        ("http://172.16.3.4/h", "private"),
        ("http://192.168.1.1/h", "private"),
        ("http://[fd12:3456::1]/h", "private"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "metadata"),
        ("http://100.100.100.200/", "metadata"),
        ("http://169.254.1.1/h", "link-local"),
        ("http://[fe80::1]/h", "link-local"),
        ("http://224.0.0.1/h", "multicast"),
        ("http://[ff02::1]/h", "multicast"),
        ("http://0.0.0.0/h", "unspecified"),
        ("http://[::]/h", "unspecified"),
        ("http://240.0.0.1/h", "reserved"),
        ("http://100.64.0.1/h", "shared"),
        ("http://[::ffff:127.0.0.1]/h", "loopback"),
        ("http://[::ffff:169.254.169.254]/h", "metadata"),
        ("http://[2002:7f00:1::]/h", "loopback"),  # 6to4 around 127.0.0.1
        ("http://localhost:9999/h", "loopback"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
        ("http://METADATA.GOOGLE.INTERNAL./x", "metadata"),
    ],
)
def test_internal_destinations_are_refused(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_callback_url(url, allow_private=False)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://93.184.216.34/x", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("gopher://93.184.216.34/", "http or https"),
        ("93.184.216.34/hooks", "http or https"),
        ("", "empty"),
        ("https:///nohost", "no host"),
        ("https://user:pw@93.184.216.34/", "credentials"),
        ("https://user@93.184.216.34/", "credentials"),
        ("https://93.184.216.34:99999/", "malformed"),
        ("https://93.184.216.34/a b", "whitespace"),
        ("https://93.184.216.34/\r\nX: y", "whitespace"),
    ],
)
def test_malformed_urls_are_refused(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_callback_url(url, allow_private=True)


def test_allow_private_admits_loopback_and_private() -> None:
    for url in (
        "http://127.0.0.1:8000/h",
        "http://localhost:8000/h",
        "http://10.1.2.3/h",
        "http://[::1]:9/h",
    ):
        check_callback_url(url, allow_private=True)


def test_every_resolved_address_must_be_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name with one public and one private address is refused (either could be used)."""

    def fake_getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        assert host == "hooks.example.com"
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_V4, port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
        ]

    monkeypatch.setattr(net_guard.socket, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(ValueError, match=r"10\.0\.0\.7 is a private"):
        check_callback_url("https://hooks.example.com/x", allow_private=False)


def test_resolution_is_repeated_each_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: a name that was public when set and turns private is refused later."""
    answers = [[PUBLIC_V4], ["127.0.0.1"]]
    seen: list[str] = []

    def fake_getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        seen.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in answers.pop(0)]

    monkeypatch.setattr(net_guard.socket, "getaddrinfo", fake_getaddrinfo)
    url = "https://rebind.example.com/x"
    assert resolve_callback(url, allow_private=False) == [ipaddress.ip_address(PUBLIC_V4)]
    with pytest.raises(ValueError, match="loopback"):
        resolve_callback(url, allow_private=False)
    assert seen == ["rebind.example.com", "rebind.example.com"]


def test_unresolvable_host_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_getaddrinfo(*args: Any, **kwargs: Any) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(net_guard.socket, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(ValueError, match="does not resolve"):
        check_callback_url("https://nowhere.invalid/x", allow_private=True)


def test_resolve_returns_literal_address_without_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: Any, **kwargs: Any) -> list[Any]:
        raise AssertionError("a literal address needs no DNS")

    monkeypatch.setattr(net_guard.socket, "getaddrinfo", no_dns)
    assert resolve_callback(f"https://[{PUBLIC_V6}]:8443/", allow_private=False) == [
        ipaddress.ip_address(PUBLIC_V6)
    ]


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("8.8.8.8", False),
        ("1.1.1.1", False),
        ("2001:4860:4860::8888", False),
        ("192.0.2.1", True),  # TEST-NET-1 (documentation)
        ("198.18.0.1", True),  # benchmarking
        ("255.255.255.255", True),
        ("2001:db8::1", True),  # documentation
        ("169.254.170.2", True),
    ],
)
def test_address_refusal(address: str, refused: bool) -> None:
    assert (address_refusal(ipaddress.ip_address(address)) is not None) is refused
