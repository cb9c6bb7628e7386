"""The data stage: load, validate against the data contract, scan for PII, version and split.

``_frames`` holds plain functions over frames (load, digest, split, profile), ``_checks`` the
data contract as a table of checks, ``_pii`` the column scan, its drop-or-hash actions and the
cell-by-cell redaction of the kept text columns, ``_store`` where versioned data lives in the
workspace, and ``_tools`` the data agent's tools.
"""

from mlops_supervisor.tools.data._checks import CHECKS, Check, validate_frame
from mlops_supervisor.tools.data._frames import (
    SKLEARN_DATASETS,
    dataset_digest,
    feature_columns,
    load_table,
    normalize_frame,
    profile_frame,
    split_frame,
)
from mlops_supervisor.tools.data._pii import (
    CellRedaction,
    apply_cell_redactions,
    apply_pii_actions,
    pii_hash_key,
    redact_text_cells,
    scan_frame_for_pii,
    text_columns,
)
from mlops_supervisor.tools.data._store import data_key, datasets_dir, pointer_path, read_pointer
from mlops_supervisor.tools.data._tools import data_tools

__all__ = [
    "CHECKS",
    "SKLEARN_DATASETS",
    "CellRedaction",
    "Check",
    "apply_cell_redactions",
    "apply_pii_actions",
    "data_key",
    "data_tools",
    "dataset_digest",
    "datasets_dir",
    "feature_columns",
    "load_table",
    "normalize_frame",
    "pii_hash_key",
    "pointer_path",
    "profile_frame",
    "read_pointer",
    "redact_text_cells",
    "scan_frame_for_pii",
    "split_frame",
    "text_columns",
    "validate_frame",
]
