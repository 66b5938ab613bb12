"""Public endpoints open path prefixes on segment boundaries, after one normalisation, and no
path that could be read as another one is ever public."""

import pytest

from buildpacks.manifest import MAX_ENDPOINT_CHARS, endpoint_problem
from controller.public_endpoints import declared_paths, effective_paths
from router.paths import MAX_PATH_CHARS, is_under, normalize_path
from router.routes import JobRoute

WEBVIEW = "/api/v1/webview"


def route(*public: str) -> JobRoute:
    return JobRoute("job", "1.0.0", 1, ("http://a",), frozenset(public))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/", "/"),
        ("/api/v1/webview", WEBVIEW),
        ("/api/v1/webview/", WEBVIEW),  # one trailing slash
        ("/api/v1/webview?x=1", WEBVIEW),  # the query is not the path
        ("/api/v1/webview/?next=/../../admin", WEBVIEW),
        ("/api/v1/web%76iew", WEBVIEW),  # decoded as the job decodes it
        ("/api/v1/webview/a%20b", "/api/v1/webview/a b"),
        ("/api/v1/webview/caf%C3%A9", "/api/v1/webview/café"),
        ("/api/v1/webview/a.b/.hidden/...", "/api/v1/webview/a.b/.hidden/..."),
        ("/API/v1/Webview", "/API/v1/Webview"),  # case is kept: matching is case-sensitive
    ],
)
def test_normalize_path_decodes_and_drops_query_and_trailing_slash(raw, expected):
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "api/v1/webview",  # not absolute
        "//",
        "/api//v1/webview",  # empty segments
        "/api/v1/webview//",
        "/api/v1/webview/..",
        "/api/v1/webview/../../admin",
        "/api/v1/webview/./x",
        "/./api/v1/webview",
        "/api/v1/webview/%2e%2e/admin",  # encoded dot segments
        "/api/v1/webview/%2E%2E/%2E%2E/admin",
        "/api/v1/webview/.%2e/admin",
        "/api/v1/webview/%2e/x",
        "/api/v1/webview%2f..%2f..%2fadmin",  # an encoded separator
        "/api/v1/webview%2Fx",
        "/api/v1/webview/%252e%252e/admin",  # double encoding
        "/api/v1/webview/%25",
        "/api/v1/webview/%zz",  # an escape that is not one
        "/api/v1/webview/%",
        "/api/v1/webview\\..\\admin",  # backslashes
        "/api/v1/webview/%5c..%5cadmin",
        "/api/v1/webview/%5C",
        "/api/v1/webview/..;/admin",  # `..;x` is `..` to some servers
        "/api/v1/webview/..;jsessionid=1/admin",
        "/api/v1/webview/.;x",
        "/api/v1/webview/..%3b/admin",
        "/api/v1/webview#/../../admin",  # a fragment
        "/api/v1/webview/%23/x",
        "/api/v1/webview/%c0%ae%c0%ae/admin",  # overlong UTF-8 for '..'
        "/api/v1/webview/%ff",  # not UTF-8
        "/api/v1/webview/%00",  # NUL and control characters
        "/api/v1/webview/%0a",
        "/api/v1/webview/\x7f",
        "/" + "a" * MAX_PATH_CHARS,  # too long
    ],
)
def test_paths_that_could_be_read_as_another_path_are_refused(raw):
    assert normalize_path(raw) is None


