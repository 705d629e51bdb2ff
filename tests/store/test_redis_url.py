"""`store.url`: the three deployments it names, what a bad one says, and how it is shown."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from proxy.settings.config import RedisStoreConfig
from proxy.settings.redis_url import RedisTarget, parse_redis_url


def test_one_endpoint_as_before() -> None:
    target = parse_redis_url("rediss://user:p%40ss@cache.internal:6380/2")
    assert target == RedisTarget("single", True, (("cache.internal", 6380),), "user", "p@ss", 2,
                                 None)  # fmt: skip
    assert parse_redis_url("redis://10.0.0.1").nodes == (("10.0.0.1", 6379),)


def test_cluster_seeds_and_sentinels_with_their_service() -> None:
    cluster = parse_redis_url("redis+cluster://app:pw@10.0.0.1:7000,10.0.0.2:7001,[::1]")
    assert cluster.mode == "cluster" and not cluster.tls and cluster.db == 0
    assert cluster.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001), ("::1", 6379))
    assert (cluster.username, cluster.password) == ("app", "pw")
    sentinel = parse_redis_url("rediss+sentinel://:pw@s1,s2:26380/primary-a/3")
    assert sentinel.mode == "sentinel" and sentinel.tls
    assert sentinel.nodes == (("s1", 26379), ("s2", 26380))
    assert (sentinel.service, sentinel.db, sentinel.username) == ("primary-a", 3, None)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://h:1", "unsupported Redis URL scheme 'http'"),
        ("redis+cluster://h:1/2", "database 0 only"),
        ("redis+cluster://h:1?ssl_cert_reqs=none", "no query options"),
        ("redis+sentinel://h:1", "names the primary's service"),
        ("redis+sentinel://h:1/svc/x", "database number"),
        ("redis+cluster://h:1,:2", "invalid host:port ':2'"),
        ("redis+cluster://h:99999", "invalid port 99999"),
    ],
)
def test_a_bad_url_says_what_is_wrong_without_the_password(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_redis_url(url)
    with pytest.raises(ValidationError) as caught:
        RedisStoreConfig(kind="redis", url=url.replace("://", "://u:s3cret@"))
    assert reason in caught.value.errors()[0]["msg"]
    assert "s3cret" not in caught.value.errors()[0]["msg"]


def test_tls_and_sentinel_fields_need_their_kind_of_url() -> None:
    with pytest.raises(ValidationError, match=r"store\.tls is set but store\.url is not a rediss"):
        RedisStoreConfig(kind="redis", url="redis://h", tls={"ca_file": "ca.pem"})
    with pytest.raises(ValidationError, match=r"sentinel_password are set but store\.url is not"):
        RedisStoreConfig(kind="redis", url="redis+cluster://h:1", sentinel_password="x")
    with pytest.raises(ValidationError, match=r"cert_file and store\.tls\.key_file go together"):
        RedisStoreConfig(kind="redis", url="rediss://h", tls={"cert_file": "c.pem"})


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rediss://user:pw@cache.internal:6380/2", "rediss://cache.internal:6380/2"),
        ("redis://:pw@10.0.0.1/0", "redis://10.0.0.1/0"),
        ("redis+cluster://u:pw@a:7000,b:7001", "redis+cluster://a:7000,b:7001"),
        ("rediss+sentinel://u:pw@s1,[::1]:5/svc", "rediss+sentinel://s1:26379,[::1]:5/svc/0"),
    ],
)
def test_shown_without_user_or_password(url: str, shown: str) -> None:
    assert parse_redis_url(url).redacted(url) == shown
