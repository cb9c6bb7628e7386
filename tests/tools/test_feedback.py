"""Request ids, the prediction log and delayed labels, on a real deployment: router, model server, CLI, audit."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import uvloop

from mlops_supervisor import Supervisor
from mlops_supervisor.policies import AuditLog, InvalidInputError, PatternRedactor, load_policy
from mlops_supervisor.policies.pii import PresidioRedactor
from mlops_supervisor.policies.policy import ApprovalSettings, Policy, ToolRules
from mlops_supervisor.testing import KeyRing, install_policy
from mlops_supervisor.tools._spec import load_spec
from mlops_supervisor.tools.core import load_sklearn_model, using_store
from mlops_supervisor.tools.serving import (
    LocalBackend,
    ingest_feedback,
    read_feedback,
    read_feedback_contract,
    read_predictions,
)
from mlops_supervisor.tools.serving._feedback import MAX_GROUPS, feedback_contract, load_feedback_file
from mlops_supervisor.tools.serving._model_server import _with_probabilities
from mlops_supervisor.tools.serving._predictions import PredictionLog, answer_lines, prediction_lines
from mlops_supervisor.tools.serving._router import Router, start_router
from tests._zygote import run_cli
from tests.conftest import CLI
from tests.test_pipeline import _adult_slice, small_spec

MODEL = "small-model"
CLASSES = ["<=50K", ">50K"]
ALLOWED = "allowed columns: request_id, row (optional, default 0), label (or 'class', not both)"


# --- the model server's probabilities (no servers) -------------------------------------------


def _classifiers() -> list[Any]:
    from sklearn.dummy import DummyClassifier
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    return [
        make_pipeline(StandardScaler(), LogisticRegression()),
        DecisionTreeClassifier(random_state=0),
        RandomForestClassifier(n_estimators=5, random_state=0),
        ExtraTreesClassifier(n_estimators=5, random_state=0),
        GradientBoostingClassifier(n_estimators=5, random_state=0),
        HistGradientBoostingClassifier(max_iter=5),
        GaussianNB(),
        KNeighborsClassifier(),
        DummyClassifier(strategy="prior"),
        DummyClassifier(strategy="stratified", random_state=0),
        make_pipeline(StandardScaler(), SGDClassifier(loss="modified_huber", random_state=0)),
    ]


@pytest.mark.parametrize("multiclass", [False, True], ids=["binary", "multiclass"])
def test_probabilities_are_the_models_own_and_predictions_unchanged(multiclass: bool) -> None:
    """For every allow-listed classifier with predict_proba: predictions equal predict, probabilities predict_proba."""
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    if not multiclass:
        y = (y == 2).astype(int)
    for model in _classifiers():
        model.fit(X, y)
        answer = _with_probabilities(model)
        assert answer is not None, model
        predictions, proba = answer(X)
        expected = model.predict(X)  # the stratified dummy draws anew per call: compared with itself below
        if "stratified" not in repr(model):
            assert np.array_equal(predictions, expected), model
        assert np.allclose(proba, model.predict_proba(X)), model


def test_one_pass_where_predict_is_the_argmax_and_ties_go_to_predict() -> None:
    """A forest answers from predict_proba alone; rows whose probabilities tie get predict's own answer."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.linear_model import LogisticRegression, RidgeClassifier

    X = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([0, 0, 1, 1])
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y)
    calls: list[int] = []
    real_predict = forest.predict

    def counted(features: Any) -> Any:
        calls.append(len(features))
        return real_predict(features)

    forest.predict = counted
    answer = _with_probabilities(forest)
    assert answer is not None
    answer(X)
    assert calls == []  # no second pass
    # a logistic regression whose scores are all exactly 0: probabilities tie at 0.5, predict decides
    tied = LogisticRegression().fit(X, y)
    tied.coef_[:] = 0.0
    tied.intercept_[:] = 0.0
    answer = _with_probabilities(tied)
    assert answer is not None
    predictions, proba = answer(X)
    assert np.array_equal(predictions, tied.predict(X)) and np.allclose(proba, 0.5)
    assert _with_probabilities(RidgeClassifier().fit(X, y)) is None  # no predict_proba: no probabilities
    assert _with_probabilities(RandomForestRegressor(n_estimators=2).fit(X, y)) is None


