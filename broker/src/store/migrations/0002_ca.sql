-- The workload CA (broker/src/ca): one row per version of its key. The key itself is in
-- an HSM; the store keeps its handle, the CA certificate and, for an intermediate CA, the
-- chain above it up to the root that the operator installed.
CREATE TABLE ca_versions (
    version      INTEGER NOT NULL PRIMARY KEY CHECK (version > 0),
    backend      TEXT NOT NULL,
    key_id       BLOB NOT NULL,
    -- The CA certificate, DER; empty while an intermediate CA waits for its signed
    -- certificate (`keybroker ca install`).
    certificate  BLOB NOT NULL,
    -- The certificates above it, PEM, root last; empty for a self-signed CA.
    chain_pem    TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    -- When it starts signing: until then it is published in the trust bundle only.
    activates_at INTEGER NOT NULL
);
