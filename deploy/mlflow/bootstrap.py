"""Bootstrap mlops-supervisor's service account on an MLflow tracking server with basic-auth.

Run once by the tracking server's admin, after the server is up:

    export MLFLOW_TRACKING_URI=https://mlflow.internal
    export MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=...        # the admin, read by MLflow
    export MLOPS_SERVICE_ACCOUNT_PASSWORD=...                                 # the new account's (>= 12 chars)
    python deploy/mlflow/bootstrap.py --service-account mlops-supervisor \
        [--model EXISTING_MODEL ...] [--experiment EXISTING_EXPERIMENT ...]

It creates the service account (unless it exists) and gives it MANAGE on registered models and
experiments that already exist (what the account creates itself, it manages already). Passwords are
read from the environment only, never from the command line, and never printed.
"""

from __future__ import annotations

import argparse
import os
import sys

from mlflow.exceptions import MlflowException
from mlflow.server import get_app_client
from mlflow.tracking import MlflowClient


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--service-account", default="mlops-supervisor", help="user name of the service account")
    parser.add_argument("--model", action="append", default=[], help="an existing registered model it manages")
    parser.add_argument("--experiment", action="append", default=[], help="an existing experiment it writes to")
    args = parser.parse_args()
    url = os.environ.get("MLFLOW_TRACKING_URI", "")
    password = os.environ.get("MLOPS_SERVICE_ACCOUNT_PASSWORD", "")
    if not url.startswith(("http://", "https://")) or "@" in url.split("/")[2]:
        sys.stderr.write("set MLFLOW_TRACKING_URI to the server (http[s]://host:port, no credentials in it)\n")
        return 2
    if not os.environ.get("MLFLOW_TRACKING_USERNAME") or not os.environ.get("MLFLOW_TRACKING_PASSWORD"):
        sys.stderr.write("set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to the server's admin\n")
        return 2
    if len(password) < 12:
        sys.stderr.write("set MLOPS_SERVICE_ACCOUNT_PASSWORD (at least 12 characters) for the service account\n")
        return 2
    auth = get_app_client("basic-auth", tracking_uri=url)
    account = args.service_account
    try:
        auth.create_user(account, password)
        print(f"created user {account}")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        print(f"user {account} exists; its password is unchanged")
    for model in args.model:
        auth.grant_user_permission(account, "registered_model", model, "MANAGE")
        print(f"{account}: MANAGE on registered model {model}")
    client = MlflowClient(tracking_uri=url)
    for name in args.experiment:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            sys.stderr.write(f"no experiment {name!r}; the service account creates (and manages) it on first use\n")
            continue
        auth.grant_user_permission(account, "experiment", experiment.experiment_id, "MANAGE")
        print(f"{account}: MANAGE on experiment {name} ({experiment.experiment_id})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
