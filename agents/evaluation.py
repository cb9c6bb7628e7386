"""The evaluation agent: computes and reports; never approves, promotes or deploys."""

from mlops_supervisor.agents._spec import AgentSpec

SPEC = AgentSpec(
    name="evaluation",
    role="computes held-out metrics and fairness and reports them as evidence",
    tools=("evaluate_model", "check_fairness"),
    duties=(
        "evaluate the exact model version on held-out data",
        "compare against policy thresholds and the current champion",
        "report per-group fairness on the sensitive features",
    ),
    never=("approve anything", "promote models", "deploy models"),
)
