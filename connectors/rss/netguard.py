"""What a fetch may connect to, and for how long: the address guard and the fetch deadlines.

Every request the feed connector makes (feed polls, robots.txt, article pages) runs through
:func:`guarded_transport`, an httpx transport whose network backend resolves each host itself,
checks **every address** against the request's :class:`Reach`, connects to the checked address
(never resolving the name a second time, so DNS rebinding cannot slip a private address in), and
checks the connected peer once more. Redirects are followed by :mod:`connectors.rss.fetch` one hop
at a time, so every hop goes through the same check.

**Reach.** Public addresses are always allowed. Loopback, private (RFC 1918, ULA), shared (CGNAT),
link-local, multicast, unspecified and reserved addresses are refused, except inside the special
blocks that the *configured feed URL itself* resolves to: a feed on ``127.0.0.1`` may be served
from, and redirect within, ``127.0.0.0/8`` (and ``::1``), never to ``10.0.0.0/8`` or
``169.254.0.0/16``; a feed on an intranet ``10.1.2.3`` may reach ``10.0.0.0/8`` only. IPv4-mapped
and NAT64 IPv6 addresses are judged by the IPv4 address they carry. A refusal raises
:class:`AddressRefused` before any socket is opened, with one fixed message that names neither the
target nor what it resolved to (feed health is published: it must not be an oracle for internal DNS
or ports); the details go to the local log only.

**Deadlines.** :func:`scope` sets, for the calling thread, a total deadline for the whole fetch
(every hop, headers and body) and a deadline for the response headers of the current hop. Every
socket operation (resolution included) gets the smaller of its own timeout and what is left of
those, so a server that drips its headers or body a byte at a time, or sends endless empty gzip
blocks, is cut off on time. Name resolution runs on a helper thread so that it, too, has a deadline.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import select
import socket
import ssl
import threading
import time
import typing
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpcore
import httpx

log = logging.getLogger(__name__)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]
httpcore_socket_option = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)

#: Blocks that are not public, with the word a refusal uses for them. The first match names an address.
SPECIAL_BLOCKS: tuple[tuple[str, Network], ...] = tuple(
    (label, ipaddress.ip_network(cidr))
    for label, cidr in (
        ("loopback", "127.0.0.0/8"),
        ("loopback", "::1/128"),
        ("unspecified", "0.0.0.0/8"),
        ("unspecified", "::/128"),
        ("private", "10.0.0.0/8"),
        ("private", "172.16.0.0/12"),
        ("private", "192.168.0.0/16"),
        ("private", "fc00::/7"),
        ("shared", "100.64.0.0/10"),
        ("link-local", "169.254.0.0/16"),
        ("link-local", "fe80::/10"),
        ("multicast", "224.0.0.0/4"),
        ("multicast", "ff00::/8"),
        ("reserved", "240.0.0.0/4"),
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


#: The one message a refusal gives (it is published in feed health: it says nothing about the target).
REFUSED = (
    "refused without connecting: the URL leads to a non-public address outside the feed's own network "
    "(see 'address guard' in docs/INGEST.md)"
)


class AddressRefused(Exception):
    """A request to a non-public address outside the feed's own network; nothing was connected."""


class DeadlinePassed(httpcore.ReadTimeout):
    """The fetch's header or total deadline passed (an httpcore timeout, so httpx maps it)."""


def _embedded_ipv4(address: Address) -> Address:
    """The IPv4 address an IPv4-mapped or NAT64 IPv6 address carries; else the address itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def special_block(address: str | Address) -> tuple[str, Network] | None:
    """(label, block) of a non-public address; None for a public one."""
    ip = _embedded_ipv4(ipaddress.ip_address(address) if isinstance(address, str) else address)
    for label, block in SPECIAL_BLOCKS:
        if ip.version == block.version and ip in block:
            return label, block
    if not ip.is_global:  # documentation ranges, benchmarking, 6to4 relays, ...
        return "reserved", ipaddress.ip_network(f"{ip}/{ip.max_prefixlen}")
    return None


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (IPv4 and IPv6), in the system resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class Reach:
    """The special blocks a fetch may reach besides the public internet (see the module docstring)."""

    blocks: frozenset[Network] = frozenset()
    origin: str = ""  # the configured URL the blocks come from, for messages

    def refusal(self, address: str) -> str | None:
        """Why ``address`` may not be reached (a label like ``private``), or None if it may."""
        found = special_block(address)
        if found is None:
            return None
        label = found[0]
        ip = _embedded_ipv4(ipaddress.ip_address(address))
        if any(ip.version == b.version and ip in b for b in self.blocks):
            return None
        return label


@dataclass
class Guard:
    """Resolves names with a deadline and decides each feed's :class:`Reach`."""

    resolver: Resolver = system_resolver
    _pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(8, thread_name_prefix="resolve"), repr=False
    )

    def resolve(self, host: str, port: int, timeout: float | None) -> list[str]:
        """The addresses of ``host``; an IP literal is its own address. Raises OSError, TimeoutError."""
        literal = host.strip("[]")
        try:
            return [str(ipaddress.ip_address(literal))]
        except ValueError:
            pass
        future = self._pool.submit(self.resolver, literal, port)
        try:
            return future.result(timeout=timeout)
        except FutureTimeout as exc:
            raise TimeoutError(f"resolving {host} took longer than {timeout:.1f}s") from exc

    def reach_of(self, url: str, timeout: float = 5.0) -> Reach:
        """The reach of a feed configured at ``url``: the special blocks its own host resolves to."""
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return Reach(origin=url)
        if not host:
            return Reach(origin=url)
        try:
            addresses = self.resolve(host, port, timeout)
        except (OSError, TimeoutError):
            return Reach(origin=url)  # it cannot be reached at all; the fetch will say so
        blocks = frozenset(found[1] for a in addresses if (found := special_block(a)) is not None)
        return Reach(blocks, url)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


