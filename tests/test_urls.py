"""Connection URLs: parsing, clear errors, and masking of every secret."""

import pytest

from rrlab.exceptions import UrlError
from rrlab.urls import mask_text, mask_url, parse_clickhouse_url, parse_postgres_url


def test_postgres_url_parts_and_repr_without_password() -> None:
    url = parse_postgres_url("postgresql://alice:p%40ss@db.example:6543/profiling")
    assert (url.host, url.port, url.user, url.password, url.dbname) == (
        "db.example", 6543, "alice", "p@ss", "profiling",
    )  # fmt: skip
    assert "p%40ss" not in repr(url) and "p@ss" not in repr(url)
    assert url.with_dbname("other").dbname == "other"


def test_clickhouse_url_in_the_seed_form() -> None:
    url = parse_clickhouse_url("https://ch.example:8443?username=bob&password=pw")
    assert url.connect_kwargs() == {
        "host": "ch.example", "port": 8443, "username": "bob", "password": "pw", "secure": True,
    }  # fmt: skip
    plain = parse_clickhouse_url("http://localhost")
    assert (plain.port, plain.secure, plain.username) == (8123, False, "default")
    assert "pw" not in repr(url)


@pytest.mark.parametrize(
    ("parse", "url", "fragment"),
    [
        (parse_postgres_url, "", "DATABASE_URL is empty"),
        (parse_postgres_url, "mysql://u:p@h/d", "has scheme 'mysql'"),
        (parse_postgres_url, "postgresql://u:p@h:notaport/d", "is malformed"),
        (parse_postgres_url, "postgresql:///d", "names no host"),
        (parse_clickhouse_url, "tcp://h:9000", "expected https:// or http://"),
        (parse_clickhouse_url, "https://:8443", "names no host"),
    ],
)
def test_bad_urls_are_named_and_never_show_the_password(parse, url, fragment) -> None:
    with pytest.raises(UrlError) as excinfo:
        parse(url)
    assert fragment in str(excinfo.value)
    assert ":p@" not in str(excinfo.value)


def test_masking_userinfo_query_and_free_text() -> None:
    assert mask_url("postgresql://u:secret@h/d") == "postgresql://u:***@h/d"
    assert mask_url("https://h?username=u&password=secret") == "https://h?username=u&password=***"
    text = mask_text("failed: postgresql://u:secret@h/d and token sek", secrets=("sek",))
    assert "secret" not in text and "sek" not in text
