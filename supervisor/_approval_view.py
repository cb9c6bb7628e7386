"""What an approver is shown before signing: the action, and the evidence it stands on, read now.

The gate re-reads and verifies the same evidence when the action runs; this view is for the person
deciding. It never raises over evidence it cannot read: it says what could not be read, so the
person can refuse (and the gate would refuse anyway).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from mlops_supervisor._results import escape_placeholders
from mlops_supervisor.policies import ApprovalRequest, Policy

__all__ = ["ApprovalEvidence", "ChampionDiff", "FairnessLine", "MetricLine", "approval_evidence"]


class MetricLine(BaseModel):
    """One evaluation metric against the threshold the evaluation applied (none: reported only)."""

    name: str
    value: float
    threshold: float | None = None
    passed: bool | None = None


class FairnessLine(BaseModel):
    """One between-group difference of one sensitive feature against its limit."""

    feature: str
    metric: str
    value: float
    limit: float | None = None
    passed: bool


class ChampionDiff(BaseModel):
    """This version against the current champion: the gate's comparison on the same test rows, and every metric."""

    version: int
    metric: str = ""
    """The metric the evaluation compared on the same test rows (empty: it made no comparison)."""
    challenger: float | None = None
    champion: float | None = None
    passed: bool | None = None
    why: str = ""
    metrics: dict[str, tuple[float | None, float | None]] = Field(default_factory=dict)
    """metric -> (champion's, this version's) value, each from its own evaluation's tags."""


class ApprovalEvidence(BaseModel):
    """A paused thread's action and the evidence behind it, as an approver should see it."""

    thread_id: str
    tool: str
    agent: str
    action: str
    model: str | None = None
    version: int | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    requester: str
    approvers: list[str] = Field(default_factory=list)
    """Who may approve: the policy's approvers other than the requester."""
    evidence_digest: str = ""
    expires_at: str
    evaluation_run: str | None = None
    evaluated_at: str | None = None
    evaluation_passed: bool | None = None
    consistent: bool | None = None
    """False when the version's evidence tags disagree with the logged report: the gate will refuse."""
    failures: list[str] = Field(default_factory=list)
    metrics: list[MetricLine] = Field(default_factory=list)
    fairness: list[FairnessLine] = Field(default_factory=list)
    canary: str = ""
    champion: ChampionDiff | None = None
    problems: list[str] = Field(default_factory=list)
    """Evidence that could not be read."""

    @property
    def approve_command(self) -> str:
        """The command an approver runs from any terminal."""
        return f"mlops-supervisor approve {self.thread_id} --as APPROVER"

    def to_markdown(self) -> str:
        """The evidence as Markdown: what, who, the metrics and fairness tables, canary, champion, digest."""
        target = f"**{self.model}** version **{self.version}**" if self.model else "this action"
        lines = [
            f"### Approval needed: `{self.tool}` ({self.action}) of {target}",
            "",
            f"- requested by **{self.requester}** (the {self.agent} agent's call, thread `{self.thread_id}`)",
            f"- may approve: {', '.join(f'**{a}**' for a in self.approvers) or '**nobody**: the policy lists no other approver'}",
            f"- evidence digest `{self.evidence_digest[:16] or '-'}`; the approval expires at {self.expires_at}",
        ]
        if self.evaluation_run:
            verdict = {True: "passed", False: "FAILED", None: "?"}[self.evaluation_passed]
            lines.append(f"- evaluation run `{self.evaluation_run}` at {self.evaluated_at}: {verdict}")
        if self.consistent is False:
            lines.append("- **the version's evidence tags disagree with its evaluation report: the gate will refuse**")
        lines += [f"- failure: {f}" for f in self.failures]
        if self.metrics:
            lines += ["", "| metric | value | threshold | |", "|---|---|---|---|"]
            lines += [
                f"| {m.name} | {m.value:.4f} | {'' if m.threshold is None else f'{m.threshold:g}'} | "
                f"{_mark(m.passed)} |"
                for m in self.metrics
            ]
        if self.fairness:
            lines += ["", "| sensitive feature | difference | value | limit | |", "|---|---|---|---|---|"]
            lines += [
                f"| {f.feature} | {f.metric} | {f.value:.4f} | {'' if f.limit is None else f'{f.limit:g}'} | "
                f"{_mark(f.passed)} |"
                for f in self.fairness
            ]
        lines += ["", f"- canary: {self.canary or 'no canary recorded'}"]
        if self.champion is None:
            lines.append("- champion: none yet; this version would be the first")
        else:
            c = self.champion
            compared = (
                f"on {c.metric} over the same test rows: {c.challenger:.4f} vs {c.champion:.4f} "
                f"({'passes' if c.passed else 'does not pass'} the champion rule{': ' + c.why if c.why else ''})"
                if c.metric and c.challenger is not None and c.champion is not None
                else "no comparison on the same test rows was recorded"
            )
            lines.append(f"- champion: version {c.version}; {compared}")
            if c.metrics:
                lines += ["", f"| metric | champion v{c.version} | this version | change |", "|---|---|---|---|"]
                for name, (theirs, ours) in c.metrics.items():
                    change = f"{ours - theirs:+.4f}" if ours is not None and theirs is not None else ""
                    lines.append(f"| {name} | {_num(theirs)} | {_num(ours)} | {change} |")
        lines += [f"- could not read: {p}" for p in self.problems]
        return escape_placeholders("\n".join(lines))

    def _repr_markdown_(self) -> str:
        return self.to_markdown()


