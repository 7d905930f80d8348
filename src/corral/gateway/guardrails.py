"""The guard as one gateway stage: a deployment's policy on the request, the answer and its SSE stream.

Input checks run before routing (a block answers 400 `content_policy_violation` and never reaches
an upstream); answers are checked before they are sent (pseudonyms restored, secrets and PII
redacted, a JSON schema checked with one retry); streamed answers get their pseudonyms restored
chunk by chunk, a placeholder split across chunks held back until it is whole. Verdicts go on the
trace (`meta.guard`) and into `corral_guard_verdicts`; no raw value is recorded.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from corral.config.sections import Classifier, GuardPolicy, Settings
from corral.errors import ContentPolicyViolation
from corral.gateway.costs import estimate_tokens
from corral.gateway.sse import event_data
from corral.gateway.stages import Answer, Call, Retry, Stage
from corral.guard.policy import Verdict, check_input, check_output, scrubbed
from corral.guard.pseudonyms import Pseudonyms
from corral.guard.schema import load_schema, retry_message, schema_error
from corral.guard.stream import StreamScreen

log = logging.getLogger("corral.gateway")
Slot = tuple[Any, Any]  # (container, key) holding one text of a request or an answer


def request_slots(kind: str, body: dict[str, Any]) -> list[Slot]:
    """Where a request's texts are: chat message contents (and text parts), a prompt, an input."""
    slots: list[Slot] = []
    if kind == "chat":
        for message in body.get("messages") or []:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                slots.append((message, "content"))
            elif isinstance(content, list):
                slots += [
                    (p, "text") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
                ]
        return slots
    field_name = "prompt" if kind == "completions" else "input"
    value = body.get(field_name)
    if isinstance(value, str):
        return [(body, field_name)]
    if isinstance(value, list):
        return [(value, i) for i, item in enumerate(value) if isinstance(item, str)]
    return []


def answer_slots(kind: str, answer: dict[str, Any]) -> list[Slot]:
    """Where an answer's texts are: each choice's message content (chat) or text (completions)."""
    slots: list[Slot] = []
    for choice in answer.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        holder = choice.get("message") if kind == "chat" else choice
        if isinstance(holder, dict) and isinstance(holder.get("content" if kind == "chat" else "text"), str):
            slots.append((holder, "content" if kind == "chat" else "text"))
    return slots


def refusal(verdict: Verdict, where: str) -> tuple[str, bytes]:
    found = f" ({', '.join(verdict.found)})" if verdict.found else ""
    error = ContentPolicyViolation(
        verdict.check, f"the {where} was blocked by the guard's {verdict.check} check{found}"
    )
    return str(error), orjson.dumps(error.to_openai())


@dataclass
class GuardState:
    policy: GuardPolicy
    pseudonyms: Pseudonyms | None
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    retried: bool = False
    screens: dict[int, StreamScreen] = field(default_factory=dict)  # per streamed choice
    sent: dict[int, list[str]] = field(default_factory=dict)  # what was streamed, per choice
    rewritten: bool = False  # the stream was changed: the trace stores what was sent
    template: dict[str, Any] | None = None


