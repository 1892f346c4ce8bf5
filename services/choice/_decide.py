"""Stage 3: the decision — a :class:`~._clauses.Reading` → :class:`~tandem.messages.ChoiceResult` or a deferral.

Checks run in this order, each able to end the decision:

1. what the clause stage decided already (sarcasm, a question or a hold
   inside a condition) → clarification;
2. references to options that do not exist, or ordinals that do not apply
   ("the middle one" of four) → clarification naming them;
3. questions, concerns, holds, double negatives, a negation after a choice →
   clarification (the negated options are listed as refused);
4. the mode-specific reading (:func:`_options_mode` / :func:`_approval_mode`);
5. caps: hedges, question marks, hesitation, conditions, and — the totality
   rule — any unexplained word, past reference or comparison caps the
   confidence at :data:`CAP_UNEXPLAINED`, below the acting threshold.
"""

from __future__ import annotations

import itertools
import operator
from typing import Final

from tandem.messages.choice import ChoiceContext, ChoiceResult

from ._clauses import ROLE, Reading, gap, has_kind
from ._options import OptionIndex, previous_option
from ._tokens import DECISIVE, KIND, SRC, Kind, Src, Token

__all__ = ["CAP_UNEXPLAINED", "Outcome", "decide", "decide_one_word", "describe", "positives"]

CAP_UNEXPLAINED: Final = 0.75
"""Highest confidence of an answer that is not a total parse (the default acting threshold is 0.8)."""

_MODIFY_CONF: Final = 0.8
_SUPERLATIVE_CONF: Final = 0.85
_NAMED: Final = frozenset((SRC.LABEL, SRC.KEYWORD, SRC.DESCRIPTION))
_NUMERIC: Final = frozenset((SRC.NUMBER, SRC.ORDINAL))
# member tests against constants: a tuple of class attributes would be built on every test
_WORDED: Final = frozenset((SRC.KEYWORD, SRC.DESCRIPTION))
_FIRST_LAST: Final = frozenset((KIND.FIRSTN, KIND.LASTN))
_ALLS: Final = frozenset((KIND.ALL, KIND.ALLCOUNT))
_DELEGATING: Final = frozenset((SRC.DELEGATE, SRC.PREF))
_YES_NEG: Final = frozenset((KIND.YES, KIND.NEG))
_EXPLICIT: Final = frozenset((SRC.NUMBER, SRC.ORDINAL, SRC.LABEL))
_NOT_CONSENT: Final = frozenset((KIND.QUESTION, KIND.HOLD, KIND.SARCASM, KIND.QMARK))
_CHOICES: Final = frozenset((KIND.REF, KIND.RANGE, KIND.FIRSTN, KIND.LASTN))
_START: Final = operator.attrgetter("start")
_SRC_WORD: Final = {m: m.name.lower() for m in Src}  # an enum member's .name is slow to read
_KIND_WORD: Final = {m: m.name.lower() for m in Kind}


class Outcome:
    """A decision with what the safety rules need to know afterwards.

    Attributes
    ----------
    result : ChoiceResult or None
        ``None``: the pattern path declines (a model may read the answer).
    refused : set of int
        Options the answer negates, excludes or refuses; never proposed.
    guards : list of str
        Why the answer must not be acted on as read.
    unexplained : list of str
        Words the grammar did not explain.
    """

    __slots__ = ("guards", "refused", "result", "unexplained")

    def __init__(self, result: ChoiceResult | None, refused: set[int], guards: list[str],
                 unexplained: list[str]) -> None:
        self.result = result
        self.refused = refused
        self.guards = guards
        self.unexplained = unexplained


# (selected options, confidence, extracted_intent, reasoning)
_Decision = tuple[list[int], float, str, str]


def _clarify(conf: float, reasoning: str, intent: str, mods: list[str] | None = None) -> ChoiceResult:
    return ChoiceResult(selected_options=[], confidence=conf, reasoning=reasoning, modifications=mods or [],
                        clarification_needed=True, extracted_intent=intent, decided_by="pattern")


