"""The policy in force: installed by signature, loosened only with an approver's signature, tightened per run only."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml

from mlops_supervisor import Supervisor
from mlops_supervisor.policies import PolicyFileError, UsageError
from mlops_supervisor.testing import KeyRing, install_policy
from tests.conftest import CliRun


def _write(path: Path, doc: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(doc), "utf-8")
    return path


@pytest.mark.parametrize(
    ("weaker", "named"),
    [
        ({"evaluation": {"thresholds": {"roc_auc": 0.5, "accuracy": 0.7}}}, "evaluation.thresholds.roc_auc"),
        ({"evaluation": {"thresholds": {}}}, "evaluation.thresholds"),
        ({"evaluation": {"fairness": {}}}, "evaluation.fairness"),
        ({"canary": {"min_requests": 1}}, "canary.min_requests"),
    ],
)
def test_a_run_policy_that_loosens_the_workspace_policy_is_refused_before_anything_runs(
    cli: CliRun, workspace: Path, tmp_path: Path, weaker: dict[str, object], named: str
) -> None:
    """--policy with lower thresholds, no fairness limits or a smaller canary: exit 2 naming the field, nothing written."""
    policy = _write(tmp_path / "weak.yaml", weaker)
    done = cli("ask", "show policy", "--json", policy=policy)
    assert done.returncode == 2, done.stdout + done.stderr
    assert named in done.stderr and "loosen" in done.stderr
    assert not workspace.exists()


def test_a_run_policy_that_only_tightens_is_used(workspace: Path, tmp_path: Path) -> None:
    stricter = _write(tmp_path / "strict.yaml", {"evaluation": {"thresholds": {"roc_auc": 0.8, "accuracy": 0.75}}})
    with Supervisor(workspace, policy=stricter) as sup:
        assert sup.policy.evaluation.thresholds == {"roc_auc": 0.8, "accuracy": 0.75}


def test_a_run_policy_cannot_add_an_approver(workspace: Path, tmp_path: Path, keys: KeyRing) -> None:
    """A requester naming a second key of their own as approver in --policy is refused."""
    policy = _write(tmp_path / "mine.yaml", keys.policy(approvers=["alice-too"]))
    with pytest.raises(PolicyFileError, match=r"approvers|people"):
        Supervisor(workspace, user="alice", policy=policy)


def test_a_hand_edited_workspace_policy_stops_everything(workspace: Path, keys: KeyRing) -> None:
    install_policy(workspace, keys.policy(approvers=["carol"], people=["alice"]), admin="carol", keys=keys)
    with Supervisor(workspace, user="alice") as sup:
        assert sup.policy.approvers == ("carol",)
    doc = yaml.safe_load((workspace / "policy.yaml").read_text("utf-8"))
    doc["evaluation"] = {"thresholds": {}}
    _write(workspace / "policy.yaml", doc)
    with pytest.raises(PolicyFileError, match="edited by hand"):
        Supervisor(workspace, user="alice")
    (workspace / "policy.yaml").unlink()
    with pytest.raises(PolicyFileError, match="missing"):
        Supervisor(workspace, user="alice")


def test_a_policy_file_dropped_into_a_workspace_is_not_in_force(workspace: Path, keys: KeyRing) -> None:
    workspace.mkdir()
    _write(workspace / "policy.yaml", keys.policy(approvers=["alice-too"], people=["alice"]))
    with pytest.raises(PolicyFileError, match="not installed"):
        Supervisor(workspace, user="alice")


def test_loosening_the_workspace_policy_needs_another_approvers_signature(
    cli: CliRun, workspace: Path, tmp_path: Path, keys: KeyRing
) -> None:
    """Tightening installs on a listed person's signature; loosening waits for an approver other than the proposer."""
    base = keys.policy(approvers=["carol"], people=["alice"])
    first = cli("policy", "apply", str(_write(tmp_path / "p0.yaml", base)), "--json", user="carol")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["status"] == "installed"

    tighter = {**base, "evaluation": {"max_age_hours": 24}}
    done = cli("policy", "apply", str(_write(tmp_path / "p1.yaml", tighter)), "--json", user="alice")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["widenings"] == []

    looser = {**base, "approval": {"required_for": ["promote_model"]}}
    proposed = cli("policy", "apply", str(_write(tmp_path / "p2.yaml", looser)), "--json", user="alice")
    assert proposed.returncode == 4, proposed.stderr
    proposal = json.loads(proposed.stdout)
    assert proposal["status"] == "proposed"
    assert any("approval.required_for" in w for w in proposal["widenings"])
    with Supervisor(workspace, user="alice") as sup:  # still the tighter policy
        assert sup.policy.evaluation.max_age_hours == 24
        assert "remove_alias" in sup.policy.approval.required_for
        with pytest.raises(UsageError, match="not an approver"):
            sup.approve_policy(proposal["digest"][:12])

    approved = cli("policy", "approve", proposal["digest"][:12], "--json", user="carol")
    assert approved.returncode == 0, approved.stderr
    assert json.loads(approved.stdout)["approver"] == "carol"
    shown = json.loads(cli("policy", "show", "--json").stdout)
    assert shown["sha256"] == proposal["digest"]
    events = [json.loads(line)["event"] for line in (workspace / "audit.jsonl").read_text().splitlines()]
    assert events.count("policy_installed") == 3 and events.count("policy_proposed") == 1


def test_the_proposer_cannot_approve_their_own_loosening(workspace: Path, tmp_path: Path, keys: KeyRing) -> None:
    base = keys.policy(approvers=["carol", "dave"], people=["alice"])
    install_policy(workspace, base, admin="carol", keys=keys)
    looser = _write(tmp_path / "looser.yaml", {**base, "evaluation": {"max_age_hours": 500}})
    with Supervisor(workspace, user="carol") as sup:
        proposal = sup.apply_policy(looser)
        assert proposal["status"] == "proposed"
        with pytest.raises(UsageError, match="own change"):
            sup.approve_policy(proposal["digest"])
    with Supervisor(workspace, user="dave") as sup:
        assert sup.approve_policy(proposal["digest"])["status"] == "installed"
    with Supervisor(workspace) as sup:
        assert sup.policy.evaluation.max_age_hours == 500


def test_keys_init_writes_a_private_key_for_the_user_alone(cli: CliRun, key_dir: Path, workspace: Path) -> None:
    made = cli("keys", "init", "bob", "--json")
    assert made.returncode == 0, made.stderr
    answer = json.loads(made.stdout)
    path = Path(answer["private_key"])
    assert path.parent == key_dir and not path.is_relative_to(workspace)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert answer["public_key"].startswith("ssh-ed25519 ")
    again = cli("keys", "init", "bob")
    assert again.returncode == 2 and "never overwritten" in again.stderr
