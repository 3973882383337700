"""Knowledge-base search: jieba tokens and BM25 (bm25s), ranked, with highlighted snippets. Pure: no
database and no I/O; jieba loads its dictionary (about 0.7 s) on the first Chinese text only.

- `tokens(text)`: the content words of a text. Chinese runs are cut by jieba in search mode (a long
  word also yields its dictionary sub-words: 信用卡 -> 信用, 信用卡); Latin letters and digits are
  lowercased words, English ones lightly stemmed (refunds, refunded -> refund); stopwords (zh and en),
  punctuation and spaces are dropped. Full-width forms are folded (NFKC), so mixed text works.
- `Index.build(docs)` indexes articles (the title counts twice, then the body and the tags); beside
  the words, every Chinese character is indexed once more as its own term, so "卡" in a question
  still finds 银行卡 in an article (BM25's IDF keeps common characters cheap).
- `Index.search(query, ...)` -> `Hit`s best first, each with its BM25 score, its coverage (the share
  of the question's distinct content words that occur in the article: a Chinese word occurs when
  the article's text contains it) and a snippet: the best passage of <= SNIPPET_CHARS characters,
  HTML-escaped, the matched words in <mark>..</mark>.
- `answerable(hits)`: the hit a bot may answer from, or None ("I don't know" beats a made-up answer).
  The rules and their figures were measured on tests/unit/data/kb_questions.yml (see
  test_kb_search.py).
"""

from __future__ import annotations

import html
import logging
import math
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

Language = Literal["zh", "en"]
Visibility = Literal["draft", "internal", "public"]
LANGUAGES: tuple[Language, ...] = ("zh", "en")
VISIBILITIES: tuple[Visibility, ...] = ("draft", "internal", "public")

MAX_QUERY_CHARS = 500  # longer queries are cut here: a question, not a document
SNIPPET_CHARS = 160
TITLE_WEIGHT = 2  # title words are indexed this many times
# answerable(), measured on tests/unit/data/kb_questions.yml (set "tuning"): the top hit holds at
# least MIN_COVERAGE of the question's content words, and the next other article scores below
# AMBIGUOUS_SCORE_RATIO of it (below CLOSE_SCORE_RATIO when the top one holds HIGH_COVERAGE).
MIN_COVERAGE = 0.4
AMBIGUOUS_SCORE_RATIO = 0.75
HIGH_COVERAGE = 0.7
CLOSE_SCORE_RATIO = 0.95

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_RUNS = re.compile(rf"([{_CJK}]+)|([0-9a-z\u00df-\u024f]+)")
# Latin words as they stand in the original text (for highlights): ASCII and full-width forms.
_LATIN_WORD = re.compile(r"[0-9A-Za-z\u00c0-\u024f\uff10-\uff19\uff21-\uff3a\uff41-\uff5a]+")
_NEWLINES = re.compile(r"\s*\n\s*")
_SENTENCE_END = re.compile(r"[。！？!?；;\n]+|\.(?=\s|$)")


def _wordlist(text: str) -> frozenset[str]:
    return frozenset(text.split())


