"""``mlops-supervisor demo``: the governed flow on the embedded default, offline.

It runs the stages that exist on real parts: the data and training stages of
``examples/adult-income.yaml`` on the workspace's MLflow store, then the governance around
the stages still to come: allow-lists against a hostile model, an approval held until a
different, listed person answers, and the audit chain that records it all.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from rich.console import Console

from mlops_supervisor._api import Supervisor
from mlops_supervisor._results import Report, RunResult
from mlops_supervisor._settings import default_user
from mlops_supervisor.agents import SPECIALISTS
from mlops_supervisor.policies import verify_audit_log
from mlops_supervisor.testing import adversarial_allow_list_script

__all__ = ["DEMO_APPROVER", "run_demo"]

DEMO_APPROVER = "demo-approver"
EXAMPLE_SPEC = Path(__file__).resolve().parents[1] / "examples" / "adult-income.yaml"


def run_demo(workspace: Path, *, requester: str | None = None, console: Console | None = None) -> RunResult:
    """Run the demo in ``workspace/demo`` and return its six-section report as a result."""
    root = Path(workspace).expanduser().absolute() / "demo"
    root.mkdir(parents=True, exist_ok=True)
    requester = requester or default_user()
    if requester == DEMO_APPROVER:
        requester = "demo-requester"
    policy_path = root / "demo-policy.yaml"
    policy_path.write_text(yaml.safe_dump({"approvers": [DEMO_APPROVER]}), "utf-8")
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

    with Supervisor(root, model="offline", user=requester, policy=policy_path) as sup:
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
        model, version = "adult-income-classifier", 0
        if EXAMPLE_SPEC.exists():
            trained = sup.run_pipeline(EXAMPLE_SPEC, stop_after="register")
            out = {o.tool: o.output for o in trained.outputs if o.outcome == "ok"}
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
        else:
            say(f"[yellow]skipped[/]: {EXAMPLE_SPEC} is not here (the demo runs it from a source checkout)")

        say("[bold]4. A promotion to production is held for a human approval[/]")
        held = sup.ask(f"promote {model} version {max(version, 1)} to production")
        check("promotion paused, bound to the evidence", held.status == "awaiting_approval", f"thread {held.thread_id}")

        say(f"[bold]5. {requester} tries to approve their own request[/]")
        self_approval = sup.approve(held.thread_id)
        check(
            "self-approval refused",
            self_approval.status == "refused",
            next((d.reason_code for d in self_approval.decisions if d.reason_code == "self_approval"), "?"),
        )

    say(f"[bold]6. {DEMO_APPROVER} approves (a demo identity named in the demo policy, not a real person)[/]")
    with Supervisor(root, model="offline", user=DEMO_APPROVER, policy=policy_path) as approver:
        approved = approver.approve(held.thread_id, reason="demo approval")
    check(
        "approval accepted; the version is champion",
        approved.status == "done",
        f"{model} version {version} is champion, approved by {DEMO_APPROVER}"
        if approved.status == "done"
        else approved.report.summary,
    )

    say("[bold]7. A hostile model tries every other specialist's tools[/]")
    with Supervisor(root, model=f"scripted:{script_path}", user="mallory", policy=policy_path) as hostile:
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

    audit = verify_audit_log(root / "audit.jsonl")
    check("audit chain intact", audit.ok, f"{audit.lines} hash-chained lines in {root / 'audit.jsonl'}")

    passed = all(ok for _, ok, _ in checks)
    lines = [f"- {'pass' if ok else 'FAIL'}: {label} ({detail})" for label, ok, detail in checks]
    report = Report(
        plan="1. help  2. verify audit, show policy  3. data, training, evaluation, registration on Adult  "
        "4. promote (held)  5. self-approval  6. approval by the demo approver  7. hostile model  8. audit verify",
        design=f"Offline planner; policy {policy_path} names `{DEMO_APPROVER}` as the only approver. "
        f"`{DEMO_APPROVER}` is a demo identity so the flow can run unattended; in real use the "
        "approver is a person listed in your policy file.",
        changes="The Adult data set was versioned and split in the demo workspace, its candidates were logged "
        "to its MLflow store, the best was registered, evaluated (report, plots, fairness) and made challenger, "
        "then champion after the approval. Nothing was deployed: serving arrives in a later version.",
        verification="\n".join(lines),
        rollback="Nothing to roll back. Remove the demo with `rm -r " + str(root) + "`.",
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