def _vals(t: Token, n: int) -> tuple[list[int], str]:
    """Options a targetable token refers to, or an error text."""
    k = t.kind
    if k is KIND.REF:
        if t.amb:
            return [], t.amb
        v = t.val
        assert isinstance(v, int)
        if 1 <= v <= n:
            return [v], ""
        return [], f"option {v} does not exist (there are {n})"
    if k is KIND.RANGE:
        a, b = t.val  # type: ignore[misc]
        if a > b:
            a, b = b, a
        if a < 1 or b > n:
            bad = b if b > n else a
            return [], f"option {bad} does not exist (there are {n})"
        return list(range(a, b + 1)), ""
    if k in _FIRST_LAST:
        v = t.val
        assert isinstance(v, int)
        if v < 1 or v > n:
            return [], f"asked for {v} options but there are {n}"
        return (list(range(1, v + 1)) if k is KIND.FIRSTN else list(range(n - v + 1, n + 1))), ""
    if k is KIND.ALL:
        return list(range(1, n + 1)), ""
    return [], ""


def _first(toks: list[Token], kind: Kind) -> Token | None:
    """The first token of ``kind`` (a loop: a generator or a comprehension is a function call)."""
    for t in toks:
        if t.kind is kind:
            return t
    return None


def _shown(s: str, t: Token) -> str:
    return s[t.start : t.end].strip()


def _fmt(sel: list[int]) -> str:
    return ",".join(map(str, sel))


def describe(s: str, ts: list[Token]) -> str:
    """How the references were named, for ``reasoning`` ("number '1', ordinal 'the last one')."""
    parts = []
    for t in ts[:4]:
        parts.append(f"{_SRC_WORD[t.src] if t.src is not SRC.NONE else _KIND_WORD[t.kind]} {_shown(s, t)!r}")
    return ", ".join(parts)


def positives(pos: list[Token], n: int) -> tuple[set[int], float, list[Token]]:
    """(selected options, confidence, the tokens used) of the un-negated references."""
    sel: set[int] = set()
    low: float | None = None  # the lowest confidence
    used: list[Token] = []
    for t in pos:
        if t.kind in _CHOICES:
            v = t.val
            if t.kind is KIND.REF and not t.amb and isinstance(v, int) and 1 <= v <= n:
                sel.add(v)  # an existing option (what _vals finds for most references, without the call)
            else:
                sel.update(_vals(t, n)[0])
            if low is None or t.conf < low:
                low = t.conf
            used.append(t)
    conf = 0.0 if low is None else low
    if len(used) > 1:
        conf = max(conf - 0.02 * (len(used) - 1), min(conf, 0.85))
    return sel, conf, used


def _vague(s: str, vague: list[Token], idx: OptionIndex, mods: list[str]) -> ChoiceResult:
    v = vague[0]
    if v.src in _DELEGATING and idx.recommended is not None:
        return ChoiceResult(
            selected_options=[idx.recommended], confidence=0.7,
            reasoning=f"delegated ({_shown(s, v)!r}) → the recommended option {idx.recommended}",
            modifications=mods, extracted_intent=f"select {idx.recommended} (recommended)", decided_by="pattern",
        )
    return _clarify(min(v.conf, 0.3), f"vague answer ({_shown(s, v)!r})", "vague", mods)


