"""Choice-parser actor: a free-text answer → :class:`~messages.ChoiceResult` (design note 001).

Layers (note 001 §2.1)::

    cache ─ hit ───────────────────────────────────────────► result (decided_by="cache")
      │ miss
    pattern matcher (no I/O) ─ resolved, or plainly vague ─► result (decided_by="pattern")
      │ unresolved
    LLM through the router, ChoiceResult schema ─ valid ───► result (decided_by="llm")
      │ failed / timed out / nonsense
    clarification listing the options (never a guess)

Then the thresholds (§2.2): ≥ ``execute_threshold`` act, ≥ ``confirm_threshold``
confirm, below clarify; a ``critical`` risk level always confirms.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict

import anyio
import msgspec

from tandem.messages import (
    ChatMessage,
    ChoiceContext,
    ChoiceReply,
    ChoiceRequest,
    ChoiceResult,
    CompletionReply,
    CompletionRequest,
    subjects,
)
from tandem.services.bus import Bus
from tandem.services.choice import match_choice, normalize_answer
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
a refusal or negation never selects an approving option."""


def _options_text(context: ChoiceContext) -> str:
    lines = []
    for i, label in enumerate(context.available_options, start=1):
        desc = context.option_descriptions[i - 1] if i <= len(context.option_descriptions) else ""
        lines.append(f"{i}. {label}" + (f" — {desc}" if desc else ""))
    return "\n".join(lines)


def apply_thresholds(result: ChoiceResult, context: ChoiceContext, *, execute: float, confirm: float) -> ChoiceResult:
    """Set ``action`` and ``question`` from the confidence (design note 001 §2.2).

    ≥ ``execute`` with a selection → ``execute`` (``confirm`` when the risk
    level is ``critical``); ≥ ``confirm`` with a selection → ``confirm``;
    anything else → ``clarify``, with a question listing the options.
    """
    chosen = ", ".join(f"{i}. {context.available_options[i - 1]}" for i in result.selected_options)
    if result.selected_options and not result.clarification_needed and result.confidence >= confirm:
        if result.confidence >= execute and context.risk_level != "critical":
            return msgspec.structs.replace(result, action="execute", question="")
        why = "this is a critical action" if context.risk_level == "critical" and result.confidence >= execute \
            else f"I am {result.confidence:.0%} sure"
        return msgspec.structs.replace(result, action="confirm",
                                       question=f"Did you mean: {chosen}? ({why}; answer yes or no)")
    return msgspec.structs.replace(
        result, action="clarify", clarification_needed=True,
        question="Which option do you mean? Answer with a number or a description:\n" + _options_text(context))


class ChoiceParserActor(Actor):
    """Serve ``tandem.choice.parse``."""

    name = "choice"

    def __init__(self, bus: Bus, config: Config, *, concurrency: int = 64) -> None:
        super().__init__(bus, concurrency=concurrency)
        self.config = config
        self.cache: OrderedDict[tuple, ChoiceResult] = OrderedDict()

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint(subjects.CHOICE_PARSE, ChoiceRequest, self.parse,
                         timeout=self.config.choice.llm_timeout_s + 5)]

    async def parse(self, request: ChoiceRequest) -> ChoiceReply:
        """Parse one answer; see the module docstring for the layers."""
        ctx = request.context
        key = (normalize_answer(request.answer), tuple(ctx.available_options), tuple(ctx.option_descriptions),
               tuple(ctx.previous_choices), ctx.kind, ctx.risk_level)
        cached = self.cache.get(key)
        if cached is not None:
            self.cache.move_to_end(key)
            result = msgspec.structs.replace(cached, decided_by="cache")
        else:
            result = match_choice(request.answer, ctx)
            if result is None:
                result = await self._ask_model(request) if request.use_llm else None
            if result is None:
                result = ChoiceResult(reasoning="no pattern matched and no model answer", clarification_needed=True,
                                      extracted_intent="unknown", decided_by="none")
            result = apply_thresholds(result, ctx, execute=self.config.choice.execute_threshold,
                                      confirm=self.config.choice.confirm_threshold)
            if result.decided_by != "none":
                self.cache[key] = result
                if len(self.cache) > self.config.choice.cache_size:
                    self.cache.popitem(last=False)
        reply = ChoiceReply(result=result, correlation_id=request.correlation_id,
                            conversation_id=request.conversation_id)
        self.start_soon(self.bus.publish, subjects.EVENT_CHOICE, reply)  # after the reply, not before
        return reply

    async def _ask_model(self, request: ChoiceRequest) -> ChoiceResult | None:
        """The LLM path; ``None`` when it fails, times out or answers nonsense."""
        ctx = request.context
        prompt = (f"Options:\n{_options_text(ctx)}\n"
                  + (f"Plan: {ctx.current_plan}\n" if ctx.current_plan else "")
                  + f"Risk level: {ctx.risk_level}\nUser's answer: {json.dumps(request.answer, ensure_ascii=False)}")
        try:
            with anyio.fail_after(self.config.choice.llm_timeout_s):
                reply = await self.bus.request(
                    subjects.ROUTER_COMPLETE,
                    CompletionRequest(task="choice", messages=[ChatMessage(role="system", content=_SYSTEM),
                                                               ChatMessage(role="user", content=prompt)],
                                      response_schema=_SCHEMA, schema_name="choice_result", max_tokens=300,
                                      timeout_s=self.config.choice.llm_timeout_s,
                                      correlation_id=request.correlation_id, conversation_id=request.conversation_id),
                    CompletionReply, timeout=self.config.choice.llm_timeout_s)
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
