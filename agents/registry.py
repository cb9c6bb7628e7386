"""The registry agent: registers, versions and sets aliases; never mutates artifacts or deploys."""

from mlops_supervisor.agents._spec import AgentSpec

SPEC = AgentSpec(
    name="registry",
    role="registers model versions and manages their aliases",
    tools=("register_model", "set_alias", "remove_alias", "list_model_versions"),
    duties=(
        "register versions with their lineage and evidence tags",
        "move aliases only after their gate passes",
    ),
    never=("change model artifacts", "deploy models"),
)
