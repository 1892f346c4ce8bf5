"""Correctness oracle for the choice parser's pattern path: record ``analyse()`` over a generated corpus, compare later.

For changes to ``tandem.services.choice`` that must not change any result (speed work, refactors):
generate a corpus once, record the results at the commit you start from, then compare after every
change. The corpus (~114k (answer, options) pairs, seeded) is built from the string constants and
``ChoiceContext(...)`` calls in ``tests/unit/test_choice_*.py``, ``bench/choice.py``'s answer sets,
and systematic variations: joins of two to four answers with connectives, wrappers (negation,
question, sarcasm, past reference, conditions), fillers, character noise, case and width variants,
and answers up to 4,000 characters, over the tests' option lists and 60 random ones. Each item records
the whole :class:`~tandem.services.choice.Analysis` of ``analyse(answer, context)`` and of
``analyse(answer, context, lane=False)`` (the fast paths off): every result field, the refused
options, the guards and the unexplained words; an exception is recorded as such.

Examples
--------
::

    .venv/bin/python bench/choice_oracle.py --dir /tmp/oracle gen       # the corpus (inputs only)
    .venv/bin/python bench/choice_oracle.py --dir /tmp/oracle record    # results of the code as it is now
    # ... change services/choice ...
    .venv/bin/python bench/choice_oracle.py --dir /tmp/oracle compare   # exit 1 and the first differences, if any
"""
from __future__ import annotations

import argparse
import ast
import glob
import itertools
import json
import pathlib
import random
import sys
import time

import msgspec
from tandem.messages.choice import ChoiceContext
from tandem.services.choice import analyse

ROOT = pathlib.Path(__file__).resolve().parents[1]
TESTS = str(ROOT / "tests" / "unit" / "test_choice_*.py")
D = ""  # the working directory, with a trailing slash (--dir)


