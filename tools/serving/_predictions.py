"""The prediction log: every record the router answered, with its request id, version and prediction.

The router appends one JSON line per record of every successful (200) invocation to
``<workspace>/serving/<model>/predictions/<UTC yyyymmddTHHMMSS>-<pid>.jsonl``::

    {"id": "<32 hex>", "row": 0, "ts": 1764627000.123, "version": 3, "prediction": 1, "proba": [0.2, 0.8]}

``id`` is the request id the router gave the request (and returned in ``x-request-id``), ``row``
the record's place in the request, ``prediction`` what the model server answered for it (a class
index for a classifier, a number for a regressor) and ``proba`` its class probabilities, where the
model server gave them. No request feature is logged here. One request's lines go out in one
``os.write`` on an ``O_APPEND`` descriptor, so routers writing at once (a restarted one beside the
one it replaces) never interleave a line; a segment rolls over at 64 MiB.

``read_predictions`` reads every segment back as one frame with pyarrow's JSON reader (no Python
loop per line), which is what joins labels that arrive later (``_feedback``) to their predictions.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.json as pj  # type: ignore[import-untyped]

__all__ = [
    "PREDICTIONS_DIR",
    "SEGMENT_LIMIT",
    "PredictionLog",
    "answer_lines",
    "prediction_lines",
    "prediction_table",
    "read_predictions",
]

PREDICTIONS_DIR = "predictions"
"""The prediction log's folder inside a model's serving home."""

SEGMENT_LIMIT = 64 * 1024 * 1024
"""A segment takes no more lines once it holds this many bytes."""

_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("row", pa.int64()),
        ("ts", pa.float64()),
        ("version", pa.int64()),
        ("proba", pa.list_(pa.float64())),
    ]
)
_BLOCK = 4 * 1024 * 1024  # pyarrow parses this much per task; its 1 MiB default was slower here at 1M lines
# mtime is stamped from the kernel's coarse clock, which may trail time.time() by a tick: a segment
# is skipped for ``since`` only when its last write was this long before it
_MTIME_SLACK = 2.0


def prediction_lines(
    request_id: str,
    version: int | str,
    ts: float,
    predictions: Sequence[Any],
    probabilities: Sequence[Any] | None = None,
) -> bytes:
    """The log lines of one request's records, newline-terminated, as one block of bytes."""
    dumps = partial(json.dumps, separators=(",", ":"))
    if probabilities is None or len(probabilities) != len(predictions):
        return "".join(
            [
                dumps({"id": request_id, "row": i, "ts": ts, "version": version, "prediction": p}) + "\n"
                for i, p in enumerate(predictions)
            ]
        ).encode()
    return "".join(
        [
            dumps({"id": request_id, "row": i, "ts": ts, "version": version, "prediction": p, "proba": q}) + "\n"
            for i, (p, q) in enumerate(zip(predictions, probabilities, strict=True))
        ]
    ).encode()


def answer_lines(request_id: str, version: int | str, ts: float, content: bytes) -> bytes:
    """The log lines of one model server answer (its JSON body); empty when it holds no list of predictions.

    The router calls this on every successful request, so the usual answer, one record as our
    model server writes it (compact JSON, numbers), becomes its line by slicing bytes: parsing
    the answer and encoding a dict cost the router about a fifth of its CPU per request.
    Anything else is parsed.
    """
    line = _one_record_line(request_id, version, ts, content)
    if line is not None:
        return line
    try:
        answer = json.loads(content)
        predictions = answer["predictions"]
    except (ValueError, TypeError, KeyError):
        return b""
    if not isinstance(predictions, list):
        return b""
    probabilities = answer.get("probabilities")
    return prediction_lines(
        request_id, version, ts, predictions, probabilities if isinstance(probabilities, list) else None
    )


_HEAD = b'{"predictions":['
_PROBA = b'],"probabilities":[['
_VERSION = b'],"version":'
_NUMBER = frozenset(b"0123456789.-+eE")
_NUMBERS = _NUMBER | frozenset(b",")


def _one_record_line(request_id: str, version: int | str, ts: float, content: bytes) -> bytes | None:
    """The line of a one-record answer ``{"predictions":[N],("probabilities":[[P,..]],)"version":..}``, or None."""
    if not content.startswith(_HEAD):
        return None
    end = content.find(b"]", len(_HEAD))
    prediction = content[len(_HEAD) : end]
    if end < 0 or not prediction or not _NUMBER.issuperset(prediction):
        return None
    head = b'{"id":"%s","row":0,"ts":%r,"version":%s,"prediction":%s' % (
        request_id.encode(),
        ts,
        b"%d" % version if isinstance(version, int) else json.dumps(version).encode(),
        prediction,
    )
    if content.startswith(_VERSION, end):
        return head + b"}\n"
    if not content.startswith(_PROBA, end):
        return None
    start = end + len(_PROBA)
    stop = content.find(b"]", start)
    proba = content[start:stop]
    if stop < 0 or not proba or not _NUMBERS.issuperset(proba) or not content.startswith(b"]]", stop):
        return None
    if not content.startswith(b',"version":', stop + 2):
        return None
    return head + b',"proba":[%s]}\n' % proba


