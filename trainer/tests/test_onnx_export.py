"""The exported graph computes what scikit-learn computes, and what skl2onnx's own conversion
of the same forest computes, on rows inside and far outside the training distribution."""

import numpy as np
import onnxruntime as ort
import pytest
from skl2onnx import to_onnx as skl2onnx_convert
from skl2onnx.common.data_types import FloatTensorType

from nox_trainer.onnx_export import (
    anomaly_score,
    apply_calibration,
    calibrate,
    to_onnx,
)
from nox_trainer.train import fit

FEATURES = [f"f{i}" for i in range(6)]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    train = rng.normal(size=(5000, len(FEATURES))).astype(np.float32)
    # Test rows: some like the training rows, some far away, some exactly on thresholds.
    probe = np.vstack(
        [
            rng.normal(size=(1000, len(FEATURES))),
            rng.normal(size=(500, len(FEATURES))) * rng.uniform(2, 8, size=(500, 1)),
            train[:200],
        ]
    ).astype(np.float32)
    forest = fit(train, contamination=0.01, seed=3)
    return train, probe, forest


def run(model, x, outputs):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(outputs, {"features": x})


def test_scores_are_decision_function_and_risk_is_the_calibrated_anomaly(data):
    train, probe, forest = data
    cal = calibrate(anomaly_score(forest, train), 0.01)
    risk, scores = run(to_onnx(forest, FEATURES, cal), probe, ["risk", "scores"])
    np.testing.assert_allclose(scores[:, 0], forest.decision_function(probe), atol=2e-6)
    expected = apply_calibration(anomaly_score(forest, probe), cal)
    np.testing.assert_allclose(risk[:, 0], expected, atol=2e-5)
    # scikit-learn's outliers are exactly the rows at risk >= 0.5 (up to float32 rounding at
    # the boundary itself).
    agree = (risk[:, 0] >= 0.5) == (forest.predict(probe) == -1)
    assert agree.mean() > 0.998


def test_agrees_with_skl2onnx_conversion_of_the_same_forest(data):
    train, probe, forest = data
    reference = skl2onnx_convert(
        forest,
        initial_types=[("features", FloatTensorType([None, len(FEATURES)]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    session = ort.InferenceSession(reference.SerializeToString(), providers=["CPUExecutionProvider"])
    ref_scores = session.run(["scores"], {"features": probe})[0]
    cal = calibrate(anomaly_score(forest, train), 0.01)
    (scores,) = run(to_onnx(forest, FEATURES, cal), probe, ["scores"])
    np.testing.assert_allclose(scores, ref_scores, atol=2e-6)


def test_calibration_scale(data):
    train, _, forest = data
    s = anomaly_score(forest, train)
    cal = calibrate(s, 0.01)
    risk = apply_calibration(s, cal)
    # Half the training rows below 0.1, the share `contamination` at 0.5 or more, none above 0.8.
    assert abs(np.mean(risk < 0.1) - 0.5) < 0.01
    assert abs(np.mean(risk >= 0.5) - 0.01) < 0.002
    assert risk.max() == pytest.approx(0.8)
    assert apply_calibration(np.array([1.0]), cal)[0] == pytest.approx(1.0)
    assert list(cal.scores) == sorted(set(cal.scores))


def test_calibration_of_a_flat_distribution_has_no_zero_width_segment():
    cal = calibrate(np.array([0.4] * 900 + [0.45] * 100), 0.05)
    assert all(b > a for a, b in zip(cal.scores, cal.scores[1:]))
    assert apply_calibration(np.array([0.3, 0.4, 0.45, 1.0]), cal)[-1] == pytest.approx(1.0)


def test_the_model_names_its_features_and_takes_any_batch(data):
    train, probe, forest = data
    model = to_onnx(forest, FEATURES, calibrate(anomaly_score(forest, train), 0.01), {"nox.seed": "3"})
    props = {p.key: p.value for p in model.metadata_props}
    assert props["nox.features"] == ",".join(FEATURES)
    assert props["nox.seed"] == "3"
    for n in (1, 7, 64):
        (risk,) = run(model, probe[:n], ["risk"])
        assert risk.shape == (n, 1)
    assert len(model.graph.node) == 9