# --- the prediction log and the checks, on files alone (no servers) -------------------------


def _log(model_dir: Path, requests: list[tuple[str, int, list[Any], list[list[float]] | None]]) -> None:
    log = PredictionLog(model_dir / "predictions")
    for request_id, version, predictions, proba in requests:
        log.append(prediction_lines(request_id, version, 1_000.0, predictions, proba))
    log.close()


def test_segments_roll_over_and_a_line_being_written_is_not_read(tmp_path: Path) -> None:
    """Small segments roll; a last line without its newline is left out; ``since`` keeps the newer predictions."""
    log = PredictionLog(tmp_path / "predictions", limit=300)
    ids = [f"{i:032x}" for i in range(6)]
    for i, request_id in enumerate(ids):
        log.append(prediction_lines(request_id, 1 + i % 2, 100.0 + i, [i % 2, 1], [[0.25, 0.75], [0.5, 0.5]]))
    log.close()
    segments = sorted((tmp_path / "predictions").glob("*.jsonl"))
    assert len(segments) >= 3 and all(s.stat().st_size <= 300 for s in segments)
    with segments[-1].open("ab") as torn:
        torn.write(b'{"id": "' + b"f" * 32 + b'", "row": 0, "ts": 9')
    # a write cut short by a full disk, then a line of a router that went on: only the cut line is lost
    (tmp_path / "predictions" / "20990101T000000-1.jsonl").write_bytes(
        b'{"id": "' + b"e" * 32 + b'", "ro\n' + prediction_lines("d" * 32, 1, 200.0, [0])
    )
    frame = read_predictions(tmp_path)
    assert len(frame) == 13 and set(frame["request_id"]) == {*ids, "d" * 32}
    assert list(frame.columns) == ["request_id", "row", "ts", "version", "prediction", "proba_0", "proba_1"]
    first = frame[frame["request_id"] == ids[3]].sort_values("row")
    assert first["version"].tolist() == [2, 2] and first["prediction"].tolist() == [1, 1]
    assert first["proba_1"].tolist() == [0.75, 0.5] and first["row"].tolist() == [0, 1]
    assert set(read_predictions(tmp_path, since=103.0)["request_id"]) == {*ids[3:], "d" * 32}


@pytest.mark.parametrize(
    "answer",
    [
        {"predictions": [1], "probabilities": [[0.12345678901234566, 0.8765432109876543]], "version": "3"},
        {"predictions": [0], "probabilities": [[1.0, 0.0, 2.5e-08]], "version": "3"},
        {"predictions": [-2.5e-07], "version": "3"},
        {"predictions": [7], "version": "3"},
        {"predictions": [1, 0], "probabilities": [[0.1, 0.9], [0.8, 0.2]], "version": "3"},
        {"predictions": ["a,b]"], "version": "3"},
        {"predictions": [[1, 2]], "version": "3"},
        {"version": "3", "predictions": [1]},
        {"predictions": [1], "probabilities": [[0.5, 0.5]], "version": "3", "extra": 1},
    ],
)
def test_the_routers_shortcut_writes_what_the_parsed_answer_would(answer: dict[str, Any]) -> None:
    """A one-record answer sliced as bytes gives the same lines as parsing it; any other shape is parsed."""
    content = json.dumps(answer, separators=(",", ":")).encode()
    expected = prediction_lines("a" * 32, 3, 1764627000.25, answer["predictions"], answer.get("probabilities"))
    assert answer_lines("a" * 32, 3, 1764627000.25, content) == expected
    assert [json.loads(line)["row"] for line in expected.splitlines()] == list(range(len(answer["predictions"])))
    assert answer_lines("a" * 32, 3, 1.0, b'{"error": "no"}') == b""


