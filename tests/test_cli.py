"""The command line: grammar, JSON contract, approvals across processes, and bad input."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from mlops_supervisor.policies import AuditLog

from .conftest import REPO, CliRun


def test_ask_help_lists_the_grammar(cli: CliRun) -> None:
    """`ask "help" --model offline` prints every command of the grammar and exits 0."""
    done = cli("ask", "help", "--model", "offline")
    assert done.returncode == 0, done.stderr
    for usage in (
        "train SPEC",
        "evaluate MODEL version N",
        "register MODEL from run RUN_ID",
        "deploy MODEL version N",
        "promote MODEL version N",
        "rollback MODEL",
        "status",
        "help",
    ):
        assert usage in done.stdout


def test_ask_json_contract(cli: CliRun) -> None:
    """`ask --json` prints one JSON object with status, thread_id, the six report sections and decisions."""
    done = cli("ask", "verify audit", "--json")
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["status"] == "done"
    assert payload["thread_id"].startswith("t-")
    assert set(payload["report"]) == {"plan", "design", "changes", "verification", "rollback", "summary"}
    assert payload["decisions"] == [
        {
            "agent": "security",
            "action": "verify_audit_chain",
            "decision": "allow",
            "reason_code": "allowed",
            "message": "allowed by policy",
        }
    ]


def test_the_workspace_is_the_users_alone(cli: CliRun, workspace: Path) -> None:
    """After a command, the workspace is 0700 and its files (audit, checkpoints, logs) 0600."""
    assert cli("ask", "verify audit").returncode == 0
    assert workspace.stat().st_mode & 0o777 == 0o700
    files = {p.name: p.stat().st_mode & 0o777 for p in workspace.rglob("*") if p.is_file()}
    assert {"audit.jsonl", "checkpoints.sqlite", "mlops-supervisor.jsonl"} <= set(files)
    assert {name: mode for name, mode in files.items() if mode != 0o600} == {}


def test_approval_across_processes(cli: CliRun, workspace: Path, policy_file: Path) -> None:
    """Paused in one process; self-approval and an unlisted approver are refused (exit 3) and recorded; a listed approver finishes it."""
    asked = cli("ask", "show policy", "--json", user="alice", policy=policy_file)
    assert asked.returncode == 4, asked.stderr
    thread = json.loads(asked.stdout)["thread_id"]
    assert json.loads(asked.stdout)["pending_approval"]["tool"] == "show_policy"

    self_approved = cli("approve", thread, "--json", user="alice", policy=policy_file)
    assert self_approved.returncode == 3
    assert json.loads(self_approved.stdout)["decisions"][-1]["reason_code"] == "self_approval"

    outsider = cli("approve", thread, "--json", user="eve", policy=policy_file)
    assert outsider.returncode == 3
    assert json.loads(outsider.stdout)["decisions"][-1]["reason_code"] == "approver_not_listed"

    still = cli("status", thread, "--json", policy=policy_file)
    assert json.loads(still.stdout)["status"] == "awaiting_approval"

    approved = cli(
        "approve", thread, "--reason", "evidence reviewed", "--json", user="release-manager", policy=policy_file
    )
    payload = json.loads(approved.stdout)
    assert payload["status"] == "done"
    assert payload["decisions"][-1]["reason_code"] == "allowed"
    assert approved.returncode == 0
    assert [o["tool"] for o in payload["outputs"]] == ["show_policy"]

    events = [
        (r["event"], r.get("approver"), r.get("reason_code"))
        for r in AuditLog(workspace / "audit.jsonl").records()
        if r.get("thread_id") == thread and r["event"] in {"approval", "approval_refused"}
    ]
    assert events == [
        ("approval_refused", "alice", "self_approval"),
        ("approval_refused", "eve", "approver_not_listed"),
        ("approval", "release-manager", "allowed"),
    ]


def test_reject_is_recorded_and_refuses(cli: CliRun, policy_file: Path) -> None:
    """A rejection ends the thread refused (exit 3) with the reason in the report."""
    asked = cli("ask", "show policy", "--json", policy=policy_file)
    thread = json.loads(asked.stdout)["thread_id"]
    rejected = cli("reject", thread, "--reason", "stale evidence", "--json", user="release-manager", policy=policy_file)
    assert rejected.returncode == 3
    assert "stale evidence" in json.loads(rejected.stdout)["decisions"][-1]["message"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("frobnicate",), "No such command 'frobnicate'"),
        (("ask", "help", "--model", "gpt4"), "unknown model spec 'gpt4'; allowed model specs: offline"),
        (("ask", "make me a sandwich"), "does not understand 'make me a sandwich'"),
        (("run", "spec.yaml", "--stop-after", "bake"), "'bake' is not one of 'data', 'train'"),
        (("approve", "t-doesnotexist"), "no thread 't-doesnotexist'"),
        (("ask", "help", "--thread", "bad id!"), "thread id 'bad id!' is not allowed"),
        (("run", "missing.yaml"), "missing.yaml does not exist"),
    ],
)
def test_bad_input_exits_2_and_changes_nothing(
    cli: CliRun, workspace: Path, args: tuple[str, ...], needle: str
) -> None:
    """Each bad input gets one message naming the value and what is allowed, exit 2, and no audit line."""
    done = cli(*args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert needle in done.stderr
    assert not (workspace / "audit.jsonl").exists()
    if "--model" in args or "frobnicate" in args:
        assert not workspace.exists()


@pytest.mark.parametrize(
    ("text", "needle"),
    [("approvers: [unclosed\n", "is not valid YAML"), ("approvers: 7\n", "approvers: Input should be a valid tuple")],
)
def test_bad_policy_file_exits_2(cli: CliRun, workspace: Path, tmp_path: Path, text: str, needle: str) -> None:
    """A malformed or invalid policy file is named, exit 2, and nothing is written."""
    policy = tmp_path / "bad.yaml"
    policy.write_text(text, "utf-8")
    done = cli("ask", "status", policy=policy)
    assert done.returncode == 2
    assert str(policy) in done.stderr
    assert needle in done.stderr
    assert not (workspace / "audit.jsonl").exists()


def test_unwritable_workspace_exits_2(cli: CliRun, tmp_path: Path) -> None:
    """A workspace that cannot be created is named, exit 2."""
    blocker = tmp_path / "file"
    blocker.write_text("x", "utf-8")
    done = cli("ask", "status", ws=blocker / "ws")
    assert done.returncode == 2
    assert f"workspace {blocker / 'ws'} cannot be created" in done.stderr


def test_status_lists_threads(cli: CliRun, policy_file: Path) -> None:
    """`status --json` lists each thread with its status and the audit chain's state."""
    cli("ask", "show policy", policy=policy_file)
    cli("ask", "verify audit", policy=policy_file)
    payload = json.loads(cli("status", "--json", policy=policy_file).stdout)
    assert sorted(t["status"] for t in payload["threads"]) == ["awaiting_approval", "done"]
    assert payload["audit_intact"] is True