def _options_mode(s: str, act: list[Token], pos: list[Token], negd: list[Token], excl: list[Token],
                  bare: list[Token], idx: OptionIndex, previous: list[str],
                  kinds: set[Kind]) -> _Decision | ChoiceResult | None:
    # kinds: the kinds in act (pos is part of act); a check for an absent kind is skipped
    n = idx.n
    everything = range(1, n + 1)  # (a set where a set operation needs one)
    sel, conf, used = positives(pos, n)
    has_all = (not kinds.isdisjoint(_ALLS) and has_kind(pos, _ALLS)) or (
        KIND.EXC in kinds and any(t.kind is KIND.EXC and t.src is SRC.ALLX for t in act))
    has_rest = KIND.REST in kinds and any(t.kind is KIND.REST for t in pos)
    yes: list[Token] = []
    for t in act if KIND.YES in kinds else ():
        if t.kind is KIND.YES and t.neg is None:
            yes.append(t)
    ex: set[int] = set()
    for t in excl:
        ex.update(_vals(t, n)[0])
    ng: set[int] = set()
    for t in negd:
        ng.update(_vals(t, n)[0])
    if negd and has_kind(negd, _ALLS):
        return _clarify(0.2, "'not all' does not say which", "not all")
    if ex:
        base = sel if sel and not has_all else set(everything)
        out = sorted(base - ex)
        c = 0.9 if has_all else 0.88
        if sel and not has_all:
            c = min(conf, 0.88)
        return out, c, f"all except {_fmt(sorted(ex))}" if base == set(everything) else f"select {_fmt(out)}", (
            f"exclusion of {_fmt(sorted(ex))}" + (f" from {describe(s, used)}" if used and not has_all else " from all")
        )
    if ng:
        if sel:
            if sel & ng:
                return _clarify(0.2, f"option(s) {_fmt(sorted(sel & ng))} both chosen and negated", "conflicting")
            out = sorted(sel)
            return out, min(conf, 0.85), f"select {_fmt(out)}", f"{describe(s, used)}, not {_fmt(sorted(ng))}"
        if has_rest or has_all:
            out = sorted(set(everything) - ng)
            return out, 0.85, f"all except {_fmt(sorted(ng))}", f"rest after removing negated {_fmt(sorted(ng))}"
        return _clarify(0.2, f"negated option(s) {_fmt(sorted(ng))} without saying what to do instead",
                        f"not {_fmt(sorted(ng))}")
    if sel:
        out = sorted(sel)
        if KIND.ALLCOUNT in kinds and any(t.kind is KIND.ALLCOUNT and t.val != len(out) for t in pos):
            return _clarify(0.3, f"count does not match {_fmt(out)}", "ambiguous count")
        intent = f"select {_fmt(out)}"
        if KIND.ONLY in kinds:
            intent = f"only {_fmt(out)}"
        return out, conf, intent, describe(s, used)
    if has_all:
        return list(everything), 0.92, "all", "all options"
    negated_yes = [t for t in act if t.kind is KIND.YES and t.neg is not None] if KIND.YES in kinds else []
    if bare or negated_yes:
        return _clarify(0.3, "a refusal without an option to reject", "none")
    if KIND.RECOMMEND in kinds and any(t.kind is KIND.RECOMMEND for t in pos):
        if idx.recommended is not None:
            return ([idx.recommended], 0.75, f"select {idx.recommended} (recommended)",
                    "asked for the recommended option")
        return _clarify(0.3, "asked for a recommendation; no option is marked recommended", "delegate")
    if KIND.SAME in kinds and any(t.kind is KIND.SAME for t in pos):
        v = previous_option(idx, previous)
        if v is not None:
            return [v], 0.75, f"select {v} (same as before)", "same as the previous choice"
        return None
    if yes:
        if any(y.strong for y in yes) or len("".join(_free_words(s, act))) < 2:
            if n == 1:
                return [1], 0.9, "select 1", f"affirmative {_shown(s, yes[0])!r} with a single option"
            return _clarify(0.2, f"affirmative {_shown(s, yes[0])!r} but {n} options", "yes, but which option?")
        return None  # "バックアップの方がいい": a preference in words, for the model
    cnt = next((t for t in act if t.kind is KIND.CNT), None)
    if cnt is not None:
        return _clarify(0.2, f"a count ({_shown(s, cnt)!r}) without saying which", "ambiguous count")
    return None


