"""Fit, evaluate and export a risk model.

    python -m nox_trainer.train --database-url URL --risk-model NAMESPACE/NAME \\
        --features subjectRate1m,... --lookback-hours 168 --holdout-hours 24 \\
        --contamination 0.001 --min-events 10000 --out model.onnx [--current running.onnx]

reads the feature vectors the sidecars recorded for that RiskModel in the audit log (from a
replica), or from `--vectors FILE` (NDJSON lines {"at": epoch seconds, "features": {...}}),
fits on the lookback window minus its last `holdout` hours, evaluates on those, and
writes the model (`--out`) and a JSON report (stdout). With `--publish NS/CONFIGMAP/KEY` the
model goes to that ConfigMap (publish.py), and the model in force there is the one to beat.
It exits 3 when there are too few events, 4 when the new model is worse than the one in force
on the same held-out rows (nothing is written or published then), 5 when publishing failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import onnxruntime as ort
from sklearn.ensemble import IsolationForest

from .onnx_export import anomaly_score, apply_calibration, calibrate, to_onnx
from .publish import Kube, PublishError, Target

TOO_FEW_EVENTS = 3
WORSE_THAN_CURRENT = 4
PUBLISH_FAILED = 5


@dataclass(frozen=True)
class Evaluation:
    """How a model rates held-out ordinary traffic: the shares of rows at or above each
    threshold (for ordinary traffic, false alarms), and the mean risk."""

    rows: int
    mean_risk: float
    at_challenge: float
    at_deny: float
    at_block: float


def fit(x: np.ndarray, contamination: float, seed: int, trees: int = 100) -> IsolationForest:
    forest = IsolationForest(
        n_estimators=trees, max_samples=min(256, len(x)), contamination=contamination, random_state=seed
    )
    return forest.fit(x)


def build(x: np.ndarray, features: list[str], contamination: float, seed: int) -> tuple[bytes, dict]:
    """The serialized model and what it was made from."""
    forest = fit(x, contamination, seed)
    cal = calibrate(anomaly_score(forest, x), contamination)
    meta = {
        "nox.trainedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "nox.rows": str(len(x)),
        "nox.contamination": repr(contamination),
        "nox.seed": str(seed),
        "nox.calibration": json.dumps({"scores": cal.scores, "risks": cal.risks}),
    }
    model = to_onnx(forest, features, cal, meta)
    return model.SerializeToString(), meta


def risk_of(model: bytes, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(["risk"], {"features": x.astype(np.float32)})[0][:, 0]


def evaluate(model: bytes, x: np.ndarray, thresholds: dict[str, float]) -> Evaluation:
    risk = risk_of(model, x)
    share = lambda t: float(np.mean(risk >= t)) if len(risk) else 0.0  # noqa: E731
    return Evaluation(
        rows=len(x),
        mean_risk=float(risk.mean()) if len(risk) else 0.0,
        at_challenge=share(thresholds["challenge"]),
        at_deny=share(thresholds["deny"]),
        at_block=share(thresholds["block"]),
    )


def no_worse(new: Evaluation, current: Evaluation, tolerance: float = 0.0005) -> bool:
    """The new model may replace the running one when it raises no more false alarms on the
    held-out rows, at the deny and challenge thresholds, than it (give or take `tolerance`,
    the noise of a share over a few thousand rows)."""
    return (
        new.at_deny <= current.at_deny + tolerance
        and new.at_challenge <= current.at_challenge + tolerance
    )


def read_vectors(
    database_url: str, risk_model: str, features: list[str], lookback_hours: float
) -> tuple[np.ndarray, np.ndarray]:
    """The feature vectors recorded for `risk_model` over the lookback window, oldest first,
    in `features`' order, and their times (s since the epoch). Rows missing a feature are left
    out: the model's input has no missing values."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        cur = conn.execute(
            """SELECT extract(epoch FROM occurred_at)::float8, risk_features
                 FROM audit_decisions
                WHERE risk_model = %s AND risk_features IS NOT NULL
                  AND occurred_at >= now() - make_interval(secs => %s)
                ORDER BY occurred_at""",
            (risk_model, lookback_hours * 3600.0),
        )
        times: list[float] = []
        rows: list[list[float]] = []
        for at, vector in cur:
            try:
                rows.append([float(vector[f]) for f in features])
            except (KeyError, TypeError, ValueError):
                continue
            times.append(at)
    return np.asarray(rows, dtype=np.float32).reshape(-1, len(features)), np.asarray(times)


