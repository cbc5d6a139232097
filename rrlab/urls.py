"""Parsing and masking of connection URLs.

Credentials never leave this module in clear text except through the explicit
``*_connect_kwargs`` helpers used to open a connection. Everything that may be
printed, logged or written to a file goes through :func:`mask_url`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import (
    SplitResult,
    parse_qsl,
    quote,
    unquote,
    urlencode,
    urlsplit,
    urlunsplit,
)

from rrlab.exceptions import UrlError

MASK = "***"
_SECRET_KEYS = {"password", "pass", "pwd", "secret", "token", "sslpassword", "access_token"}
_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def mask_url(url: str) -> str:
    """Return ``url`` with its password (userinfo or query parameter) replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{hostport}" if sep else f"{user}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        masked = [(k, MASK if k.lower() in _SECRET_KEYS else v) for k, v in pairs]
        query = urlencode(masked, safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def mask_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Mask every URL found in ``text`` and every literal secret given."""
    masked = _URL_IN_TEXT.sub(lambda m: mask_url(m.group(0)), text)
    for secret in secrets:
        if secret:
            masked = masked.replace(secret, MASK)
            masked = masked.replace(quote(secret, safe=""), MASK)
    return masked


@dataclass(frozen=True)
class PostgresUrl:
    """A parsed postgres:// URL."""

    url: str
    host: str
    port: int
    user: str
    password: str
    dbname: str

    def __repr__(self) -> str:
        return f"PostgresUrl({mask_url(self.url)!r})"

    __str__ = __repr__

    @property
    def masked(self) -> str:
        return mask_url(self.url)

    def with_dbname(self, dbname: str) -> PostgresUrl:
        parts = urlsplit(self.url)
        url = urlunsplit((parts.scheme, parts.netloc, "/" + quote(dbname), parts.query, ""))
        return parse_postgres_url(url)


PG_EXAMPLE = "postgresql://user:password@host:5432/dbname"
CH_EXAMPLE = "https://host:8443?username=default&password=secret"


def _split(
    url: str, variable: str, schemes: tuple[str, ...], example: str
) -> tuple[SplitResult, int | None]:
    """Split a URL and check its scheme; raise :class:`UrlError` naming the problem."""
    if not isinstance(url, str) or not url.strip():
        raise UrlError(f"{variable} is empty. Give a URL like {example}.")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise UrlError(
            f"{variable} {mask_url(url)} is malformed ({exc}). Expected {example}."
        ) from None
    if parts.scheme not in schemes:
        raise UrlError(
            f"{variable} {mask_url(url)} has scheme {parts.scheme or '(none)'!r}; "
            f"expected {' or '.join(s + '://' for s in schemes)}, e.g. {example}."
        )
    return parts, port


def parse_postgres_url(url: str) -> PostgresUrl:
    """Parse and validate a PostgreSQL URL; raise :class:`UrlError` naming the problem."""
    parts, port = _split(url, "DATABASE_URL", ("postgresql", "postgres"), PG_EXAMPLE)
    query = dict(parse_qsl(parts.query))
    host = parts.hostname or query.get("host", "")
    if not host:
        raise UrlError(f"DATABASE_URL {mask_url(url)} names no host. Expected {PG_EXAMPLE}.")
    return PostgresUrl(
        url=url.strip(),
        host=unquote(host),
        port=port or int(query.get("port", 5432)),
        user=unquote(parts.username or query.get("user", "")),
        password=unquote(parts.password or query.get("password", "")),
        dbname=unquote(parts.path.lstrip("/")) or "postgres",
    )


@dataclass(frozen=True)
class ClickHouseUrl:
    """A parsed ClickHouse URL in the seed's form https://host:8443?username=...&password=..."""

    url: str
    secure: bool
    host: str
    port: int
    username: str
    password: str
    database: str | None

    def __repr__(self) -> str:
        return f"ClickHouseUrl({mask_url(self.url)!r})"

    __str__ = __repr__

    @property
    def masked(self) -> str:
        return mask_url(self.url)

    def connect_kwargs(self) -> dict[str, object]:
        """Keyword arguments for ``clickhouse_connect.get_client`` (contains the password)."""
        kwargs: dict[str, object] = {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "secure": self.secure,
        }
        if self.database:
            kwargs["database"] = self.database
        return kwargs


def parse_clickhouse_url(url: str) -> ClickHouseUrl:
    """Parse and validate a ClickHouse URL; raise :class:`UrlError` naming the problem."""
    parts, port = _split(url, "CLICKHOUSE_URL", ("https", "http"), CH_EXAMPLE)
    if not parts.hostname:
        raise UrlError(f"CLICKHOUSE_URL {mask_url(url)} names no host.")
    query = dict(parse_qsl(parts.query))
    secure = parts.scheme == "https"
    return ClickHouseUrl(
        url=url.strip(),
        secure=secure,
        host=parts.hostname,
        port=port or (8443 if secure else 8123),
        username=unquote(parts.username or query.get("username", query.get("user", "default"))),
        password=unquote(parts.password or query.get("password", "")),
        database=(parts.path.lstrip("/") or query.get("database")) or None,
    )
