"""From a reading to the answer a caller acts on: note 001's thresholds and contract (§2.2).

Shared by the choice-parser actor and ``tandem choose --no-llm``, which reads an answer in
process without starting NATS (so it starts fast enough for a shell loop).
"""

from __future__ import annotations

import msgspec
from tandem.messages import ChoiceContext, ChoiceResult

from ._decide import CAP_UNEXPLAINED
from ._pipeline import Analysis, analyse

__all__ = ["apply_thresholds", "finish", "pattern_choice"]


def _options_text(context: ChoiceContext) -> str:
    lines = []
    for i, label in enumerate(context.available_options, start=1):
        desc = context.option_descriptions[i - 1] if i <= len(context.option_descriptions) else ""
        lines.append(f"{i}. {label}" + (f" — {desc}" if desc else ""))
    return "\n".join(lines)


def apply_thresholds(result: ChoiceResult, context: ChoiceContext, *, execute: float, confirm: float) -> ChoiceResult:
    """Set ``action``, ``question`` and the note 001 contract from the confidence (§2.2).

    ≥ ``execute`` with a selection → ``execute`` (``confirm`` when the risk
    level is ``critical``); ≥ ``confirm`` with a selection → ``confirm`` with
    ``clarification_needed=True``; anything else → ``clarify``: no selection,
    confidence 0, a question listing the options. Refused options are never
    selected nor proposed.

    Examples
    --------
    >>> ctx = ChoiceContext(available_options=["a", "b"])
    >>> r = apply_thresholds(ChoiceResult(selected_options=[2], confidence=0.7), ctx, execute=0.8, confirm=0.6)
    >>> r.action, r.clarification_needed, r.selected_options
    ('confirm', True, [2])
    >>> r = apply_thresholds(ChoiceResult(selected_options=[2], confidence=0.4), ctx, execute=0.8, confirm=0.6)
    >>> r.action, r.selected_options, r.confidence
    ('clarify', [], 0.0)
    """
    refused = set(result.refused_options)
    selected = [i for i in result.selected_options if i not in refused]
    if selected != result.selected_options:
        result = msgspec.structs.replace(result, selected_options=selected, confidence=min(result.confidence,
                                                                                          CAP_UNEXPLAINED))
    chosen = ", ".join(f"{i}. {context.available_options[i - 1]}" for i in selected)
    if selected and result.confidence >= confirm and (result.decided_by == "llm" or not result.clarification_needed):
        if result.confidence >= execute and context.risk_level != "critical" and not result.clarification_needed:
            return msgspec.structs.replace(result, action="execute", question="")
        why = "this is a critical action" if context.risk_level == "critical" and result.confidence >= execute \
            else f"I am {result.confidence:.0%} sure"
        skip = (" — not " + ", ".join(f"{i}. {context.available_options[i - 1]}" for i in sorted(refused)
                                      if 1 <= i <= len(context.available_options))) if refused else ""
        return msgspec.structs.replace(result, action="confirm", clarification_needed=True,
                                       question=f"Did you mean: {chosen}{skip}? ({why}; answer yes or no)")
    return msgspec.structs.replace(
        result, action="clarify", clarification_needed=True, selected_options=[], confidence=0.0,
        question="Which option do you mean? Answer with a number or a description:\n" + _options_text(context))


def _with_analysis(result: ChoiceResult, analysis: Analysis) -> ChoiceResult:
    return msgspec.structs.replace(result, refused_options=sorted(analysis.refused),
                                   unexplained=list(analysis.unexplained))


def finish(result: ChoiceResult | None, analysis: Analysis, context: ChoiceContext, *, execute: float,
           confirm: float) -> ChoiceResult:
    """Complete a reading (the pattern path's or a model's, ``None`` for none) for the caller.

    Records what the analysis refused and could not explain, then applies :func:`apply_thresholds`.
    """
    if result is None:
        result = ChoiceResult(reasoning="no pattern matched and no model answer", clarification_needed=True,
                              extracted_intent="unknown", decided_by="none")
    return apply_thresholds(_with_analysis(result, analysis), context, execute=execute, confirm=confirm)


def pattern_choice(answer: str, context: ChoiceContext, *, execute: float = 0.8, confirm: float = 0.6) -> ChoiceResult:
    """Read ``answer`` with the pattern path alone (no model), as the actor does with ``use_llm=False``.

    Examples
    --------
    >>> pattern_choice("the second one", ChoiceContext(available_options=["a", "b", "c"])).selected_options
    [2]
    """
    analysis = analyse(answer, context)
    return finish(analysis.result, analysis, context, execute=execute, confirm=confirm)
