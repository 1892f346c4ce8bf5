"""Choice-parser actor: a free-text answer → :class:`~messages.ChoiceResult` (design note 001).

Layers (note 001 §2.1)::

    cache ─ hit ─────────────────────────────────────────────► result (decided_by="cache")
      │ miss
    pattern path (no I/O) ─ total parse, or plainly vague ───► result (decided_by="pattern")
      │ declined: no reading, or words it cannot explain
    LLM through the router, ChoiceResult schema, told why ──► result (decided_by="llm"),
      │ the pattern path declined                              held to the same safety rules
      │ failed / timed out / nonsense
    the pattern path's own (capped) reading, or a clarification listing the options

Then the thresholds (§2.2): ≥ ``execute_threshold`` act, ≥ ``confirm_threshold``
confirm, below clarify with no selection and confidence 0; a ``critical`` risk
level always confirms. ``clarification_needed`` is ``True`` for every answer
that is not acted on, so a client written to note 001 never acts on an
unconfirmed reading.

Safety rules for the model's reading: an option the answer negates or
excludes (the pattern path's ``refused_options``) is removed from it and the
rest is at most confirmed; when the pattern path saw sarcasm, a double
negative, a past reference or a comparison, the model's reading is at most
confirmed too. A confirm question never proposes a refused option.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from typing import ClassVar

import anyio
import msgspec
from tandem.messages import (
    ChatMessage,
    ChoiceReply,
    ChoiceRequest,
    ChoiceResult,
    CompletionReply,
    CompletionRequest,
    subjects,
)
from tandem.services.bus import Bus
from tandem.services.choice import CAP_UNEXPLAINED, Analysis, analyse, normalize_answer
from tandem.services.choice._result import _options_text, apply_thresholds, finish
from tandem.services.config import Config
from tandem.services.errors import TandemError

from ._base import Actor, Endpoint

__all__ = ["ChoiceParserActor", "apply_thresholds"]

log = logging.getLogger("tandem.choice")


class _LLMChoice(msgspec.Struct, frozen=True, kw_only=True):
    """The part of ChoiceResult the model fills in (its structured-output schema)."""

    selected_options: list[int]
    confidence: float
    reasoning: str = ""
    modifications: list[str] = []
    clarification_needed: bool = False
    extracted_intent: str = ""


_SCHEMA = msgspec.json.schema(_LLMChoice)
_llm_decoder = msgspec.json.Decoder(_LLMChoice)

_SYSTEM = """You interpret a user's free-text answer to a question with numbered options.
Answer with JSON only: selected_options (1-based numbers of the options the user chose; [] if none),
confidence (0.0-1.0), reasoning, modifications (conditions the user attached), clarification_needed,
extracted_intent. Rules (design note 001): explicit numbers → 0.9+; descriptive references → 0.6-0.8;
vague → 0.0-0.5 and clarification_needed true; questions → clarification_needed true;
a refusal or negation never selects an approving option; an option the user refuses, mentions only
(a past choice, a comparison) or names sarcastically is never selected."""


def _declined(analysis: Analysis, execute: float) -> bool:
    """Whether the pattern path declined in a way a model may resolve (no reading, or unexplained words)."""
    r = analysis.result
    if r is None:
        return True
    if r.selected_options and r.confidence >= execute:
        return False
    return bool(analysis.unexplained or analysis.guards)


def _hold_to_rules(result: ChoiceResult, analysis: Analysis) -> ChoiceResult:
    """The pattern path's safety rules applied to a model's reading."""
    notes = []
    selected = result.selected_options
    confidence = result.confidence
    dropped = [i for i in selected if i in analysis.refused]
    if dropped:
        selected = [i for i in selected if i not in analysis.refused]
        confidence = min(confidence, CAP_UNEXPLAINED)
        notes.append(f"removed option(s) the answer refuses: {dropped}")
    if analysis.guards and confidence > CAP_UNEXPLAINED:
        confidence = CAP_UNEXPLAINED
        notes.append("at most confirmed: " + "; ".join(analysis.guards))
    if not notes:
        return result
    return msgspec.structs.replace(result, selected_options=selected, confidence=confidence,
                                   reasoning=f"{result.reasoning} ({'; '.join(notes)})".strip())


def _why_declined(analysis: Analysis) -> str:
    parts = []
    if analysis.unexplained:
        parts.append("words it cannot explain: " + json.dumps(analysis.unexplained, ensure_ascii=False))
    if analysis.guards:
        parts.append("; ".join(analysis.guards))
    if analysis.refused:
        parts.append(f"options the answer refuses: {sorted(analysis.refused)}")
    if analysis.result is not None and analysis.result.selected_options:
        parts.append(f"its own reading: {analysis.result.selected_options} at {analysis.result.confidence}")
    return "; ".join(parts) or "no option reference it knows"


class ChoiceParserActor(Actor):
    """Serve ``tandem.choice.parse``."""

    name = "choice"
    # what it needs on the bus beyond its endpoints (issue 15: the generated NATS permissions)
    calls: ClassVar[tuple[str, ...]] = (subjects.ROUTER_COMPLETE,)
    publishes: ClassVar[tuple[str, ...]] = (subjects.EVENT_CHOICE,)
    public: ClassVar[tuple[str, ...]] = (subjects.CHOICE_PARSE,)

    def __init__(self, bus: Bus, config: Config, *, concurrency: int = 64) -> None:
        super().__init__(bus, concurrency=concurrency)
        self.config = config
        self.cache: OrderedDict[tuple, ChoiceResult] = OrderedDict()

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint(subjects.CHOICE_PARSE, ChoiceRequest, self.parse,
                         timeout=self.config.choice.llm_timeout_s + 5, idempotent=True)]

    async def parse(self, request: ChoiceRequest) -> ChoiceReply:
        """Parse one answer; see the module docstring for the layers."""
        ctx = request.context
        key = (normalize_answer(request.answer), tuple(ctx.available_options), tuple(ctx.option_descriptions),
               tuple(ctx.previous_choices), ctx.kind, ctx.risk_level, request.use_llm)
        cached = self.cache.get(key)
        if cached is not None:
            self.cache.move_to_end(key)
            result = msgspec.structs.replace(cached, decided_by="cache")
        else:
            choice = self.config.choice
            analysis = analyse(request.answer, ctx)
            result = analysis.result
            if request.use_llm and _declined(analysis, choice.execute_threshold):
                model = await self._ask_model(request, analysis)
                if model is not None:
                    result = _hold_to_rules(model, analysis)
            result = finish(result, analysis, ctx, execute=choice.execute_threshold,
                            confirm=choice.confirm_threshold)
            if result.decided_by != "none":
                self.cache[key] = result
                if len(self.cache) > self.config.choice.cache_size:
                    self.cache.popitem(last=False)
        reply = ChoiceReply(result=result, correlation_id=request.correlation_id,
                            conversation_id=request.conversation_id)
        self.start_soon(self.bus.publish, subjects.EVENT_CHOICE, reply)  # after the reply, not before
        return reply

    async def _ask_model(self, request: ChoiceRequest, analysis: Analysis) -> ChoiceResult | None:
        """The LLM path; ``None`` when it fails, times out or answers nonsense."""
        ctx = request.context
        prompt = (f"Options:\n{_options_text(ctx)}\n"
                  + (f"Plan: {ctx.current_plan}\n" if ctx.current_plan else "")
                  + f"Risk level: {ctx.risk_level}\nUser's answer: {json.dumps(request.answer, ensure_ascii=False)}\n"
                  + f"Why the pattern matcher did not decide: {_why_declined(analysis)}")
        try:
            with anyio.fail_after(self.config.choice.llm_timeout_s):
                reply = await self.bus.request(
                    subjects.ROUTER_COMPLETE,
                    CompletionRequest(task="choice", messages=[ChatMessage(role="system", content=_SYSTEM),
                                                               ChatMessage(role="user", content=prompt)],
                                      response_schema=_SCHEMA, schema_name="choice_result", max_tokens=300,
                                      timeout_s=self.config.choice.llm_timeout_s,
                                      correlation_id=request.correlation_id, conversation_id=request.conversation_id),
                    CompletionReply, timeout=self.config.choice.llm_timeout_s, idempotent=True)
            answer = _llm_decoder.decode(reply.content)
        except (TandemError, TimeoutError, msgspec.DecodeError) as exc:
            log.info("choice: LLM path failed, falling back: %s", exc)
            return None
        n = len(ctx.available_options)
        valid = sorted({i for i in answer.selected_options if 1 <= i <= n})
        dropped = [i for i in answer.selected_options if not 1 <= i <= n]
        confidence = min(max(answer.confidence, 0.0), 1.0)
        reasoning = answer.reasoning
        if dropped:  # the model named options that do not exist: never act on a half-wrong reading
            confidence = min(confidence, 0.5)
            reasoning = f"{reasoning} (dropped options that do not exist: {dropped})".strip()
        return ChoiceResult(selected_options=valid, confidence=confidence, reasoning=reasoning,
                            modifications=answer.modifications, clarification_needed=answer.clarification_needed,
                            extracted_intent=answer.extracted_intent, decided_by="llm")
