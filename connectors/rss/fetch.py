"""Fetching feeds over HTTP politely and safely.

httpx with explicit connect/read timeouts, a redirect limit, conditional GET (ETag and
Last-Modified), and a body size limit checked while streaming the *decoded* body, so a gzip bomb
is stopped at the limit instead of filling memory. Errors come back as a :class:`FetchResult` with a
reason code; fetching never raises for anything a remote server does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx

from newsflow import __version__

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
ACCEPT = "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.8, */*;q=0.5"
USER_AGENT = f"newsflow/{__version__} (+https://github.com/newsflow/newsflow; feed fetcher)"


@dataclass(frozen=True)
class FetchResult:
    url: str
    status: str  # ok | not_modified | http_<code> | timeout | too_large | connection_error | ...
    http_status: int | None = None
    content: bytes = b""
    content_type: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    final_url: str | None = None
    permanent_redirect: bool = False
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def make_client(
    connect_timeout: float = 5.0,
    read_timeout: float = 15.0,
    max_redirects: int = 5,
    user_agent: str = USER_AGENT,
    max_connections: int = 32,
) -> httpx.Client:
    return httpx.Client(
        timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
        follow_redirects=True,
        max_redirects=max_redirects,
        headers={
            "User-Agent": user_agent,
            "Accept": ACCEPT,
            "Accept-Encoding": "gzip, deflate",
        },
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
    )


def fetch(
    client: httpx.Client,
    url: str,
    etag: str | None = None,
    last_modified: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> FetchResult:
    """GET one feed; a 304 or any failure is a result, not an exception."""
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        with client.stream("GET", url, headers=headers) as response:
            permanent = any(r.status_code in (301, 308) for r in response.history)
            final_url = str(response.url)
            if response.status_code == 304:
                return FetchResult(
                    url,
                    "not_modified",
                    304,
                    etag=etag,
                    last_modified=last_modified,
                    final_url=final_url,
                    permanent_redirect=permanent,
                )
            if response.status_code >= 400:
                return FetchResult(
                    url,
                    f"http_{response.status_code}",
                    response.status_code,
                    final_url=final_url,
                    error=f"HTTP {response.status_code} {response.reason_phrase}",
                )
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                return FetchResult(
                    url,
                    "too_large",
                    response.status_code,
                    final_url=final_url,
                    error=f"Content-Length {declared} exceeds the {max_bytes}-byte limit",
                )
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    return FetchResult(
                        url,
                        "too_large",
                        response.status_code,
                        final_url=final_url,
                        error=f"body exceeds the {max_bytes}-byte limit (after decompression)",
                    )
            return FetchResult(
                url,
                "ok",
                response.status_code,
                bytes(body),
                content_type=response.headers.get("content-type"),
                etag=response.headers.get("etag"),
                last_modified=response.headers.get("last-modified"),
                final_url=final_url,
                permanent_redirect=permanent,
            )
    except httpx.TooManyRedirects as exc:
        return FetchResult(url, "redirect_loop", error=f"too many redirects: {exc}")
    except httpx.TimeoutException as exc:
        return FetchResult(url, "timeout", error=f"{type(exc).__name__}: timed out")
    except httpx.DecodingError as exc:
        return FetchResult(url, "bad_encoding", error=f"could not decode the response body: {exc}")
    except (httpx.TransportError, OSError) as exc:
        return FetchResult(url, "connection_error", error=f"{type(exc).__name__}: {exc}")
    except httpx.InvalidURL as exc:
        return FetchResult(url, "invalid_url", error=str(exc))
