"""The trainer's command line over an NDJSON file of feature vectors: what it writes, and when
it refuses to write anything."""

import hashlib
import json

import numpy as np
import pytest

from nox_trainer.train import TOO_FEW_EVENTS, WORSE_THAN_CURRENT, main, risk_of

FEATURES = ["a", "b", "c"]


def write_vectors(path, x, start=1_700_000_000.0, step=10.0):
    with open(path, "w", encoding="utf-8") as f:
        for i, row in enumerate(x):
            f.write(json.dumps({"at": start + i * step, "features": dict(zip(FEATURES, map(float, row)))}) + "\n")
        f.write('{"at": 1, "features": {"a": 1}}\n')  # a feature missing: left out


def run(tmp_path, vectors, *extra):
    out = tmp_path / "model.onnx"
    args = ["--vectors", str(vectors), "--features", ",".join(FEATURES), "--out", str(out)]
    args += ["--lookback-hours", "1000", "--holdout-hours", "2", "--min-events", "1000", *extra]
    return main(args), out


def test_trains_on_the_window_and_reports_the_held_out_rows(tmp_path, capsys):
    rng = np.random.default_rng(5)
    vectors = tmp_path / "v.ndjson"
    write_vectors(vectors, rng.normal(size=(4000, 3)))
    code, out = run(tmp_path, vectors)
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["result"] == "Trained"
    assert report["holdout"] == 721 and report["train"] == 3279  # split at 2 h before the last
    model = out.read_bytes()
    assert report["sha256"] == hashlib.sha256(model).hexdigest()
    # Ordinary rows like the training ones: none at deny; far-away rows: all at 0.8 or more.
    assert report["evaluation"]["at_deny"] == 0
    far = risk_of(model, np.full((5, 3), 9.0, dtype=np.float32))
    assert (far >= 0.8).all()


def test_too_few_events_writes_nothing(tmp_path, capsys):
    vectors = tmp_path / "v.ndjson"
    write_vectors(vectors, np.zeros((500, 3)))
    code, out = run(tmp_path, vectors)
    assert code == TOO_FEW_EVENTS
    assert json.loads(capsys.readouterr().out)["result"] == "TooFewEvents"
    assert not out.exists()


def test_a_model_worse_than_the_running_one_on_the_held_out_rows_is_not_written(tmp_path, capsys):
    rng = np.random.default_rng(6)
    # The running model: trained on traffic like what the held-out window holds.
    steady = tmp_path / "steady.ndjson"
    write_vectors(steady, rng.normal(size=(4000, 3)))
    assert run(tmp_path, steady)[0] == 0
    current = tmp_path / "current.onnx"
    (tmp_path / "model.onnx").rename(current)
    capsys.readouterr()
    # A window whose training part is narrow and whose held-out part is ordinary traffic:
    # the new model raises alarms on it, the running one does not.
    narrow = np.vstack([rng.normal(size=(3280, 3)) * 0.05, rng.normal(size=(720, 3))])
    drifted = tmp_path / "drifted.ndjson"
    write_vectors(drifted, narrow)
    code, out = run(tmp_path, drifted, "--current", str(current))
    report = json.loads(capsys.readouterr().out)
    assert code == WORSE_THAN_CURRENT, report
    assert report["evaluation"]["at_challenge"] > report["current"]["at_challenge"] + 0.5
    assert not out.exists()


def test_publish_target_and_its_errors(tmp_path, monkeypatch):
    from nox_trainer.publish import Kube, PublishError, Target

    assert Target.parse("ns/models/model.onnx") == Target("ns", "models", "model.onnx")
    for bad in ("ns/models", "ns//model.onnx", "a/b/c/d"):
        with pytest.raises(ValueError):
            Target.parse(bad)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(PublishError, match="not in a pod"):
        Kube(None, None, None)


def test_the_report_file_is_the_report_without_the_model_metadata(tmp_path, capsys):
    rng = np.random.default_rng(3)
    vectors = tmp_path / "v.ndjson"
    write_vectors(vectors, rng.normal(size=(2000, 3)))
    report_file = tmp_path / "termination-log"
    code, _ = run(tmp_path, vectors, "--min-events", "100", "--report-file", str(report_file))
    printed = json.loads(capsys.readouterr().out)
    written = json.loads(report_file.read_text())
    assert code == 0 and "meta" in printed and "meta" not in written
    assert written == {k: v for k, v in printed.items() if k != "meta"}
    assert len(report_file.read_text()) <= 4000


def test_without_a_source_it_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.delenv("NOX_DATABASE_URL", raising=False)
    with pytest.raises(SystemExit) as e:
        main(["--features", ",".join(FEATURES), "--out", "/dev/null"])
    assert e.value.code == 2
    assert "NOX_DATABASE_URL" in capsys.readouterr().err
