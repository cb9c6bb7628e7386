"""Token counts and cost of one request's model calls, per graph node.

Each model reply that reports ``usage_metadata`` (a real model's; the offline planner and
scripted models report none) adds one call and its input, output and total tokens to its
node's counts in the state channel ``usage`` (node name -> counts, a last-value channel: a
node writes a whole new mapping). With a price table (``MLOPS_LLM_PRICES``: a YAML or JSON
mapping of model name to ``{input: USD, output: USD}`` per million tokens) that names the
model, each call's cost is added too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlops_supervisor._results import ModelUsage, NodeUsage
from mlops_supervisor.policies import UsageError

__all__ = ["Price", "PriceTable", "add_usage", "load_prices", "usage_line", "usage_result"]

PRICE_HELP = "a price table maps each model name to {input: USD, output: USD} per million tokens (YAML or JSON)"
_COUNTS = ("calls", "input_tokens", "output_tokens", "total_tokens")


@dataclass(frozen=True)
class Price:
    """US dollars per million input and output tokens."""

    input: float
    output: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """The cost in USD of one call with these token counts."""
        return (input_tokens * self.input + output_tokens * self.output) / 1_000_000


@dataclass(frozen=True)
class PriceTable:
    """Prices by model name, and the file they came from (named in the report)."""

    source: str
    prices: Mapping[str, Price]

    def price_of(self, *names: str) -> Price | None:
        """The price of the first of ``names`` the table holds, or None."""
        return next((self.prices[n] for n in names if n and n in self.prices), None)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise UsageError(f"{where} is {value!r}; a price is a number of US dollars >= 0. {PRICE_HELP}")
    return float(value)


def load_prices(path: Path) -> PriceTable:
    """The price table in ``path``; ``UsageError`` naming the file, the entry and the allowed form."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text("utf-8"))
    except FileNotFoundError:
        raise UsageError(f"price table {path} (MLOPS_LLM_PRICES) does not exist; {PRICE_HELP}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"price table {path} (MLOPS_LLM_PRICES) cannot be read: {exc}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"price table {path} (MLOPS_LLM_PRICES) is not YAML or JSON: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise UsageError(f"price table {path} holds {type(data).__name__}, not a mapping of models; {PRICE_HELP}")
    prices: dict[str, Price] = {}
    for model, entry in data.items():
        where = f"price table {path}: model {model!r}"
        if not isinstance(entry, dict) or set(entry) != {"input", "output"}:
            raise UsageError(f"{where} is {entry!r}; it needs exactly the keys input and output. {PRICE_HELP}")
        prices[str(model)] = Price(
            input=_number(entry["input"], f"{where} input"), output=_number(entry["output"], f"{where} output")
        )
    return PriceTable(source=str(path), prices=prices)


def add_usage(
    usage: Mapping[str, Mapping[str, Any]] | None,
    node: str,
    messages: Iterable[Any],
    *,
    model: str = "",
    prices: PriceTable | None = None,
) -> dict[str, dict[str, Any]] | None:
    """``usage`` with the calls of ``messages`` added to ``node``'s counts: a new mapping, or None when
    no message reports its usage (nothing to record).

    A node's counts are ``calls``, ``input_tokens``, ``output_tokens`` and ``total_tokens``; with
    ``prices`` also ``price_table`` (its file) and, when it prices ``model`` (or the model the
    server names in the reply), ``cost_usd``.
    """
    replies = [m for m in messages if isinstance(getattr(m, "usage_metadata", None), dict)]
    if not replies:
        return None
    new = {name: dict(counts) for name, counts in (usage or {}).items()}
    counts = new.setdefault(node, dict.fromkeys(_COUNTS, 0))
    for reply in replies:
        meta = reply.usage_metadata
        inputs, outputs = int(meta.get("input_tokens") or 0), int(meta.get("output_tokens") or 0)
        counts["calls"] = counts.get("calls", 0) + 1
        counts["input_tokens"] = counts.get("input_tokens", 0) + inputs
        counts["output_tokens"] = counts.get("output_tokens", 0) + outputs
        counts["total_tokens"] = counts.get("total_tokens", 0) + int(meta.get("total_tokens") or inputs + outputs)
        if prices is not None:
            counts["price_table"] = prices.source
            served = str((getattr(reply, "response_metadata", None) or {}).get("model_name") or "")
            price = prices.price_of(model, served)
            if price is not None:
                counts["cost_usd"] = counts.get("cost_usd", 0.0) + price.cost(inputs, outputs)
    return new


def usage_result(usage: Mapping[str, Mapping[str, Any]] | None) -> ModelUsage | None:
    """The typed form of a state's ``usage`` (per node, and the total), or None when nothing was recorded."""
    if not usage:
        return None
    nodes = {
        name: NodeUsage(**{k: int(counts.get(k, 0)) for k in _COUNTS}, cost_usd=counts.get("cost_usd"))
        for name, counts in usage.items()
    }
    costs = [n.cost_usd for n in nodes.values()]
    total = NodeUsage(
        **{k: sum(getattr(n, k) for n in nodes.values()) for k in _COUNTS},
        cost_usd=sum(c for c in costs if c is not None) if any(c is not None for c in costs) else None,
    )
    tables = sorted({str(c["price_table"]) for c in usage.values() if c.get("price_table")})
    return ModelUsage(nodes=nodes, total=total, price_table=tables[0] if tables else None)


def _dollars(cost: float) -> str:
    return "$" + (f"{cost:.6f}".rstrip("0").rstrip(".") if cost else "0")


def _counts(n: NodeUsage) -> str:
    return f"{n.calls} call{'s' if n.calls != 1 else ''} {n.input_tokens} in / {n.output_tokens} out tokens"


def usage_line(usage: Mapping[str, Mapping[str, Any]] | None) -> str:
    """The report's line on model usage; empty when nothing was recorded (offline and scripted models).

    ``Model usage: supervisor 2 calls 410 in / 36 out tokens; security 1 call ...; total 3 calls
    ... (N tokens); cost $0.0012 at prices.yaml``.
    """
    result = usage_result(usage)
    if result is None:
        return ""
    parts = [f"{name} {_counts(n)}" for name, n in result.nodes.items()]
    line = f"Model usage: {'; '.join(parts)}; total {_counts(result.total)} ({result.total.total_tokens} tokens)"
    if result.total.cost_usd is not None:
        unpriced = [name for name, n in result.nodes.items() if n.cost_usd is None]
        line += f"; cost {_dollars(result.total.cost_usd)} at {result.price_table}"
        if unpriced:
            line += f" (not priced: {', '.join(unpriced)})"
    elif result.price_table is not None:
        line += f"; no cost: the model is not in the price table {result.price_table}"
    return line + "."
