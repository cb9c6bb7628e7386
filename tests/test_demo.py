"""The demo's quieting of MLflow is scoped: on inside it, back as it was after (the full demo run is in test_cli)."""

from __future__ import annotations

import pytest
from mlflow.utils import logging_utils
from mlflow.utils.autologging_utils import MlflowEventsAndWarningsBehaviorGlobally

from mlops_supervisor._demo import _mlflow_event_prints_off


def test_mlflow_registry_prints_are_off_in_the_demo_and_back_after(capsys: pytest.CaptureFixture[str]) -> None:
    """MLflow's eprint is silent inside, even once MLflow's own mute-then-unmute context has run; audible after."""
    with _mlflow_event_prints_off():
        # importing mlflow.types.responses (first pyfunc use) runs this; leaving it unmutes a bare disable_logging()
        with MlflowEventsAndWarningsBehaviorGlobally(
            disable_event_logs=True, disable_warnings=True, reroute_warnings=False
        ):
            pass
        logging_utils.eprint("Registered model 'm' already exists. Creating a new version of this model...")
    logging_utils.eprint("after the demo")
    assert capsys.readouterr().err == "after the demo\n"


def test_mlflow_event_stream_stays_off_when_it_was_off_before() -> None:
    """A caller that had turned MLflow's stream off finds it still off after the demo's scope, even after an error."""
    logging_utils.disable_logging()
    try:
        with pytest.raises(KeyboardInterrupt), _mlflow_event_prints_off():
            raise KeyboardInterrupt
        assert logging_utils.MLFLOW_LOGGING_STREAM.enabled is False
    finally:
        logging_utils.enable_logging()
