"""Fast pattern path of the choice parser (design note 001 §2.1, "Pattern Matcher").

:func:`match_choice` reads a free-text answer (Japanese or English) to an
option or approval prompt and returns a :class:`~tandem.messages.choice.ChoiceResult`
with ``decided_by="pattern"``, or ``None`` when only a model could tell. Pure
Python, no I/O: precompiled regexes, per-context tables built once and cached,
about 2 µs for a bare number and 15-40 µs for a sentence.

Pipeline
--------
1. Normalise: circled numbers, NFKC (full-width digits), lower case, collapsed
   spaces (:func:`normalize_answer`, also usable as a cache key).
2. Claim exact option labels, longest first, so that digits inside labels
   ("Python 3.12") are not read as option numbers.
3. Tokenise the rest: numbers (``2``, ``２``, ``二番目``, ``No.2``, ``#2``,
   ``option two``, ``the 2nd``), ordinals (``first``, ``最後``, ``second to
   last``), counts (``最初の2つ``, ``last two``), ``all``/``both``/``全部``,
   exclusions (``以外``, ``all but``), negators (``don't``, ``しないで``,
   ``やめて``), yes words, vague phrases, questions, conditional connectors
   (``だけど``, ``but``, ``てから``), reasons (``because``, ``なので``). One
   master regex of ordered alternatives defines the tokens; a first-character
   dispatch (computed from the parsed alternatives) only tries the
   alternatives that can start at each candidate position.
4. Match distinctive label/description keywords in what is left: kanji runs
   and their bigrams, katakana runs, English words of three or more letters
   with light stemming. A keyword of two options is never used, and nothing
   shorter than two characters is matched.
5. Merge ranges (``1-3``, ``1から3``), split into clauses at punctuation and
   connectors, resolve each negator's scope (English negators look right,
   Japanese ones look left, across list connectors only), and turn clauses
   without a choice into ``modifications``.
6. Decide; see :func:`match_choice`.

Safety rules
------------
* Negation is never read as consent. A negated approval (``承認しないで``,
  ``don't run it``, ``not yet``) is a rejection; a negated rejection
  (``don't cancel``), a yes next to a no, or a negation next to mere politeness
  asks back; a negated option with nothing chosen instead asks back; a
  negated option is never selected.
* An option that does not exist is never selected: ``5番`` with three options,
  ``1と5``, ``the fourth``, ``最初の4つ`` return a clarification whose
  ``reasoning`` names the missing option (not ``None``: a model must not guess).
* Questions, concerns and holds (``どういう意味？``, ``what does option 2 do?``,
  ``危険じゃない？``, ``ちょっと待って``) ask back, also inside a condition.
* In approval prompts, "only part of the plan" (``ファイル作成だけお願いします``,
  ``approve only the first step``) and exclusions of non-options go to the model.

Confidence
----------
Numbers 0.95, ordinals 0.92, lists 0.93 (minus 0.02 per extra item), ranges
and counts 0.9, ``all`` 0.92, exclusions 0.88, exact label 0.9, label keyword
0.7-0.8 by coverage, description keyword 0.7. Hedges (``maybe``, ``かな``) and
a trailing ``?`` cap at 0.7, hesitation (``わからないけど``) at 0.6, unexplained
text at 0.85/0.75. A condition subtracts 0.1 and caps at 0.75, so conditional
answers are always confirmed. Clarifications carry 0.0-0.3.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from tandem.messages.choice import ChoiceContext, ChoiceResult

__all__ = ["match_choice", "normalize_answer"]

# --------------------------------------------------------------------------- normalisation

# circled numbers become " N " (NFKC alone would glue "①③" into "13");
# ❶..❿, ➀..➉ and ➊..➓ have no NFKC decomposition at all.
_CIRCLED: Final = {0x2460 + i: f" {i + 1} " for i in range(20)}
for _i in range(10):
    _CIRCLED[0x2776 + _i] = _CIRCLED[0x2780 + _i] = _CIRCLED[0x278A + _i] = f" {_i + 1} "


def _prep(text: str) -> str:
    """NFKC, extra circled digits, collapsed whitespace (case kept)."""
    t = unicodedata.normalize("NFKC", text.translate(_CIRCLED))
    return " ".join(t.split())


def normalize_answer(text: str) -> str:
    """Normalise an answer for matching and as a cache key.

    Parameters
    ----------
    text : str
        The raw answer.

    Returns
    -------
    str
        NFKC-normalised (full-width digits and letters become ASCII, ``①``
        becomes ``1``), lower-cased, trimmed, with runs of whitespace collapsed
        to one space.

    Examples
    --------
    >>> normalize_answer("  ＯＫ、　２番で ")
    'ok、 2番で'
    >>> normalize_answer("①と③")
    '1 と 3'
    """
    return _prep(text).lower()


# --------------------------------------------------------------------------- vocabulary


def _ascii(pattern: str) -> re.Pattern[str]:
    """Compile with ASCII ``\\b``/``\\w``/``\\d``: "okです" keeps a word boundary after "ok"."""
    return re.compile(pattern, re.ASCII)


_NW_LIST = (
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
).split()
_NW_VAL: Final = {w: i + 1 for i, w in enumerate(_NW_LIST)}
_OW_LIST = (
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth "
    "fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth"
).split()
_OW_VAL: Final = {w: i + 1 for i, w in enumerate(_OW_LIST)}
_JC_VAL: Final = {"ひと": 1, "ふた": 2, "みっ": 3, "よっ": 4, "いつ": 5, "むっ": 6, "なな": 7, "やっ": 8, "ここの": 9}
_KD: Final = {"〇": 0, "零": 0, "一": 1, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}

NW = "(?:" + "|".join(sorted(_NW_LIST, key=len, reverse=True)) + ")"
OW = "(?:" + "|".join(sorted(_OW_LIST, key=len, reverse=True)) + ")"
KN = "[〇零一二三四五六七八九十]+"
JC = "(?:ひと|ふた|みっ|よっ|いつ|むっ|なな|やっ|ここの)"

# (group name, pattern). Order matters where two alternatives can start at the
# same position: the first listed wins (e.g. "no problem" before "no").
_ALTS: list[tuple[str, str]] = [
    # --- vague / non-answers
    (
        "vague_unknown",
        r"\b(?:i\s+)?(?:really\s+)?(?:don'?t|do\s+not|dont)\s+(?:really\s+)?know\b|\bdunno\b|\bidk\b"
        r"|\bnot\s+(?:really\s+|quite\s+|too\s+)?sure\b|\bunsure\b|\bno\s+(?:idea|clue)\b"
        r"|\bcan'?t\s+(?:decide|choose|tell)\b|\bcannot\s+(?:decide|choose|tell)\b|\bconfused\b"
        r"|(?:よく|全然|ぜんぜん|いまいち|ちょっと)?(?:わから|分から|判ら|解ら|わかん)(?:ないです|ない|ません|ん|なく|ねー|ねえ)?"
        r"|知らない|しらない|決め(?:られない|かねる|かねます)|迷(?:います|う|い|って)|悩(?:みます|む|み|んで)|どうしよう",
    ),
    (
        "vague_delegate",
        r"\bwhatever(?:\s+you\s+(?:think|want|prefer|like|say))?\b|\bup\s+to\s+you\b|\byou\s+(?:decide|choose|pick)\b"
        r"|\byour\s+(?:call|choice)\b|\bsurprise\s+me\b|\b(?:i\s+)?(?:don'?t|do\s+not)\s+care\b"
        r"|\b(?:it\s+)?(?:doesn'?t|does\s+not)\s+matter\b|\bno\s+preference\b"
        r"|\bany(?:one|thing)?(?:\s+(?:is|will))?\s+(?:fine|ok|okay|works|do|be\s+fine)\b"
        r"|\beither(?:\s+one)?(?:\s+(?:is|will))?(?:\s+(?:fine|ok|okay|works|do))?\b|\bwhichever\b"
        r"|(?:どれ|どっち|どちら|なん|何|いずれ)でも(?:いい|良い|よい|ok|かまわない|構わない)?"
        r"|お?任せ(?:ます|る|た|で|します)?|お?まかせ(?:ます|る|た|で|します)?|適当(?:に|で|な)|テキトー|好きな(?:方|ほう|の)で",
    ),
    (
        "vague_noise",
        r"\bh+m+\b|\bu+m+\b|\bu+h+\b|\berm*\b|\bmeh\b|うー+ん*|うーむ|んー+|えっと|ええと|えーと|えー+|あのー+|そうだな[あー]?",
    ),
    (
        "vague_pref",
        r"いい感じ|良い感じ|いいかんじ|いい(?:やつ|もの|奴)|良い(?:やつ|もの)"
        r"|\b(?:the\s+)?(?:best|good|nice|right)\s+one\b|\bsomething\s+(?:good|nice|sensible)\b"
        r"|\bthe\s+(?:best|right)\s+(?:option|choice)\b",
    ),
    ("recommend", r"おすすめ|お勧め|お薦め|オススメ|推奨|\brecommend(?:ed|ation)?\b|\bsuggested\b|\bdefault\b|デフォルト|既定"),
    ("suggest", r"\b(?:how|what)\s+about\b"),
    (
        "correct",
        r"\bno\s*,?\s*wait\b|\bwait\s*,?\s*no\b|\bi\s+mean\b|\bactually\b|\bon\s+second\s+thoughts?\b|\bscratch\s+that\b"
        r"|やっぱり|やっぱ|やはり|訂正|いや(?=[、,\s]*(?:\d|[一二三四五六七八九十]|最初|最後|第))",
    ),
    (
        "hold",
        r"ちょっと待|ちょい待|待って|待て|待った|まって|保留|\bwait(?:\s+a\s+(?:sec(?:ond)?|minute|moment|bit))?\b"
        r"|\bhold\s+on\b|\bhang\s+on\b|\bjust\s+a\s+(?:sec(?:ond)?|minute|moment)\b|\bone\s+(?:sec(?:ond)?|moment|minute)\b",
    ),
    (
        "neg_strong",
        r"\b(?:absolutely|definitely|certainly|of\s+course|hell)\s+not\b|\bhell\s+no\b|\bno\s+no\b|\bnot\s+really\b"
        r"|\bnever\s*mind\b|\bforget\s+(?:it|about\s+it)\b"
        r"|絶対(?:に)?(?:だめ|ダメ|嫌|いや)",
    ),
    (
        "yesneg",
        r"\bno\s+(?:problems?|worries|prob)\b|\bnot\s+a\s+problem\b|\bwhy\s+not\b|\bnot\s+bad\b|\bof\s+course\b"
        r"|\b(?:i\s+)?(?:don'?t|do\s+not)\s+mind\b|\bno\s+objections?\b"
        r"|問題(?:ないです|ないよ|ない|なし|無し|ありません)|構わ(?:ないです|ないよ|ない|ん)|かまわ(?:ない|ん)|構いません|かまいません"
        r"|いいんじゃない|良いんじゃない|悪くない|異(?:存|論)は?(?:ない|ありません|なし)|差し支えない|気にしない",
    ),
    ("yes_reluct", r"仕方(?:が)?ない|しかたない|しょうがない|しゃあない|まあいい(?:か|よ)?|\bi\s+guess\s+so\b|\bif\s+you\s+must\b"),
    ("oblig", r"(?:し|さ|せ|やら)?な(?:いと|きゃ|ければ|くちゃ)(?:いけない|ならない|だめ|ダメ)?"),
    ("fill", r"\bgo(?:ing)?\s+with\b|\bgo\s+for\b(?!\s+it)|\bi'?d\s+like\b|\bi\s+want\b|\bi'?ll\s+(?:take|go\s+with|pick|choose)\b"),
    ("ambig", r"結構(?:です|でございます)?|大丈夫(?:です)?(?!\s*\?)"),
    (
        "question",
        r"\b(?:what|why|how|which|who|where)(?!ever)\b|\bwhat'?s\b"
        r"|(?:^|(?<=[,.;!、。])|(?<=[,.;!、。] ))(?:is|are|was|does|did|should|would|will|can)\s+(?:it|this|that|they|there|option|the|#|i|we)\b"
        r"|\bare\s+you\s+sure\b|\bdo\s+(?:you|they|we|i)\s+(?:think|recommend|need|have)\b|\bexplain\b|\btell\s+me\b"
        r"|\bmore\s+(?:info|information|details?)\b|\bdifferences?\b|\bmeans?\b|\bmeaning\b"
        r"|どういう|どう(?:違|なる|なり|いう|する|したら|すれば|です|思|か)|どれ(?:が|を|に)|どっち(?:が|を|に)|どちら(?:が|を|に)"
        r"|どの(?:よう|ような|くらい|ぐらい|程度)|何(?:が|を|で|の|それ|ですか|か|番)|なに|なん(?:で|だ|なの|の)|なぜ"
        r"|違い|ちがい|意味|詳しく|くわしく|詳細|教えて|説明|とは|って(?:何|なに|なん)|ですか|ますか|でしょうか|でしょう|だろう"
        r"|かな(?=\s*\?)|の(?=\s*\?)|大丈夫(?=\s*\?)|本当に|ほんとに|ホントに",
    ),
    ("concern", r"危険|危な|リスク|心配|不安|怖|\brisky\b|\bdangerous\b|\bunsafe\b|\bworried\b|\bconcerned?\b"),
    ("qmark", r"\?"),
    (
        "exc_pre",
        r"\bbut\s+not\b|\bexcept(?:\s+for)?\b|\bexcluding\b|\bexclude\b|\bother\s+than\b|\bbesides\b|\bapart\s+from\b"
        r"|\baside\s+from\b|\bminus\b|\bsave\s+for\b|\bnot\s+including\b|\bleav(?:e|ing)\s+out\b",
    ),
    (
        "cond",
        r"だけど|だけれど(?:も)?|けれど(?:も)?|けど|ただし|ただ(?=[、,\s])|(?<=[、,。.!\s])ただ(?![のでいち])|でも(?=[、,\s])"
        r"|(?<=[、,。.!\s])でも|\bbut\b|\bhowever\b|\bthough\b|\balthough\b",
    ),
    ("exc_post", r"(?:を|は)?除(?:いて|く|き|外(?:して)?)|以外|(?:を|は)?抜(?:き|いて)|(?:を|は)?外して"),
    (
        "allx",
        r"\b(?:all|everything|every\s*one|all\s+of\s+them|all\s+(?:the\s+)?options)\s+"
        r"(?:but|except(?:\s+for)?|other\s+than|apart\s+from|aside\s+from|besides|excluding|save|minus)\b",
    ),
    (
        "allcount",
        rf"\ball\s+(?:of\s+)?(?:the\s+)?(?P<ac_v>\d+|{NW})\b(?:\s+of\s+them)?|\bboth\b(?:\s+of\s+them)?"
        rf"|(?P<ac_j>\d+|{KN})\s*(?:つ|個|件)\s*(?:とも|全部|ぜんぶ|すべて|全て)|(?P<ac_c>{JC})つ\s*(?:とも|全部|ぜんぶ|すべて|全て)"
        r"|両方|りょうほう",
    ),
    (
        "neg_yet",
        r"\bnot\s+(?:yet|now|today|right\s+now|this\s+time)\b|\b(?:maybe\s+)?later\b|まだ(?:です|いい|早い|だめ)?"
        r"|(?:また)?(?:後で|あとで|今度)(?:にして|にする|で)?(?=\s*(?:[、,。.!]|$))",
    ),
    (
        "neg_pre",
        r"\b(?:i\s+)?(?:really\s+)?(?:don'?t|do\s+not|doesn'?t|does\s+not|didn'?t|won'?t|will\s+not|wouldn'?t|would\s+not"
        r"|shouldn'?t|should\s+not|can'?t|cannot|never|dont)(?:\s+(?:want|like|need|wanna|choose|pick|select|go\s+with|take))?"
        r"(?:\s+to)?\b|\bno\s+(?:thanks|thank\s+you|way)\b|\bnope\b|\bnah\b|\bnot\b|\bno\b(?!\.\s*\d)"
        r"|\bnone(?:\s+of\s+(?:them|these|those|the\s+options|the\s+above))?\b|\bneither(?:\s+(?:of\s+them|one))?\b|\bnothing\b"
        r"|\binstead\s+of\b|\brather\s+than\b|\banything\s+but\b|\bavoid\b|\bn\b",
    ),
    ("neg_rej_en", r"\b(?:reject(?:ed)?|cancel(?:led|ed)?|stop|abort|deny|denied|decline[d]?|refuse[d]?|halt|skip)\b"),
    (
        "neg_post",
        r"(?:は|も)?(?:いらない|要らない|いりません|要りません|いらん|要らん)|じゃなくて|じゃなく|ではなくて|ではなく|じゃない(?!か)"
        r"|ではない|不要|なしで|無しで|なし|無し|ナシ|ダメ|だめ|駄目|嫌(?:だ|です)?|いやだ|いやです|無理(?:です)?|むり"
        r"|しない(?:で(?:ください|下さい)?|です|よ)?|しません|せず(?:に)?|するな|やらない(?:で)?|やらなくて(?:いい)?"
        r"|しなくて(?:いい)?|なくて(?:いい|良い)?|ないで(?:ください|下さい)?|ないです|ない|ません|ず(?=[、,\s]|$)",
    ),
    (
        "neg_rej_jp",
        r"いいえ|いえ(?!る)|いや(?!い)|却下|中止|キャンセル|拒否|ストップ|中断|取り消(?:し|す)|取消"
        r"|やめ(?:て(?:ください|おく|おきます|とく|ときます)?|る|ます|ましょう|よう|とく|ておく|た)?|止め(?:て|る|ます)|ノー"
        r"|反対|お断り|断(?:る|ります)|遠慮(?:します|しておく|しとく|する)?|見送(?:り|る|ります)|\bng\b",
    ),
    (
        "yes_s",
        r"\b(?:yes|yeah|yea|yep|yup|ya|y|ok|okay|okey|k|kk|sure|approved?|approving|lgtm|go\s+ahead|go\s+for\s+it|do\s+it"
        r"|let'?s\s+do\s+it|let'?s\s+go|run\s+it|ship\s+it|proceed|execute\s+it|execute|continue|confirm(?:ed)?|accept(?:ed)?"
        r"|agreed?|affirmative|sounds\s+good|looks\s+good|all\s+right|alright|absolutely|definitely|certainly|go|run|apply)\b"
        r"|はい(?![らりるれろっ])|うん|ええ|オッケー|オーケー|おっけー|おけ|りょうかい|了解|承知|承認|許可|続行"
        r"|進め(?:て|る|よう|ましょう)|実行|やって|やろう|やりましょう|ぜひ|是非|もちろん",
    ),
    (
        "yes_w",
        r"\b(?:please(?:\s+do)?|fine|good|great|perfect|cool|nice|thanks|thank\s+you)\b|いいよ|いいね|いいです|いい|良い|よい|よし"
        r"|お願い(?:します|いたします|ね)?|おねがい(?:します)?|よろしく(?:お願いします)?|頼む|頼みます|たのむ|どうぞ|それで|そうして|そうしよう",
    ),
    (
        "all",
        r"\ball\s+of\s+(?:them|it|these|those|the\s+options|the\s+above)\b|\ball\s+(?:the\s+)?options\b|\beverything\b"
        r"|\bevery\s*(?:one|option|thing)\b|\beach\s+(?:one|of\s+them)\b|\bthe\s+whole\s+(?:thing|plan|lot)\b|\ball\b"
        r"|全部|ぜんぶ|すべて|全て|総て|どちらも|どっちも|どれも|いずれも|みんな|全件|オール|まるごと|丸ごと|一通り|ひととおり",
    ),
    ("reason_pre", r"\bbecause\b|\bsince\b|\bcause\b|\bcuz\b"),
    ("reason_post", r"なので|ので|だから|(?<=[ぁ-ゖ])から(?=\s*(?:[、,。.!]|$))"),
    (
        "condk_pre",
        r"\bas\s+long\s+as\b|\bprovided(?:\s+that)?\b|\bonly\s+if\b|\bon\s+(?:the\s+)?condition(?:\s+that)?\b|\bmake\s+sure\b"
        r"|\bbe\s+sure\s+to\b|\bif\b|\bunless\b|\band\s+please\b|\bwith\b",
    ),
    ("condk_seq", r"\band\s+(?:also|then)\b|\balso\b|\bthen\b|\bplus\b|それから|あと(?=[、,\s]|で)|ついでに"),
    ("condk_post", r"(?:て|で)から|(?:た|る)?上で|うえで|(?:する|した)?前に|(?:なら|ならば)(?=[、,\s])|条件で"),
    ("without", r"\bwithout\b"),
    ("only", r"だけ(?!ど|れど)|のみ|オンリー|\bonly\b|\bjust\b|\bsolely\b"),
    (
        "rest",
        r"残り|のこり|それ以外|その他|他の(?:やつ|もの|全部|すべて)?|ほかの|他は|ほかは|\bthe\s+rest\b|\brest\b"
        r"|\bthe\s+others\b|\bothers\b|\bthe\s+other\s+ones\b|\bremaining(?:\s+ones)?\b",
    ),
    (
        "hedge",
        r"\bmaybe\b|\bperhaps\b|\bprobably\b|\bi\s+guess\b|\bi\s+suppose\b|\bkinda\b|\bsort\s+of\b|\bmight\b"
        r"|たぶん|多分|かな(?!り)|かも|気がする|微妙|おそらく|恐らく",
    ),
    (
        "same",
        r"前回と同じ|前と同じ|この前と同じ|いつもの|いつも通り|いつもどおり|同じ(?:ので|やつ|もの|の|で)"
        r"|\bsame\s+as\s+(?:before|last\s+time|usual)\b|\bthe\s+same(?:\s+one|\s+as\s+before)?\b|\bas\s+usual\b"
        r"|\bas\s+before\b|\blike\s+(?:before|last\s+time)\b",
    ),
    ("ordfrom_en", r"\b(?:the\s+)?(?P<ofe_k>second|2nd|third|3rd)(?:\s+(?:to|from)\s+(?:the\s+)?|\s*-\s*|\s+)last\b|\bnext[\s-]+to[\s-]+last\b|\bpenultimate\b"),
    (
        "ordfrom_j",
        rf"(?P<ofj_dir>上|前|頭|最初|下|後ろ|うしろ|最後|末尾|後)から\s*(?P<ofj_v>\d+|{KN}|{JC})\s*(?:番目|つ目|個目|ばんめ)",
    ),
    ("firstn_en", rf"\b(?:the\s+)?(?:first|top|leading)\s+(?P<fne_v>\d+|{NW})\b(?!\s*(?:st|nd|rd|th)\b)"),
    (
        "firstn_j",
        rf"(?:一番)?(?:最初|初め|はじめ|始め|先頭|上|前|頭)\s*(?:の|から)\s*(?P<fnj_v>\d+|{KN}|{JC})\s*(?:つ|個|件|項目|案)?"
        r"(?!\s*(?:番|つ目|個目|目))",
    ),
    ("lastn_en", rf"\b(?:the\s+)?(?:last|bottom|final)\s+(?P<lne_v>\d+|{NW})\b"),
    (
        "lastn_j",
        rf"(?:最後|後ろ|うしろ|下|末尾|最終|ラスト)\s*(?:の|から)?\s*(?P<lnj_v>\d+|{KN}|{JC})\s*(?:つ|個|件|項目|案)?"
        r"(?!\s*(?:番|つ目|個目|目))",
    ),
    (
        "ord_en",
        rf"\b(?P<oe_the>the\s+)?(?:very\s+)?(?P<oe_w>last|final|latter|former|middle|center|centre|{OW})\b(?P<oe_one>\s+(?:one|option|choice))?",
    ),
    (
        "ord_j",
        r"(?P<oj_w>一番最初|いちばん最初|一番最後|いちばん最後|一番上|一番下|最初|はじめ(?!て|まして|る|ます)|初め(?!て|る|ます)"
        r"|始め(?!て|る|ます|よう)|先頭|トップ|最後|ラスト|最終|末尾|真ん中|まんなか|中間|前者|後者)",
    ),
    (
        "num",
        r"(?P<num_p>(?:options?|opt|choices?|numbers?|num|items?|plans?|alternatives?|no\.|#|第|番号|案)\s*(?:#|no\.)?\s*)?"
        r"(?P<num_d>\d+)(?P<num_s>\s*(?:番目|ばんめ|番|つ目|個目|こめ|号|案)|(?:st|nd|rd|th)\b)?(?P<num_c>つ|個(?!目)|件)?",
    ),
    ("kanji", rf"(?P<kn_p>第|案)?(?P<kn_d>{KN})(?P<kn_s>番目|ばんめ|番|つ目|個目|号|案)?(?P<kn_c>つ|個(?!目)|件)?"),
    ("jc", rf"(?P<jc_d>{JC})つ(?P<jc_m>目|め)?"),
    ("numword", rf"(?P<nw_p>(?:options?|choices?|numbers?|no\.|#|items?|plans?)\s*)?\b(?P<nw_d>{NW})\b"),
]

# The guard makes every position inside an English word (and every space) fail before
# the alternatives are tried: tokens start at word starts, digits, symbols or CJK.
_GUARD: Final = r"(?! )(?:(?![a-z])|(?<![a-z0-9']))"
_MASTER: Final = _ascii(_GUARD + "(?:" + "|".join(f"(?P<{name}>{pat})" for name, pat in _ALTS) + ")")


# --------------------------------------------------------------------------- first-character dispatch
#
# Trying ~70 alternatives at every position costs about 3 µs per character. Instead, the
# first characters each alternative can start with are computed once from the parsed
# patterns; a single character class finds candidate positions and each candidate
# character gets a (lazily compiled) regex with only the alternatives that can start
# with it, in the original order. Should the parser internals be unavailable, the plain
# master regex is used (same tokens, slower).

_ANY: Final = None  # "could start with any character": disables the dispatch


def _first(items: object) -> tuple[set[int] | None, bool]:
    """(first characters or None for "any", nullable) of a parsed sequence."""
    from re import _constants as c  # noqa: PLC0415 - private, guarded by the caller

    acc: set[int] = set()
    for op, av in items:  # type: ignore[attr-defined]
        if op is c.LITERAL:
            f, nullable = {av}, False
        elif op is c.IN:
            f = set()
            for iop, iav in av:
                if iop is c.LITERAL:
                    f.add(iav)
                elif iop is c.RANGE:
                    f.update(range(iav[0], iav[1] + 1))
                elif iop is c.CATEGORY and iav is c.CATEGORY_DIGIT:
                    f.update(range(48, 58))
                elif iop is c.CATEGORY and iav is c.CATEGORY_SPACE:
                    f.update(b" \t\n\r\f\v")
                else:
                    return _ANY, False
            nullable = False
        elif op is c.BRANCH:
            f, nullable = set(), False
            for alt in av[1]:
                af, an = _first(alt)
                if af is None:
                    return _ANY, False
                f |= af
                nullable = nullable or an
        elif op is c.SUBPATTERN:
            f, nullable = _first(av[3])  # type: ignore[assignment]
        elif op is c.ATOMIC_GROUP:
            f, nullable = _first(av)  # type: ignore[assignment]
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            f, nullable = _first(av[2])  # type: ignore[assignment]
            nullable = nullable or av[0] == 0
        elif op in (c.AT, c.ASSERT, c.ASSERT_NOT):
            f, nullable = set(), True
        else:
            return _ANY, False
        if f is None:
            return _ANY, False
        acc |= f
        if not nullable:
            return acc, False
    return acc, True


def _first_sets() -> list[frozenset[int]] | None:
    try:
        from re import _parser  # noqa: PLC0415

        out = []
        for _name, pat in _ALTS:
            f, nullable = _first(_parser.parse(pat, re.ASCII))
            if f is None or nullable:
                return None
            out.append(frozenset(f))
        return out
    except Exception:  # pragma: no cover - private API changed: fall back to the master regex
        return None


def _char_class(chars: set[int]) -> str:
    out: list[str] = []
    cs = sorted(chars)
    i = 0
    while i < len(cs):
        j = i
        while j + 1 < len(cs) and cs[j + 1] == cs[j] + 1:
            j += 1
        a, b = re.escape(chr(cs[i])), re.escape(chr(cs[j]))
        out.append(a if i == j else f"{a}-{b}")
        i = j + 1
    return "[" + "".join(out) + "]"


_FIRSTS: Final = _first_sets()
_CANDIDATE: Final = (
    _ascii(_GUARD + _char_class(set().union(*_FIRSTS))) if _FIRSTS is not None else None
)
_BY_CHAR: dict[str, re.Pattern[str]] = {}
_BY_SUBSET: dict[tuple[int, ...], re.Pattern[str]] = {}


def _dispatch(ch: str) -> re.Pattern[str]:
    rx = _BY_CHAR.get(ch)
    if rx is None:
        code = ord(ch)
        subset = tuple(i for i, f in enumerate(_FIRSTS or ()) if code in f)
        rx = _BY_SUBSET.get(subset)
        if rx is None:
            body = "|".join(f"(?P<{_ALTS[i][0]}>{_ALTS[i][1]})" for i in subset)
            rx = _BY_SUBSET[subset] = _ascii(_GUARD + "(?:" + body + ")")
        _BY_CHAR[ch] = rx
    return rx


def _finditer(m: str):  # noqa: ANN202 - an iterator of re.Match
    """``_MASTER.finditer(m)``, through the first-character dispatch."""
    if _CANDIDATE is None:
        yield from _MASTER.finditer(m)
        return
    pos = 0
    search = _CANDIDATE.search
    while True:
        c = search(m, pos)
        if c is None:
            return
        p = c.start()
        mo = _dispatch(m[p]).match(m, p)
        if mo is None:
            pos = p + 1
        else:
            yield mo
            pos = mo.end()


_UNIT: Final = _ascii(
    r"\s*(?:分|秒|時間|時|日|週|ヶ月|か月|カ月|月|年|回|人|円|%|パーセント|倍|行|文字|ページ|枚|台|歳|度"
    r"|mb|gb|kb|tb|ms|mins?|minutes?|secs?|seconds?|hours?|hrs?|days?|weeks?|months?|years?|times|x|files?|lines?"
    r"|steps?|jobs?|px|pts?|percent|am|pm|k)(?![a-z])"
)
_NW_AFTER: Final = _ascii(r"\s+(?:of|more|times|things|steps|days|hours|minutes|seconds|files|people|ways|options|choices)\b")
_NOUN_BEFORE: Final = _ascii(
    r"(?:\b(?:steps?|phases?|stages?|parts?|lines?|tasks?|files?|pages?|chapters?|sections?|rounds?|commits?|tests?|days?)"
    r"|ステップ|手順|段階|工程|項目|行目?|タスク|フェーズ|パート|ファイル|ページ|章|節|日)\s*$"
)
_NOUN_AFTER: Final = _ascii(
    r"\s+(?!(?:one|ones|option|options|choice|and|or|but|then|please|too|also|only|is|was|will|would|should|for|to|of"
    r"|in|on|with|without|thanks|instead)\b)[a-z]{3,}"
)
_NOUN_AFTER_J: Final = re.compile(r"の?(?!やつ|もの|方|ほう|案|オプション|選択肢|番)[\u4e00-\u9fff\u30a1-\u30fa]")
_NW_BEFORE: Final = _ascii(r"\b(?:any|some|these|those|other)\s+$")
_ONE_NEXT: Final = _ascii(rf"\s*(?:,|and|&|or|to|through|thru|-)\s*(?:\d|{NW}\b)")
_ONE_PREV: Final = _ascii(rf"(?:\d|\b{NW})\s*(?:,|and|&|or|to|through|thru|-)\s*$")
_ONE_WHOLE: Final = _ascii(r"\s*(?:please|pls|thanks)?\s*[.!。]*\s*$")

# characters allowed right after a bare kanji numeral ("一と三", "二で") or after "1番"
# for it to be an option number rather than the superlative "一番安全な".
_PARTICLE_NEXT: Final = frozenset(" 、,。.!?とやかでをがにはものだまじっお~〜-・)」\ue000")

_LIST_GAP: Final = re.compile(r"(?:と|や|and|&|\+|および|及び|・|も|plus|as\s+well\s+as|と,|とか)?")
_OR_GAP: Final = re.compile(r"(?:か|or|または|もしくは|それか|or\s+maybe|/|か,|either)")
_RANGE_GAP: Final = re.compile(r"(?:-|–|—|−|~|〜|から|to|through|thru|till|until|…|\.\.\.?)")
_GAP_STRIP: Final = " ,、;。.!?:\ue000"
_PUNCT_RE: Final = re.compile(r"[,、;。.!:()\[\]「」『』]+")
_PUNCT_SPACE: Final = " ,、;。.!:?\"'「」()[]…~〜-"

_JP_FILL: Final = re.compile(
    r"お願い(?:します|いたします|です|ね)?|おねがい(?:します)?|ください|下さい|くれ(?:る|ます)?|よろしく|頂戴|ちょうだい|ほしい|欲しい"
    r"|たい(?:です)?|と思(?:う|います)|思います|思う|一番|いちばん|とりあえず|まず|じゃあ|じゃ|では|えっと|あー+|うん|はい|ええ"
    r"|今回|今日|今は|今|いま|今度|一旦|いったん|もう|ちょっと|少し|やっぱり|ありがとう(?:ございます)?|どうも|すみません|理由"
    r"|それ|その|この|あの|これ|あれ|やつ|奴|もの|もん|物|ほう|方|感じ|選択肢|選択|選び(?:ます)?|選ぶ|選んで|番号|オプション|項目|案"
    r"|実行|やって|やる|して|する|します|しよう|しておく|でいい|でお願い|にする|にします|にして|で行(?:く|きます|こう)|でいく|でいきます|でいこう"
    r"|いい|良い|よい|です|ます|だ|で|を|が|は|に|の|と|も|ね|よ|な|か|へ|や|さ|わ|ぞ|ぜ|って|っ|ー"
)
_EN_FILL: Final = _ascii(
    r"\b(?:i|i'?d|i'?ll|i'?m|me|my|we|us|let'?s|let|you|your|please|pls|plz|thanks|thank|thx|ty|ok|okay|sure|yes|yeah"
    r"|the|a|an|option|options|choice|choices|number|numbers|one|ones|item|items|go|going|with|want|wanna|would|like"
    r"|prefer|rather|choose|pick|select|take|use|do|run|execute|try|is|are|be|it|it'?s|its|that|this|these|those|them"
    r"|they|of|for|and|then|so|just|only|fine|good|great|best|better|think|guess|will|can|could|should|as|well|also|too"
    r"|to|on|in|at|now|answer|here|there|from|oh|ah|right|alright|lets|gonna|way|sounds|looks|works|really|time)\b"
)
_WORDCH: Final = re.compile(r"\w")
_FAST: Final = _ascii(
    r"(?:option\s*|no\.\s*|#\s*|第)?(\d{1,3})\s*(?:番目|番|つ目|個目|号)?\s*"
    r"(?:で|です|でお願いします|にします|をお願いします|お願いします|please)?[\s.!。]*"
)
_KW_RE: Final = re.compile(
    r"[\u4e00-\u9fff々〆ヵヶ]{2,}|[\u30a1-\u30faー]{2,}|\d+(?:\.\d+)+|[a-z][a-z0-9]*(?:[._+-][a-z0-9]+)*"
)
_KW_STOP: Final = frozenset(
    (
        "the and for with into from that this those these then than only just all any each both every none not "
        "dont don't does doesn't without except option options choice choices number item items one ones plan "
        "first second third last yes okay please use using mode run"
    ).split()
) | frozenset(("全部", "以外", "最初", "最後", "番目", "選択", "選択肢", "オプション"))
_APPROVE_LABEL: Final = re.compile(
    r"承認|実行|はい|許可|続行|進める|同意|適用|\b(?:yes|approve|run|ok|okay|proceed|accept|confirm|execute|continue|allow|go|apply|agree|y)\b"
)
_REJECT_LABEL: Final = re.compile(
    r"却下|中止|いいえ|拒否|キャンセル|やめ|中断|しない|スキップ|\b(?:no|reject|cancel|stop|deny|abort|decline|skip|don'?t|do\s+not|n)\b"
)
_RECOMMEND_LABEL: Final = re.compile(r"推奨|おすすめ|お勧め|オススメ|\brecommended\b|\(default\)|\bdefault\b|デフォルト")
_LATIN_EDGE: Final = re.compile(r"[a-z0-9]")
_HIRA: Final = re.compile(r"[ぁ-ゖ]")

_TARGETABLE: Final = frozenset(("ref", "range", "firstn", "lastn", "all", "allcount", "rest", "same", "recommend", "yes"))
_DECISIVE: Final = _TARGETABLE | frozenset(
    ("neg", "exc", "vague", "question", "concern", "qmark", "hold", "ambig", "cnt")
)
_STRUCTURAL: Final = frozenset(("range", "firstn", "lastn", "allcount"))

_POLITE: Final = frozenset(
    ("please", "thanks", "thank you", "お願い", "お願いします", "お願いいたします", "お願いね", "おねがい", "おねがいします",
     "よろしく", "よろしくお願いします", "頼む", "頼みます", "たのむ")
)
_WEAK_YES_CONF: Final = {
    "いいよ": 0.85, "いいね": 0.85, "どうぞ": 0.85, "いいです": 0.8, "いい": 0.8, "良い": 0.8, "よい": 0.8,
    "お願いします": 0.8, "お願い": 0.8, "よろしく": 0.8, "よろしくお願いします": 0.8, "頼む": 0.8, "頼みます": 0.8,
    "please": 0.75, "please do": 0.85, "fine": 0.8, "good": 0.8, "great": 0.8, "perfect": 0.85, "cool": 0.8,
}


# --------------------------------------------------------------------------- tokens


class _T:
    """One recognised span of the normalised answer."""

    __slots__ = ("kind", "start", "end", "val", "conf", "src", "dir", "rej", "strong", "neg", "exc", "amb")

    def __init__(
        self,
        kind: str,
        start: int,
        end: int,
        val: int | tuple[int, int] | None = None,
        conf: float = 0.0,
        src: str = "",
        dir: str = "",
        rej: bool = False,
        strong: bool = False,
    ) -> None:
        self.kind = kind
        self.start = start
        self.end = end
        self.val = val
        self.conf = conf
        self.src = src
        self.dir = dir
        self.rej = rej
        self.strong = strong
        self.neg: _T | None = None  # the negator that negates this token
        self.exc: _T | None = None  # the exclusion marker that excludes it
        self.amb = ""  # why this reference is ambiguous

    def targetable(self) -> bool:
        return self.kind in _TARGETABLE or (self.kind == "neg" and self.rej)


def _kanji_int(s: str) -> int:
    total = cur = 0
    for ch in s:
        if ch == "十":
            total += (cur or 1) * 10
            cur = 0
        else:
            cur = cur * 10 + _KD[ch]
    return total + cur


def _count_val(v: str) -> int:
    if v.isdigit():
        return int(v)
    if v in _NW_VAL:
        return _NW_VAL[v]
    if v in _JC_VAL:
        return _JC_VAL[v]
    return _kanji_int(v)


def _is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff" or "\u30a1" <= ch <= "\u30fa" or ch == "々"


_SELECTOR_PREV: Final = _ascii(
    r"(?:^|[,、;。.!:(]|\b(?:and|or|&|except|but|not|only|just|than|from|to|through|pick|choose|take|select|want"
    r"|with|maybe|probably|perhaps|actually|is|like|prefer|go|guess|think|mean|also|plus|then|instead|of|no))\s*$"
)


def _adverb(m: str, st: int) -> bool:
    """English "first"/"last" after a verb phrase is an adverb ("back up first")."""
    return _SELECTOR_PREV.search(m, max(0, st - 12), st) is None


_ADJ_START: Final = (
    "いい", "よい", "よさ", "やす", "はや", "おすすめ", "すき", "たか", "ひく", "らく", "まし", "あんぜん", "かんたん",
    "ちか", "おお", "すく", "つよ", "よわ", "あたら", "ふる", "おそ", "むずかし", "やさし", "大事", "重要", "まとも",
)


def _superlative(m: str, end: int) -> bool:
    """``一番``/``1番`` followed by an adjective ("一番安全な") means "most", not option 1.

    Followed by kanji/katakana ("安全", "ベスト") or a common adjective ("いい", "はやい").
    A verb ("1番しないで") or a particle ("1番で") keeps it an option number.
    """
    if end >= len(m):
        return False
    ch = m[end]
    if ch == "目" or ch in _PARTICLE_NEXT:
        return False
    if _is_cjk(ch):
        return True
    return m.startswith(_ADJ_START, end)



def _middle_ordinal(t: _T, n: int) -> None:
    """"the middle one" / "真ん中": defined only for an odd number of options."""
    if n % 2:
        t.val = (n + 1) // 2
        t.conf = 0.85
    else:
        t.amb = f"no single middle option among {n}"


def _pair_ordinal(t: _T, n: int, word: str, *, second: bool) -> None:
    """"the former/latter" / "前者/後者": defined only for exactly two options."""
    if n == 2:
        t.val = 2 if second else 1
        t.conf = 0.85
    else:
        t.amb = f"{word!r} needs exactly two options"

def _scan(m: str, n: int, toks: list[_T], approval: bool = False) -> None:
    """Tokenise ``m`` (the normalised answer with claimed labels masked).

    In an approval prompt, "step 2" or "the first step" / "最初のステップ" talk about the
    plan, not about the options, so such numbers and ordinals are skipped.
    """
    ln = len(m)
    for mo in _finditer(m):
        name = mo.lastgroup
        st, en = mo.span()
        if name == "num":
            d = mo.group("num_d")
            pre = mo.group("num_p")
            suf = mo.group("num_s")
            cnt = mo.group("num_c")
            ds, de = mo.span("num_d")
            if len(d) > 3:
                continue
            if not pre:
                prev = m[ds - 1] if ds else ""
                if prev.isascii() and prev.isalpha():
                    continue  # v2, gpt4, mp3
                if prev == "." and ds >= 2 and m[ds - 2].isdigit():
                    continue  # decimal part
                if prev == ":" and ds >= 2 and m[ds - 2].isdigit():
                    continue  # time
            if not suf and not cnt:
                if de + 1 < ln and m[de] in ".:" and m[de + 1].isdigit():
                    continue  # 3.12, 10:30
                if not pre and _UNIT.match(m, de):
                    continue
            v = int(d)
            if cnt:
                toks.append(_T("cnt", st, en, v, 0.5, "count"))
                continue
            if suf and suf.strip() == "番" and v == 1 and not pre and _superlative(m, en):
                continue
            if approval and not pre and _NOUN_BEFORE.search(m, max(0, ds - 12), ds):
                toks.append(_T("planref", st, en))  # "step 2", "ステップ2"
                continue
            toks.append(_T("ref", st, en, v, 0.95, "number"))
        elif name == "kanji":
            pre = mo.group("kn_p")
            suf = mo.group("kn_s")
            cnt = mo.group("kn_c")
            v = _kanji_int(mo.group("kn_d"))
            if not pre and not suf and not cnt:
                prev = m[st - 1] if st else " "
                nxt = m[en] if en < ln else " "
                if _is_cjk(prev) or nxt not in _PARTICLE_NEXT:
                    continue  # 一緒, 十分, 統一 ...
                toks.append(_T("ref", st, en, v, 0.9, "number"))
                continue
            if cnt:
                toks.append(_T("cnt", st, en, v, 0.5, "count"))
                continue
            if suf == "番" and v == 1 and not pre and _superlative(m, en):
                continue
            if not pre and st and _is_cjk(m[st - 1]):
                continue  # 統一番号 ...
            toks.append(_T("ref", st, en, v, 0.93, "number"))
        elif name == "jc":
            v = _JC_VAL[mo.group("jc_d")]
            if mo.group("jc_m"):
                toks.append(_T("ref", st, en, v, 0.93, "ordinal"))
            else:
                toks.append(_T("cnt", st, en, v, 0.5, "count"))
        elif name == "numword":
            w = mo.group("nw_d")
            pre = mo.group("nw_p")
            v = _NW_VAL[w]
            if not pre:
                if _NW_AFTER.match(m, en) or _NW_BEFORE.search(m, max(0, st - 8), st):
                    continue  # "two of them", "any two"
                if w == "one" and not (
                    _ONE_NEXT.match(m, en) or _ONE_PREV.search(m, 0, st) or (not m[:st].strip() and _ONE_WHOLE.match(m, en))
                ):
                    continue  # "the safe one", "this one"
            toks.append(_T("ref", st, en, v, 0.9, "number"))
        elif name == "ord_en":
            w = mo.group("oe_w")
            if w == "second" and m[max(0, st - 2) : st] == "a ":
                continue
            if w in ("first", "last") and not mo.group("oe_the") and not mo.group("oe_one") and _adverb(m, st):
                continue  # "back up first", "do it last"
            if approval and not mo.group("oe_one") and _NOUN_AFTER.match(m, en):
                toks.append(_T("planref", st, en))  # "the first step"
                continue
            t = _T("ref", st, en, None, 0.92, "ordinal")
            if w in ("last", "final"):
                t.val = n
            elif w in ("former", "latter"):
                _pair_ordinal(t, n, w, second=w == "latter")
            elif w in ("middle", "center", "centre"):
                _middle_ordinal(t, n)
            else:
                t.val = _OW_VAL[w]
            toks.append(t)
        elif name == "ord_j":
            w = mo.group("oj_w")
            if approval and _NOUN_AFTER_J.match(m, en):
                toks.append(_T("planref", st, en))  # "最初のステップ"
                continue
            t = _T("ref", st, en, None, 0.92, "ordinal")
            if w in ("一番最初", "いちばん最初", "一番上", "最初", "はじめ", "初め", "始め", "先頭", "トップ"):
                t.val = 1
            elif w in ("真ん中", "まんなか", "中間"):
                _middle_ordinal(t, n)
            elif w in ("前者", "後者"):
                _pair_ordinal(t, n, w, second=w == "後者")
            else:
                t.val = n
            toks.append(t)
        elif name == "ordfrom_en":
            k = mo.group("ofe_k")
            back = 3 if k in ("third", "3rd") else 2
            toks.append(_T("ref", st, en, n - back + 1, 0.88, "ordinal"))
        elif name == "ordfrom_j":
            v = _count_val(mo.group("ofj_v"))
            fwd = mo.group("ofj_dir") in ("上", "前", "頭", "最初")
            toks.append(_T("ref", st, en, v if fwd else n - v + 1, 0.9, "ordinal"))
        elif name in ("firstn_en", "firstn_j"):
            v = _count_val(mo.group("fne_v" if name == "firstn_en" else "fnj_v"))
            toks.append(_T("firstn", st, en, v, 0.9))
        elif name in ("lastn_en", "lastn_j"):
            v = _count_val(mo.group("lne_v" if name == "lastn_en" else "lnj_v"))
            toks.append(_T("lastn", st, en, v, 0.9))
        elif name == "allcount":
            v = mo.group("ac_v") or mo.group("ac_j") or mo.group("ac_c")
            toks.append(_T("allcount", st, en, _count_val(v) if v else 2, 0.92))
        elif name == "all":
            toks.append(_T("all", st, en, None, 0.92))
        elif name == "allx":
            toks.append(_T("exc", st, en, None, 0.9, "allx", "pre"))
        elif name == "exc_pre":
            toks.append(_T("exc", st, en, None, 0.88, "", "pre"))
        elif name == "exc_post":
            toks.append(_T("exc", st, en, None, 0.88, "", "post"))
        elif name == "neg_pre":
            toks.append(_T("neg", st, en, None, 0.9, "", "pre"))
        elif name == "neg_rej_en":
            toks.append(_T("neg", st, en, None, 0.95, "", "pre", rej=True))
        elif name == "neg_post":
            toks.append(_T("neg", st, en, None, 0.9, "", "post"))
        elif name == "neg_rej_jp":
            toks.append(_T("neg", st, en, None, 0.95, "", "post", rej=True))
        elif name == "neg_strong":
            toks.append(_T("neg", st, en, None, 0.95, "", "pre", rej=True))
        elif name == "neg_yet":
            toks.append(_T("neg", st, en, None, 0.85, "yet", "post"))
        elif name == "yes_s":
            toks.append(_T("yes", st, en, None, 0.95, "", strong=True))
        elif name == "yes_reluct":
            toks.append(_T("yes", st, en, None, 0.7, "reluctant"))
        elif name == "yesneg":
            toks.append(_T("yes", st, en, None, 0.9, "", strong=True))
        elif name == "yes_w":
            w = m[st:en]
            toks.append(_T("yes", st, en, None, _WEAK_YES_CONF.get(w, 0.75), "polite" if w in _POLITE else ""))
        elif name.startswith("vague"):
            c = 0.2 if name == "vague_unknown" else 0.1 if name == "vague_noise" else 0.3
            toks.append(_T("vague", st, en, None, c, name[6:]))
        else:
            toks.append(_T(name, st, en))


# --------------------------------------------------------------------------- per-context index


class _Index:
    """Per-context tables, built once per distinct option list and cached."""

    __slots__ = (
        "n", "labels", "approval", "approve", "reject", "label_re", "label_re_has_digits", "label_vals", "single", "kw_re", "kw_info",
        "label_chars", "recommended",
    )

    def __init__(self, options: tuple[str, ...], descriptions: tuple[str, ...], kind: str) -> None:
        n = self.n = len(options)
        labels = self.labels = tuple(" ".join(unicodedata.normalize("NFKC", o).lower().split()) for o in options)
        descs = tuple(" ".join(unicodedata.normalize("NFKC", d).lower().split()) for d in descriptions[:n])
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
        self.recommended = None
        for i in range(n):
            if _RECOMMEND_LABEL.search(labels[i]) or (i < len(descs) and _RECOMMEND_LABEL.search(descs[i])):
                self.recommended = i + 1
                break

        # exact labels: longest first; yes/no-word labels stay with the scanner in approval mode
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
            p = re.escape(lb)
            if _LATIN_EDGE.match(lb[0]):
                p = r"(?<![a-z0-9])" + p
            elif _HIRA.match(lb[0]):
                p = r"(?<![ぁ-ゖ])" + p
            if _LATIN_EDGE.match(lb[-1]):
                p += r"(?![a-z0-9])"
            elif _HIRA.match(lb[-1]):
                p += r"(?![ぁ-ゖ])"
            pats.append(p)
        self.label_re = re.compile("|".join(f"({p})" for p in pats)) if pats else None
        self.label_re_has_digits = any(ch.isdigit() for lb in labels for ch in lb)
        self.label_vals = vals

        # distinctive keywords of labels and descriptions
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
                    kpats.append(rf"(?<![a-z0-9]){re.escape(stem)}[a-z]*(?![a-z0-9])")
                else:
                    kpats.append(rf"(?<![a-z0-9.]){re.escape(kw)}(?![a-z0-9]|\.\d)")
            else:
                kpats.append(re.escape(kw))
            self.kw_info.append((opt, len(kw), in_label.get(kw, False)))
        self.kw_re = re.compile("|".join(f"({p})" for p in kpats)) if kpats else None
        self.label_chars = tuple(max(1, len(_WORDCH.findall(lb))) for lb in labels)


def _keywords(text: str) -> set[str]:
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
        elif c.isdigit():
            out.add(kw)
        elif (len(kw) >= 3 or any(ch.isdigit() for ch in kw)) and kw not in _KW_STOP and not _EN_FILL.fullmatch(kw):
            out.add(kw)
    return out


def _stem(w: str) -> str:
    for suf in ("ingly", "ing", "edly", "ed", "ly", "est", "er", "es", "s", "ion"):
        if w.endswith(suf) and len(w) - len(suf) >= 3:
            return w[: -len(suf)]
    if w.endswith("e") and len(w) >= 5:
        return w[:-1]  # create -> creat (creating, creation)
    return w


def _vocab_only(text: str) -> bool:
    """True if the whole text is one yes/no token ("approve", "却下", "はい")."""
    mo = _MASTER.fullmatch(text)
    return mo is not None and mo.lastgroup in ("yes_s", "yes_w", "yesneg", "neg_rej_en", "neg_rej_jp", "neg_pre", "neg_post")


_INDEX_CACHE: dict[tuple, _Index] = {}


def _index(context: ChoiceContext) -> _Index:
    key = (tuple(context.available_options), tuple(context.option_descriptions), context.kind)
    idx = _INDEX_CACHE.get(key)
    if idx is None:
        if len(_INDEX_CACHE) >= 512:
            _INDEX_CACHE.clear()
        idx = _INDEX_CACHE[key] = _Index(*key)
    return idx


# --------------------------------------------------------------------------- clauses


class _Seg:
    __slots__ = ("start", "end", "flag", "toks", "role")

    def __init__(self, start: int, end: int, flag: str) -> None:
        self.start = start
        self.end = end
        self.flag = flag  # main | cond | seq | without | reason
        self.toks: list[_T] = []
        self.role = ""  # active | mod | none



# token kind -> (cut at its end?, resume at its end?, flag of the next segment, flag of the previous one)
_SEGMENT_CUTS: dict[str, tuple[bool, bool, str, str]] = {
    "cond": (False, True, "cond", ""),
    "condk_pre": (False, False, "cond", ""),
    "without": (False, False, "without", ""),
    "condk_seq": (False, False, "seq", ""),
    "condk_post": (True, True, "main", "cond"),
    "reason_pre": (False, False, "reason", ""),
    "reason_post": (True, True, "main", "reason"),
    "qmark": (True, True, "main", ""),
    "correct": (True, True, "main", ""),
}

def _segments(s: str, m3: str, toks: list[_T]) -> list[_Seg]:
    """Split at punctuation and connectors; ``m3`` has every token masked."""
    cuts: list[tuple[int, int, str, str]] = []  # (cut, resume, flag for next, flag for previous)
    for mo in _PUNCT_RE.finditer(m3):
        cuts.append((mo.start(), mo.end(), "main", ""))
    for t in toks:
        rule = _SEGMENT_CUTS.get(t.kind)
        if rule is not None:
            cut_at_end, resume_at_end, nxt, prev = rule
            cuts.append((t.end if cut_at_end else t.start, t.end if resume_at_end else t.start, nxt, prev))
    cuts.sort()
    segs: list[_Seg] = []
    cur = 0
    pending = "main"
    for cut, resume, nxt, prev in cuts:
        if cut < cur:
            continue
        body = s[cur:cut]
        if body.strip(_PUNCT_SPACE):
            segs.append(_Seg(cur, cut, prev or pending))
            pending = nxt
        elif prev and segs:
            segs[-1].flag = prev
            pending = nxt
        elif nxt != "main":
            pending = nxt
        cur = resume
    if s[cur:].strip(_PUNCT_SPACE) or not segs:
        segs.append(_Seg(cur, len(s), pending))
    else:
        segs[-1].end = len(s)
    j = 0
    for t in toks:
        while j + 1 < len(segs) and t.start >= segs[j + 1].start:
            j += 1
        segs[j].toks.append(t)
    return segs


def _residue(s: str, seg: _Seg, toks: list[_T]) -> str:
    """The clause text not covered by tokens, fillers removed."""
    parts: list[str] = []
    cur = seg.start
    for t in toks:
        if t.start > cur:
            parts.append(s[cur : t.start])
        cur = max(cur, t.end)
        parts.append(" ")
    if seg.end > cur:
        parts.append(s[cur : seg.end])
    r = "".join(parts)
    r = _EN_FILL.sub(" ", r)
    r = _JP_FILL.sub("", r)
    return r


def _wc(r: str) -> int:
    return len(_WORDCH.findall(r))


def _gap(s: str, a: _T, b: _T) -> str:
    """Classify the text between two targetable tokens: list | or | range | other."""
    g = s[a.end : b.start].strip(_GAP_STRIP)
    if _LIST_GAP.fullmatch(g):
        return "list"
    if _OR_GAP.fullmatch(g):
        return "or"
    if _RANGE_GAP.fullmatch(g):
        return "range"
    return "other"


def _scope(s: str, seg_toks: list[_T], i: int, direction: str) -> list[_T]:
    """The group of targetable tokens a negator/exclusion at ``seg_toks[i]`` applies to."""
    group: list[_T] = []
    if direction == "pre":
        rng = range(i + 1, len(seg_toks))
    else:
        rng = range(i - 1, -1, -1)
    for j in rng:
        t = seg_toks[j]
        if not t.targetable() or t.neg is not None or t.exc is not None:
            if group and t.kind not in ("only", "fill"):
                break
            continue
        if group:
            a, b = (group[-1], t) if direction == "pre" else (t, group[-1])
            if _gap(s, a, b) == "other":
                break
        group.append(t)
    return group


# --------------------------------------------------------------------------- results


# (selected options, confidence, extracted_intent, reasoning)
_Decision = tuple[list[int], float, str, str]


def _clarify(conf: float, reasoning: str, intent: str, mods: list[str] | None = None) -> ChoiceResult:
    return ChoiceResult(
        selected_options=[],
        confidence=conf,
        reasoning=reasoning,
        modifications=mods or [],
        clarification_needed=True,
        extracted_intent=intent,
        decided_by="pattern",
    )


def _vals(t: _T, n: int) -> tuple[list[int], str]:
    """Options a targetable token refers to, or an error text."""
    k = t.kind
    if k == "ref":
        if t.amb:
            return [], t.amb
        v = t.val
        assert isinstance(v, int)
        if 1 <= v <= n:
            return [v], ""
        return [], f"option {v} does not exist (there are {n})"
    if k == "range":
        a, b = t.val  # type: ignore[misc]
        if a > b:
            a, b = b, a
        if a < 1 or b > n:
            bad = b if b > n else a
            return [], f"option {bad} does not exist (there are {n})"
        return list(range(a, b + 1)), ""
    if k in ("firstn", "lastn"):
        v = t.val
        assert isinstance(v, int)
        if v < 1 or v > n:
            return [], f"asked for {v} options but there are {n}"
        return (list(range(1, v + 1)) if k == "firstn" else list(range(n - v + 1, n + 1))), ""
    if k == "all":
        return list(range(1, n + 1)), ""
    return [], ""


def _shown(s: str, t: _T) -> str:
    return s[t.start : t.end].strip()


def _fmt(sel: list[int]) -> str:
    return ",".join(map(str, sel))


# --------------------------------------------------------------------------- main entry


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
        negation without a choice, ambiguous (``1か2``) or names an option that
        does not exist. ``None`` when nothing decisive was recognised and a
        model might understand the answer (free descriptive text).

    Notes
    -----
    Approval words (``はい``/``yes``/``いいよ``/``go ahead`` and
    ``いいえ``/``no``/``やめて``/``cancel``) apply when ``context.kind`` is
    ``"approval"`` or when exactly one label looks like approving and exactly
    one like rejecting. A negated approval (``承認しないで``, ``don't run it``,
    ``not yet``) selects the rejecting option; ``don't cancel`` or ``yes, no``
    ask back.

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
    """
    t_orig = _prep(answer)
    s = t_orig.lower()
    if len(s) != len(t_orig):
        t_orig = s
    idx = _index(context)
    n = idx.n
    core = s.strip(_PUNCT_SPACE)
    if not core:
        return _clarify(0.0, "empty answer", "empty")

    # 0. the common case: a bare number ("2", "２番で", "option 3", "No.1")
    fast = _FAST.fullmatch(s)
    if fast is not None and not idx.single and not idx.label_re_has_digits:
        v = int(fast.group(1))
        if 1 <= v <= n:
            intent = f"select {v}"
            if idx.approval:
                intent = "approve" if v == idx.approve else "reject" if v == idx.reject else intent
            return ChoiceResult(
                selected_options=[v], confidence=0.95, reasoning=f"number {core!r}", extracted_intent=intent,
                decided_by="pattern",
            )

    toks: list[_T] = []
    # 1. exact labels
    m = s
    if core in idx.single:
        v = idx.single[core]
        a = s.index(core)
        toks.append(_T("ref", a, a + len(core), v, 0.9, "label"))
        m = s[:a] + "\ue000" * len(core) + s[a + len(core) :]
    elif idx.label_re is not None:
        parts: list[str] = []
        cur = 0
        for mo in idx.label_re.finditer(s):
            a, b = mo.span()
            toks.append(_T("ref", a, b, idx.label_vals[mo.group()], 0.9, "label"))
            parts.append(s[cur:a])
            parts.append("\ue000" * (b - a))
            cur = b
        if parts:
            parts.append(s[cur:])
            m = "".join(parts)
    # 2. structural tokens
    _scan(m, n, toks, idx.approval)
    toks.sort(key=lambda t: t.start)
    # 3. keywords of labels/descriptions in what is left (soft yes words released in options mode)
    if idx.kw_re is not None:
        parts = []
        cur = 0
        for t in toks:
            if t.kind == "yes" and not idx.approval:
                continue
            if t.start >= cur:
                parts.append(m[cur : t.start])
                parts.append("\ue000" * (t.end - t.start))
                cur = t.end
        parts.append(m[cur:])
        m2 = "".join(parts)
        kw_toks: list[_T] = []
        cover: dict[int, int] = {}
        for mo in idx.kw_re.finditer(m2):
            opt, length, is_label = idx.kw_info[mo.lastindex - 1]  # type: ignore[operator]
            a, b = mo.span()
            kt = _T("ref", a, b, opt, 0.7, "keyword" if is_label else "description")
            kw_toks.append(kt)
            if is_label:
                cover[opt] = cover.get(opt, 0) + min(length, b - a)
        if kw_toks:
            for kt in kw_toks:
                assert isinstance(kt.val, int)
                if kt.src == "keyword":
                    kt.conf = round(0.7 + 0.1 * min(1.0, cover.get(kt.val, 0) / idx.label_chars[kt.val - 1] * 1.5), 3)
            toks = [t for t in toks if not (t.kind == "yes" and any(k.start < t.end and t.start < k.end for k in kw_toks))]
            toks.extend(kw_toks)
            toks.sort(key=lambda t: t.start)

    # 4. ranges: ref <range-gap> ref
    tg = [t for t in toks if t.kind == "ref" and t.src in ("number", "ordinal") and t.val is not None and not t.amb]
    if len(tg) >= 2:
        merged: set[int] = set()
        for a, b in zip(tg, tg[1:]):
            if id(a) in merged:
                continue
            if _gap(s, a, b) == "range":
                r = _T("range", a.start, b.end, (a.val, b.val), 0.92)  # type: ignore[arg-type]
                toks = [t for t in toks if t is not a and t is not b]
                toks.append(r)
                merged.add(id(b))
        if merged:
            toks.sort(key=lambda t: t.start)

    # 5. clauses
    if toks:
        pp: list[str] = []
        cur = 0
        for t in toks:
            if t.start >= cur:
                pp.append(s[cur : t.start])
                pp.append("\ue000" * (t.end - t.start))
                cur = t.end
        pp.append(s[cur:])
        m3 = "".join(pp)
    else:
        m3 = s
    segs = _segments(s, m3, toks)
    return _decide(t_orig, s, segs, toks, idx, context)


