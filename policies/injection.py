"""The injection guard: signals that a piece of untrusted text is trying to steer the model.

Tool outputs, data values, model descriptions and run tags are data. This guard reads them
for the shapes an indirect prompt injection takes and returns what it found, with where,
and a verdict. It is a table of patterns, no classifier: nothing to download, the same
answer every time, and a cost of a few microseconds per kilobyte. It cannot read intent,
so it is one layer of several: what it flags is kept out of the model's context (the graph
quarantines it), and what it misses still meets the allow-lists, the gates on evidence from
the system of record, approvals and the egress allow-list, which no text can change.

Signals (``SignalKind``), strong ones first; any strong signal makes the verdict ``injection``:

- ``instruction``: instructions to the model (override earlier instructions, a new identity,
  requests for the system prompt, directives about "your response", calls to act or approve);
- ``role_marker``: chat-template and role markers (``system:``, ``<|im_start|>``, ``[INST]``,
  ``### Instruction``, ``<system>``, the ``<untrusted-data>`` fence itself);
- ``tool_call``: tool-call look-alikes (JSON with ``name``/``arguments`` or ``tool_calls``,
  ``<tool_call>``, ``snake_case(arg=...)`` calls, ``call TOOL {...}``);
- ``exfiltration``: markdown images and links that would carry data to a remote host, URL
  templates with placeholders, instructions to send secrets somewhere;
- ``active_content``: script tags, ``javascript:`` and ``data:text/html`` URLs, event handlers;
- ``code_payload``: shell substitutions, destructive commands, SQL injection;
- ``invisible_unicode``: zero-width characters, bidirectional overrides, tag characters.

Weak signals make it ``suspicious`` (reported, not quarantined): ``task_request`` (a sentence
that asks an assistant for a task) and ``off_list_url`` (a link to a host off the egress list).
A base64 run that decodes to text with a strong signal counts as that signal.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import enum
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from mlops_supervisor.policies.egress import LOOPBACK, host_allowed
from mlops_supervisor.policies.redaction import collect_strings

__all__ = [
    "STRONG_SIGNALS",
    "InjectionFinding",
    "InjectionScan",
    "SignalKind",
    "Verdict",
    "scan_output",
    "scan_text",
    "scan_value",
    "string_leaves",
]

Verdict = Literal["clean", "suspicious", "injection"]


class SignalKind(enum.StrEnum):
    """What kind of injection signal a finding is; stable strings for reports and audit lines."""

    INSTRUCTION = "instruction"
    ROLE_MARKER = "role_marker"
    TOOL_CALL = "tool_call"
    EXFILTRATION = "exfiltration"
    ACTIVE_CONTENT = "active_content"
    CODE_PAYLOAD = "code_payload"
    INVISIBLE_UNICODE = "invisible_unicode"
    TASK_REQUEST = "task_request"
    OFF_LIST_URL = "off_list_url"


STRONG_SIGNALS = frozenset(
    {
        SignalKind.INSTRUCTION,
        SignalKind.ROLE_MARKER,
        SignalKind.TOOL_CALL,
        SignalKind.EXFILTRATION,
        SignalKind.ACTIVE_CONTENT,
        SignalKind.CODE_PAYLOAD,
        SignalKind.INVISIBLE_UNICODE,
    }
)
"""Signals that quarantine on their own; the others only make a text suspicious."""


@dataclass(frozen=True)
class InjectionFinding:
    """One signal: its kind, the rule that saw it, and where (``where`` is a JSON path in structured scans)."""

    kind: SignalKind
    rule: str
    start: int
    end: int
    where: str = ""

    def as_record(self) -> dict[str, Any]:
        """Plain data for JSON output and audit lines: never the text itself."""
        return {
            "kind": self.kind.value,
            "rule": self.rule,
            "start": self.start,
            "end": self.end,
            **({"where": self.where} if self.where else {}),
        }


@dataclass(frozen=True)
class InjectionScan:
    """The guard's verdict on one text or value, with its findings in order.

    Build it with ``clean``, ``suspicious`` or ``injection``, or let ``of`` pick from the findings.
    """

    verdict: Verdict
    findings: tuple[InjectionFinding, ...] = ()

    @classmethod
    def clean(cls) -> InjectionScan:
        """Nothing found."""
        return cls("clean")

    @classmethod
    def suspicious(cls, findings: Iterable[InjectionFinding]) -> InjectionScan:
        """Only weak signals: report them, keep the text."""
        return cls("suspicious", tuple(findings))

    @classmethod
    def injection(cls, findings: Iterable[InjectionFinding]) -> InjectionScan:
        """At least one strong signal: quarantine the text."""
        return cls("injection", tuple(findings))

    @classmethod
    def of(cls, findings: Iterable[InjectionFinding]) -> InjectionScan:
        """The verdict ``findings`` call for: injection on a strong signal, suspicious on weak ones only."""
        found = tuple(sorted(findings, key=lambda f: (f.where, f.start, f.end, f.kind.value)))
        if not found:
            return cls.clean()
        if any(f.kind in STRONG_SIGNALS for f in found):
            return cls.injection(found)
        return cls.suspicious(found)

    @property
    def flagged(self) -> bool:
        """True when the text must be kept out of the model's context."""
        return self.verdict == "injection"

    @property
    def kinds(self) -> list[str]:
        """The kinds found, sorted, each once."""
        return sorted({f.kind.value for f in self.findings})

    def as_record(self) -> dict[str, Any]:
        """Plain data: the verdict, the kinds and every finding (kinds and offsets, never the text)."""
        return {
            "verdict": self.verdict,
            "kinds": self.kinds,
            "findings": [f.as_record() for f in self.findings],
        }


