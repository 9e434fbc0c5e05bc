-- What the RiskModel saw and decided, per decision: the trainer (trainer/nox_trainer) reads
-- the feature vectors of each RiskModel back from here, over its lookback window.
ALTER TABLE audit_decisions
  ADD COLUMN risk_model text,
  ADD COLUMN risk_action text CHECK (risk_action IN ('allow', 'challenge', 'deny', 'block')),
  -- Feature name -> value, as the model's input row held them (sidecar/risk/features.ts).
  ADD COLUMN risk_features jsonb CHECK (risk_features IS NULL OR jsonb_typeof(risk_features) = 'object');
-- The trainer's read: one RiskModel's rows over a time window.
CREATE INDEX audit_decisions_risk_idx ON audit_decisions (risk_model, occurred_at) WHERE risk_model IS NOT NULL;
