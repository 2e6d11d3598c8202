-- The secret store (broker/src/secrets, docs/secrets.md). Values are never stored in the
-- clear: each version is encrypted (AES-256-GCM) under its own data key, and the data key
-- is stored only wrapped by a key-encryption key that never leaves the HSM.
CREATE TABLE secrets (
    name        TEXT NOT NULL PRIMARY KEY,
    description TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE secret_versions (
    name        TEXT NOT NULL REFERENCES secrets (name) ON DELETE CASCADE,
    version     INTEGER NOT NULL CHECK (version > 0),
    enabled     INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    -- Which key-encryption key wrapped the data key: "<hsm backend>:<CKA_ID>".
    kek         TEXT NOT NULL,
    wrapped_dek BLOB NOT NULL,
    nonce       BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);
