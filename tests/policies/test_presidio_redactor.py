"""PresidioRedactor, the one redactor of every boundary: secrets, personal data, and the MLOps allow-list."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_supervisor.policies.pii import ALL_ENTITIES, DEFAULT_PII_ENTITIES, SECRET_ENTITIES, PresidioRedactor
from mlops_supervisor.policies.redaction import Finding, Redactor, redact_value
from mlops_supervisor.policies.secrets import find_secrets, secret_key_strength

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"  # copies of public texts, credited in its README.md
PAYLOADS = REPO / "benchmarks" / "data" / "redaction_payloads.json"  # built by benchmarks/redaction_payloads.py


@pytest.fixture(scope="module")
def redactor() -> PresidioRedactor:
    """The default redactor, its engine loaded once for the module."""
    r = PresidioRedactor()
    r.findings("Jane Smith called +1 415 555 0134.")
    return r


def _gone(secret: str, redacted: str) -> bool:
    """No 8-character piece of ``secret`` is left in ``redacted`` (a long token leaves no tail)."""
    return not any(secret[i : i + 8] in redacted for i in range(max(1, len(secret) - 7)))


AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GLPAT_LONG = "glpat-AbCdEfGhIjKlMnOpQrSt-uvwxyz0123456789_ABCDEFGHIJKLMN"

SECRET_CASES = [
    ("AWS_SECRET_ACCESS_KEY=" + AWS_SECRET, AWS_SECRET, "SECRET"),
    ("aws secret access key: " + AWS_SECRET + " (rotate monthly)", AWS_SECRET, "SECRET"),
    ("export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE", "API_KEY"),
    ("DB_PASSWORD=hunter2", "hunter2", "SECRET"),
    ("client_secret=Zk8yQ2xvdWRTZWNyZXQ", "Zk8yQ2xvdWRTZWNyZXQ", "SECRET"),
    ("client_secret: s3cr3t-for-oauth", "s3cr3t-for-oauth", "SECRET"),
    ("MLFLOW_TRACKING_PASSWORD=mlf-Q9x7Lk2p", "mlf-Q9x7Lk2p", "SECRET"),
    ('{"api_key": "0123456789abcdef0123456789abcdef"}', "0123456789abcdef0123456789abcdef", "SECRET"),
    ("apiKey: 'Tr0ub4dor-and-3'", "Tr0ub4dor-and-3", "SECRET"),
    ("smtp_pwd = correcthorse", "correcthorse", "SECRET"),
    ("tracking uri postgres://mlflow:Sup3rS3cret@db.internal:5432/mlflow", "Sup3rS3cret", "SECRET"),
    ("cache redis://:pw-r3dis-99@cache:6379/0", "pw-r3dis-99", "SECRET"),
    ("curl -H 'Authorization: Bearer abcDEF123456ghiJKL789mno' https://api", "abcDEF123456ghiJKL789mno", "SECRET"),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA==", "SECRET"),
    ("notify https://hooks.slack.com/services/T0123ABCD/B0456EFGH/aBcDeFgHiJkLmNoPqRsTuVwX", "T0123ABCD/B0456EFGH/aBcDeFgHiJkLmNoPqRsTuVwX", "SECRET"),
    ("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "AbCdEfGhIjKlMnOpQrStUvWx", "API_KEY"),
    (
        "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;EndpointSuffix=core.windows.net",
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
        "SECRET",
    ),
    ("Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey=q8Wz3Lm0Pn5Rt7Vx9Yb2Cd4Ef6Gh8Jk1Mn3Pq5St7=", "q8Wz3Lm0Pn5Rt7Vx9Yb2Cd4Ef6Gh8Jk1Mn3Pq5St7=", "SECRET"),
    ("https://acme.blob.core.windows.net/m?sv=2022-11-02&sp=r&sig=Kx8%2Bq0Lm3Pn5Rt7Vx9Yb2Cd4Ef6Gh8Jk1Mn3Pq5St7%3D", "Kx8%2Bq0Lm3Pn5Rt7Vx9Yb2Cd4Ef6Gh8Jk1Mn3Pq5St7%3D", "SECRET"),
    ("token ghp_abc123DEF456ghi789JK", "ghp_abc123DEF456ghi789JK", "API_KEY"),
    ("GITHUB_TOKEN=ghp_0123456789abcdefghijklmnopqrstuvwxyzAB", "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB", "API_KEY"),
    ("github token 0123456789abcdef0123456789abcdef01234567", "0123456789abcdef0123456789abcdef01234567", "API_KEY"),
    ("pat github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456", "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456", "API_KEY"),
    (f"GITLAB_TOKEN={GLPAT_LONG} rest", GLPAT_LONG, "API_KEY"),
    ("OPENAI_API_KEY=sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123", "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123", "API_KEY"),
    ("key sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWx0123-xyz_789", "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWx0123-xyz_789", "API_KEY"),
    ("HF_TOKEN=hf_AbCdEfGhIjKlMnOpQrStUvWxYzabcdefgh", "hf_AbCdEfGhIjKlMnOpQrStUvWxYzabcdefgh", "API_KEY"),
    ("token dapi0123456789abcdef0123456789abcdef", "dapi0123456789abcdef0123456789abcdef", "API_KEY"),
    ("session eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "eyJzdWIiOiIxMjM0NTY3ODkwIn0", "JWT"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx4bGtXvYz1wQ2\n-----END RSA PRIVATE KEY-----", "MIIEowIBAAKCAQEAx4bGtXvYz1wQ2", "PRIVATE_KEY"),
    ("pasted: -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\nAAAAMwAAAAtzc2gtZWQyNTUxOQAAACB", "AAAAMwAAAAtzc2gtZWQyNTUxOQAAACB", "PRIVATE_KEY"),
    (
        '{"type": "service_account", "private_key_id": "0123456789abcdef0123456789abcdef01234567", '
        '"private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n-----END PRIVATE KEY-----\\n"}',
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
        "PRIVATE_KEY",
    ),
    ("my password is hunter2!", "hunter2!", "SECRET"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "secret", "entity"), SECRET_CASES, ids=[c[0][:40] for c in SECRET_CASES])
def test_each_secret_shape_is_redacted(redactor: PresidioRedactor, text: str, secret: str, entity: str) -> None:
    """The secret is gone from the redacted text (no tail left) and its finding has the secret entity."""
    out = redactor.redact_text(text)
    assert _gone(secret, out), out
    assert f"<{entity}>" in out, out
    assert any(f.entity in SECRET_ENTITIES for f in redactor.secret_findings(text))


def test_a_secret_assignment_keeps_its_key_readable(redactor: PresidioRedactor) -> None:
    """Only the value goes: the reader still sees which setting held a secret."""
    assert redactor.redact_text("DB_PASSWORD=hunter2 MODEL=churn") == "DB_PASSWORD=<SECRET> MODEL=churn"
    assert redactor.redact_text("postgres://app:pw-1234@db/prod") == "postgres://app:<SECRET>@db/prod"
    assert redactor.redact_text(f"GITLAB_TOKEN={GLPAT_LONG} rest") == "GITLAB_TOKEN=<API_KEY> rest"


def test_secret_findings_never_load_a_model() -> None:
    """Asking only for secrets (what the tool-call gate does) imports neither Presidio nor spaCy."""
    code = (
        "import sys\n"
        "from mlops_supervisor.policies.pii import PresidioRedactor\n"
        "r = PresidioRedactor()\n"
        "assert r.contains_secret('DB_PASSWORD=hunter2')\n"
        "assert not r.contains_secret('roc_auc=0.93')\n"
        "assert r.redact_text('max_depth=6 run 0123456789abcdef0123456789abcdef') == 'max_depth=6 run 0123456789abcdef0123456789abcdef'\n"
        "assert r.redact_text('token=ghp_abc123DEF456ghi789JK') == 'token=<API_KEY>'\n"
        "print(sorted(m for m in ('spacy', 'presidio_analyzer', 'thinc') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


PII_CASES = [
    ("Please ask Margaret Okonkwo to approve the deploy.", "Margaret Okonkwo", "PERSON"),
    ("The model card was reviewed by Daniel Fischer last week.", "Daniel Fischer", "PERSON"),
    ("Call the on-call engineer at +1 415 555 0134 if the canary fails.", "415 555 0134", "PHONE_NUMBER"),
    ("Her number is (212) 555-0187, call after five.", "555-0187", "PHONE_NUMBER"),
    ("Refund to IBAN DE89370400440532013000 was approved.", "DE89370400440532013000", "IBAN_CODE"),
    ("The customer's SSN is 536-22-8726 according to the ticket.", "536-22-8726", "US_SSN"),
    ("Requests from 203.0.113.77 were throttled by the router.", "203.0.113.77", "IP_ADDRESS"),
    ("Send the report to jane.doe+ml@example.co.uk today.", "jane.doe+ml@example.co.uk", "EMAIL_ADDRESS"),
    ("Card 4111 1111 1111 1111 was charged twice.", "4111 1111 1111 1111", "CREDIT_CARD"),
]


@pytest.mark.parametrize(("text", "value", "entity"), PII_CASES, ids=[c[2] for c in PII_CASES])
def test_personal_data_in_prose_is_redacted(redactor: PresidioRedactor, text: str, value: str, entity: str) -> None:
    """Names, phones, IBANs, SSNs, IP addresses, e-mails and cards in a sentence become placeholders."""
    out = redactor.redact_text(text)
    assert value not in out, out
    assert f"<{entity}>" in out, out


BENIGN = [
    "roc_auc",
    "max_depth",
    "metrics.roc_auc",
    "0.9530706587432183",
    "0.4111111111111111",
    "1e-05",
    "3f2a9c0d1e4b5a6978877665544332211",
    "0123456789abcdef0123456789abcdef",
    "m-0a1b2c3d4e5f60718293a4b5c6d7e8f9",
    "t-6b8e2f04c1d9",
    "sha256:" + "ab12" * 16,
    "c0ffee" * 21 + "ab",  # a 128-hex Ed25519 signature, as approval_signed/request_signed store it
    "203db13e-70c7-462b-9a3d-bf32640cb0be",
    "v3.1.0",
    "1.26.4",
    "2.0rc1",
    "2026-11-29T12:00:01.123Z",
    "2026-11-29T12:00:05+00:00",
    "ghcr.io/acme/churn-classifier:v3.1.0",
    "ghcr.io/acme/churn-classifier:v3.1.0@sha256:" + "0f" * 32,
    "churn-classifier-v3-7f9c6d5b8-x2k4q",
    "ml-serving",
    "/workspace/data/adult/v3/train.parquet",
    "/workspace/artifacts/model@v2/weights.bin",
    "data/exports/churn@2x/customers.parquet",
    "models:/churn-classifier@champion",
    f"mlflow-artifacts:/1/{'0123456789abcdef' * 2}/artifacts",
    "http://127.0.0.1:5000",
    "LogisticRegression",
    "sklearn.ensemble.GradientBoostingClassifier",
    "Exec-managerial",
    "United-States",
]


@pytest.mark.parametrize("identifier", BENIGN)
def test_mlops_identifiers_survive(redactor: PresidioRedactor, identifier: str) -> None:
    """An identifier is left as it is, alone, in a sentence, in a log line and as a JSON value."""
    texts = [
        identifier,
        f"Run finished for {identifier} with no errors.",
        f"2026-11-29T12:00:01Z INFO registry deployed {identifier} to staging (Jane Smith approved)",
        json.dumps({"value": identifier, "note": f"see {identifier}"}),
    ]
    for text in texts:
        assert identifier in redactor.redact_text(text), text


def test_ml_method_names_are_not_people(redactor: PresidioRedactor) -> None:
    """Statistical and optimiser names read as surnames to NER; they stay."""
    text = "Jensen-Shannon distance 0.41 and Wasserstein 0.07 on age; trained with Adam and Gini impurity."
    assert redactor.redact_text(text) == text


def test_a_path_with_an_at_sign_is_not_an_email(redactor: PresidioRedactor) -> None:
    """'@' in a path or a model URI is no e-mail; an address next to it still is."""
    text = "wrote /workspace/exports/run@2x/preds.csv and models:/churn@champion for ops@acme-analytics.com"
    assert redactor.redact_text(text) == (
        "wrote /workspace/exports/run@2x/preds.csv and models:/churn@champion for <EMAIL_ADDRESS>"
    )


def test_values_under_secret_keys_are_redacted_whole(redactor: PresidioRedactor) -> None:
    """redact_value hides the value of a key that names a secret, and of key/value and name/value records."""
    payload = {
        "params": {"max_depth": "6", "DB_PASSWORD": "hunter2", "max_tokens": "256", "pad_token": "[PAD]"},
        "tags": [{"key": "mlflow_tracking_password", "value": "pw1"}, {"key": "roc_auc", "value": "0.93"}],
        "env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": AWS_SECRET}, {"name": "MODEL", "value": "churn"}],
        "signed": {"key": "sha256:" + "ab" * 32, "signature": "cd" * 64},
        "note": "owner Jane Smith",
    }
    out = redact_value(redactor, payload)
    assert out["params"] == {"max_depth": "6", "DB_PASSWORD": "<SECRET>", "max_tokens": "256", "pad_token": "[PAD]"}
    assert out["tags"] == [
        {"key": "mlflow_tracking_password", "value": "<SECRET>"},
        {"key": "roc_auc", "value": "0.93"},
    ]
    assert out["env"] == [{"name": "AWS_SECRET_ACCESS_KEY", "value": "<SECRET>"}, {"name": "MODEL", "value": "churn"}]
    assert out["signed"] == payload["signed"]
    assert out["note"] == "owner <PERSON>"


@pytest.mark.parametrize(
    ("key", "strength"),
    [
        ("DB_PASSWORD", "strong"),
        ("client_secret", "strong"),
        ("clientSecret", "strong"),
        ("MLFLOW_TRACKING_PASSWORD", "strong"),
        ("apiKey", "strong"),
        ("aws_secret_access_key", "strong"),
        ("smtp_pwd", "strong"),
        ("CACHE_KEY", "weak"),
        ("GH_TOKEN", "weak"),
        ("secretName", None),
        ("token_uri", None),
        ("max_tokens", None),
        ("pad_token", None),
        ("password_policy", None),
        ("public_key", None),
        ("key", "weak"),
        ("keyA", None),
    ],
)
def test_key_names_that_hold_secrets(key: str, strength: str | None) -> None:
    """A key names a secret when its last part does (or any part is 'password'/'secret'); 'secretName' does not."""
    assert secret_key_strength(key) == strength


DETECT_SECRETS = {
    "config.env": ["gX69YO4CvBsVjzAwYxdGyDd30t5+9ez31gKATtj4"],
    "config.ini": ["123456789a1234", "23456789a1", "vh987tyw9ehy8ghis7vwyhiwbwitefy7w3ASDGYDGUASDG", "12345678901234"],
    "config.md": ["ToCynx5Se4e2PtoZxEhW7lUJcOX15c54"],
    "config.yaml": ["AKIATESTTESTTESTTEST", "ToCynx5Se4e2PtoZxEhW7lUJcOX15c54", "MjNjcnh1IDJieXJpdXYyeXJpaTJidnl1MnI4OXkyb3UwMg=="],
    "config2.yaml": ["MmIwMDA0MmY3NDgxYzdiMDU2YzRiNDEwZDI4ZjMzY2Y="],
    "short_files/last_line.ini": ["hunter2", "password123", "BEEF0123456789a"],
    "short_files/middle_line.yml": ["thequickbrownfoxjumpsoverthelazydog"],
    "files/private_key": ["somethingSuperRandomAndSecretHereThatShouldNeverBeShared"],
    "sample.diff": ["a2480a72004fc40d124495fd59f5b482034fbadd"],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(DETECT_SECRETS))
def test_detect_secrets_fixtures_have_their_secrets_caught(redactor: PresidioRedactor, name: str) -> None:
    """detect-secrets' own test files: each secret its detectors report is gone once redacted."""
    text = (FIXTURES / "detect-secrets-fixtures" / name).read_text("utf-8")
    out = redactor.redact_text(text)
    for secret in DETECT_SECRETS[name]:
        assert secret not in out, (name, secret)


