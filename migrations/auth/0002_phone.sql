-- An optional phone number per account, in international form ('' = none).
-- Private: only an exact match finds an account by it.
ALTER TABLE users ADD COLUMN phone TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX users_by_phone ON users (phone) WHERE phone <> '';
