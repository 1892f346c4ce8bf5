"""The pattern path of the choice parser (design note 001 §2.1 "Pattern Matcher").

:func:`match_choice` reads a free-text answer (Japanese or English) to an
option or approval prompt and returns a :class:`~tandem.messages.ChoiceResult`
with ``decided_by="pattern"``, or ``None`` when only a model could tell. Pure
Python, no I/O, no private standard-library APIs.

Stages
------
Each stage is a module of its own, with its own tests:

0. :mod:`._normalize` — NFKC, circled numbers, case, whitespace;
1. :mod:`._scanner` — option labels, then the lexicon (:mod:`._lexicon`, with
   :mod:`._lexicon_en` and :mod:`._lexicon_ja`), then label/description
   keywords → typed tokens (:class:`._tokens.Kind`);
2. :mod:`._clauses` — clauses (condition, reason, correction) and the scopes
   of negations, exclusions, comparisons and past tense;
3. :mod:`._decide` — the decision and the confidence.

The safety rule
---------------
**The pattern path acts only on a total parse.** Every meaningful word of the
answer must be explained by the grammar — numbers, ordinals, option labels and
descriptions, consent and refusal words, connectives, corrections, scope words,
politeness and hesitation fillers. Anything left unexplained caps the
confidence at :data:`._decide.CAP_UNEXPLAINED` (0.75), below the acting
threshold (0.8), and the unexplained words are reported so the LLM path (when
configured) can be told why the pattern path declined; otherwise the caller
confirms or clarifies.

A number counts as a choice only in a choosing context: not in a question,
not in a past-tense clause ("last time I picked 2", "前回は2番だった"), not in
a comparison ("better than 3", "3より"), not in a negation scope ("not 2",
"2じゃない"), and not as a quantity, date, version or signed number ("3
files", "10分", "3.12", "-1"). Sarcasm and rhetorical negation ("as if",
"yeah right", "わけない", "ないでしょ"), a double negative ("I wouldn't say
no", "ダメじゃない") and a negation that follows a choice without naming
what it negates ("2, not") are never read as a choice. Options the answer
negates or excludes are never selected, never proposed in a confirm question
(:attr:`Analysis.refused`), and a model's reading that selects one of them is
downgraded by the actor.

Wrapping any clear pick in a negation, a question, a past reference or
sarcasm never produces ``execute``; the unit tests check this as a property.

Confidence
----------
Numbers 0.95, ordinals 0.92, lists 0.93 (minus 0.02 per extra item), ranges
and counts 0.9, ``all`` 0.92, exclusions 0.88, exact label 0.9, label keyword
0.7-0.8 by coverage, description keyword 0.7, a superlative naming one option
through its label or description ("the safest one", "一番安全なやつ") 0.85, a
label with one typo ("deplyo") at most 0.85. Hedges (``maybe``, ``かな``) and
a trailing ``?`` cap at 0.7, uncertainty (``わからないけど``) at 0.6, anything
unexplained at 0.75. A condition subtracts 0.1 and caps at 0.75, so
conditional answers are always confirmed. Clarifications carry 0.0-0.3.
"""

from __future__ import annotations

import itertools
import re
from typing import Final

import msgspec
from tandem.messages.choice import ChoiceContext, ChoiceResult

from ._clauses import _PUNCT_RE, gap, read, residue_words
from ._decide import Outcome, decide, decide_one_word, describe, positives
from ._normalize import prep
from ._options import OptionIndex, index_for
from ._scanner import scan
from ._tokens import KIND, SRC, Token

__all__ = ["Analysis", "analyse", "fast_lane", "match_choice"]

_FAST: Final = re.compile(
    r"(?P<tok>(?:option\s*|no\.\s*|#\s*|第)?(?P<n>\d{1,3})\s*(?:番目|番|つ目|個目|号|案)?)\s*"
    r"(?:で|です|でお願いします|にします|をお願いします|お願いします|please)?[\s.!。]*",
    re.ASCII,
)
_NUMBER: Final = r"(?:option\s*|no\.\s*|#\s*|第)?(\d{1,3})(?:\s*(?:番目|番|つ目|個目|号))?"
_LIST_NUMBER: Final = re.compile(_NUMBER, re.ASCII)
_FAST_LIST: Final = re.compile(rf"{_NUMBER}(?:(?:\s*(?:と|&|,|、)\s*|\s+and\s+){_NUMBER})+[\s.!。]*", re.ASCII)
_FAST_FIRST: Final = frozenset("0123456789on#第")
# What a match of _FAST or _FAST_LIST can look like in a normalised answer (whitespace collapsed to single
# spaces, so each ``\s*`` matches one character at most), told without running them on longer answers:
# without its tail ``[\s.!。]*``, a _FAST match is at most "option " + 3 digits + " " + "番目" + " " +
# "でお願いします" (21 characters) and a _FAST_LIST match ends with its last number ("3", "3番", "3つ目")
_FAST_TAIL: Final = " .!。"
_FAST_MAX: Final = 21
_FAST_LIST_LAST: Final = frozenset("0123456789目番号")
_PUNCT_SPACE: Final = " ,、;。.!:?\"'「」()[]…~〜-"
_LABEL_WORD: Final = re.compile(r"[a-z]{4,}")
_TYPO_CONF: Final = 0.85

