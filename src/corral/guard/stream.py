"""Output checks on a streamed answer: what each new piece lets through now, with a bounded hold-back.

`StreamScreen` takes one streamed choice's text piece by piece and returns what may be sent. When the
policy changes answers (secrets or PII redacted) or blocks them (moderation: block), the newest
`WINDOW` characters are held back, so that a secret, an e-mail or a phrase arriving over several
pieces is whole before any of it is released: released text is redacted as the whole answer would be,
and a blocking finding stops the stream before the phrase is sent. Prose with nothing any check
could start on (no digit, `@`, `:`, `_`, key marker or moderation trigger) goes out word by word.
A span still growing past `MAX_HOLD` characters is released redacted and the rest of it dropped (a
private key block up to its END line); while a long span is held, the checks rerun only every
`WINDOW // 4` new characters, so a held span costs linear, not quadratic, time.
Pseudonyms are restored last, on what is released.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from corral.config.sections import GuardPolicy
from corral.guard.moderation import TRIGGERS, fold, freeze_terms, moderate
from corral.guard.pii import KINDS, PIIFinding, find_pii, replace_spans
from corral.guard.policy import Verdict, check_output
from corral.guard.pseudonyms import Pseudonyms, StreamRestorer
from corral.guard.secrets import find_secrets

# Longer than any bounded span (an IBAN with spaces: 42) and than the shortest match of any unbounded
# one (a fine-grained GitHub token: 71), so nothing is released before it could be recognised.
WINDOW = 80
MAX_HOLD = 4096  # an RSA-4096 private key block is ~3.3 KB
# What every secret or PII span contains (beside letters): without any, a text holds none.
_MARKERS = ("@", ":", "_", "-----", "sk-", "AKIA", "ASIA", "AIza", "eyJ", "xox", "bearer", "Bearer", "BEARER")
_DIGIT = re.compile(r"\d")
_PRIVATE_KEY_END = re.compile(r"-----END (?:[A-Z]+ )?PRIVATE KEY-----")
_TOKEN_END = re.compile(r"\s")


def _redacting(policy: GuardPolicy) -> tuple[bool, bool]:
    """(secrets, PII): which spans the policy replaces in answers (as `check_output` does)."""
    return policy.secrets in ("redact", "block"), policy.pii in ("redact", "block")


def screens(policy: GuardPolicy) -> bool:
    """Whether a stream under this policy needs holding back (anything beside pseudonym restore)."""
    return any(_redacting(policy)) or policy.moderation == "block"


@dataclass
class StreamScreen:
    """One streamed choice's text through a policy's output checks (see the module docstring)."""

    policy: GuardPolicy
    pseudonyms: Pseudonyms | None = None
    window: int = WINDOW
    limit: int = MAX_HOLD
    blocked: Verdict | None = None
    pending: str = ""  # received, not yet released
    tail: str = ""  # the last `window` characters released (as received): context for spans and phrases
    seen: list[str] = field(default_factory=list)  # every piece as received, for the end-of-stream checks
    found: dict[str, set[str]] = field(default_factory=dict)  # check -> kinds redacted
    swallow: re.Pattern[str] | None = None  # the rest of an over-long secret is dropped until this
    restorer: StreamRestorer | None = None
    next_scan: int = 0  # while a long span is held: how much must be pending before the checks rerun

    def __post_init__(self) -> None:
        self.secrets, self.pii = _redacting(self.policy)
        self.kinds = tuple(self.policy.pii_kinds) or KINDS
        self.terms = freeze_terms(self.policy.moderation_terms)
        self.hold = screens(self.policy)
        if self.pseudonyms is not None:
            self.restorer = self.pseudonyms.restorer()

    def feed(self, piece: str, final: bool = False) -> str:
        """What may be sent now of everything received; `final` (the choice's last piece) releases the rest."""
        if self.blocked is not None:
            return ""
        self.seen.append(piece)
        out = self._screen(piece, final) if self.hold else piece
        if self.restorer is not None:
            out = self.restorer.feed(out) + (self.restorer.flush() if final else "")
        return out

    def _screen(self, piece: str, final: bool) -> str:
        if self.swallow is not None:
            piece = self._swallowed(piece)
            if self.swallow is not None:
                return ""
        if not final and len(self.pending) + len(piece) < self.next_scan:
            self.pending += piece
            return ""
        offset = len(self.tail)
        context = self.tail + self.pending + piece
        if self.policy.moderation == "block" and self._blocks(context, final):
            self.pending = ""
            return ""
        spans = self._spans(context, offset)
        cut = self._cut(context, offset, spans, final)
        if cut == offset and not final and len(context) - offset > self.limit:
            cut = len(context)  # held too long: released redacted, the rest of a span dropped
            if spans and spans[-1][1].end == len(context):
                kind = spans[-1][1].kind
                self.swallow = _PRIVATE_KEY_END if kind == "private_key" else _TOKEN_END
        released = [(check, f) for check, f in spans if f.start < cut]
        for check, finding in released:
            self.found.setdefault(check, set()).add(finding.kind)
        shifted = [
            PIIFinding(
                "secret" if check == "secrets" else f.kind,
                max(f.start, offset) - offset,
                min(f.end, cut) - offset,
                "",
            )
            for check, f in released
        ]
        text = context[offset:cut]
        self.tail = (self.tail + text)[-self.window :]
        self.pending = context[cut:]
        self.next_scan = len(self.pending) + self.window // 4 if len(self.pending) > self.window else 0
        return replace_spans(text, shifted, lambda f: f"[{f.kind.upper()}]")

    def _swallowed(self, piece: str) -> str:
        """What follows the end of an over-long secret (its end marker may come split over pieces)."""
        assert self.swallow is not None
        text = self.pending + piece
        end = self.swallow.search(text)
        if end is None:
            self.pending = text[-40:]  # enough for a split end marker
            return ""
        self.swallow, self.pending = None, ""
        return text[end.end() if end.re is _PRIVATE_KEY_END else end.start() :]

    def _blocks(self, context: str, final: bool) -> bool:
        """Moderation on what is complete: a last word still growing ("die" of "diet") waits."""
        if not final:
            end = len(context)
            while end and (context[end - 1].isalnum() or context[end - 1] == "_"):
                end -= 1
            context = context[:end]
        if not self.terms:
            lowered = fold(context)
            if not any(t in lowered for t in TRIGGERS):
                return False
        result = moderate(context, self.terms)
        if result.flagged:
            hit = tuple(c for c, on in result.categories.items() if on)
            self.blocked = Verdict("moderation", "block", hit)
        return result.flagged

    def _spans(self, context: str, offset: int) -> list[tuple[str, PIIFinding]]:
        """The spans to redact that reach past what was released, in order, secrets winning overlaps."""
        spans = [("secrets", f) for f in find_secrets(context)] if self.secrets else []
        if self.pii and (_DIGIT.search(context) or "@" in context or "::" in context):
            taken = [f for _, f in spans]
            spans += [
                ("pii", f)
                for f in find_pii(context, self.kinds)
                if not any(f.start < s.end and s.start < f.end for s in taken)
            ]
            spans.sort(key=lambda s: s[1].start)
        return [s for s in spans if s[1].end > offset]

    def _cut(self, context: str, offset: int, spans: list[tuple[str, PIIFinding]], final: bool) -> int:
        """Where what may be released ends: `window` characters back, never inside a span."""
        if final:
            return len(context)
        if not spans and not self._marked(context):
            space = max(context.rfind(" "), context.rfind("\n"))
            return max(offset, space + 1)  # plain prose: all but a last word that may yet grow
        cut = max(offset, len(context) - self.window)
        for _, finding in spans:
            if finding.start < cut < finding.end:
                cut = max(offset, finding.start)
        return cut

    def _marked(self, context: str) -> bool:
        """Whether any check could find something in `context` (or in it once more text comes)."""
        if _DIGIT.search(context) or any(m in context for m in _MARKERS):
            return True
        if self.policy.moderation == "block":
            if self.terms:
                return True
            lowered = fold(context)
            return any(t in lowered for t in TRIGGERS)
        return False

    def verdicts(self) -> list[Verdict]:
        """At the end of the stream: what was redacted, and the flag-only checks on the whole text."""
        out = [Verdict(check, "redact", tuple(sorted(kinds))) for check, kinds in self.found.items()]
        result = check_output("".join(self.seen), self.policy)
        for verdict in result.verdicts:
            if verdict.action == "restore" or verdict.check in self.found:
                continue
            if verdict.check == "moderation" and self.blocked is not None:
                continue
            out.append(Verdict(verdict.check, "flag", verdict.found))  # already sent: recorded only
        if self.blocked is not None:
            out.append(self.blocked)
        return out
