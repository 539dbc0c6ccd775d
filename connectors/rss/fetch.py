"""Fetching feeds and pages over HTTP politely and safely.

httpx over the guarded transport (:mod:`connectors.rss.netguard`: every hop's address checked,
deadlines for connect, headers and the whole fetch), redirects followed here one hop at a time
(http and https only, at most ``max_redirects``), conditional GET (ETag and Last-Modified), and a
body size limit checked while streaming the *decoded* body. gzip and deflate are decoded here, not
by httpx, with ``zlib``'s ``max_length`` so that a gzip bomb is stopped at the limit without ever
holding more than the limit in memory (httpx would inflate each network chunk whole: a 64 KiB chunk
of a bomb is 64 MiB).

Errors come back as a :class:`FetchResult` with a status code; fetching never raises for anything a
remote server does. Statuses: ``ok``, ``not_modified``, ``http_<code>``, ``timeout``,
``connection_error`` (DNS, refused), ``connection_reset`` (closed mid-response), ``too_large``,
``redirect_loop``, ``bad_encoding``, ``invalid_url``, ``blocked`` (a hop to a non-public address
outside the feed's own network, or to a non-http(s) URL: refused without connecting, and nothing
about the refused endpoint is reported), ``not_html`` (pages only: another content type).
"""

from __future__ import annotations

import functools
import logging
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit

import httpx

from connectors.rss import netguard, politeness
from connectors.rss.netguard import AddressRefused, DeadlinePassed, Guard, Reach, guarded_transport
from newsflow import __version__
from newsflow.records import FeedStatus

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_CONTACT = "https://github.com/newsflow/newsflow"
ACCEPT = "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.8, */*;q=0.5"
PAGE_ACCEPT = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1"
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
PERMANENT_REDIRECTS = (301, 308)
_RAW_CHUNK = 64 * 1024


def user_agent(contact_url: str = DEFAULT_CONTACT) -> str:
    """The User-Agent every feed request sends: product, version and how to reach the operator."""
    return f"newsflow/{__version__} (+{contact_url}; feed fetcher)"


USER_AGENT = user_agent()


@dataclass(frozen=True)
class FetchResult:
    url: str
    status: FeedStatus
    http_status: int | None = None
    content: bytes = b""
    content_type: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    final_url: str | None = None
    moved_to: str | None = None  # where a chain of 301/308 redirects from ``url`` ended
    retry_after_s: float | None = None  # from Retry-After (429/503)
    fresh_for_s: float | None = None  # from Cache-Control max-age or Expires
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is FeedStatus.OK

    @property
    def permanent_redirect(self) -> bool:
        return self.moved_to is not None


class _TooLarge(Exception):
    pass


class _Deadline(Exception):
    pass


@dataclass
class FeedClient:
    """An httpx client over the guarded transport, with the fetch limits; share one across threads."""

    http: httpx.Client
    guard: Guard
    max_redirects: int = 5
    headers_timeout: float = 30.0

    def close(self) -> None:
        self.http.close()
        self.guard.close()

    def __enter__(self) -> FeedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_client(
    connect_timeout: float = 5.0,
    read_timeout: float = 15.0,
    max_redirects: int = 5,
    user_agent: str = USER_AGENT,
    max_connections: int = 32,
    headers_timeout: float = 30.0,
    guard: Guard | None = None,
) -> FeedClient:
    """A client for feeds and pages: guarded transport, timeouts, redirects followed hop by hop."""
    guard = guard or Guard()
    http = httpx.Client(
        timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
        follow_redirects=False,  # fetch() follows them itself, checking each hop
        headers={"User-Agent": user_agent, "Accept": ACCEPT, "Accept-Encoding": "gzip, deflate"},
        transport=guarded_transport(guard, max_connections),
        trust_env=False,
    )
    return FeedClient(http, guard, max_redirects, headers_timeout)


