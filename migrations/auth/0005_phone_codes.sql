-- The last login code sent to each phone number. Only a salted hash of the
-- code is kept ('' once used); at most `tries_left` wrong codes are compared.
CREATE TABLE phone_codes (
    phone         TEXT PRIMARY KEY,
    code_hash     TEXT NOT NULL,
    salt          TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    tries_left    BIGINT NOT NULL,
    sent_at_ms    BIGINT NOT NULL,
    -- codes sent to the number since day_start_ms (a rolling day)
    day_start_ms  BIGINT NOT NULL,
    sent_today    BIGINT NOT NULL
);