# --- the table of rules -----------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    """One pattern and what a text must hold for it to possibly match.

    ``needs`` is a list of groups; the pattern runs only when every group has a member in the
    text: a word (``[a-z0-9]+``) among the text's lower-cased words, or any other string (and a
    prefix written ``word*``) as a substring of the lower-cased text. Every word a pattern needs
    ends at a word boundary in the pattern, so it is a whole word of any text the pattern
    matches. Most texts then skip most patterns, with the same findings as running them all
    (``tests/policies/test_injection_guard.py`` checks it on every text of the corpora).

    ``pattern`` is the fast form the scan runs (see ``_fast_form``); ``fallback`` the pattern as
    written, for the rare text whose lower-cased form is not as long as itself.
    """

    kind: SignalKind
    name: str
    caseless: bool
    bounded: bool
    pattern: re.Pattern[str]
    fallback: re.Pattern[str]
    needs: tuple[tuple[frozenset[str], tuple[str, ...]], ...]


_WORDLIKE = re.compile(r"[a-z0-9]+")


def _fast_form(pattern: str, *, caseless: bool) -> tuple[str, bool]:
    """``pattern`` as the scan runs it, and whether it dropped a leading ``\\b`` the scan must check itself.

    When every top-level alternative opens with ``\\b``, those are dropped: a leading assertion
    turns off the regular-expression engine's scan for a first character, which makes a pattern
    3 to 6 times slower, so the scan checks the boundary itself (``_at_word_start``). A caseless
    rule runs on the lower-cased text, which is faster than ``re.IGNORECASE``, so its literals are
    lower-cased (escapes such as ``\\S`` are kept).
    """
    out: list[str] = []
    openings: list[int] = [0]  # where each top-level alternative starts, in ``out``
    depth, in_class, i = 0, False, 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        out.append(char.lower() if caseless else char)
        if char == "|" and depth == 0 and not in_class:
            openings.append(len(out))
        i += 1
    bounded = all(at < len(out) and out[at] == "\\b" for at in openings)
    if bounded:
        for at in openings:
            out[at] = ""
    return "".join(out), bounded


def _rule(kind: SignalKind, name: str, pattern: str, *needs: str, caseless: bool = True) -> _Rule:
    groups = []
    for group in needs:
        members = group.split()
        words = frozenset(m for m in members if _WORDLIKE.fullmatch(m))
        # a member ending in '*' is a prefix: any word that starts with it (checked as a substring)
        marks = tuple(m.removesuffix("*") for m in members if not _WORDLIKE.fullmatch(m))
        groups.append((words, marks))
    fast, bounded = _fast_form(pattern, caseless=caseless)
    return _Rule(
        kind,
        name,
        caseless,
        bounded,
        re.compile(fast),
        re.compile(pattern, re.IGNORECASE if caseless else 0),
        tuple(groups),
    )


_GAP = r"[^.!?\n]{0,40}?"  # a few words, within one sentence
_YOUR_OUTPUT = r"(?:responses?|answers?|repl(?:y|ies)|outputs?)"

_RULES: tuple[_Rule, ...] = (
    # --- instructions to the model --------------------------------------------------------
    _rule(
        SignalKind.INSTRUCTION,
        "override_instructions",
        r"\b(?:ignor(?:e|es|ing)|disregard(?:ing)?|forget(?:ting)?|overrid(?:e|ing)|bypass(?:ing)?|neglect|abandon|"
        rf"discard|skip)\b{_GAP}\b(?:previous|prior|above|earlier|preceding|foregoing|former|original|initial|all|"
        rf"any|every|your|these|those|other|following|system|old|existing|safety|content)\b{_GAP}\b(?:instructions?|"
        r"prompts?|rules|directions|directives?|guidelines|orders|commands|constraints|restrictions|polic(?:y|ies)|"
        r"programming|guardrails?|safeguards?|filters?|ethics|principles|training)\b",
        "ignore ignores ignoring disregard disregarding forget forgetting override overriding bypass bypassing "
        "neglect abandon discard skip",
    ),
    _rule(
        SignalKind.INSTRUCTION,
        "new_instructions",
        r"\b(?:new|updated|revised|real|actual|true|additional|important|urgent|secret|hidden|priority)\s+"
        r"(?:instructions?|directives?|system\s+prompt|orders|task\s+for\s+you)\s*[:!\-]",
        "instruction instructions directive directives orders prompt task",
        "new updated revised real actual true additional important urgent secret hidden priority",
    ),
    _rule(
        SignalKind.INSTRUCTION,
        "new_identity",
        r"\byou\s+are\s+(?:now|no\s+longer|going\s+to\s+(?:act|play|be|pretend|answer)|about\s+to\s+(?:act|play|"
        r"become|immerse)|free\b|in\s+(?:\w+\s+)?mode|an?\s+(?:unfiltered|unrestricted|uncensored|jailbroken|evil|"
        r"amoral|rogue)\b)",
        "you",
        "now longer going about free mode unfiltered unrestricted uncensored jailbroken evil amoral rogue",
    ),
    _rule(SignalKind.INSTRUCTION, "from_now_on", r"\bfrom\s+now\s+on\b", "from", "now", "on"),
    _rule(
        SignalKind.INSTRUCTION,
        "persona",
        r"\bstay\s+in\s+character\b|\bbreak(?:ing)?\s+character\b|\bdo\s+anything\s+now\b|\bjailbr(?:eak|oken)|"
        r"\b(?:developer|maintenance|debug|god|admin|sudo)\s+mode\b|\bpretend\s+(?:to\s+be|you\s+are|that\s+you)\b|"
        r"\b(?:act|behave|respond)\s+as\s+(?:if\s+you|though\s+you|an?\s+(?:unfiltered|unrestricted|uncensored|"
        r"evil|different|new))\b|\b(?:no|without)\s+(?:filters|restrictions|limitations|censorship)\b[^\n]{0,40}"
        r"\b(?:answer|respond|reply)|\b(?:administrator|admin|system|developer|root|sudo)\s+override\b",
        "character anything jailbr* mode pretend act behave respond filters "
        "restrictions limitations censorship override",
    ),
    _rule(
        SignalKind.INSTRUCTION,
        "persona_marker",
        r"\bDAN\b|\[(?:GPT|DAN|JAILBREAK|CLASSIC|🔓[^\]\n]*)\]",
        "dan gpt jailbreak classic 🔓",
        caseless=False,
    ),
    _rule(
        SignalKind.INSTRUCTION,
        "prompt_extraction",
        r"\b(?:system|initial|original|hidden|secret|starting|developer)[\s_-]+(?:prompts?|instructions|directives)\b|"
        r"\b(?:system|pre)[_-]?prompts?\b|\byour\s+(?:system|initial|original|starting|first|hidden|secret|internal|"
        r"previous|prior|own)\s+(?:prompts?|instructions?|message|configuration|rules|directives)\b|\byour\s+"
        r"(?:initial|starting)\s+(?:configuration|setup)\b",
        "prompt prompts instructions instruction directives message configuration rules systemprompt systemprompts "
        "preprompt preprompts setup",
        "system initial original hidden secret starting developer pre your systemprompt systemprompts preprompt "
        "preprompts first internal previous prior own",
    ),
    _rule(
        SignalKind.INSTRUCTION,
        "told_instructions",
        r"\b(?:instructions?|prompt|text|everything)\s+(?:that\s+)?(?:you\s+(?:were|have\s+been|'ve\s+been)|I\s+"
        r"(?:was|have\s+been))\s+(?:given|told|provided|instructed)\b|\bwhat\s+(?:were|are)\s+you\s+(?:told|"
        r"instructed|programmed)\b|\b(?:my|your)\s+instructions\s+(?:are|were)\b|\bI\s+was\s+instructed\b|\bnot\s+supposed\s+to\s+"
        r"(?:tell|say|reveal)\b|\btold\s+before\s+(?:this|the)\s+conversation\b",
        "given told provided instructed programmed instructions supposed",
    ),
    _rule(
        SignalKind.INSTRUCTION,
        "repeat_the_context",
        r"\btext\s+above\b|\beverything\s+above\b|\binitiali[sz]ation\s+string\b|\b(?:repeat|recite)\s+(?:this\s+|the\s+)?"
        r"(?:entire\s+)?conversation\b|\bbeginning\s+of\s+(?:this|the)\s+conversation\b|\b(?:repeat|print|output|show|"
        r"reveal|display|recite|reproduce|copy)\s+(?:back\s+)?(?:me\s+)?(?:the\s+|all\s+(?:the\s+)?|everything\s+)?"
        r"(?:above|previous|preceding|prior|earlier)\b",
        "above initialization initialisation conversation previous preceding prior earlier",
    ),
    _rule(
        SignalKind.INSTRUCTION,
        "in_your_response",
        rf"\b(?:in|into|within|throughout|of|from|behind|across)\s+your\s+(?:\w+\s+)?(?:{_YOUR_OUTPUT}|code(?:base)?|"
        r"solution|implementation|algorithm|program|script)\b",
        "your",
        "response responses answer answers reply replies output outputs code codebase solution implementation "
        "algorithm program script",
    ),
    _rule(
        SignalKind.INSTRUCTION,
        "add_to_your_response",
        r"\b(?:add|append|attach|prepend|include|insert|integrate|incorporate|embed)\b[^.\n]{0,60}\bto\s+your\s+"
        rf"(?:\w+\s+)?(?:{_YOUR_OUTPUT}|code)\b",
        "your",
        "add append attach prepend include insert integrate incorporate embed",
    ),
    _rule(
        SignalKind.INSTRUCTION,
        "shape_your_response",
        r"\b(?:encode|encrypt|translate|reverse|format|start|begin|end|prefix|rewrite|convert|rearrange|present|express|"
        r"deliver|structure|modify|augment|enhance|provide|render|jumble|alter|change|adjust|edit|tailor|craft|frame|"
        r"phrase|style|capitali[sz]e|spell|enrich|infuse|tweak|revise|shorten|limit|restrict|conclude|finish|make|keep|"
        rf"write|give|compose|pad|obfuscate|scramble|shuffle|mix)\s+your\s+(?:\w+\s+)?(?:{_YOUR_OUTPUT}|messages?)\b|"
        rf"\byour\s+{_YOUR_OUTPUT}(?:'s)?\s+(?:character|letters|words|order|must|should|shall|will\s+(?:be|start|"
        r"begin|contain|include))",
        "your",
        "response responses answer answers reply replies output outputs message messages",
    ),
    _rule(
        SignalKind.INSTRUCTION,
        "code_you_write",
        r"\b(?:the\s+)?code\s+you\s+(?:develop|write|produce|generate|create|build|provide)\b|\byour\s+code(?:'s)?\s+"
        r"(?:functionality|capabilit(?:y|ies)|performance|behaviou?r)\b",
        "code",
        "you your",
    ),
    _rule(
        SignalKind.INSTRUCTION,
        "greets_the_model",
        r"\b(?:dear|hey|hi|hello|attention|note\s+to|message\s+(?:to|for)|instructions?\s+(?:to|for))\s+(?:the\s+|all\s+|"
        r"any\s+)?(?:AI|assistants?|models?|LLMs?|agents?|chatbots?|GPT|ChatGPT|Claude|language\s+models?|bots?)\b",
        "dear hey hi hello attention note message instruction instructions",
        "ai assistant assistants model models llm llms agent agents chatbot chatbots gpt chatgpt claude language "
        "bot bots",
    ),
    _rule(
        SignalKind.INSTRUCTION,
        "names_the_model",
        r"\bto\s+you,?\s+(?:the\s+)?(?:AI|assistant|model|agent|LLM)\b|\bas\s+an?\s+(?:AI|artificial\s+intelligence|"
        r"language\s+model|LLM)\b",
        "ai assistant model agent llm artificial language",
        "you as",
    ),
    _rule(
        SignalKind.INSTRUCTION,
        "task_i_gave_you",
        r"\b(?:the\s+)?task\s+(?:that\s+)?I\s+gave\s+you\b|\bbefore\s+you\s+(?:can\s+)?(?:solve|answer|complete|respond\s+"
        r"to)\s+(?:the|this|my|your)\s+(?:task|question|request|query)\b",
        "gave before",
        "you",
    ),
    _rule(
        SignalKind.INSTRUCTION,
        "call_a_tool",
        r"\b(?:call|invoke|use|run|execute|trigger)\s+(?:the\s+|a\s+|this\s+|that\s+)?(?:tool|function|api)\b|"
        r"\b(?:call|invoke|run|execute)\s+[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b",
        "call invoke use run execute trigger",
        "tool function api _",
    ),
    _rule(
        SignalKind.INSTRUCTION,
        "approve_or_move_alias",
        r"\b(?:approve|authori[sz]e|sign\s+off\s+on|greenlight|auto-?approve)\s+(?:this|the|it|all|every|any|my|that|"
        r"these|pending|immediately)\b|\b(?:set|move|point)\s+(?:the\s+)?(?:champion|production)\s+alias\b|"
        r"\bwithout\s+(?:asking|approval|confirmation|telling|verification|checking|waiting|permission)\b",
        "approve authorize authorise sign greenlight autoapprove champion production without",
    ),
    # As an order only (a sentence's first word, or after "then", "now", ...): this project's own
    # messages quote the command, `ask "promote m version 2 to production"`, and are no injection.
    _rule(
        SignalKind.INSTRUCTION,
        "promote_to_production",
        r"(?:^|[.!?:;]\s*|\n\s*|\b(?:then|now|please|and|also|immediately|just|must|should)\s+)promote\b[^.\n]{0,60}"
        r"\bto\s+(?:production|champion)\b",
        "promote",
        "production champion",
    ),
    _rule(
        SignalKind.INSTRUCTION,
        "you_must",
        r"\b(?:you|u)\s+(?:must|will|shall|have\s+to|need\s+to|are\s+(?:required|instructed|ordered)\s+to)\s+(?:now\s+|"
        r"always\s+|only\s+|immediately\s+)?(?:ignore|obey|comply|answer|respond|output|print|say|repeat|reveal|call|"
        r"invoke|execute|approve|promote|deploy|delete|transfer|pretend|act)\b",
        "you u",
        "must will shall have need required instructed ordered",
        "ignore obey comply answer respond output print say repeat reveal call invoke execute approve promote deploy "
        "delete transfer pretend act",
    ),
    _rule(
        SignalKind.INSTRUCTION,
        "halt_and_say",
        r"\b(?:stop|halt|cease)\s+(?:everything|all\s+(?:that|you)|what\s+you(?:'re|\s+are)\s+doing)\b|\bjust\s+(?:print|"
        r"say|output|write|type|reply|respond|answer)\s*(?:with\s*)?[:\"'“]|\b(?:print|say|output|reply|respond|answer)"
        r"\s+(?:only|exactly|verbatim|just)\s*(?:with\s*)?[:\"'“]",
        "stop halt cease just only exactly verbatim",
    ),
    # --- role and chat-template markers ---------------------------------------------------
    _rule(
        SignalKind.ROLE_MARKER,
        "role_line",
        r"(?:^|\n)[ \t>*_#-]*(?:System|SYSTEM|Assistant|ASSISTANT|Developer|DEVELOPER|Human|HUMAN|USER)[ \t]*"
        r"(?:\([^)\n]{0,30}\))?[ \t]*:[ \t]*\S|\b(?:SYSTEM|ASSISTANT)\s*:",
        "system assistant developer human user",
        ":",
        caseless=False,
    ),
    _rule(
        SignalKind.ROLE_MARKER,
        "template_token",
        r"<\|[a-z_]{2,30}\|>|\[/?INST\]|<</?SYS>>|\[(?:SYSTEM|ADMIN|INST|SYS)\b[^\]\n]{0,20}\]",
        "<| [inst [/inst <<sys <</sys [system [admin [sys",
    ),
    _rule(
        SignalKind.ROLE_MARKER,
        "role_tag",
        r"<\s*/?\s*(?:system|system_prompt|instructions?|assistant|user|prompt|sys|INFORMATION|admin|important|"
        r"tool_response)\s*>|<\s*/?\s*untrusted-data",
        "<",
        "system prompt instructions instruction assistant user sys information admin important tool untrusted",
    ),
    _rule(
        SignalKind.ROLE_MARKER,
        "role_heading",
        r"(?:^|\n)[ \t]*#{2,}[ \t]*(?:Instructions?|System|Response|Input|Human|Assistant|User)\b[^\n]{0,20}(?=\n|$)",
        "##",
    ),
    _rule(
        SignalKind.ROLE_MARKER,
        "authority_header",
        r"\b(?:SYSTEM|ADMIN|DEVELOPER|ROOT)\s+(?:OVERRIDE|MESSAGE|NOTICE|INSTRUCTIONS?|PROMPT|UPDATE)\b",
        "system admin developer root",
        "override message notice instructions instruction prompt update",
        caseless=False,
    ),
    # --- tool-call look-alikes ------------------------------------------------------------
    _rule(
        SignalKind.TOOL_CALL,
        "json_tool_call",
        r"[\"'](?:name|function|tool|tool_name|recipient_name)[\"']\s*:\s*[\"'][^\"'\n]{1,80}[\"']\s*,\s*[\"'](?:arguments|"
        r"args|parameters|input|kwargs)[\"']\s*:|[\"'](?:arguments|parameters)[\"']\s*:\s*\{[^{}\n]{0,400}\}\s*,\s*"
        r"[\"'](?:name|function)[\"']\s*:|[\"'](?:tool_calls|function_call|tool_use)[\"']\s*:",
        "\" '",
        "arguments args parameters input kwargs calls call use",
        caseless=False,
    ),
    _rule(
        SignalKind.TOOL_CALL,
        "tool_call_tag",
        r"<\s*(?:tool_call|function_calls?|invoke|tool_use|function)\b",
        "<",
        "tool function functions invoke",
    ),
    _rule(SignalKind.TOOL_CALL, "planner_call", r"\bcall\s+[A-Za-z_][A-Za-z0-9_]*\s*\{", "call", "{"),
    _rule(
        SignalKind.TOOL_CALL,
        "function_call",
        r"\bfunctions?\.[a-z_][a-z0-9_]*\s*\(|\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\s*\(\s*(?:[a-z_][a-z0-9_]*\s*=[^=]|[\"'{\[])",
        "(",
        "_ functions. function.",
        caseless=False,
    ),
    # --- exfiltration -----------------------------------------------------------------------
    _rule(
        SignalKind.EXFILTRATION,
        "url_template",
        r"(?:https?:)?//[^\s)\"'<>]*[?&/=](?:[\w-]*=)?(?:\{[^}\s]{1,40}\}|\$\{?[A-Za-z_]|%7B|<[A-Za-z_]{2,30}>|"
        r"\[(?:DATA|SECRET|INFO|PASSWORD|KEY|TOKEN|CONVERSATION|HISTORY)[^\]\n]{0,20}\])",
        "//",
        "{ $ %7b < [",
    ),
    _rule(
        SignalKind.EXFILTRATION,
        "send_secrets",
        r"\b(?:send|post|upload|forward|e-?mail|transmit|exfiltrate|leak|share|copy|append|attach|encode|paste|include)"
        r"\b[^.\n]{0,80}\b(?:passwords?|secrets?|api[\s_-]?keys?|tokens?|credentials?|private\s+keys?|ssh|\.env|"
        r"environment\s+variables|conversation|chat\s+history|system\s+prompt|personal\s+data|user\s+data|the\s+data|"
        r"contents?\s+of)\b[^.\n]{0,80}\b(?:to|into|in|at|via)\s+(?:https?://|www\.|[\w.+-]+@[\w-]+\.|the\s+(?:url|"
        r"link|address|endpoint|server|webhook|image))",
        "send post upload forward email mail transmit exfiltrate leak share copy append attach encode paste include",
        "password passwords secret secrets api apikey apikeys key keys token tokens credential credentials ssh env "
        "environment conversation history prompt personal data contents content",
        "http https www @ url link address endpoint server webhook image",
    ),
    # --- active content ---------------------------------------------------------------------
    _rule(
        SignalKind.ACTIVE_CONTENT,
        "script_tag",
        r"<\s*/?\s*(?:script|iframe|object|embed|svg|meta|base)\b|&lt;\s*/?\s*(?:script|a|img)\b",
        "< &lt",
        "script iframe object embed svg meta base a img",
    ),
    _rule(
        SignalKind.ACTIVE_CONTENT,
        "script_url",
        r"\b(?:java|vb)script\s*:|data\s*:\s*text/html\b|https?&#0*58;",
        "javascript vbscript html &#",
    ),
    _rule(
        SignalKind.ACTIVE_CONTENT,
        "event_handler",
        r"\bon(?:error|load|mouse\w+|click|focus|blur|pointer\w+)\s*=",
        "onerror onload onclick onfocus onblur onmouse* onpointer*",
    ),
    _rule(
        SignalKind.ACTIVE_CONTENT,
        "script_call",
        r"\bdocument\s*\.\s*cookie\b|\balert\s*[(`]|String\.fromCharCode|\bexpression\s*\(",
        "cookie alert fromcharcode expression",
    ),
    # --- code payloads ----------------------------------------------------------------------
    _rule(SignalKind.CODE_PAYLOAD, "shell_substitution", r"\$\([^)\n]{1,200}\)", "$("),
    _rule(
        SignalKind.CODE_PAYLOAD,
        "shell_backticks",
        r"`[^`\n]{0,60}\b(?:rm|curl|wget|nc|ncat|bash|sh|ls|cat|chmod|chown|touch|python3?|powershell|whoami)\b[^`\n]{0,60}`",
        "`",
        "rm curl wget nc ncat bash sh ls cat chmod chown touch python python3 powershell whoami",
    ),
    _rule(
        SignalKind.CODE_PAYLOAD,
        "shell_command",
        r"\brm\s+-[rRf]{1,3}\b|\bcurl\b[^|\n]{0,120}\|\s*(?:ba|z)?sh\b|\bnc\s+-[elv]+|\bchmod\s+\+x\b|/etc/(?:passwd|"
        r"shadow)\b|/bin/(?:ba|z)?sh\b|\bcmd\.exe\b|\bmkfifo\b|@\{\[|\bipconfig\s+/release\b",
        "rm curl nc chmod passwd shadow bin cmd mkfifo @{[ ipconfig",
    ),
    _rule(
        SignalKind.CODE_PAYLOAD,
        "code_execution",
        r"\b(?:os\.system|os\.popen|os\.environ|subprocess\.(?:run|Popen|call|check_output)|Kernel\.exec|System|eval|"
        r"exec|shutil\.rmtree)\s*[(\[]|\brequests\.(?:post|put|patch)\s*\(|\b(?:socket|sock)\.(?:connect|send|sendall)"
        r"\s*\(|\bsmtplib\.SMTP|\bftplib\b|\bFTP\s*\(|\bpublish\.single\s*\(|\burllib\.request\.urlopen\s*\(",
        "system popen environ subprocess exec eval rmtree requests socket sock smtplib ftplib ftp publish urlopen",
        caseless=False,
    ),
    _rule(
        SignalKind.CODE_PAYLOAD,
        "sql_statement",
        r"\b(?:DROP|TRUNCATE)\s+(?:TABLE|DATABASE)\b|\bUNION\s+(?:ALL\s+)?SELECT\b|\bINSERT\s+INTO\b[^;\n]{0,200}\bVALUES\b|"
        r"@@version\b|\bSLEEP\s*\(\s*\d|\bxp_cmdshell\b|\bEXEC\s*\(|\bWAITFOR\s+DELAY\b|\d\s*;\s*(?:DROP|DELETE|UPDATE|"
        r"INSERT)\b|(?:'|;)\s*--|'\s*;\s*(?:shutdown|drop|insert|delete|update|exec)\b|;\s*shutdown\b",
        "drop truncate union insert version sleep cmdshell exec waitfor delete update shutdown --",
    ),
    _rule(
        SignalKind.CODE_PAYLOAD,
        "sql_tautology",
        r"'\s*(?:OR|AND)\s+(?:'?\w+'?\s*=\s*'?\w+|'[^'\n]*'\s*=\s*')|\b(?:OR|AND)\s+1\s*=\s*1\b|\(1=1\)",
        "=",
        "or and 1=1",
    ),
    # --- weak: a task asked of an assistant -------------------------------------------------
    _rule(
        SignalKind.TASK_REQUEST,
        "task_request",
        r"(?:^|[.!?:]\s+|\n\s*)(?:Please\s+)?(?:Write|Summari[sz]e|Translate|Analy[sz]e|Recommend|Suggest|Explain|"
        r"Describe|Generate|Draft|Compose|Develop|Break\s+down|Tell\s+me|Show\s+me|Give\s+me|Help\s+me|Determine|"
        r"Calculate|Compare|Predict|Identify|Evaluate|Encode|Encrypt|Reverse|Rewrite|Rephrase|Classify|Outline|Research|"
        r"Answer|Respond|Output|Print|Repeat|Say|Integrate|Insert|Incorporate|Embed|Can\s+you|Could\s+you|Would\s+you|"
        r"Provide)\b",
        "write summarize summarise translate analyze analyse recommend suggest explain describe generate draft compose "
        "develop break tell show give help determine calculate compare predict identify evaluate encode encrypt "
        "reverse rewrite rephrase classify outline research answer respond output print repeat say integrate insert "
        "incorporate embed can could would provide",
        caseless=False,
    ),
)

# Markdown images, HTML images, markdown links and bare URLs, judged by their host.
_MARKDOWN_IMAGE = re.compile(r"!\[[^\]\n]{0,300}\]\(\s*<?(?P<url>[^)\s>]+)")
_HTML_IMAGE = re.compile(r"<\s*img\b[^>\n]{0,300}?\bsrc\s*=\s*[\"']?(?P<url>[^\"'\s>]+)", re.IGNORECASE)
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"'`)\]}]+", re.IGNORECASE)

_INVISIBLE = re.compile(
    "[\u200b\u2060-\u2064\u180e\u202a-\u202e\u2066-\u2069\U000e0000-\U000e007f\U000e0100-\U000e01ef]+"
    "|(?<=[A-Za-z0-9])[\u200c\u200d]+(?=[A-Za-z0-9])"
    "|(?<!^)\ufeff"
)
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{24,}={0,2}")
_HEX_ONLY = re.compile(r"[0-9a-fA-F]+")
# ASCII punctuation and spaces split words; anything else (letters, digits, non-ASCII) stays in them.
_SPLIT_WORDS = {i: " " for i in range(128) if not chr(i).isalnum()}


def _host(url: str) -> tuple[str, int | None] | None:
    """The host and port of a URL (``//host``, ``http://host``, ``www.host``); None for relative ones."""
    if url.lower().startswith("www."):
        url = "http://" + url
    elif url.startswith("//"):
        url = "http:" + url
    try:
        parts = urlsplit(url)
        return (parts.hostname, parts.port) if parts.hostname else None
    except ValueError:
        return ("?", None)  # a URL that does not parse is no URL we would allow


def _url_findings(text: str, low: str, allowed: tuple[str, ...]) -> Iterator[InjectionFinding]:
    if "//" not in low and "www." not in low:
        return

    def off_list(url: str) -> bool:
        host = _host(url)
        return host is not None and not host_allowed(host[0], host[1], allowed)

    images: list[tuple[int, int]] = []
    for pattern, rule, marker in ((_MARKDOWN_IMAGE, "markdown_image", "!["), (_HTML_IMAGE, "html_image", "<img")):
        if marker not in low:
            continue
        for match in pattern.finditer(text):
            # a remote image is fetched as soon as the text is rendered: whatever its URL carries leaves
            if off_list(match["url"]):
                images.append(match.span())
                yield InjectionFinding(SignalKind.EXFILTRATION, rule, match.start(), match.end())
    for match in _URL.finditer(text):
        if not any(start <= match.start() < end for start, end in images) and off_list(match.group()):
            yield InjectionFinding(SignalKind.OFF_LIST_URL, "off_list_url", match.start(), match.end())


def _decoded(run: str) -> str | None:
    """The text a base64 run decodes to, when it is mostly printable text; None otherwise."""
    if _HEX_ONLY.fullmatch(run.rstrip("=")):  # digests and ids: hex is not an encoding of text
        return None
    try:
        raw = base64.b64decode(run + "=" * (-len(run) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    text = raw.decode("utf-8", errors="replace")
    printable = sum(c.isprintable() or c in "\n\t\r" for c in text)
    return text if text and printable / len(text) > 0.95 else None


def _index(rules: tuple[_Rule, ...]) -> tuple[dict[str, list[tuple[int, int]]], dict[str, list[tuple[int, int]]]]:
    """Which (rule, group) each trigger word and each trigger mark satisfies."""
    by_word: dict[str, list[tuple[int, int]]] = {}
    by_mark: dict[str, list[tuple[int, int]]] = {}
    for r, rule in enumerate(rules):
        for g, (words, marks) in enumerate(rule.needs):
            for word in words:
                by_word.setdefault(word, []).append((r, g))
            for mark in marks:
                by_mark.setdefault(mark, []).append((r, g))
    return by_word, by_mark


_BY_WORD, _BY_MARK = _index(_RULES)
_TRIGGER_WORDS = frozenset(_BY_WORD)
_NEEDS = tuple(frozenset((r, g) for g in range(len(rule.needs))) for r, rule in enumerate(_RULES))


def _rules_that_may_match(words: set[str], low: str) -> Iterator[_Rule]:
    """The rules every one of whose groups has a member in the text (see ``_Rule``)."""
    met: set[tuple[int, int]] = set()
    for word in _TRIGGER_WORDS.intersection(words):
        met.update(_BY_WORD[word])
    for mark, satisfied in _BY_MARK.items():
        if mark in low:
            met.update(satisfied)
    return (rule for rule, needs in zip(_RULES, _NEEDS, strict=True) if needs <= met)


def _at_word_start(text: str, start: int) -> bool:
    """False for a match that begins inside a word (what the ``\\b`` that ``_fast_form`` removed refused)."""
    return start == 0 or not (_is_word_char(text[start]) and _is_word_char(text[start - 1]))


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def _findings(text: str, allowed: tuple[str, ...], *, decode: bool) -> list[InjectionFinding]:
    """Every finding in ``text``: the rules that may match, URLs, invisible characters, base64 runs."""
    low = text.lower()
    lowered = len(low) == len(text)  # else a caseless rule runs as written, on the text itself
    words = set(low.translate(_SPLIT_WORDS).split())
    found: list[InjectionFinding] = []
    for rule in _rules_that_may_match(words, low):
        if not rule.caseless:
            pattern, subject = rule.pattern, text
        elif lowered:
            pattern, subject = rule.pattern, low
        else:
            pattern, subject = rule.fallback, text
        for match in pattern.finditer(subject):
            start, end = match.span()
            if rule.bounded and not _at_word_start(subject, start):
                continue
            if subject[start : start + 1] == "\n":  # a rule anchored on a line start: point at the line
                start += 1
            found.append(InjectionFinding(rule.kind, rule.name, start, end))
    found += _url_findings(text, low, allowed)
    if not text.isascii():
        found += [
            InjectionFinding(SignalKind.INVISIBLE_UNICODE, "invisible_characters", m.start(), m.end())
            for m in _INVISIBLE.finditer(text)
        ]
    if decode:
        for match in _BASE64_RUN.finditer(text):
            decoded = _decoded(match.group())
            if decoded is not None:
                found += [
                    InjectionFinding(f.kind, f"base64:{f.rule}", match.start(), match.end())
                    for f in _findings(decoded, allowed, decode=False)
                    if f.kind in STRONG_SIGNALS
                ]
    return found


def scan_text(text: str, *, allowed_hosts: Iterable[str] = LOOPBACK) -> InjectionScan:
    """The guard's verdict on one text; URLs are judged against ``allowed_hosts`` (the egress list)."""
    return InjectionScan.of(_findings(text, tuple(allowed_hosts), decode=True))


_SAFE_KEY = re.compile(r"[A-Za-z0-9_.-]{1,40}")
# Between two strings of a value. No pattern can match across it (every repeated character
# class stops at a newline, and neither \s nor a literal takes NUL), so one pass over the
# joined strings finds exactly what a pass over each would.
_JOIN = "\n\x00\n"


def _paths(value: Any, where: str, out: list[str]) -> None:
    """The JSON path of each string ``_strings`` lists, in the same order: indices and plain keys only."""
    if isinstance(value, str):
        out.append(where)
    elif isinstance(value, dict):
        for i, (key, item) in enumerate(value.items()):
            plain = isinstance(key, str) and _SAFE_KEY.fullmatch(key) is not None
            if isinstance(key, str):
                out.append(f"{where}.<key {i}>")
            # a key that is prose (a column name, a tag) never appears in a path: paths are shown to the model
            _paths(item, f"{where}.{key}" if plain else f"{where}.<value {i}>", out)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _paths(item, f"{where}[{i}]", out)


def string_leaves(value: Any) -> list[tuple[str, str]]:
    """Every string in a JSON-like ``value`` (mapping keys included) with its path, as ``scan_value`` names them."""
    texts: list[str] = []
    paths: list[str] = []
    collect_strings(value, texts)
    _paths(value, "$", paths)
    return list(zip(paths, texts, strict=True))


def scan_value(value: Any, *, allowed_hosts: Iterable[str] = LOOPBACK) -> InjectionScan:
    """The verdict on a JSON-like value: each string (and key) on its own, so the value's own structure
    (a record with ``name`` and ``arguments`` keys) is never taken for a tool call; ``where`` names the path."""
    texts: list[str] = []
    collect_strings(value, texts)
    if not texts:
        return InjectionScan.clean()
    found = _findings(_JOIN.join(texts), tuple(allowed_hosts), decode=True)
    if not found:
        return InjectionScan.clean()
    starts, offset = [], 0
    for text in texts:
        starts.append(offset)
        offset += len(text) + len(_JOIN)
    paths: list[str] = []
    _paths(value, "$", paths)
    findings = []
    for f in found:
        i = bisect.bisect_right(starts, f.start) - 1
        start, end = f.start - starts[i], min(f.end - starts[i], len(texts[i]))
        findings.append(InjectionFinding(f.kind, f.rule, start, end, paths[i]))
    return InjectionScan.of(findings)


def scan_output(text: str, *, allowed_hosts: Iterable[str] = LOOPBACK) -> InjectionScan:
    """The verdict on a tool's output: a JSON object or array is scanned value by value, other text whole."""
    if text.lstrip()[:1] in ("{", "["):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, dict | list):
            return scan_value(value, allowed_hosts=allowed_hosts)
    return scan_text(text, allowed_hosts=allowed_hosts)
