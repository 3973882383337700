"""Knowledge-base search (aicc.appliance.kb.search): tokens in Chinese, English and both; ranking (the
title counts more); snippets that escape HTML and mark the matched words; the language and
visibility filters; any query, however empty, odd or long; answerable(); and the figures on the
question sets of tests/unit/data/kb_questions.yml over the demo's articles (appliance/kb/seed/).

Measured (82 demo articles; language given, public articles only, as the bot searches):

    set        lang  recall@3       answerable(): right hit / wrong hit   unanswerable -> None
    tuning     zh    35/42 = 0.83   17/42 / 1/42                          8/8
    tuning     en    39/40 = 0.98   28/40 / 2/40                          7/8
    held_out   zh    26/26 = 1.00   18/26 / 1/26                          5/6
    held_out   en    17/24 = 0.71   13/24 / 5/24                          4/6

The "tuning" set was used to choose the search's parameters, answerable()'s thresholds and the
synonym list (appliance/kb/synonyms.yml), so its figures flatter; "held_out" was written after they
were frozen (then two changes: a Chinese query word counts as covered by its characters inside the
article's words, for 开发票 read as 开发 + 票, which cost one held-out zh answer, 19 -> 18; and the
synonyms, written from the tuning set's misses and the trade's vocabulary without looking at the
held-out questions: tuning en recall 31 -> 39, held-out en unchanged at 17 with one wrong answer
fewer, 6 -> 5 - paraphrases beyond a word list need embeddings). The asserted floors sit a little
below these figures.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from aicc.appliance.kb.search import (
    MAX_QUERY_CHARS,
    SNIPPET_CHARS,
    Doc,
    Hit,
    Index,
    Synonyms,
    answerable,
    snippet,
    stem,
    tokens,
)
from aicc.appliance.kb.store import shipped_sets

QUESTIONS = Path(__file__).parent / "data" / "kb_questions.yml"


def doc(id: int, title: str, body: str, **kw: Any) -> Doc:
    fields: dict[str, Any] = {"version": 1, "language": "en", "visibility": "public", **kw}
    return Doc(id=id, title=title, body=body, **fields)


def test_chinese_tokens_are_jieba_words_without_stopwords() -> None:
    assert tokens("我的卡丢了怎么办") == ["卡", "丢"]
    assert tokens("挂失银行卡") == ["挂失", "银行", "银行卡"]  # search mode: the sub-words too
    assert tokens("请问，信用卡怎么还款？") == ["信用", "信用卡", "还款"]
    assert tokens("，。！？……") == [] and tokens("的了吗呢") == []


def test_english_tokens_are_lowercased_stemmed_words_without_stopwords() -> None:
    assert tokens("How do I get my REFUNDS?") == ["refund"]
    assert tokens("The parcel was shipped, then delivered.") == ["parcel", "ship", "deliver"]
    assert tokens("I lost my card; it was stolen") == tokens("lose card steal")
    assert [stem(w) for w in ("fees", "fee", "charges", "charged", "using", "address", "status")] == [
        "fee",
        "fee",
        "charg",
        "charg",
        "use",
        "address",
        "status",
    ]


def test_mixed_and_full_width_text() -> None:
    assert tokens("iPhone 15 的保修期多久") == ["iphon", "15", "保修", "保修期"]
    assert tokens("ＶＩＳＡ卡１２３") == ["visa", "卡", "123"]  # full-width forms fold
    assert tokens("跨行转账limit 5万") == ["跨行", "转账", "limit", "5", "万"]
    assert tokens("") == [] and tokens("   \n\t") == [] and tokens("\x00\x01<>") == []


def test_title_counts_more_than_body_and_ranking_follows_the_words() -> None:
    index = Index.build(
        [
            doc(1, "Opening hours", "Refund questions are answered here, as are all others."),
            doc(2, "Refund policy", "How we pay money back to customers."),
            doc(3, "Delivery", "Parcels arrive in three days."),
        ]
    )
    assert len(index) == 3
    assert [h.doc.id for h in index.search("refund")] == [2, 1]
    assert [h.doc.id for h in index.search("parcels arriving")] == [3]
    assert index.search("nothing matches xyzzy") == []


def test_snippets_escape_html_and_mark_the_words() -> None:
    body = "Intro line. <script>alert('x')</script> Your refund & more arrives in 3 days. Outro."
    [hit] = Index.build([doc(1, "Refunds", body)]).search("refunds arriving")
    assert (
        "<script>" not in hit.snippet and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in hit.snippet
    )
    assert "<mark>refund</mark> &amp; more <mark>arrives</mark>" in hit.snippet
    assert re.sub(r"</?mark>", "", hit.snippet).count("<") == 0


def test_the_snippet_is_the_best_passage_of_a_long_body() -> None:
    filler = "This sentence says nothing of interest to anyone. " * 12
    body = filler + "A lost card is blocked at once when you call us. " + filler
    text = snippet(body, tokens("lost card"))
    plain = re.sub(r"</?mark>", "", text)
    assert "<mark>lost</mark> <mark>card</mark>" in text
    assert len(plain) <= SNIPPET_CHARS + 2 and plain.startswith("…") and plain.endswith("…")
    one_sentence = "word " * 200 + "挂失银行卡" + " word" * 200
    plain = re.sub(r"</?mark>", "", snippet(one_sentence, ["挂失"]))
    assert "挂失" in plain and len(plain) <= SNIPPET_CHARS + 2
    assert snippet("", ["x"]) == ""


def test_language_and_visibility_filters() -> None:
    index = Index.build(
        [
            doc(1, "Lost card", "Report a lost card.", visibility="public"),
            doc(2, "Lost card (agents)", "Check the caller first.", visibility="internal"),
            doc(3, "Lost card draft", "Not reviewed yet.", visibility="draft"),
            doc(4, "挂失银行卡", "银行卡丢失后请立即挂失。", language="zh"),
        ]
    )
    assert {h.doc.id for h in index.search("lost card")} == {1, 2, 3}
    assert [h.doc.id for h in index.search("lost card", visibility=("public",))] == [1]
    assert {h.doc.id for h in index.search("lost card", visibility=("internal", "public"))} == {1, 2}
    assert [h.doc.id for h in index.search("银行卡丢了", language="zh")] == [4]
    assert index.search("银行卡丢了", language="en") == []
    assert index.search("lost card", language="zh") == []
    assert {h.doc.language for h in index.search("银行卡 lost", limit=4)} == {"zh", "en"}  # mixed text


def test_any_query_is_answered_quickly() -> None:
    index = Index.build(
        [doc(1, "Refunds", "Refunds take three days."), doc(2, "退款", "退款三天到账。", language="zh")]
    )
    for query in ("", " ", "???", "的了吗", "\x00", "refund " * 5000, "退款" * 5000, "🙂" * 100):
        start = time.perf_counter()
        hits = index.search(query)
        assert time.perf_counter() - start < 1.0
        assert all(isinstance(h, Hit) for h in hits)
    assert len(tokens(("refund " * 5000)[:MAX_QUERY_CHARS])) == MAX_QUERY_CHARS // 7 + 1
    assert index.search("refund", limit=0) == []
    empty = Index.build([])
    assert len(empty) == 0 and empty.search("refund") == []
    # An article with no words at all is indexed and never found.
    assert Index.build([doc(1, "!!!", "...")]).search("refund") == []


def hit(id: int, score: float, coverage: float) -> Hit:
    return Hit(doc(id, f"title {id}", "body"), score, coverage, "")


def test_answerable_needs_coverage_and_a_margin() -> None:
    assert answerable([]) is None
    assert answerable([hit(1, 9.0, 0.2)]) is None  # holds too little of the question
    assert answerable([hit(1, 9.0, 0.5)]) == hit(1, 9.0, 0.5)
    assert answerable([hit(1, 9.0, 0.5), hit(2, 3.0, 0.5)]) is not None  # clearly ahead
    assert answerable([hit(1, 9.0, 0.5), hit(2, 8.5, 0.5)]) is None  # two articles, about equal
    assert answerable([hit(1, 9.0, 1.0), hit(2, 8.0, 0.5)]) is not None  # close, but holds it all
    assert answerable([hit(1, 9.0, 1.0), hit(2, 8.9, 1.0)]) is None
    assert answerable([hit(1, 9.0, 0.5)], min_coverage=0.6) is None


# The demo's articles and the question sets.


def demo_index() -> tuple[Index, dict[int, str]]:
    docs, keys = [], {}
    for data in shipped_sets().values():
        for item in data["articles"]:
            for language in ("zh", "en"):
                text = item[language]
                n = len(docs) + 1
                docs.append(
                    Doc(
                        n,
                        1,
                        language,
                        text["title"],
                        text["body"],
                        item["visibility"],
                        item["category"],
                        tuple(text.get("tags", [])),
                    )
                )
                keys[n] = item["key"]
    return Index.build(docs), keys


@pytest.fixture(scope="module")
def demo() -> tuple[Index, dict[int, str]]:
    return demo_index()


def measure(index: Index, keys: dict[int, str], questions: dict[str, Any], language: str) -> dict[str, float]:
    """recall@3 and answerable()'s rates for one language of one question set."""
    asked = [q for q in questions["answerable"] if q["lang"] == language]
    found = right = wrong = 0
    for q in asked:
        hits = index.search(q["q"], language=language, visibility=("public",), limit=5)
        found += q["article"] in [keys[h.doc.id] for h in hits[:3]]
        answer = answerable(hits)
        if answer is not None:
            right += keys[answer.doc.id] == q["article"]
            wrong += keys[answer.doc.id] != q["article"]
    unanswerable = [q for q in questions["unanswerable"] if q["lang"] == language]
    declined = sum(
        answerable(index.search(q["q"], language=language, visibility=("public",), limit=5)) is None
        for q in unanswerable
    )
    return {
        "recall@3": found / len(asked),
        "right": right / len(asked),
        "wrong": wrong / len(asked),
        "declined": declined / len(unanswerable),
    }


