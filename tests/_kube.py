"""A Kubernetes API emulator on loopback for the serving backend's tests: kmock 0.8 on a thread.

kmock (by the author of kopf) speaks the Kubernetes REST API from memory, and the real
``kubernetes`` client talks to it over HTTP. Two things it lacks are added here (see
docs/research/issue-16-scale-out.md, section 1):

- server-side apply: a ``PATCH`` with ``application/apply-patch+yaml`` creates an absent object
  (201) and replaces an existing one, keeping its ``status`` and bumping ``generation`` when the
  spec changes (kmock alone answers 404 for an absent object and merges into an existing one);
- faults injected *before* the store changes (kmock's own reactions run after it mutated), so a
  refused write provably leaves the store as it was: ``inject(predicate, fault)`` with a
  ``kmock.KubernetesError`` (a real ``Status`` body) or a number of seconds to stall.

The test plays the controller: ``controller`` (called after each apply, its answer merged into
``status`` as a second version, as a real controller's write would be) or ``set_status`` later.
kmock ignores label selectors and watch timeouts; the backend filters and bounds them itself,
as it must against a real cluster anyway.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import aiohttp.web
import kmock
from kubernetes import client

__all__ = ["Controller", "KubeEmulator", "fault"]

T = TypeVar("T")
Predicate = Callable[[kmock.Request], bool]
Controller = Callable[[str, dict[str, Any]], dict[str, Any] | None]
"""``(resource "group/version/plural", applied object) -> status to merge, or None``."""
APPLY = "application/apply-patch+yaml"
RESOURCES = {
    "apps/v1/deployments": "Deployment",
    "v1/services": "Service",
    "v1/configmaps": "ConfigMap",
    "serving.kserve.io/v1beta1/inferenceservices": "InferenceService",
}


def fault(status: int, reason: str, message: str) -> kmock.KubernetesError:
    """An API error rendered as the API server renders one (a ``Status`` object)."""
    return kmock.KubernetesError(status=status, reason=reason, message=message, details={})


def _resource_key(request: kmock.Request) -> str:
    resource = request.resource
    assert resource is not None
    return (
        f"{resource.group}/{resource.version}/{resource.plural}"
        if resource.group
        else f"{resource.version}/{resource.plural}"
    )


class _ApplyEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus server-side apply and pre-mutation faults."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.faults: list[tuple[Predicate, kmock.KubernetesError | float, int]] = []
        self.controller: Controller | None = None
        self.versions = itertools.count(1000)
        for resource, kind in RESOURCES.items():  # a list of an undeclared resource with no objects is a 404
            self.resources[resource] = kmock.ResourceInfo(kind=kind, namespaced=True)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        for index, (predicate, injected, times) in enumerate(list(self.faults)):
            if predicate(request):
                if times <= 1:
                    self.faults.pop(index)
                else:
                    self.faults[index] = (predicate, injected, times - 1)
                if isinstance(injected, int | float):
                    await asyncio.sleep(injected)  # the client has given up by now; nothing changes
                    injected = fault(504, "Timeout", "stalled by the test")
                response: aiohttp.web.StreamResponse = await self._render_error(injected)
                return response
        applying = request.headers.get("Content-Type", "").startswith(APPLY)
        if request.resource is not None and request.method == "PATCH" and not request.subresource and applying:
            return await self._apply(request)
        handled: aiohttp.web.StreamResponse = await super()._handle(request)
        return handled

    async def _apply(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        body = copy.deepcopy(request.data)
        resource = request.resource
        assert resource is not None
        key: Any = (resource, request.namespace, request.name)
        manager = request.params.get("fieldManager", "")
        async with self._lock:
            exists = key in self._objects and not self._objects[key].deleted
            old = self._objects[key].raw if exists else {}
            meta = body.setdefault("metadata", {})
            meta["namespace"], meta["name"] = request.namespace, request.name
            meta["uid"] = old.get("metadata", {}).get("uid") or str(uuid.uuid4())
            meta["creationTimestamp"] = old.get("metadata", {}).get("creationTimestamp") or (
                datetime.datetime.now(tz=datetime.UTC).isoformat(timespec="seconds")
            )
            generation = old.get("metadata", {}).get("generation", 0)
            meta["generation"] = generation + 1 if old.get("spec") != body.get("spec") or not exists else generation
            meta["resourceVersion"] = str(next(self.versions))
            meta["managedFields"] = [{"manager": manager, "operation": "Apply"}]
            body.pop("status", None)
            if "status" in old:
                body["status"] = old["status"]
            if key in self._objects:
                self._objects[key].create(body)  # a new version: the object is replaced, not merged
            else:
                self._objects[key] = body
            raw = self._objects[key].raw
            await self._buses[resource].put({"type": "MODIFIED" if exists else "ADDED", "object": raw})
            status = self.controller(_resource_key(request), copy.deepcopy(raw)) if self.controller else None
            if status is not None:
                self._objects[key].patch({"status": status})
                await self._buses[resource].put({"type": "MODIFIED", "object": self._objects[key].raw})
        return aiohttp.web.json_response(raw, status=200 if exists else 201)

    async def set_status(self, resource: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge ``status`` into a stored object and tell the watchers, as a controller's write would."""
        async with self._lock:
            for (res, ns, nm), obj in self._objects.items():
                if _resource_key(kmock.Request(resource=res)) == resource and (ns, nm) == (namespace, name):
                    obj.patch({"status": status})
                    await self._buses[res].put({"type": "MODIFIED", "object": obj.raw})
                    return
        raise KeyError(f"{resource} {namespace}/{name} is not stored")


