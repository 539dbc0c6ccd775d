"""The address guard: every hop of every fetch, against real servers on loopback.

The test feeds are on 127.0.0.1, so by the rule "a feed may reach the non-public network it is
itself on" they may reach 127.0.0.0/8, and nothing else that is not public. Names are given
private addresses by an injected resolver (the only way to get one without a DNS server).
"""

import socket

import pytest

from connectors.rss import netguard
from connectors.rss.fetch import fetch, make_client
from connectors.rss.netguard import Guard, Reach, special_block
from newsflow.feedserver import FeedServer, Reply

FEED = b'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title></channel></rss>'


@pytest.mark.parametrize(
    ("address", "label"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.20.1.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("100.64.0.1", "shared"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.10", "reserved"),
        ("::ffff:10.0.0.1", "private"),  # IPv4-mapped: judged by the IPv4 address inside
        ("::ffff:169.254.169.254", "link-local"),
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
        ("93.184.216.34", None),
        ("2606:4700::1111", None),
    ],
)
def test_addresses_are_classified(address, label):
    found = special_block(address)
    assert (found[0] if found else None) == label


def test_a_feed_reaches_only_the_special_network_it_is_on():
    loopback = Guard().reach_of("http://127.0.0.1:8080/feed")
    assert loopback.refusal("127.0.0.5") is None and loopback.refusal("::ffff:127.0.0.1") is None
    assert loopback.refusal("10.0.0.1") == "private"
    assert loopback.refusal("169.254.169.254") == "link-local"
    assert loopback.refusal("93.184.216.34") is None
    intranet = Guard(lambda host, port: ["10.1.2.3"]).reach_of("http://feeds.corp/rss")
    assert intranet.refusal("10.200.0.1") is None and intranet.refusal("192.168.0.1") == "private"
    assert Reach().refusal("127.0.0.1") == "loopback"


@pytest.fixture
def connects(monkeypatch):
    """Every address a socket was opened to (the real create_connection runs)."""
    seen = []
    real = socket.create_connection

    def spy(address, *args, **kwargs):
        seen.append(address[0])
        return real(address, *args, **kwargs)

    monkeypatch.setattr(netguard.socket, "create_connection", spy)
    return seen


def resolver(names):
    calls = []

    def resolve(host, port):
        calls.append(host)
        if host in names:
            answer = names[host]
            return answer(len(calls)) if callable(answer) else answer
        return netguard.system_resolver(host, port)

    resolve.calls = calls
    return resolve


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/feed",
        "http://[::ffff:a00:1]/feed",
        "http://[::ffff:169.254.169.254]/",
        "http://internal.example/admin",  # a name that resolves to a private address
        "http://mixed.example/feed",  # one public and one private address: refused as a whole
    ],
)
def test_a_loopback_feed_redirecting_out_of_loopback_is_refused_without_connecting(target, connects):
    names = {"internal.example": ["10.1.2.3"], "mixed.example": ["93.184.216.34", "192.168.7.7"]}
    with FeedServer() as host, make_client(read_timeout=1.0, guard=Guard(resolver(names))) as client:
        url = host.route("/feed", Reply(301, headers={"Location": target}))
        result = fetch(client, url)
    assert result.status == "blocked", result
    assert result.moved_to is None and result.final_url is None and result.http_status is None
    assert "refused" in result.error
    # nothing about the refused endpoint: not the address a name resolved to, no status, no port
    assert "10.1.2.3" not in result.error and "192.168.7.7" not in result.error
    assert connects == ["127.0.0.1"]  # the feed itself; the target was never connected to


def test_redirects_within_the_feed_network_are_followed(connects):
    with FeedServer() as feed_host, FeedServer() as other:
        target = other.route("/moved.rss", Reply(body=FEED))
        url = feed_host.route("/feed", Reply(308, headers={"Location": target}))
        with make_client() as client:
            result = fetch(client, url)
    assert result.status == "ok" and result.moved_to == target


def test_a_public_feed_cannot_reach_loopback_and_nothing_is_connected(connects):
    with FeedServer() as host, make_client() as client:
        url = host.route("/page", Reply(body=b"<html>secret</html>"))
        result = fetch(client, url, reach=Reach())  # e.g. a page linked from a public feed
    assert result.status == "blocked" and not host.requests and connects == []


def test_every_connection_resolves_and_checks_again_so_rebinding_cannot_pass(connects):
    # The name first resolves to loopback (the feed's own network), then to a private address too.
    with FeedServer() as host:
        port = host.httpd.server_address[1]
        names = {"rebind.example": lambda n: ["127.0.0.1"] if n == 1 else ["127.0.0.1", "10.0.0.1"]}
        resolve = resolver(names)
        host.route("/feed", Reply(body=FEED))
        with make_client(guard=Guard(resolve)) as client:
            result = fetch(client, f"http://rebind.example:{port}/feed")
    assert resolve.calls == ["rebind.example", "rebind.example"]
    assert result.status == "blocked" and connects == [] and not host.requests