def decide_one_word(s: str, t: Token, idx: OptionIndex) -> ChoiceResult | None:
    """The decision for an answer that is one consent, refusal or vague word and nothing else.

    What :func:`decide` concludes for such an answer, without the clause stage
    (the answer is one active clause holding ``t``, with no word left
    unexplained): in an options prompt a consent word asks which option
    ("yes" with several options) and a refusal names none to reject; a vague
    word asks back or, when it delegates, takes the recommended option (both
    prompts).

    Parameters
    ----------
    s : str
        The normalised answer.
    t : Token
        Its only token; the caller checked that no word is left unexplained.
    idx : OptionIndex

    Returns
    -------
    ChoiceResult or None
        ``None``: another kind, or a case :func:`decide` must read.

    Examples
    --------
    >>> from ._options import index_for
    >>> from ._scanner import scan
    >>> from tandem.messages.choice import ChoiceContext
    >>> idx = index_for(ChoiceContext(available_options=["a", "b"]))
    >>> decide_one_word("yes", scan("yes", idx)[0], idx).reasoning
    "affirmative 'yes' but 2 options"
    """
    k = t.kind
    if k is KIND.VAGUE:
        if t.src is SRC.NOISE:
            return _clarify(0.1, f"hesitation only ({_shown(s, t)!r})", "vague")
        return _vague(s, [t], idx, [])
    if idx.approval:
        return None
    if k is KIND.YES:
        n = idx.n
        if n == 1:
            return None
        return _clarify(0.2, f"affirmative {_shown(s, t)!r} but {n} options", "yes, but which option?")
    if k is KIND.NEG:
        return _clarify(0.3, "a refusal without an option to reject", "none")
    return None


def _free_words(s: str, act: list[Token]) -> list[str]:
    from ._clauses import residue_words

    return residue_words(s, 0, len(s), act)


def _approval_mode(s: str, act: list[Token], pos: list[Token], negd: list[Token], excl: list[Token],
                   bare: list[Token], idx: OptionIndex) -> _Decision | ChoiceResult | None:
    n = idx.n
    ap, rj = idx.approve, idx.reject
    signals: dict[int, tuple[float, str]] = {}

    def add(opt: int | None, conf: float, why: str) -> ChoiceResult | None:
        if opt is None:
            return _clarify(0.2, f"{why}, but no option fits", "unclear")
        old = signals.get(opt)
        if old is None or old[0] < conf:
            signals[opt] = (conf, why)
        return None

    for t in negd:
        vs, _ = _vals(t, n)
        if t.kind in _ALLS:  # "全部やめて", "全部却下"
            r = add(rj, 0.9, f"refusal of everything {_shown(s, t)!r}")
            if r is not None:
                return r
            continue
        if t.kind is KIND.NEG:  # a negated rejection word
            return _clarify(0.2, f"double negative ({_shown(s, t)!r})", "unclear negation")
        if ap is not None and vs == [ap]:
            r = add(rj, 0.92, f"negated approval {_shown(s, t.neg)!r} {_shown(s, t)!r}")  # type: ignore[arg-type]
        elif rj is not None and vs == [rj]:
            return _clarify(0.2, f"negated rejection ({_shown(s, t)!r})", "unclear negation")
        else:
            return _clarify(0.2, f"negated {_shown(s, t)!r} without saying what to do", "unclear negation")
        if r is not None:
            return r
    for t in act:
        if t.kind is KIND.YES and t.neg is not None:
            r = add(rj, 0.92, f"negated approval {_shown(s, t.neg)!r} {_shown(s, t)!r}")  # type: ignore[arg-type]
            if r is not None:
                return r
    for t in bare:
        r = add(rj, 0.85 if t.src is SRC.YET else t.conf, f"refusal {_shown(s, t)!r}")
        if r is not None:
            return r
    if excl:
        return _clarify(0.2, "an exclusion in an approval prompt", "unclear")
    sel, conf, used = positives(pos, n)
    for v in sel:
        add(v, conf, describe(s, used))
    yes = [t for t in act if t.kind is KIND.YES and t.neg is None]
    if yes:
        first_dec = next(t for t in act if t.kind in DECISIVE)
        # a yes word counts when nothing else was said, or when it opens the answer ("はい、1番");
        # politeness ("please", "お願いします") never outweighs a refusal
        counted = [y for y in yes
                   if (not sel and (y.src is not SRC.POLITE or not signals)) or (y is first_dec and y.strong)]
        if counted:
            best = max(counted, key=lambda y: y.conf)
            c = best.conf
            if not best.strong and len(act) == 1 and s.strip(" ,、;。.!:?") in ("いいです", "いい"):
                c = 0.6  # "いいです" alone can mean "no thanks"
            r = add(ap, c, f"affirmative {_shown(s, best)!r}")
            if r is not None:
                return r
    if not signals:
        if has_kind(pos, _ALLS):
            r = add(ap, 0.7, "'all' in an approval prompt")
            if r is not None:
                return r
        else:
            if any(t.kind is KIND.RECOMMEND for t in pos) and idx.recommended is not None:
                return ([idx.recommended], 0.75, f"select {idx.recommended} (recommended)",
                        "asked for the recommended option")
            return None
    if len(signals) > 1:
        return _clarify(0.2, "conflicting signals: " + "; ".join(w for _, w in signals.values()), "conflicting")
    ((opt, (c, why)),) = signals.items()
    if opt == ap:
        if any(t.kind is KIND.NEG for t in act) or negd:
            return _clarify(0.2, "approval mixed with a negation", "conflicting")
        intent = "approve"
    elif opt == rj:
        intent = "reject"
    else:
        intent = f"select {opt}"
    return [opt], c, intent, why