STOPWORDS_ZH = _wordlist(
    """
    的 了 吗 呢 吧 啊 呀 哦 嘛 么 啦 呗 哈 嗯 喂 之 其 而 与 及 和 跟 或 或者 也 都 就 还 又 再 才 很 太 更 最
    我 你 您 他 她 它 我们 你们 他们 她们 咱们 自己 人家 大家 这 那 这个 那个 这些 那些 这样 那样
    这里 那里 这儿 那儿
    是 在 有 把 被 给 让 对 从 到 向 往 于 为 以 将 用 着 过 得 地 个 些 一 一下 一个 一些 一点 有点 点
    怎么 怎样 怎么样 怎么办 如何 什么 啥 为什么 为啥 哪 哪里 哪儿 哪个 哪些 多少 多久 几 谁 是否 是不是 有没有
    请问 请 麻烦 您好 你好 谢谢 可以 可不可以 能 能不能 能否 可能 想 想要 要 需要 会 该 应该 得 吗 行 行不行
    不 没 没有 不是 但 但是 可是 如果 因为 所以 然后 已经 现在 刚 刚刚 刚才 时候 一直 还是 就是 只是 总是 又是
    下 上 里 中 后 前 呃 嘛 啊 哎 诶
    说 讲 问 问问 知道 告诉 帮 帮我 帮忙 弄 搞 搞定 东西 事 事情 情况 问题 一样 其实 根本 到底 究竟
    真的 好像 感觉 觉得 以为 总 老 挺 蛮 特别 非常 比较 应该 好 好的 行吗 对吗 嗯嗯 那么 这么 怎么回事 咋 咋办
    """
)
STOPWORDS_EN = _wordlist(
    """
    a about above after again against all am an and any are aren as at be because been before being below
    between both but by can cannot could couldn did didn do does doesn doing don down during each few for
    from further had hadn has hasn have haven having he her here hers herself him himself his how i if in
    into is isn it its itself just me more most my myself no nor not now of off on once only or other our
    ours ourselves out over own same she should shouldn so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was wasn we were weren
    what when where which while who whom why will with won would wouldn you your yours yourself yourselves
    s t d ll m re ve im ive id please hi hello thanks thank want wanted need get got getting still also yet
    really one ok okay something anything way
    think know tell help let able like likely maybe perhaps actually thing things stuff someone somebody
    anyone anybody somewhere anywhere everything happen happens happened happening going gonna wanna
    kind sort lot lots bit guys hey yes yeah sure right well even ever much many every
    """
)

_jieba_lock = threading.Lock()
_jieba: Any = None


def _segmenter() -> Any:
    """A private jieba Tokenizer (the global one may be configured by others), loaded once."""
    global _jieba  # noqa: PLW0603 - one lazily loaded dictionary per process
    if _jieba is None:
        with _jieba_lock:
            if _jieba is None:
                import jieba

                logging.getLogger("jieba").setLevel(logging.WARNING)  # no "Building prefix dict" noise
                tokenizer = jieba.Tokenizer()
                tokenizer.initialize()
                _jieba = tokenizer
    return _jieba


def _normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


# Common irregular verb forms -> the base form (then stemmed like any word).
_IRREGULAR = {
    "bought": "buy",
    "brought": "bring",
    "came": "come",
    "did": "do",
    "done": "do",
    "forgot": "forget",
    "forgotten": "forget",
    "found": "find",
    "gave": "give",
    "given": "give",
    "gone": "go",
    "went": "go",
    "had": "have",
    "has": "have",
    "held": "hold",
    "kept": "keep",
    "knew": "know",
    "known": "know",
    "left": "leave",
    "lost": "lose",
    "made": "make",
    "meant": "mean",
    "met": "meet",
    "paid": "pay",
    "put": "put",
    "said": "say",
    "says": "say",
    "saw": "see",
    "seen": "see",
    "sent": "send",
    "sold": "sell",
    "spent": "spend",
    "stole": "steal",
    "stolen": "steal",
    "took": "take",
    "taken": "take",
    "told": "tell",
    "thought": "think",
    "understood": "understand",
    "won": "win",
    "wrote": "write",
    "written": "write",
    "broke": "break",
    "broken": "break",
    "chose": "choose",
    "chosen": "choose",
    "drew": "draw",
    "drawn": "draw",
    "fell": "fall",
    "fallen": "fall",
    "began": "begin",
    "begun": "begin",
    "shown": "show",
    "withdrew": "withdraw",
    "withdrawn": "withdraw",
}