def _strings():
    out = set()
    for f in glob.glob(TESTS):
        tree = ast.parse(open(f).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and 0 < len(node.value) <= 200:
                out.add(node.value)
    return sorted(out)


def _contexts_from_tests():
    out = []
    for f in glob.glob(TESTS):
        tree = ast.parse(open(f).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ChoiceContext":
                try:
                    kw = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
                    out.append(ChoiceContext(**kw))
                except Exception:  # noqa: BLE001 - a call whose arguments are not literals is left out
                    pass
    return out


LABELS_EN = ["Lint", "Test", "Build", "Package", "Deploy", "Create the file", "Run in safe mode", "Full run",
             "Keep the logs", "Delete the logs", "Python 3.11", "Python 3.12", "Approve", "Reject", "Request changes",
             "Skip", "Run the migrations", "Fast", "Safe (recommended)", "Go", "Option", "and", "only", "maybe", "not",
             "x", "y", "z", "a", "b", "Quick", "Careful", "Full", "Cancel", "Yes", "No", "Backup first", "Rollback",
             "Use default", "Continue", "Abort", "Edit the plan", "v2 release", "3 files"]
LABELS_JA = ["ファイル作成", "安全モード実行", "完全実行", "ログ確認", "バックアップ", "承認", "却下", "修正要求", "最小構成",
             "標準構成（推奨）", "全部入り", "はい", "いいえ", "実行", "代替案選択", "詳細確認", "A案", "B案", "C案", "続ける",
             "番目のやつ", "設定変更", "中止", "テスト実行", "デプロイ", "ロールバック"]
DESCS = ["Skip the slow checks", "Take a backup first, then apply", "Apply everything including migrations",
         "プランをそのまま実行", "プランを実行しない", "プランの一部修正", "opt in", "個目", "tap", "the safest choice",
         "fastest but risky", "推奨", "default", "ログを残す", "全部消す", ""]


def _random_context(rng):
    n = rng.randint(2, 6)
    pool = LABELS_EN + LABELS_JA
    labels = rng.sample(pool, n)
    descs = [rng.choice(DESCS) for _ in range(n)] if rng.random() < 0.3 else []
    kind = "approval" if rng.random() < 0.25 else "options"
    risk = rng.choice(["low", "medium", "high", "critical"])
    prev = [rng.choice(labels + ["2", "option 1"])] if rng.random() < 0.1 else []
    return ChoiceContext(available_options=labels, option_descriptions=descs, kind=kind, risk_level=risk,
                         previous_choices=prev)


JOINS = [", ", " and ", "、", "。", " but ", "じゃなくて", " ", "; ", "けど、", " then ", "! ", "? ", " or ", "か",
         " - ", "...", "と", " because ", "ので", " actually ", "やっぱり", " no wait ", "\n", "　"]
WRAP = ["not {}", "{}じゃない", "{}?", "{}？", "as if {}", "yeah right, {}", "{}なわけない", "last time {}",
        "前回は{}だった", "maybe {}", "{}かな", "I don't want {}", "{}はやめて", "except {}", "{}以外", "better than {}",
        "{}より", "actually {}", "やっぱり{}", "{} please", "{}でお願いします", "\"{}\"", "({})", "「{}」", "{}!!",
        "hmm, {}", "うーん、{}", "well, {}", "I'd go with {}", "{} but keep the logs", "{}、ただしバックアップを取ってから",
        "if {}", "{} then deploy", "without {}", "{} because it is faster", "{}だから", "{}てから", "just kidding, {}",
        "don't {}", "never {}", "{}しないで", "is {} ok?", "what about {}", "{} - no", "no, {}", "yes, {}", "はい、{}"]
FILLERS = ["um ", "uh, ", "えーと、", "あの、", "so ", "ok ", "I think ", "えっと", "well ", "like, ", ""]
NOISE = list("0123456789!?.,、。・-–—~〜()[]「」『』#+/&%*:;'\"…①②③④⑤❶➀ＡＢ１２３ 　\t\ue000é漢字カナひらがなabcxyz")


def _bench_answers():
    sys.path.insert(0, str(ROOT / "bench"))
    import choice as bench
    out = [a for a, _ in bench.short_answers()] + [a for a, _ in bench.multi_answers()]
    ctxs = [bench.JA, bench.EN, bench.APPROVAL]
    clauses = [f"{c.format(n=n, m=m)}, {d}" for (n, m), c, d in
               itertools.product(itertools.permutations(range(1, 6), 2), bench._CLAUSE_EN, bench._COND_EN)]
    longs = []
    for length in (50, 100, 250, 500, 1000, 2000, 4000):
        for k in range(8):
            text, i = "", k
            while len(text) < length:
                text += clauses[i % len(clauses)] + ". "
                i += 7
            longs.append(text[:length])
    return out, ctxs, longs


def gen():
    rng = random.Random(13)
    strings = _strings()
    bench_ans, bench_ctx, longs = _bench_answers()
    base = sorted(set(strings + bench_ans))
    fixed_ctx = _contexts_from_tests() + bench_ctx
    # dedupe contexts
    seen = {}
    for c in fixed_ctx:
        seen.setdefault(msgspec.json.encode(c), c)
    ctxs = list(seen.values())
    ctxs += [_random_context(rng) for _ in range(60)]
    nfixed = len(seen)
    items = []
    # 1. every base answer with each fixed context
    for a in base:
        for ci in range(nfixed):
            items.append((a, ci))
    # 2. base answers with random contexts
    for a in base:
        for _ in range(3):
            items.append((a, rng.randrange(len(ctxs))))
    short = [a for a in base if len(a) <= 40]

    def pick():
        return rng.choice(short)
    # 3. joins of two/three
    for _ in range(30000):
        k = rng.choice([2, 2, 2, 3, 4])
        parts = [pick() for _ in range(k)]
        a = parts[0]
        for p in parts[1:]:
            a += rng.choice(JOINS) + p
        items.append((a, rng.randrange(len(ctxs))))
    # 4. wrappers and fillers
    for _ in range(20000):
        a = pick()
        for _ in range(rng.choice([1, 1, 2])):
            a = rng.choice(WRAP).format(a)
        if rng.random() < 0.4:
            a = rng.choice(FILLERS) + a
        if rng.random() < 0.2:
            a = a + rng.choice(JOINS) + pick()
        items.append((a, rng.randrange(len(ctxs))))
    # 5. noise
    for _ in range(15000):
        a = list(pick())
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            pos = rng.randint(0, len(a))
            if op < 0.5:
                a.insert(pos, rng.choice(NOISE))
            elif op < 0.75 and a:
                del a[min(pos, len(a) - 1)]
            elif a:
                a[min(pos, len(a) - 1)] = rng.choice(NOISE)
        a = "".join(a)
        if rng.random() < 0.3:
            a = rng.choice(WRAP).format(a)
        items.append((a, rng.randrange(len(ctxs))))
    # 6. case / width variants
    for _ in range(5000):
        a = pick()
        r = rng.random()
        a = a.upper() if r < 0.3 else a.title() if r < 0.5 else "  " + a + "  "
        items.append((a, rng.randrange(len(ctxs))))
    # 7. long answers
    for a in longs:
        for ci in range(len(bench_ctx)):
            items.append((a, nfixed - len(bench_ctx) + ci))
    for _ in range(800):
        target = rng.choice([100, 300, 600, 1200, 2500, 4000])
        a = ""
        while len(a) < target:
            p = pick()
            if rng.random() < 0.3:
                p = rng.choice(WRAP).format(p)
            a += p + rng.choice(JOINS)
        items.append((a[:target], rng.randrange(len(ctxs))))
    # 8. bench answers with all bench contexts
    for a in bench_ans:
        for ci in range(len(bench_ctx)):
            items.append((a, nfixed - len(bench_ctx) + ci))
    with open(D + "contexts.json", "wb") as f:
        f.write(msgspec.json.encode(ctxs))
    with open(D + "corpus.jsonl", "w") as f:
        for a, ci in items:
            f.write(json.dumps([a, ci], ensure_ascii=False) + "\n")
    print(f"{len(items)} items, {len(ctxs)} contexts ({nfixed} fixed), {len(base)} base answers")


def _enc(o):
    r = o.result
    return [None if r is None else json.loads(msgspec.json.encode(r)), sorted(o.refused), list(o.guards),
            list(o.unexplained)]


def run(out_path=None, compare=False, every=1):
    ctxs = msgspec.json.decode(open(D + "contexts.json", "rb").read(), type=list[ChoiceContext])
    items = [json.loads(line) for line in open(D + "corpus.jsonl")]
    ref = open(D + "ref.jsonl") if compare else None
    out = open(out_path, "w") if out_path else None
    diffs = 0
    t0 = time.time()
    for i, (a, ci) in enumerate(items):
        c = ctxs[ci]
        try:
            x = _enc(analyse(a, c))
        except Exception as e:
            x = ["EXC", repr(e)]
        try:
            y = _enc(analyse(a, c, lane=False))
        except Exception as e:
            y = ["EXC", repr(e)]
        line = json.dumps([x, y], ensure_ascii=False, sort_keys=True)
        if out:
            out.write(line + "\n")
        if ref:
            r = ref.readline().rstrip("\n")
            if r != line:
                diffs += 1
                if diffs <= 10:
                    print("DIFF", i, repr(a)[:200], ci)
                    print("  ref:", r[:600])
                    print("  new:", line[:600])
    print(f"{len(items)} items in {time.time() - t0:.1f}s; {diffs} differences" if compare
          else f"{len(items)} items recorded in {time.time() - t0:.1f}s")
    return diffs


def main() -> None:
    global D
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True, type=pathlib.Path,
                        help="where the corpus, its contexts and the recorded results are kept")
    parser.add_argument("step", choices=["gen", "record", "compare"],
                        help="gen: build the corpus; record: store the current results; compare: check against them")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    D = str(args.dir) + "/"
    if args.step == "gen":
        gen()
    elif args.step == "record":
        run(D + "ref.jsonl")
    else:
        sys.exit(1 if run(compare=True) else 0)


if __name__ == "__main__":
    main()