Analysis = Outcome
"""What :func:`analyse` returns: the result, and the refused options, guards and unexplained words."""


def analyse(answer: str, context: ChoiceContext, *, lane: bool = True, typos: bool = True) -> Outcome:
    """Run the pattern path and keep what the safety rules need.

    Parameters
    ----------
    answer : str
        The user's free-text answer, Japanese or English.
    context : ChoiceContext
    lane : bool
        Take the fast paths: a bare number or a list of bare numbers read
        without the scanner, plain answers without the clause stage
        (:func:`fast_lane`). ``False`` runs every stage; a property test
        checks both give the same result on generated answers.
    typos : bool
        Read a label with one typo as the label (at most 0.85).

    Returns
    -------
    Analysis
        ``result`` as :func:`match_choice` returns it; ``refused`` (options the
        answer negates or excludes), ``guards`` (why it must not be acted on)
        and ``unexplained`` (words the grammar did not explain).

    Examples
    --------
    >>> ctx = ChoiceContext(available_options=["Lint", "Test", "Build"])
    >>> a = analyse("everything except 2", ctx)
    >>> a.result.selected_options, sorted(a.refused)
    ([1, 3], [2])
    """
    t_orig = prep(answer)
    s = t_orig.lower()
    if len(s) != len(t_orig):
        t_orig = s
    idx = index_for(context)
    n = idx.n
    core = s.strip(_PUNCT_SPACE)
    if not core:
        return Outcome(ChoiceResult(reasoning="empty answer", clarification_needed=True, extracted_intent="empty",
                                    decided_by="pattern"), set(), [], [])

    # the common cases: a bare number ("2", "２番で", "option 3", "No.1") or a list of them ("1と3", "2 and 4")
    if lane and s[0] in _FAST_FIRST and not idx.single and not idx.label_has_digits:
        fast = _FAST.fullmatch(s) if len(s) <= _FAST_MAX or len(s.rstrip(_FAST_TAIL)) <= _FAST_MAX else None
        if fast is not None:
            v = int(fast.group("n"))
            if 1 <= v <= n and not _names_an_option(s, idx):
                intent = f"select {v}"
                if idx.approval:
                    intent = "approve" if v == idx.approve else "reject" if v == idx.reject else intent
                tok = fast.group("tok").strip()  # the number token, as the scanner would show it
                return Outcome(ChoiceResult(selected_options=[v], confidence=0.95, reasoning=f"number {tok!r}",
                                            extracted_intent=intent, decided_by="pattern"), set(), [], [])
        elif (not idx.approval and s.rstrip(_FAST_TAIL)[-1:] in _FAST_LIST_LAST and _FAST_LIST.fullmatch(s) is not None
              and not _names_an_option(s, idx)):
            listed = _list(s, n)
            if listed is not None:
                return Outcome(listed, set(), [], [])

    toks = scan(s, idx)
    if lane:
        quick = fast_lane(s, toks, idx)
        if quick is not None:
            return Outcome(quick, set(), [], [])
        if len(toks) == 2 and not idx.approval:
            refusal = _refused_one(s, toks, n)
            if refusal is not None:
                return refusal
        elif len(toks) == 1 and not residue_words(s, 0, len(s), toks):
            word = decide_one_word(s, toks[0], idx)
            if word is not None:
                return Outcome(word, set(), [], [])
    reading = read(s, t_orig, toks, idx.approval, n)
    out = decide(reading, idx, context)
    if out.result is None and not out.unexplained:
        out.unexplained = residue_words(s, 0, len(s), toks)
    if typos and out.unexplained and not out.guards:
        fixed = _read_typos(s, out, idx, context)
        if fixed is not None:
            return fixed
    return out