def _decide(
    t_orig: str, s: str, segs: list[_Seg], toks: list[_T], idx: _Index, context: ChoiceContext
) -> ChoiceResult | None:
    """Roles of clauses, negation scope, safety checks, then the mode-specific decision."""
    n = idx.n
    approval = idx.approval

    # roles: reason clauses are ignored, conditional clauses without numbers are modifications
    for seg in segs:
        kinds = {t.kind for t in seg.toks}
        structural = any(t.kind in _STRUCTURAL or (t.kind == "ref" and t.src in ("number", "ordinal")) for t in seg.toks)
        if seg.flag == "reason":
            if structural:  # "2番が安全だから": the choice sits inside the reason clause
                seg.toks = [t for t in seg.toks if not (t.kind == "ref" and t.src in ("keyword", "description"))]
                seg.role = "active"
            else:
                seg.role = "none"
        elif seg.flag in ("cond", "without", "seq"):
            if seg.flag == "without" and any(t.targetable() for t in seg.toks):
                seg.role = "active"
            elif seg.flag == "seq" and any(t.targetable() and t.kind != "yes" for t in seg.toks):
                seg.role = "active"  # "test then deploy", "2, also 3"
            elif structural:
                seg.role = "active"
            elif _wc(_residue(s, seg, seg.toks)) >= 2:
                seg.role = "mod"
            else:  # "1, but no", "yes but never": a bare reversal is no condition
                seg.role = "active" if kinds & _DECISIVE else "none"
        elif kinds & _DECISIVE:
            seg.role = "active"
        else:
            seg.role = "mod" if _wc(_residue(s, seg, seg.toks)) >= 2 else "none"
    # "the one with the backup": a descriptive clause is the choice when nothing else chooses
    if not any(seg.role == "active" and any(t.targetable() and t.kind != "yes" for t in seg.toks) for seg in segs):
        for seg in segs:
            if seg.role != "active" and seg.flag in ("cond", "seq") and any(t.kind == "ref" for t in seg.toks):
                seg.role = "active"

    # a correction ("やっぱり", "actually", "いや、3番") drops what came before it
    last_fix = -1
    for t in toks:
        if t.kind == "correct" and any(u.start > t.start and u.targetable() for u in toks):
            last_fix = t.start
    if last_fix >= 0:
        for seg in segs:
            if seg.end <= last_fix:
                seg.role = "none"
            elif seg.start < last_fix:
                seg.toks = [t for t in seg.toks if t.start > last_fix]

    # negation/exclusion scope, clause by clause
    double_neg: _T | None = None
    neg_mod = False
    extra_mods: list[str] = []
    for seg in segs:
        if seg.role != "active":
            continue
        st = seg.toks
        if seg.flag == "without":
            for t in st:
                if t.targetable():
                    t.exc = t
        for phase in (0, 1):
            for i, t in enumerate(st):
                if t.kind == "exc" and phase == 0:
                    for g in _scope(s, st, i, t.dir):
                        g.exc = t
                elif t.kind == "neg" and t.neg is None and t.rej == bool(phase) and t.src != "yet":
                    for g in _scope(s, st, i, t.dir):
                        if g.kind == "neg":
                            double_neg = t
                        g.neg = t
        # "deploy, but not on friday": an exclusion of something that is no option is a
        # condition on an explicit choice (with "all" or in an approval it changes the choice
        # itself, and the model decides)
        for t in list(st):
            if t.kind != "exc" or t.src == "allx" or approval or any(u.exc is t for u in st):
                continue
            if any(u.kind in ("all", "allcount", "rest") for u in toks):
                continue
            if t.dir == "pre":
                a = t.start + 4 if s.startswith("but ", t.start) else t.start
                extra_mods.append(t_orig[a : seg.end].strip(" ,、;。.!"))
                seg.toks = st = [u for u in st if u.start < t.start]
                seg.end = t.start
            else:
                extra_mods.append(t_orig[seg.start : t.end].strip(" ,、;。.!"))
                seg.toks = st = [u for u in st if u.start >= t.end]
                seg.start = t.end
        # a bare pure negator in a clause with other content is about that content:
        # "yes, don't delete the logs" -> modification "don't delete the logs"
        dec = [t for t in st if t.kind in _DECISIVE]
        has_object = any(t.kind == "neg" for t in dec) and _wc(_residue(s, seg, st)) >= 2
        if dec and all(t.kind == "neg" and not t.rej and t.src != "yet" for t in dec):
            if not any(t.neg is not None for t in st) and has_object:
                seg.role = "mod"
                neg_mod = True
        elif approval and has_object and any(
            t.kind == "neg" and t.rej and not any(u.neg is t for u in st) for t in dec
        ):
            # "skip step 3", "設定変更はやめて": refuses part of the plan, not the plan
            return None

    if approval and any(t.kind == "planref" for seg in segs if seg.role != "none" for t in seg.toks):
        return None  # "yes to step 1", "skip the first step": about parts of the plan, for the model
    for seg in segs:
        if approval and seg.role == "mod" and any(t.kind == "only" for t in seg.toks):
            return None  # "yes, but only the first step": a partial approval, for the model
        if seg.role != "active" and seg.flag != "reason" and any(t.kind in ("question", "hold") for t in seg.toks):
            hold = any(t.kind == "hold" for t in seg.toks)
            return _clarify(
                0.2, f"{'hold' if hold else 'question'} in {_mod_text(t_orig, seg)!r}", "hold" if hold else "question: " + t_orig[:80]
            )
    act = [t for seg in segs if seg.role == "active" for t in seg.toks]
    mods = [_mod_text(t_orig, seg) for seg in segs if seg.role == "mod"]
    mods = [x for x in mods if x] + [x for x in extra_mods if x]
    if not act:
        if neg_mod and approval:  # "don't delete the logs": not a consent, not a refusal either
            return _clarify(0.3, "only a condition, no choice", "condition only", mods)
        return None

    kinds = {t.kind for t in act}
    targets = [t for t in act if t.targetable()]
    note: list[str] = []

    # out-of-range / ambiguous references: never select, never let a model guess
    for t in targets:
        vs, err = _vals(t, n)
        if err:
            return _clarify(0.1, f"{_shown(s, t)!r}: {err}", "ambiguous ordinal" if t.amb else "invalid option", mods)
    for t in targets:
        if t.kind == "allcount" and t.val != n:
            explicit = [u for u in targets if u.kind in ("ref", "range") and u.neg is None]
            if not explicit:
                return _clarify(0.2, f"{_shown(s, t)!r} but there are {n} options", "ambiguous count", mods)

    # questions, concerns, holds
    q = [t for t in act if t.kind == "question"]
    if q or ("concern" in kinds and "qmark" in kinds):
        first = q[0] if q else next(t for t in act if t.kind == "concern")
        return _clarify(0.2, f"question or concern ({_shown(s, first)!r})", "question: " + t_orig[:80], mods)
    for seg in segs:
        if seg.role == "active" and any(t.kind == "qmark" for t in seg.toks):
            if not any(t.targetable() and t.kind != "yes" for t in seg.toks):
                return _clarify(0.2, "answer is a question", "question: " + t_orig[:80], mods)
    if "hold" in kinds:
        return _clarify(0.2, "user asked to wait", "hold", mods)

    vague = [t for t in act if t.kind == "vague"]
    hedge = "hedge" in kinds or "suggest" in kinds
    qmark = "qmark" in kinds

    # resolve option references
    pos: list[_T] = []
    negd: list[_T] = []
    excl: list[_T] = []
    for t in targets:
        if t.kind == "yes" or (t.kind == "neg"):
            continue
        if t.exc is not None:
            excl.append(t)
        elif t.neg is not None:
            negd.append(t)
        else:
            pos.append(t)
    bare = [t for t in act if t.kind == "neg" and t.neg is None and not _negates_something(t, act)]
    if any(t.kind == "exc" and not _negates_something(t, act) for t in act):
        return None  # "everything except the slow stuff": excludes something that is not an option

    # "1か2", "1 or 2"
    ordered = sorted((t for t in pos if t.kind in ("ref", "range", "firstn", "lastn")), key=lambda t: t.start)
    for a, b in zip(ordered, ordered[1:]):
        if _gap(s, a, b) == "or":
            return _clarify(0.3, f"alternatives {_shown(s, a)!r} or {_shown(s, b)!r}", "ambiguous: either", mods)

    # conflicts between a number and a label next to it ("1番の完全実行")
    for a, b in zip(ordered, ordered[1:]):
        if a.kind == b.kind == "ref" and a.val != b.val and {a.src, b.src} & {"label", "keyword", "description"}:
            if {a.src, b.src} & {"number", "ordinal"} and _gap(s, a, b) == "other":
                return _clarify(
                    0.3, f"{_shown(s, a)!r} and {_shown(s, b)!r} point to different options", "conflicting", mods
                )

    if approval:
        res = _decide_approval(s, act, pos, negd, excl, bare, double_neg, idx)
    else:
        res = _decide_options(s, act, pos, negd, excl, bare, double_neg, idx, context.previous_choices)
    if res is None or isinstance(res, ChoiceResult):
        if res is None:
            if vague:
                return _vague(s, vague, idx, mods)
            if "ambig" in kinds:
                return _clarify(0.2, "ambiguous politeness (結構/大丈夫)", "ambiguous", mods)
            if mods and approval:
                return _clarify(0.3, "only a condition, no choice", "condition only", mods)
            return None
        if mods and not res.modifications:
            res = ChoiceResult(
                selected_options=res.selected_options, confidence=res.confidence, reasoning=res.reasoning,
                modifications=mods, clarification_needed=res.clarification_needed,
                extracted_intent=res.extracted_intent, decided_by="pattern",
            )
        return res

    sel, conf, intent, why = res
    if not sel:
        return _clarify(0.2, why or "nothing left to select", intent or "empty selection", mods)
    if approval and context.kind == "approval" and len(sel) > 1:
        return _clarify(0.3, f"approval options are exclusive, got {_fmt(sel)}", "conflicting", mods)

    # adjustments
    if vague:
        conf = min(conf, 0.6)
        note.append("hesitant")
    if hedge:
        conf = min(conf, 0.7)
        note.append("hedged")
    if qmark:
        conf = min(conf, 0.7)
        note.append("asked as a question")
    if bare and not approval:
        conf = min(conf, 0.6)
        note.append("contains an unscoped negation")
    res_chars = 0
    for seg in segs:
        if seg.role == "active":
            res_chars += _wc(_residue(s, seg, seg.toks))
    if approval and "only" in kinds and res_chars >= 2 and not pos:
        return None  # "ファイル作成だけお願いします": a partial approval, let the model decide
    if res_chars >= 4:
        only_keywords = bool(pos) and all(t.kind == "ref" and t.src in ("keyword", "description") for t in pos)
        if only_keywords and res_chars >= 8 and not approval:
            return None  # mostly free text around a partial keyword: let the model read it
        cap = 0.75 if res_chars >= 10 and res_chars * 2 >= _wc(s) else 0.85
        if conf > cap:
            conf = cap
            note.append("unexplained text")
    strong_yes = any(t.kind == "yes" and t.strong and t.neg is None for t in act)
    if approval and intent == "approve" and res_chars >= 4 and not strong_yes:
        return None  # "please change the plan to add logging": politeness around a request
    explicit = strong_yes or any(t.kind == "ref" and t.src in ("number", "ordinal", "label") for t in pos)
    if approval and intent == "approve" and neg_mod and not explicit:
        # "never 1番、お願いします": a negation we could not scope, next to mere politeness
        return _clarify(0.2, "a negation next to a polite request, no explicit consent", "unclear negation", mods)
    if approval and intent == "reject" and res_chars >= 2 and conf > 0.75:
        conf = 0.75  # "設定変更はやめて": refuses something specific, maybe only part of the plan
        note.append("refusal of something specific")
    if mods:
        conf = min(conf - 0.1, 0.75)  # a condition is always confirmed: patterns cannot judge it
        note.append("conditional")
    if note:
        why += " (" + ", ".join(note) + ")"
    return ChoiceResult(
        selected_options=sel,
        confidence=round(max(0.0, min(conf, 1.0)), 3),
        reasoning=why,
        modifications=mods,
        clarification_needed=False,
        extracted_intent=intent,
        decided_by="pattern",
    )


