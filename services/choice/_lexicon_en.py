"""English lexicon: entry name → pattern (lower-cased, NFKC-normalised input, ``re.ASCII``).

Entry names are shared with the Japanese lexicon; :mod:`._lexicon` combines
both in one order. ``\\b`` is ASCII, so "okです" keeps a word boundary after
"ok".
"""

from __future__ import annotations

__all__ = ["ENTRIES", "FILLERS", "NW", "NW_VAL", "OW", "OW_VAL"]

_NW_LIST = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]
NW_VAL = {w: i + 1 for i, w in enumerate(_NW_LIST)}
_OW_LIST = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth", "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth", "eighteenth", "nineteenth", "twentieth"]
OW_VAL = {w: i + 1 for i, w in enumerate(_OW_LIST)}

NW = "(?:" + "|".join(sorted(_NW_LIST, key=len, reverse=True)) + ")"
OW = "(?:" + "|".join(sorted(_OW_LIST, key=len, reverse=True)) + ")"

ENTRIES: dict[str, str] = {
    "sarcasm": (
        r"\bas\s+if\b|\byeah\s*,?\s*right\b|\blike\s+i(?:'d|'ll|\s+would|\s+will|\s+could|\s+ever)\b"
        r"|\bin\s+your\s+dreams\b|\bwhen\s+pigs\s+fly\b|\bover\s+my\s+dead\s+body\b|\bfat\s+chance\b"
        r"|\bi\s+wish\b|\bsure\s*,?\s+(?:buddy|pal|jan)\b|\bthat'?ll\s+be\s+the\s+day\b|\bnot\s+in\s+a\s+million\s+years\b"
    ),
    "vague_unknown": (
        r"\b(?:i\s+)?(?:really\s+)?(?:don'?t|do\s+not|dont)\s+(?:really\s+)?know\b|\bdunno\b|\bidk\b"
        r"|\bnot\s+(?:really\s+|quite\s+|too\s+)?sure\b|\bunsure\b|\bno\s+(?:idea|clue)\b"
        r"|\bcan'?t\s+(?:decide|choose|tell)\b|\bcannot\s+(?:decide|choose|tell)\b|\bconfused\b"
    ),
    "vague_delegate": (
        r"\bwhatever(?:\s+you\s+(?:think|want|prefer|like|say))?\b|\bup\s+to\s+you\b|\byou\s+(?:decide|choose|pick)\b"
        r"|\byour\s+(?:call|choice)\b|\bsurprise\s+me\b|\b(?:i\s+)?(?:don'?t|do\s+not)\s+care\b"
        r"|\b(?:it\s+)?(?:doesn'?t|does\s+not)\s+matter\b|\bno\s+preference\b"
        r"|\bany(?:one|thing)?(?:\s+(?:is|will))?\s+(?:fine|ok|okay|works|do|be\s+fine)\b"
        r"|\beither(?:\s+one)?(?:\s+(?:is|will))?(?:\s+(?:fine|ok|okay|works|do))?\b|\bwhichever\b"
    ),
    "vague_noise": r"\bh+m+\b|\bu+m+\b|\bu+h+\b|\berm*\b|\bmeh\b|\bwell\s*,|\blet\s+me\s+(?:think|see)\b",
    "vague_pref": (
        r"\b(?:the\s+)?(?:best|good|nice|right)\s+one\b|\bsomething\s+(?:good|nice|sensible)\b"
        r"|\bthe\s+(?:best|right)\s+(?:option|choice)\b"
    ),
    "recommend": r"\brecommend(?:ed|ation)?\b|\bsuggested\b|\bdefault\b",
    "superlative": r"\bthe\s+most\b|\bmost\b",
    "suggest": r"\b(?:how|what)\s+about\b",
    "correct": (
        r"\bno\s*,?\s*wait\b|\bwait\s*,?\s*no\b|\bi\s+mean\b|\bactually\b|\bon\s+second\s+thoughts?\b|\bscratch\s+that\b"
        r"|\b(?:i'?m\s+|just\s+)?(?:kidding|joking)\b|\bjk\b|\bcorrection\b|\bmake\s+that\b"
    ),
    "hold": (
        r"\bwait(?:\s+a\s+(?:sec(?:ond)?|minute|moment|bit))?\b"
        r"|\bhold\s+on\b|\bhang\s+on\b|\bjust\s+a\s+(?:sec(?:ond)?|minute|moment)\b|\bone\s+(?:sec(?:ond)?|moment|minute)\b"
    ),
    "neg_strong": (
        r"\b(?:absolutely|definitely|certainly|of\s+course|hell)\s+not\b|\bhell\s+no\b|\bno\s+no\b|\bnot\s+really\b"
        r"|\bnever\s*mind\b|\bforget\s+(?:it|about\s+it)\b"
    ),
    "yesneg": (
        r"\bno\s+(?:problems?|worries|prob)\b|\bnot\s+a\s+problem\b|\bwhy\s+not\b|\bnot\s+bad\b|\bof\s+course\b"
        r"|\b(?:i\s+)?(?:don'?t|do\s+not)\s+mind\b|\bno\s+objections?\b"
    ),
    "yes_reluct": r"\bi\s+guess\s+so\b|\bif\s+you\s+must\b",
    "fill": r"\bgo(?:ing)?\s+with\b|\bgo\s+for\b(?!\s+it)|\bi'?d\s+like\b|\bi\s+want\b|\bi'?ll\s+(?:take|go\s+with|pick|choose)\b",
    "question": (
        r"\b(?:what|why|how|which|who|where)(?!ever)\b|\bwhat'?s\b"
        r"|(?:^|(?<=[,.;!、。])|(?<=[,.;!、。] ))(?:is|are|was|does|did|should|would|will|can)\s+(?:it|this|that|they|there|option|the|#|i|we)\b"
        r"|\bare\s+you\s+sure\b|\bdo\s+(?:you|they|we|i)\s+(?:think|recommend|need|have)\b|\bexplain\b|\btell\s+me\b"
        r"|\bmore\s+(?:info|information|details?)\b|\bdifferences?\b|\bmeans?\b|\bmeaning\b"
    ),
    "concern": r"\brisky\b|\bdangerous\b|\bunsafe\b|\bworried\b|\bconcerned?\b",
    "exc_pre": (
        r"\bbut\s+not\b|\bexcept(?:\s+for)?\b|\bexcluding\b|\bexclude\b|\bother\s+than\b|\bbesides\b|\bapart\s+from\b"
        r"|\baside\s+from\b|\bminus\b|\bsave\s+for\b|\bnot\s+including\b|\bleav(?:e|ing)\s+out\b"
    ),
    "cond": r"\bbut\b|\bhowever\b|\bthough\b|\balthough\b",
    "allx": (
        r"\b(?:all|everything|every\s*one|all\s+of\s+them|all\s+(?:the\s+)?options)\s+"
        r"(?:but|except(?:\s+for)?|other\s+than|apart\s+from|aside\s+from|besides|excluding|save|minus)\b"
    ),
    "allcount": rf"\ball\s+(?:of\s+)?(?:the\s+)?(?P<ac_v>\d+|{NW})\b(?:\s+of\s+them)?|\bboth\b(?:\s+of\s+them)?",
    "past": (
        r"\blast\s+time\b|\bpreviously\b|\byesterday\b|\bearlier\b|\bused\s+to\b|\bthe\s+other\s+day\b|\blast\s+week\b"
        r"|\b(?:i|we|you|they|he|she)\s+(?:already\s+)?(?:picked|chose|selected|took|went\s+with|had|did|tried|used|said|ran)\b"
        r"|\b(?:was|were|had\s+been)\b"
    ),
    "neg_yet": r"\bnot\s+(?:yet|now|today|right\s+now|this\s+time)\b|\b(?:maybe\s+)?later\b",
    "neg_pre": (
        r"\b(?:i\s+)?(?:really\s+)?(?:don'?t|do\s+not|doesn'?t|does\s+not|didn'?t|won'?t|will\s+not|wouldn'?t|would\s+not"
        r"|shouldn'?t|should\s+not|can'?t|cannot|never|dont)(?:\s+(?:want|like|need|wanna|choose|pick|select|go\s+with|take))?"
        r"(?:\s+to)?\b|\bno\s+(?:thanks|thank\s+you|way)\b|\bnope\b|\bnah\b|\bnot\b|\bno\b(?!\.\s*\d)"
        r"|\bnone(?:\s+of\s+(?:them|these|those|the\s+options|the\s+above))?\b|\bneither(?:\s+(?:of\s+them|one))?\b|\bnothing\b"
        r"|\binstead\s+of\b|\brather\s+than\b|\banything\s+but\b|\bavoid\b|\bn\b"
    ),
    "compare": r"\bthan\b",
    "neg_rej_en": r"\b(?:reject(?:ed)?|cancel(?:led|ed)?|stop|abort|deny|denied|decline[d]?|refuse[d]?|halt|skip)\b",
    "neg_rej_jp": r"\bng\b",
    "yes_s": (
        r"\b(?:yes|yeah|yea|yep|yup|ya|y|ok|okay|okey|k|kk|sure|approved?|approving|lgtm|go\s+ahead|go\s+for\s+it|do\s+it"
        r"|let'?s\s+do\s+it|let'?s\s+go|run\s+it|ship\s+it|proceed|execute\s+it|execute|continue|confirm(?:ed)?|accept(?:ed)?"
        r"|agreed?|affirmative|sounds\s+good|looks\s+good|all\s+right|alright|absolutely|definitely|certainly|go|run|apply)\b"
    ),
    "yes_w": r"\b(?:please(?:\s+do)?|fine|good|great|perfect|cool|nice|thanks|thank\s+you)\b",
    "all": (
        r"\ball\s+of\s+(?:them|it|these|those|the\s+options|the\s+above)\b|\ball\s+(?:the\s+)?options\b|\beverything\b"
        r"|\bevery\s*(?:one|option|thing)\b|\beach\s+(?:one|of\s+them)\b|\bthe\s+whole\s+(?:thing|plan|lot)\b|\ball\b"
    ),
    "reason_pre": r"\bbecause\b|\bsince\b|\bcause\b|\bcuz\b",
    "condk_pre": (
        r"\bas\s+long\s+as\b|\bprovided(?:\s+that)?\b|\bonly\s+if\b|\bon\s+(?:the\s+)?condition(?:\s+that)?\b|\bmake\s+sure\b"
        r"|\bbe\s+sure\s+to\b|\bif\b|\bunless\b|\band\s+please\b|\bwith\b"
    ),
    "condk_seq": r"\band\s+(?:also|then)\b|\balso\b|\bthen\b|\bplus\b",
    "without": r"\bwithout\b",
    "only": r"\bonly\b|\bjust\b|\bsolely\b",
    "rest": r"\bthe\s+rest\b|\brest\b|\bthe\s+others\b|\bothers\b|\bthe\s+other\s+ones\b|\bremaining(?:\s+ones)?\b",
    "hedge": r"\bmaybe\b|\bperhaps\b|\bprobably\b|\bi\s+guess\b|\bi\s+suppose\b|\bkinda\b|\bsort\s+of\b|\bmight\b",
    "same": (
        r"\bsame\s+as\s+(?:before|last\s+time|usual)\b|\bthe\s+same(?:\s+one|\s+as\s+before)?\b|\bas\s+usual\b"
        r"|\bas\s+before\b|\blike\s+(?:before|last\s+time)\b"
    ),
    "ordfrom_en": (
        r"\b(?:the\s+)?(?P<ofe_k>second|2nd|third|3rd)(?:\s+(?:to|from)\s+(?:the\s+)?|\s*-\s*|\s+)last\b"
        r"|\bnext[\s-]+to[\s-]+last\b|\bpenultimate\b"
    ),
    "firstn_en": rf"\b(?:the\s+)?(?:first|top|leading)\s+(?P<fne_v>\d+|{NW})\b(?!\s*(?:st|nd|rd|th)\b)",
    "lastn_en": rf"\b(?:the\s+)?(?:last|bottom|final)\s+(?P<lne_v>\d+|{NW})\b",
    "ord_en": (
        rf"\b(?P<oe_the>the\s+)?(?:very\s+)?(?P<oe_w>last|final|latter|former|middle|center|centre|{OW})\b"
        r"(?P<oe_one>\s+(?:one|option|choice))?"
    ),
    "numword": rf"(?P<nw_p>(?:options?|choices?|numbers?|no\.|#|items?|plans?)\s*)?\b(?P<nw_d>{NW})\b",
}

# words that are part of the grammar but carry no decision (removed before the
# "is everything explained?" check)
FILLERS = (
    r"\b(?:i'?d|i'?ll|i'?m|i'?ve|i|me|my|we|us|let'?s|let|you|your|please|pls|plz|thanks|thank|thx|ty|ok|okay|sure|yes|yeah"
    r"|the|a|an|option|options|choice|choices|number|numbers|one|ones|item|items|go|going|with|want|wanna|would|like"
    r"|prefer|rather|choose|pick|select|take|use|do|run|execute|try|is|are|be|it'?s|its|it|that|this|these|those|them"
    r"|of|for|and|then|so|just|only|fine|good|great|best|better|think|guess|will|can|could|should|as|well|also|too"
    r"|to|on|in|at|now|answer|here|there|they|way|from|oh|ah|right|alright|lets|gonna|sounds|looks|works|really|time|am|mine"
    r"|hmm|um|uh|er|erm|okay|then|one|go|ahead|for|now|this|time|myself|personally|honestly|definitely|surely|kindly)\b"
)
