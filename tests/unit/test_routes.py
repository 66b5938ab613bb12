import pytest

from router.proxy import _strip_auth_cookie, _upstream_path
from router.routes import JobRoute, RouteSnapshot
from router.versions import SemVer, select_version

VERSIONS = ["1.0.0", "1.2.0", "1.10.0", "2.0.0-beta.1", "0.9.0"]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("latest", "1.10.0"),  # numeric, not string, order; pre-releases excluded
        ("1.x", "1.10.0"),
        ("1.2.x", "1.2.0"),
        ("0.x", "0.9.0"),
        ("2.x", None),  # only a pre-release has major 2
        ("x", "1.10.0"),
        ("2.0.0-beta.1", "2.0.0-beta.1"),  # exact names reach pre-releases
        ("1.0.0", "1.0.0"),
        ("1.0", None),
        ("3.0.0", None),
    ],
)
def test_select_version(selector, expected):
    assert select_version(selector, VERSIONS) == expected


def test_latest_with_only_prereleases_is_none():
    assert select_version("latest", ["1.0.0-rc.1"]) is None


def test_semver_precedence_follows_semver_org():
    ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
               "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0"]  # fmt: skip
    parsed = [SemVer.parse(v) for v in ordered]
    assert parsed == sorted(parsed)  # type: ignore[type-var]


def route(job, version, *upstreams, public=()):
    return JobRoute(job, version, 1, tuple(upstreams), frozenset(public))


def test_snapshot_resolves_and_keeps_versions_that_are_restarting():
    snapshot = RouteSnapshot.build(
        [
            route("adder", "1.0.0", "http://a"),
            route("adder", "2.0.0"),
            route("x", "1.0.0", "http://x"),
        ]
    )
    assert snapshot.resolve("adder", "latest").version == "1.0.0"
    assert snapshot.resolve("adder", "2.0.0").upstreams == ()  # answered 503, not 404
    assert snapshot.resolve("nope", "latest") is None


def test_snapshot_is_immutable():
    snapshot = RouteSnapshot.build([route("adder", "1.0.0", "http://a")])
    with pytest.raises(TypeError):
        snapshot.jobs["evil"] = {}  # type: ignore[index]
    with pytest.raises(TypeError):
        snapshot.jobs["adder"]["9.9.9"] = route("adder", "9.9.9", "http://b")  # type: ignore[index]


def test_round_robin_over_instances():
    r = route("adder", "1.0.0", "http://a", "http://b")
    assert [r.pick_upstream() for _ in range(4)] == ["http://a", "http://b", "http://a", "http://b"]


def test_public_endpoints_match_as_prefixes_on_segment_boundaries():
    r = route("adder", "1.0.0", "http://a", public=["/api/v1/perform"])
    assert r.is_public("/api/v1/perform")
    assert r.is_public("/api/v1/perform/")
    assert r.is_public("/api/v1/perform/more")  # a prefix, as in Racetrack
    assert not r.is_public("/api/v1/perform2")  # but only on a segment boundary
    assert not r.is_public("/api/v1")
    assert not r.is_public("/api/v1/perform/../secret")
    assert r.is_public("/health") and r.is_public("/live") and r.is_public("/ready")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/pub/job/adder/1.0.0/api/v1/perform", "/api/v1/perform"),
        ("/pub/job/adder/latest", "/"),
        ("/pub/job/adder/latest/", "/"),
        ("/pub/job/adder/1.x/a%2Fb?q=1&r=%20", "/a%2Fb?q=1&r=%20"),
    ],
)
def test_upstream_path_keeps_the_raw_rest(raw, expected):
    assert _upstream_path(raw) == expected


def test_auth_cookie_is_not_forwarded():
    assert _strip_auth_cookie("a=1; X-Racetrack-Auth=secret; b=2") == "a=1; b=2"
    assert _strip_auth_cookie("X-Racetrack-Auth=secret") == ""