def _free_text(s: str, act: list[_T]) -> bool:
    """True when the answer has words of its own beyond tokens and fillers."""
    return _wc(_residue(s, _Seg(0, len(s), "main"), act)) >= 2


def _negates_something(t: _T, act: list[_T]) -> bool:
    return any(u.neg is t or u.exc is t for u in act)


def _vague(s: str, vague: list[_T], idx: _Index, mods: list[str]) -> ChoiceResult:
    v = vague[0]
    if v.src in ("delegate", "pref") and idx.recommended is not None:
        return ChoiceResult(
            selected_options=[idx.recommended],
            confidence=0.7,
            reasoning=f"delegated ({_shown(s, v)!r}) → the recommended option {idx.recommended}",
            modifications=mods,
            extracted_intent=f"select {idx.recommended} (recommended)",
            decided_by="pattern",
        )
    return _clarify(min(v.conf, 0.3), f"vague answer ({_shown(s, v)!r})", "vague", mods)


def _mod_text(t_orig: str, seg: _Seg) -> str:
    return t_orig[seg.start : seg.end].strip(" ,、;。.!")


def _describe(s: str, ts: list[_T]) -> str:
    return ", ".join(f"{t.src or t.kind} {_shown(s, t)!r}" for t in ts[:4])


def _positives(pos: list[_T], n: int) -> tuple[set[int], float, list[_T]]:
    sel: set[int] = set()
    confs: list[float] = []
    used: list[_T] = []
    for t in pos:
        if t.kind in ("ref", "range", "firstn", "lastn"):
            vs, _ = _vals(t, n)
            sel.update(vs)
            confs.append(t.conf)
            used.append(t)
    conf = min(confs) if confs else 0.0
    if len(used) > 1:
        conf = max(conf - 0.02 * (len(used) - 1), min(conf, 0.85))
    return sel, conf, used


