"""Rolling back: the last known-good version back in traffic and in the ``champion`` alias, as one recorded action.

The bad version is the canary in progress, else the champion; the good one is the canary's
stable version, else the champion (when the deployment had no stable version and is not the
champion itself), else the version the champion replaced (``mlops.previous_champion``). It must
still be running: rollback moves traffic, it starts nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mlops_supervisor.policies import InvalidInputError
from mlops_supervisor.tools.core import ToolContext, model_lock, using_store
from mlops_supervisor.tools.registry import aliased_version
from mlops_supervisor.tools.serving._backend import ServingBackend
from mlops_supervisor.tools.serving._canary import CanaryRecord, clear_canary, read_canary

__all__ = ["rollback"]


def rollback(ctx: ToolContext, backend: ServingBackend, model: str, *, reason: str = "requested") -> dict[str, Any]:
    """All traffic back to ``model``'s last known-good version, the champion alias with it; audited."""
    # under the model's lock, which a failed canary step already holds (it is re-entrant)
    with model_lock(ctx.workspace, model), using_store(ctx.store_uri) as client:
        found = aliased_version(client, model)
        champion = int(found.version) if found is not None else None
        canary = read_canary(ctx.workspace, model)
        status = backend.status(model)
        running = [v for v, s in status["versions"].items() if s["alive"]]
        bad, good = _bad_and_good(client, model, canary, champion)
        if good is None or good not in running:
            raise InvalidInputError(
                "no_known_good_version",
                f"{model} has no last known-good version running to roll back to (running: {running or 'none'})",
            )
        result = backend.rollback(model, good)
        moved = _move_champion(client, model, champion, bad=bad, good=good)
        if bad is not None:
            _mark_rolled_back(client, model, bad, reason)
        clear_canary(ctx.workspace, model)
    ctx.audit.append("rollback", model=model, to_version=good, from_version=bad, champion_moved=moved, reason=reason)
    return {
        "model": model,
        "to_version": good,
        "from_version": bad,
        "champion": moved,
        "reason": reason,
        "status": result,
    }


def _bad_and_good(
    client: Any, model: str, canary: CanaryRecord | None, champion: int | None
) -> tuple[int | None, int | None]:
    """The version to roll back from and the one to roll back to (None where there is none)."""
    bad = int(canary["version"]) if canary else champion
    if canary and canary["stable"] is not None:
        return bad, int(canary["stable"])
    if champion is not None and champion != bad:
        # a first deployment of another version has no stable one: the champion is known-good
        return bad, champion
    if champion is None:
        return bad, None
    previous = client.get_model_version(model, str(champion)).tags.get("mlops.previous_champion")
    return bad, int(previous) if previous else None


def _move_champion(
    client: Any, model: str, champion: int | None, *, bad: int | None, good: int
) -> dict[str, int] | None:
    """Point ``champion`` at ``good`` when it pointed at the bad version: the move made, or None."""
    if champion is not None and champion != good and champion == bad:
        client.set_registered_model_alias(model, "champion", str(good))
        return {"from": champion, "to": good}
    return None


def _mark_rolled_back(client: Any, model: str, bad: int, reason: str) -> None:
    """Tag ``bad`` rolled back now for ``reason``, its canary failed."""
    client.set_model_version_tag(model, str(bad), "mlops.rollback.at", datetime.now(UTC).isoformat())
    client.set_model_version_tag(model, str(bad), "mlops.rollback.reason", reason[:4000])
    client.set_model_version_tag(model, str(bad), "mlops.canary.passed", "false")
