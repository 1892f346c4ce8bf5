"""Per-context tables: the option labels, their distinctive keywords, approve/reject roles.

Built once per distinct (options, descriptions, kind) and cached (512 entries).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from tandem.messages.choice import ChoiceContext

from . import _lexicon
from ._lexicon_en import FILLERS as _EN_FILLERS

__all__ = ["OptionIndex", "index_for", "previous_option"]

_KW_RE: Final = re.compile(
    r"[\u4e00-\u9fff々〆ヵヶ]{2,}|[\u30a1-\u30faー]{2,}|\d+(?:\.\d+)+|[a-z][a-z0-9]*(?:[._+-][a-z0-9]+)*"
)
_KW_STOP: Final = frozenset(
    ["the", "and", "for", "with", "into", "from", "that", "this", "those", "these", "then", "than", "only", "just", "all", "any", "each", "both", "every", "none", "not", "dont", "don't", "does", "doesn't", "without", "except", "option", "options", "choice", "choices", "number", "item", "items", "one", "ones", "plan", "first", "second", "third", "last", "yes", "okay", "please", "use", "using", "mode", "run"]
) | frozenset(("全部", "以外", "最初", "最後", "番目", "選択", "選択肢", "オプション"))
_APPROVE_LABEL: Final = re.compile(
    r"承認|実行|はい|許可|続行|進める|同意|適用|\b(?:yes|approve|run|ok|okay|proceed|accept|confirm|execute|continue|allow|go|apply|agree|y)\b"
)
_REJECT_LABEL: Final = re.compile(
    r"却下|中止|いいえ|拒否|キャンセル|やめ|中断|しない|スキップ|\b(?:no|reject|cancel|stop|deny|abort|decline|skip|don'?t|do\s+not|n)\b"
)
_MODIFY_LABEL: Final = re.compile(r"修正|変更|編集|\b(?:modify|modification|change|changes|edit|amend|revise)\b")
_RECOMMEND_LABEL: Final = re.compile(r"推奨|おすすめ|お勧め|オススメ|\brecommended\b|\(default\)|\bdefault\b|デフォルト")
_LATIN_EDGE: Final = re.compile(r"[a-z0-9]")
_HIRA: Final = re.compile(r"[ぁ-ゖ]")
_WORDCH: Final = re.compile(r"\w")
_EN_FILL_FULL: Final = re.compile(_EN_FILLERS, re.ASCII)
_YESNO_ENTRIES: Final = frozenset(("yes_s", "yes_w", "yesneg", "neg_rej_en", "neg_rej_jp", "neg_pre", "neg_post"))


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def _vocab_only(text: str) -> bool:
    """True if the whole text is one yes/no word ("approve", "却下", "はい")."""
    mo = _lexicon.master().fullmatch(text)
    return mo is not None and mo.lastgroup in _YESNO_ENTRIES


# what may follow a keyword's stem: an inflection, not any letters ("packagzq" is no form of "package")
_INFLECTION: Final = (
    r"(?:e|s|d|r|n|st|es|ed|er|ers|est|en|ing|ings|ion|ions|ly|edly|ingly|ment|ments|ation|ations|or|ors|ive|y|ies)?"
)


def _literal_first(text: str, before: str, after: str) -> str:
    """``text`` not preceded by a ``before`` character (a class, or ``""``), then ``after``: one group, literal first.

    ``(?<![a-z0-9])lint(?![a-z0-9])`` is written ``l(?<![a-z0-9]l)(int(?![a-z0-9]))``: the same matches, but
    every alternative of the joined regex starts with a plain character, which the regex engine checks
    before trying the alternative and uses to skip ahead when searching. The group is the alternative's
    (``lastindex`` tells which matched); the whole match is the text.
    """
    first = re.escape(text[0])
    guard = f"(?<!{before}{first})" if before else ""
    return f"{first}{guard}({re.escape(text[1:])}{after})"


def _stem(w: str) -> str:
    for suf in ("ingly", "ing", "edly", "ed", "ly", "est", "er", "es", "s", "ion"):
        if w.endswith(suf) and len(w) - len(suf) >= 3:
            return w[: -len(suf)]
    if w.endswith("e") and len(w) >= 5:
        return w[:-1]  # create -> creat (creating, creation)
    return w


def _keywords(text: str) -> set[str]:
    """Kanji runs and their bigrams, katakana runs, versions, English words of 3+ letters."""
    out: set[str] = set()
    for kw in _KW_RE.findall(text):
        c = kw[0]
        if "\u4e00" <= c <= "\u9fff" or c in "々〆ヵヶ":
            if kw not in _KW_STOP:
                out.add(kw)
            if len(kw) >= 3:
                for j in range(len(kw) - 1):
                    bg = kw[j : j + 2]
                    if bg not in _KW_STOP:
                        out.add(bg)
        elif "\u30a1" <= c <= "\u30fa" or c == "ー":
            if kw.strip("ー") and kw not in _KW_STOP:
                out.add(kw)
        elif c.isdigit() or (len(kw) >= 3 or any(ch.isdigit() for ch in kw)) and kw not in _KW_STOP and not _EN_FILL_FULL.fullmatch(kw):
            out.add(kw)
    return out


class OptionIndex:
    """What the scanner needs to know about one list of options.

    Attributes
    ----------
    n : int
        Number of options.
    approval : bool
        Yes/no words apply (``kind="approval"``, or exactly one approving and
        one rejecting label).
    approve, reject : int or None
        The approving and the rejecting option.
    recommended : int or None
        The option marked recommended/default.
    modify : int or None
        In an approval prompt, the "request changes" option (修正要求, "modify").
    label_re : re.Pattern or None
        Exact labels, longest first; group ``i`` is label ``label_vals``.
    kw_re : re.Pattern or None
        Distinctive keywords; group ``i`` is ``kw_info[i - 1]``.
    """

    __slots__ = (
        "approval",
        "approve",
        "kw_info",
        "kw_re",
        "label_chars",
        "label_has_digits",
        "label_re",
        "label_vals",
        "labels",
        "modify",
        "n",
        "recommended",
        "reject",
        "single",
        "typo_labels",
        "typo_words",
    )

    def __init__(self, options: tuple[str, ...], descriptions: tuple[str, ...], kind: str) -> None:
        n = self.n = len(options)
        labels = self.labels = tuple(_norm(o) for o in options)
        descs = tuple(_norm(d) for d in descriptions[:n])
        approve = [i + 1 for i, lb in enumerate(labels) if not _REJECT_LABEL.search(lb) and _APPROVE_LABEL.search(lb)]
        reject = [i + 1 for i, lb in enumerate(labels) if _REJECT_LABEL.search(lb)]
        if kind == "approval":
            self.approval = True
            self.approve = approve[0] if len(approve) == 1 else (1 if not approve and 1 not in reject else None)
            self.reject = reject[0] if len(reject) == 1 else None
        else:
            self.approval = len(approve) == 1 and len(reject) == 1
            self.approve = approve[0] if self.approval else None
            self.reject = reject[0] if self.approval else None
        modify = [i + 1 for i, lb in enumerate(labels)
                  if _MODIFY_LABEL.search(lb) and i + 1 not in (self.approve, self.reject)]
        self.modify = modify[0] if self.approval and len(modify) == 1 else None
        self.recommended = None
        for i in range(n):
            if _RECOMMEND_LABEL.search(labels[i]) or (i < len(descs) and _RECOMMEND_LABEL.search(descs[i])):
                self.recommended = i + 1
                break

        # exact labels, longest first; yes/no-word labels stay with the scanner in approval mode
        pats: list[str] = []
        vals: dict[str, int] = {}
        self.single: dict[str, int] = {}
        for i in sorted(range(n), key=lambda j: -len(labels[j])):
            lb = labels[i]
            if not lb or lb in vals or lb in self.single:
                continue
            if self.approval and _vocab_only(lb):
                continue
            if len(lb) == 1:
                self.single[lb] = i + 1
                continue
            vals[lb] = i + 1
            before = "[a-z0-9]" if _LATIN_EDGE.match(lb[0]) else "[ぁ-ゖ]" if _HIRA.match(lb[0]) else ""
            after = r"(?![a-z0-9])" if _LATIN_EDGE.match(lb[-1]) else r"(?![ぁ-ゖ])" if _HIRA.match(lb[-1]) else ""
            pats.append(_literal_first(lb, before, after))
        self.label_re = re.compile("|".join(pats)) if pats else None
        self.label_has_digits = any(ch.isdigit() for lb in labels for ch in lb)
        self.label_vals = vals

        # distinctive keywords of labels and descriptions (a keyword of two options is never used)
        owners: dict[str, set[int]] = {}
        in_label: dict[str, bool] = {}
        for i in range(n):
            for text, is_label in ((labels[i], True), (descs[i] if i < len(descs) else "", False)):
                for kw in _keywords(text):
                    owners.setdefault(kw, set()).add(i + 1)
                    if is_label:
                        in_label[kw] = True
        kws = sorted((k for k, o in owners.items() if len(o) == 1), key=len, reverse=True)
        self.kw_info: list[tuple[int, int, bool]] = []
        kpats: list[str] = []
        for kw in kws:
            (opt,) = owners[kw]
            if self.approval and _vocab_only(kw):
                continue
            if kw[0].isascii() and kw[0].isalnum():
                stem = _stem(kw)
                if len(stem) >= 4 and stem.isalpha():
                    kpats.append(_literal_first(stem, "[a-z0-9]", rf"{_INFLECTION}(?![a-z0-9])"))
                else:
                    kpats.append(_literal_first(kw, "[a-z0-9.]", r"(?![a-z0-9]|\.\d)"))
            else:
                kpats.append(_literal_first(kw, "", ""))
            self.kw_info.append((opt, len(kw), in_label.get(kw, False)))
        self.kw_re = re.compile("|".join(kpats)) if kpats else None
        self.label_chars = tuple(max(1, len(_WORDCH.findall(lb))) for lb in labels)
        self.typo_words: dict[str, int] | None = None  # built by the typo reader on first use
        self.typo_labels: tuple[tuple[str, str, str, int], ...] = ()  # its CJK labels, built with typo_words


_CACHE: dict[tuple, OptionIndex] = {}


def index_for(context: ChoiceContext) -> OptionIndex:
    """The cached :class:`OptionIndex` of ``context``."""
    key = (tuple(context.available_options), tuple(context.option_descriptions), context.kind)
    idx = _CACHE.get(key)
    if idx is None:
        if len(_CACHE) >= 512:
            _CACHE.clear()
        idx = _CACHE[key] = OptionIndex(*key)
    return idx


def previous_option(idx: OptionIndex, previous: list[str]) -> int | None:
    """The option of the most recent previous choice ("2", "option 2" or a label)."""
    for p in reversed(previous):
        q = _norm(p)
        if q in idx.labels:
            return idx.labels.index(q) + 1
        mo = re.fullmatch(r"(?:option\s*)?(\d+)", q)
        if mo and 1 <= int(mo.group(1)) <= idx.n:
            return int(mo.group(1))
    return None