def test_a_feedback_file_must_be_a_readable_csv_or_parquet(tmp_path: Path) -> None:
    """A missing file, another format or an unreadable one: each named, with what is allowed; CSV cells stay text."""
    with pytest.raises(InvalidInputError, match=r"nowhere.csv does not exist; give a CSV or Parquet file"):
        load_feedback_file(tmp_path / "nowhere.csv")
    (tmp_path / "labels.json").write_text("[]", "utf-8")
    with pytest.raises(InvalidInputError, match=r"labels.json is neither .csv nor .parquet"):
        load_feedback_file(tmp_path / "labels.json")
    (tmp_path / "labels.parquet").write_text("not parquet", "utf-8")
    with pytest.raises(InvalidInputError, match=r"labels.parquet cannot be read as parquet"):
        load_feedback_file(tmp_path / "labels.parquet")
    (tmp_path / "labels.csv").write_text("request_id,row,label\nab,01,NA\ncd,,1\n", "utf-8")
    frame = load_feedback_file(tmp_path / "labels.csv")
    assert frame["row"].tolist()[0] == "01" and frame["label"].tolist() == ["NA", "1"] and pd.isna(frame["row"][1])


def _contract(model_dir: Path, task: str = "classification", require: bool = True) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    tags = {"mlops.task": task, "mlops.target": "class" if task == "classification" else "price"}
    if task == "classification":
        tags["mlops.target.classes"] = json.dumps(CLASSES)
    contract = feedback_contract(MODEL, 1, tags, None)
    contract.update(sensitive_features=["sex"], require_sensitive=require)
    (model_dir / "feedback.json").write_text(json.dumps(contract), "utf-8")


def test_regression_labels_must_be_numbers_and_are_stored_as_floats(tmp_path: Path) -> None:
    """A regressor's label that is not a number is refused by row; good ones are stored as float64."""
    home = tmp_path / "serving" / MODEL
    _contract(home, task="regression", require=False)
    ids = [f"{i:032x}" for i in range(3)]
    _log(home, [(i, 1, [2.5], None) for i in ids])
    bad = pd.DataFrame({"request_id": ids, "price": ["1.5", "cheap", "3"]})
    with pytest.raises(InvalidInputError, match=r"row 2: label 'cheap' is not a number") as refused:
        ingest_feedback(home, bad, redactor=PresidioRedactor())
    assert refused.value.reason_code == "feedback_invalid" and not (home / "feedback").exists()
    ingest_feedback(home, bad.assign(price=["1.5", "2", "3"]), redactor=PresidioRedactor())
    stored = read_feedback(home)
    assert stored["label"].dtype == "float64" and stored["label"].tolist() == [1.5, 2.0, 3.0]


def test_a_refusal_quotes_no_label_of_rows_that_matched_no_prediction(tmp_path: Path) -> None:
    """A file whose rows name no logged prediction is not read back: its labels are named by row, never quoted."""
    home = tmp_path / "serving" / MODEL
    _contract(home, task="regression", require=False)
    _log(home, [(f"{0:032x}", 1, [2.5], None)])
    other = pd.DataFrame({"request_id": [f"{i:032x}" for i in range(1, 4)], "price": ["root:x:0:0", "2", "s3cr3t"]})
    with pytest.raises(InvalidInputError) as refused:
        ingest_feedback(home, other, redactor=PresidioRedactor())
    message = str(refused.value)
    assert "rows 1, 3: label is not a number, and this model is a regressor" in message
    assert "root:x" not in message and "s3cr3t" not in message
    assert "rows 1, 2, 3: request_id and row name no prediction" in message


