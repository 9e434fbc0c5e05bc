"""An Isolation Forest as a small ONNX graph whose `risk` output is the calibrated 0..1 score.

skl2onnx's converter (the reference: tests/test_onnx_export.py checks this graph against it
and against scikit-learn) emits one TreeEnsembleRegressor per tree plus a dozen elementwise
nodes per tree to turn leaf depths into the score: about 2 700 nodes for 100 trees, and about
1 ms per inference in onnxruntime-node whatever the batch size. The sidecar scores every
request, so this module writes the same function as one TreeEnsembleRegressor whose leaves
hold their whole path length (depth plus the expected depth of the samples left in the leaf,
as scikit-learn computes it), followed by a few nodes: 9 nodes, some 20 us per inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.ensemble import IsolationForest


def average_path_length(n: np.ndarray | float) -> np.ndarray:
    """c(n): the mean depth of an unsuccessful search in a binary search tree of n points,
    the normalization of Liu, Ting and Zhou (2008), as scikit-learn computes it."""
    n = np.asarray(n, dtype=np.float64).reshape(-1)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


def _float32_at_most(t: float) -> float:
    """The largest float32 w such that, for every float32 x, x <= t exactly when x <= w: the
    model compares float32 inputs, scikit-learn compared them as float64."""
    w = np.float32(t)
    return float(w if w <= t else np.nextafter(w, np.float32(-np.inf)))


@dataclass(frozen=True)
class Calibration:
    """Knots of a piecewise-linear map from the anomaly score s (0..1, 1 most anomalous) to
    the risk: `scores[i]` maps to `risks[i]`, linear in between, flat outside."""

    scores: tuple[float, ...]
    risks: tuple[float, ...]


def calibrate(train_anomaly: np.ndarray, contamination: float) -> Calibration:
    """The risk scale, from the anomaly scores of the training rows:

    - 0 .. 0.5 over the training rows: the median row 0.1, the 90th percentile 0.3, and the
      share `contamination` most anomalous rows (scikit-learn's outliers) from 0.5 up;
    - 0.5 .. 0.8 from that boundary to the most anomalous training row;
    - 0.8 .. 1 beyond anything seen in training, up to the score's maximum, 1.

    So a threshold reads the same whatever model is in force: at 0.5 a request is as
    anomalous as the outliers the training assumed, above 0.8 it is unlike all of them. (A
    forest saturates outside its training range: a row far beyond it is isolated about as
    fast as the most extreme training rows, so scores much above 0.8 are rare.)
    """
    s = np.sort(np.asarray(train_anomaly, dtype=np.float64))
    probs = [0.0, 0.5, 0.9, 1.0 - contamination]
    risks = [0.0, 0.1, 0.3, 0.5]
    knots_p = [(p, r) for p, r in zip(probs, risks) if p <= 1.0 - contamination]
    points = [(float(np.quantile(s, p)), r) for p, r in knots_p]
    points += [(float(s[-1]), 0.8), (1.0, 1.0)]
    # Strictly increasing scores: where the training distribution is flat (many equal
    # scores), knots coincide; the one kept at that score takes the higher risk.
    out: list[tuple[float, float]] = []
    for score, risk in points:
        if out and score <= out[-1][0]:
            out[-1] = (out[-1][0], max(out[-1][1], risk))
        else:
            out.append((score, risk))
    out_s, out_r = zip(*out)
    return Calibration(tuple(out_s), tuple(out_r))


def apply_calibration(anomaly: np.ndarray, cal: Calibration) -> np.ndarray:
    """The risk of anomaly scores, in numpy: what the graph computes."""
    return np.interp(anomaly, cal.scores, cal.risks)


def anomaly_score(forest: IsolationForest, x: np.ndarray) -> np.ndarray:
    """The paper's s(x) in (0, 1]: scikit-learn's -score_samples."""
    return -forest.score_samples(x)


def to_onnx(
    forest: IsolationForest,
    features: list[str],
    calibration: Calibration,
    metadata: dict[str, str] | None = None,
) -> onnx.ModelProto:
    """The model: input `features` float32 [N, len(features)]; outputs `risk` [N, 1] (the
    calibrated score) and `scores` [N, 1] (scikit-learn's decision_function: < 0 outlier)."""
    attrs: dict[str, list] = {
        k: []
        for k in (
            "nodes_treeids",
            "nodes_nodeids",
            "nodes_featureids",
            "nodes_values",
            "nodes_modes",
            "nodes_truenodeids",
            "nodes_falsenodeids",
            "nodes_missing_value_tracks_true",
            "target_treeids",
            "target_nodeids",
            "target_ids",
            "target_weights",
        )
    }
    for t, (tree, used) in enumerate(zip(forest.estimators_, forest.estimators_features_)):
        tr = tree.tree_
        depth = np.zeros(tr.node_count)
        for n in range(tr.node_count):  # a child's id is always greater than its parent's
            if tr.children_left[n] != -1:
                depth[tr.children_left[n]] = depth[tr.children_right[n]] = depth[n] + 1
        leaf_extra = average_path_length(tr.n_node_samples)
        for n in range(tr.node_count):
            leaf = tr.children_left[n] == -1
            attrs["nodes_treeids"].append(t)
            attrs["nodes_nodeids"].append(n)
            attrs["nodes_featureids"].append(0 if leaf else int(used[tr.feature[n]]))
            attrs["nodes_values"].append(0.0 if leaf else _float32_at_most(tr.threshold[n]))
            attrs["nodes_modes"].append("LEAF" if leaf else "BRANCH_LEQ")
            attrs["nodes_truenodeids"].append(0 if leaf else int(tr.children_left[n]))
            attrs["nodes_falsenodeids"].append(0 if leaf else int(tr.children_right[n]))
            attrs["nodes_missing_value_tracks_true"].append(0)
            if leaf:
                attrs["target_treeids"].append(t)
                attrs["target_nodeids"].append(n)
                attrs["target_ids"].append(0)
                attrs["target_weights"].append(float(depth[n] + leaf_extra[n]))

    trees = len(forest.estimators_)
    norm = trees * float(average_path_length(forest.max_samples_)[0])
    ks = np.asarray(calibration.scores, dtype=np.float32)
    rs = np.asarray(calibration.risks, dtype=np.float32)
    k = len(ks) - 1
    f32 = lambda a, name: numpy_helper.from_array(np.asarray(a, dtype=np.float32), name)  # noqa: E731
    nodes = [
        helper.make_node(
            "TreeEnsembleRegressor",
            ["features"],
            ["path_sum"],
            domain="ai.onnx.ml",
            n_targets=1,
            aggregate_function="SUM",
            post_transform="NONE",
            **attrs,
        ),
        # s = 2 ^ -(mean path length / c(max_samples))
        helper.make_node("Div", ["path_sum", "norm"], ["mean_depth"]),
        helper.make_node("Neg", ["mean_depth"], ["neg_depth"]),
        helper.make_node("Pow", ["two", "neg_depth"], ["anomaly"]),
        helper.make_node("Sub", ["neg_offset", "anomaly"], ["scores"]),
        # risk = sum_i (r[i+1] - r[i]) * clip((s - k[i]) / (k[i+1] - k[i]), 0, 1)
        helper.make_node("Sub", ["anomaly", "knot_lo"], ["above"]),
        helper.make_node("Div", ["above", "knot_width"], ["along"]),
        helper.make_node("Clip", ["along", "zero", "one"], ["segment"]),
        helper.make_node("MatMul", ["segment", "risk_steps"], ["risk"]),
    ]
    initializers = [
        f32([norm], "norm"),
        f32([2.0], "two"),
        f32([-forest.offset_], "neg_offset"),
        f32(ks[:-1].reshape(1, k), "knot_lo"),
        f32(np.diff(ks).reshape(1, k), "knot_width"),
        f32(0.0, "zero"),
        f32(1.0, "one"),
        f32(np.diff(rs).reshape(k, 1), "risk_steps"),
    ]
    graph = helper.make_graph(
        nodes,
        "nox_risk_iforest",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", len(features)])],
        [
            helper.make_tensor_value_info("risk", TensorProto.FLOAT, ["N", 1]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 1]),
        ],
        initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)],
        producer_name="nox-trainer",
    )
    model.ir_version = 8
    props = {"nox.features": ",".join(features), **(metadata or {})}
    for key, value in props.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.checker.check_model(model, full_check=True)
    return model