class KubeEmulator:
    """The emulator served on 127.0.0.1 from a daemon thread's event loop; a sync context manager."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kube-emulator", daemon=True)
        self._stop: asyncio.Event | None = None
        self._done = threading.Event()
        self.k: _ApplyEmulator = _ApplyEmulator()
        self.url = ""

    def __enter__(self) -> KubeEmulator:
        self._thread.start()
        ready = threading.Event()

        async def serve() -> None:
            self._stop = asyncio.Event()
            try:
                async with self.k, kmock.Server(self.k, host="127.0.0.1") as server:
                    self.url = str(server.url).rstrip("/")
                    ready.set()
                    await self._stop.wait()
            finally:
                ready.set()
                self._done.set()

        self._serving = asyncio.run_coroutine_threadsafe(serve(), self._loop)
        ready.wait(10)
        if not self.url:
            self._serving.result(1)  # raises what stopped it
        return self

    def stop(self) -> None:
        """Stop serving (a later request is refused); idempotent."""
        if self._stop is not None and not self._done.is_set():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._done.wait(10)

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` on the emulator's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(fn(), self._loop).result(10)  # type: ignore[arg-type]

    def api_client(self) -> client.ApiClient:
        """A real ``kubernetes`` client pointed at the emulator, without retries."""
        cfg = client.Configuration()
        cfg.host = self.url
        cfg.retries = 0
        api = client.ApiClient(cfg)
        return api

    @property
    def requests(self) -> list[kmock.Request]:
        """Every request served so far, oldest first."""
        return list(self.k)

    def inject(self, predicate: Predicate, injected: kmock.KubernetesError | float, *, times: int = 1) -> None:
        """Answer the next ``times`` requests matching ``predicate`` with ``injected``, before the store changes."""
        self.k.faults.append((predicate, injected, times))

    def set_status(self, resource: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge ``status`` into a stored object (``resource`` as ``apps/v1/deployments`` or ``v1/services``)."""
        self.call(lambda: self.k.set_status(resource, namespace, name, status))

    def stored(self, resource: str, namespace: str) -> dict[str, dict[str, Any]]:
        """The live objects of ``resource`` in ``namespace`` by name."""
        out: dict[str, dict[str, Any]] = {}
        for (res, ns, name), obj in list(self.k.objects.items()):
            if ns == namespace and not obj.deleted and _resource_key(kmock.Request(resource=res)) == resource:
                out[name] = copy.deepcopy(obj.raw)
        return out

    def snapshot(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        """Every live object, for "nothing changed" assertions (resourceVersions included)."""
        return {
            (_resource_key(kmock.Request(resource=res)), str(ns), name): copy.deepcopy(obj.raw)
            for (res, ns, name), obj in list(self.k.objects.items())
            if not obj.deleted
        }

    def writes(self) -> Iterator[kmock.Request]:
        """The requests that could change something (not GET, LIST or WATCH)."""
        return (r for r in self.k if r.method != "GET")