def test_the_demo_articles_are_bilingual_and_enough() -> None:
    sets = shipped_sets()
    assert set(sets) == {"shop", "bank"}
    items = [item for data in sets.values() for item in data["articles"]]
    assert len(items) >= 30 and len({i["key"] for i in items}) == len(items)
    categories = {c["name"] for data in sets.values() for c in data["categories"]}
    for item in items:
        assert item["category"] in categories and item["visibility"] in ("public", "internal")
        for language in ("zh", "en"):
            assert item[language]["title"] and len(item[language]["body"]) >= 100, item["key"]
    assert any(i["visibility"] == "internal" for i in items)


def test_the_question_sets_name_real_articles() -> None:
    data = yaml.safe_load(QUESTIONS.read_text(encoding="utf-8"))
    keys = {item["key"] for s in shipped_sets().values() for item in s["articles"]}
    for name in ("tuning", "held_out"):
        questions = data[name]
        for q in questions["answerable"]:
            assert q["article"] in keys and q["lang"] in ("zh", "en"), q
        langs = [q["lang"] for q in questions["answerable"]]
        assert langs.count("zh") >= 20 and langs.count("en") >= 20, name
        assert len(questions["unanswerable"]) >= 6
    assert len(data["tuning"]["unanswerable"]) + len(data["held_out"]["unanswerable"]) >= 16


