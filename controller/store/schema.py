"""The database schema, as numbered migrations applied in order on start."""

MIGRATIONS: list[str] = [
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        is_admin INTEGER NOT NULL DEFAULT 0,
        token_generation INTEGER NOT NULL DEFAULT 1,
        token_hash TEXT UNIQUE,
        created_at TEXT NOT NULL
    );
    CREATE TABLE ssh_keys (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        fingerprint TEXT NOT NULL UNIQUE,
        public_key TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE releases (
        id INTEGER PRIMARY KEY,
        job TEXT NOT NULL,
        number INTEGER NOT NULL,
        version TEXT,
        commit_sha TEXT NOT NULL,
        jobtype TEXT,
        manifest TEXT,
        artifact TEXT,
        status TEXT NOT NULL,
        error TEXT,
        build_log TEXT NOT NULL DEFAULT '',
        deployed_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        finished_at TEXT,
        UNIQUE (job, number)
    );
    CREATE INDEX releases_by_job_version ON releases (job, version);
    """,
    # config: the environment the release runs with on top of its manifest (rollbacks keep it);
    # rollback_of: the release whose artifact and config a rollback re-deployed
    """
    ALTER TABLE releases ADD COLUMN config TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE releases ADD COLUMN rollback_of INTEGER;
    """,
    # access control, audit and per-job config
    """
    ALTER TABLE releases ADD COLUMN cause TEXT NOT NULL DEFAULT 'push';
    CREATE TABLE families (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE escs (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE tokens (
        id INTEGER PRIMARY KEY,
        subject TEXT NOT NULL,
        token_hash TEXT UNIQUE,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    );
    CREATE TABLE permissions (
        id INTEGER PRIMARY KEY,
        subject TEXT NOT NULL,
        scope TEXT NOT NULL,
        family TEXT,
        version TEXT,
        endpoint TEXT,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        job TEXT,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX audit_by_job ON audit (job);
    CREATE TABLE job_config (
        job TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (job, key)
    );
    """,
    # jobs deployed before families existed belong to whoever deployed their first release;
    # removed users are remembered so that their ids (which their tokens derive from) are never
    # given to a new user
    """
    CREATE TABLE removed_users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        removed_at TEXT NOT NULL
    );
    INSERT INTO families (name, owner, created_at)
    SELECT r.job, r.deployed_by, r.created_at FROM releases r
    WHERE r.id = (SELECT MIN(id) FROM releases WHERE job = r.job)
      AND NOT EXISTS (SELECT 1 FROM families f WHERE f.name = r.job);
    """,
    # build config (`config:set --build`): the environment of the job's next builds, kept like
    # the runtime config; secret_env: the values of the release's secret_runtime_env_file, which
    # its instances run with (never in the artifact; restarts and rollbacks keep them)
    """
    CREATE TABLE job_build_config (
        job TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (job, key)
    );
    ALTER TABLE releases ADD COLUMN secret_env TEXT NOT NULL DEFAULT '{}';
    """,
    # family claims: a new job name is held provisionally (claimed_until) by the first deploy
    # that uses it, and for good once one succeeds; slot: the family's number, never reused (the
    # local runtime runs each family as its own uid, derived from it)
    """
    ALTER TABLE families ADD COLUMN claimed_until TEXT;
    ALTER TABLE families ADD COLUMN slot INTEGER;
    CREATE TABLE family_slots (
        slot INTEGER PRIMARY KEY AUTOINCREMENT,
        family TEXT NOT NULL
    );
    INSERT INTO family_slots (family) SELECT name FROM families ORDER BY created_at, name;
    UPDATE families SET slot = (
        SELECT MAX(s.slot) FROM family_slots s WHERE s.family = families.name
    );
    """,
    # public endpoints take effect once an admin approves them (endpoints:approve), per job
    # version and path (the path normalised as the router matches it); a revocation deletes
    """
    CREATE TABLE public_endpoint_approvals (
        job TEXT NOT NULL,
        version TEXT NOT NULL,
        path TEXT NOT NULL,
        approved_by TEXT NOT NULL,
        approved_at TEXT NOT NULL,
        PRIMARY KEY (job, version, path)
    );
    """,
]
