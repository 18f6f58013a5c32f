"""Where the Redis mirror's password comes from, and that a URL's credentials stay out of
messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from state import mirror

pytestmark = pytest.mark.unit


def test_the_password_file_wins_over_the_environment(tmp_path: Path) -> None:
    secret = tmp_path / "redis.password"
    secret.write_text("from-the-file\n")
    env = {mirror.PASSWORD_ENV: "from-the-env"}
    assert mirror.password(str(secret), env) == "from-the-file"
    assert mirror.password("", env) == "from-the-env"
    assert mirror.password("", {}) is None
    assert mirror.password("", {mirror.PASSWORD_ENV: ""}) is None


def test_an_unreadable_password_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(mirror.MirrorUnavailableError, match=str(missing)):
        mirror.password(str(missing), {})


def test_a_urls_credentials_are_not_repeated() -> None:
    url = "rediss://gridstream:s3cret@redis.example:6380/2"
    assert mirror.without_credentials(url) == "rediss://redis.example:6380/2"
