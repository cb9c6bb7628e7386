"""The data agent: prepares, versions and validates data; never trains or deploys."""

from mlops_supervisor.agents._spec import AgentSpec

SPEC = AgentSpec(
    name="data",
    role="prepares, versions and validates data",
    tools=("load_dataset", "validate_dataset", "scan_pii", "version_dataset", "split_dataset", "record_feedback"),
    duties=(
        "load data within the size limit",
        "validate schema, target and leakage before anything trains",
        "remove or hash PII columns before anything is logged",
        "version data by content digest and split it reproducibly",
        "record labels that arrive after the predictions, checked against the prediction log",
    ),
    never=("train models", "register models", "deploy models"),
)
