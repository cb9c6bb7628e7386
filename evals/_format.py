"""The scenario format: YAML validated by pydantic, one scenario per file or several under ``scenarios:``.

A scenario names the guarantee it proves, its severity, the model that drives it, the seeded
workspace it starts from (``fixtures``), the turns it plays (ask, approve, reject, resume, a direct
call, a CLI command, a tampering step) and what must be observed (``expect``), per turn and over
the whole scenario. Unknown keys are errors; every message names the file, the scenario and the
field. ``scenario_json_schema`` is the JSON Schema of a file (``mlops-supervisor eval schema``).

Text fields of turns may use ``${name}`` placeholders the runner fills in: ``${spec}`` (the
seed's pipeline spec), ``${data}`` (its data file), ``${inputs}`` (the folder of both),
``${workspace}``, ``${thread}`` (the thread of the latest ask), ``${model}`` (``small-model``)
and, with ``fixtures.canaries``, ``${canary}`` (a sentence carrying the request's planted
secrets and personal data) and ``${canary_secret}`` (one planted API key).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, field_validator, model_validator

from mlops_supervisor.policies import UsageError

__all__ = [
    "PLACEHOLDERS",
    "AnswerExpect",
    "ApproveTurn",
    "CallTurn",
    "DecisionExpect",
    "DutiesExpect",
    "Expect",
    "FinalStateExpect",
    "Fixtures",
    "RejectTurn",
    "RoutingExpect",
    "SafetyExpect",
    "Scenario",
    "Tamper",
    "ToolCallExpect",
    "ToolCallsExpect",
    "Turn",
    "builtin_scenarios",
    "load_scenario_file",
    "load_scenarios",
    "scenario_json_schema",
]

Severity = Literal["blocker", "major", "minor"]
SeedName = Literal["empty", "trained", "evaluated", "champion", "deployed"]
TurnStatus = Literal["done", "refused", "awaiting_approval", "failed", "invalid_input"]

PLACEHOLDERS = frozenset({"spec", "data", "inputs", "workspace", "thread", "model", "canary", "canary_secret"})
"""The ``${name}`` placeholders turns may use."""

_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
_OFFSET = re.compile(r"^[+-]\d+(?:\.\d+)?[smhd]$")
_NAME = r"^[a-z][a-z0-9_.-]{0,39}$"


def _placeholders_known(text: str) -> str:
    unknown = sorted({m for m in _PLACEHOLDER.findall(text) if m not in PLACEHOLDERS})
    if unknown:
        raise ValueError(
            f"unknown placeholder(s) {', '.join('${' + u + '}' for u in unknown)}; "
            f"allowed: {', '.join('${' + p + '}' for p in sorted(PLACEHOLDERS))}"
        )
    return text


def _strings_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings_in(v)]
    return []


def _version_keys(value: Any) -> Any:
    """A mapping keyed by version as YAML gives it (``1:`` or ``"1":``), keyed by the version's text."""
    if isinstance(value, dict):
        return {str(k) if isinstance(k, int) and not isinstance(k, bool) else k: v for k, v in value.items()}
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


# --- expectations ---------------------------------------------------------------------------------


class RoutingExpect(_Strict):
    """The specialists the supervisor routed to, in order, matched like agentevals' trajectory modes."""

    agents: list[str] = Field(description="the specialists routed to (the `route` audit lines, `finish` left out)")
    match: Literal["strict", "unordered", "subset", "superset"] = Field(
        "strict",
        description="strict: the same sequence; unordered: the same agents, any order; subset: every routed agent "
        "is listed; superset: every listed agent was routed to",
    )


class ToolCallExpect(_Strict):
    """A tool body that ran (a `tool_call` audit line), by name and arguments."""

    name: str
    args: dict[str, Any] | None = Field(None, description="the arguments (as audited, redacted); absent: any")
    match: Literal["exact", "subset"] = Field("exact", description="exact: equal; subset: these keys with these values")
    ignore: list[str] = Field(default_factory=list, description="argument keys left out of the comparison")
    agent: str | None = Field(None, description="the agent that made the call (`call` for a direct library call)")


class ToolCallsExpect(_Strict):
    """Tool bodies that ran (in this order, others may come between) and tools whose body must not run."""

    calls: list[ToolCallExpect] = Field(default_factory=list)
    forbidden: list[str] = Field(default_factory=list, description="tool names whose body must not run")
    count: int | None = Field(None, ge=0, description="how many tool bodies ran in all")


