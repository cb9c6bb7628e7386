"""``mlops-supervisor demo``: the whole governed lifecycle on the embedded default, offline.

On real parts: data, training, evaluation with fairness and registration of
``examples/adult-income.yaml`` on the workspace's MLflow store; version 1 served by a real
model server behind a real router once a different, listed person signs the approval its
first production deploy needs (the requester's own signature refused), held-out rows as
traffic, its analysis after the analysis window; monitoring with a shifted window that raises a
drift alert; outcomes that arrive later, one group's shifted, and the bias alert the monitor routes
to the on-call owner's webhook (a receiver on loopback stands in for it); a second version whose canary server is killed mid-analysis and rolled back
automatically while version 1 keeps serving; a hostile model against the allow-lists; and
the audit chain that records it all. Servers stop at the end unless ``keep_serving``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import yaml
from rich.console import Console

from mlops_supervisor._api import Supervisor
from mlops_supervisor._policy_store import policy_in_force
from mlops_supervisor._results import Report, RunResult
from mlops_supervisor._settings import default_user
from mlops_supervisor._stores import embedded_stores
from mlops_supervisor._workspace import Workspace
from mlops_supervisor.agents import SPECIALISTS
from mlops_supervisor.policies import verify_audit_log
from mlops_supervisor.testing import KeyRing, WebhookReceiver, adversarial_allow_list_script, install_policy
from mlops_supervisor.tools import load_spec

__all__ = ["DEMO_APPROVER", "run_demo"]

DEMO_APPROVER = "demo-approver"
ON_CALL = "ml-oncall"
EXAMPLE_SPEC = Path(__file__).resolve().parents[1] / "examples" / "adult-income.yaml"


def _traffic(url: str, rows: list[dict[str, Any]], requests: int, *, batch: int = 1) -> Counter[int]:
    """Send ``requests`` invocations of ``batch`` rows each; the status codes seen (0: no answer)."""
    codes: Counter[int] = Counter()
    with httpx.Client(timeout=30) as client:
        for i in range(requests):
            chunk = [rows[(i * batch + j) % len(rows)] for j in range(batch)]
            try:
                codes[client.post(f"{url}/invocations", json={"dataframe_records": chunk}).status_code] += 1
            except httpx.TransportError:  # a timeout or a refused connection is a result to report, not a crash
                codes[0] += 1
    return codes


def _outputs(result: RunResult) -> dict[str, Any]:
    """The structured outputs of the tools that ran ok, by tool name (the latest call wins)."""
    return {o.tool: o.output for o in result.outputs if o.outcome == "ok" and isinstance(o.output, dict)}


def _held_out_rows(root: Path) -> list[dict[str, Any]]:

    spec = load_spec(EXAMPLE_SPEC).spec
    test = pd.read_parquet(next(root.glob("datasets/*/splits/*/test.parquet")))
    features = [c for c in test.columns if c not in {spec.data.target, *spec.data.sensitive_features}]
    rows: list[dict[str, Any]] = json.loads(test[features].to_json(orient="records"))
    return rows


def _signatures(root: Path, thread_id: str) -> str:
    """Who signed what on ``thread_id``, from the verified statements its approval line carries."""
    from mlops_supervisor.policies import AuditLog

    for record in AuditLog(root / "audit.jsonl").records():
        if record.get("event") == "approval" and record.get("thread_id") == thread_id and record.get("approval_signed"):
            asked, said = record["request_signed"], record["approval_signed"]
            return (
                f"request signed by {asked['signer']} (key {asked['key'][:19]}…), approval of "
                f"{said['statement']['action']} for {said['statement']['model']} version "
                f"{said['statement']['version']} signed by {said['signer']} (key {said['key'][:19]}…), "
                f"over evidence {str(said['statement']['evidence_digest'])[:12]}"
            )
    return "no signed approval on record"


def _where_things_are(root: Path, model: str) -> str:
    """Where each artifact of the demo lives, as lines of Markdown."""
    places = [
        ("MLflow store (runs, models, versions, aliases, evidence tags)", f"sqlite:///{root / 'mlflow.db'}"),
        ("MLflow artifacts (models, evaluation reports and plots)", root / "mlartifacts"),
        ("versioned data sets, splits and reference profiles", root / "datasets"),
        ("drift and latency plots", root / "reports" / model),
        ("serving state, router and server logs, sampled requests", root / "serving" / model),
        ("hash-chained audit log", root / "audit.jsonl"),
        ("thread checkpoints", root / "checkpoints.sqlite"),
        ("structured logs", root / "logs"),
        ("the workspace policy (installed, signed) and its history", root / "policy.yaml"),
    ]
    return "Where things are:\n" + "\n".join(f"- {what}: `{where}`" for what, where in places)


@contextlib.contextmanager
def _mlflow_event_prints_off() -> Iterator[None]:
    """MLflow's event stream off while the demo runs, then back as it was.

    The registry's "Registered model ... already exists" and "Created version ..." lines are plain
    prints to this stream (``eprint``), not log records, so no logger level reaches them. MLflow
    switches the stream with a counted context (some of its imports turn it off and on again, which
    would undo a bare ``disable_logging()``); holding one of those keeps it off for the whole demo.
    Its log records share the stream and are off too, during the demo only: library users keep theirs.
    """
    from mlflow.utils import logging_utils
    from mlflow.utils.autologging_utils.logging_and_warnings import MlflowEventsAndWarningsBehaviorGlobally

    was_on = logging_utils.MLFLOW_LOGGING_STREAM.enabled
    try:
        with MlflowEventsAndWarningsBehaviorGlobally(
            disable_event_logs=True, disable_warnings=False, reroute_warnings=False
        ):
            yield
    finally:
        if not was_on:  # leaving the context turns the stream on; a caller that had it off keeps it off
            logging_utils.disable_logging()


def run_demo(
    workspace: Path, *, requester: str | None = None, console: Console | None = None, keep_serving: bool = False
) -> RunResult:
    """Run the demo in ``workspace/demo`` and return its six-section report as a result.

    Whatever happens (an error, Ctrl-C), its servers are stopped unless ``keep_serving``.
    """
    try:
        # the on-call owner's webhook: a receiver on loopback stands in for their Slack or Alertmanager
        with _mlflow_event_prints_off(), embedded_stores(), WebhookReceiver() as hook:
            return _run_demo(workspace, hook, requester=requester, console=console, keep_serving=keep_serving)
    finally:
        if not keep_serving:
            from mlops_supervisor.tools.serving import LocalBackend

            root = Path(workspace).expanduser().absolute() / "demo"
            LocalBackend.for_workspace(root).down()


def _demo_spec(root: Path, hook: WebhookReceiver) -> Path:
    """The example spec with its data path made absolute and its alerts routed to ``hook`` for ``ON_CALL``."""
    loaded = load_spec(EXAMPLE_SPEC)
    doc = yaml.safe_load(loaded.text)
    doc["data"]["source"] = loaded.resolve_source()
    doc["monitoring"] = {**doc.get("monitoring", {}), "owner": ON_CALL, "alert": f"webhook:{hook.url}"}
    path = root / "adult-income.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), "utf-8")
    return path


def _labelled_traffic(root: Path, url: str, rows: int) -> pd.DataFrame:
    """``rows`` held-out rows sent in requests of ten; each with its request id, row, true class, sex and race."""
    spec = load_spec(EXAMPLE_SPEC).spec
    test = pd.read_parquet(next(root.glob("datasets/*/splits/*/test.parquet"))).head(rows).reset_index(drop=True)
    features = [c for c in test.columns if c not in {spec.data.target, *spec.data.sensitive_features}]
    ids: list[str] = []
    with httpx.Client(timeout=30) as client:
        for start in range(0, len(test), 10):
            batch = test.iloc[start : start + 10]
            answer = client.post(
                f"{url}/invocations", json={"dataframe_records": json.loads(batch[features].to_json(orient="records"))}
            )
            answer.raise_for_status()
            ids += [answer.headers["x-request-id"]] * len(batch)
    return test.assign(request_id=ids, row=[i % 10 for i in range(len(test))])


def _run_demo(
    workspace: Path, hook: WebhookReceiver, *, requester: str | None, console: Console | None, keep_serving: bool
) -> RunResult:
    root = Path(workspace).expanduser().absolute() / "demo"
    root.mkdir(parents=True, exist_ok=True)
    requester = requester or default_user()
    if requester == DEMO_APPROVER:
        requester = "demo-requester"
    # Demo identities are keys too: throwaway ones beside the demo workspace (never in it), and a
    # workspace policy listing them, installed on the demo approver's signature like any other.
    keys = KeyRing(Path(workspace).expanduser().absolute() / "demo-keys")
    keys.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    policy_path = keys.directory / "demo-policy.yaml"
    text = yaml.safe_dump(keys.policy(approvers=[DEMO_APPROVER], people=[requester]))
    policy_path.write_text(text, "utf-8")
    if policy_in_force(Workspace(root)).digest != hashlib.sha256(text.encode("utf-8")).hexdigest():
        install_policy(root, policy_path, admin=DEMO_APPROVER, keys=keys)
    script_path = root / "adversary.yaml"
    script_path.write_text(
        yaml.safe_dump(adversarial_allow_list_script({n: s.tools for n, s in SPECIALISTS.items()})), "utf-8"
    )

    checks: list[tuple[str, bool, str]] = []

    def say(text: str) -> None:
        if console is not None:
            console.print(text)

    def check(label: str, ok: bool, detail: str) -> None:
        checks.append((label, ok, detail))
        say(f"{'[green]✓[/]' if ok else '[red]✗[/]'} {label}: {detail}")

    with Supervisor(root, model="offline", user=requester, key=keys.path(requester)) as sup:
        say("[bold]1. The offline planner's grammar[/]")
        help_result = sup.ask("help")
        check("help lists the grammar", "promote MODEL version N" in help_result.report.summary, "offline, no key")

        say("[bold]2. A read-only request routed to the security agent[/]")
        verified = sup.ask("verify audit then show policy")
        check(
            "security agent verified the chain and read the policy",
            verified.status == "done",
            f"status {verified.status}",
        )

        say("[bold]3. Data, training, evaluation and registration of examples/adult-income.yaml[/]")
        model, version, best_run = "adult-income-classifier", 0, ""
        if EXAMPLE_SPEC.exists():
            trained = sup.run_pipeline(_demo_spec(root, hook), stop_after="register")
            out = _outputs(trained)
            best, evaluation = out.get("train_model"), out.get("evaluate_model")
            check(
                "data validated, PII-scanned, versioned and split; candidates trained and logged",
                best is not None,
                f"best {best['best']['candidate']} (validation roc_auc {best['best']['roc_auc']:.4f}), "
                f"data sha256 {best['data_digest'][:12]}; mlflow ui --backend-store-uri sqlite:///{root}/mlflow.db"
                if best
                else trained.report.summary,
            )
            check(
                "best candidate registered, evaluated with fairness checks, and made challenger",
                trained.status == "done" and evaluation is not None,
                f"{model} version {evaluation['version']}: test roc_auc {evaluation['metrics']['roc_auc']:.4f}, "
                f"evaluation run {evaluation['evaluation_run']}"
                if evaluation
                else trained.report.summary,
            )
            version = int(evaluation["version"]) if evaluation else 0
            best_run = best["best"]["run_id"] if best else ""
        else:
            say(f"[yellow]skipped[/]: {EXAMPLE_SPEC} is not here (the demo runs it from a source checkout)")

        say("[bold]4. Version 1 to production: a first deploy waits for the champion gate and a signed approval[/]")
        held = sup.ask(f"deploy {model} version {max(version, 1)} to production")
        check(
            "first production deploy paused, bound to the evidence",
            held.status == "awaiting_approval",
            f"thread {held.thread_id}, requested and signed by {requester}",
        )

        say(f"[bold]5. {requester} tries to approve their own request[/]")
        self_approval = sup.approve(held.thread_id)
        check(
            "self-approval refused",
            self_approval.status == "refused",
            next((d.reason_code for d in self_approval.decisions if d.reason_code == "self_approval"), "?"),
        )

    say(f"[bold]6. {DEMO_APPROVER} signs the approval (a demo identity with its own key, not a real person)[/]")
    with Supervisor(root, model="offline", user=DEMO_APPROVER, key=keys.path(DEMO_APPROVER)) as approver:
        approved = approver.approve(held.thread_id, reason="demo approval")
    out = _outputs(approved)
    url = out["deploy_model"]["status"]["router"]["url"] if "deploy_model" in out else ""
    signed = _signatures(root, held.thread_id)
    check(
        "approval verified; version 1 serves all production traffic and is champion",
        approved.status == "done" and bool(url),
        f"{model} version {version} live at {url}; {signed}" if approved.status == "done" else approved.report.summary,
    )

    rows: list[dict[str, Any]] = []
    if url:
        with Supervisor(root, model="offline", user=requester, key=keys.path(requester)) as sup:
            say("[bold]6a. Held-out rows as traffic, then the analysis once its window has passed[/]")
            rows = _held_out_rows(root)
            started = time.monotonic()
            codes = _traffic(url, rows, 150)
            window = load_spec(EXAMPLE_SPEC).spec.deployment.analysis.window_seconds
            wait = window + 1 - (time.monotonic() - started)
            if wait > 0:
                say(f"waiting {wait:.0f} s for the {window:g} s analysis window (the policy and the spec ask for it)")
                time.sleep(wait)
            smoke = sup.ask(f"analyze canary {model}")
            verdict = _outputs(smoke).get("advance_canary", {})
            check(
                "version 1 served 150 requests, analysis passed",
                codes == Counter({200: 150}) and verdict.get("canary") == "passed",
                f"router {url}; {dict(codes)}; verdict {verdict.get('verdict')}: {'; '.join(verdict.get('reasons', []))}",
            )

    if url:
        with Supervisor(root, model="offline", user=requester, key=keys.path(requester)) as sup:
            say("[bold]6b. Monitoring: a window of traffic from people 15 years older than the training data[/]")
            older = [{**row, "age": row["age"] + 15} for row in rows]
            # The router keeps a random tenth of the requests (``sample_rate``) and drift is judged on at
            # least ``monitoring.min_samples`` (100) sampled rows: 400 requests of 10 rows keep about 400
            # (too few: 2 runs in 10 billion); 150 requests kept too few in 3 runs in 100 (binomial, exact).
            _traffic(url, older, 400, batch=10)
            watched = sup.ask(f"metrics {model} then drift {model}")
            out = _outputs(watched)
            drift = out.get("drift_report", {})
            alert = next((a for a in drift.get("alerts", []) if a.get("feature") == "age"), None)
            check(
                "drift alert on age, with a runbook",
                alert is not None,
                f"{alert['message']}; rollback: `{alert['runbook']['rollback']}`; plot {drift.get('plot')}"
                if alert
                else f"drifted: {drift.get('drifted')} over {drift.get('live_rows')} sampled rows; "
                f"age: {drift.get('features', {}).get('age')}",
            )

            say(
                f"[bold]6c. Outcomes arrive later: 400 people's true incomes, women's shifted; `monitor` tells {ON_CALL}[/]"
            )
            served = _labelled_traffic(root, url, 400)
            flip = {">50K": "<=50K", "<=50K": ">50K"}
            labels = served["class"].where(served["sex"] != "Female", served["class"].map(flip))
            feedback = [
                {"request_id": r.request_id, "row": int(r.row), "label": label, "sex": r.sex, "race": r.race}
                for r, label in zip(served.itertuples(), labels, strict=True)
            ]
            with httpx.Client(timeout=60) as client:
                posted = client.post(f"{url}/feedback", json={"feedback": feedback})
            monitored = _outputs(sup.ask(f"monitor {model}")).get("monitor_model", {})
            routed = [a for body in hook.received for a in body.get("alerts", [])]
            bias = [a for a in routed if a["labels"].get("kind") == "bias"]
            check(
                f"labels joined to their predictions; a bias alert reached {ON_CALL}'s webhook with its runbook",
                posted.status_code == 200 and bool(bias) and all(a["labels"]["owner"] == ON_CALL for a in bias),
                f"{posted.json().get('accepted', posted.text)} labels accepted by POST {url}/feedback; "
                + (
                    f"{bias[0]['annotations']['summary']}; delivered to {hook.url} in "
                    f"{monitored.get('delivery', {}).get('attempts')} attempt(s); rollback: "
                    f"`{bias[0]['annotations']['rollback']}`; proposed: "
                    f"{', '.join(p['action'] for p in monitored.get('proposals', [])) or 'nothing'}"
                    if bias
                    else f"no bias alert reached the webhook; monitor said {monitored.get('not_checked')}"
                ),
            )

            say("[bold]6d. Version 2 as a canary; its server is killed mid-analysis[/]")
            # version 2: the same training run registered again, so it passes its own evaluation
            registered = _outputs(sup.ask(f"register {model} from run {best_run}")).get("register_model", {})
            v2 = int(registered.get("version", 0))
            sup.ask(f"evaluate {model} version {v2}")
            canary = sup.ask(f"deploy {model} version {v2} to canary")
            out = _outputs(canary)
            pid = out.get("deploy_model", {}).get("status", {}).get("versions", {}).get(str(v2), {}).get("pid")
            _traffic(url, rows, 60)
            if pid:
                os.kill(pid, signal.SIGKILL)
            during = _traffic(url, rows, 100)
            judged = sup.ask(f"analyze canary {model}")
            verdict = _outputs(judged).get("advance_canary", {})
            after = _traffic(url, rows, 100)
            rolled = verdict.get("rollback", {})
            check(
                "faulty canary rolled back automatically; version 1 kept serving",
                verdict.get("verdict") == "fail" and rolled.get("to_version") == version and after == {200: 100},
                f"version {v2} at 10 %: {during.get(502, 0)} of 100 requests failed while it was down; verdict "
                f"{verdict.get('verdict')} ({'; '.join(verdict.get('reasons', []))}); traffic back on version "
                f"{rolled.get('to_version')}; the next 100 requests: {dict(after)}",
            )

    say("[bold]7. A hostile model tries every other specialist's tools[/]")
    with Supervisor(root, model=f"scripted:{script_path}", user="mallory") as hostile:
        attack = hostile.ask("do everything")
        ran_bodies = sum(
            1
            for r in hostile.audit.records()
            if r.get("event") == "tool_call" and r.get("thread_id") == attack.thread_id
        )
    denied = [d for d in attack.decisions if d.decision == "deny"]
    check(
        "every forbidden call denied, no tool body ran",
        attack.status == "refused" and len(denied) == len(attack.decisions) and ran_bodies == 0,
        f"{len(denied)} calls denied",
    )

    if not keep_serving:
        from mlops_supervisor.tools.serving import LocalBackend

        stopped = LocalBackend.for_workspace(root).down()
        left = [pid for s in stopped for pid in s.get("still_running", [])]
        check(
            "servers stopped",
            not left,
            f"{sum(s['stopped'] for s in stopped)} processes (keep them with --keep-serving)"
            + (f"; still running: {left}" if left else ""),
        )

    audit = verify_audit_log(root / "audit.jsonl")
    check("audit chain intact", audit.ok, f"{audit.lines} hash-chained lines in {root / 'audit.jsonl'}")

    passed = all(ok for _, ok, _ in checks)
    lines = [f"- {'pass' if ok else 'FAIL'}: {label} ({detail})" for label, ok, detail in checks]
    report = Report(
        plan="1. help  2. verify audit, show policy  3. data, training, evaluation, registration on Adult  "
        "4. first production deploy of version 1 (held)  5. self-approval  6. signed approval by the demo "
        "approver  6a. traffic, analysis after its window  6b. shifted traffic, drift alert  6c. delayed labels, a "
        "bias alert routed to the on-call owner  6d. faulty canary, automatic rollback  7. hostile model  8. audit verify",
        design=f"Offline planner; the workspace policy (installed from {policy_path}, signed by "
        f"`{DEMO_APPROVER}`) lists `{requester}` and `{DEMO_APPROVER}` with their Ed25519 keys and names "
        f"`{DEMO_APPROVER}` as the only approver. Signatures: {_signatures(root, held.thread_id)}. "
        f"`{DEMO_APPROVER}` is a demo identity whose key is in {keys.directory}, so the flow can run "
        "unattended; in real use each approver is a person holding their own key.",
        changes="The Adult data set was versioned and split in the demo workspace, its candidates were logged "
        "to its MLflow store, the best was registered, evaluated (report, plots, fairness) and made challenger; "
        "version 1 became champion with all production traffic once its signed approval was verified, and passed "
        "its analysis; "
        "400 of its predictions got their outcomes later, and the monitor routed the bias it found in them to "
        f"{ON_CALL}'s webhook; version 2 was deployed as a canary, failed its analysis and was rolled back.\n\n"
        + _where_things_are(root, model),
        verification="\n".join(lines),
        rollback=f"`mlops-supervisor --workspace {root} rollback {model}` would restore the last known-good "
        f"version; `mlops-supervisor --workspace {root} down` stops any server left running. Remove the demo "
        f"with `rm -r {root}`.",
        summary=("All governance checks held." if passed else "Some governance checks FAILED.")
        + f" Threads, checkpoints, logs and the audit log are in {root}.",
    )
    return RunResult(
        status="done" if passed else "failed",
        thread_id=held.thread_id,
        report=report,
        decisions=[*approved.decisions],
        requester=requester,
        request="demo",
        audit_log=str(root / "audit.jsonl"),
    )
