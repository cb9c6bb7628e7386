"""The arguments a model proposed, as proposed, kept in memory between the nodes that need them.

Every node writes its update into the checkpoint, so the state holds a proposed call only in
its redacted form. The policy node decides on the arguments as proposed and the tools node runs
the tool on them (a path with an ``@`` reaches the tool intact, not as ``<EMAIL_ADDRESS>``):
``ProposedArguments`` carries them from the specialist node, through the policy node, to the
tools node of the same process, and never into the state.

A call whose arguments are not here (the thread was resumed, or its approval answered, by
another process) runs on its recorded arguments: the redacted form, which differs from the
proposal only where the redactor found personal data. A secret never gets that far: a call
whose arguments held one is refused by the policy node.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ProposedArguments"]


@dataclass(frozen=True)
class _Proposal:
    tool: str
    raw: Mapping[str, Any]
    shown: Mapping[str, Any]


@dataclass
class ProposedArguments:
    """Raw arguments by call, from proposal to run; at most ``limit`` calls (the oldest are forgotten)."""

    limit: int = 1024
    _calls: OrderedDict[tuple[str, str], _Proposal] = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _put(self, key: tuple[str, str], proposal: _Proposal) -> None:
        with self._lock:
            self._calls.pop(key, None)
            self._calls[key] = proposal
            while len(self._calls) > self.limit:
                self._calls.popitem(last=False)

    def _pop(self, key: tuple[str, str], tool: str, shown: Mapping[str, Any]) -> Mapping[str, Any] | None:
        with self._lock:
            proposal = self._calls.pop(key, None)
        # The entry is only used for the very call it was kept for: same tool, same recorded arguments.
        if proposal is None or proposal.tool != tool or proposal.shown != shown:
            return None
        return proposal.raw

    def keep(self, call_id: str, tool: str, raw: Mapping[str, Any], shown: Mapping[str, Any]) -> None:
        """Keep a just-proposed call's ``raw`` arguments, beside the ``shown`` (redacted) ones the state records."""
        self._put(("", call_id), _Proposal(tool, raw, shown))

    def claim(self, thread_id: str, call_id: str, tool: str, shown: Mapping[str, Any]) -> Mapping[str, Any]:
        """The arguments as proposed for this call, now bound to ``thread_id``; ``shown`` when they are not here."""
        raw = self._pop(("", call_id), tool, shown)
        if raw is None:
            return shown
        self._put((thread_id, call_id), _Proposal(tool, raw, shown))
        return raw

    def release(self, thread_id: str, call_id: str, tool: str, shown: Mapping[str, Any]) -> Mapping[str, Any]:
        """The arguments to run a decided call on, forgotten here: as proposed when kept, else ``shown``."""
        raw = self._pop((thread_id, call_id), tool, shown)
        return shown if raw is None else raw

    def forget(self, thread_id: str, call_id: str) -> None:
        """Drop a call that will not run (denied)."""
        with self._lock:
            self._calls.pop((thread_id, call_id), None)