def test_labels_are_taken_for_predictions_within_the_label_window_only(tmp_path: Path) -> None:
    """A prediction older than the window (or in a segment last written before it) is refused naming the window."""
    home = tmp_path / "serving" / MODEL
    _contract(home, task="regression", require=False)
    log = PredictionLog(home / "predictions")
    now = time.time()
    log.append(prediction_lines(f"{1:032x}", 1, now - 400 * 3600, [1.0]))  # older than 2 x 168 h
    log.append(prediction_lines(f"{2:032x}", 1, now - 300 * 3600, [1.0]))
    log.close()
    stale = PredictionLog(home / "predictions")  # a segment written 20 days ago, not read at all
    stale._roll()
    assert stale.path is not None
    stale.append(prediction_lines(f"{3:032x}", 1, now, [1.0]))
    stale.close()
    os.utime(stale.path, (now - 480 * 3600, now - 480 * 3600))
    labels = pd.DataFrame({"request_id": [f"{i:032x}" for i in (1, 2, 3)], "price": ["1", "2", "3"]})
    with pytest.raises(InvalidInputError) as refused:
        ingest_feedback(home, labels, redactor=PresidioRedactor(), label_window_hours=336)
    message = str(refused.value)
    assert re.search(
        r"rows 1, 3: request_id and row name no prediction in the prediction log of 'small-model' made since "
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00 \(labels are taken only for predictions of the last "
        r"336 h\)",
        message,
    ), message
    assert "row 2:" not in message
    stored = ingest_feedback(home, labels.iloc[[1]], redactor=PresidioRedactor(), label_window_hours=336)
    assert stored["accepted"] == 1
    everything = ingest_feedback(home, labels.iloc[[0, 2]], redactor=PresidioRedactor())  # no window: the whole log
    assert everything["accepted"] == 2


@pytest.mark.parametrize(("watch", "required"), [([], True), (["bias"], True), (["drift", "quality"], False)])
def test_sensitive_attributes_are_required_when_the_spec_watches_bias(
    tmp_path: Path, watch: list[str], required: bool
) -> None:
    """As monitor_model reads the spec: an empty watch is everything, so bias is watched and attributes required."""
    spec = load_spec(small_spec(tmp_path, data__sensitive_features=["sex"], monitoring={"watch": watch})).spec
    tags = {"mlops.task": "classification", "mlops.target": "class", "mlops.target.classes": json.dumps(CLASSES)}
    contract = feedback_contract(MODEL, 1, tags, spec)
    assert (contract["sensitive_features"], contract["require_sensitive"]) == (["sex"], required)
    unnamed = load_spec(small_spec(tmp_path, data__sensitive_features=[], monitoring={"watch": watch})).spec
    assert feedback_contract(MODEL, 1, tags, unnamed)["require_sensitive"] is False


# --- the router's POST /feedback on files alone: the policy, every outcome audited, a clean close -----


class _Feedback:
    """A router on loopback for a model home with a contract and a prediction log of two requests."""

    def __init__(self, root: Path, policy: Policy | None) -> None:
        self.ws = root / "ws"
        self.home = self.ws / "serving" / MODEL
        self.home.mkdir(parents=True)
        tags = {"mlops.task": "regression", "mlops.target": "price"}
        contract = feedback_contract(MODEL, 1, tags, None, policy=policy)
        (self.home / "feedback.json").write_text(json.dumps(contract), "utf-8")
        self.ids = [f"{i:032x}" for i in range(4)]
        log = PredictionLog(self.home / "predictions")
        for request_id in self.ids:  # made now: within the label window
            log.append(prediction_lines(request_id, 1, time.time(), [2.5]))
        log.close()
        (self.home / "routes.json").write_text(json.dumps({"versions": {}}), "utf-8")
        self.router = Router(
            self.home / "routes.json", samples_path=self.home / "samples.jsonl", redactor=PatternRedactor()
        )
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(start_router(self.router), self.loop).result(10)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/feedback"

    def post(self, *ids: str) -> httpx.Response:
        body = {"feedback": [{"request_id": i, "label": 1.5} for i in ids]}
        return httpx.post(self.url, json=body, timeout=30)

    def audit(self) -> list[dict[str, Any]]:
        return [r for r in AuditLog(self.ws / "audit.jsonl").records() if r["event"] == "feedback"]

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), self.loop).result(10)
        self.router.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.mark.parametrize(
    ("policy", "said"),
    [
        (Policy(tools=ToolRules(denied=("record_feedback",))), "the policy denies record_feedback (tools.denied)"),
        (
            Policy(approval=ApprovalSettings(required_for=("record_feedback",))),
            "the policy holds record_feedback for an approval (approval.required_for)",
        ),
        (None, "its feedback contract does not say whether the policy lets the router take labels"),
    ],
)
def test_post_feedback_is_refused_when_the_policy_at_deploy_does_not_allow_it(
    tmp_path: Path, policy: Policy | None, said: str
) -> None:
    """403 naming the policy; nothing stored; an audit line with outcome refused."""
    served = _Feedback(tmp_path, policy)
    try:
        answer = served.post(served.ids[0])
    finally:
        served.stop()
    assert answer.status_code == 403 and said in answer.json()["error"], answer.text
    assert answer.json()["error"].startswith(f"POST /feedback is refused for {MODEL!r}")
    if policy is not None:
        assert "(policy built-in default, as in force at the model's last deploy)" in answer.json()["error"]
    assert not (served.home / "feedback").exists()
    assert [(r["outcome"], r["origin"]) for r in served.audit()] == [("refused", "router")]


