-- Accounts of one person at several providers, linked only where the providers allow it
-- (OAuth2Provider.spec.linkAccountsByEmail) and the email is verified: never silently.
ALTER TABLE users ADD COLUMN linked_user_id uuid REFERENCES users (id) ON DELETE SET NULL;
ALTER TABLE users ADD CONSTRAINT users_not_linked_to_self CHECK (linked_user_id IS NULL OR linked_user_id <> id);
CREATE INDEX users_linked_user_idx ON users (linked_user_id) WHERE linked_user_id IS NOT NULL;
