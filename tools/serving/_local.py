"""The embedded serving backend: real server processes on loopback, their state in the workspace.

``LocalBackend`` implements ``ServingBackend`` (``_backend.py``). It keeps, per endpoint
(a model's production endpoint ``<model>``, its staging endpoint ``<model>@staging``),
``<workspace>/serving/<endpoint>/state.json`` (processes, ports, weights) and ``routes.json``
(what the endpoint's own router reads), so a later command finds the servers, sees which died,
and ``stop`` ends them all. Starting, recording, checking and ending the processes is
``_processes``' job; processes run in their own session so a Ctrl-C of the command that
started them does not take production down with it; ``stop``/``down`` is how they end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlops_supervisor.policies import InvalidInputError, RunError
from mlops_supervisor.tools.core import default_tracking_uri, write_json_atomic
from mlops_supervisor.tools.serving._backend import MODEL_URI_VAR, TRACKING_URI_VAR
from mlops_supervisor.tools.serving._metrics import read_router
from mlops_supervisor.tools.serving._processes import ProcessRecord, alive, end, records, spawn

__all__ = ["LocalBackend"]


class LocalBackend:
    """Model servers and a router per model, as processes on loopback."""

    def __init__(self, workspace: Path, *, tracking_uri: str, startup_timeout: float = 60.0) -> None:
        self.root = Path(workspace) / "serving"
        self.tracking_uri = tracking_uri
        self.startup_timeout = startup_timeout

    @classmethod
    def for_workspace(
        cls, workspace: Path, tracking_uri: str | None = None, *, startup_timeout: float = 60.0
    ) -> LocalBackend:
        """The backend of ``workspace``; its model servers read ``tracking_uri``, else the workspace's own store."""
        return cls(
            Path(workspace),
            tracking_uri=tracking_uri or default_tracking_uri(Path(workspace)),
            startup_timeout=startup_timeout,
        )

    # --- state ---------------------------------------------------------------------------

    def _dir(self, model: str) -> Path:
        return self.root / model

    def _state(self, model: str) -> dict[str, Any]:
        path = self._dir(model) / "state.json"
        if not path.exists():
            return {"model": model, "router": None, "versions": {}}
        state: dict[str, Any] = json.loads(path.read_text("utf-8"))
        return state

    def _save(self, model: str, state: dict[str, Any]) -> None:
        home = self._dir(model)
        home.mkdir(parents=True, exist_ok=True)
        for name, value in (
            ("state.json", state),
            (
                "routes.json",
                {
                    "sample_rate": state.get("sample_rate", 0.1),
                    "versions": {
                        v: {"url": f"http://127.0.0.1:{s['port']}", "weight": s["weight"]}
                        for v, s in state["versions"].items()
                    },
                },
            ),
        ):
            write_json_atomic(home / name, value)

    # --- processes -------------------------------------------------------------------------

    def _spawn(
        self, model: str, args: list[str], log: str, port: int | None = None, env: dict[str, str] | None = None
    ) -> ProcessRecord:
        """Start one server process for ``model`` and wait for its /health (see ``_processes.spawn``)."""
        return spawn(self._dir(model), args, log, port=port, startup_timeout=self.startup_timeout, env=env)

    def _records(self, model: str) -> list[ProcessRecord]:
        """Every process spawned for ``model`` and not yet ended, as recorded under ``procs/``."""
        return records(self._dir(model))

    def _end(self, model: str, record: ProcessRecord) -> None:
        """Stop one recorded process of ``model`` and drop its record."""
        end(self._dir(model), record)

    def _ensure_router(self, model: str, state: dict[str, Any]) -> bool:
        """Start the router unless it runs; a restarted router keeps its port, so its URL. Whether it started one."""
        router = state.get("router")
        if router and alive(router["pid"], router.get("started")):
            return False
        if router:
            self._end(model, router)
        home = self._dir(model)
        args = ["router", "--routes", str(home / "routes.json"), "--samples", str(home / "samples.jsonl")]
        try:
            proc = self._spawn(model, args, "router.log", port=router["port"] if router else None)
        except RunError:
            if not router:
                raise
            proc = self._spawn(model, args, "router.log")  # the old port is taken by now
        state["router"] = {**proc, "url": f"http://127.0.0.1:{proc['port']}"}
        return True

    def _start_version(self, model: str, key: str, model_uri: str, fail_rate: float = 0.0) -> ProcessRecord:
        """Start the model server of version ``key`` (failing ``fail_rate`` of requests, for drills).

        The URIs go by environment: the tracking URI can hold a password, and a command line is public.
        """
        args = ["model", "--version", key]
        if fail_rate:
            args += ["--fail-rate", str(fail_rate)]
        env = {MODEL_URI_VAR: model_uri, TRACKING_URI_VAR: self.tracking_uri}
        return self._spawn(model, args, f"version-{key}.log", env=env)

    # --- the protocol ----------------------------------------------------------------------

    def deploy(
        self,
        model: str,
        version: int,
        model_uri: str,
        *,
        weight: int,
        fail_rate: float = 0.0,
        evidence_digest: str | None = None,
    ) -> dict[str, Any]:
        """Start ``version``'s server if needed, give it ``weight`` and the rest to the others by their shares.

        Versions already recorded that died are restarted first, so traffic never goes to a dead one.
        ``evidence_digest`` is ignored: local processes carry no labels (the audit log has the digest).
        """
        if self._state(model)["versions"]:
            self.restore(model)
        state = self._state(model)
        key = str(version)
        current = state["versions"].get(key)
        if current is None or not alive(current["pid"], current.get("started")):
            if current is not None:
                self._end(model, current)
            proc = self._start_version(model, key, model_uri, fail_rate)
            state["versions"][key] = {**proc, "weight": 0, "model_uri": model_uri}
        others = {v: s for v, s in state["versions"].items() if v != key}
        total = sum(s["weight"] for s in others.values()) or 1
        for s in others.values():
            s["weight"] = round(s["weight"] * (100 - weight) / total) if others else 0
        state["versions"][key]["weight"] = weight if others else 100
        self._save(model, state)
        self._ensure_router(model, state)
        self._save(model, state)
        return self.status(model)

    def set_weights(self, model: str, weights: dict[int, int]) -> dict[str, Any]:
        """Split traffic between running versions; weights must name running versions and sum to 100."""
        state = self._state(model)
        unknown = sorted(str(v) for v in weights if str(v) not in state["versions"])
        if unknown or sum(weights.values()) != 100 or any(w < 0 for w in weights.values()):
            raise InvalidInputError(
                "invalid_weights",
                f"weights {weights} must name running versions of {model} "
                f"({', '.join(state['versions']) or 'none'}) and sum to 100",
            )
        for v, s in state["versions"].items():
            s["weight"] = weights.get(int(v), 0)
        self._save(model, state)
        return self.status(model)

    def set_sample_rate(self, model: str, rate: float) -> None:
        """The share of successful requests the router keeps (redacted) for drift checks."""
        if not 0 <= rate <= 1:
            raise InvalidInputError("invalid_sample_rate", f"sample rate {rate} must be between 0 and 1")
        state = self._state(model)
        state["sample_rate"] = rate
        self._save(model, state)

    def status(self, model: str) -> dict[str, Any]:
        """Versions with weight, pid, port and whether the process lives; the router likewise.

        ``stray`` lists running processes recorded under ``procs/`` that no route knows: what
        a command killed while starting a server leaves; ``stop`` ends them.
        """
        state = self._state(model)
        router = state.get("router")
        known = {p["pid"] for p in [*state["versions"].values(), *([router] if router else [])]}
        stray = [r for r in self._records(model) if r["pid"] not in known and alive(r["pid"], r.get("started"))]
        return {
            "model": model,
            "stray": sorted(stray, key=lambda r: r["pid"]),
            "router": {**router, "alive": alive(router["pid"], router.get("started"))} if router else None,
            "versions": {
                int(v): {
                    "weight": s["weight"],
                    "pid": s["pid"],
                    "port": s["port"],
                    "alive": alive(s["pid"], s.get("started")),
                    "model_uri": s["model_uri"],
                }
                for v, s in sorted(state["versions"].items(), key=lambda kv: int(kv[0]))
            },
        }

    def rollback(self, model: str, to_version: int) -> dict[str, Any]:
        """All traffic to ``to_version`` first, then every other version stopped."""
        state = self._state(model)
        key = str(to_version)
        target = state["versions"].get(key)
        if target is None or not alive(target["pid"], target.get("started")):
            raise RunError(f"version {to_version} of {model} is not running; cannot roll back to it")
        for v, s in state["versions"].items():
            s["weight"] = 100 if v == key else 0
        self._save(model, state)
        for v in [v for v in state["versions"] if v != key]:
            self._end(model, state["versions"].pop(v))
        self._save(model, state)
        return self.status(model)

    def stop(self, model: str) -> dict[str, Any]:
        """Stop the router and every version of ``model``; forget its state."""
        state = self._state(model)
        procs = {
            p["pid"]: p for p in [*state["versions"].values(), *([state["router"]] if state.get("router") else [])]
        }
        for record in self._records(model):  # also those a killed command left unrecorded
            procs.setdefault(record["pid"], record)
        running = [p for p in procs.values() if alive(p["pid"], p.get("started"))]
        for proc in procs.values():
            self._end(model, proc)
        for name in ("state.json", "routes.json"):
            (self._dir(model) / name).unlink(missing_ok=True)
        left = sorted(p["pid"] for p in running if alive(p["pid"], p.get("started")))
        return {
            "model": model,
            "stopped": len(running) - len(left),
            "already_dead": len(procs) - len(running),
            **({"still_running": left} if left else {}),  # what would not die, even by SIGKILL
        }

    def read_metrics(self, model: str) -> dict[str, dict[str, Any]]:
        """``read_window`` of ``model``'s router as it answers now; empty when the router is not running."""
        return read_router(self, model)

    def restore(self, model: str) -> dict[str, Any]:
        """Restart whatever of ``model``'s recorded endpoint died: versions on new ports, the router on its own.

        Weights stay as recorded. Nothing is started for a model without serving state.
        """
        state = self._state(model)
        restarted: list[str] = []
        for key, s in state["versions"].items():
            if not alive(s["pid"], s.get("started")):
                self._end(model, s)
                s.update(self._start_version(model, key, s["model_uri"]))
                restarted.append(f"version {key}")
        self._save(model, state)  # the router reads the new ports from routes.json
        if state["versions"] and self._ensure_router(model, state):
            restarted.append("router")
        self._save(model, state)
        return {**self.status(model), "restarted": restarted}

    def models(self) -> list[str]:
        """Endpoints with serving state in this workspace: models, and ``MODEL@staging`` for staging ones."""
        if not self.root.exists():
            return []
        homes = {p.parent.name for p in self.root.glob("*/state.json")}
        return sorted(homes | {p.parent.parent.name for p in self.root.glob("*/procs/*.json")})

    def down(self) -> list[dict[str, Any]]:
        """Stop everything this workspace serves."""
        return [self.stop(model) for model in self.models()]
