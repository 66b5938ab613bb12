"""The store's migrations and the rules it keeps about identities."""

import sqlite3

import pytest

from controller.accounts import Accounts, NotAuthenticated
from controller.store import Store
from controller.store.schema import MIGRATIONS
from controller.store.sealing import SecretBox, UnsealFailed
from controller.tokens import TokenMinter

SECRETS = SecretBox(b"s" * 32)

FAMILIES_MIGRATION = 3  # migrations before this one know nothing of job families


def test_jobs_deployed_before_families_existed_belong_to_their_first_deployer(tmp_path):
    path = tmp_path / "racetrack.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for number, script in enumerate(MIGRATIONS[: FAMILIES_MIGRATION - 1], start=1):
        db.executescript(f"BEGIN; {script}; INSERT INTO schema_version VALUES ({number}); COMMIT;")
    for job, number, by in (("old", 1, "alice"), ("old", 2, "bob"), ("other", 1, "carol")):
        db.execute(
            "INSERT INTO releases (job, number, commit_sha, status, deployed_by, created_at)"
            " VALUES (?, ?, ?, 'serving', ?, ?)",
            (job, number, "a" * 40, by, f"2026-01-0{number}T00:00:00+00:00"),
        )
    db.commit()
    db.close()

    store = Store(path, secrets=SECRETS)
    try:
        old, other = store.family("old"), store.family("other")
        assert old is not None and (old.owner, old.created_at) == (
            "alice",
            "2026-01-01T00:00:00+00:00",
        )
        assert other is not None and other.owner == "carol"
        assert store.family("never-deployed") is None
    finally:
        store.close()


def test_a_removed_users_id_and_token_are_never_given_to_a_new_user(tmp_path):
    store = Store(tmp_path / "racetrack.db", secrets=SECRETS)
    accounts = Accounts(store, TokenMinter(b"k" * 32))
    try:
        accounts.create_user("admin", is_admin=True)
        gone = accounts.create_user("gone", is_admin=False)  # the highest id
        old_token = accounts.token_for(gone)
        assert accounts.authenticate(old_token).name == "gone"
        store.remove_user(gone, heir="admin")

        again = accounts.create_user("gone", is_admin=False)
        assert again.id > gone.id
        assert accounts.token_for(again) != old_token
        with pytest.raises(NotAuthenticated):
            accounts.authenticate(old_token)
    finally:
        store.close()


BUILD_CONFIG_MIGRATION = 5  # the build config and the releases' secret runtime values


def test_releases_made_before_secret_env_existed_have_none(tmp_path):
    path = tmp_path / "racetrack.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for number, script in enumerate(MIGRATIONS[: BUILD_CONFIG_MIGRATION - 1], start=1):
        db.executescript(f"BEGIN; {script}; INSERT INTO schema_version VALUES ({number}); COMMIT;")
    db.execute(
        "INSERT INTO releases (job, number, commit_sha, status, deployed_by, created_at)"
        " VALUES ('old', 1, ?, 'serving', 'alice', '2026-01-01T00:00:00+00:00')",
        ("a" * 40,),
    )
    db.commit()
    db.close()

    store = Store(path, secrets=SECRETS)
    try:
        (release,) = store.releases(job="old")
        assert release.secret_env == {}
        assert store.job_build_config("old") == {}
    finally:
        store.close()


def test_build_config_is_kept_apart_from_the_runtime_config(tmp_path):
    store = Store(tmp_path / "racetrack.db", secrets=SECRETS)
    try:
        store.replace_job_config("adder", {"MODE": "fast"})
        store.replace_job_build_config("adder", {"INDEX_TOKEN": "t0ken", "FLAVOR": "blue"})
        assert store.job_config("adder") == {"MODE": "fast"}
        assert store.job_build_config("adder") == {"FLAVOR": "blue", "INDEX_TOKEN": "t0ken"}
        store.replace_job_build_config("adder", {"FLAVOR": "blue"})
        assert store.job_build_config("adder") == {"FLAVOR": "blue"}
        assert store.job_build_config("other") == {}
    finally:
        store.close()


def test_a_releases_secret_values_are_kept_and_never_in_its_repr(tmp_path):
    store = Store(tmp_path / "racetrack.db", secrets=SECRETS)
    try:
        release = store.create_release("adder", "a" * 40, "admin")
        release = store.set_secret_env(release, {"TOKEN": "s3cret-value"})
        assert store.release_by_id(release.id).secret_env == {"TOKEN": "s3cret-value"}
        again = store.create_release("adder", "a" * 40, "admin", secret_env=release.secret_env)
        assert again.secret_env == {"TOKEN": "s3cret-value"}
        assert "s3cret-value" not in repr(again)
    finally:
        store.close()


