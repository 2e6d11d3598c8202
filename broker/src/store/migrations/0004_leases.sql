-- Leases of dynamic secrets (broker/src/secrets/leases.rs, docs/leases.md). A lease
-- records who holds what until when; never the secret itself (a random value or a
-- database password is sealed to the caller and forgotten).
CREATE TABLE leases (
    -- "<role>/<32 hex digits>": the role comes first so that a lease id names its policy
    -- resource.
    id             TEXT NOT NULL PRIMARY KEY,
    role           TEXT NOT NULL,
    -- The SPIFFE ID of the caller it was made for: only it may renew or revoke it.
    owner          TEXT NOT NULL,
    -- What the engine made, to undo it: a PostgreSQL role name; empty for random values.
    handle         TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    -- Renewals never go past this.
    max_expires_at INTEGER NOT NULL,
    -- Set when revoked; the row goes once the engine has undone what it made.
    revoked_at     INTEGER
);

CREATE INDEX leases_due ON leases (expires_at);
CREATE INDEX leases_revoked ON leases (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX leases_role ON leases (role, id);
CREATE INDEX leases_holder ON leases (role, owner);