def test_detect_secrets_fixtures_keep_what_is_no_secret(redactor: PresidioRedactor) -> None:
    """The UUID detect-secrets ignores stays, and so do the baseline's hashed secrets' neighbours.

    The 32-hex string in sample.diff stays too: it has the shape of an MLflow run id, which the
    allow-list keeps (detect-secrets' hex-entropy plugin reports it).
    """
    yaml_out = redactor.redact_text((FIXTURES / "detect-secrets-fixtures" / "config.yaml").read_text("utf-8"))
    assert "203db13e-70c7-462b-9a3d-bf32640cb0be" in yaml_out
    diff_out = redactor.redact_text((FIXTURES / "detect-secrets-fixtures" / "sample.diff").read_text("utf-8"))
    assert "2b00042f7481c7b056c4b410d28f33cf" in diff_out
    baseline = (FIXTURES / "detect-secrets-fixtures" / "baseline.file").read_text("utf-8")
    out = redactor.redact_text(baseline)
    hashed = re.findall(r'"hashed_secret": "([0-9a-f]{40})"', baseline)
    assert hashed and not any(h in out for h in hashed)
    assert json.loads(out)["generated_at"] == "2020-09-13T20:49:20Z"


def test_payload_corpus_every_planted_secret_and_no_benign_identifier() -> None:
    """The benchmark's MLOps payloads: every planted secret and personal datum goes, every benign identifier stays."""
    corpus = json.loads(PAYLOADS.read_text("utf-8"))
    redactor = PresidioRedactor()
    missed, mangled = [], []
    for item in corpus["payloads"]:
        text = item["kind"] == "text"
        out = redactor.redact_text(item["value"]) if text else json.dumps(redact_value(redactor, item["value"]))
        source = item["value"] if text else json.dumps(item["value"])
        for planted in item["secrets"] + item["pii"]:
            value = planted["value"] if text else json.dumps(planted["value"])[1:-1]
            if not _gone(value, out):
                missed.append((item["name"], planted["id"]))
        mangled += [(item["name"], b) for b in item["benign"] if out.count(b) < source.count(b)]
    assert missed == []
    assert mangled == []
    assert len(corpus["payloads"]) >= 150


