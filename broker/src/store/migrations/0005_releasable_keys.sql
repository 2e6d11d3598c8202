-- The key class `releasable` (docs/releasable-keys.md): chosen at creation, never changed.
-- The token holds the same fact (CKA_EXTRACTABLE with CKA_WRAP_WITH_TRUSTED), and
-- ReleaseKey checks both.
ALTER TABLE keys ADD COLUMN releasable INTEGER NOT NULL DEFAULT 0 CHECK (releasable IN (0, 1));
