"""Where a webhook may go: the SSRF policy for outbound webhook URLs.

Two checks, both needed:

- ``check_url`` when a subscription is created or changed: scheme, shape, and any IP literal in the URL, with no
  DNS (a hostname may legitimately not resolve yet, and its answer may change anyway);
- ``pin`` before every delivery: the hostname is resolved once, every address it resolves to is checked, and the
  connection must then use the checked address (``PinnedTarget.address``), so a second lookup by the HTTP client
  cannot be answered differently (DNS rebinding).

Anything that is not a plain public unicast address is refused unless ``TargetPolicy.allowed_networks`` names it;
IPv6 forms that carry an IPv4 address (mapped, compatible, 6to4, NAT64) are judged by the IPv4 address they carry.
Hostnames are refused statically only where the name alone says enough: ``localhost`` and ``*.localhost`` (which
resolvers may answer locally without DNS; allowed when the allow-list contains loopback) and the cloud metadata
names (never allowed). Everything else about a hostname is decided on its addresses in ``pin``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import SplitResult, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2048
_DEFAULT_PORTS = {"https": 443, "http": 80}

# Metadata endpoints hand out cloud credentials; most sit in ranges refused anyway, but a specific reason helps
# whoever reads the refusal, and 168.63.129.16 (Azure's wire server) is a public address that must still be refused.
_METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    {
        ipaddress.IPv4Address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
        ipaddress.IPv4Address("169.254.170.2"),  # AWS ECS task metadata
        ipaddress.IPv4Address("100.100.100.200"),  # Alibaba Cloud
        ipaddress.IPv4Address("168.63.129.16"),  # Azure wire server
        ipaddress.IPv6Address("fd00:ec2::254"),  # AWS over IPv6
    }
)
_METADATA_HOSTNAMES = frozenset({"metadata.google.internal", "metadata.goog", "instance-data.ec2.internal"})


def _v4(cidr: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(cidr)


def _v6(cidr: str) -> ipaddress.IPv6Network:
    return ipaddress.IPv6Network(cidr)


# Checked in order, so the most telling reason wins; anything not global that falls through is caught at the end by
# ``ipaddress``'s own registry (``is_global``), which knows the special-purpose ranges not listed here.
_V4_RULES: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_v4("0.0.0.0/8"), 'an unspecified ("this network") address'),
    (_v4("127.0.0.0/8"), "a loopback address"),
    (_v4("169.254.0.0/16"), "a link-local address"),
    (_v4("10.0.0.0/8"), "a private network address"),
    (_v4("172.16.0.0/12"), "a private network address"),
    (_v4("192.168.0.0/16"), "a private network address"),
    (_v4("100.64.0.0/10"), "a carrier-grade NAT address"),
    (_v4("224.0.0.0/4"), "a multicast address"),
    (_v4("255.255.255.255/32"), "the broadcast address"),
    (_v4("240.0.0.0/4"), "a reserved address"),
    (_v4("192.0.2.0/24"), "a documentation address"),
    (_v4("198.51.100.0/24"), "a documentation address"),
    (_v4("203.0.113.0/24"), "a documentation address"),
    (_v4("198.18.0.0/15"), "a benchmarking address"),
    (_v4("192.0.0.0/24"), "a protocol assignment address"),
    (_v4("192.88.99.0/24"), "a 6to4 relay anycast address"),
)
_V6_RULES: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_v6("::/128"), "the unspecified address"),
    (_v6("::1/128"), "a loopback address"),
    (_v6("fe80::/10"), "a link-local address"),
    (_v6("fec0::/10"), "a site-local address"),
    (_v6("fc00::/7"), "a unique-local address"),
    (_v6("ff00::/8"), "a multicast address"),
    (_v6("2001:db8::/32"), "a documentation address"),
    (_v6("3fff::/20"), "a documentation address"),
    (_v6("100::/64"), "a discard-only address"),
    # The local-use NAT64 prefix (RFC 8215) maps to whatever the local translator decides: nothing to check.
    (_v6("64:ff9b:1::/48"), "a local-use NAT64 address"),
)
_V4_COMPATIBLE = _v6("::/96")
_NAT64 = _v6("64:ff9b::/96")
_LOOPBACK_PROBES = (ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1"))

# What a hostname may look like once IDNA has made it ASCII; the underscore is tolerated because internal-looking
# names with one do resolve in practice, and refusing them here would only move the decision away from ``pin``.
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_FORBIDDEN_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


class TargetRefused(Exception):
    """A webhook target the policy does not allow; ``reason`` is a short sentence safe to show and to store."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class TargetPolicy:
    require_https: bool = True
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_strings(cls, *, require_https: bool, allowed: Sequence[str]) -> TargetPolicy:
        """Build the policy from settings; ``ValueError`` names a CIDR that is not one."""
        networks: list[IPNetwork] = []
        for cidr in allowed:
            try:
                networks.append(ipaddress.ip_network(cidr.strip(), strict=True))
            except ValueError as exc:
                raise ValueError(f"not a network in CIDR notation: {cidr!r} ({exc})") from exc
        return cls(require_https=require_https, allowed_networks=tuple(networks))

    def allows(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.allowed_networks)

    def allows_loopback(self) -> bool:
        return any(self.allows(ip) for ip in _LOOPBACK_PROBES)