def test_recall_on_the_synthetic_dev_set() -> None:
    """At least 90 % of the presidio-research gold spans are overlapped by a finding (Presidio's default: 75 %)."""
    rows = json.loads((FIXTURES / "presidio-synth" / "synth_dataset_v2.dev.json").read_text("utf-8"))
    found = PresidioRedactor(entities=ALL_ENTITIES).findings_many([r["full_text"] for r in rows])
    gold = [(s["start_position"], s["end_position"], fs) for r, fs in zip(rows, found, strict=True) for s in r["spans"]]
    caught = sum(any(f.start < end and start < f.end for f in fs) for start, end, fs in gold)
    assert caught / len(gold) >= 0.90


def test_batched_findings_equal_one_text_at_a_time() -> None:
    """findings_many (NER batched) finds what findings finds text by text."""
    rows = json.loads((FIXTURES / "presidio-synth" / "synth_dataset_v2.dev.json").read_text("utf-8"))
    texts = [r["full_text"] for r in rows[:80]]
    batched = PresidioRedactor(entities=ALL_ENTITIES).findings_many(texts)
    single = PresidioRedactor(entities=ALL_ENTITIES)
    assert batched == [single.findings(t) for t in texts]


def test_the_prefilter_changes_no_finding() -> None:
    """Entities skipped by the necessary-condition checks would have found nothing there: same findings as
    asking Presidio for every pattern entity on every text."""
    from mlops_supervisor.policies.pii import _blank, _engine

    entities = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS", "URL")
    redactor = PresidioRedactor(entities=(*entities, *sorted(SECRET_ENTITIES)))
    rows = json.loads((FIXTURES / "presidio-synth" / "synth_dataset_v2.dev.json").read_text("utf-8"))
    corpus = json.loads(PAYLOADS.read_text("utf-8"))
    texts = [r["full_text"] for r in rows[::3]] + [
        i["value"] if i["kind"] == "text" else json.dumps(i["value"]) for i in corpus["payloads"][:32]
    ]
    analyzer, _ = _engine()
    for text in texts:
        secrets = [s for s in find_secrets(text) if s.score >= redactor.min_score]
        view = _blank(text, [(s.start, s.end) for s in secrets])
        everything = analyzer.analyze(
            text=view, language="en", entities=list(entities), score_threshold=redactor.min_score
        )
        expected = [f for f in redactor._keep(text, everything)]
        got = [f for f in redactor.findings(text) if f.entity not in SECRET_ENTITIES]
        assert [(f.start, f.end) for f in got] == [(f.start, f.end) for f in _merged(expected, secrets)], text[:120]


