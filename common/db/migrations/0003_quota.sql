-- Quota usage for reports and the admin API. The counters that enforce quotas live in Redis;
-- these are hourly sums written off the hot path by each sidecar's UsageRollup.

CREATE TABLE quota_usage_hourly (
  -- Hash of the quota subject (user, client, key, IP): usage is reportable without storing
  -- API keys or addresses in clear.
  subject_hash text NOT NULL,
  policy       text NOT NULL,
  tier         text NOT NULL,
  hour         timestamptz NOT NULL CHECK (date_trunc('hour', hour AT TIME ZONE 'UTC') = hour AT TIME ZONE 'UTC'),
  requests     bigint NOT NULL DEFAULT 0 CHECK (requests >= 0),
  denied       bigint NOT NULL DEFAULT 0 CHECK (denied >= 0 AND denied <= requests),
  -- Cost charged against the quota; a denied request charges nothing.
  cost         bigint NOT NULL DEFAULT 0 CHECK (cost >= 0),
  PRIMARY KEY (subject_hash, policy, tier, hour)
);
-- "Who used policy P this week" and retention by time.
CREATE INDEX quota_usage_hourly_policy_idx ON quota_usage_hourly (policy, hour DESC);
CREATE INDEX quota_usage_hourly_hour_idx ON quota_usage_hourly (hour);

-- Batches a UsageRollup has committed. A batch whose commit was never acknowledged (the
-- connection died) is retried with the same id, and this table makes the retry a no-op if
-- the first attempt did commit: no double counting.
CREATE TABLE quota_rollup_batches (
  id         uuid PRIMARY KEY,
  applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX quota_rollup_batches_applied_idx ON quota_rollup_batches (applied_at);

CREATE TABLE quota_overrides (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  subject_hash text NOT NULL,
  -- The subject in clear when the admin typed it, for display; may be null.
  subject      text,
  policy       text NOT NULL,
  -- Either a tier of the policy, or explicit limits (the QuotaPolicy limit shape), or both.
  tier         text,
  limits       jsonb CHECK (limits IS NULL OR jsonb_typeof(limits) = 'array'),
  reason       text,
  expires_at   timestamptz,
  created_by   text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  CHECK (tier IS NOT NULL OR limits IS NOT NULL),
  CHECK (expires_at IS NULL OR expires_at > created_at),
  CONSTRAINT quota_overrides_subject_policy_key UNIQUE (subject_hash, policy)
);
CREATE INDEX quota_overrides_expires_idx ON quota_overrides (expires_at) WHERE expires_at IS NOT NULL;
CREATE TRIGGER quota_overrides_touch BEFORE UPDATE ON quota_overrides
  FOR EACH ROW EXECUTE FUNCTION nox_touch_updated_at();