def stem(word: str) -> str:
    """A light English stemmer (common irregular verbs, suffixes s/es/ies/ed/ing, a final e, a doubled
    consonant): enough for refunds/refunded/refunding -> refund, charge/charges/charged -> charg,
    shipping -> ship, lost -> los(e)."""
    if not word.isascii() or not word.isalpha():
        return word
    w = _IRREGULAR.get(word, word)
    if len(w) <= 3:
        return w
    for suffix, repl in (("ies", "y"), ("ied", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if not w.endswith(suffix):
            continue
        rest = w[: len(w) - len(suffix)] + repl
        if suffix in ("ing", "ed"):
            if not any(c in "aeiouy" for c in rest):
                break  # thing, bring, red: no suffix
            if len(rest) == 2:
                rest += "e"  # using, used -> use
        if suffix == "s" and w.endswith(("ss", "us", "is")):
            break  # address, status, this
        if len(rest) >= 3:
            w = rest
            break  # else a shorter suffix may fit: fees -> fee, not fe
    if w.endswith("e") and len(w) > 3:
        w = w[:-1]
    if len(w) >= 4 and w[-1] == w[-2] and w[-1] not in "lsz" and w[-1].isalpha():
        w = w[:-1]
    return w


def _latin_token(word: str) -> str | None:
    if word in STOPWORDS_EN:
        return None
    token = stem(word) if word.isalpha() else word
    return None if token in STOPWORDS_EN else token  # done -> do, gets -> get


def _cut(run: str, *, spans: bool = False) -> Iterator[str]:
    seg = _segmenter()
    for word in seg.cut(run, HMM=False) if spans else seg.cut_for_search(run, HMM=False):
        if word not in STOPWORDS_ZH:
            yield word


def tokens(text: str, *, spans: bool = False) -> list[str]:
    """The content words of `text`, in order (repeats kept): jieba's search mode (a long word and
    the dictionary words inside it: 开发票, 开发, 发票), or with spans its plain cut (开发票 only)."""
    out: list[str] = []
    for m in _RUNS.finditer(_normalize(text)):
        cjk, latin = m.group(1), m.group(2)
        if cjk:
            out.extend(_cut(cjk, spans=spans))
        else:
            token = _latin_token(latin)
            if token is not None:
                out.append(token)
    return out


def _chars(words: Iterable[str]) -> list[str]:
    """The single Chinese characters of multi-character words (the index's extra terms)."""
    return [c for w in words if len(w) > 1 and _is_cjk(w) for c in w if c not in STOPWORDS_ZH]


def _is_cjk(token: str) -> bool:
    return bool(token) and token[0] >= "\u3400" and not token[0].isascii()


Rule = tuple[tuple[str, ...], tuple[str, ...]]  # (what callers say, the articles' word), as tokens


@dataclass(frozen=True)
class Synonyms:
    """The trade's other names for the articles' words (appliance/kb/synonyms.yml): a question is
    searched as if it used the articles' word ("money back" -> refund, 退钱 -> 退款)."""

    rules: dict[Language, tuple[Rule, ...]]  # longest phrase first
    span_rules: dict[Language, tuple[Rule, ...]]  # the same, cut as tokens(spans=True) cuts

    @classmethod
    def from_groups(cls, groups: dict[str, list[list[str]]]) -> Synonyms:
        """Groups per language, the articles' word first. A phrase with no content word (all
        stopwords) or in two groups is a mistake in the list: ValueError naming it."""
        rules: dict[Language, tuple[Rule, ...]] = {}
        span_rules: dict[Language, tuple[Rule, ...]] = {}
        for language, listed in groups.items():
            if language not in LANGUAGES:
                raise ValueError(f"synonyms: language {language!r} is not one of {', '.join(LANGUAGES)}")
            for spans, out in ((False, rules), (True, span_rules)):
                found: dict[tuple[str, ...], tuple[str, ...]] = {}
                for group in listed:
                    canon = tuple(tokens(group[0], spans=spans))
                    for phrase in group[1:]:
                        said = tuple(tokens(phrase, spans=spans))
                        if not said or not canon:
                            raise ValueError(
                                f"synonyms ({language}): {phrase!r} or {group[0]!r} has no content word"
                            )
                        if found.get(said, canon) != canon:
                            raise ValueError(f"synonyms ({language}): {phrase!r} is in two groups")
                        if said != canon:
                            found[said] = canon
                out[language] = tuple(sorted(found.items(), key=lambda r: -len(r[0])))
        return cls(rules, span_rules)

    def rewrite(self, words: list[str], language: Language | None, *, spans: bool = False) -> list[str]:
        """`words` with every phrase of the list replaced by the articles' word, longest match first."""
        table = self.span_rules if spans else self.rules
        rules = [r for lang in LANGUAGES if language in (None, lang) for r in table.get(lang, ())]
        out: list[str] = []
        i = 0
        while i < len(words):
            for said, canon in rules:
                if tuple(words[i : i + len(said)]) == said:
                    out.extend(canon)
                    i += len(said)
                    break
            else:
                out.append(words[i])
                i += 1
        return out


_shipped: Synonyms | None = None


def shipped_synonyms() -> Synonyms:
    """appliance/kb/synonyms.yml, read once."""
    global _shipped  # noqa: PLW0603 - one list per process
    if _shipped is None:
        import yaml

        _shipped = Synonyms.from_groups(yaml.safe_load((Path(__file__).parent / "synonyms.yml").read_text()))
    return _shipped


@dataclass(frozen=True)
class Doc:
    id: int  # article id (stable across versions)
    version: int
    language: Language
    title: str
    body: str
    visibility: Visibility
    category: str = ""
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Hit:
    doc: Doc
    score: float  # BM25 score
    coverage: float  # share (0..1) of the query's distinct content tokens that occur in the article
    snippet: str  # the best passage (<= ~160 chars), matched terms in <mark>..</mark>, HTML-escaped


@dataclass(frozen=True)
class _Entry:
    words: frozenset[str]  # the article's content words (title, body, tags)
    text: str  # normalized title + body + tags, for "a Chinese word occurs in the article"


class _Part:
    """The BM25 model of one language's articles; `rows` are their positions in Index._docs."""

    def __init__(self, rows: list[int], corpus: list[list[str]]) -> None:
        import bm25s

        self.rows = np.asarray(rows, dtype=np.int64)
        self.model: Any = None
        if any(corpus):  # bm25s needs one word at least
            self.model = bm25s.BM25(k1=1.2, b=0.75, method="lucene", backend="numpy", csc_backend="numpy")
            self.model.index(corpus, show_progress=False)

    def scores(self, terms: list[str]) -> np.ndarray | None:
        if self.model is None:
            return None
        ids = self.model.get_tokens_ids(terms)
        if not ids:
            return None
        return np.asarray(self.model.get_scores_from_ids(ids), dtype=np.float64)


class Index:
    """BM25 over articles, one model per language (each language has its own term statistics);
    `search` filters by language and visibility."""

    def __init__(
        self, docs: list[Doc], entries: list[_Entry], parts: dict[str, _Part], synonyms: Synonyms
    ) -> None:
        self._docs = docs
        self._synonyms = synonyms
        self._entries = entries
        self._parts = parts
        self._visibility = np.array([VISIBILITIES.index(d.visibility) for d in docs], dtype=np.int8)
        self._df: dict[str, Counter[str]] = {lang: Counter() for lang in LANGUAGES}
        for doc, entry in zip(docs, entries, strict=True):
            self._df[doc.language].update(entry.words)

    @classmethod
    def build(cls, docs: Iterable[Doc], synonyms: Synonyms | None = None) -> Index:
        """The index of `docs`; questions are read with `synonyms` (None: the shipped list)."""
        listed = [d for d in docs if d.language in LANGUAGES]
        corpora: dict[str, tuple[list[int], list[list[str]]]] = {lang: ([], []) for lang in LANGUAGES}
        entries: list[_Entry] = []
        for row, doc in enumerate(listed):
            title, body = tokens(doc.title), tokens(doc.body)
            tags = [t for tag in doc.tags for t in tokens(tag)]
            words = [*title, *body, *tags]
            rows, corpus = corpora[doc.language]
            rows.append(row)
            corpus.append(title * TITLE_WEIGHT + body + tags + _chars(words))
            text = _normalize(f"{doc.title}\n{doc.body}\n{' '.join(doc.tags)}")
            entries.append(_Entry(frozenset(words), text))
        parts = {lang: _Part(rows, corpus) for lang, (rows, corpus) in corpora.items() if rows}
        return cls(listed, entries, parts, synonyms or shipped_synonyms())

    def __len__(self) -> int:
        return len(self._docs)

    @property
    def docs(self) -> list[Doc]:
        return list(self._docs)

    def search(
        self,
        query: str,
        *,
        language: Language | None = None,
        visibility: Collection[Visibility] | None = None,
        limit: int = 5,
    ) -> list[Hit]:
        """The best `limit` articles for `query` (cut at MAX_QUERY_CHARS) of `language` (None: both)
        and of the given visibilities (None: all), best first; [] when nothing matches."""
        if limit <= 0 or not isinstance(query, str):
            return []
        said = tokens(query[:MAX_QUERY_CHARS])
        if not said:
            return []
        words = self._synonyms.rewrite(said, language)
        # The caller's own words count too: an article may use them.
        terms = list(dict.fromkeys([*words, *said, *_chars(words)]))
        codes = (
            None if visibility is None else [VISIBILITIES.index(v) for v in visibility if v in VISIBILITIES]
        )
        found: list[tuple[float, int]] = []
        for lang, part in self._parts.items():
            if language is not None and lang != language:
                continue
            scores = part.scores(terms)
            if scores is None:
                continue
            keep = scores > 0
            if codes is not None:
                keep &= np.isin(self._visibility[part.rows], codes)
            picked = np.flatnonzero(keep)
            if picked.size > limit:
                picked = picked[np.argpartition(-scores[picked], limit - 1)[:limit]]
            found += [(float(scores[i]), int(part.rows[i])) for i in picked]
        found.sort(key=lambda f: (-f[0], f[1]))
        cut = tokens(query[:MAX_QUERY_CHARS], spans=True)
        readings = [
            (list(dict.fromkeys(w)), list(dict.fromkeys(c)) or list(dict.fromkeys(w)))
            for w, c in ((said, cut), (words, self._synonyms.rewrite(cut, language, spans=True)))
        ]
        return [self._hit(row, score, readings) for score, row in found[:limit]]

    def _occurs(self, entry: _Entry, word: str) -> bool:
        return word in entry.text if _is_cjk(word) else word in entry.words

    def _hit(self, row: int, score: float, readings: list[tuple[list[str], list[str]]]) -> Hit:
        """`readings`: (words, spans) of the question as said and as rewritten with synonyms; its
        coverage is that of the reading the article covers best."""
        doc, entry = self._docs[row], self._entries[row]
        coverage, found = -1.0, []
        for words, spans in readings:
            occurring = [w for w in words if self._occurs(entry, w)]
            covered = sum(_covered(span, occurring) for span in spans) / len(spans)
            if covered > coverage:
                coverage, found = covered, occurring
        df = self._df[doc.language]
        n = len(self._parts[doc.language].rows)

        def idf(word: str) -> float:
            return math.log(1 + n / (1 + df.get(word, 0)))

        return Hit(doc, score, coverage, snippet(doc.body, found, idf))


def _covered(span: str, found: list[str]) -> float:
    """How much of one query word the article holds: a Latin word all or nothing; a Chinese word by
    its characters inside found words (开发票 is 2/3 covered by an article that says 发票, however
    jieba cut the query: 开发 + 票 is not what a caller asking for an invoice means)."""
    if not _is_cjk(span):
        return 1.0 if span in found else 0.0
    chars = [False] * len(span)
    for word in found:
        if not _is_cjk(word):
            continue
        start = span.find(word)
        while start >= 0:
            chars[start : start + len(word)] = [True] * len(word)
            start = span.find(word, start + 1)
    return sum(chars) / len(span)


def _matches(text: str, words: Iterable[str]) -> list[tuple[int, int, str]]:
    """(start, end, word) of every occurrence of `words` in the original `text`."""
    out: list[tuple[int, int, str]] = []
    latin = {w for w in words if not _is_cjk(w)}
    for word in words:
        if _is_cjk(word):
            start = text.find(word)
            while start >= 0:
                out.append((start, start + len(word), word))
                start = text.find(word, start + len(word))
    if latin:
        for m in _LATIN_WORD.finditer(text):
            token = _latin_token(_normalize(m.group()))
            if token in latin:
                out.append((m.start(), m.end(), token))
    return sorted(out)


def _sentences(text: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((start, m.end()))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for start, end in spans:
        piece = text[start:end]
        left = len(piece) - len(piece.lstrip())
        right = len(piece.rstrip())
        if right > left:
            out.append((start + left, start + right))
    return out


def _mark(text: str, start: int, end: int, matches: list[tuple[int, int, str]]) -> str:
    """text[start:end] HTML-escaped, with the matches inside it in <mark>..</mark>."""
    spans: list[list[int]] = []
    for m_start, m_end, _ in matches:
        s, e = max(m_start, start), min(m_end, end)
        if s >= e:
            continue
        if spans and s <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], e)
        else:
            spans.append([s, e])
    out, at = [], start
    for s, e in spans:
        out.append(html.escape(text[at:s]))
        out.append(f"<mark>{html.escape(text[s:e])}</mark>")
        at = e
    out.append(html.escape(text[at:end]))
    return "".join(out)


def snippet(body: str, words: Iterable[str], idf: Any = None, size: int = SNIPPET_CHARS) -> str:
    """The passage of `body` (whole sentences, <= `size` characters where they fit) holding the most
    weight of `words` (`idf(word)`, 1 each without it), escaped, the words marked."""
    weight = idf or (lambda _w: 1.0)
    matches = _matches(body, list(words))
    sentences = _sentences(body)
    if not sentences:
        return ""
    best: tuple[float, int, int] | None = None  # (-weight, start, end)
    for i, (first, last) in enumerate(sentences):
        lo, hi = first, last
        if hi - lo > size:  # one long sentence: a window around its first match
            inside = [m[0] for m in matches if first <= m[0] < last]
            lo = max(first, min((inside[0] if inside else first) - size // 4, last - size))
            hi = min(last, lo + size)
        else:
            for _, e in sentences[i + 1 :]:
                if e - lo > size:
                    break
                hi = e
        held = {w for s, e, w in matches if s >= lo and e <= hi}
        key = (-sum(weight(w) for w in held), lo, hi)
        if best is None or key < best:
            best = key
    assert best is not None
    _, start, end = best
    prefix = "…" if start > sentences[0][0] else ""
    suffix = "…" if end < sentences[-1][1] else ""
    return _NEWLINES.sub(" ", prefix + _mark(body, start, end, matches) + suffix)


def answerable(hits: list[Hit], min_coverage: float = MIN_COVERAGE) -> Hit | None:
    """The hit a bot may answer from (the top one when its coverage and margin say it really answers
    the question), else None.

    The top hit must hold at least `min_coverage` of the question's content words, and stand out: the
    next other article scores below AMBIGUOUS_SCORE_RATIO of it, or the top hit holds at least
    HIGH_COVERAGE of the question and the next one scores below CLOSE_SCORE_RATIO of it (a question
    that two articles answer about equally well is not answered from either)."""
    if not hits:
        return None
    top = hits[0]
    if top.coverage < min_coverage or top.score <= 0:
        return None
    other = next((h for h in hits[1:] if h.doc.id != top.doc.id), None)
    ratio = other.score / top.score if other is not None else 0.0
    if ratio < AMBIGUOUS_SCORE_RATIO or (top.coverage >= HIGH_COVERAGE and ratio < CLOSE_SCORE_RATIO):
        return top
    return None