def _merged(found: list[Finding], secrets: list[object]) -> list[Finding]:
    from mlops_supervisor.policies.pii import _merge

    spans = [Finding(s.entity, s.start, s.end, s.score) for s in secrets]  # type: ignore[attr-defined]
    return [f for f in _merge(spans + found) if f.entity not in SECRET_ENTITIES]


def test_constructor_refuses_unknown_entities_and_is_a_redactor() -> None:
    """A misspelt entity names the choices; the class satisfies the Redactor protocol; defaults are the policy's."""
    with pytest.raises(ValueError, match=r"unknown entities \['PERSONS'\]"):
        PresidioRedactor(entities=("PERSONS",))
    redactor = PresidioRedactor()
    assert isinstance(redactor, Redactor)
    assert redactor.entities == DEFAULT_PII_ENTITIES
    assert redactor.min_score == 0.4


def test_only_the_asked_entities_are_redacted() -> None:
    """A data-column detector asked for e-mails only leaves names alone."""
    text = "Jane Smith <jane@example.com>, DB_PASSWORD=hunter2"
    assert (
        PresidioRedactor(entities=("EMAIL_ADDRESS",)).redact_text(text)
        == "Jane Smith <<EMAIL_ADDRESS>>, DB_PASSWORD=hunter2"
    )