def _decide_options(
    s: str, act: list[_T], pos: list[_T], negd: list[_T], excl: list[_T], bare: list[_T],
    double_neg: _T | None, idx: _Index, previous: list[str],
) -> _Decision | ChoiceResult | None:
    n = idx.n
    everything = set(range(1, n + 1))
    sel, conf, used = _positives(pos, n)
    has_all = any(t.kind in ("all", "allcount") for t in pos) or any(t.kind == "exc" and t.src == "allx" for t in act)
    has_rest = any(t.kind == "rest" for t in pos)
    yes = [t for t in act if t.kind == "yes" and t.neg is None]
    ex: set[int] = set()
    for t in excl:
        ex.update(_vals(t, n)[0])
    ng: set[int] = set()
    for t in negd:
        ng.update(_vals(t, n)[0])
    if double_neg is not None:
        return _clarify(0.2, f"double negative ({_shown(s, double_neg)!r})", "unclear negation")
    if any(t.kind in ("all", "allcount") for t in negd):
        return _clarify(0.2, "'not all' does not say which", "not all")
    if ex:
        base = sel if sel and not has_all else everything
        out = sorted(base - ex)
        c = 0.9 if has_all else 0.88
        if sel and not has_all:
            c = min(conf, 0.88)
        return out, c, f"all except {_fmt(sorted(ex))}" if base == everything else f"select {_fmt(out)}", (
            f"exclusion of {_fmt(sorted(ex))}" + (f" from {_describe(s, used)}" if used and not has_all else " from all")
        )
    if ng:
        if sel:
            if sel & ng:
                return _clarify(0.2, f"option(s) {_fmt(sorted(sel & ng))} both chosen and negated", "conflicting")
            out = sorted(sel)
            return out, min(conf, 0.85), f"select {_fmt(out)}", f"{_describe(s, used)}, not {_fmt(sorted(ng))}"
        if has_rest or has_all:
            out = sorted(everything - ng)
            return out, 0.85, f"all except {_fmt(sorted(ng))}", f"rest after removing negated {_fmt(sorted(ng))}"
        return _clarify(0.2, f"negated option(s) {_fmt(sorted(ng))} without saying what to do instead", f"not {_fmt(sorted(ng))}")
    if sel:
        out = sorted(sel)
        if any(t.kind == "allcount" for t in pos) and any(t.kind == "allcount" and t.val != len(out) for t in pos):
            return _clarify(0.3, f"count does not match {_fmt(out)}", "ambiguous count")
        intent = f"select {_fmt(out)}"
        if any(t.kind == "only" for t in act):
            intent = f"only {_fmt(out)}"
        return out, conf, intent, _describe(s, used)
    if has_all:
        return sorted(everything), 0.92, "all", "all options"
    negated_yes = [t for t in act if t.kind == "yes" and t.neg is not None]
    if bare or negated_yes:
        return _clarify(0.3, "a refusal without an option to reject", "none")
    rec = [t for t in pos if t.kind == "recommend"]
    if rec:
        if idx.recommended is not None:
            return [idx.recommended], 0.75, f"select {idx.recommended} (recommended)", "asked for the recommended option"
        return _clarify(0.3, "asked for a recommendation; no option is marked recommended", "delegate")
    same = [t for t in pos if t.kind == "same"]
    if same:
        v = _previous(idx, previous)
        if v is not None:
            return [v], 0.75, f"select {v} (same as before)", "same as the previous choice"
        return None
    if yes:
        if any(y.strong for y in yes) or not _free_text(s, act):
            if n == 1:
                return [1], 0.9, "select 1", f"affirmative {_shown(s, yes[0])!r} with a single option"
            return _clarify(0.2, f"affirmative {_shown(s, yes[0])!r} but {n} options", "yes, but which option?")
        return None  # "バックアップの方がいい": a preference in words, for the model
    if any(t.kind == "cnt" for t in act):
        c = next(t for t in act if t.kind == "cnt")
        return _clarify(0.2, f"a count ({_shown(s, c)!r}) without saying which", "ambiguous count")
    return None