def _mark(passed: bool | None) -> str:
    return {True: "pass", False: "**FAIL**", None: ""}[passed]


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _metric_tags(version: Any) -> dict[str, float]:
    return {
        k.removeprefix("mlops.eval.metric."): float(v)
        for k, v in dict(version.tags).items()
        if k.startswith("mlops.eval.metric.")
    }


def approval_evidence(request: ApprovalRequest, policy: Policy, store_uri: str) -> ApprovalEvidence:
    """The evidence view of ``request``, read now from the MLflow store at ``store_uri``."""
    from mlops_supervisor.tools.core import using_store
    from mlops_supervisor.tools.evaluation import threshold_failures
    from mlops_supervisor.tools.registry import aliased_version, evaluation_report, model_version

    model = request.args.get("model")
    raw_version = request.args.get("version")
    version = int(raw_version) if isinstance(raw_version, int | str) and str(raw_version).isdigit() else None
    view = ApprovalEvidence(
        thread_id=request.thread_id,
        tool=request.tool,
        agent=request.agent,
        action=request.approval_action or request.tool,
        model=str(model) if model is not None else None,
        version=version,
        args=dict(request.args),
        requester=request.requester,
        approvers=[a for a in policy.approvers if a != request.requester],
        evidence_digest=request.evidence_digest,
        expires_at=request.expires_at.isoformat(timespec="seconds"),
    )
    if view.model is None or version is None:
        return view
    problems: list[str] = []
    update: dict[str, Any] = {}
    try:
        with using_store(store_uri) as client:
            mv = model_version(client, view.model, version)
            tags = dict(mv.tags)
            report, consistent = evaluation_report(client, view.model, version)
            champion = aliased_version(client, view.model)
            theirs = _metric_tags(champion) if champion is not None else {}
    except Exception as exc:  # noqa: BLE001 - shown to the approver as unreadable evidence, never as "none"
        problems.append(f"the MLflow store ({type(exc).__name__}: {exc})")
        return view.model_copy(update={"problems": problems})
    canary = tags.get("mlops.canary.passed")
    update["canary"] = {
        None: "not run: " + ("a first production deploy has no canary" if champion is None else "none recorded"),
        "pending": "deployed, its canary analysis not finished",
        "true": f"passed at {tags.get('mlops.canary.at', '?')}",
        "false": "FAILED" + (f": {tags['mlops.rollback.reason']}" if "mlops.rollback.reason" in tags else ""),
    }.get(canary, f"unknown state {canary!r}")
    if report is None:
        problems.append("no evaluation report for this version (the gate refuses a version without one)")
    else:
        thresholds: dict[str, float] = report.get("thresholds") or {}
        metrics: dict[str, float] = report.get("metrics") or {}
        update.update(
            evaluation_run=tags.get("mlops.eval.run_id"),
            evaluated_at=report.get("evaluated_at"),
            evaluation_passed=bool(report.get("passed")),
            consistent=consistent,
            failures=[str(f) for f in report.get("failures", [])],
            metrics=[
                MetricLine(
                    name=name,
                    value=float(value),
                    threshold=thresholds.get(name),
                    passed=None
                    if name not in thresholds
                    else not threshold_failures({name: value}, {name: thresholds[name]}),
                )
                for name, value in metrics.items()
            ],
            fairness=[
                FairnessLine(
                    feature=feature,
                    metric=metric,
                    value=float(check["value"]),
                    limit=check.get("limit"),
                    passed=bool(check["passed"]),
                )
                for feature, result in (report.get("fairness") or {}).items()
                for metric, check in result.get("checks", {}).items()
            ],
        )
        ours = _metric_tags(mv)
        if champion is not None and int(champion.version) != version:
            compared = report.get("champion") or {}
            update["champion"] = ChampionDiff(
                version=int(champion.version),
                metric=str(compared.get("metric", "")),
                challenger=compared.get("challenger"),
                champion=compared.get("champion"),
                passed=compared.get("passed"),
                why=str(compared.get("why", "")),
                metrics={name: (theirs.get(name), ours.get(name)) for name in sorted(set(ours) | set(theirs))},
            )
    return view.model_copy(update={**update, "problems": problems})