def test_findings_carry_scores_and_repeat_from_the_cache(redactor: PresidioRedactor) -> None:
    """Each finding has a score in (0, 1]; asking again returns the same findings."""
    text = "Ask Margaret Okonkwo (margaret@acme-analytics.com) for the token ghp_abc123DEF456ghi789JK."
    first = redactor.findings(text)
    assert {f.entity for f in first} == {"PERSON", "EMAIL_ADDRESS", "API_KEY"}
    assert all(0 < f.score <= 1 for f in first)
    assert redactor.findings(text) == first


def test_an_audit_chain_redacted_by_it_still_verifies(redactor: PresidioRedactor, tmp_path: Path) -> None:
    """Signatures, key fingerprints and thread ids survive in the audit log; a name and a token do not."""
    from mlops_supervisor.policies import AuditLog, verify_audit_log

    log = AuditLog(tmp_path / "audit.jsonl", redact=lambda v: redact_value(redactor, v))
    signed = {
        "statement": "approve:t-6b8e2f04c1d9",
        "signer": "bob",
        "key": "sha256:" + "ab12" * 16,
        "signature": "c0ffee" * 21 + "ab",
    }
    log.append("decision", thread_id="t-6b8e2f04c1d9", approval_signed=signed, note="asked by Margaret Okonkwo")
    log.append("tool_call", args={"source": "/workspace/data/a@2x.parquet", "token": "ghp_abc123DEF456ghi789JK"})
    text = (tmp_path / "audit.jsonl").read_text("utf-8")
    assert signed["signature"] in text and signed["key"] in text and "t-6b8e2f04c1d9" in text
    assert "/workspace/data/a@2x.parquet" in text
    assert "Margaret Okonkwo" not in text and "ghp_abc123" not in text
    assert verify_audit_log(tmp_path / "audit.jsonl").ok
