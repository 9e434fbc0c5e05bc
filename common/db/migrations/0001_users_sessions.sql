-- Identities seen through any OAuth2Provider, their browser sessions and the provider tokens
-- behind those sessions. The live session state is in Redis; these rows are what the admin API
-- lists and revokes, and what survives a Redis loss.

CREATE FUNCTION nox_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END $$;

CREATE TABLE users (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  -- OAuth2Provider namespace/name: a subject is only unique within its issuer.
  provider      text NOT NULL CHECK (provider <> ''),
  subject       text NOT NULL CHECK (subject <> ''),
  email         text,
  email_verified boolean NOT NULL DEFAULT false,
  name          text,
  avatar_url    text,
  groups        text[] NOT NULL DEFAULT '{}',
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  last_login_at timestamptz,
  CONSTRAINT users_provider_subject_key UNIQUE (provider, subject)
);
-- Not unique: two providers may vouch for the same address, and only verified ones mean anything.
CREATE INDEX users_email_idx ON users (lower(email)) WHERE email IS NOT NULL;
CREATE TRIGGER users_touch BEFORE UPDATE ON users
  FOR EACH ROW EXECUTE FUNCTION nox_touch_updated_at();

CREATE TABLE sessions (
  -- SHA-256 of the cookie's session id: a database dump must not yield usable cookies.
  id_hash      bytea PRIMARY KEY CHECK (octet_length(id_hash) = 32),
  user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  provider     text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  last_seen_at timestamptz NOT NULL DEFAULT now(),
  expires_at   timestamptz NOT NULL,
  revoked_at   timestamptz,
  revoked_by   text,
  source_ip    inet,
  user_agent   text,
  CHECK (revoked_by IS NULL OR revoked_at IS NOT NULL)
);
CREATE INDEX sessions_user_active_idx ON sessions (user_id, expires_at DESC) WHERE revoked_at IS NULL;
-- Cleanup of expired rows.
CREATE INDEX sessions_expires_idx ON sessions (expires_at);

-- One row per session: a refresh replaces the blobs in place.
CREATE TABLE oauth_tokens (
  session_id_hash   bytea PRIMARY KEY REFERENCES sessions (id_hash) ON DELETE CASCADE,
  user_id           uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  provider          text NOT NULL,
  -- Which key of the token-encryption Secret sealed the blobs, so keys can rotate.
  key_id            text NOT NULL,
  access_token_enc  bytea NOT NULL,
  refresh_token_enc bytea,
  id_token_enc      bytea,
  scopes            text[] NOT NULL DEFAULT '{}',
  access_expires_at timestamptz,
  expires_at        timestamptz NOT NULL,
  revoked_at        timestamptz,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX oauth_tokens_user_idx ON oauth_tokens (user_id) WHERE revoked_at IS NULL;
CREATE INDEX oauth_tokens_expires_idx ON oauth_tokens (expires_at);
CREATE TRIGGER oauth_tokens_touch BEFORE UPDATE ON oauth_tokens
  FOR EACH ROW EXECUTE FUNCTION nox_touch_updated_at();