def _embedded_v4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address an IPv6 address carries, and the form that carries it (None if it carries none)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, "an IPv4-mapped IPv6 address"
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "a NAT64 address"
    if ip.sixtofour is not None:
        return ip.sixtofour, "a 6to4 address"
    # ::/96 minus :: and ::1, which are the unspecified and loopback addresses themselves, not IPv4 carriers.
    if ip in _V4_COMPATIBLE and int(ip) > 1:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "an IPv4-compatible IPv6 address"
    return None


def _refused_v4(ip: ipaddress.IPv4Address) -> str | None:
    if ip in _METADATA_ADDRESSES:
        return "a cloud metadata address"
    for network, reason in _V4_RULES:
        if ip in network:
            return reason
    if not ip.is_global:
        return "not a public address"
    return None


def refused_address(ip: IPAddress, policy: TargetPolicy) -> str | None:
    """Why ``ip`` may not be a webhook target (a phrase such as "a loopback address"), or None if it may.

    The phrase never contains the address, so a refusal of a resolved hostname does not disclose what an internal
    name resolves to.
    """
    if policy.allows(ip):
        return None
    if isinstance(ip, ipaddress.IPv4Address):
        return _refused_v4(ip)
    # Compare without a zone: fe80::1%eth0 is still fe80::1.
    bare = ipaddress.IPv6Address(int(ip))
    if bare in _METADATA_ADDRESSES:
        return "a cloud metadata address"
    if bare.teredo is not None:
        # The client address inside Teredo is obfuscated and the relay is whoever announces 2001::/32: nothing a
        # webhook needs, so refused outright rather than judged by the IPv4 addresses it carries.
        return "a Teredo tunnelling address"
    embedded = _embedded_v4(bare)
    if embedded is not None:
        inner, form = embedded
        if policy.allows(inner):
            return None
        reason = _refused_v4(inner)
        return None if reason is None else f"{reason} inside {form}"
    for network, phrase in _V6_RULES:
        if bare in network:
            return phrase
    if not bare.is_global or bare.is_reserved:
        return "not a public address"
    return None


