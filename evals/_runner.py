"""Running scenarios: each trial in its own copy of a seed, with its own keys and policy, through the real supervisor.

A trial copies its seed (``_seeds.py``), gives every person it names an Ed25519 key outside the
workspace, installs the scenario's policy signed, restarts the seed's servers as its own, plants
the canaries, then plays the turns through ``Supervisor`` (a CLI turn: the installed command in a
subprocess), checking each turn's ``expect`` on the lines and state that turn left and the
scenario's ``expect`` on everything (``_expect.py``). Whatever it started serving is stopped
before its folder is removed.

``run_eval`` runs every trial of every scenario, in this process (``workers=1``) or in a pool of
processes; the seeds are built here, in the parent, each once and before any trial that needs it.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from mlops_supervisor.evals._expect import Mismatch, Observed, check_expect, json_bytes
from mlops_supervisor.evals._format import Scenario, Turn, builtin_scenarios, load_scenarios
from mlops_supervisor.evals._seeds import MODEL, PLANTS, SEEDS, Seed, SeedBank, TrialFolder, install_trial_policy
from mlops_supervisor.policies import (
    GateRefusedError,
    MlopsSupervisorError,
    RunError,
    UsageError,
)
from mlops_supervisor.tools import ProgressFactory, no_progress

__all__ = ["EvalReport", "Mismatch", "ScenarioError", "ScenarioResult", "TrialResult", "run_eval", "run_trial"]


class TrialResult(BaseModel):
    """One trial of one scenario: whether every expectation held, and each one that did not."""

    scenario: str
    trial: int
    passed: bool
    mismatches: list[Mismatch] = Field(default_factory=list)
    duration_s: float
    thread_ids: list[str] = Field(default_factory=list)
    error: str = ""
    """Set when the trial could not be played to its end (a broken scenario or a crash): the trial failed."""


class ScenarioResult(BaseModel):
    """Every trial of one scenario."""

    id: str
    severity: str
    tags: list[str]
    guarantee: str
    trials: list[TrialResult]

    @property
    def passes(self) -> int:
        """How many trials passed."""
        return sum(t.passed for t in self.trials)

    @property
    def n(self) -> int:
        """How many trials ran."""
        return len(self.trials)


class EvalReport(BaseModel):
    """The results of an eval run, with pass@k and pass^k over its scenarios."""

    results: list[ScenarioResult]
    model: str
    trials: int
    workers: int
    wall_s: float
    k: int
    seed_build_s: dict[str, float] = Field(default_factory=dict)
    """Seconds each seed took to build in this run (each on top of the one before it)."""

    def pass_at_k(self, k: int | None = None) -> float:
        """pass@k: the mean over scenarios of 1 - C(n-c, k) / C(n, k): some of k trials drawn passed."""
        k = self._k(k)
        return sum(1 - math.comb(r.n - r.passes, k) / math.comb(r.n, k) for r in self.results) / len(self.results)

    def pass_hat_k(self, k: int | None = None) -> float:
        """pass^k: the mean over scenarios of C(c, k) / C(n, k): all of k trials drawn passed."""
        from mlops_supervisor.evals._report import pass_hat_k  # the one computation; the reports use it too

        return pass_hat_k(self.results, self._k(k))

    def _k(self, k: int | None) -> int:
        k = self.k if k is None else k
        if k < 1:
            raise UsageError(f"k must be at least 1, got {k}")
        if not self.results:
            raise UsageError("pass@k and pass^k need at least one scenario; none were run")
        short = [f"{r.id} ({r.n} trials)" for r in self.results if r.n < k]
        if short:
            raise UsageError(f"k={k} needs at least {k} trials of each scenario; too few: {', '.join(short)}")
        return k

    @property
    def blockers_failed(self) -> list[str]:
        """The blocker scenarios that failed in any trial."""
        return [r.id for r in self.results if r.severity == "blocker" and r.passes < r.n]

    @property
    def exit_code(self) -> int:
        """1 when a blocker failed in any trial, else 0."""
        return 1 if self.blockers_failed else 0


# --- one trial ------------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\$\{([a-z_]+)\}")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_CLI = Path(sys.executable).parent / "mlops-supervisor"


class ScenarioError(RunError):
    """The scenario cannot be played as written (an approve before any ask, a kill of nothing)."""


class _Outcome:
    """What one turn produced."""

    def __init__(self, status: str, answer: str, shown: Any = None) -> None:
        self.status = status
        self.answer = answer
        self.shown = shown if shown is not None else answer


def _offset(at: str | None) -> timedelta:
    if at is None:
        return timedelta()
    sign = -1 if at[0] == "-" else 1
    return sign * timedelta(**{_UNITS[at[-1]]: float(at[1:-1])})


def _report_text(result: Any) -> str:
    report = result.report
    return "\n\n".join(str(getattr(report, name)) for name in type(report).model_fields)


class _Trial:
    """One trial's folder, keys, model and turns."""

    def __init__(self, scenario: Scenario, folder: TrialFolder, model: str | None) -> None:
        from mlops_supervisor.testing import KeyRing

        self.scenario = scenario
        self.folder = folder
        self.keys = KeyRing(folder.root / "keys")
        self.default_actor = scenario.fixtures.people[0] if scenario.fixtures.people else "alice"
        self.thread: str | None = None
        self.thread_ids: list[str] = []
        self.providers: dict[str, Any] = {}
        self.texts: list[tuple[str, bytes]] = []
        self.planted: set[str] = set()
        self.model_spec = self._model_spec(model)

    @property
    def ws(self) -> Path:
        return self.folder.workspace

    # --- set-up ---

    def set_up(self) -> None:
        fixtures = self.scenario.fixtures
        for name in self.scenario.people_named:
            self.keys.public(name)
        if fixtures.people:
            document = {
                **fixtures.policy,
                **self.keys.policy(approvers=fixtures.approvers, people=fixtures.people),
            }
            admin = fixtures.approvers[0] if fixtures.approvers else fixtures.people[0]
            install_trial_policy(self.folder, document, admin=admin, keys=self.keys)
        if fixtures.serving and (self.ws / "serving").exists():
            from mlops_supervisor.evals._seeds import restore_serving

            restore_serving(self.ws)
        if fixtures.canaries:
            self.planted = {"request", "data"}
            if self._plant_description():
                self.planted.add("model_description")

    def _plant_description(self) -> bool:
        if not (self.ws / "mlflow.db").exists():
            return False
        from mlflow.exceptions import MlflowException

        from mlops_supervisor.evals._expect import _client
        from mlops_supervisor.tools.core import using_store

        client = _client(self.ws)
        with using_store(client.tracking_uri):
            try:
                client.update_registered_model(MODEL, description=PLANTS["model_description"].text())
            except MlflowException:
                return False
        return True

    def _model_spec(self, override: str | None) -> str:
        scenario = self.scenario
        if scenario.model in ("scripted", "adversary"):
            script = scenario.script if scenario.model == "scripted" else self._adversary_script()
            path = self.folder.root / "script.yaml"
            path.write_text(yaml.safe_dump(self._filled(script)), "utf-8")
            return f"scripted:{path}"
        if override:
            return override
        return scenario.model

    def _adversary_script(self) -> dict[str, list[dict[str, Any]]]:
        context = {
            **self.folder.seed.context(),
            "spec": str(self.folder.spec),
            **({"canary_secret": PLANTS["request"].openai_key} if self.scenario.fixtures.canaries else {}),
        }
        attacks = list(self.scenario.adversary or [])
        try:
            from mlops_supervisor.evals import _adversary
        except ImportError:
            _adversary = None  # type: ignore[assignment]
        if _adversary is not None and hasattr(_adversary, "script"):
            script: dict[str, list[dict[str, Any]]] = _adversary.script(attacks, context)
            return script
        from mlops_supervisor.agents import SPECIALISTS
        from mlops_supervisor.testing import adversarial_allow_list_script

        return adversarial_allow_list_script({name: spec.tools for name, spec in SPECIALISTS.items()})

    # --- placeholders ---

    def _value(self, name: str) -> str:
        values = {
            "spec": str(self.folder.spec),
            "data": str(self.folder.data),
            "inputs": str(self.folder.inputs),
            "workspace": str(self.ws),
            "model": MODEL,
            "canary": PLANTS["request"].text(),
            "canary_secret": PLANTS["request"].openai_key,
        }
        if name == "thread":
            if self.thread is None:
                raise ScenarioError("${thread} is used before any ask started a thread")
            return self.thread
        return values[name]

    def _filled(self, value: Any) -> Any:
        if isinstance(value, str):
            return _PLACEHOLDER.sub(lambda m: self._value(m.group(1)), value)
        if isinstance(value, dict):
            return {k: self._filled(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._filled(v) for v in value]
        return value

    # --- turns ---

    @contextmanager
    def supervisor(self, user: str, *, at: str | None = None) -> Iterator[Any]:
        """A ``Supervisor`` acting as ``user`` (their key), its clock ``at`` off, sharing the model across turns."""
        from mlops_supervisor._api import Supervisor

        shift = _offset(at)
        clock = (lambda: datetime.now(UTC) + shift) if at else None
        key = self.keys.path(user)
        sup = Supervisor(self.ws, model=self.model_spec, user=user, key=key if key.exists() else None, clock=clock)
        # One scripted model across turns: an approval resumes the script where the ask left it.
        sup._providers.update(self.providers)
        try:
            yield sup
        finally:
            self.providers.update(sup._providers)
            sup.close()

    def _need_thread(self, action: str) -> str:
        if self.thread is None:
            raise ScenarioError(f"{action} needs an earlier ask to start a thread")
        return self.thread

    def play(self, turn: Turn) -> _Outcome:
        actor = turn.actor(self.default_actor)
        action = turn.action
        if action == "tamper":
            return self._tamper(turn)
        if action == "cli":
            return self._cli(turn, actor)
        self.ws.mkdir(parents=True, exist_ok=True)
        try:
            with self.supervisor(actor, at=self._at(turn)) as sup:
                return self._governed(sup, turn, actor)
        except GateRefusedError as exc:
            return _Outcome("refused", f"Refused: {exc}", {"refused": str(exc)})
        except UsageError as exc:
            return _Outcome("invalid_input", str(exc), {"invalid_input": str(exc)})
        except ScenarioError:
            raise
        except MlopsSupervisorError as exc:
            return _Outcome("failed", str(exc), {"failed": str(exc)})

    @staticmethod
    def _at(turn: Turn) -> str | None:
        answer = turn.approve or turn.reject
        return answer.at if answer is not None else None

    def _governed(self, sup: Any, turn: Turn, actor: str) -> _Outcome:
        if turn.ask is not None:
            result = sup.ask(self._filled(turn.ask))
        elif turn.approve is not None or turn.reject is not None:
            thread = self._need_thread(turn.action)
            answer = turn.approve or turn.reject
            assert answer is not None
            key = self.keys.path(answer.key_of or actor)
            if turn.approve is not None:
                result = sup.approve(thread, reason=answer.reason, approver=actor, key=key)
            else:
                result = sup.reject(thread, reason=answer.reason, approver=actor, key=key)
        elif turn.resume is not None:
            result = sup.resume(self._need_thread("resume"))
        else:
            assert turn.call is not None
            output = sup.call(turn.call.tool, **self._filled(turn.call.args))
            text = output if isinstance(output, str) else json.dumps(output, default=str)
            return _Outcome("done", text, {"output": output})
        self.thread = result.thread_id
        if result.thread_id not in self.thread_ids:
            self.thread_ids.append(result.thread_id)
        return _Outcome(result.status, _report_text(result), result.model_dump(mode="json"))

    def _cli(self, turn: Turn, actor: str) -> _Outcome:
        from mlops_supervisor._results import EXIT_CODES

        assert turn.cli is not None
        command = [str(_CLI), "--workspace", str(self.ws), "--as", actor, *self._filled(turn.cli)]
        env = {k: v for k, v in os.environ.items() if k not in {"MLOPS_KEY", "MLOPS_WORKSPACE", "MLOPS_POLICY"}}
        env |= {"MLOPS_KEY_DIR": str(self.keys.directory), "MLOPS_MODEL": self.model_spec, "COLUMNS": "200"}
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, env=env)
        statuses = {code: status for status, code in EXIT_CODES.items()}
        status = statuses.get(done.returncode, "failed")
        try:
            payload = json.loads(done.stdout)
        except ValueError:
            payload = None
        if isinstance(payload, dict) and isinstance(payload.get("thread_id"), str):
            self.thread = payload["thread_id"]
            if self.thread not in self.thread_ids:
                self.thread_ids.append(self.thread)
        output = done.stdout + done.stderr
        return _Outcome(status, output, {"exit_code": done.returncode, "stdout": done.stdout, "stderr": done.stderr})

    def _tamper(self, turn: Turn) -> _Outcome:
        tamper = turn.tamper
        assert tamper is not None
        if tamper.set_tag is not None:
            from mlops_supervisor.evals._expect import _client
            from mlops_supervisor.tools.core import using_store

            tag = tamper.set_tag
            client = _client(self.ws)
            with using_store(client.tracking_uri):
                client.set_model_version_tag(tag.model, str(tag.version), tag.key, self._filled(tag.value))
            return _Outcome("done", f"set {tag.key} on {tag.model} version {tag.version}")
        if tamper.append_audit is not None:
            from mlops_supervisor.policies import AuditLog

            audit = AuditLog(self.ws / "audit.jsonl")
            try:
                line = audit.append(tamper.append_audit.event, **self._filled(tamper.append_audit.fields))
            finally:
                audit.close()
            return _Outcome("done", f"appended a {tamper.append_audit.event} line (seq {line.get('seq')})")
        if tamper.kill is not None:
            return self._kill(tamper.kill.model, tamper.kill.version)
        assert tamper.write_file is not None
        spec = tamper.write_file
        first, *rest = Path(spec.path).parts
        target = (self.ws if first == "workspace" else self.folder.inputs).joinpath(*rest)
        target.parent.mkdir(parents=True, exist_ok=True)
        body = self._filled(spec.text) if spec.text is not None else yaml.safe_dump(self._filled(spec.data))
        target.write_text(body, "utf-8")
        return _Outcome("done", f"wrote {spec.path}")

    def _kill(self, model: str, version: int | None) -> _Outcome:
        from mlops_supervisor.tools.serving import LocalBackend
        from mlops_supervisor.tools.serving._processes import alive

        status = LocalBackend.for_workspace(self.ws).status(model)
        record = status["router"] if version is None else status["versions"].get(version)
        what = f"{model}'s router" if version is None else f"{model} version {version}"
        if not record or not record.get("alive"):
            raise ScenarioError(f"tamper kill: {what} is not running (running: {sorted(status['versions'])})")
        os.kill(int(record["pid"]), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while alive(int(record["pid"])) and time.monotonic() < deadline:
            time.sleep(0.05)
        return _Outcome("done", f"killed {what} (pid {record['pid']})")

    # --- observing ---

    def audit_lines(self) -> list[dict[str, Any]]:
        path = self.ws / "audit.jsonl"
        if not path.exists():
            return []
        lines = []
        for text in path.read_text("utf-8").splitlines():
            try:
                lines.append(json.loads(text))
            except ValueError:
                lines.append({"event": "unreadable", "text": text})
        return lines

    def model_messages(self) -> bytes:
        """Every message text a scripted model received in this trial."""
        texts = []
        for provider in self.providers.values():
            for model in getattr(provider, "_per_node", {}).values():
                for call in getattr(model, "calls", []):
                    texts += [str(message.content) for message in call]
        return "\n".join(texts).encode()

    def observed(self, records: list[dict[str, Any]], outcome: _Outcome | None) -> Observed:
        return Observed(
            workspace=self.ws,
            records=records,
            status=outcome.status if outcome is not None else None,
            answer=outcome.answer if outcome is not None else "",
            texts=[*self.texts, ("messages models received", self.model_messages())],
            canaries=[c for where in sorted(self.planted) for c in PLANTS[where].canaries],
            planted_in_store=frozenset(self.planted & {"model_description"}),
        )

    def stop(self) -> None:
        """Stop every server this trial started (ungoverned: a scenario's policy cannot keep them running)."""
        from mlops_supervisor.tools.serving import LocalBackend

        if (self.ws / "serving").exists():
            LocalBackend.for_workspace(self.ws).down()


def run_trial(
    scenario: Scenario,
    trial: int = 1,
    *,
    model: str | None = None,
    bank: SeedBank | None = None,
    keep: bool = False,
) -> TrialResult:
    """Play one trial of ``scenario`` in a fresh copy of its seed and check it; never raises for a failed check.

    ``bank`` holds the built seeds (a temporary one, built now, when not given); ``model`` overrides a
    scenario whose model is offline or live. ``keep`` leaves the trial's folder for a look afterwards.
    """
    if bank is None:
        with tempfile.TemporaryDirectory(prefix="mlops-eval-") as tmp, SeedBank(Path(tmp) / "seeds") as own:
            return run_trial(scenario, trial, model=model, bank=own, keep=False)
    started = time.perf_counter()
    root = bank.root.parent / "trials" / f"{scenario.id}-{trial}-{uuid.uuid4().hex[:6]}"
    mismatches: list[Mismatch] = []
    error = ""
    state: _Trial | None = None
    try:
        folder = bank.materialize(scenario.fixtures.seed, root, canaries=scenario.fixtures.canaries)
        state = _Trial(scenario, folder, model)
        state.set_up()
        start = len(state.audit_lines())
        outcome: _Outcome | None = None
        for number, turn in enumerate(scenario.turns, start=1):
            before = len(state.audit_lines())
            outcome = state.play(turn)
            state.texts.append((f"turn {number} answer", json_bytes(outcome.shown)))
            if turn.expect is not None:
                window = state.audit_lines()[before:]
                mismatches += check_expect(turn.expect, state.observed(window, outcome), f"turn {number} ")
        mismatches += check_expect(scenario.expect, state.observed(state.audit_lines()[start:], outcome))
    except Exception as exc:  # noqa: BLE001 - a crash fails the trial with its cause, the run goes on
        error = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, MlopsSupervisorError):
            error += "\n" + "".join(traceback.format_exception(exc)[-6:])
    finally:
        if state is not None:
            try:
                state.stop()
            except Exception as exc:  # noqa: BLE001 - reported; the folder still goes
                error = error or f"could not stop the trial's servers: {exc}"
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return TrialResult(
        scenario=scenario.id,
        trial=trial,
        passed=not mismatches and not error,
        mismatches=mismatches,
        duration_s=round(time.perf_counter() - started, 3),
        thread_ids=state.thread_ids if state is not None else [],
        error=error,
    )