def read_vectors_file(path: str, features: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """As read_vectors, from an NDJSON file of {"at": epoch seconds, "features": {name: value}}."""
    times: list[float] = []
    rows: list[list[float]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            event = json.loads(line)
            try:
                rows.append([float(event["features"][name]) for name in features])
            except (KeyError, TypeError, ValueError):
                continue
            times.append(float(event["at"]))
    order = np.argsort(times, kind="stable")
    x = np.asarray(rows, dtype=np.float32).reshape(-1, len(features))
    return x[order], np.asarray(times)[order]


def emit(report: dict, path: str | None) -> None:
    """The report on stdout, and in `path` too; there without the model's metadata (a
    termination message holds at most 4 kB)."""
    print(json.dumps(report))
    if path:
        short = {k: v for k, v in report.items() if k != "meta"}
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(short, separators=(",", ":"))[:4000])


def finish(report: dict, path: str | None, result: str, code: int, **extra) -> int:
    """Ends a run: the result into the report, the report out (emit), the exit code back."""
    report.update(result=result, **extra)
    emit(report, path)
    return code


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="nox_trainer.train", description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--database-url",
        default=os.environ.get("NOX_DATABASE_URL") or None,
        help="the audit log's PostgreSQL (default: $NOX_DATABASE_URL, which keeps the password off the command line)",
    )
    source.add_argument("--vectors", help="an NDJSON file instead of the audit log")
    p.add_argument("--risk-model", help="the RiskModel, namespace/name (with --database-url)")
    p.add_argument("--features", required=True, help="comma-separated, in the model's input order")
    p.add_argument("--lookback-hours", type=float, default=168.0)
    p.add_argument("--holdout-hours", type=float, default=24.0)
    p.add_argument("--contamination", type=float, default=0.001)
    p.add_argument("--min-events", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--thresholds", default='{"challenge":0.7,"deny":0.9,"block":0.97}')
    p.add_argument("--current", help="the model in force, to compare with on the held-out rows")
    p.add_argument("--out", help="write the model here")
    p.add_argument(
        "--publish",
        metavar="NAMESPACE/CONFIGMAP/KEY",
        help="publish to this ConfigMap key (the model in force there is --current)",
    )
    p.add_argument("--kube-server", help="API server URL (default: in-cluster)")
    p.add_argument("--kube-token-file", help="bearer token file (default: the ServiceAccount's)")
    p.add_argument("--kube-ca-file", help="CA bundle of the API server (default: the ServiceAccount's)")
    p.add_argument(
        "--report-file",
        help="also write the JSON report here (in a Job: /dev/termination-log, where the operator reads it)",
    )
    a = p.parse_args(argv)
    if a.vectors:
        a.database_url = None
    elif not a.database_url:
        p.error("give --database-url (or NOX_DATABASE_URL) or --vectors")
    if not a.out and not a.publish:
        p.error("give --out, --publish or both")
    try:
        target = Target.parse(a.publish) if a.publish else None
    except ValueError as e:
        p.error(f"--publish: {e}")
    features = [f for f in a.features.split(",") if f]
    thresholds = json.loads(a.thresholds)

    if a.vectors:
        x, times = read_vectors_file(a.vectors, features)
        keep = times >= times.max() - a.lookback_hours * 3600.0 if len(times) else times >= 0
        x, times = x[keep], times[keep]
    elif not a.risk_model:
        p.error("--database-url needs --risk-model")
    else:
        x, times = read_vectors(a.database_url, a.risk_model, features, a.lookback_hours)
    split = times.max() - a.holdout_hours * 3600.0 if len(times) else 0.0
    train, holdout = x[times < split], x[times >= split]
    report: dict = {"events": len(x), "train": len(train), "holdout": len(holdout)}
    if len(train) < a.min_events or len(holdout) == 0:
        return finish(report, a.report_file, "TooFewEvents", TOO_FEW_EVENTS)
    kube = None
    current_model = None
    try:
        if target:
            kube = Kube(a.kube_server, a.kube_token_file, a.kube_ca_file)
            current_model = kube.current_model(target)
    except PublishError as e:
        return finish(report, a.report_file, "PublishFailed", PUBLISH_FAILED, error=str(e))
    if a.current:
        with open(a.current, "rb") as f:
            current_model = f.read()
    model, meta = build(train, features, a.contamination, a.seed)
    new = evaluate(model, holdout, thresholds)
    report["evaluation"] = asdict(new)
    if current_model is not None:
        # A model in force that cannot score these rows (other features, corrupt) is no yardstick.
        try:
            current = evaluate(current_model, holdout, thresholds)
        except Exception as e:  # noqa: BLE001 (onnxruntime raises its own types)
            report["current"] = {"error": str(e).splitlines()[0][:300]}
        else:
            report["current"] = asdict(current)
            if not no_worse(new, current):
                return finish(report, a.report_file, "WorseThanCurrent", WORSE_THAN_CURRENT)
    sha256 = hashlib.sha256(model).hexdigest()
    report.update(sha256=sha256, bytes=len(model), trainedAt=meta["nox.trainedAt"])
    if a.out:
        with open(a.out, "wb") as f:
            f.write(model)
    if kube and target:
        try:
            report["resourceVersion"] = kube.publish(target, model, sha256, report)
        except PublishError as e:
            return finish(report, a.report_file, "PublishFailed", PUBLISH_FAILED, error=str(e))
        report["result"] = "Published"
    else:
        report["result"] = "Trained"
    report["meta"] = meta
    emit(report, a.report_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