def test_every_post_feedback_outcome_is_audited(tmp_path: Path) -> None:
    """ok (200), invalid_input (400) and error (500: the store cannot be written) each leave one audit line."""
    served = _Feedback(tmp_path, load_policy(None))
    try:
        ok = served.post(served.ids[0])
        invalid = served.post("0" * 32)
        (served.home / "feedback").rename(served.home / "feedback-moved")
        (served.home / "feedback").write_text("not a folder", "utf-8")
        failed = served.post(served.ids[1])
    finally:
        served.stop()
    assert (ok.status_code, invalid.status_code, failed.status_code) == (200, 400, 500), (ok.text, failed.text)
    assert failed.json()["error"].startswith("feedback not stored: ")
    lines = served.audit()
    assert [r["outcome"] for r in lines] == ["ok", "invalid_input", "error"]
    assert lines[0]["batch"] == ok.json()["batch"] and lines[2]["message"] == failed.json()["error"]


def test_closing_the_router_waits_for_a_batch_being_stored_and_audits_it(tmp_path: Path) -> None:
    """A batch waiting on the feedback lock when the router closes is stored and audited before the audit log shuts."""
    served = _Feedback(tmp_path, load_policy(None))
    assert served.post(served.ids[0]).status_code == 200  # the audit log is open from here on
    lock = os.open(served.home / ".feedback.lock", os.O_RDWR)
    fcntl.flock(lock, fcntl.LOCK_EX)  # as another process storing a batch would
    answers: list[httpx.Response | Exception] = []

    def post() -> None:
        try:
            answers.append(served.post(served.ids[1]))
        except httpx.HTTPError as exc:
            answers.append(exc)

    poster = threading.Thread(target=post)
    poster.start()
    deadline = time.monotonic() + 10
    while not any(c.busy for c in list(served.router.callers)) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # handed to a worker thread, the batch now waits on the lock there
    closer = threading.Thread(target=served.stop)
    closer.start()
    closer.join(1.0)
    waited = closer.is_alive()
    os.close(lock)  # releases it
    closer.join(10)
    poster.join(10)
    assert waited, "close returned while a feedback batch was still being stored"
    assert [r["outcome"] for r in served.audit()] == ["ok", "ok"]
    assert len(read_feedback(served.home)) == 2