def _pool_trial(
    scenario: Scenario, trial: int, model: str | None, bank_root: str, seeds: dict[str, Seed]
) -> dict[str, Any]:
    """A worker process's trial, on the parent's seeds (a worker never builds one)."""
    bank = SeedBank(Path(bank_root), seeds=seeds)
    return run_trial(scenario, trial, model=model, bank=bank).model_dump(mode="json")


# --- a run ----------------------------------------------------------------------------------------


def run_eval(
    paths: list[Path] | None,
    *,
    model: str | None,
    trials: int = 1,
    workers: int = 1,
    tags: list[str] | None = None,
    progress: ProgressFactory | None = None,
) -> EvalReport:
    """Run ``trials`` trials of each scenario of ``paths`` (default: the built-in suite), ``workers`` at a time.

    ``tags`` keeps the scenarios with one of them. Seeds are built here, each once, in lifecycle
    order; with ``workers`` > 1 the trials run in a pool of processes, those of a seed submitted as
    soon as it is built. Results come in scenario order whatever order the trials finished in.
    """
    if trials < 1:
        raise UsageError(f"--trials must be at least 1, got {trials}")
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    scenarios = load_scenarios([Path(p) for p in paths]) if paths else builtin_scenarios()
    if tags:
        scenarios = [s for s in scenarios if set(s.tags) & set(tags)]
    started = time.perf_counter()
    outcomes: dict[tuple[str, int], TrialResult] = {}
    jobs = [(s, t) for s in scenarios for t in range(1, trials + 1)]
    by_seed = {seed: [(s, t) for s, t in jobs if s.fixtures.seed == seed] for seed in SEEDS}
    from mlops_supervisor._stores import embedded_stores

    with (
        embedded_stores(),  # each trial is a sandbox in its own workspace, never a shared deployment's database
        tempfile.TemporaryDirectory(prefix="mlops-eval-") as tmp,
        SeedBank(Path(tmp) / "seeds") as bank,
        (progress or no_progress)("eval scenarios", len(jobs)) as advance,
    ):

        def record(result: TrialResult) -> None:
            outcomes[(result.scenario, result.trial)] = result
            advance(f"{result.scenario} trial {result.trial}: {'passed' if result.passed else 'FAILED'}")

        if workers == 1:
            for seed in SEEDS:
                if by_seed[seed]:
                    bank.get(seed)
                for scenario, trial in by_seed[seed]:
                    record(run_trial(scenario, trial, model=model, bank=bank))
        else:
            _run_pooled(by_seed, bank, model, workers, record)
    results = [
        ScenarioResult(
            id=s.id,
            severity=s.severity,
            tags=list(s.tags),
            guarantee=s.guarantee,
            trials=[outcomes[(s.id, t)] for t in range(1, trials + 1)],
        )
        for s in scenarios
    ]
    return EvalReport(
        results=results,
        model=model or "per scenario",
        trials=trials,
        workers=workers,
        wall_s=round(time.perf_counter() - started, 2),
        k=trials,
        seed_build_s=bank.build_times,
    )


def _run_pooled(
    by_seed: dict[str, list[tuple[Scenario, int]]],
    bank: SeedBank,
    model: str | None,
    workers: int,
    record: Callable[[TrialResult], None],
) -> None:
    """The trials in ``workers`` spawned processes; each seed built here before its trials are submitted."""
    futures: list[Future[dict[str, Any]]] = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for seed in SEEDS:
            if not by_seed[seed]:
                continue
            bank.get(seed)
            futures += [
                pool.submit(_pool_trial, s, t, model, str(bank.root), dict(bank.seeds)) for s, t in by_seed[seed]
            ]
            _collect(futures, record, block=False)
        _collect(futures, record, block=True)


def _collect(futures: list[Future[dict[str, Any]]], record: Callable[[TrialResult], None], *, block: bool) -> None:
    for future in list(futures):
        if block or future.done():
            record(TrialResult.model_validate(future.result()))
            futures.remove(future)
