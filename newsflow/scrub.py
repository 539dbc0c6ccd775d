"""One scrubber for secrets in error texts and log lines.

Client libraries quote what they were given when they fail: libpq, for one, answers a DSN it cannot
parse with ``invalid percent-encoded token: "<password>"``. Every error text newsflow builds from a
library's message goes through :func:`scrub`, and :func:`install` does the same for every log line
of the process (the CLI and the Beam workers install it):

- the secrets a caller names (``scrub(text, dsn_secrets(dsn))``) and those registered with
  :func:`register` (every PostgreSQL DSN and Kafka SASL password newsflow uses) are replaced by
  ``***``, as written and percent-decoded;
- whatever looks like a password anyway is masked: the password of a URI's user info
  (``scheme://user:PASSWORD@``), the value of ``password=`` in key=value strings and of
  ``sasl_plain_password`` in a printed kafka-python configuration.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote

MASK = "***"
_MIN_SECRET = 4  # shorter strings would mask ordinary words; a password that short is masked by pattern only
_registered: set[str] = set()
_lock = threading.Lock()

_URI_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s]*:)(?P<secret>[^@\s]*)@")
_SASL_PASSWORD = re.compile(
    r"(?P<head>['\"]?sasl_plain_password['\"]?\s*[:=]\s*)('[^']*'|\"[^\"]*\"|[^\s,}]+)"
)
_KV_PASSWORD = re.compile(
    r"(?P<head>\bpassword\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s'\"]+)", re.IGNORECASE
)


def dsn_secrets(dsn: str) -> list[str]:
    """The secret parts of a connection string: its password (as written and decoded) and itself.

    Read with regular expressions, not with libpq, so that a string libpq cannot parse still yields
    its password.
    """
    found = [dsn] if dsn else []
    for pattern in (_URI_PASSWORD, _KV_PASSWORD):
        for match in pattern.finditer(dsn):
            secret = match["secret"]
            if len(secret) >= 2 and secret[0] == secret[-1] and secret[0] in "'\"":
                secret = secret[1:-1]
            found += [secret, unquote(secret)]
    return [s for s in dict.fromkeys(found) if len(s) >= _MIN_SECRET]


def register(*secrets: str | None) -> None:
    """Mask these strings in every later :func:`scrub` call and log line of this process."""
    with _lock:
        _registered.update(s for s in secrets if s and len(s) >= _MIN_SECRET)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with the given and registered secrets, and anything that looks like a password, masked."""
    with _lock:
        known = set(_registered)
    known.update(s for s in secrets if s and len(s) >= _MIN_SECRET)
    for secret in sorted(known, key=len, reverse=True):  # a DSN before the password inside it
        text = text.replace(secret, MASK)
    text = _URI_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@" if m["secret"] else m[0], text)
    text = _SASL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", text)  # kafka-python's config dicts
    return _KV_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", text)


def scrub_record(record: logging.LogRecord) -> logging.LogRecord:
    """Scrub one log record's message and traceback in place (formatting the traceback now)."""
    try:
        message = record.getMessage()
    except (TypeError, ValueError):  # a malformed call: leave it to the handler to report
        return record
    clean = scrub(message)
    if clean != message:
        record.msg, record.args = clean, ()
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = scrub(record.exc_text)
    return record


class _ScrubbingFactory:
    """A log record factory that scrubs every record when it is made, whatever handler emits it."""

    def __init__(self, inner: Callable[..., logging.LogRecord]) -> None:
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        return scrub_record(self.inner(*args, **kwargs))


def install() -> None:
    """Scrub every log record of this process from now on (idempotent).

    A record factory, not a handler filter, so that handlers added later (a Beam worker's log
    handler, which sends lines to the runner) are covered too.
    """
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _ScrubbingFactory):
        logging.setLogRecordFactory(_ScrubbingFactory(factory))