# --- a real deployment ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ring(tmp_path_factory: pytest.TempPathFactory) -> KeyRing:
    return KeyRing(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, ring: KeyRing) -> Iterator[dict[str, Any]]:
    """Version 1 of a small Adult model in production (deployed through its approval), watched for bias by sex."""
    root = tmp_path_factory.mktemp("feedback")
    ws = root / "ws"
    install_policy(ws, ring.policy(approvers=["carol"], people=["alice"]), admin="carol", keys=ring)
    spec = small_spec(
        root,
        _adult_slice(),
        data__sensitive_features=["sex"],
        monitoring={"watch": ["bias"], "owner": "alice", "alert": "log"},
    )
    with Supervisor(ws, user="alice", key=ring.path("alice")) as sup:
        result = sup.run_pipeline(spec, stop_after="evaluate")
        assert result.status == "done", result.report.summary
        held = sup.ask(f"deploy {MODEL} version 1")
    assert held.status == "awaiting_approval", held.report.summary
    with Supervisor(ws, user="carol", key=ring.path("carol")) as sup:
        done = sup.approve(held.thread_id, reason="first release")
    assert done.status == "done", done.report.summary
    backend = LocalBackend.for_workspace(ws)
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    with using_store(uri) as client:
        model = load_sklearn_model(client.get_model_version(MODEL, "1").source)
    test = pd.read_parquet(next(ws.glob("datasets/*/splits/*/test.parquet")))
    features = [c for c in test.columns if c not in ("class", "sex")]
    try:
        yield {
            "ws": ws,
            "home": ws / "serving" / MODEL,
            "url": backend.status(MODEL)["router"]["url"],
            "model": model,
            "records": json.loads(test[features].head(40).to_json(orient="records")),
            "sex": test["sex"].head(40).astype(str).tolist(),
            "truth": test["class"].head(40).astype(str).tolist(),
        }
    finally:
        backend.down()


def _frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(records)
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
    frame[numeric] = frame[numeric].astype("float64")
    return frame


def _predict(served: dict[str, Any], records: list[dict[str, Any]], **headers: str) -> httpx.Response:
    answer = httpx.post(
        f"{served['url']}/invocations", json={"dataframe_records": records}, headers=headers, timeout=10
    )
    assert answer.status_code == 200, answer.text
    return answer


def _listing(folder: Path) -> list[tuple[str, int]]:
    return sorted((p.name, p.stat().st_size) for p in folder.glob("*")) if folder.exists() else []


def _audit(ws: Path) -> list[dict[str, Any]]:
    return list(AuditLog(ws / "audit.jsonl").records())


def test_the_deploy_writes_the_feedback_contract(served: dict[str, Any]) -> None:
    """feedback.json names the task, target, version 1's classes, the required sensitive attribute, and the
    workspace policy (by its file and digest) letting the router take labels of the last two quality windows."""
    policy = load_policy(served["ws"] / "policy.yaml")
    assert read_feedback_contract(served["home"]) == {
        "model": MODEL,
        "task": "classification",
        "target": "class",
        "versions": {"1": {"classes": CLASSES}},
        "sensitive_features": ["sex"],
        "require_sensitive": True,
        "post_feedback": {
            "allowed": True,
            "reason": "the policy allows record_feedback",
            "policy": f"{policy.source} (digest {policy.digest[:12]})",
            "label_window_hours": 336.0,
        },
    }


def test_request_ids_are_unique_and_every_record_is_logged_with_the_models_own_answer(served: dict[str, Any]) -> None:
    """Each answer has a fresh x-request-id; the log has one line per record: version, prediction, probabilities."""
    records = served["records"][:12]
    answers = [_predict(served, [r]) for r in records[:8]]
    answers.append(_predict(served, records[8:12], **{"x-request-id": "caller-7"}))
    ids = [a.headers["x-request-id"] for a in answers]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert answers[-1].headers["x-client-request-id"] == "caller-7" and ids[-1] != "caller-7"
    refused = httpx.post(f"{served['url']}/invocations", json={"dataframe_records": [{"age": 1}]}, timeout=10)
    assert refused.status_code == 400 and re.fullmatch(r"[0-9a-f]{32}", refused.headers["x-request-id"])
    logged = read_predictions(served["home"]).set_index(["request_id", "row"])
    assert refused.headers["x-request-id"] not in logged.index.get_level_values(0)  # only 200 answers are logged
    mine = logged.loc[ids].reset_index()
    assert len(mine) == 12 and mine["row"].tolist() == [0] * 8 + [0, 1, 2, 3]
    assert set(mine["version"]) == {1} and {a.headers["x-model-version"] for a in answers} == {"1"}
    model = served["model"]
    assert mine["prediction"].tolist() == model.predict(_frame(records)).tolist()
    assert mine["prediction"].tolist() == [p for a in answers for p in a.json()["predictions"]]
    assert np.allclose(mine[["proba_0", "proba_1"]].to_numpy(), model.predict_proba(_frame(records)))


