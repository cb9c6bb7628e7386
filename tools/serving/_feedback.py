"""Labels that arrive later: the feedback contract, checking a batch of labels, and storing it whole.

Three files under a model's serving home ``<workspace>/serving/<model>/``:

- ``feedback.json``, the **contract**, written by the deploy path whenever a version starts serving
  (``record_serving_version``): the task, the target's name, each serving version's classes (from
  its ``mlops.target.classes`` tag; index i is class i, as the model server's predictions are),
  the sensitive features of its training spec, whether they are required with each label
  (the spec names ``data.sensitive_features`` and watches ``bias``, or everything: an empty
  ``monitoring.watch``), and ``post_feedback``: whether the policy in force at that deploy lets
  the router take labels (``feedback_permission``) and how far back they may go;
- ``predictions/``, the router's prediction log (``_predictions``), which every label must match
  by ``request_id`` and ``row``;
- ``feedback/<batch>.parquet``, one file per accepted batch: ``request_id`` (string), ``row``
  (int64), ``label`` (the class name; float64 for a regressor), ``received_at`` (float64, unix
  seconds) and ``attr.<feature>`` (string, redacted) per sensitive feature given.

A batch (a CSV or Parquet file through ``record_feedback`` or ``mlops-supervisor feedback``, or
the router's ``POST /feedback``) is checked in full first (``validate_feedback``): the columns
against the contract, every row against the prediction log, the version's classes and the
feedback already stored. Any problem refuses the whole batch with one ``InvalidInputError``
(``feedback_invalid``) naming each problem's rows and what is allowed (a refusal quotes a label
only from rows that matched the log, so a file of anything else is not read back to its
sender); a good batch is written
to a temporary name and renamed, so it is there whole or not at all. A lock beside the contract
orders batches across processes (the CLI and the router), so a duplicate cannot slip between
the check and the write.

Labels are taken for predictions of the last ``label_window_hours`` (twice the policy's
``monitoring.quality_window_hours``): a label that comes later could never count in a quality
window, and checking a batch then reads only the recent segments of the prediction log, not
all of it.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from pydantic import Field

from mlops_supervisor.policies import InvalidInputError, Policy, Redactor, redact_value
from mlops_supervisor.tools._spec import PipelineSpec
from mlops_supervisor.tools.core import GovernedTool, ModelArgs, ToolContext, to_json, write_json_atomic
from mlops_supervisor.tools.serving._predictions import prediction_table

__all__ = [
    "CONTRACT_FILE",
    "FEEDBACK_DIR",
    "LABEL_WINDOW_FACTOR",
    "MAX_GROUPS",
    "feedback_contract",
    "feedback_frame",
    "feedback_permission",
    "feedback_tool",
    "ingest_feedback",
    "label_window_hours",
    "load_feedback_file",
    "read_feedback",
    "read_feedback_contract",
    "record_serving_version",
    "validate_feedback",
]

CONTRACT_FILE = "feedback.json"
FEEDBACK_DIR = "feedback"
MAX_GROUPS = 1000
"""A sensitive attribute with more distinct values than this is an identifier, not a group: refused."""

LABEL_WINDOW_FACTOR = 2.0
"""Labels are taken for predictions made within this many quality windows (``label_window_hours``)."""

_CODE = "feedback_invalid"
_TOOL = "record_feedback"
_SHOWN = 5  # rows and values named in a message before "and N more"


# --- the contract -------------------------------------------------------------------------


def label_window_hours(policy: Policy) -> float:
    """How far back (hours before now) a prediction may be and still take a label: twice the quality window."""
    return LABEL_WINDOW_FACTOR * policy.monitoring.quality_window_hours


def feedback_permission(policy: Policy) -> dict[str, Any]:
    """Whether ``policy`` lets the router take labels (``POST /feedback``), for the contract's ``post_feedback``.

    Not when it denies ``record_feedback`` (``tools.denied``) or holds it for an approval
    (``approval.required_for``), which a POST cannot wait for. ``policy`` names the policy
    (its source and digest) for the router's refusal; ``label_window_hours`` goes with it.
    """
    name = policy.source + (f" (digest {policy.digest[:12]})" if policy.digest else "")
    if _TOOL in policy.tools.denied:
        allowed, reason = False, f"the policy denies {_TOOL} (tools.denied)"
    elif policy.requires_approval(_TOOL):
        allowed, reason = (
            False,
            f"the policy holds {_TOOL} for an approval (approval.required_for), which a POST cannot wait for; "
            "send the labels with `mlops-supervisor feedback MODEL FILE`",
        )
    else:
        allowed, reason = True, f"the policy allows {_TOOL}"
    return {
        "allowed": allowed,
        "reason": reason,
        "policy": name,
        "label_window_hours": label_window_hours(policy),
    }


def feedback_contract(
    model: str,
    version: int,
    tags: Mapping[str, str],
    spec: PipelineSpec | None,
    previous: Mapping[str, Any] | None = None,
    policy: Policy | None = None,
) -> dict[str, Any]:
    """The contract once ``version`` (with these MLflow ``tags``, trained from ``spec``) serves too.

    Versions accumulate (a label may be for any version that served); the task, target and
    sensitive features are the newest version's. Sensitive attributes are required when the spec
    names them and watches bias, as ``monitor_model`` reads ``watch``: an empty one watches
    everything. ``policy`` (the one in force now) gives ``post_feedback``; without it the
    contract has none, and the router takes no labels.
    """
    task = tags.get("mlops.task") or (spec.training.task if spec is not None else "classification")
    target = tags.get("mlops.target") or (spec.data.target if spec is not None else "label")
    sensitive = list(spec.data.sensitive_features) if spec is not None else []
    watched = spec is not None and (not spec.monitoring.watch or "bias" in spec.monitoring.watch)
    versions = dict((previous or {}).get("versions") or {})
    entry: dict[str, Any] = {}
    if task == "classification" and tags.get("mlops.target.classes"):
        entry["classes"] = [str(c) for c in json.loads(tags["mlops.target.classes"])]
    versions[str(version)] = entry
    return {
        "model": model,
        "task": task,
        "target": target,
        "versions": dict(sorted(versions.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0)),
        "sensitive_features": sensitive,
        "require_sensitive": bool(watched and sensitive),
        **({"post_feedback": feedback_permission(policy)} if policy is not None else {}),
    }


def record_serving_version(
    model_dir: Path, client: Any, model: str, version: int, *, policy: Policy | None = None
) -> dict[str, Any]:
    """Write ``model_dir/feedback.json`` with ``version`` in it (read from the MLflow store ``client``); the contract.

    ``policy`` is the one in force: whether the router may take labels is decided here, at deploy.
    """
    from mlops_supervisor.tools.registry import model_version, trained_from

    found = model_version(client, model, version)
    tags = dict(found.tags)
    spec = trained_from(client, found)
    path = Path(model_dir) / CONTRACT_FILE
    previous = json.loads(path.read_text("utf-8")) if path.exists() else None
    contract = feedback_contract(model, version, tags, spec, previous, policy)
    write_json_atomic(path, contract)
    return contract


def read_feedback_contract(model_dir: Path) -> dict[str, Any]:
    """The feedback contract of the model served from ``model_dir``; ``InvalidInputError`` when it has none."""
    path = Path(model_dir) / CONTRACT_FILE
    try:
        contract: dict[str, Any] = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise InvalidInputError(
            _CODE,
            f"model {Path(model_dir).name!r} has no feedback contract in this workspace ({path} is missing): "
            "labels are taken only for a model that serves; deploy a version first",
        ) from None
    return contract


# --- reading --------------------------------------------------------------------------------


def read_feedback(model_dir: Path) -> pd.DataFrame:
    """Every stored label of the model served from ``model_dir``, as one frame (pyarrow, no per-row Python).

    Columns ``request_id, row, label, received_at`` and ``attr.<feature>`` for the sensitive
    features any batch gave (null where a batch did not).
    """

    files = sorted((Path(model_dir) / FEEDBACK_DIR).glob("*.parquet"))
    if not files:
        return pd.DataFrame(
            {
                "request_id": pd.Series(dtype=object),
                "row": pd.Series(dtype="int64"),
                "label": pd.Series(dtype=object),
                "received_at": pd.Series(dtype="float64"),
            }
        )
    tables = [pq.read_table(f) for f in files]
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")
    return table.to_pandas()


def load_feedback_file(path: Path, *, max_mb: float = 1024.0) -> pd.DataFrame:
    """A CSV (every cell read as text) or Parquet file of labels; ``InvalidInputError`` naming what is wrong."""
    path = Path(path)
    allowed = "give a CSV or Parquet file of labels (request_id, row, label and the sensitive attributes)"
    if not path.is_file():
        raise InvalidInputError(_CODE, f"feedback file {path} does not exist; {allowed}")
    size_mb = path.stat().st_size / 1e6
    if size_mb > max_mb:
        raise InvalidInputError(_CODE, f"feedback file {path} is {size_mb:,.0f} MB, over the limit of {max_mb:,.0f} MB")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            # text as written: a class named "1" stays "1", an empty cell is missing, "NA" is a value
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(_CODE, f"feedback file {path} cannot be read as {suffix[1:]}: {exc}") from None
    raise InvalidInputError(_CODE, f"feedback file {path} is neither .csv nor .parquet; {allowed}")


def feedback_frame(body: bytes) -> pd.DataFrame:
    """The labels of a ``POST /feedback`` body (``{"feedback": [{...}, ...]}``) as a frame; ``InvalidInputError``."""
    shape = 'send {"feedback": [{"request_id": "<x-request-id>", "row": 0, "label": "<class>", ...}, ...]}'
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise InvalidInputError(_CODE, f"the body is not JSON ({exc}); {shape}") from None
    records = payload.get("feedback") if isinstance(payload, dict) else None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise InvalidInputError(_CODE, f"the body has no list of objects under 'feedback'; {shape}")
    return pd.DataFrame.from_records(records)


# --- checking -------------------------------------------------------------------------------


def _rows(index: np.ndarray[Any, Any]) -> str:
    """``rows 1, 4, 9 and 12 more``: the first few of ``index`` (0-based positions), counted from 1."""
    shown = ", ".join(str(int(i) + 1) for i in index[:_SHOWN])
    more = f" and {index.size - _SHOWN:,} more" if index.size > _SHOWN else ""
    return f"row{'s' if index.size > 1 else ''} {shown}{more}"


def _values(values: Sequence[Any]) -> str:
    """The first few distinct ``values``, quoted and cut short."""
    distinct = list(dict.fromkeys(str(v) for v in values))
    shown = ", ".join(repr(v if len(v) <= 40 else v[:37] + "...") for v in distinct[:_SHOWN])
    return shown + (f" and {len(distinct) - _SHOWN:,} more" if len(distinct) > _SHOWN else "")


class _Problems:
    """The problems found in one batch, each naming its rows."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, text: str) -> None:
        self.items.append(text)

    def rows(self, mask: Any, what: str) -> bool:
        """Note ``what`` for the rows where ``mask`` holds; whether there were any."""
        index = np.flatnonzero(np.asarray(mask, dtype=bool))
        if index.size:
            self.items.append(f"{_rows(index)}: {what}")
        return bool(index.size)