def test_config_and_secret_values_are_sealed_at_rest_and_files_are_the_platforms(tmp_path):
    path = tmp_path / "racetrack.db"
    store = Store(path, secrets=SECRETS)
    try:
        store.replace_job_config("adder", {"API_KEY": "plain-config-value"})
        store.replace_job_build_config("adder", {"INDEX_TOKEN": "plain-build-value"})
        release = store.create_release(
            "adder", "a" * 40, "admin", config={"API_KEY": "plain-config-value"}
        )
        store.set_secret_env(release, {"TOKEN": "plain-secret-value"})
        store.audit("user:admin", "config:set", "adder", "API_KEY")
    finally:
        store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("racetrack"))
    for value in (b"plain-config-value", b"plain-build-value", b"plain-secret-value"):
        assert value not in raw, f"{value!r} is stored in the clear"
    assert b"API_KEY" in raw, "key names stay readable (config:show lists them)"
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(modes, 0o600), modes

    reopened = Store(path, secrets=SECRETS)
    try:
        assert reopened.job_config("adder") == {"API_KEY": "plain-config-value"}
        assert reopened.releases(job="adder")[0].secret_env == {"TOKEN": "plain-secret-value"}
    finally:
        reopened.close()
    with pytest.raises(UnsealFailed, match="does not open with this secrets key"):
        Store(path, secrets=SecretBox(b"k" * 32)).job_config("adder")


def test_a_sealed_value_moved_to_another_job_does_not_open(tmp_path):
    path = tmp_path / "racetrack.db"
    store = Store(path, secrets=SECRETS)
    try:
        store.replace_job_config("victim", {"API_KEY": "the-victims-secret"})
        store.replace_job_config("thief", {"API_KEY": "x"})
        db = sqlite3.connect(path)
        db.execute(
            "UPDATE job_config SET value = (SELECT value FROM job_config WHERE job = 'victim')"
            " WHERE job = 'thief'"
        )
        db.commit()
        db.close()
        with pytest.raises(UnsealFailed):
            store.job_config("thief")
    finally:
        store.close()


def test_values_stored_before_sealing_are_sealed_on_start(tmp_path):
    path = tmp_path / "racetrack.db"
    Store(path, secrets=SECRETS).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO job_config (job, key, value) VALUES ('old', 'MODE', 'plain-old')")
    db.execute(
        "INSERT INTO releases (job, number, commit_sha, status, deployed_by, created_at, config,"
        " secret_env) VALUES ('old', 1, ?, 'serving', 'alice', '2026-01-01T00:00:00+00:00',"
        " '{\"MODE\": \"plain-old\"}', '{}')",
        ("a" * 40,),
    )
    db.commit()
    db.close()
    path.chmod(0o644)  # as an older version left it

    store = Store(path, secrets=SECRETS)
    try:
        assert store.job_config("old") == {"MODE": "plain-old"}
        assert store.releases(job="old")[0].config == {"MODE": "plain-old"}
    finally:
        store.close()
    assert path.stat().st_mode & 0o777 == 0o600
    db = sqlite3.connect(path)
    stored = db.execute("SELECT value FROM job_config").fetchone()[0]
    (config,) = db.execute("SELECT config FROM releases").fetchone()
    db.close()
    assert stored.startswith("rtenc1:") and config.startswith("rtenc1:")
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("racetrack"))
    assert b"plain-old" not in raw, "the old text is not left in free pages or the log"


def test_endpoint_approvals_are_kept_per_job_version_and_path_across_reopening(tmp_path):
    path = tmp_path / "racetrack.db"
    store = Store(path, secrets=SECRETS)
    try:
        first = store.approve_endpoint("adder", "1.0.0", "/api/v1/webview", "admin")
        again = store.approve_endpoint("adder", "1.0.0", "/api/v1/webview", "someone-else")
        assert again == first  # the first approval stands
        store.approve_endpoint("adder", "2.0.0", "/api/v1/perform", "admin")
    finally:
        store.close()
    store = Store(path, secrets=SECRETS)
    try:
        assert store.approved_endpoints() == {
            ("adder", "1.0.0"): frozenset({"/api/v1/webview"}),
            ("adder", "2.0.0"): frozenset({"/api/v1/perform"}),
        }
        assert [a.version for a in store.endpoint_approvals("adder")] == ["1.0.0", "2.0.0"]
        assert store.endpoint_approvals("adder", "2.0.0")[0].approved_by == "admin"
        assert store.revoke_endpoint("adder", "1.0.0", "/api/v1/webview")
        assert not store.revoke_endpoint("adder", "1.0.0", "/api/v1/webview")
        assert store.endpoint_approval("adder", "1.0.0", "/api/v1/webview") is None
    finally:
        store.close()


def test_a_name_claimed_again_gets_none_of_the_earlier_endpoint_approvals(tmp_path):
    store = Store(tmp_path / "racetrack.db", secrets=SECRETS)
    try:
        store.claim_family("taken", "alice", until="2000-01-01T00:00:00+00:00")  # expired
        store.approve_endpoint("taken", "1.0.0", "/api/v1/perform", "admin")
        store.claim_family("taken", "bob", until="2999-01-01T00:00:00+00:00")
        assert store.endpoint_approvals("taken") == []
    finally:
        store.close()