# -- per-request context (one fetch runs on one thread) -----------------------------------------------
@dataclass
class _Scope:
    reach: Reach
    deadline: float  # time.monotonic() after which nothing more is read (all hops)
    headers_deadline: float | None = None  # the current hop's headers must be in by then
    expired: str = ""  # which deadline fired: "headers" or "total"
    before_send: Callable[[], None] | None = None  # called once, right before a hop's first write
    connected: list[str] = field(default_factory=list)  # peer addresses connected to, in order


_local = threading.local()


def current() -> _Scope | None:
    return typing.cast(_Scope | None, getattr(_local, "scope", None))


@contextlib.contextmanager
def scope(reach: Reach, deadline: float) -> Iterator[_Scope]:
    """Run the requests in the ``with`` block under ``reach`` and the total ``deadline``."""
    previous = current()
    _local.scope = _Scope(reach, deadline)
    try:
        yield _local.scope
    finally:
        _local.scope = previous


def _bounded(timeout: float | None) -> float | None:
    """``timeout`` cut to what the current scope's deadlines leave; raises when nothing is left."""
    active = current()
    if active is None:
        return timeout
    now = time.monotonic()
    limits = [(active.deadline - now, "total")]
    if active.headers_deadline is not None:
        limits.append((active.headers_deadline - now, "headers"))
    left, which = min(limits)
    if left <= 0:
        active.expired = which
        raise DeadlinePassed(f"the fetch's {which} deadline passed")
    if timeout is None or left < timeout:
        active.expired = which  # if this operation times out, it is this deadline's doing
        return left
    active.expired = ""
    return timeout


# -- the network backend -----------------------------------------------------------------------------
class _Stream(httpcore.NetworkStream):
    """A socket whose every operation is bounded by the current scope's deadlines."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _mapped(httpcore.ReadTimeout, httpcore.ReadError):
            self._sock.settimeout(_bounded(timeout))
            return self._sock.recv(max_bytes)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        active = current()
        if active is not None and active.before_send is not None:
            hook, active.before_send = active.before_send, None
            hook()  # the politeness budget: the request goes out only now
        with _mapped(httpcore.WriteTimeout, httpcore.WriteError):
            while buffer:
                self._sock.settimeout(_bounded(timeout))
                sent = self._sock.send(buffer)
                buffer = buffer[sent:]

    def close(self) -> None:
        self._sock.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            try:
                self._sock.settimeout(_bounded(timeout))
                return _Stream(ssl_context.wrap_socket(self._sock, server_hostname=server_hostname))
            except BaseException:
                self._sock.close()
                raise

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "ssl_object" and isinstance(self._sock, ssl.SSLSocket):
            return self._sock._sslobj  # type: ignore[attr-defined] # what httpcore's own stream returns
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "socket":
            return self._sock
        if info == "is_readable":
            try:
                poller = select.poll()
                poller.register(self._sock.fileno(), select.POLLIN)
                return bool(poller.poll(0))
            except (OSError, ValueError):
                return True
        return None


@contextlib.contextmanager
def _mapped(timeout_exc: type[Exception], error_exc: type[Exception]) -> Iterator[None]:
    try:
        yield
    except DeadlinePassed:
        raise
    except TimeoutError as exc:
        raise timeout_exc(str(exc) or "timed out") from exc
    except OSError as exc:
        raise error_exc(str(exc)) from exc


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore's network backend with the address guard and the scope's deadlines."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore_socket_option] | None = None,
    ) -> httpcore.NetworkStream:
        active = current()
        reach = active.reach if active is not None else Reach()
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            addresses = self.guard.resolve(host, port, _bounded(timeout))
        for address in addresses:  # every address the name has must be allowed, not just the first
            label = reach.refusal(address)
            if label is not None:
                log.info("refused %s:%s: it resolves to %s, a %s address", host, port, address, label)
                raise AddressRefused(REFUSED)
        last: Exception | None = None
        for address in addresses:
            with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
                try:
                    sock = socket.create_connection(
                        (address, port),
                        _bounded(timeout),
                        source_address=None if local_address is None else (local_address, 0),
                    )
                except OSError as exc:
                    last = exc
                    continue
            peer = str(sock.getpeername()[0])
            if reach.refusal(peer) is not None:  # cannot differ from ``address``; checked all the same
                sock.close()
                raise AddressRefused(REFUSED)
            for option in socket_options or ():
                sock.setsockopt(*option)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if active is not None:
                active.connected.append(peer)
            return _Stream(sock)
        raise httpcore.ConnectError(str(last) if last else f"{host} has no address")

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore_socket_option] | None = None,
    ) -> httpcore.NetworkStream:
        raise AddressRefused("unix sockets are never fetched")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class GuardedTransport(httpx.HTTPTransport):
    """httpx's own transport (request mapping, exception mapping) over the guarded backend.

    No proxies: a proxy would make every connection go to the proxy's address, out of the guard's
    sight. ``trust_env`` is off for the same reason.
    """

    def __init__(self, guard: Guard, max_connections: int = 32) -> None:
        super().__init__(trust_env=False)
        # httpx builds its connection pool without a backend parameter; this replaces it whole.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=5.0,
            network_backend=GuardedBackend(guard),
        )


def guarded_transport(guard: Guard, max_connections: int = 32) -> GuardedTransport:
    return GuardedTransport(guard, max_connections)