def _allowed(contract: Mapping[str, Any]) -> str:
    """What a batch may hold, in words, for the end of every refusal."""
    target = contract.get("target") or "label"
    label = "label" if target == "label" else f"label (or {target!r}, not both)"
    sensitive = list(contract.get("sensitive_features") or [])
    need = "required: the policy watches this model for bias" if contract.get("require_sensitive") else "optional"
    attrs = f"; sensitive attributes {', '.join(repr(s) for s in sensitive)} ({need})" if sensitive else ""
    return f"allowed columns: request_id, row (optional, default 0), {label}{attrs}. Rows are counted from 1"


def _refused(contract: Mapping[str, Any], problems: _Problems) -> InvalidInputError:
    count = len(problems.items)
    return InvalidInputError(
        _CODE,
        f"feedback for {contract.get('model')!r} refused, nothing was stored; {count} problem{'s' if count > 1 else ''}: "
        + "; ".join(problems.items)
        + f". {_allowed(contract)}.",
    )


def _not_scalar(column: pd.Series) -> np.ndarray[Any, Any]:
    """Where an object column holds something other than text, a number or nothing (a list, an object)."""
    if column.dtype != object:
        return np.zeros(len(column), dtype=bool)
    odd: np.ndarray[Any, Any] = ~column.map(lambda v: v is None or isinstance(v, str | int | float)).to_numpy(
        dtype=bool
    )
    return odd


