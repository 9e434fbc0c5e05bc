-- The audit log: four tables partitioned by day (UTC), so that retention per table is a DROP
-- TABLE of whole days, never a DELETE. audit_events (0002, monthly, never written) is replaced
-- by audit_decisions.
--
-- Every row's id is made by the sidecar (or admin API) when the event is created, and the
-- writers insert with ON CONFLICT DO NOTHING: a batch replayed from a spool after a failure
-- whose commit did in fact land adds nothing. The partition key must be part of the key.

DROP FUNCTION nox_ensure_audit_partitions(int, timestamptz);
DROP TABLE audit_events;

-- One row per decision.
CREATE TABLE audit_decisions (
  id             uuid NOT NULL,
  occurred_at    timestamptz NOT NULL,
  sidecar        text NOT NULL,
  request_id     text,
  host           text,
  method         text,
  -- Normalized as the route stage matched it (dot segments resolved, no query).
  path           text,
  source_ip      inet,
  policy         text,
  rule           text,
  provider       text,
  subject        text,
  client_id      text,
  -- SHA-256 of the sorted group list: groups can be many and sensitive; equal sets compare.
  groups_hash    text,
  identity_method text,
  decision       text NOT NULL CHECK (decision IN ('allow', 'deny')),
  -- 'ok' for an allow, else the deny's code (sidecar/errors.ts).
  code           text NOT NULL,
  reason         text,
  -- A DryRun policy that would have denied: its code (the decision itself was not changed).
  would_deny     text,
  quota_tier     text,
  quota_remaining bigint,
  risk_score     real,
  latency_us     integer CHECK (latency_us >= 0),
  snapshot_version bigint,
  PRIMARY KEY (id, occurred_at)
) PARTITION BY RANGE (occurred_at);
-- The admin API's search: newest first, keyset on (occurred_at, id), with these filters.
CREATE INDEX audit_decisions_occurred_idx ON audit_decisions (occurred_at DESC, id DESC);
CREATE INDEX audit_decisions_subject_idx ON audit_decisions (subject, occurred_at DESC, id DESC);
CREATE INDEX audit_decisions_code_idx ON audit_decisions (code, occurred_at DESC, id DESC);
CREATE INDEX audit_decisions_host_idx ON audit_decisions (host, path text_pattern_ops, occurred_at DESC);

-- Logins, refreshes, logouts and revocations of browser sessions.
CREATE TABLE audit_session_events (
  id          uuid NOT NULL,
  occurred_at timestamptz NOT NULL,
  sidecar     text NOT NULL,
  kind        text NOT NULL CHECK (kind IN ('login', 'refresh', 'logout', 'revocation', 'expiry')),
  provider    text,
  subject     text,
  -- A hash of the session id: a stored audit row must not be usable as a cookie.
  session_hash text,
  source_ip   inet,
  user_agent  text,
  detail      jsonb,
  PRIMARY KEY (id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE INDEX audit_session_events_subject_idx ON audit_session_events (subject, occurred_at DESC, id DESC);

-- Bad tokens by reason, revocations, automated responses (blocks).
CREATE TABLE audit_security_events (
  id          uuid NOT NULL,
  occurred_at timestamptz NOT NULL,
  sidecar     text NOT NULL,
  kind        text NOT NULL,
  reason      text,
  provider    text,
  subject     text,
  source_ip   inet,
  detail      jsonb,
  PRIMARY KEY (id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE INDEX audit_security_events_kind_idx ON audit_security_events (kind, occurred_at DESC, id DESC);
CREATE INDEX audit_security_events_subject_idx ON audit_security_events (subject, occurred_at DESC, id DESC);

-- What administrators did, with the object before and after.
CREATE TABLE audit_admin_actions (
  id          uuid NOT NULL,
  occurred_at timestamptz NOT NULL,
  actor       text NOT NULL,
  action      text NOT NULL,
  target      text,
  before      jsonb,
  after       jsonb,
  source_ip   inet,
  PRIMARY KEY (id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE INDEX audit_admin_actions_occurred_idx ON audit_admin_actions (occurred_at DESC, id DESC);

-- Catch-all partitions: an event whose day has no partition yet (a skewed clock, a missed
-- maintenance run) must not fail its insert. nox_audit_maintain moves such rows out later.
CREATE TABLE audit_decisions_default PARTITION OF audit_decisions DEFAULT;
CREATE TABLE audit_session_events_default PARTITION OF audit_session_events DEFAULT;
CREATE TABLE audit_security_events_default PARTITION OF audit_security_events DEFAULT;
CREATE TABLE audit_admin_actions_default PARTITION OF audit_admin_actions DEFAULT;

-- How many days of each table are kept; changed with UPDATE (the admin API, or psql).
CREATE TABLE audit_retention (
  table_name text PRIMARY KEY CHECK (table_name IN
    ('audit_decisions', 'audit_session_events', 'audit_security_events', 'audit_admin_actions')),
  keep_days  int NOT NULL CHECK (keep_days BETWEEN 1 AND 3660)
);
INSERT INTO audit_retention VALUES
  ('audit_decisions', 30), ('audit_session_events', 90),
  ('audit_security_events', 180), ('audit_admin_actions', 730);

-- For each audit table: creates the day partitions <table>_pYYYYMMDD from the day of at_ts
-- through days_ahead days after it (moving rows of those days out of the default partition
-- first), and drops the partitions wholly older than its retention. Returns one line per
-- partition created ('+name') or dropped ('-name'). Idempotent; several callers serialize.
CREATE FUNCTION nox_audit_maintain(days_ahead int DEFAULT 3, at_ts timestamptz DEFAULT now())
RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
  t record;
  first_day timestamp := date_trunc('day', at_ts AT TIME ZONE 'UTC');
  day timestamp;
  lo timestamptz;
  hi timestamptz;
  part text;
  p record;
BEGIN
  IF days_ahead NOT BETWEEN 0 AND 60 THEN
    RAISE EXCEPTION 'days_ahead must be between 0 and 60, not %', days_ahead;
  END IF;
  PERFORM pg_advisory_xact_lock(5132120, 2);
  FOR t IN SELECT table_name, keep_days FROM audit_retention ORDER BY table_name LOOP
    FOR i IN 0..days_ahead LOOP
      day := first_day + make_interval(days => i);
      lo := day AT TIME ZONE 'UTC';
      hi := (day + interval '1 day') AT TIME ZONE 'UTC';
      part := t.table_name || '_p' || to_char(day, 'YYYYMMDD');
      CONTINUE WHEN to_regclass(quote_ident(part)) IS NOT NULL;
      EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part, t.table_name);
      EXECUTE format(
        'WITH moved AS (DELETE FROM %I WHERE occurred_at >= $1 AND occurred_at < $2 RETURNING *)
         INSERT INTO %I SELECT * FROM moved', t.table_name || '_default', part) USING lo, hi;
      EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', t.table_name, part, lo, hi);
      RETURN NEXT '+' || part;
    END LOOP;
    -- A day partition whose whole range is older than the retention goes at once.
    FOR p IN
      SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
       WHERE i.inhparent = t.table_name::regclass
         AND c.relname ~ ('^' || t.table_name || '_p[0-9]{8}$')
         AND (to_date(substring(c.relname from '[0-9]{8}$'), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC'
             <= at_ts - make_interval(days => t.keep_days)
       ORDER BY 1
    LOOP
      EXECUTE format('DROP TABLE %I', p.relname);
      RETURN NEXT '-' || p.relname;
    END LOOP;
  END LOOP;
END $$;

SELECT nox_audit_maintain(3);