class Guard(Stage):
    """Applies the deployment's guard policy (`guard.policies`, `deployments.NAME.guard`)."""

    def __init__(self, settings: Settings, metrics: Any = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.base = Path(settings.source).parent if settings.source else Path.cwd()
        self._session: aiohttp.ClientSession | None = None

    def _policy(self, call: Call) -> GuardPolicy | None:
        if call.live is None or not self.settings.guard.policies:
            return None
        return self.settings.guard.policy_for(call.live.spec)

    def _note(self, call: Call, state: GuardState, verdicts: list[Verdict]) -> None:
        for verdict in verdicts:
            state.verdicts.append(verdict.as_dict())
            if self.metrics is not None:
                self.metrics.guard_verdicts.labels(call.deployment, verdict.check, verdict.action).inc()
        if state.verdicts:
            call.notes["guard"] = state.verdicts

    async def before(self, call: Call) -> Answer | None:
        policy = self._policy(call)
        if policy is None:
            return None
        slots = request_slots(call.kind, call.body)
        texts = [container[key] for container, key in slots]
        tokens = sum(estimate_tokens(t) for t in texts)
        if policy.pii_engine == "presidio":  # ~10 ms or more: off the event loop
            result = await asyncio.to_thread(check_input, texts, policy, tokens)
        else:
            result = check_input(texts, policy, tokens)
        verdicts = result.verdicts
        if not result.blocked:
            verdicts += await self._classify(policy, "\n".join(result.texts))
        state = GuardState(policy, result.pseudonyms)
        call.state["guard"] = state
        self._note(call, state, verdicts)
        blocked = next((v for v in verdicts if v.action == "block"), None)
        for (container, key), text in zip(slots, result.texts, strict=True):
            # refused, the request goes nowhere but the trace: what the policy hides is hidden there too
            container[key] = scrubbed(text, policy) if blocked is not None else text
        if blocked is not None:
            call.error, body = refusal(blocked, "request")
            return Answer(400, body)
        return None

    async def _classify(self, policy: GuardPolicy, text: str) -> list[Verdict]:
        out = []
        for check, classifier, action in (
            ("moderation", policy.moderation_classifier, policy.moderation),
            ("injection", policy.injection_classifier, policy.injection),
        ):
            if classifier is None or action == "off":
                continue
            (flagged,) = await self.ask(classifier, [text])
            if flagged:
                out.append(Verdict(check, action, ("classifier", *flagged)))
        return out

    async def ask(self, classifier: Classifier, texts: list[str]) -> list[tuple[str, ...]]:
        """Per text, the categories an OpenAI-compatible /moderations endpoint flags (one request for
        all); a failure flags nothing (logged)."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {}
        if classifier.api_key_env and os.environ.get(classifier.api_key_env):
            headers["authorization"] = f"Bearer {os.environ[classifier.api_key_env]}"
        body: dict[str, Any] = {"input": texts, **({"model": classifier.model} if classifier.model else {})}
        try:
            async with self._session.post(
                f"{classifier.url}/moderations",
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=classifier.timeout_s),
            ) as response:
                answer = await response.json(content_type=None)
            results = answer.get("results") or []
            flagged = [
                tuple(sorted(c for c, on in (result.get("categories") or {}).items() if on))
                for result in results
            ]
        except (TimeoutError, aiohttp.ClientError, ValueError, AttributeError, TypeError) as exc:
            log.warning("guard classifier %s failed: %s", classifier.url, exc)
            return [()] * len(texts)
        return (flagged + [()] * len(texts))[: len(texts)]

    async def after(self, call: Call) -> Answer | Retry | None:
        state: GuardState | None = call.state.get("guard")
        if state is None or call.status >= 400 or call.kind == "embeddings" or not call.answer:
            return None
        try:
            answer = orjson.loads(call.answer)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(answer, dict):
            return None
        slots = answer_slots(call.kind, answer)
        if state.policy.output_schema and slots:
            verdict = self._schema(call, state, slots[0][0][slots[0][1]])
            if isinstance(verdict, Retry | Answer):
                return verdict
        verdicts, changed = [], False
        for container, key in slots:
            result = check_output(container[key], state.policy, state.pseudonyms)
            verdicts += result.verdicts
            if result.texts[0] != container[key]:
                container[key], changed = result.texts[0], True
        self._note(call, state, verdicts)
        blocked = next((v for v in verdicts if v.action == "block"), None)
        if blocked is not None:
            call.error, body = refusal(blocked, "answer")
            return Answer(400, body)
        return Answer(call.status, orjson.dumps(answer)) if changed else None

    def _schema_path(self, policy: GuardPolicy) -> str:
        path = Path(policy.output_schema or "")
        return str(path if path.is_absolute() else self.base / path)

    def _schema(self, call: Call, state: GuardState, text: str) -> Answer | Retry | None:
        policy = state.policy
        assert policy.output_schema is not None
        error = schema_error(text, load_schema(self._schema_path(policy)))
        if error is None:
            return None
        messages = call.body.get("messages")
        if policy.output_schema_retry and not state.retried and isinstance(messages, list):
            state.retried = True
            messages.append(retry_message(error))
            self._note(call, state, [Verdict("output_schema", "retry")])
            return Retry(f"answer does not match the schema: {error}")
        verdict = Verdict("output_schema", policy.output_schema_action, (error[:120],))
        self._note(call, state, [verdict])
        if verdict.action == "block":
            call.error, body = refusal(verdict, "answer")
            return Answer(400, body)
        return None

    def chunk(self, call: Call, events: list[bytes]) -> list[bytes]:
        state: GuardState | None = call.state.get("guard")
        if state is None:
            return events
        out: list[bytes] = []
        for event in events:
            if call.stop_stream:
                break
            payload = event_data(event)
            if payload is None:
                out.append(event)
            elif payload.strip() == b"[DONE]":
                out += self._release(call, state)
                out.append(event)
            else:
                out.append(self._rewrite(call, state, event, payload))
        return out

    def _screen(self, state: GuardState, index: int) -> StreamScreen:
        screen = state.screens.get(index)
        if screen is None:
            screen = state.screens[index] = StreamScreen(state.policy, state.pseudonyms)
        return screen

    def _rewrite(self, call: Call, state: GuardState, event: bytes, payload: bytes) -> bytes:
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return event
        changed = False
        for choice in chunk.get("choices") or [] if isinstance(chunk, dict) else []:
            holder, key = _delta_slot(call.kind, choice)
            finishing = isinstance(choice, dict) and choice.get("finish_reason") is not None
            if holder is None and not finishing:
                continue
            index = choice.get("index", 0) if isinstance(choice.get("index"), int) else 0
            text = holder[key] if holder is not None else ""
            # the last piece of a choice also releases what was held back for it
            screen = self._screen(state, index)
            new = screen.feed(text, final=finishing)
            if screen.blocked is not None:
                return self._stop(call, state, screen.blocked)
            state.sent.setdefault(index, []).append(new)
            if new != text:
                changed = state.rewritten = True
                if holder is None:
                    holder, key = _make_slot(call.kind, choice)
                holder[key] = new
            state.template = chunk
        return b"data: " + orjson.dumps(chunk) + b"\n\n" if changed else event

    def _stop(self, call: Call, state: GuardState, verdict: Verdict) -> bytes:
        """A blocking check tripped mid-stream: an error event in OpenAI's form ends the stream."""
        call.stop_stream = state.rewritten = True  # the trace keeps what was sent, not the upstream's text
        call.error, body = refusal(verdict, "answer")
        self._verdicts(call, state)
        return b"data: " + body + b"\n\n"

    def _release(self, call: Call, state: GuardState) -> list[bytes]:
        """Events carrying the text the screens still hold, then the end-of-stream checks' verdicts."""
        out = []
        for index, screen in state.screens.items():
            rest = screen.feed("", final=True)
            if screen.blocked is not None:
                return [self._stop(call, state, screen.blocked)]
            if rest and state.template is not None:
                state.sent.setdefault(index, []).append(rest)
                out.append(
                    b"data: " + orjson.dumps(_text_event(call.kind, state.template, index, rest)) + b"\n\n"
                )
        self._verdicts(call, state)
        return out

    def _verdicts(self, call: Call, state: GuardState) -> None:
        verdicts = [v for screen in state.screens.values() for v in screen.verdicts()]
        if state.policy.output_schema and state.screens and not call.stop_stream:
            text = "".join(state.screens[min(state.screens)].seen)
            error = schema_error(text, load_schema(self._schema_path(state.policy)))
            if error is not None:  # already sent: recorded, not retried
                verdicts.append(Verdict("output_schema", "flag", (error[:120],)))
        state.screens.clear()
        self._note(call, state, verdicts)

    def stream_end(self, call: Call) -> list[bytes]:
        state: GuardState | None = call.state.get("guard")
        return self._release(call, state) if state is not None else []

    def finish(self, call: Call) -> None:
        """A rewritten stream is traced as it was sent (the upstream's text held what was redacted)."""
        state: GuardState | None = call.state.get("guard")
        if state is None or not state.rewritten or not isinstance(call.response, dict):
            return
        for choice in call.response.get("choices") or []:
            pieces = state.sent.get(choice.get("index", 0))
            holder = choice.get("message") if call.kind == "chat" else choice
            key = "content" if call.kind == "chat" else "text"
            if pieces is not None and isinstance(holder, dict) and isinstance(holder.get(key), str):
                holder[key] = "".join(pieces)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _delta_slot(kind: str, choice: Any) -> tuple[dict[str, Any] | None, str]:
    if not isinstance(choice, dict):
        return None, ""
    holder = choice.get("delta") if kind == "chat" else choice
    key = "content" if kind == "chat" else "text"
    if isinstance(holder, dict) and isinstance(holder.get(key), str):
        return holder, key
    return None, ""


def _make_slot(kind: str, choice: dict[str, Any]) -> tuple[dict[str, Any], str]:
    if kind == "chat":
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            delta = choice["delta"] = {}
        return delta, "content"
    return choice, "text"


def _text_event(kind: str, template: dict[str, Any], index: int, text: str) -> dict[str, Any]:
    piece: dict[str, Any] = {"delta": {"content": text}} if kind == "chat" else {"text": text}
    return {
        **{k: template[k] for k in ("id", "object", "created", "model") if k in template},
        "choices": [{"index": index, **piece, "finish_reason": None}],
    }


async def moderations(settings: Settings, body: dict[str, Any], guard: Guard | None = None) -> dict[str, Any]:
    """OpenAI's POST /v1/moderations answered by the default policy's checks: its term lists and,
    when it names one, its `moderation_classifier` (a category either flags is flagged)."""
    from corral.errors import InvalidInputError
    from corral.guard.moderation import freeze_terms, moderate

    given = body.get("input")
    inputs = [given] if isinstance(given, str) else given
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs) or not inputs:
        raise InvalidInputError("`input` must be a string or a non-empty list of strings")
    policy = settings.guard.policies.get("default") or GuardPolicy()
    extra = freeze_terms(policy.moderation_terms)
    results = [moderate(text, extra).as_openai() for text in inputs]
    classifier = policy.moderation_classifier
    if guard is not None and classifier is not None:
        for result, flagged in zip(results, await guard.ask(classifier, inputs), strict=True):
            categories: dict[str, bool] = result["categories"]  # type: ignore[assignment]
            scores: dict[str, float] = result["category_scores"]  # type: ignore[assignment]
            for category in flagged:
                categories[category], scores[category] = True, 1.0
            result["flagged"] = bool(result["flagged"]) or bool(flagged)
    return {
        "id": f"modr-{os.urandom(12).hex()}",
        "model": body.get("model") if isinstance(body.get("model"), str) else "corral-guard",
        "results": results,
    }
