-- The store key (broker/src/store_key.rs, docs/sealing.md "The broker's own data at rest"):
-- 32 random bytes, kept here only wrapped by an HSM key-encryption key or sealed by a TPM
-- to a PCR policy. At most one row. Rows of the tables below then carry a MAC (HMAC-SHA-256
-- under a key derived from it) over the whole record, with the table and primary key:
-- a row edited, swapped, added or stripped of its MAC outside the broker is refused.
CREATE TABLE store_key (
    id          INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    -- The configured backend that holds the key-encryption key.
    backend     TEXT NOT NULL,
    -- The key-encryption key's handle: 'hsm' and its CKA_ID, or 'tpm' and its PCR policy.
    kek_kind    TEXT NOT NULL,
    kek         BLOB NOT NULL,
    -- How the store key is wrapped (the sealed format's kek kind byte), and the wrapping.
    wrapping    INTEGER NOT NULL,
    wrapped     BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);

-- NULL in a store without a store key. A key's MAC covers its tags and versions too.
ALTER TABLE keys ADD COLUMN mac BLOB;
ALTER TABLE backends ADD COLUMN mac BLOB;
ALTER TABLE policy ADD COLUMN mac BLOB;
ALTER TABLE ca_versions ADD COLUMN mac BLOB;
ALTER TABLE secret_versions ADD COLUMN mac BLOB;
ALTER TABLE leases ADD COLUMN mac BLOB;