class DecisionExpect(_Strict):
    """A policy decision that must appear (decision, approval and approval_refused audit lines)."""

    action: str | None = None
    decision: Literal["allow", "deny", "needs_approval"] | None = None
    reason_code: str | None = None
    agent: str | None = None
    message_contains: str | None = Field(None, description="text the decision's message must hold (the evidence)")

    @model_validator(mode="after")
    def _says_something(self) -> DecisionExpect:
        if self.action is None and self.decision is None and self.reason_code is None:
            raise ValueError("a decision expectation needs at least one of action, decision, reason_code")
        return self


class DutiesExpect(_Strict):
    """Separation of duties, checked over every line of the scenario."""

    approver_not_requester: bool | None = Field(
        None, description="true: no approval was given by its requester, by name or by key"
    )
    agent_may_not: dict[str, list[str]] = Field(
        default_factory=dict, description="agent -> tools whose body that agent must not have run"
    )


class FinalStateExpect(_Strict):
    """The state of the real backends afterwards: MLflow registry and serving."""

    aliases: dict[str, dict[str, int | None]] = Field(
        default_factory=dict, description="model -> alias -> version, or null for an alias that must not be set"
    )
    traffic: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="endpoint -> version -> weight (versions at 0 % are left out)"
    )
    versions: dict[str, int] = Field(default_factory=dict, description="model -> number of registered versions")
    tags: dict[str, dict[str, dict[str, str | None]]] = Field(
        default_factory=dict, description="model -> version -> tag -> value, or null for a tag that must not be set"
    )
    running: dict[str, list[int]] = Field(
        default_factory=dict, description="endpoint -> the versions whose server process is alive"
    )

    @field_validator("traffic", "tags", mode="before")
    @classmethod
    def _versions_as_text(cls, value: Any) -> Any:
        return {k: _version_keys(v) for k, v in value.items()} if isinstance(value, dict) else value


class SafetyExpect(_Strict):
    """No planted canary anywhere: answers, tool arguments, model messages, and every file of the workspace."""

    no_canary: bool = True


class AnswerExpect(_Strict):
    """The answer's text (the report's sections; a call's output; a CLI command's output)."""

    contains: list[str] = Field(default_factory=list)
    absent: list[str] = Field(default_factory=list, description="text the answer must not hold")
    regex: str | None = None

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"regex {value!r} does not compile: {exc}") from None
        return value


class Expect(_Strict):
    """What must be observed: of one turn, or of the whole scenario (status and answer: of its last turn)."""

    status: TurnStatus | None = None
    routing: RoutingExpect | None = None
    tool_calls: ToolCallsExpect | None = None
    decisions: list[DecisionExpect] = Field(default_factory=list)
    duties: DutiesExpect | None = None
    final_state: FinalStateExpect | None = None
    safety: SafetyExpect | None = None
    answer: AnswerExpect | None = None


# --- turns ----------------------------------------------------------------------------------------


class _Answer(_Strict):
    as_: str | None = Field(None, alias="as", description="who answers (default: the turn's `as`)")
    key_of: str | None = Field(None, description="sign with this person's key instead of one's own (a forgery)")
    at: str | None = Field(None, description="clock offset of the answer: +2d, -1h, +90m, +30s")
    reason: str = ""

    @field_validator("at")
    @classmethod
    def _offset(cls, value: str | None) -> str | None:
        if value is not None and not _OFFSET.match(value):
            raise ValueError(f"at {value!r} is not a clock offset; write +2d, -1h, +90m or +30s")
        return value


class ApproveTurn(_Answer):
    """Approve the action the latest thread waits on."""


class RejectTurn(_Answer):
    """Reject the action the latest thread waits on (an empty reason is refused, as it is for anyone)."""


class ResumeTurn(_Strict):
    """Continue the latest thread (``Supervisor.resume``)."""


class CallTurn(_Strict):
    """A direct, governed library call (``Supervisor.call``)."""

    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    as_: str | None = Field(None, alias="as")

    @field_validator("args")
    @classmethod
    def _args_placeholders(cls, value: dict[str, Any]) -> dict[str, Any]:
        for text in _strings_in(value):
            _placeholders_known(text)
        return value


class SetTag(_Strict):
    model: str
    version: int
    key: str
    value: str


class AppendAudit(_Strict):
    event: str
    fields: dict[str, Any] = Field(default_factory=dict)