def _previous(idx: _Index, previous: list[str]) -> int | None:
    """The option of the most recent previous choice ("2", "option 2" or a label)."""
    for p in reversed(previous):
        q = " ".join(unicodedata.normalize("NFKC", p).lower().split())
        if q in idx.labels:
            return idx.labels.index(q) + 1
        mo = re.fullmatch(r"(?:option\s*)?(\d+)", q)
        if mo and 1 <= int(mo.group(1)) <= idx.n:
            return int(mo.group(1))
    return None


def _decide_approval(
    s: str, act: list[_T], pos: list[_T], negd: list[_T], excl: list[_T], bare: list[_T],
    double_neg: _T | None, idx: _Index,
) -> _Decision | ChoiceResult | None:
    n = idx.n
    ap, rj = idx.approve, idx.reject
    if double_neg is not None:
        return _clarify(0.2, f"double negative ({_shown(s, double_neg)!r})", "unclear negation")
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
        if t.kind in ("all", "allcount"):  # "全部やめて", "全部却下"
            r = add(rj, 0.9, f"refusal of everything {_shown(s, t)!r}")
            if r is not None:
                return r
            continue
        if t.kind == "neg":  # a negated rejection word
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
        if t.kind == "yes" and t.neg is not None:
            r = add(rj, 0.92, f"negated approval {_shown(s, t.neg)!r} {_shown(s, t)!r}")  # type: ignore[arg-type]
            if r is not None:
                return r
    for t in bare:
        c = 0.85 if t.src == "yet" else t.conf
        r = add(rj, c, f"refusal {_shown(s, t)!r}")
        if r is not None:
            return r
    if excl:
        return _clarify(0.2, "an exclusion in an approval prompt", "unclear")
    sel, conf, used = _positives(pos, n)
    for v in sel:
        add(v, conf, _describe(s, used))
    yes = [t for t in act if t.kind == "yes" and t.neg is None]
    if yes:
        first_dec = next(t for t in act if t.kind in _DECISIVE)
        # a yes word counts when nothing else was said, or when it opens the answer ("はい、1番");
        # politeness ("please", "お願いします") never outweighs a refusal
        counted = [y for y in yes if (not sel and (y.src != "polite" or not signals)) or (y is first_dec and y.strong)]
        if counted:
            best = max(counted, key=lambda y: y.conf)
            c = best.conf
            if not best.strong and len(act) == 1 and s.strip(_PUNCT_SPACE) in ("いいです", "いい"):
                c = 0.6  # "いいです" alone can mean "no thanks"
            r = add(ap, c, f"affirmative {_shown(s, best)!r}")
            if r is not None:
                return r
    if not signals:
        if any(t.kind in ("all", "allcount") for t in pos):
            r = add(ap, 0.7, "'all' in an approval prompt")
            if r is not None:
                return r
        else:
            rec = [t for t in pos if t.kind == "recommend"]
            if rec and idx.recommended is not None:
                return [idx.recommended], 0.75, f"select {idx.recommended} (recommended)", "asked for the recommended option"
            return None
    if len(signals) > 1:
        return _clarify(0.2, "conflicting signals: " + "; ".join(w for _, w in signals.values()), "conflicting")
    ((opt, (c, why)),) = signals.items()
    if opt == ap:
        if any(t.kind == "neg" for t in act) or negd:
            return _clarify(0.2, "approval mixed with a negation", "conflicting")
        intent = "approve"
    elif opt == rj:
        intent = "reject"
    else:
        intent = f"select {opt}"
    return [opt], c, intent, why