def _as_text(column: pd.Series) -> pd.Series:
    """Labels or attributes as text; whole floats (a Parquet column with gaps) without their ``.0``."""
    if pd.api.types.is_float_dtype(column) and bool((column.dropna() % 1 == 0).all()):
        column = column.astype("Int64")
    return column.astype("string")


def _check_columns(frame: pd.DataFrame, contract: Mapping[str, Any], problems: _Problems) -> str | None:
    """Column problems noted; the label's column, or None when the rows cannot be checked at all."""
    target = contract.get("target") or "label"
    names = ["label", *([target] if target != "label" else [])]
    sensitive = list(contract.get("sensitive_features") or [])
    columns = [str(c) for c in frame.columns]
    unknown = [c for c in columns if c not in {"request_id", "row", *names, *sensitive}]
    if unknown:
        problems.add(f"unknown column{'s' if len(unknown) > 1 else ''} {_values(unknown)}")
    labels = [c for c in names if c in columns]
    if len(labels) > 1:
        problems.add(f"both 'label' and {target!r} are given; give the label once")
    elif not labels:
        problems.add(f"no label column; name it 'label' (or {target!r})")
    if "request_id" not in columns:
        problems.add("no 'request_id' column; give the x-request-id each prediction was answered with")
    missing = [s for s in sensitive if s not in columns]
    if contract.get("require_sensitive") and missing:
        problems.add(f"missing sensitive attribute column{'s' if len(missing) > 1 else ''} {_values(missing)}")
    if frame.empty:
        problems.add("the feedback holds no rows")
    return labels[0] if len(labels) == 1 and "request_id" in columns and not frame.empty else None