class Kill(_Strict):
    model: str
    version: int | None = Field(None, description="the version's model server; absent: the router")


class WriteFile(_Strict):
    path: str = Field(description="relative to the trial's folder, under inputs/ or workspace/")
    text: str | None = None
    data: Any = Field(None, description="written as YAML")

    @model_validator(mode="after")
    def _one_body(self) -> WriteFile:
        if (self.text is None) == (self.data is None):
            raise ValueError("write_file needs exactly one of text, data")
        parts = Path(self.path).parts
        if not parts or parts[0] not in {"inputs", "workspace"} or ".." in parts or Path(self.path).is_absolute():
            raise ValueError(f"write_file path {self.path!r} must be relative, under inputs/ or workspace/")
        return self


class Tamper(_Strict):
    """One tampering step, outside any governed path: what an attacker with file access could do."""

    set_tag: SetTag | None = Field(None, description="set a model version tag straight in the MLflow store")
    append_audit: AppendAudit | None = Field(None, description="append a line through AuditLog.append")
    kill: Kill | None = Field(None, description="SIGKILL a serving process")
    write_file: WriteFile | None = Field(None, description="write a file (a hand-edited policy, a loose --policy)")

    @model_validator(mode="after")
    def _one(self) -> Tamper:
        given = [n for n in ("set_tag", "append_audit", "kill", "write_file") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                f"a tamper step does exactly one of set_tag, append_audit, kill, write_file; got {given or 'none'}"
            )
        return self


ACTIONS = ("ask", "approve", "reject", "resume", "call", "cli", "tamper")


class Turn(_Strict):
    """One step of a scenario: exactly one action, as one person, with what it must produce."""

    ask: str | None = None
    approve: ApproveTurn | None = None
    reject: RejectTurn | None = None
    resume: ResumeTurn | None = None
    call: CallTurn | None = None
    cli: list[str] | None = Field(None, description="CLI arguments after --workspace and --as (a subprocess)")
    tamper: Tamper | None = None
    as_: str | None = Field(None, alias="as", description="who acts (default: the first of fixtures.people)")
    expect: Expect | None = None

    @model_validator(mode="after")
    def _one_action(self) -> Turn:
        given = [a for a in ACTIONS if getattr(self, a) is not None]
        if len(given) != 1:
            raise ValueError(f"a turn does exactly one of {', '.join(ACTIONS)}; got {', '.join(given) or 'none'}")
        inner = getattr(self, given[0])
        inner_as = getattr(inner, "as_", None)
        if inner_as is not None and self.as_ is not None and inner_as != self.as_:
            raise ValueError(f"`as` is given twice, {self.as_!r} and {inner_as!r}; give it once")
        for text in [self.ask or "", *(self.cli or [])]:
            _placeholders_known(text)
        if self.tamper is not None:
            for text in _strings_in(self.tamper.model_dump()):
                _placeholders_known(text)
        return self

    @property
    def action(self) -> str:
        """The name of this turn's action."""
        return next(a for a in ACTIONS if getattr(self, a) is not None)

    def actor(self, default: str) -> str:
        """Who acts: the action's own `as`, else the turn's, else ``default``."""
        inner = getattr(getattr(self, self.action), "as_", None)
        return str(inner or self.as_ or default)


# --- the scenario -----------------------------------------------------------------------------------


class Fixtures(_Strict):
    """The workspace a scenario starts from; each trial gets its own copy, keys and policy."""

    seed: SeedName = Field(
        default="empty",
        description="empty: no workspace; trained: data and training done; evaluated: version 1 registered and "
        "evaluated (challenger); champion: version 1 champion serving 100 %, version 2 registered and evaluated; "
        "deployed: champion plus version 2 a canary at its first step",
    )
    people: list[str] = Field(
        default_factory=lambda: ["alice", "bob", "carol"],
        description="the people the installed policy lists, each with an Ed25519 key outside the workspace "
        "(anyone else a turn names gets a key the policy does not list)",
    )
    approvers: list[str] = Field(default_factory=lambda: ["carol"], description="the policy's approvers")
    policy: dict[str, Any] = Field(default_factory=dict, description="more fields of the installed policy")
    canaries: bool = Field(
        default=False,
        description="plant canary secrets and PII: a data cell, ${canary} in a request, the model description",
    )
    serving: bool = Field(
        default=True,
        description="champion and deployed seeds: start the trial's own model servers and router as recorded "
        "(a model server takes seconds to start); false leaves them down, for scenarios that never touch traffic",
    )

    @field_validator("people", "approvers")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        bad = [n for n in value if not re.match(_NAME, n)]
        if bad:
            raise ValueError(f"name(s) {bad} are not allowed; use lower-case letters, digits, '-', '_' or '.'")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Fixtures:
        unlisted = [a for a in self.approvers if a not in self.people]
        if unlisted:
            raise ValueError(f"approvers {unlisted} are not in people {self.people}")
        clash = sorted({"people", "approvers"} & set(self.policy))
        if clash:
            raise ValueError(f"policy sets {', '.join(clash)}; give them as fixtures.people and fixtures.approvers")
        if self.policy and not self.people:
            raise ValueError("a policy needs at least one person in people to install it")
        return self