def _parse_legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The address a dotted host means to ``inet_aton`` (and to browsers): 1-4 parts, each decimal, octal (leading 0)
    or hex (0x), the last filling the remaining bytes, so ``2130706433``, ``0x7f.1`` and ``017700000001`` are all
    127.0.0.1. None when the host is not numeric (a name); ``TargetRefused`` when it looks numeric but is invalid,
    because some client might still read it as an address.

    Written out rather than calling ``socket.inet_aton`` because the C library's version accepts trailing junk after
    whitespace and differs between platforms.
    """
    labels = host.split(".")
    if labels and labels[-1] == "":
        labels.pop()
    if not labels or not _NUMERIC_LABEL.match(labels[-1]):
        return None
    invalid = TargetRefused(f"The host {host} looks like an IP address but is not a valid one.")
    if len(labels) > 4:
        raise invalid
    parts: list[int] = []
    for label in labels:
        if not _NUMERIC_LABEL.match(label):
            raise invalid
        if label.startswith("0x"):
            digits, base = label[2:] or "0", 16
        elif len(label) > 1 and label.startswith("0"):
            digits, base = label[1:], 8
        else:
            digits, base = label, 10
        try:
            parts.append(int(digits, base))
        except ValueError:
            raise invalid from None
    *head, last = parts
    if any(part > 0xFF for part in head) or last >= 256 ** (4 - len(head)):
        raise invalid
    value = last
    for index, part in enumerate(head):
        value |= part << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


@dataclass(frozen=True)
class _ParsedUrl:
    scheme: str
    host: str  # ASCII, lower case, no trailing dot; an IP address in its canonical text (IPv6 without brackets)
    ip: IPAddress | None
    port: int
    path_and_query: str

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if isinstance(self.ip, ipaddress.IPv6Address) else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.path_and_query}"


def _split(url: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        _ = parts.port  # urlsplit parses the port lazily: a bad one must fail here, not later
    except ValueError:
        raise TargetRefused("The URL is not valid.") from None
    return parts


def _host_of(parts: SplitResult, policy: TargetPolicy) -> tuple[str, IPAddress | None]:
    netloc_host = parts.netloc.rpartition("@")[2]
    raw = parts.hostname
    if not raw:
        raise TargetRefused("The URL has no host.")
    if netloc_host.startswith("["):
        if "%" in raw:
            raise TargetRefused("IPv6 zone identifiers are not allowed in a webhook URL.")
        try:
            ip6 = ipaddress.IPv6Address(raw)
        except ValueError:
            raise TargetRefused("The URL has an invalid IPv6 address.") from None
        return _checked_literal(ip6, policy)
    try:
        # The idna codec also folds full-width digits and ideographic dots, so 127.0.0.1 written in full-width
        # characters is seen as the numeric host it is before the IPv4 forms are checked below.
        host = raw.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise TargetRefused("The URL's host name is not valid.") from None
    host = host.removesuffix(".")
    ip4 = _parse_legacy_ipv4(host)
    if ip4 is not None:
        return _checked_literal(ip4, policy)
    if len(host) > 253 or not all(_LABEL.match(label) for label in host.split(".")):
        raise TargetRefused("The URL's host name is not valid.")
    if host in _METADATA_HOSTNAMES:
        raise TargetRefused(f"The host {host} is a cloud metadata service.")
    if (host == "localhost" or host.endswith(".localhost")) and not policy.allows_loopback():
        raise TargetRefused(f"The host {host} is a loopback name.")
    return host, None


def _checked_literal(ip: IPAddress, policy: TargetPolicy) -> tuple[str, IPAddress]:
    reason = refused_address(ip, policy)
    if reason is not None:
        raise TargetRefused(f"The address {ip} is {reason}.")
    return str(ip), ip


def _parse(url: str, policy: TargetPolicy) -> _ParsedUrl:
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefused(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    # Whitespace and control characters are stripped or split on differently by different parsers: refusing them
    # keeps what is checked here the same thing that is sent. A backslash is a path separator to some of them.
    if _FORBIDDEN_URL_CHARS.search(url):
        raise TargetRefused("The URL contains spaces, control characters or backslashes.")
    parts = _split(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise TargetRefused("The URL must start with https://." if policy.require_https else "The URL must be http(s).")
    if scheme == "http" and policy.require_https:
        raise TargetRefused("The URL must use https.")
    if "@" in parts.netloc:
        raise TargetRefused("The URL must not contain a user name or password.")
    host, ip = _host_of(parts, policy)
    port = parts.port if parts.port is not None else _DEFAULT_PORTS[scheme]
    if port == 0:
        raise TargetRefused("The URL's port is not valid.")
    path_and_query = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _ParsedUrl(scheme=scheme, host=host, ip=ip, port=port, path_and_query=path_and_query)


def check_url(url: str, policy: TargetPolicy) -> str:
    """The normalised URL (lower-case scheme and host, IDNA, canonical IP text, default port and fragment dropped,
    ``/`` for an empty path), or ``TargetRefused``. No DNS: hostnames are judged by their addresses in ``pin``."""
    return _parse(url, policy).url


class Resolver(Protocol):
    async def resolve(self, host: str, port: int) -> list[str]:
        """The IP addresses ``host`` resolves to, as strings; ``TargetRefused`` when it cannot be resolved."""


class SystemResolver:
    """The operating system's resolver (``getaddrinfo``), the one a plain connection would use."""

    async def resolve(self, host: str, port: int) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise TargetRefused(f"The host {host} cannot be resolved.") from None
        return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class PinnedTarget:
    url: str  # the URL as check_url normalised it, with the host name (never the address)
    scheme: str
    host: str  # the host name (or IP literal, without brackets) for the Host header, SNI and certificate checks
    port: int
    path_and_query: str
    address: str  # the single IP checked, which the connection must use


async def pin(url: str, policy: TargetPolicy, resolver: Resolver) -> PinnedTarget:
    """Check ``url``, resolve its host once and check every address; the first one is the one to connect to.

    One refused address refuses the whole target: a name that resolves to a public and a private address would
    otherwise reach the private one whenever the client picked it, or after a retry.
    """
    parsed = _parse(url, policy)
    if parsed.ip is not None:
        address = parsed.host
    else:
        answers = await resolver.resolve(parsed.host, parsed.port)
        addresses: list[IPAddress] = []
        for answer in answers:
            try:
                addresses.append(ipaddress.ip_address(answer))
            except ValueError:
                raise TargetRefused(f"The host {parsed.host} resolves to something that is not an address.") from None
        if not addresses:
            raise TargetRefused(f"The host {parsed.host} cannot be resolved.")
        for ip in addresses:
            reason = refused_address(ip, policy)
            if reason is not None:
                raise TargetRefused(f"The host {parsed.host} resolves to {reason}.")
        address = str(addresses[0])
    return PinnedTarget(
        url=parsed.url,
        scheme=parsed.scheme,
        host=parsed.host,
        port=parsed.port,
        path_and_query=parsed.path_and_query,
        address=address,
    )
