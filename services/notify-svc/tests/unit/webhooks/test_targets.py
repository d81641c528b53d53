"""Where a webhook may go: every internal range is refused, in every spelling of an address, statically for IP
literals and after resolution for names, unless the allow-list names it; public targets pass."""

from __future__ import annotations

import ipaddress

import pytest

from notify_svc.webhooks.targets import (
    PinnedTarget,
    TargetPolicy,
    TargetRefused,
    check_url,
    pin,
    refused_address,
)

STRICT = TargetPolicy()
DEV = TargetPolicy(require_https=False)
LOOPBACK_ALLOWED = TargetPolicy.from_strings(require_https=False, allowed=["127.0.0.0/8", "::1/128"])


class FakeResolver:
    """Answers from a table and remembers every question."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, int]] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        if host not in self.answers:
            raise TargetRefused(f"The host {host} cannot be resolved.")
        return self.answers[host]


REFUSED_ADDRESSES = [
    # IPv4
    ("10.0.0.5", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("169.254.10.10", "link-local"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.254", "carrier-grade NAT"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("0.0.0.0", "unspecified"),  # noqa: S104  # refused, never bound
    ("0.1.2.3", "unspecified"),
    ("255.255.255.255", "broadcast"),
    ("240.0.0.1", "reserved"),
    ("192.0.2.10", "documentation"),
    ("198.51.100.10", "documentation"),
    ("203.0.113.10", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("192.0.0.8", "protocol assignment"),
    # cloud metadata
    ("169.254.169.254", "cloud metadata"),
    ("100.100.100.200", "cloud metadata"),
    ("fd00:ec2::254", "cloud metadata"),
    # IPv6
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fe80::1", "link-local"),
    ("febf:ffff::1", "link-local"),
    ("fec0::1", "site-local"),
    ("fc00::1", "unique-local"),
    ("fd12:3456:789a::1", "unique-local"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("100::1", "discard-only"),
    ("64:ff9b:1::a00:5", "local-use NAT64"),
    # IPv6 carrying IPv4: judged by the IPv4 inside
    ("::ffff:127.0.0.1", "loopback address inside an IPv4-mapped"),
    ("::ffff:10.0.0.5", "private network address inside an IPv4-mapped"),
    ("::ffff:169.254.169.254", "cloud metadata address inside an IPv4-mapped"),
    ("::127.0.0.1", "loopback address inside an IPv4-compatible"),
    ("::10.0.0.5", "private network address inside an IPv4-compatible"),
    ("2002:7f00:1::", "loopback address inside a 6to4"),
    ("2002:a00:5::1", "private network address inside a 6to4"),
    ("2002:a9fe:a9fe::", "cloud metadata address inside a 6to4"),
    ("64:ff9b::127.0.0.1", "loopback address inside a NAT64"),
    ("64:ff9b::10.0.0.5", "private network address inside a NAT64"),
    ("64:ff9b::169.254.169.254", "cloud metadata address inside a NAT64"),
    ("2001::1", "Teredo"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
]

PUBLIC_ADDRESSES = [
    "93.184.215.14",
    "8.8.8.8",
    "1.1.1.1",
    "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
    "2a00:1450:4001:80b::200e",
    "::ffff:93.184.215.14",  # mapped, but the IPv4 inside is public
    "2002:5db8:d70e::1",  # 6to4 of a public IPv4
    "64:ff9b::93.184.215.14",  # NAT64 of a public IPv4
]


@pytest.mark.parametrize(("address", "reason"), REFUSED_ADDRESSES)
def test_internal_addresses_are_refused(address: str, reason: str) -> None:
    refusal = refused_address(ipaddress.ip_address(address), STRICT)
    assert refusal is not None
    assert reason in refusal


@pytest.mark.parametrize(("address", "reason"), REFUSED_ADDRESSES)
def test_internal_address_literals_are_refused_in_urls(address: str, reason: str) -> None:
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(TargetRefused) as refused:
        check_url(f"https://{host}/hooks", STRICT)
    assert reason in refused.value.reason
    assert refused.value.reason.endswith(".")


@pytest.mark.parametrize("address", PUBLIC_ADDRESSES)
def test_public_addresses_are_allowed(address: str) -> None:
    assert refused_address(ipaddress.ip_address(address), STRICT) is None


@pytest.mark.parametrize(
    ("url", "means"),
    [
        ("http://2130706433/", "127.0.0.1"),
        ("http://0x7f000001/", "127.0.0.1"),
        ("http://0x7f.1/", "127.0.0.1"),
        ("http://0X7F.0.0.1/", "127.0.0.1"),
        ("http://017700000001/", "127.0.0.1"),
        ("http://0177.0.0.1/", "127.0.0.1"),
        ("http://127.1/", "127.0.0.1"),
        ("http://127.0.1/", "127.0.0.1"),
        ("http://127.0.0.1./", "127.0.0.1"),
        ("http://0/", "0.0.0.0"),  # noqa: S104  # refused, never bound
        ("http://167772165/", "10.0.0.5"),
        ("http://0xa9.0xfe.0xa9.0xfe/", "169.254.169.254"),
        ("http://\uff11\uff12\uff17\u3002\uff10\u3002\uff10\u3002\uff11/", "127.0.0.1"),  # full-width digits and dots
    ],
)
def test_legacy_and_numeric_ipv4_forms_are_read_as_the_address_they_mean(url: str, means: str) -> None:
    with pytest.raises(TargetRefused) as refused:
        check_url(url, DEV)
    assert f"The address {means} is " in refused.value.reason
    # and with the range allowed, the URL is normalised to the address it means
    allowed = TargetPolicy.from_strings(require_https=False, allowed=[f"{means}/32"])
    assert check_url(url, allowed) == f"http://{means}/"


@pytest.mark.parametrize("url", ["http://1.2.3.4.5/", "http://256.0.0.1/", "http://1.2.3.0x1ff/", "http://08.0.0.1/"])
def test_hosts_that_look_numeric_but_are_no_address_are_refused(url: str) -> None:
    with pytest.raises(TargetRefused, match="looks like an IP address"):
        check_url(url, DEV)


@pytest.mark.parametrize(
    "url",
    [
        "https://localhost/hooks",
        "https://LOCALHOST./hooks",
        "https://erp.localhost/hooks",
        "https://metadata.google.internal/computeMetadata/v1/",
    ],
)
def test_local_and_metadata_names_are_refused_without_dns(url: str) -> None:
    with pytest.raises(TargetRefused):
        check_url(url, STRICT)


def test_localhost_is_allowed_when_loopback_is_but_metadata_names_never() -> None:
    assert check_url("http://localhost:8080/hooks", LOOPBACK_ALLOWED) == "http://localhost:8080/hooks"
    assert check_url("http://erp.localhost/", LOOPBACK_ALLOWED) == "http://erp.localhost/"
    with pytest.raises(TargetRefused, match="metadata"):
        check_url("http://metadata.google.internal/", LOOPBACK_ALLOWED)


def test_hostnames_are_not_resolved_statically() -> None:
    # A name that resolves nowhere (.invalid is reserved for that) passes the static check: pin decides on it.
    assert check_url("https://erp.invalid/hooks", STRICT) == "https://erp.invalid/hooks"


def test_allow_list_lets_exactly_the_named_networks_through() -> None:
    policy = TargetPolicy.from_strings(require_https=False, allowed=["10.1.0.0/16"])
    assert refused_address(ipaddress.ip_address("10.1.2.3"), policy) is None
    assert refused_address(ipaddress.ip_address("10.2.0.1"), policy) is not None
    assert refused_address(ipaddress.ip_address("127.0.0.1"), policy) is not None
    assert check_url("http://10.1.2.3:9000/x", policy) == "http://10.1.2.3:9000/x"


def test_allowing_an_ipv4_network_also_allows_it_inside_ipv6_forms() -> None:
    assert refused_address(ipaddress.ip_address("::ffff:127.0.0.1"), STRICT) is not None
    assert refused_address(ipaddress.ip_address("::ffff:127.0.0.1"), LOOPBACK_ALLOWED) is None
    assert refused_address(ipaddress.ip_address("64:ff9b::127.0.0.1"), LOOPBACK_ALLOWED) is None
    # but not another IPv4 network carried the same way
    assert refused_address(ipaddress.ip_address("::ffff:10.0.0.5"), LOOPBACK_ALLOWED) is not None


def test_allowing_ipv6_loopback_does_not_allow_ipv4_loopback() -> None:
    policy = TargetPolicy.from_strings(require_https=False, allowed=["::1/128"])
    assert refused_address(ipaddress.ip_address("::1"), policy) is None
    assert refused_address(ipaddress.ip_address("127.0.0.1"), policy) is not None


@pytest.mark.parametrize("cidr", ["10.0.0.0/33", "not-a-network", "10.0.0.1/8", ""])
def test_a_bad_cidr_is_a_value_error(cidr: str) -> None:
    with pytest.raises(ValueError, match="CIDR"):
        TargetPolicy.from_strings(require_https=True, allowed=[cidr])


def test_https_is_required_unless_the_policy_says_otherwise() -> None:
    with pytest.raises(TargetRefused, match="https"):
        check_url("http://erp.example.com/hooks", STRICT)
    assert check_url("http://erp.example.com/hooks", DEV) == "http://erp.example.com/hooks"
    assert check_url("https://erp.example.com/hooks", STRICT) == "https://erp.example.com/hooks"


@pytest.mark.parametrize("url", ["ftp://erp.example.com/", "file:///etc/passwd", "gopher://erp.example.com/", "erp"])
def test_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(TargetRefused):
        check_url(url, DEV)


@pytest.mark.parametrize(
    "url",
    [
        "https://user:secret@erp.example.com/hooks",
        "https://user@erp.example.com/hooks",
        "https://@erp.example.com/hooks",
        "https://erp.example.com@10.0.0.5/hooks",
    ],
)
def test_userinfo_is_refused(url: str) -> None:
    with pytest.raises(TargetRefused, match="user name or password"):
        check_url(url, STRICT)


@pytest.mark.parametrize(
    "url",
    [
        "https:///hooks",
        "https://erp.example.com:0/",
        "https://erp.example.com:70000/",
        "https://erp.example.com:port/",
        "https://erp example.com/",
        "https://erp.example.com/a b",
        "https://erp.example.com\\@10.0.0.5/",
        "https://erp.example.com/\r\nX-Injected: 1",
        "https://erp..example.com/",
        "https://-erp.example.com/",
        "https://erp%2eexample.com/",
        "https://[fe80::1%25eth0]/",
        "https://[not-an-address]/",
        "https://" + "a" * 64 + ".example.com/",
    ],
)
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(TargetRefused):
        check_url(url, STRICT)


def test_urls_longer_than_2048_characters_are_refused() -> None:
    base = "https://erp.example.com/"
    assert check_url(base + "a" * (2048 - len(base)), STRICT)
    with pytest.raises(TargetRefused, match="2048"):
        check_url(base + "a" * (2049 - len(base)), STRICT)


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("HTTPS://ERP.Example.COM/Hooks?A=1#frag", "https://erp.example.com/Hooks?A=1"),
        ("https://erp.example.com:443", "https://erp.example.com/"),
        ("https://erp.example.com:8443/x", "https://erp.example.com:8443/x"),
        ("https://erp.example.com.?q", "https://erp.example.com/?q"),
        ("https://bücher.example/", "https://xn--bcher-kva.example/"),
        ("https://93.184.215.14/x", "https://93.184.215.14/x"),
        (
            "https://[2606:2800:021f:cb07:6820:80DA:af6b:8b2c]:8443/x",
            "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]:8443/x",
        ),
    ],
)
def test_check_url_returns_the_normalised_url(url: str, normalised: str) -> None:
    assert check_url(url, STRICT) == normalised


async def test_pin_refuses_a_name_that_resolves_to_a_private_address() -> None:
    resolver = FakeResolver({"erp.example.com": ["10.0.0.5"]})
    with pytest.raises(TargetRefused) as refused:
        await pin("https://erp.example.com/hooks", STRICT, resolver)
    assert refused.value.reason == "The host erp.example.com resolves to a private network address."
    assert resolver.asked == [("erp.example.com", 443)]


@pytest.mark.parametrize(
    "answers",
    [
        ["93.184.215.14", "10.0.0.5"],
        ["10.0.0.5", "93.184.215.14"],
        ["2606:2800:21f:cb07:6820:80da:af6b:8b2c", "::ffff:127.0.0.1"],
        ["93.184.215.14", "169.254.169.254"],
        ["93.184.215.14", "64:ff9b::10.0.0.5"],
    ],
)
async def test_pin_refuses_a_name_with_any_refused_address(answers: list[str]) -> None:
    resolver = FakeResolver({"erp.example.com": answers})
    with pytest.raises(TargetRefused, match="resolves to"):
        await pin("https://erp.example.com/hooks", STRICT, resolver)


async def test_pin_keeps_the_first_checked_address_and_the_name() -> None:
    resolver = FakeResolver({"erp.example.com": ["2606:2800:21f:cb07:6820:80da:af6b:8b2c", "93.184.215.14"]})
    target = await pin("https://ERP.example.com:8443/hooks?x=1#f", STRICT, resolver)
    assert target == PinnedTarget(
        url="https://erp.example.com:8443/hooks?x=1",
        scheme="https",
        host="erp.example.com",
        port=8443,
        path_and_query="/hooks?x=1",
        address="2606:2800:21f:cb07:6820:80da:af6b:8b2c",
    )
    assert resolver.asked == [("erp.example.com", 8443)]


async def test_pin_does_not_resolve_an_ip_literal() -> None:
    resolver = FakeResolver({})
    target = await pin("https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/hooks", STRICT, resolver)
    assert target.address == target.host == "2606:2800:21f:cb07:6820:80da:af6b:8b2c"
    assert resolver.asked == []
    with pytest.raises(TargetRefused, match="loopback"):
        await pin("http://0x7f.1/", DEV, resolver)
    assert resolver.asked == []


async def test_pin_refuses_statically_before_asking_dns() -> None:
    resolver = FakeResolver({"localhost": ["93.184.215.14"]})
    with pytest.raises(TargetRefused, match="loopback name"):
        await pin("https://localhost/", STRICT, resolver)
    with pytest.raises(TargetRefused, match="https"):
        await pin("http://erp.example.com/", STRICT, resolver)
    assert resolver.asked == []


@pytest.mark.parametrize("answers", [[], ["not-an-address"]])
async def test_pin_refuses_an_empty_or_garbled_answer(answers: list[str]) -> None:
    with pytest.raises(TargetRefused):
        await pin("https://erp.example.com/", STRICT, FakeResolver({"erp.example.com": answers}))


async def test_pin_passes_on_a_resolution_failure() -> None:
    with pytest.raises(TargetRefused, match="cannot be resolved"):
        await pin("https://erp.example.com/", STRICT, FakeResolver({}))


async def test_pin_allows_private_answers_the_allow_list_names() -> None:
    resolver = FakeResolver({"erp.test": ["127.0.0.1", "::1"]})
    target = await pin("http://erp.test:8080/hooks", LOOPBACK_ALLOWED, resolver)
    assert (target.address, target.host, target.port) == ("127.0.0.1", "erp.test", 8080)