def fetch(
    client: FeedClient,
    url: str,
    etag: str | None = None,
    last_modified: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    total_timeout: float = 60.0,
    *,
    reach: Reach | None = None,
    accept: str | None = None,
    html_only: bool = False,
) -> FetchResult:
    """GET one URL; a 304 or any failure is a result, not an exception.

    ``reach`` says which non-public networks the request may touch (default: those ``url`` itself
    is on, i.e. ``url`` is a configured feed). ``html_only`` refuses any other content type before
    reading the body (status ``not_html``). Everything, every redirect hop included, must finish
    within ``total_timeout``; each hop's headers within the client's ``headers_timeout``.
    """
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    if accept:
        headers["Accept"] = accept
    deadline = time.monotonic() + total_timeout
    if reach is None:
        reach = client.guard.reach_of(url, timeout=min(total_timeout, 10.0))
    hops: list[tuple[int, str]] = []  # (status, url) of each redirect followed
    current = url
    with netguard.scope(reach, deadline) as active:
        try:
            for _ in range(client.max_redirects + 1):
                if not _http_url(current):
                    if not hops:
                        return FetchResult(
                            url, FeedStatus.INVALID_URL, error=f"{current!r} is not an http(s) URL"
                        )
                    return FetchResult(
                        url, FeedStatus.BLOCKED, error="redirected to a non-http(s) URL; refused"
                    )
                active.before_send = functools.partial(politeness.pace, current)
                active.headers_deadline = time.monotonic() + client.headers_timeout
                request = client.http.build_request("GET", current, headers=headers)
                response = client.http.send(request, stream=True)
                active.headers_deadline = None
                try:
                    location = response.headers.get("location") if response.is_redirect else None
                    if location is None:
                        return _read(url, response, hops, etag, last_modified, max_bytes, deadline, html_only)
                    hops.append((response.status_code, current))
                    current = urljoin(current, location.strip())
                finally:
                    response.close()
            return FetchResult(
                url,
                FeedStatus.REDIRECT_LOOP,
                error=f"more than {client.max_redirects} redirects; the URL redirects in a loop or too deep",
            )
        except AddressRefused as exc:
            log.info("fetch of %s refused: %s", url, exc)
            return FetchResult(url, FeedStatus.BLOCKED, error=str(exc))
        except httpx.TimeoutException as exc:
            return FetchResult(
                url, FeedStatus.TIMEOUT, error=_timeout_error(exc, active.expired, total_timeout)
            )
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            return FetchResult(url, FeedStatus.INVALID_URL, error=f"{exc}; fix the URL")
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            return FetchResult(url, FeedStatus.CONNECTION_RESET, error=f"{type(exc).__name__}: {exc}")
        except (httpx.TransportError, OSError) as exc:
            return FetchResult(url, FeedStatus.CONNECTION_ERROR, error=f"{type(exc).__name__}: {exc}")


def _http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def _timeout_error(exc: Exception, expired: str, total_timeout: float) -> str:
    if expired == "headers":
        return "the response headers did not arrive in time (NEWSFLOW_INGEST_HEADERS_TIMEOUT_S)"
    if expired == "total" or isinstance(exc, DeadlinePassed):
        return f"the fetch took longer than {total_timeout:g}s in all (NEWSFLOW_INGEST_TOTAL_TIMEOUT_S)"
    return f"{type(exc).__name__}: no answer in time"


def _read(
    url: str,
    response: httpx.Response,
    hops: list[tuple[int, str]],
    etag: str | None,
    last_modified: str | None,
    max_bytes: int,
    deadline: float,
    html_only: bool,
) -> FetchResult:
    final_url = str(response.url)
    moved_to = _moved_to(hops, final_url)
    code = response.status_code
    if code == 304:
        return FetchResult(
            url,
            FeedStatus.NOT_MODIFIED,
            304,
            etag=response.headers.get("etag") or etag,
            last_modified=response.headers.get("last-modified") or last_modified,
            final_url=final_url,
            moved_to=moved_to,
            fresh_for_s=freshness_seconds(response.headers),
        )
    if not 200 <= code < 300:
        retry = retry_after_seconds(response.headers.get("retry-after")) if code in (429, 503) else None
        return FetchResult(
            url,
            FeedStatus.http(code),
            code,
            final_url=final_url,
            moved_to=moved_to,
            retry_after_s=retry,
            error=f"HTTP {code} {response.reason_phrase}".strip(),
        )
    content_type = response.headers.get("content-type")
    if html_only and _mime(content_type) not in HTML_TYPES:
        return FetchResult(
            url,
            FeedStatus.NOT_HTML,
            code,
            content_type=content_type,
            final_url=final_url,
            error=f"content type {content_type or 'none'!r} is not an HTML page",
        )
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        return FetchResult(
            url,
            FeedStatus.TOO_LARGE,
            code,
            final_url=final_url,
            error=f"Content-Length {declared} exceeds the {max_bytes}-byte limit (NEWSFLOW_INGEST_MAX_BYTES)",
        )
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
        return FetchResult(
            url,
            FeedStatus.BAD_ENCODING,
            code,
            final_url=final_url,
            error=f"unsupported Content-Encoding {encoding!r}",
        )
    body = bytearray()
    try:
        for chunk in _decoded(response.iter_raw(_RAW_CHUNK), encoding, max_bytes, deadline):
            body += chunk
    except _TooLarge:
        return FetchResult(
            url,
            FeedStatus.TOO_LARGE,
            code,
            final_url=final_url,
            error=f"body exceeds the {max_bytes}-byte limit after decompression (NEWSFLOW_INGEST_MAX_BYTES)",
        )
    except _Deadline:
        return FetchResult(
            url,
            FeedStatus.TIMEOUT,
            code,
            final_url=final_url,
            error="the body did not arrive in time (total deadline)",
        )
    except zlib.error as exc:
        return FetchResult(
            url, FeedStatus.BAD_ENCODING, code, final_url=final_url, error=f"corrupt {encoding} body: {exc}"
        )
    return FetchResult(
        url,
        FeedStatus.OK,
        code,
        bytes(body),
        content_type=content_type,
        etag=response.headers.get("etag"),
        last_modified=response.headers.get("last-modified"),
        final_url=final_url,
        moved_to=moved_to,
        fresh_for_s=freshness_seconds(response.headers),
    )


