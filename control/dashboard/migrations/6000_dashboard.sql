-- The dashboard's sessions and its failed-login counters. A session is
-- found by the SHA-256 of its cookie (the database never holds a cookie
-- that works), carries the user's tokens and its CSRF token, and ends when
-- its token does. Any controller serves any session.
CREATE TABLE IF NOT EXISTS dash_sessions (
    key        TEXT NOT NULL PRIMARY KEY,
    user_id    TEXT NOT NULL,
    user_name  TEXT NOT NULL,
    domain     TEXT NOT NULL,
    unscoped   TEXT NOT NULL,
    token      TEXT NOT NULL,
    project_id TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    -- JSON: the projects the user may switch to, the roles and the
    -- catalog's service types of the scoped token.
    detail     TEXT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS dash_sessions_expiry ON dash_sessions (expires_ms);

CREATE TABLE IF NOT EXISTS dash_login_failures (
    who      TEXT NOT NULL PRIMARY KEY,
    failures BIGINT NOT NULL,
    last_ms  BIGINT NOT NULL
);
