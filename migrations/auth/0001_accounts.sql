-- Accounts, devices and token signing keys of the auth service.
-- Portable between SQLite and PostgreSQL: app-generated text ids, BIGINT
-- times in Unix milliseconds, BIGINT 0/1 for flags, and binary values as
-- base64 TEXT (no column type means "bytes" in both).

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL,
    -- lowercased username, unique: "Alice" and "alice" are one account
    username_norm TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    nickname      TEXT NOT NULL DEFAULT '',
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE devices (
    id               TEXT PRIMARY KEY,
    user_id          TEXT NOT NULL REFERENCES users (id),
    name             TEXT NOT NULL,
    created_at_ms    BIGINT NOT NULL,
    last_login_at_ms BIGINT NOT NULL
);

CREATE INDEX devices_by_user ON devices (user_id);

CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY,
    -- base64 of the PKCS#8 DER of the Ed25519 private key
    private_der   TEXT NOT NULL,
    -- base64 of the raw 32-byte Ed25519 public key
    public_raw    TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
