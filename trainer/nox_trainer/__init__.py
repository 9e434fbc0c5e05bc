"""Nox's risk-model trainer: an Isolation Forest fitted with scikit-learn on the feature
vectors the sidecars record in the audit log, exported as an ONNX model whose `risk` output is
already the 0..1 score the RiskModel thresholds compare (the sidecar runs it with
onnxruntime-node and does no model-specific arithmetic)."""