def _mime(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _decoded(raw: Iterator[bytes], encoding: str, limit: int, deadline: float) -> Iterator[bytes]:
    """Decode a gzip/deflate/identity stream, never producing more than ``limit + 1`` bytes.

    The deadline is checked on every network chunk, whatever it decodes to (endless empty gzip
    members decode to nothing).
    """
    produced = 0
    if encoding in ("", "identity"):
        for chunk in raw:
            if time.monotonic() > deadline:
                raise _Deadline
            produced += len(chunk)
            if produced > limit:
                raise _TooLarge
            yield chunk
        return
    decoder: zlib._Decompress | None = None
    for chunk in raw:
        if time.monotonic() > deadline:
            raise _Deadline
        data = chunk
        while data:
            if decoder is None:
                decoder = zlib.decompressobj(_wbits(encoding, data))
            out = decoder.decompress(data, limit + 1 - produced)
            produced += len(out)
            if produced > limit:
                raise _TooLarge
            if out:
                yield out
            if decoder.eof:  # a gzip stream may hold several members
                data = decoder.unused_data
                decoder = None
            else:
                data = decoder.unconsumed_tail
    if decoder is not None:
        tail = decoder.flush()
        if produced + len(tail) > limit:
            raise _TooLarge
        if tail:
            yield tail


def _wbits(encoding: str, head: bytes) -> int:
    if encoding in ("gzip", "x-gzip"):
        return 16 + zlib.MAX_WBITS
    # "deflate" is meant to be zlib-wrapped, but some servers send raw deflate.
    if len(head) >= 2 and head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0:
        return zlib.MAX_WBITS
    return -zlib.MAX_WBITS


def _moved_to(hops: list[tuple[int, str]], final_url: str) -> str | None:
    """The URL after the leading run of permanent redirects (a 302 after a 301 ends the run)."""
    urls = [u for _, u in hops] + [final_url]
    moved = None
    for i, (status, _) in enumerate(hops):
        if status not in PERMANENT_REDIRECTS:
            break
        moved = urls[i + 1]
    return moved


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP-date); None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def freshness_seconds(headers: httpx.Headers, now: float | None = None) -> float | None:
    """How long the response stays fresh: Cache-Control max-age, else Expires minus Date (or now)."""
    cache_control = headers.get("cache-control", "").lower()
    if "no-store" in cache_control or "no-cache" in cache_control:
        return None
    for directive in cache_control.split(","):
        name, _, value = directive.strip().partition("=")
        if name == "max-age" and value.strip().strip('"').isdigit():
            return float(value.strip().strip('"'))
    expires = headers.get("expires")
    if not expires:
        return None
    try:
        until = parsedate_to_datetime(expires).timestamp()
    except (TypeError, ValueError, IndexError):
        return None  # "Expires: 0" and other junk means "already stale"
    base = time.time() if now is None else now
    date = headers.get("date")
    if date:
        try:
            base = parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError, IndexError):
            log.debug("unparseable Date header %r", date)
    return max(0.0, until - base)
