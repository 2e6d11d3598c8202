-- Keybroker metadata, schema version 1.
--
-- Written to carry over to PostgreSQL as is, apart from types (BLOB -> BYTEA,
-- INTEGER -> BIGINT). Enumerations are stable lower-case text ('enabled', 'ec-p256',
-- ...) decoded by the broker, which rejects an unknown value. They have no CHECK
-- constraint on purpose: in SQLite, changing a CHECK means rebuilding the table, and
-- rebuilding a table that others reference needs foreign keys switched off, which
-- cannot happen inside a migration's transaction.
--
-- Timestamps are Unix seconds. Key names are never reused: a destroyed key keeps its
-- row; only a key whose version 1 was abandoned before completion is deleted.

-- Registered backends: an HSM token (module_path, token_label and exactly one PIN
-- source) or a TPM (tcti). The PIN itself is never stored.
CREATE TABLE backends (
    name          TEXT NOT NULL PRIMARY KEY,
    kind          TEXT NOT NULL,
    module_path   TEXT,
    token_label   TEXT,
    user_pin_file TEXT,
    user_pin_env  TEXT,
    tcti          TEXT
);

-- primary_version is 0 while version 1 is being created; destroy_after is set only
-- while the key is pending destruction.
CREATE TABLE keys (
    name            TEXT NOT NULL PRIMARY KEY,
    algorithm       TEXT NOT NULL,
    purpose         TEXT NOT NULL,
    backend         TEXT NOT NULL REFERENCES backends (name),
    state           TEXT NOT NULL,
    primary_version INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    destroy_after   INTEGER
);
CREATE INDEX keys_backend ON keys (backend);
CREATE INDEX keys_state ON keys (state, destroy_after);

-- handle_kind is 'hsm' (handle = the CKA_ID) or 'tpm' (handle = the wrapped blob).
CREATE TABLE key_versions (
    key_name    TEXT NOT NULL REFERENCES keys (name) ON DELETE CASCADE,
    version     INTEGER NOT NULL CHECK (version >= 1),
    state       TEXT NOT NULL,
    handle_kind TEXT NOT NULL,
    handle      BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (key_name, version)
);
CREATE INDEX key_versions_state ON key_versions (state);

CREATE TABLE key_tags (
    key_name TEXT NOT NULL REFERENCES keys (name) ON DELETE CASCADE,
    tag      TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (key_name, tag)
);

-- The authorization policy set through the API: at most one row.
CREATE TABLE policy (
    id   INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    text TEXT NOT NULL
);