# Floors a little below the figures in the module docstring.
FLOORS = {
    ("tuning", "zh"): {"recall@3": 0.78, "right": 0.36, "wrong": 0.08, "declined": 0.85},
    ("tuning", "en"): {"recall@3": 0.92, "right": 0.65, "wrong": 0.08, "declined": 0.85},
    ("held_out", "zh"): {"recall@3": 0.92, "right": 0.65, "wrong": 0.08, "declined": 0.66},
    ("held_out", "en"): {"recall@3": 0.66, "right": 0.50, "wrong": 0.25, "declined": 0.50},
}


@pytest.mark.parametrize(("name", "language"), sorted(FLOORS))
def test_recall_and_answerable_on_the_question_sets(
    demo: tuple[Index, dict[int, str]], name: str, language: str
) -> None:
    index, keys = demo
    questions = yaml.safe_load(QUESTIONS.read_text(encoding="utf-8"))[name]
    got = measure(index, keys, questions, language)
    floor = FLOORS[(name, language)]
    assert got["recall@3"] >= floor["recall@3"], got
    assert got["right"] >= floor["right"], got
    assert got["wrong"] <= floor["wrong"], got  # a ceiling: answers from the wrong article
    assert got["declined"] >= floor["declined"], got


def test_callers_words_for_the_articles_words() -> None:
    refund = doc(1, "When your refund arrives", "Refunds reach your card within 3 to 7 working days.")
    cancel = doc(2, "Cancelling an order", "You can cancel an order before it ships.")
    package = doc(3, "Oversized items", "A package over 30 kg comes by freight.")
    index = Index.build([refund, cancel, package])
    hit = index.search("when do I get my money back", language="en")[0]
    assert hit.doc.id == 1 and hit.coverage == 1.0  # "money back" is read as refund
    assert "<mark>Refunds</mark>" in hit.snippet
    assert index.search("can I still stop the order", language="en")[0].doc.id == 2
    # an article that uses the caller's own word is found by it, fully covered
    hit = index.search("a package by freight", language="en")[0]
    assert hit.doc.id == 3 and hit.coverage == 1.0
    zh = Index.build([doc(4, "退款到账时间", "退款将在3到7个工作日内退回原支付账户。", language="zh")])
    assert zh.search("退钱要多久", language="zh")[0].coverage == 1.0


def test_a_broken_synonym_list_names_the_phrase() -> None:
    with pytest.raises(ValueError, match="'the of' or 'refund' has no content word"):
        Synonyms.from_groups({"en": [["refund", "the of"]]})
    with pytest.raises(ValueError, match="'money back' is in two groups"):
        Synonyms.from_groups({"en": [["refund", "money back"], ["return", "money back"]]})
    with pytest.raises(ValueError, match="language 'fr'"):
        Synonyms.from_groups({"fr": [["a", "b"]]})
    mine = Synonyms.from_groups({"en": [["parcel", "box"]]})
    assert mine.rewrite(tokens("where is my box"), "en") == ["parcel"]
    assert mine.rewrite(tokens("where is my box"), "zh") == ["box"]  # English phrases, English questions


def test_the_bot_never_sees_internal_articles(demo: tuple[Index, dict[int, str]]) -> None:
    index, keys = demo
    hits = index.search("客诉补偿标准 坐席 优惠券", language="zh", visibility=("public",), limit=10)
    assert "shop-agent-goodwill" not in [keys[h.doc.id] for h in hits]
    hits = index.search("客诉补偿标准 坐席 优惠券", language="zh", limit=10)
    assert keys[hits[0].doc.id] == "shop-agent-goodwill"