def _check_keys(
    frame: pd.DataFrame, problems: _Problems
) -> tuple[pd.Series, np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The request ids as text, the rows as int64 and where both are well-formed; problems noted."""
    scalar = _not_scalar(frame["request_id"])
    ids = frame["request_id"].where(~scalar).astype("string")
    good_id = ids.str.fullmatch(r"[0-9a-f]{32}").fillna(False).to_numpy(dtype=bool)
    problems.rows(~good_id, "request_id is not a request id (32 lowercase hex digits, as in the x-request-id header)")
    if "row" in frame.columns:
        raw = frame["row"].where(~_not_scalar(frame["row"]))
        number = pd.to_numeric(raw.where(raw.map(lambda v: not isinstance(v, bool))), errors="coerce")
        good_row = (number.notna() & (number >= 0) & (number % 1 == 0)).to_numpy(dtype=bool)
        problems.rows(~good_row & frame["row"].notna().to_numpy(), "row is not a whole number from 0 up")
        good_row = good_row & frame["row"].notna().to_numpy()
        problems.rows(frame["row"].isna().to_numpy(), "row is empty (leave the column out for one-record requests)")
        rows = number.where(good_row, -1).astype("int64").to_numpy()
    else:
        good_row = np.ones(len(frame), dtype=bool)
        rows = np.zeros(len(frame), dtype="int64")
    return ids, rows, good_id & good_row


def _check_labels(label: pd.Series, versions: pd.Series, contract: Mapping[str, Any], problems: _Problems) -> pd.Series:
    """The labels as stored (class names as text, or float64), problems noted for those that are not allowed."""
    odd = _not_scalar(label)
    problems.rows(odd, "label is not a single value")
    label = label.where(~odd)
    problems.rows(label.isna().to_numpy() & ~odd, "no label")
    if contract.get("task") != "classification":
        numbers = pd.to_numeric(label, errors="coerce").astype("float64")
        bad = label.notna().to_numpy() & ~np.isfinite(numbers.to_numpy())
        # a value is quoted only from rows that matched the log: a file of anything else is not read back
        matched = bad & versions.notna().to_numpy()
        problems.rows(
            matched, f"label {_values(label[matched].tolist())} is not a number, and this model is a regressor"
        )
        problems.rows(bad & ~matched, "label is not a number, and this model is a regressor")
        return numbers
    text = _as_text(label)
    known = versions.notna().to_numpy() & text.notna().to_numpy()
    served = contract.get("versions") or {}
    for version in sorted(set(versions[known].astype("int64").tolist())):
        here = known & (versions == version).to_numpy()
        classes = (served.get(str(version)) or {}).get("classes")
        if classes is None:
            problems.rows(here, f"version {version}'s classes are not in the feedback contract; redeploy it")
            continue
        bad = here & ~text.isin(classes).fillna(False).to_numpy(dtype=bool)
        problems.rows(
            bad,
            f"label {_values(text[bad].tolist())} is not a class of version {version} (its classes: {_values(classes)})",
        )
    return text


def _check_attributes(frame: pd.DataFrame, contract: Mapping[str, Any], problems: _Problems) -> dict[str, pd.Series]:
    """The sensitive attributes given, as text; problems noted (missing when required, too many groups)."""
    found: dict[str, pd.Series] = {}
    for feature in contract.get("sensitive_features") or []:
        if feature not in frame.columns:
            continue
        odd = _not_scalar(frame[feature])
        problems.rows(odd, f"{feature} is not a single value")
        text = _as_text(frame[feature].where(~odd))
        if contract.get("require_sensitive"):
            problems.rows(text.isna().to_numpy() & ~odd, f"no value for {feature!r}, which is required")
        groups = int(text.nunique(dropna=True))
        if groups > MAX_GROUPS:
            problems.add(
                f"{feature!r} has {groups:,} distinct values, more than {MAX_GROUPS:,}: a sensitive attribute "
                "names a group, not a person"
            )
        found[feature] = text
    return found


def _logged(model_dir: Path, asked: Any, since: float | None) -> pd.DataFrame:
    """The logged predictions (request_id, row, version) since ``since`` of the request ids in ``asked`` (pyarrow)."""
    table = prediction_table(model_dir, since)
    if table is None:
        return pd.DataFrame({"request_id": [], "row": [], "version": []})
    table = table.filter(pc.is_in(table["id"], value_set=asked))
    return pd.DataFrame(
        {"request_id": table["id"].to_pandas(), "row": table["row"].to_numpy(), "version": table["version"].to_numpy()}
    )


def _stored_keys(model_dir: Path, asked: Any) -> pd.DataFrame:
    """The (request_id, row) of the stored labels for the request ids in ``asked``."""
    files = sorted((Path(model_dir) / FEEDBACK_DIR).glob("*.parquet"))
    if not files:
        return pd.DataFrame({"request_id": [], "row": []})
    table = pa.concat_tables([pq.read_table(f, columns=["request_id", "row"]) for f in files])
    return table.filter(pc.is_in(table["request_id"], value_set=asked)).to_pandas()


def _index(values: pd.DataFrame) -> pd.MultiIndex:
    return pd.MultiIndex.from_arrays([values["request_id"].astype(str), values["row"].astype("int64")])


def validate_feedback(
    model_dir: Path,
    frame: pd.DataFrame,
    *,
    redactor: Redactor,
    received_at: float | None = None,
    label_window_hours: float | None = None,
) -> pd.DataFrame:
    """The rows of ``frame`` as they would be stored, or ``InvalidInputError`` naming every problem.

    Checks the columns against the contract; each row's request id and row against the
    prediction log (its predictions of the last ``label_window_hours``; all of them when None)
    and against the feedback already stored; duplicates within the batch; each label against
    its version's classes (or, for a regressor, that it is a number); the sensitive attributes
    (present when required, at most ``MAX_GROUPS`` groups). Sensitive values are redacted, one
    distinct value at a time.
    """
    model_dir = Path(model_dir)
    contract = read_feedback_contract(model_dir)
    problems = _Problems()
    label_column = _check_columns(frame, contract, problems)
    if label_column is None:
        raise _refused(contract, problems)
    frame = frame.reset_index(drop=True)
    ids, rows, keyed = _check_keys(frame, problems)
    keys = pd.DataFrame({"request_id": ids.where(keyed, None), "row": rows})
    problems.rows(
        keyed & keys.duplicated(keep="first").to_numpy(), "request_id and row repeat an earlier row of this feedback"
    )
    asked = pa.array(ids[keyed].unique().astype(str), type=pa.string())
    since = None if label_window_hours is None else time.time() - label_window_hours * 3600
    logged = _logged(model_dir, asked, since)
    versions = pd.Series(logged["version"].to_numpy(), index=_index(logged), dtype="float64")
    wanted = _index(keys.fillna({"request_id": ""}))
    found = versions[~versions.index.duplicated()].reindex(wanted).to_numpy()
    version_of = pd.Series(np.where(keyed, found, np.nan))
    window = (
        ""
        if since is None
        else f" made since {datetime.fromtimestamp(since, UTC).isoformat(timespec='seconds')} (labels are taken only "
        f"for predictions of the last {label_window_hours:g} h)"
    )
    problems.rows(
        keyed & np.isnan(found),
        f"request_id and row name no prediction in the prediction log of {contract['model']!r}{window}",
    )
    stored = _stored_keys(model_dir, asked)
    if len(stored):
        already = wanted.isin(_index(stored)) & keyed
        problems.rows(already, "a label for this request_id and row is already stored")
    labels = _check_labels(frame[label_column], version_of, contract, problems)
    attributes = _check_attributes(frame, contract, problems)
    if problems.items:
        raise _refused(contract, problems)
    return _stored_rows(ids, rows, labels, attributes, redactor=redactor, received_at=received_at)


def _stored_rows(
    ids: pd.Series,
    rows: np.ndarray[Any, Any],
    labels: pd.Series,
    attributes: Mapping[str, pd.Series],
    *,
    redactor: Redactor,
    received_at: float | None,
) -> pd.DataFrame:
    """The checked batch in the stored layout; each distinct sensitive value redacted once."""
    stored = pd.DataFrame(
        {
            "request_id": ids.astype(str).to_numpy(),
            "row": rows.astype("int64"),
            "label": labels.to_numpy(dtype=object) if labels.dtype == "string" else labels.to_numpy(),
            "received_at": np.full(len(rows), time.time() if received_at is None else received_at),
        }
    )
    for feature, values in attributes.items():
        distinct = [str(v) for v in values.dropna().unique()]
        redacted = dict(zip(distinct, redact_value(redactor, distinct), strict=True))
        stored[f"attr.{feature}"] = values.map(redacted).to_numpy(dtype=object)
    return stored


# --- storing --------------------------------------------------------------------------------


@contextmanager
def _batch_lock(model_dir: Path) -> Iterator[None]:
    """Batches of one model one at a time, across processes (the CLI, the router's threads)."""
    fd = os.open(Path(model_dir) / ".feedback.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_batch(path: Path, rows: pd.DataFrame) -> None:
    """Write ``rows`` to ``path`` through a temporary file, flushed, then renamed: whole or not at all."""

    fields = [
        pa.field("request_id", pa.string()),
        pa.field("row", pa.int64()),
        pa.field("label", pa.float64() if pd.api.types.is_float_dtype(rows["label"]) else pa.string()),
        pa.field("received_at", pa.float64()),
        *(pa.field(c, pa.string()) for c in rows.columns if c.startswith("attr.")),
    ]
    table = pa.Table.from_pandas(rows, schema=pa.schema(fields), preserve_index=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(table, tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def ingest_feedback(
    model_dir: Path,
    frame: pd.DataFrame,
    *,
    redactor: Redactor,
    source: str = "",
    label_window_hours: float | None = None,
) -> dict[str, Any]:
    """Check ``frame`` (``validate_feedback``) and store it as one batch; what was stored.

    Nothing is written unless every row passes; ``InvalidInputError`` names every problem.
    ``label_window_hours`` bounds how old a labelled prediction may be (``validate_feedback``).
    """
    model_dir = Path(model_dir)
    contract = read_feedback_contract(model_dir)
    with _batch_lock(model_dir):
        rows = validate_feedback(model_dir, frame, redactor=redactor, label_window_hours=label_window_hours)
        batch = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}"
        path = model_dir / FEEDBACK_DIR / f"{batch}.parquet"
        _write_batch(path, rows)
    return {
        "model": contract["model"],
        "accepted": len(rows),
        "batch": batch,
        "path": str(path),
        "attributes": [c.removeprefix("attr.") for c in rows.columns if c.startswith("attr.")],
        **({"source": source} if source else {}),
    }


# --- the data agent's tool -----------------------------------------------------------------


class _FeedbackArgs(ModelArgs):
    path: str = Field(
        description="a CSV or Parquet file of labels: request_id (the x-request-id of the prediction), row "
        "(optional, default 0), label (or the target's name) and the sensitive attributes the model's "
        "feedback contract names"
    )


def record_feedback(ctx: ToolContext, model: str, path: str) -> str:
    """Store a file of labels for ``model``'s served predictions, checked in full first; what was stored, as JSON."""
    frame = load_feedback_file(Path(path), max_mb=ctx.max_dataset_mb)
    result = ingest_feedback(
        Path(ctx.workspace) / "serving" / model,
        frame,
        redactor=ctx.redactor,
        source=path,
        label_window_hours=label_window_hours(ctx.policy),
    )
    return to_json(result)


def feedback_tool(ctx: ToolContext) -> GovernedTool:
    """record_feedback, bound to ``ctx`` (the data agent's; mutating, so it passes the chokepoint)."""
    return GovernedTool.from_function(
        "record_feedback",
        "Store labels that arrived after the predictions (a CSV or Parquet file keyed by the request ids the "
        "router returned), checked against the prediction log, the model's classes and the labels already "
        "stored; the whole file or nothing.",
        _FeedbackArgs,
        partial(record_feedback, ctx),
        mutates=True,
    )
