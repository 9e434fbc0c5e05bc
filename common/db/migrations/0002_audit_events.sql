-- One row per decision (DESIGN.md, "audit"), partitioned by month (UTC) so that retention is
-- DROP TABLE of a partition rather than a DELETE over the whole history.

CREATE TABLE audit_events (
  -- Made by the sidecar when the event is created, so replaying a spooled batch can use
  -- ON CONFLICT DO NOTHING; the partition key has to be part of any unique constraint.
  id               uuid NOT NULL,
  occurred_at      timestamptz NOT NULL,
  decision         text NOT NULL CHECK (decision IN ('allow', 'deny')),
  code             text NOT NULL,
  reason           text,
  subject          text,
  provider         text,
  tier             text,
  method           text,
  host             text,
  path             text,
  source_ip        inet,
  risk_score       real,
  snapshot_version bigint,
  decision_id      uuid,
  request_id       text,
  sidecar          text NOT NULL,
  PRIMARY KEY (id, occurred_at)
) PARTITION BY RANGE (occurred_at);

-- Keyset pagination of the admin API's search orders by (occurred_at, id) descending.
CREATE INDEX audit_events_occurred_idx ON audit_events (occurred_at DESC, id DESC);
CREATE INDEX audit_events_subject_idx ON audit_events (subject, occurred_at DESC, id DESC);
CREATE INDEX audit_events_code_idx ON audit_events (code, occurred_at DESC, id DESC);
-- Deny responses carry the decision id; support looks a complaint up by it.
CREATE INDEX audit_events_decision_idx ON audit_events (decision_id);

-- Catches events whose month has no partition yet (a skewed clock, a missed maintenance run):
-- an insert must not fail for that. nox_ensure_audit_partitions moves them out later.
CREATE TABLE audit_events_default PARTITION OF audit_events DEFAULT;

-- Creates the monthly partitions audit_events_pYYYYMM from the month of from_ts through
-- months_ahead months after it, and returns the names of those it created. Idempotent.
CREATE FUNCTION nox_ensure_audit_partitions(months_ahead int DEFAULT 2, from_ts timestamptz DEFAULT now())
RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
  first_month timestamp := date_trunc('month', from_ts AT TIME ZONE 'UTC');
  month timestamp;
  lo timestamptz;
  hi timestamptz;
  part text;
BEGIN
  IF months_ahead NOT BETWEEN 0 AND 120 THEN
    RAISE EXCEPTION 'months_ahead must be between 0 and 120, not %', months_ahead;
  END IF;
  -- Several operator replicas may call this at once; held until the caller's commit.
  PERFORM pg_advisory_xact_lock(5132120, 2);
  FOR i IN 0..months_ahead LOOP
    month := first_month + make_interval(months => i);
    lo := month AT TIME ZONE 'UTC';
    hi := (month + interval '1 month') AT TIME ZONE 'UTC';
    part := 'audit_events_p' || to_char(month, 'YYYYMM');
    CONTINUE WHEN to_regclass(quote_ident(part)) IS NOT NULL;
    IF EXISTS (SELECT 1 FROM audit_events_default WHERE occurred_at >= lo AND occurred_at < hi) THEN
      -- Creating a partition whose range has rows in the default partition fails: move them first.
      EXECUTE format('CREATE TABLE %I (LIKE audit_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
      EXECUTE format(
        'WITH moved AS (DELETE FROM audit_events_default WHERE occurred_at >= $1 AND occurred_at < $2 RETURNING *)
         INSERT INTO %I SELECT * FROM moved', part) USING lo, hi;
      EXECUTE format('ALTER TABLE audit_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
    ELSE
      EXECUTE format('CREATE TABLE %I PARTITION OF audit_events FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
    END IF;
    RETURN NEXT part;
  END LOOP;
END $$;

SELECT nox_ensure_audit_partitions(2);
