"""How CI's two xdist workers share the suite: ``pytest -n 2 --dist loadscope --no-loadscope-reorder``.

xdist's ``loadfile`` sends whole files, those with the most tests first. Here two things differ:

- The files in ``SPLIT`` are dealt out test by test: their tests share no fixture wider than a test,
  and together they are long (the CLI's and the chat's, each test a few processes), so they spread
  over both workers. Every other file still runs whole on one worker, in file order, as ``loadfile``
  runs it: its module- or session-scoped state (a trained model, a deployment, a server) is built once.
  (``--dist loadgroup`` with ``xdist_group`` marks would say the same, but pytest 9.2 broke it: see
  pytest-xdist#1386.)
- The units go out longest first (the longest-processing-time rule), so no worker starts a
  two-minute unit while the other is nearly done: that was the suite's tail. ``COST`` holds the
  CPU seconds of each long unit (a whole file, or a test of a split file), measured with ``-n 0``
  as user+sys of pytest and its children (CPU time, unlike wall time, barely moves on a busy
  machine); it orders units only, so a stale number costs balance, never a result. Units of equal
  cost keep their collection order.

A file may join ``SPLIT`` only while no test of it uses a module-, class- or session-scoped
fixture: split, such a fixture would be built once on each worker.

Outside xdist (``-n 0``, a plain ``pytest``) nothing here changes anything; with ``-n`` but another
``--dist``, only the order of the tests changes.
"""

from __future__ import annotations

from typing import Any

import pytest

SPLIT = frozenset(
    {
        "tests/policies/test_audit.py",
        "tests/test_chat.py",
        "tests/test_cli.py",
        "tests/test_evals_report.py",
        "tests/test_monitoring.py",
        "tests/test_notebook.py",
        "tests/test_requirements.py",
        "tests/tools/test_alert_rules.py",
        "tests/tools/test_core.py",
        "tests/tools/test_training.py",
    }
)

# A file not listed may be long (a new one, say): it goes out before the short files listed, since a
# long unit started early costs nothing and one started last is the tail. A split test not listed
# is short.
DEFAULT_FILE_COST = 10.0
DEFAULT_TEST_COST = 1.0