def _labelled(served: dict[str, Any], first: int, count: int) -> pd.DataFrame:
    """``count`` fresh predictions (one request each) with their true class and sex, as a feedback frame."""
    records = served["records"][first : first + count]
    ids = [_predict(served, [r]).headers["x-request-id"] for r in records]
    return pd.DataFrame(
        {
            "request_id": ids,
            "label": served["truth"][first : first + count],
            "sex": served["sex"][first : first + count],
        }
    )


def _cli(ws: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return run_cli([CLI, "--workspace", str(ws), "--as", "alice", *args], env=env)


def test_feedback_by_cli_lands_once_and_is_audited(served: dict[str, Any], tmp_path: Path) -> None:
    """`feedback MODEL FILE`: stored once (exit 0); the same file again is refused whole (exit 2) naming the rows."""
    labels = _labelled(served, 12, 4)
    file = tmp_path / "labels.csv"
    labels.to_csv(file, index=False)
    done = _cli(served["ws"], "feedback", MODEL, str(file), "--json")
    assert done.returncode == 0, done.stderr
    stored = json.loads(done.stdout)
    assert (stored["status"], stored["accepted"], stored["attributes"]) == ("done", 4, ["sex"])
    mine = read_feedback(served["home"]).set_index("request_id").loc[labels["request_id"]]
    assert mine["label"].tolist() == labels["label"].tolist() and mine["row"].tolist() == [0] * 4
    assert mine["attr.sex"].tolist() == labels["sex"].tolist()
    before = _listing(served["home"] / "feedback")
    again = _cli(served["ws"], "feedback", MODEL, str(file), "--json")
    assert again.returncode == 2 and again.stdout
    refusal = json.loads(again.stdout)
    assert refusal["status"] == "invalid_input" and refusal["reason_code"] == "feedback_invalid"
    assert "rows 1, 2, 3, 4: a label for this request_id and row is already stored" in refusal["error"]
    assert _listing(served["home"] / "feedback") == before
    lines = [r for r in _audit(served["ws"]) if r.get("action") == "record_feedback"]
    assert [r["event"] for r in lines] == ["decision", "tool_call", "tool_result"] * 2
    assert [r.get("origin") for r in lines] == ["cli"] * 6


def test_feedback_by_post_lands_once_and_is_audited(served: dict[str, Any]) -> None:
    """POST /feedback: 200 with the batch; the same labels again are a 400 naming the rows; both audited."""
    labels = _labelled(served, 16, 3)
    body = {"feedback": [{**r, "row": 0} for r in labels.to_dict(orient="records")]}
    answer = httpx.post(f"{served['url']}/feedback", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 3
    assert (served["home"] / "feedback" / f"{answer.json()['batch']}.parquet").is_file()
    again = httpx.post(f"{served['url']}/feedback", json=body, timeout=30)
    assert (
        again.status_code == 400
        and "rows 1, 2, 3: a label for this request_id and row is already stored" in (again.json()["error"])
    )
    assert httpx.get(f"{served['url']}/feedback", timeout=10).status_code == 405
    lines = [r for r in _audit(served["ws"]) if r["event"] == "feedback"][-2:]
    assert [(r["outcome"], r["origin"], r["model"]) for r in lines] == [
        ("ok", "router", MODEL),
        ("invalid_input", "router", MODEL),
    ]
    assert lines[0]["batch"] == answer.json()["batch"] and lines[0]["accepted"] == 3
    assert "already stored" in lines[1]["message"]


def _bad_cases(labels: pd.DataFrame) -> dict[str, tuple[pd.DataFrame, str]]:
    unknown = labels.copy()
    unknown.loc[1, "request_id"] = "0" * 32
    outside = labels.assign(label=["<=50K", "maybe", ">50K", "yes"])
    repeated = pd.concat([labels, labels.iloc[[0]]], ignore_index=True)
    return {
        "unknown request id": (unknown, "row 2: request_id and row name no prediction in the prediction log"),
        "unknown row": (labels.assign(row=[0, 3, 0, 0]), "row 2: request_id and row name no prediction"),
        "not a request id": (labels.assign(request_id=["x", *labels["request_id"][1:]]), "row 1: request_id is not"),
        "label outside the classes": (
            outside,
            "rows 2, 4: label 'maybe', 'yes' is not a class of version 1 (its classes: '<=50K', '>50K')",
        ),
        "no label": (labels.drop(columns="label"), "no label column; name it 'label' (or 'class')"),
        "both label columns": (labels.assign(**{"class": labels["label"]}), "both 'label' and 'class' are given"),
        "an unknown column": (labels.assign(email="a@b.example"), "unknown column 'email'"),
        "a missing label": (labels.assign(label=["<=50K", None, ">50K", ">50K"]), "row 2: no label"),
        "a duplicate": (repeated, "row 5: request_id and row repeat an earlier row of this feedback"),
        "no sensitive attribute": (labels.drop(columns="sex"), "missing sensitive attribute column 'sex'"),
        "an empty sensitive value": (
            labels.assign(sex=["Male", None, "Female", "Male"]),
            "row 2: no value for 'sex', which is required",
        ),
        "no rows": (labels.iloc[0:0], "the feedback holds no rows"),
    }


def test_each_kind_of_bad_feedback_is_named_and_nothing_is_written(served: dict[str, Any]) -> None:
    """Every refusal names its rows and the allowed columns; the feedback folder is unchanged each time."""
    labels = _labelled(served, 19, 4)
    home = served["home"]
    redactor = PresidioRedactor()
    before = _listing(home / "feedback")
    for case, (frame, needle) in _bad_cases(labels).items():
        with pytest.raises(InvalidInputError) as refused:
            ingest_feedback(home, frame, redactor=redactor)
        message = str(refused.value)
        assert needle in message, (case, message)
        assert message.startswith(f"feedback for '{MODEL}' refused, nothing was stored") and ALLOWED in message, case
        assert "'sex' (required: the policy watches this model for bias)" in message, case
        assert _listing(home / "feedback") == before, case
    ids = [f"{i:032x}" for i in range(MAX_GROUPS + 1)]  # none of them served: both problems in one message
    many = pd.DataFrame({"request_id": ids, "label": ">50K", "sex": [f"group {i}" for i in range(len(ids))]})
    with pytest.raises(InvalidInputError) as refused:
        ingest_feedback(home, many, redactor=redactor)
    assert "rows 1, 2, 3, 4, 5 and 996 more: request_id and row name no prediction" in str(refused.value)
    assert "'sex' has 1,001 distinct values, more than 1,000" in str(refused.value)
    assert _listing(home / "feedback") == before
    ingest_feedback(home, labels, redactor=redactor)  # the good rows themselves pass
    assert len(_listing(home / "feedback")) == len(before) + 1


def test_a_cli_refusal_exits_2_with_the_message_on_stderr(served: dict[str, Any], tmp_path: Path) -> None:
    """Without --json a bad file is one `error:` line on stderr naming the rows, and exit 2."""
    file = tmp_path / "labels.csv"
    pd.DataFrame({"request_id": ["0" * 32], "label": [">50K"], "sex": ["Male"]}).to_csv(file, index=False)
    refused = _cli(served["ws"], "feedback", MODEL, str(file))
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.startswith("error: feedback for 'small-model' refused") and "row 1: request_id" in (
        refused.stderr
    )


def test_personal_data_in_a_sensitive_attribute_is_redacted_before_it_is_stored(served: dict[str, Any]) -> None:
    """An e-mail address given as a sex value is stored as <EMAIL_ADDRESS>; no stored byte holds it."""
    labels = _labelled(served, 23, 2).assign(sex=["Female", "jane.doe@example.com"])
    stored = ingest_feedback(served["home"], labels, redactor=PresidioRedactor())
    batch = Path(stored["path"])
    assert b"jane.doe@example.com" not in batch.read_bytes()
    assert pd.read_parquet(batch)["attr.sex"].tolist() == ["Female", "<EMAIL_ADDRESS>"]
