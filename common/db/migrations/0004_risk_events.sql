-- Scored requests worth keeping (challenge, deny, block, or sampled allows), with the
-- feature vector the model saw, so a decision can be explained and the model retrained.

CREATE TABLE risk_events (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  occurred_at timestamptz NOT NULL,
  subject     text,
  source_ip   inet,
  score       real NOT NULL CHECK (score <> 'NaN'),
  action      text NOT NULL CHECK (action IN ('allow', 'challenge', 'deny', 'block')),
  model       text,
  features    jsonb NOT NULL CHECK (jsonb_typeof(features) = 'object'),
  decision_id uuid,
  sidecar     text
);
CREATE INDEX risk_events_occurred_idx ON risk_events (occurred_at DESC);
CREATE INDEX risk_events_subject_idx ON risk_events (subject, occurred_at DESC);
