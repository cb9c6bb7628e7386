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
  seconds each long unit (a whole file, or a test of a split file) held a worker in a two-worker
  run: setup, call and teardown, waits included. It orders units only, so a stale number costs
  balance, never a result. Units of equal cost keep their collection order. To measure again::

      .venv/bin/pytest -q -n 2 --dist loadscope --no-loadscope-reorder --durations=0 > durations.txt
      .venv/bin/python -m tests._schedule durations.txt   # prints the table to paste below

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
    "tests/test_cli.py::test_demo_runs_the_data_and_training_stages_and_the_governance_checks": 109,
    "tests/test_notebook.py::test_quickstart_notebook_runs_headless": 49,
    "tests/test_monitoring.py::test_shifted_outcomes_reach_the_owner_once_as_a_bias_and_a_quality_alert": 39,
    "tests/test_chat.py::test_a_lifecycle_asked_streamed_approved_inline_and_resumed": 29,
    "tests/test_requirements.py::test_a_complete_request_writes_its_spec_runs_and_restates_the_objective": 14,
    "tests/tools/test_core.py::test_pickled_models_are_refused_and_plain_skops_models_load": 9,
    "tests/test_evals_report.py::test_plugin_collects_eval_files_and_reports_mismatches": 8,
    "tests/test_chat.py::test_an_openai_model_streams_its_answer": 7,
    "tests/test_requirements.py::test_run_to_train_needs_no_serving_while_run_to_deploy_lists_it": 7,
    "tests/test_notebook.py::test_cancelling_a_queued_aask_drops_it": 7,
    "tests/test_chat.py::test_missing_inputs_are_asked_one_at_a_time": 6,
    "tests/test_chat.py::test_help_history_ctrl_c_and_errors": 6,
    "tests/test_notebook.py::test_concurrent_aask_on_one_supervisor_run_one_after_the_other_in_order": 5,
    "tests/tools/test_core.py::test_a_model_that_declares_a_foreign_type_trusted_is_not_loaded": 5,
    "tests/test_evals_report.py::test_plugin_collects_the_builtin_suite_only_when_asked": 4,
    "tests/test_notebook.py::test_calls_on_different_supervisors_do_not_wait_for_each_other": 4,
    "tests/test_evals_report.py::test_plugin_markers_and_trials": 4,
    "tests/test_monitoring.py::test_monitor_on_a_schedule_stops_cleanly_on_sigterm": 4,
    "tests/test_cli.py::test_chat_answers_and_leaves": 4,
    "tests/test_notebook.py::test_astream_yields_what_stream_yields_in_order": 4,
    "tests/test_notebook.py::test_cancelling_an_astream_stops_the_run_at_its_next_event_and_frees_the_worker": 4,
    "tests/test_notebook.py::test_aask_runs_on_a_worker_thread_while_the_event_loop_keeps_ticking": 3,
    "tests/tools/test_alert_rules.py::test_cli_writes_the_three_files": 3,
    "tests/test_monitoring.py::test_alerts_of_a_version_that_left_the_serving_state_resolve_once": 2,
    "tests/test_monitoring.py::test_an_endpoint_that_is_down_alerts_its_owner_and_a_failing_check_stops_nothing": 2,
    "tests/test_evals_report.py::test_plugin_adds_nothing_without_eval_files": 2,
    # whole files
    "tests/test_pipeline.py": 173,
    "tests/tools/test_serving.py": 112,
    "tests/test_evals_runner.py": 46,
    "tests/tools/test_traffic_gates.py": 43,
    "tests/test_kubernetes_flow.py": 42,
    "tests/test_promotion.py": 36,
    "tests/test_mlflow_server.py": 32,
    "tests/test_llm.py": 19,
    "tests/tools/test_feedback.py": 19,
    "tests/test_canaries.py": 16,
    "tests/test_tracing.py": 16,
    "tests/test_chokepoint.py": 15,
    "tests/tools/test_alerting.py": 11,
    "tests/test_shared_state.py": 8.7,
    "tests/tools/test_floors_evidence.py": 8.0,
    "tests/policies/test_presidio_redactor.py": 7.2,
    "tests/tools/test_quality.py": 7.0,
    "tests/tools/test_kubernetes.py": 6.4,
    "tests/tools/test_prometheus_metrics.py": 6.1,
    "tests/tools/test_router.py": 5.7,
    "tests/test_evals_guarantees.py": 4.9,
    "tests/policies/test_audit_postgres.py": 4.9,
    "tests/tools/test_serving_units.py": 4.8,
    "tests/test_injection.py": 3.2,
    "tests/test_graph.py": 2.8,
    "tests/test_deploy_cli.py": 2.8,
    "tests/policies/test_injection_guard.py": 2.0,
    "tests/tools/test_evaluation.py": 1.9,
    "tests/tools/test_model_lock.py": 1.9,
    "tests/test_policy_store.py": 1.9,
    "tests/tools/test_data.py": 1.8,
    "tests/policies/test_floors.py": 0.7,
    "tests/tools/test_spec.py": 0.5,
    "tests/test_fixtures.py": 0.4,
    "tests/test_packaging.py": 0.4,
    "tests/tools/test_drift.py": 0.3,
    "tests/tools/test_serving_backends.py": 0.3,
    "tests/tools/test_manifests.py": 0.3,
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


def _table(durations: str) -> str:
    """``COST``'s text from the output of a ``--durations=0`` run: each unit's setup, call and teardown summed."""
    import re

    seconds: dict[str, float] = {}
    for line in durations.splitlines():
        found = re.match(r"\s*([0-9.]+)s (?:setup|call|teardown)\s+(\S.*)$", line)
        if found:
            unit = unit_of(found.group(2)).split("[", 1)[0]
            seconds[unit] = seconds.get(unit, 0.0) + float(found.group(1))
    tests = sorted(((u, s) for u, s in seconds.items() if "::" in u and s >= 1.5), key=lambda us: -us[1])
    files = sorted(((u, s) for u, s in seconds.items() if "::" not in u and s >= 0.3), key=lambda us: -us[1])
    rows = ["COST: dict[str, float] = {", "    # tests of split files"]
    rows += [f'    "{u}": {round(s)},' for u, s in tests]
    rows += ["    # whole files"]
    rows += [f'    "{u}": {round(s) if s >= 10 else round(s, 1)},' for u, s in files]
    return "\n".join([*rows, "}"])


if __name__ == "__main__":
    import sys
    from pathlib import Path

    print(_table(Path(sys.argv[1]).read_text("utf-8")))