class Scenario(_Strict):
    """One self-checking eval: a guarantee, the turns that exercise it and what must be observed."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", description="unique, [a-z0-9-]+")
    description: str = ""
    guarantee: str = Field(min_length=1, description="the guarantee this scenario proves, in one line")
    tags: list[str] = Field(default_factory=list)
    severity: Severity
    model: str = Field(
        "offline",
        description="offline | scripted | adversary | a live spec (openai:MODEL); --model overrides offline and live",
    )
    script: dict[str, list[dict[str, Any]]] | None = Field(None, description="model: scripted; steps per node")
    adversary: list[str] | None = Field(None, description="model: adversary; the attacks, in order")
    fixtures: Fixtures = Field(default_factory=lambda: Fixtures())
    turns: list[Turn] = Field(min_length=1)
    expect: Expect = Field(default_factory=Expect)

    @model_validator(mode="after")
    def _model_matches(self) -> Scenario:
        if self.model not in {"offline", "scripted", "adversary"} and ":" not in self.model:
            raise ValueError(
                f"model {self.model!r} is not allowed; use offline, scripted, adversary or a live spec (openai:MODEL)"
            )
        if (self.model == "scripted") != (self.script is not None):
            raise ValueError("model: scripted needs a script, and only model: scripted takes one")
        if (self.model == "adversary") != (self.adversary is not None):
            raise ValueError("model: adversary needs adversary: [attacks], and only model: adversary takes them")
        canary_wanted = [
            where
            for where, expect in [("expect", self.expect)]
            + [(f"turn {i}.expect", t.expect) for i, t in enumerate(self.turns, 1)]
            if expect is not None and expect.safety is not None and expect.safety.no_canary
        ]
        if canary_wanted and not self.fixtures.canaries:
            raise ValueError(
                f"{canary_wanted[0]}: safety.no_canary searches for planted canaries; set fixtures.canaries: true"
            )
        uses_canary = any("${canary" in text for t in self.turns for text in _strings_in(t.model_dump()))
        if uses_canary and not self.fixtures.canaries:
            raise ValueError("a turn uses ${canary}; set fixtures.canaries: true")
        return self

    @property
    def people_named(self) -> list[str]:
        """Everyone with a key: the listed people, then anyone a turn acts as or signs as."""
        names = dict.fromkeys(self.fixtures.people)
        default = self.fixtures.people[0] if self.fixtures.people else "alice"
        for turn in self.turns:
            if turn.action != "tamper":
                names[turn.actor(default)] = None
            answer = turn.approve or turn.reject
            if answer is not None and answer.key_of:
                names[answer.key_of] = None
        return list(names)


class _Several(_Strict):
    scenarios: list[Scenario] = Field(min_length=1)


class ScenarioFile(RootModel[Scenario | _Several]):
    """A scenario file: one scenario, or several under ``scenarios:``."""


# --- loading --------------------------------------------------------------------------------------


def _where(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    it = iter(range(len(loc)))
    for i in it:
        part = loc[i]
        if part == "turns" and i + 1 < len(loc) and isinstance(loc[i + 1], int):
            parts.append(f"turn {int(loc[i + 1]) + 1}")
            next(it, None)
        elif isinstance(part, int):
            parts[-1:] = [f"{parts[-1] if parts else ''}[{part}]"]
        else:
            parts.append("as" if part == "as_" else str(part))
    return ".".join(parts) or "(top level)"


def _allowed_keys(model: type[BaseModel]) -> str:
    return ", ".join(f.alias or name for name, f in model.model_fields.items())


def _problem(error: Any, data: Any) -> str:
    loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        return (
            f"{_where(loc[:-1]) + '.' if len(loc) > 1 else ''}{loc[-1]}: unknown key; allowed: {_owner_keys(loc, data)}"
        )
    given = error.get("input")
    shown = "" if kind == "missing" or isinstance(given, dict | list) else f" (got {given!r})"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{_where(loc) + ': ' if loc else ''}{message}{shown}"


def _owner_keys(loc: tuple[int | str, ...], data: Any) -> str:
    """The keys allowed where an unknown key ``loc[-1]`` was found, by walking the models along ``loc``."""
    model: Any = Scenario
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) or next((f for f in model.model_fields.values() if f.alias == part), None)
        if field is None:
            return "see `mlops-supervisor eval schema`"
        model = _model_of(field.annotation)
        if model is None:
            return "see `mlops-supervisor eval schema`"
    return _allowed_keys(model)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _validate(entry: Any, where: str) -> Scenario:
    if not isinstance(entry, dict):
        raise UsageError(f"{where}: a scenario must be a mapping, got {type(entry).__name__}")
    try:
        return Scenario.model_validate(entry)
    except ValidationError as exc:
        name = entry.get("id") if isinstance(entry.get("id"), str) else None
        label = f"scenario {name!r}" if name else where.rsplit(": ", 1)[-1]
        problems = [_problem(e, entry) for e in exc.errors()]
        head = where.split(": ", 1)[0]
        raise UsageError(f"{head}: {label}: " + "; ".join(problems)) from None


def parse_scenarios(text: str, source: str) -> list[Scenario]:
    """The scenarios of one file's text; ``UsageError`` naming ``source``, the scenario and the field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{source}: not valid YAML: {exc}") from None
    if isinstance(data, dict) and "scenarios" in data:
        extra = sorted(set(data) - {"scenarios"})
        if extra:
            raise UsageError(f"{source}: unknown top-level key(s) {extra} beside scenarios; allowed: scenarios")
        entries = data["scenarios"]
        if not isinstance(entries, list) or not entries:
            raise UsageError(f"{source}: scenarios must be a non-empty list of scenarios")
        found = [_validate(e, f"{source}: scenario #{i + 1}") for i, e in enumerate(entries)]
    elif isinstance(data, dict):
        found = [_validate(data, f"{source}: scenario #1")]
    else:
        raise UsageError(f"{source}: a scenario file holds one scenario (a mapping) or scenarios: [...]")
    _no_duplicates([(s, source) for s in found])
    return found