def test_is_under_works_on_segment_boundaries():
    assert is_under(WEBVIEW, WEBVIEW)
    assert is_under(WEBVIEW + "/postme", WEBVIEW)
    assert not is_under("/api/v1/webviewer", WEBVIEW)
    assert not is_under("/api/v1", WEBVIEW)
    assert is_under("/anything", "/")


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/webview",
        "/api/v1/webview/",
        "/api/v1/webview/postme",
        "/api/v1/webview/static/style.css",
        "/api/v1/webview/postme?x=1",
        "/api/v1/web%76iew/postme",
        "/api/v1/webview/a%2Eb",  # an encoded dot inside a name is just a dot
    ],
)
def test_a_public_prefix_opens_itself_and_what_is_below_it(path):
    assert route(WEBVIEW).is_public(path)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/webviewer",  # not on a segment boundary
        "/api/v1/webview2/x",
        "/api/v1/webvie",
        "/api/v1",
        "/api/v1/",
        "/",
        "/API/V1/WEBVIEW",  # case-sensitive
        "/Api/v1/webview/x",
        "/api/v1/perform?path=/api/v1/webview",  # the query is not the path
        "/api/v1/webview/../perform",  # dot segments: never public
        "/api/v1/webview/../../../docs",
        "/api/v1/webview/%2e%2e/perform",
        "/api/v1/webview/%2E%2E/perform",
        "/api/v1/webview/%252e%252e/perform",  # double encoding
        "/api/v1/webview%2f..%2fperform",
        "/api/v1/webview%2F..%2Fperform",
        "/api/v1/webview/..%2fperform",
        "/api/v1/webview\\..\\perform",
        "/api/v1/webview/%5c..%5cperform",
        "/api/v1/webview/..;/perform",
        "/api/v1/webview//../perform",
        "/api/v1/webview/./../perform",
        "/api/v1/webview#/../perform",
        "/api/v1/webview/%c0%ae%c0%ae/perform",
    ],
)
def test_nothing_widens_a_public_prefix(path):
    assert not route(WEBVIEW).is_public(path)


def test_a_declared_trailing_slash_is_the_same_endpoint():
    assert route(WEBVIEW + "/").public_endpoints == frozenset({WEBVIEW})
    assert route(WEBVIEW + "/").is_public(WEBVIEW)
    assert route(WEBVIEW + "/").is_public(WEBVIEW + "/x")


def test_a_declared_endpoint_the_router_cannot_normalise_opens_nothing():
    r = route("/api/../x", "relative", "/a%2fb")
    assert r.public_endpoints == frozenset()
    assert not r.is_public("/x") and not r.is_public("/a/b")


def test_probes_are_public_exactly_and_only_in_normal_form():
    r = route()
    for probe in ("/live", "/ready", "/health", "/health/", "/health?full=1"):
        assert r.is_public(probe), probe
    for path in ("/healthz", "/health/x", "/health/../api/v1/perform", "/Health", "/%68ealth/."):
        assert not r.is_public(path), path


def test_a_public_root_opens_every_plain_path():
    r = route("/")
    assert r.is_public("/api/v1/perform") and r.is_public("/")
    assert not r.is_public("/api/../x")


@pytest.mark.parametrize(
    ("endpoint", "problem"),
    [
        ("api/v1/perform", "is not a path starting with '/'"),
        ("/a/../b", "has a '.' or '..' segment"),
        ("/a/./b", "has a '.' or '..' segment"),
        ("/a/..;x", "has a '.' or '..' segment"),
        ("/a//b", "has an empty segment ('//')"),
        ("/a%2fb", "has a '%': write the path as the job sees it, decoded, without a query"),
        ("/a\\b", "has a backslash: write the path as the job sees it, decoded, without a query"),
        ("/a?b=1", "has a '?': write the path as the job sees it, decoded, without a query"),
        ("/a#b", "has a '#': write the path as the job sees it, decoded, without a query"),
        ("/a\nb", "has a control character"),
        ("/a\0", "has a control character"),
        ("/" + "a" * MAX_ENDPOINT_CHARS, f"is longer than {MAX_ENDPOINT_CHARS} characters"),
    ],
)
def test_the_manifest_refuses_endpoints_that_are_not_plain_paths(endpoint, problem):
    assert endpoint_problem(endpoint) == problem


@pytest.mark.parametrize("endpoint", ["/", "/api/v1/perform", "/api/v1/webview/", "/a b/café"])
def test_every_endpoint_the_manifest_takes_is_one_the_router_matches(endpoint):
    assert endpoint_problem(endpoint) is None
    normalized = normalize_path(endpoint)
    assert normalized is not None and route(endpoint).is_public(endpoint)


def test_the_router_is_given_only_what_is_declared_and_approved():
    declared = ["/api/v1/webview/", "/api/v1/webview", "/api/v1/perform"]
    assert declared_paths(declared) == ["/api/v1/webview", "/api/v1/perform"]
    approved = frozenset({"/api/v1/webview", "/api/v1/secret"})  # secret: not declared
    assert effective_paths(declared, approved) == frozenset({"/api/v1/webview"})
    assert effective_paths(declared, frozenset()) == frozenset()