COST: dict[str, float] = {
    # tests of split files
    "tests/test_cli.py::test_demo_runs_the_data_and_training_stages_and_the_governance_checks": 89,
    "tests/test_monitoring.py::test_shifted_outcomes_reach_the_owner_once_as_a_bias_and_a_quality_alert": 69,
    "tests/test_notebook.py::test_quickstart_notebook_runs_headless": 54,
    "tests/test_requirements.py::test_a_complete_request_writes_its_spec_runs_and_restates_the_objective": 44,
    "tests/test_chat.py::test_a_lifecycle_asked_streamed_approved_inline_and_resumed": 32,
    "tests/test_cli.py::test_approval_across_processes": 22,
    "tests/test_requirements.py::test_run_to_train_needs_no_serving_while_run_to_deploy_lists_it": 21,
    "tests/test_chat.py::test_an_openai_model_streams_its_answer": 13,
    "tests/test_cli.py::test_status_lists_threads": 13,
    "tests/test_requirements.py::test_ask_exits_2_listing_the_missing_approvers_and_records_nothing": 13,
    "tests/tools/test_core.py::test_a_model_that_declares_a_foreign_type_trusted_is_not_loaded": 10,
    "tests/tools/test_core.py::test_pickled_models_are_refused_and_plain_skops_models_load": 10,
    "tests/test_evals_report.py::test_eval_against_a_baseline_exits_1_when_a_scenario_got_worse": 9,
    "tests/test_cli.py::test_reject_is_recorded_and_refuses": 9,
    "tests/test_cli.py::test_resume_reports_a_paused_thread": 9,
    "tests/test_chat.py::test_missing_inputs_are_asked_one_at_a_time": 8,
    "tests/test_monitoring.py::test_monitor_on_a_schedule_stops_cleanly_on_sigterm": 8,
    "tests/tools/test_alert_rules.py::test_cli_refuses_a_bad_spec_or_out_and_writes_nothing": 8,
    "tests/tools/test_training.py::test_a_failure_ends_every_open_run_failed_with_the_redacted_reason": 8,
    "tests/test_chat.py::test_help_history_ctrl_c_and_errors": 6,
    "tests/test_cli.py::test_ask_help_lists_the_grammar": 5,
    "tests/test_cli.py::test_redact_prints_a_file_or_stdin_redacted": 5,
    "tests/tools/test_alert_rules.py::test_cli_writes_the_three_files": 5,
    "tests/test_cli.py::test_the_workspace_is_the_users_alone": 5,
    "tests/test_cli.py::test_ask_json_contract": 4,
    "tests/test_requirements.py::test_a_spec_under_a_policy_without_approvers_lacks_only_the_approvers": 3,
    "tests/tools/test_core.py::test_aliased_version_is_none_until_the_alias_is_set": 3,
    "tests/tools/test_training.py::test_experimentation_tools_are_bound_to_their_context": 3,
    # whole files
    "tests/test_pipeline.py": 219,
    "tests/test_shared_state.py": 80,
    "tests/test_kubernetes_flow.py": 65,
    "tests/test_mlflow_server.py": 60,
    "tests/policies/test_audit_postgres.py": 20,
    "tests/tools/test_kubernetes.py": 15,
    "tests/tools/test_prometheus_metrics.py": 12,
    "tests/tools/test_serving_backends.py": 10,
    "tests/test_deploy_cli.py": 10,
    "tests/tools/test_serving.py": 123,
    "tests/test_promotion.py": 74,
    "tests/test_evals_runner.py": 60,
    "tests/tools/test_traffic_gates.py": 60,
    "tests/tools/test_feedback.py": 46,
    "tests/test_chokepoint.py": 38,
    "tests/test_canaries.py": 36,
    "tests/test_tracing.py": 23,
    "tests/tools/test_floors_evidence.py": 17,
    "tests/test_evals_guarantees.py": 17,
    "tests/tools/test_quality.py": 13,
    "tests/test_policy_store.py": 30,
    "tests/tools/test_alerting.py": 11,
    "tests/policies/test_presidio_redactor.py": 9,
    "tests/test_injection.py": 8,
    "tests/tools/test_data.py": 6,
    "tests/tools/test_evaluation.py": 6,
    "tests/tools/test_serving_units.py": 5,
    "tests/test_llm.py": 5,
    "tests/test_graph.py": 5,
    "tests/policies/test_injection_guard.py": 4,
    "tests/policies/test_egress.py": 2,
    "tests/tools/test_spec.py": 2,
    "tests/test_packaging.py": 2,
    "tests/tools/test_router.py": 2,
    "tests/tools/test_security.py": 2,
    "tests/policies/test_engine.py": 1,
    "tests/tools/test_drift.py": 0.5,
    "tests/tools/test_model_lock.py": 0.5,
    "tests/tools/test_plots.py": 0.2,
    "tests/policies/test_floors.py": 0.3,
    "tests/policies/test_gates.py": 0.2,
    "tests/policies/test_policy.py": 0.4,
    "tests/policies/test_redaction.py": 0.1,
    "tests/test_demo.py": 0.1,
    "tests/test_fixtures.py": 0.1,
}


def unit_of(nodeid: str) -> str:
    """The unit of work ``nodeid`` goes out in: its file, or itself when its file is in ``SPLIT``."""
    path = nodeid.split("::", 1)[0]
    return nodeid if path in SPLIT else path


def cost_of(unit: str) -> float:
    """``unit``'s measured seconds (a parametrized test's cases share their function's number)."""
    default = DEFAULT_TEST_COST if "::" in unit else DEFAULT_FILE_COST
    return COST.get(unit, COST.get(unit.split("[", 1)[0], default))


@pytest.hookimpl(trylast=True)  # after pytest's own reordering for shared fixtures, which would undo this
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker, order the tests by unit, longest unit first; within a unit, as collected.

    Every worker collects the same tests and sorts them the same way, as xdist requires.
    """
    if not hasattr(config, "workerinput"):
        return
    first_seen: dict[str, int] = {}
    for item in items:
        first_seen.setdefault(unit_of(item.nodeid), len(first_seen))

    def key(item: pytest.Item) -> tuple[float, int]:
        unit = unit_of(item.nodeid)
        return -cost_of(unit), first_seen[unit]

    items.sort(key=key)


@pytest.hookimpl(optionalhook=True)  # a hook of xdist's: without xdist, never called
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With ``--dist loadscope``: xdist's scope scheduling with ``unit_of``'s units instead of modules."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class CostFirstScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    return CostFirstScheduling(config, log)