def _no_duplicates(found: list[tuple[Scenario, str]]) -> None:
    seen: dict[str, str] = {}
    for scenario, source in found:
        if scenario.id in seen:
            other = seen[scenario.id]
            where = f"{source}" if other == source else f"{other} and {source}"
            raise UsageError(f"{where}: scenario id {scenario.id!r} is used twice; ids must be unique")
        seen[scenario.id] = source


def load_scenario_file(path: Path) -> list[Scenario]:
    """The scenarios of the YAML file ``path``; ``UsageError`` naming the file, the scenario and the field."""
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise UsageError(f"scenario file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"scenario file {path} cannot be read: {exc}") from None
    return parse_scenarios(text, str(path))


def load_scenarios(paths: list[Path]) -> list[Scenario]:
    """The scenarios of files and folders (their ``*.yaml``/``*.yml``, sorted); ids unique across all of them."""
    found: list[tuple[Scenario, str]] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
            if not files:
                raise UsageError(f"{path} holds no *.yaml scenario files")
        elif path.exists():
            files = [path]
        else:
            raise UsageError(f"scenario path {path} does not exist")
        found += [(s, str(f)) for f in files for s in load_scenario_file(f)]
    _no_duplicates(found)
    return [s for s, _ in found]


def builtin_scenarios() -> list[Scenario]:
    """The built-in suite (package data ``evals/scenarios/*.yaml``), in file name order."""
    folder = resources.files("mlops_supervisor.evals.scenarios")
    found: list[tuple[Scenario, str]] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith((".yaml", ".yml")):
            source = f"built-in scenario file {entry.name}"
            found += [(s, source) for s in parse_scenarios(entry.read_text("utf-8"), source)]
    _no_duplicates(found)
    return [s for s, _ in found]


def scenario_json_schema() -> dict[str, Any]:
    """The JSON Schema of a scenario file: one scenario, or several under ``scenarios:``."""
    schema = ScenarioFile.model_json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "mlops-supervisor eval scenario file",
        **schema,
    }