class PredictionLog:
    """The writing end of one model's prediction log, kept open by the router that owns it."""

    def __init__(self, directory: Path, *, limit: int = SEGMENT_LIMIT) -> None:
        self.directory = Path(directory)
        self.limit = limit
        self.fd: int | None = None
        self.size = 0
        self.path: Path | None = None

    def append(self, lines: bytes) -> None:
        """Append ``lines`` (one request's) in one write; a full segment first gives way to a new one."""
        if self.fd is None or self.size + len(lines) > self.limit:
            self._roll()
        assert self.fd is not None
        written = os.write(self.fd, lines)
        self.size += written
        if written != len(lines):  # a full disk: the line is cut short, and said so
            print(f"router: a prediction log write was cut short ({written} of {len(lines)} bytes)", file=sys.stderr)

    def _roll(self) -> None:
        """Close the current segment (if any) and open a new one named by the UTC time and this pid."""
        self.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        stem = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}"
        path = self.directory / f"{stem}.jsonl"
        n = 1
        while path.exists():  # rolled within the same second: a name of its own
            n += 1
            path = self.directory / f"{stem}-{n}.jsonl"
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.size = os.fstat(self.fd).st_size
        self.path = path

    def close(self) -> None:
        """Close the open segment; the next append opens a new one."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _segments(model_dir: Path, since: float | None) -> list[Path]:
    """The log's segments in name order (oldest first), without those last written before ``since``."""
    folder = Path(model_dir) / PREDICTIONS_DIR
    if not folder.is_dir():
        return []
    found = sorted(folder.glob("*.jsonl"))
    if since is None:
        return found
    return [p for p in found if p.stat().st_mtime >= since - _MTIME_SLACK]


def _read_segment(path: Path) -> Any:
    """One segment as a pyarrow table; a last line still being written (no newline yet) is left out."""
    # ``prediction`` is inferred: integers for a classifier's class indices, doubles for a regressor
    options = pj.ParseOptions(explicit_schema=_SCHEMA, unexpected_field_behavior="infer")
    with pa.memory_map(str(path)) as source:  # no copy into Python bytes
        data = source.read_buffer()
        end = _complete(data)
        if end == 0:
            return None
        try:
            return pj.read_json(
                pa.BufferReader(data.slice(0, end)),
                read_options=pj.ReadOptions(block_size=_BLOCK),
                parse_options=options,
            )
        except pa.ArrowInvalid:
            return _read_damaged(data.slice(0, end).to_pybytes(), _SCHEMA)


def _complete(data: Any) -> int:
    """The length of ``data`` up to and including its last newline (0 when it has none)."""
    size = len(data)
    start = max(0, size - 65536)
    while True:
        found = data.slice(start, size - start).to_pybytes().rfind(b"\n")
        if found >= 0:
            return int(start + found + 1)
        if start == 0:
            return 0
        size, start = start, max(0, start - 65536)


def _read_damaged(data: bytes, schema: Any) -> Any:
    """The lines of a segment that parse, one by one: a cut-short write (full disk) costs its own line only."""
    rows = []
    for line in data.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and {"id", "row", "ts", "version", "prediction"} <= item.keys():
            rows.append(item)
    if not rows:
        return None
    fields = [*schema, pa.field("prediction", pa.float64())]
    if all(isinstance(r["prediction"], int) for r in rows):
        fields[-1] = pa.field("prediction", pa.int64())
    return pa.Table.from_pylist(rows, schema=pa.schema(fields))


def _empty() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "request_id": pd.Series(dtype=object),
            "row": pd.Series(dtype="int64"),
            "ts": pd.Series(dtype="float64"),
            "version": pd.Series(dtype="int64"),
            "prediction": pd.Series(dtype="float64"),
        }
    )


def _proba_columns(column: Any) -> dict[str, np.ndarray[Any, Any]]:
    """The ``proba`` list column as ``proba_0 .. proba_{k-1}`` float columns (NaN where a row has none)."""

    if column.null_count == len(column):
        return {}
    lengths = pc.list_value_length(column)
    k = int(pc.max(lengths).as_py() or 0)
    if k == 0:
        return {}
    n = len(column)
    if column.null_count == 0 and int(pc.min(lengths).as_py()) == k:
        matrix = pc.list_flatten(column).to_numpy(zero_copy_only=False).reshape(n, k)
    else:  # versions without probabilities beside ones with: fill what each row has
        matrix = np.full((n, k), np.nan)
        for i, row in enumerate(column.to_pylist()):
            if row:
                matrix[i, : len(row)] = row
    return {f"proba_{j}": matrix[:, j] for j in range(k)}


def prediction_table(model_dir: Path, since: float | None = None) -> Any:
    """The prediction log as one pyarrow table (``id, row, ts, version, proba, prediction``); None when empty."""
    tables = [t for t in (_read_segment(p) for p in _segments(model_dir, since)) if t is not None and len(t)]
    if not tables:
        return None
    table = pa.concat_tables(tables, promote_options="permissive")
    if since is not None:
        table = table.filter(pc.greater_equal(table["ts"], since))
    if "prediction" not in table.column_names:
        table = table.append_column("prediction", pa.nulls(len(table), pa.float64()))
    return table


def read_predictions(model_dir: Path, since: float | None = None) -> pd.DataFrame:
    """The prediction log of the model served from ``model_dir`` (``<workspace>/serving/<model>``), as a frame.

    Columns ``request_id, row, ts, version, prediction`` and, where the model server gave
    probabilities, ``proba_0 .. proba_{k-1}`` (float64). ``since`` keeps predictions with
    ``ts >= since`` (unix seconds); segments last written before it are not read at all.
    """
    table = prediction_table(model_dir, since)
    if table is None:
        return _empty()
    return pd.DataFrame(
        {
            "request_id": table["id"].to_pandas(),
            "row": table["row"].to_numpy(),
            "ts": table["ts"].to_numpy(),
            "version": table["version"].to_numpy(),
            "prediction": table["prediction"].to_numpy(zero_copy_only=False),
            **_proba_columns(table["proba"]),
        },
        copy=False,
    )
