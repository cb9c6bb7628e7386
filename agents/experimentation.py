"""The experimentation agent: trains and logs; never registers or deploys."""

from mlops_supervisor.agents._spec import AgentSpec

SPEC = AgentSpec(
    name="experimentation",
    role="trains candidate models and logs every run",
    tools=("train_model", "list_runs"),
    duties=(
        "train only allow-listed estimators with fixed seeds",
        "log parameters, metrics, data version, code version and environment to MLflow",
    ),
    never=("register models", "set aliases", "deploy models"),
)