def test_the_builtin_eval_suite_is_complete() -> None:
    """At least 40 built-in scenarios with unique ids, each blocker naming the guarantee it proves. `make test`
    (and so CI) runs them all with `mlops-supervisor eval` after the test suite and keeps the JUnit file."""
    from mlops_supervisor.evals import builtin_scenarios

    scenarios = builtin_scenarios()
    assert len(scenarios) >= 40
    assert len({s.id for s in scenarios}) == len(scenarios)
    assert all(s.guarantee.strip() for s in scenarios if s.severity == "blocker")
    assert "bash scripts/test.sh" in (REPO / "Makefile").read_text("utf-8")
    assert (REPO / "scripts" / "test.sh").read_text("utf-8").count("mlops-supervisor eval --workers 2 --junit") == 1


def test_graph_command_prints_mermaid(cli: CliRun) -> None:
    """`graph` prints the Mermaid drawing pinned by the snapshot."""
    done = cli("graph")
    snapshot = (Path(__file__).parent / "snapshots" / "graph.mmd").read_text("utf-8")
    assert done.stdout.strip() == snapshot.strip()


def test_chat_answers_and_leaves(workspace: Path) -> None:
    """`chat` reads requests from the terminal, answers each, and ends on 'exit'."""
    import os
    import subprocess

    from .conftest import CLI

    done = subprocess.run(
        [CLI, "--workspace", str(workspace), "chat", "--thread", "t-chat"],
        input="help\nshow policy\nexit\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr
    assert "promote MODEL version N" in done.stdout
    assert "security: show policy" in done.stderr
    assert "t-chat" in done.stderr


def test_resume_reports_a_paused_thread(cli: CliRun, policy_file: Path) -> None:
    """`resume` on a thread awaiting approval leaves it paused and exits 4."""
    thread = json.loads(cli("ask", "show policy", "--json", policy=policy_file).stdout)["thread_id"]
    done = cli("resume", thread, "--json", policy=policy_file)
    assert done.returncode == 4
    assert json.loads(done.stdout)["pending_approval"]["requester"] == "alice"


def test_demo_runs_the_data_and_training_stages_and_the_governance_checks(cli: CliRun, workspace: Path) -> None:
    """`demo --json` exits 0; its report names the trained candidate and every governance check passed."""
    done = cli("demo", "--json", timeout=600)  # the whole lifecycle; minutes on a loaded CI machine
    assert done.stdout, done.stderr[-4000:]  # a crash prints no report; show why
    payload = json.loads(done.stdout)
    assert done.returncode == 0, payload["report"]["verification"]
    verification = payload["report"]["verification"]
    assert "FAIL" not in verification
    assert "candidates trained and logged (best gradient-boosting" in verification
    for step in (
        "first production deploy paused, bound to the evidence",
        "self-approval refused",
        "approval verified; version 1 serves all production traffic and is champion",
        "version 1 served 150 requests, analysis passed",
        "drift alert on age",
        "labels joined to their predictions; a bias alert reached ml-oncall's webhook with its runbook",
        "faulty canary rolled back automatically; version 1 kept serving",
        "servers stopped",
    ):
        assert f"pass: {step}" in verification
    leftover = subprocess.run(["pgrep", "-f", f"{workspace}/demo"], capture_output=True, text=True, check=False)
    assert leftover.stdout.strip() == ""  # no server or router of the demo is left running
    assert (workspace / "demo" / "mlflow.db").exists()
    where = payload["report"]["changes"]
    for place in ("mlflow.db", "mlartifacts", "datasets", "audit.jsonl", "serving/adult-income-classifier"):
        assert place in where
    assert list((workspace / "demo" / "reports" / "adult-income-classifier").glob("drift-*.png"))
    # who signed what: the requester's signed request and the demo approver's signed approval, with their keys
    signed = re.search(
        r"request signed by (\S+) \(key sha256:\w+…\), approval of champion .* signed by (\S+) \(key", verification
    )
    assert signed is not None and signed.groups() == (payload["requester"], "demo-approver"), verification
    assert (
        "demo-approver" in payload["report"]["design"]
        and "Signatures: request signed by" in payload["report"]["design"]
    )
    demo_keys = workspace / "demo-keys"
    assert oct((demo_keys / "demo-approver").stat().st_mode & 0o777) == "0o600"
    shared = [  # nothing the demo wrote is open to the group or to others
        f"{p.relative_to(workspace)} {oct(p.stat().st_mode & 0o777)}"
        for p in (workspace / "demo", *(workspace / "demo").rglob("*"))
        if not p.is_symlink() and p.stat().st_mode & 0o077
    ]
    assert shared == []
    assert f"--workspace {workspace / 'demo'} rollback adult-income-classifier" in payload["report"]["rollback"]
    # MLflow's registry prints these to stderr on each registration; the demo turns them off
    assert "already exists" not in done.stderr and "Created version" not in done.stderr, done.stderr[-2000:]


# --- redact: the redactor as a command, for people and pipelines ---------------------------------

REDACT_TEXT = "Reach Maria Garcia at maria.garcia@example.com; token sk-proj-CLIcanaryCLIcanaryCLIcanary42\n"
EMAIL, TOKEN = "maria.garcia@example.com", "sk-proj-CLIcanaryCLIcanaryCLIcanary42"
# What must not be printed: the name, the address and the token's random part (a vendor prefix may stay).
HIDDEN = ("Maria", "Garcia", EMAIL, "CLIcanaryCLIcanaryCLIcanary42")
ALLOWED_LINES = 'each line must be a JSON string or a JSON object with a string field "text"'


def _redact(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    from ._zygote import run_cli
    from .conftest import CLI

    return run_cli([CLI, "redact", *args], input=stdin)


def test_redact_prints_a_file_or_stdin_redacted(tmp_path: Path) -> None:
    """`redact FILE` and `redact -` print the text with <ENTITY> placeholders for the name, e-mail and token, the rest as it was."""
    path = tmp_path / "note.txt"
    path.write_text(REDACT_TEXT, "utf-8")
    from_file, from_stdin = _redact(str(path)), _redact("-", stdin=REDACT_TEXT)
    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout == from_stdin.stdout
    assert from_file.stdout.startswith("Reach <PERSON> at <EMAIL_ADDRESS>; token ") and from_file.stdout.endswith("\n")
    assert "<API_KEY>" in from_file.stdout and not [h for h in HIDDEN if h in from_file.stdout]


def test_redact_json_gives_each_span_found() -> None:
    """`redact --json` prints one object: status, the redacted text and spans whose offsets point at what was replaced."""
    done = _redact("--json", stdin=REDACT_TEXT)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert set(payload) == {"status", "spans", "redacted"} and payload["status"] == "done"
    spans = payload["spans"]
    assert all(set(s) == {"start", "end", "entity", "score"} and 0 < s["score"] <= 1 for s in spans)
    found = {s["entity"]: REDACT_TEXT[s["start"] : s["end"]] for s in spans}
    assert found["PERSON"] == "Maria Garcia" and found["EMAIL_ADDRESS"] == EMAIL
    assert found["API_KEY"] in TOKEN and found["API_KEY"].endswith("CLIcanaryCLIcanaryCLIcanary42")
    spliced, cursor = "", 0
    for span in sorted(spans, key=lambda s: s["start"]):
        spliced += REDACT_TEXT[cursor : span["start"]] + f"<{span['entity']}>"
        cursor = span["end"]
    assert payload["redacted"] == spliced + REDACT_TEXT[cursor:]


def test_redact_jsonl_runs_a_corpus_line_by_line() -> None:
    """`redact --jsonl` takes JSON strings or objects with "text", skips blank lines, and prints one object per document."""
    corpus = [json.dumps(f"key {TOKEN}"), json.dumps({"text": f"mail {EMAIL}", "id": 7}), "", json.dumps("clean")]
    done = _redact("--jsonl", stdin="\n".join(corpus) + "\n")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["line"] for r in records] == [1, 2, 4]
    assert [[s["entity"] for s in r["spans"]] for r in records] == [["API_KEY"], ["EMAIL_ADDRESS"], []]
    assert records[0]["redacted"].startswith("key ") and records[0]["redacted"].endswith("<API_KEY>")
    assert [r["redacted"] for r in records[1:]] == ["mail <EMAIL_ADDRESS>", "clean"]
    assert not [h for h in HIDDEN if h in done.stdout]


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("[1, 2]", "standard input line 2 is an array"),
        ('{"body": "x"}', "standard input line 2 is an object without a string field 'text'"),
        ("not json", "standard input line 2 is not JSON"),
    ],
)
def test_redact_jsonl_refuses_a_bad_line_before_printing_anything(line: str, why: str) -> None:
    """A line that is neither a JSON string nor an object with text: exit 2, one message naming it, nothing on stdout."""
    done = _redact("--jsonl", stdin=f"{json.dumps(TOKEN)}\n{line}\n{json.dumps('third')}\n")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(f"error: {why}") and ALLOWED_LINES in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_redact_refuses_a_missing_file_and_json_with_jsonl(tmp_path: Path) -> None:
    """A missing file and --json with --jsonl are usage errors (exit 2) that say what to give instead."""
    missing = _redact(str(tmp_path / "nope.txt"))
    assert (missing.returncode, missing.stdout) == (2, "")
    assert f"file {tmp_path / 'nope.txt'} does not exist; give a readable text file, or - for standard input" in (
        missing.stderr
    )
    both = _redact("--json", "--jsonl", stdin="x")
    assert (both.returncode, both.stdout) == (2, "")
    assert "--json and --jsonl cannot be combined" in both.stderr