def _names_an_option(s: str, idx: OptionIndex) -> bool:
    """Whether a label or a keyword occurs in ``s`` (then the scanner must read it)."""
    return (idx.label_re is not None and idx.label_re.search(s) is not None) or (
        idx.kw_re is not None and idx.kw_re.search(s) is not None)


def _list(s: str, n: int) -> ChoiceResult | None:
    """A list of bare numbers ("1と3", "2 and 4", "1, 3番") as the fast lane reads it; ``None``: one does not exist."""
    nums = _LIST_NUMBER.finditer(s)
    vals: list[int] = []
    shown: list[str] = []
    for mo in nums:
        v = int(mo.group(1))
        if not 1 <= v <= n:
            return None
        vals.append(v)
        shown.append(f"number {mo.group().strip()!r}")
    k = len(vals)
    conf = round(max(0.95 - 0.02 * (k - 1), 0.85), 3)  # as positives() scores k number tokens
    out = sorted(set(vals))
    return ChoiceResult(selected_options=out, confidence=conf, reasoning=", ".join(shown[:4]),
                        extracted_intent="select " + ",".join(map(str, out)), decided_by="pattern")


def _near(a: str, b: str) -> bool:
    """Whether ``a`` is ``b`` with one character substituted, inserted, deleted or two adjacent ones swapped."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):  # one difference, or two adjacent ones swapped: the rest after them equal
        i = 0
        while a[i] == b[i]:  # (a != b: a difference comes)
            i += 1
        return a[i + 1 :] == b[i + 1 :] or (a[i + 2 :] == b[i + 2 :] and a[i] == b[i + 1] and a[i + 1] == b[i])
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    i = 0
    while i < len(short) and short[i] == long_[i]:
        i += 1
    return short[i:] == long_[i + 1 :]


def _finds(s: str, sub: str) -> list[int]:
    out = []
    j = s.find(sub)
    while j >= 0:
        out.append(j)
        j = s.find(sub, j + 1)
    return out


def _read_typos(s: str, out: Outcome, idx: OptionIndex, context: ChoiceContext) -> Outcome | None:
    """A label with one typo ("deplyo", "ファイル作製"): read it as the label, at most at 0.85."""
    words = idx.typo_words
    if words is None:  # once per option list: label word -> its option (0: the word of several options)
        words = {}
        for i, label in enumerate(idx.labels, start=1):
            for w in _LABEL_WORD.findall(label):
                words[w] = 0 if w in words and words[w] != i else i
        idx.typo_words = words
        # and the CJK labels of four or more characters: (label, its first two, its last two, its length)
        idx.typo_labels = tuple((lb, lb[:2], lb[-2:], len(lb)) for lb in idx.labels if len(lb) >= 4 and not lb.isascii())
    fixes: list[tuple[str, str]] = []
    for bad in out.unexplained if words else ():  # (without Latin label words there is nothing to compare)
        if len(bad) < 4:
            continue
        near: list[str] = []  # the label words it is one typo away from (loops: a comprehension is a call)
        size = len(bad)
        for w, opt in words.items():
            if opt and 4 <= len(w) and size - 1 <= len(w) <= size + 1 and _near(bad, w):
                near.append(w)
        if len(near) == 1:
            fixes.append((bad, near[0]))
    if not fixes:
        for label, head, tail, k in idx.typo_labels:  # CJK: a whole label with one character substituted
            if head not in s and tail not in s:  # one substitution leaves one of them intact
                continue
            if label in s and s.count(head) == 1 and s.count(tail) == 1:
                continue  # the label itself is the only place to start from (``in`` needs no argument parsing)
            starts = _finds(s, head)  # and where the tail's places put the label's start, each once, in order
            for j in _finds(s, tail):
                if j - k + 2 not in starts:
                    starts.append(j - k + 2)
            starts.sort()
            for j in starts:
                if 0 <= j <= len(s) - k and _near(s[j : j + k], label):
                    fixes.append((s[j : j + k], label))
                    break
    if not fixes:
        return None
    fixed = s
    for bad, good in fixes:
        fixed = re.sub(rf"(?<![a-z]){re.escape(bad)}(?![a-z])", good, fixed)
    again = analyse(fixed, context, typos=False)
    r = again.result
    if r is None or not r.selected_options or r.clarification_needed or again.unexplained:
        return None
    why = ", ".join(f"{b!r} read as {g!r}" for b, g in fixes)
    again.result = msgspec.structs.replace(r, confidence=min(r.confidence, _TYPO_CONF),
                                          reasoning=f"{r.reasoning} (typo: {why})")
    return again


_LANE_CHOICES: Final = frozenset((KIND.REF, KIND.RANGE, KIND.FIRSTN, KIND.LASTN))
# member tests against constants: a tuple of class attributes would be built on every test
_FIRST_LAST: Final = frozenset((KIND.FIRSTN, KIND.LASTN))
_NUMERIC: Final = frozenset((SRC.NUMBER, SRC.ORDINAL))
_HEDGES: Final = frozenset((KIND.HEDGE, KIND.SUGGEST))  # cap at 0.7, "hedged"
_NAMED: Final = frozenset((SRC.LABEL, SRC.KEYWORD, SRC.DESCRIPTION))


def fast_lane(s: str, toks: list[Token], idx: OptionIndex) -> ChoiceResult | None:
    """The decision for plain answers, without the clause stage; ``None`` when the answer is not plain.

    Plain: only option references joined as a list ("1と3番", "the last one",
    "lint, test, build", "全部"), possibly with "only", a hedge ("maybe 2",
    "2番かな", "how about 3") or a final question mark ("2?") in an answer
    without punctuation; or, in an approval prompt, one consent or refusal word
    ("はい", "cancel") or one number or ordinal ("2", "the second"); and no word
    left unexplained. The result is the one the
    full pipeline gives (unit tests compare them on every tested answer).
    """
    if idx.approval:
        if len(toks) != 1:
            return None
        t = toks[0]
        if residue_words(s, 0, len(s), toks):
            return None
        if t.kind is KIND.YES and t.strong and idx.approve is not None:
            return ChoiceResult(selected_options=[idx.approve], confidence=t.conf,
                                reasoning=f"affirmative {s[t.start:t.end].strip()!r}", extracted_intent="approve",
                                decided_by="pattern")
        if t.kind is KIND.NEG and idx.reject is not None:  # "cancel", "no", "not yet"
            return ChoiceResult(selected_options=[idx.reject], confidence=0.85 if t.src is SRC.YET else t.conf,
                                reasoning=f"refusal {s[t.start:t.end].strip()!r}", extracted_intent="reject",
                                decided_by="pattern")
        v = t.val
        if t.kind is KIND.REF and t.src in _NUMERIC and not t.amb and isinstance(v, int) and 1 <= v <= idx.n:
            # "2", "the second": the option itself, named as approving or rejecting when it is one of them
            intent = "approve" if v == idx.approve else "reject" if v == idx.reject else f"select {v}"
            return ChoiceResult(selected_options=[v], confidence=t.conf, reasoning=describe(s, toks),
                                extracted_intent=intent, decided_by="pattern")
        return None
    choices: list[Token] = []
    only = every = hedged = asked = False
    for t in toks:
        k = t.kind
        if k in _LANE_CHOICES:
            if t.amb or asked:
                return None  # a choice after the question mark would start a clause of its own
            choices.append(t)
        elif k is KIND.ONLY:
            only = True
        elif k in _HEDGES:
            hedged = True
        elif k is KIND.QMARK and not asked:
            asked = True
        elif k is KIND.ALL:
            every = True
        else:
            return None
    if (only or hedged or asked) and _PUNCT_RE.search(s) is not None:
        return None  # "only", a hedge or a question mark may sit in a clause of its own, which the clause stage reads
    if asked and toks[-1].kind is not KIND.QMARK:
        return None  # what follows the question mark is a clause of its own
    if every:
        if choices or only or hedged or asked or residue_words(s, 0, len(s), toks):
            return None
        return ChoiceResult(selected_options=list(range(1, idx.n + 1)), confidence=0.92, reasoning="all options",
                            extracted_intent="all", decided_by="pattern")
    if not choices:
        return None
    for a, b in itertools.pairwise(choices):
        if gap(s, a, b) != "list":
            return None
        if a.src in _NAMED or b.src in _NAMED:
            return None
    if residue_words(s, 0, len(s), toks):
        return None
    sel, conf, used = positives(choices, idx.n)
    for t in choices:  # every reference must exist
        v = t.val
        if t.kind is KIND.REF and not (isinstance(v, int) and 1 <= v <= idx.n):
            return None
        if t.kind is KIND.RANGE and not all(1 <= x <= idx.n for x in v):  # type: ignore[union-attr]
            return None
        if t.kind in _FIRST_LAST and not (isinstance(v, int) and 1 <= v <= idx.n):
            return None
    out = sorted(sel)
    intent = ("only " if only else "select ") + ",".join(map(str, out))
    why = describe(s, used)
    if hedged or asked:  # the caps of the decision stage, in its order
        note = []
        if hedged:
            conf = min(conf, 0.7)
            note.append("hedged")
        if asked:
            conf = min(conf, 0.7)
            note.append("asked as a question")
        why += " (" + ", ".join(note) + ")"
    return ChoiceResult(selected_options=out, confidence=round(max(0.0, min(conf, 1.0)), 3),
                        reasoning=why, extracted_intent=intent, decided_by="pattern")


def _refused_one(s: str, toks: list[Token], n: int) -> Outcome | None:
    """One option negated or excluded, and nothing else ("not 2", "2はいらない", "2以外", "all but 2"), in an
    options prompt: the decision as every stage would take it; ``None`` when the answer is not of that shape.

    A negation without a choice asks back, naming the option as refused; an
    exclusion selects every other option (0.9 after "all but", else 0.88).
    The answer has no punctuation (no clause of its own for either word) and
    no word left unexplained; the marker stands where its scope reaches the
    option (English before it, Japanese after it).
    """
    a, b = toks
    if a.kind is KIND.REF:
        ref, marker, before = a, b, False
    elif b.kind is KIND.REF:
        ref, marker, before = b, a, True
    else:
        return None
    k = marker.kind
    v = ref.val
    if (k is not KIND.EXC and (k is not KIND.NEG or marker.rej or marker.src is SRC.YET)) or marker.pre is not before:
        return None
    if ref.amb or not isinstance(v, int) or not 1 <= v <= n or (k is KIND.EXC and n < 2):
        return None
    if _PUNCT_RE.search(s) is not None or residue_words(s, 0, len(s), toks):
        return None
    if k is KIND.NEG:
        result = ChoiceResult(selected_options=[], confidence=0.2,
                              reasoning=f"negated option(s) {v} without saying what to do instead",
                              clarification_needed=True, extracted_intent=f"not {v}", decided_by="pattern")
    else:
        result = ChoiceResult(selected_options=[i for i in range(1, n + 1) if i != v],
                              confidence=0.9 if marker.src is SRC.ALLX else 0.88,
                              reasoning=f"exclusion of {v} from all", extracted_intent=f"all except {v}",
                              decided_by="pattern")
    return Outcome(result, {v}, [], [])


def match_choice(answer: str, context: ChoiceContext) -> ChoiceResult | None:
    """Resolve ``answer`` against ``context`` with patterns only.

    Parameters
    ----------
    answer : str
        The user's free-text answer, Japanese or English.
    context : ChoiceContext
        The options (1-based) and the kind of prompt.

    Returns
    -------
    ChoiceResult or None
        ``decided_by="pattern"`` with ``action``/``question`` left at their
        defaults (the actor applies the thresholds). Either a selection with a
        confidence, or ``selected_options=[]`` with ``clarification_needed=True``
        and confidence at most 0.3 when the answer is vague, a question, a
        negation without a choice, sarcastic, ambiguous (``1か2``) or names an
        option that does not exist. ``None`` when nothing decisive was
        recognised and a model might understand the answer (free text).

    Notes
    -----
    Approval words (``はい``/``yes``/``いいよ``/``go ahead`` and
    ``いいえ``/``no``/``やめて``/``cancel``) apply when ``context.kind`` is
    ``"approval"`` or when exactly one label looks like approving and exactly
    one like rejecting. A negated approval (``承認しないで``, ``don't run it``,
    ``not yet``) selects the rejecting option; ``don't cancel`` or ``yes, no``
    ask back. In an approval prompt with a "request changes" option
    (``修正要求``), an approval with a condition or of part of the plan selects
    that option with the condition as the modification.

    Examples
    --------
    >>> ctx = ChoiceContext(available_options=["ファイル作成", "安全モード実行", "完全実行"])
    >>> match_choice("1と3番", ctx).selected_options
    [1, 3]
    >>> r = match_choice("1番だけど、バックアップ取って", ctx)
    >>> r.selected_options, r.modifications
    ([1], ['バックアップ取って'])
    >>> match_choice("5番", ctx).clarification_needed
    True
    >>> match_choice("as if I'd pick 2", ctx).selected_options
    []
    """
    return analyse(answer, context).result