def _outcome(r: Reading, result: ChoiceResult | None) -> Outcome:
    return Outcome(result, r.refused, r.guards + r.cap_guards, r.unexplained)


def decide(r: Reading, idx: OptionIndex, context: ChoiceContext) -> Outcome:
    """Decide what ``r`` selects; see the module docstring for the order of checks.

    Parameters
    ----------
    r : Reading
    idx : OptionIndex
    context : ChoiceContext

    Returns
    -------
    Outcome
    """
    s = r.s
    n = idx.n
    approval = idx.approval
    if r.early is not None:
        conf, why, intent = r.early
        return _outcome(r, _clarify(conf, why, intent, r.mods))
    if r.defer:
        return _outcome(r, _modify_reading(r, idx) if approval else None)
    act = r.act
    mods = r.mods
    if not act:
        if r.neg_mod and approval:  # "don't delete the logs": not a consent, not a refusal either
            return _outcome(r, _clarify(0.3, "only a condition, no choice", "condition only", mods))
        if r.cap_guards and r.mentioned:  # "前回は2番だった": mentions an option, chooses none
            return _outcome(r, _clarify(0.3, "; ".join(r.cap_guards) + ": no choice made", "mention only", mods))
        return _outcome(r, None)

    kinds: set[Kind] = set()
    targets: list[Token] = []
    for t in act:  # one loop for both (a comprehension is a function call each)
        kinds.add(t.kind)
        if t.tgt:
            targets.append(t)

    # out-of-range / ambiguous references: never select, never let a model guess
    for t in targets:
        v = t.val
        if t.kind is KIND.REF and not t.amb and isinstance(v, int) and 1 <= v <= n:
            continue  # an existing option (what _vals finds for most targets, without the call)
        _vs, err = _vals(t, n)
        if err:
            return _outcome(r, _clarify(0.1, f"{_shown(s, t)!r}: {err}",
                                        "ambiguous ordinal" if t.amb else "invalid option", mods))
    for t in targets if KIND.ALLCOUNT in kinds else ():
        if t.kind is KIND.ALLCOUNT and t.val != n:
            explicit = [u for u in targets if u.kind in _CHOICES
                        and u.neg is None]
            if not explicit:
                return _outcome(r, _clarify(0.2, f"{_shown(s, t)!r} but there are {n} options", "ambiguous count",
                                            mods))

    # questions, concerns, holds
    first = None  # the first question, else the first concern when there is a question mark
    if KIND.QUESTION in kinds:
        first = _first(act, KIND.QUESTION)
    elif KIND.CONCERN in kinds and KIND.QMARK in kinds:
        first = _first(act, KIND.CONCERN)
    if first is not None:
        return _outcome(r, _clarify(0.2, f"question or concern ({_shown(s, first)!r})", "question: " + r.orig[:80],
                                    mods))
    for c in r.clauses if KIND.QMARK in kinds else ():  # an active clause's tokens are in act
        if (c.role is ROLE.ACTIVE and any(t.kind is KIND.QMARK for t in c.toks)
                and not any(t.tgt and t.kind is not KIND.YES for t in c.toks)):
            return _outcome(r, _clarify(0.2, "answer is a question", "question: " + r.orig[:80], mods))
    if KIND.HOLD in kinds:
        return _outcome(r, _clarify(0.2, "user asked to wait", "hold", mods))
    if r.double_neg is not None:
        return _outcome(r, _clarify(0.2, f"double negative ({_shown(s, r.double_neg)!r})", "unclear negation", mods))
    if r.guards:
        return _outcome(r, _clarify(0.2, "; ".join(r.guards), "unclear negation", mods))

    if KIND.VAGUE in kinds:
        vague = [t for t in act if t.kind is KIND.VAGUE and t.src is not SRC.NOISE]
        hesitation = [t for t in act if t.kind is KIND.VAGUE and t.src is SRC.NOISE]
    else:
        vague, hesitation = [], []

    # resolve option references
    pos: list[Token] = []
    negd: list[Token] = []
    excl: list[Token] = []
    ordered: list[Token] = []  # the positive choices, sorted below
    for t in targets:
        if t.kind in _YES_NEG:
            continue
        if t.exc is not None:
            excl.append(t)
        elif t.neg is not None:
            negd.append(t)
        else:
            pos.append(t)
            if t.kind in _CHOICES:
                ordered.append(t)
    for t in excl + negd if excl or negd else ():
        if t.kind is not KIND.ALL:
            r.refused.update(_vals(t, n)[0])
    if KIND.NEG in kinds or KIND.EXC in kinds:
        used: set[int] = set()
        for u in act:
            if u.neg is not None:
                used.add(id(u.neg))
            if u.exc is not None:
                used.add(id(u.exc))
        bare = [t for t in act if t.kind is KIND.NEG and t.neg is None and id(t) not in used]
    else:
        used, bare = set(), []
    if KIND.EXC in kinds and any(t.kind is KIND.EXC and id(t) not in used for t in act):
        return _outcome(r, None)  # "everything except the slow stuff": excludes something that is not an option

    # "1か2", "1 or 2"
    ordered.sort(key=_START)
    for a, b in itertools.pairwise(ordered):
        if gap(s, a, b) == "or":
            return _outcome(r, _clarify(0.3, f"alternatives {_shown(s, a)!r} or {_shown(s, b)!r}", "ambiguous: either",
                                        mods))
    # conflicts between a number and a label next to it ("1番の完全実行")
    for a, b in itertools.pairwise(ordered):
        srcs = {a.src, b.src}
        if (a.kind is b.kind is KIND.REF and a.val != b.val and srcs & _NAMED and srcs & _NUMERIC
                and gap(s, a, b) == "other"):
            return _outcome(r, _clarify(0.3, f"{_shown(s, a)!r} and {_shown(s, b)!r} point to different options",
                                        "conflicting", mods))

    if approval:
        res = _approval_mode(s, act, pos, negd, excl, bare, idx)
    else:
        res = _options_mode(s, act, pos, negd, excl, bare, idx, context.previous_choices, kinds)
    if res is None or isinstance(res, ChoiceResult):
        if res is None:
            if vague:
                return _outcome(r, _vague(s, vague, idx, mods))
            if hesitation and not r.unexplained:
                return _outcome(r, _clarify(0.1, f"hesitation only ({_shown(s, hesitation[0])!r})", "vague", mods))
            if KIND.AMBIG in kinds:
                return _outcome(r, _clarify(0.2, "ambiguous politeness (結構/大丈夫)", "ambiguous", mods))
            if mods and approval:
                return _outcome(r, _clarify(0.3, "only a condition, no choice", "condition only", mods))
            return _outcome(r, None)
        if mods and not res.modifications:
            res = ChoiceResult(selected_options=res.selected_options, confidence=res.confidence,
                               reasoning=res.reasoning, modifications=mods,
                               clarification_needed=res.clarification_needed, extracted_intent=res.extracted_intent,
                               decided_by="pattern")
        return _outcome(r, res)

    sel, conf, intent, why = res
    if r.refused:
        sel = [v for v in sel if v not in r.refused]  # never propose what the answer refused
    if not sel:
        return _outcome(r, _clarify(0.2, why or "nothing left to select", intent or "empty selection", mods))
    if approval and context.kind == "approval" and len(sel) > 1:
        return _outcome(r, _clarify(0.3, f"approval options are exclusive, got {_fmt(sel)}", "conflicting", mods))

    note: list[str] = []
    words = r.unexplained
    if (KIND.SUPERLATIVE in kinds and not words and len(pos) == 1 and pos[0].kind is KIND.REF
            and pos[0].src in _NAMED and conf < _SUPERLATIVE_CONF):
        conf = _SUPERLATIVE_CONF  # "the safest one", "一番安全なやつ": names one option through its quality
        note.append("superlative")
    if vague:
        conf = min(conf, 0.6)
        note.append("hesitant")
    if KIND.HEDGE in kinds or KIND.SUGGEST in kinds:
        conf = min(conf, 0.7)
        note.append("hedged")
    if KIND.QMARK in kinds:
        conf = min(conf, 0.7)
        note.append("asked as a question")
    if bare and not approval:
        conf = min(conf, 0.6)
        note.append("contains an unscoped negation")
    if approval and KIND.ONLY in kinds and words and not pos:
        return _outcome(r, _modify_reading(r, idx))  # "ファイル作成だけお願いします": a partial approval
    if (not approval and words and pos and len("".join(words)) >= 8
            and all(t.kind is KIND.REF and t.src in _WORDED for t in pos)):
        return _outcome(r, None)  # mostly free text around a partial keyword: let the model read it
    approves = approval and intent == "approve"
    strong_yes = approves and KIND.YES in kinds and any(
        t.kind is KIND.YES and t.strong and t.neg is None for t in act)
    if approves and len("".join(words)) >= 4 and not strong_yes:
        return _outcome(r, None)  # "please change the plan to add logging": politeness around a request
    if approves and r.neg_mod and not (strong_yes or any(t.kind is KIND.REF and t.src in _EXPLICIT for t in pos)):
        # "never 1番、お願いします": a negation we could not scope, next to mere politeness
        return _outcome(r, _clarify(0.2, "a negation next to a polite request, no explicit consent",
                                    "unclear negation", mods))
    if approval and intent == "approve" and mods and idx.modify is not None:
        # "承認、ただしバックアップを取ってから" with a "request changes" option: approval with changes
        return _outcome(r, _modify_result(r, idx, mods, f"approval with a condition: {why}"))
    if approval and intent == "reject" and words and conf > 0.75:
        conf = 0.75  # "設定変更はやめて": refuses something specific, maybe only part of the plan
        note.append("refusal of something specific")
    if mods:
        conf = min(conf - 0.1, 0.75)  # a condition is always confirmed: patterns cannot judge it
        note.append("conditional")
    # the totality rule: anything unexplained, a past reference or a comparison caps below acting
    if words and conf > CAP_UNEXPLAINED:
        conf = CAP_UNEXPLAINED
        note.append("unexplained text: " + " ".join(words[:6]))
    if r.cap_guards and conf > CAP_UNEXPLAINED:
        conf = CAP_UNEXPLAINED
        note.extend(r.cap_guards)
    if note:
        why += " (" + ", ".join(note) + ")"
    return _outcome(r, ChoiceResult(selected_options=sel, confidence=round(max(0.0, min(conf, 1.0)), 3),
                                    reasoning=why, modifications=mods, clarification_needed=False,
                                    extracted_intent=intent, decided_by="pattern"))


def _modify_result(r: Reading, idx: OptionIndex, mods: list[str], why: str) -> ChoiceResult:
    opt = idx.modify
    assert opt is not None
    return ChoiceResult(selected_options=[opt], confidence=_MODIFY_CONF, reasoning=why, modifications=mods,
                        extracted_intent="request changes", decided_by="pattern")


def _modify_reading(r: Reading, idx: OptionIndex) -> ChoiceResult | None:
    """A partial or conditional approval: "request changes" with the condition, when that option exists."""
    if idx.modify is None:
        return None
    if any(t.kind is KIND.NEG and t.rej for t in r.toks) and not any(t.kind is KIND.YES for t in r.toks):
        return None  # "設定変更はやめて": a refusal of a part; the model decides
    if has_kind(r.toks, _NOT_CONSENT):
        return None
    return _modify_result(r, idx, [r.orig.strip(" ,、;。.!")], "approval of part of the plan: request changes")
