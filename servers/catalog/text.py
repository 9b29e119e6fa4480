"""Text search over restaurants: names, cuisines and dishes (menu item names and descriptions).

Pure, no I/O. Words are folded (lower case, accents dropped, anything not a letter or a
digit splits) and interned in one process-wide :class:`Vocabulary`, so every table of a
replica numbers a word alike and tables merge by concatenation. A restaurant's document
carries its words with the weight of the best field each is in (:data:`WEIGHTS`).

A query word matches vocabulary words exactly, by prefix (the last word of an
autocomplete, or of a search longer than two letters) or within a few edits, as
Elasticsearch's ``fuzziness: AUTO`` counts them (none up to 2 letters, one up to 5, two
beyond: "margarita" finds "margherita"); each way has a quality (:data:`EXACT`,
:data:`PREFIX`, less per edit). Candidates for edits come from a trigram index of the
vocabulary and are confirmed with a bounded Damerau-Levenshtein distance; a word's
expansions are cached per vocabulary size (the vocabulary only grows).

A restaurant matches a query when every query word matches one of its words; its
relevance is the sum over query words of the best weight × quality. Relevance is ranked
in steps of :data:`RELEVANCE_STEP`, so that among about equally good matches the search's
own order (distance, rating, ...) decides.
"""

from __future__ import annotations

import bisect
import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "EXACT",
    "MAX_QUERY_CHARS",
    "MAX_QUERY_WORDS",
    "PREFIX",
    "RELEVANCE_STEP",
    "VOCABULARY",
    "WEIGHTS",
    "TextQuery",
    "Vocabulary",
    "doc_terms",
    "edit_distance",
    "fold",
    "max_edits",
    "relevance_step",
    "words",
]

#: Field weights: a word in the name counts most, one in a dish's description least.
WEIGHTS = {"name": 3.0, "cuisine": 2.0, "dish": 2.0, "description": 1.0}
#: Match qualities: the word itself, a word it begins, and per edit less.
EXACT = 1.0
PREFIX = 0.8
_PER_EDIT = 0.25
#: Relevance is compared in these steps (then the search's sort decides).
RELEVANCE_STEP = 0.5
MAX_QUERY_CHARS = 100
MAX_QUERY_WORDS = 8
_SPLIT = re.compile(r"[^0-9a-z]+")


def fold(text: str) -> str:
    """Lower case without accents ("Crème Brûlée" -> "creme brulee")."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def words(text: str) -> list[str]:
    """The folded words of ``text``, in order."""
    return [w for w in _SPLIT.split(fold(text)) if w]


def max_edits(word: str) -> int:
    """Edits tolerated for a query word of this length (Elasticsearch's AUTO)."""
    n = len(word)
    return 0 if n <= 2 else 1 if n <= 5 else 2


def edit_distance(a: str, b: str, limit: int) -> int:
    """Optimal-string-alignment distance of ``a`` and ``b`` (a swap of neighbours is one
    edit), or ``limit + 1`` as soon as it is known to exceed ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        best = cur[0]
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            v = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                v = min(v, prev2[j - 2] + 1)
            cur[j] = v
            best = min(best, v)
        if best > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1] if prev[-1] <= limit else limit + 1


def _trigrams(word: str) -> set[str]:
    padded = f"^{word}$"
    return {padded[i : i + 3] for i in range(len(padded) - 2)}


class Vocabulary:
    """Every word this process has indexed, numbered once (ids never change)."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._words: list[str] = []
        self._by_trigram: dict[str, list[int]] = {}
        self._sorted: list[str] = []
        self._sorted_ids: list[int] = []
        self._sorted_size = 0
        self._expansions: dict[tuple[str, bool], tuple[tuple[int, float], ...]] = {}
        self._expansions_size = 0
        self._texts: dict[str, frozenset[int]] = {}
        self._texts_size = 0

    def __len__(self) -> int:
        return len(self._words)

    def intern(self, word: str) -> int:
        wid = self._ids.get(word)
        if wid is None:
            wid = self._ids[word] = len(self._words)
            self._words.append(word)
            for t in _trigrams(word):
                self._by_trigram.setdefault(t, []).append(wid)
        return wid

    def id_of(self, word: str) -> int | None:
        return self._ids.get(word)

    def word(self, wid: int) -> str:
        return self._words[wid]

    def ids_in(self, text: str) -> frozenset[int]:
        """The ids of the known words of ``text`` (cached: dish names repeat a lot)."""
        if self._texts_size != len(self._words) or len(self._texts) > 100_000:
            self._texts.clear()
            self._texts_size = len(self._words)
        got = self._texts.get(text)
        if got is None:
            got = self._texts[text] = frozenset(
                i for w in words(text) if (i := self._ids.get(w)) is not None
            )
        return got

    def _prefixed(self, prefix: str) -> list[int]:
        if self._sorted_size != len(self._words):
            pairs = sorted(zip(self._words, range(len(self._words)), strict=True))
            self._sorted = [w for w, _ in pairs]
            self._sorted_ids = [i for _, i in pairs]
            self._sorted_size = len(self._words)
        lo = bisect.bisect_left(self._sorted, prefix)
        hi = bisect.bisect_left(self._sorted, prefix + "\uffff")
        return self._sorted_ids[lo:hi]

    def expand(self, term: str, *, prefix: bool) -> tuple[tuple[int, float], ...]:
        """The vocabulary words ``term`` matches and how well: (word id, quality), the best
        way for each word."""
        if self._expansions_size != len(self._words):
            self._expansions.clear()
            self._expansions_size = len(self._words)
        key = (term, prefix)
        got = self._expansions.get(key)
        if got is not None:
            return got
        best: dict[int, float] = {}

        def offer(wid: int, quality: float) -> None:
            if quality > best.get(wid, 0.0):
                best[wid] = quality

        wid = self._ids.get(term)
        if wid is not None:
            offer(wid, EXACT)
        if prefix:
            for w in self._prefixed(term):
                offer(w, PREFIX)
        limit = max_edits(term)
        if limit:
            seen: set[int] = set()
            for t in _trigrams(term):
                seen.update(self._by_trigram.get(t, ()))
            for w in seen:
                text = self._words[w]
                d = edit_distance(term, text, limit)
                if d <= limit:
                    offer(w, EXACT - _PER_EDIT * d)
                elif prefix and len(text) > len(term):
                    # A misspelt beginning: "margar" for "margherita".
                    d = min(edit_distance(term, text[: len(term) + k], limit) for k in (-1, 0, 1))
                    if d <= limit:
                        offer(w, PREFIX - _PER_EDIT * d)
        out = tuple(sorted(best.items()))
        if len(self._expansions) > 10_000:
            self._expansions.clear()
        self._expansions[key] = out
        return out


#: The process's vocabulary (one numbering for every table of a replica).
VOCABULARY = Vocabulary()


def doc_terms(
    name: str, cuisines: Iterable[str], dishes: Iterable[tuple[str, str]],
    vocabulary: Vocabulary = VOCABULARY,
) -> tuple[tuple[int, ...], tuple[float, ...]]:  # fmt: skip
    """A restaurant's words as (word ids, weights), each word once with its best weight."""
    best: dict[int, float] = {}

    def add(text: str, weight: float) -> None:
        for w in words(text):
            wid = vocabulary.intern(w)
            if weight > best.get(wid, 0.0):
                best[wid] = weight

    add(name, WEIGHTS["name"])
    for c in cuisines:
        add(c, WEIGHTS["cuisine"])
    for dish, description in dishes:
        add(dish, WEIGHTS["dish"])
        add(description, WEIGHTS["description"])
    ids = tuple(sorted(best))
    return ids, tuple(best[i] for i in ids)


@dataclass(frozen=True, slots=True)
class TextQuery:
    """A query's words and what each matches: ``matches[i]`` maps word id -> quality."""

    terms: tuple[str, ...]
    matches: tuple[dict[int, float], ...]
    #: matches_text's answers for this query (a search reads the same dish names often).
    _seen: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    @staticmethod
    def parse(text: str, *, prefix: bool = False, vocabulary: Vocabulary = VOCABULARY) -> TextQuery:
        """The query of ``text``; with ``prefix`` the last word may be a beginning
        (autocomplete). A search's last word of three letters or more is one too."""
        terms = tuple(dict.fromkeys(words(text[:MAX_QUERY_CHARS])))[:MAX_QUERY_WORDS]
        out = []
        for i, t in enumerate(terms):
            last = i == len(terms) - 1
            out.append(dict(vocabulary.expand(t, prefix=last and (prefix or len(t) >= 3))))
        return TextQuery(terms, tuple(out))

    def __bool__(self) -> bool:
        return bool(self.terms)

    def score(self, ids: Sequence[int], weights: Sequence[float]) -> float:
        """Relevance of a document's words: 0 unless every query word matches one."""
        total = 0.0
        for m in self.matches:
            best = max((weights[k] * m[i] for k, i in enumerate(ids) if i in m), default=0.0)
            if best <= 0.0:
                return 0.0
            total += best
        return total

    def matches_text(self, text: str, vocabulary: Vocabulary = VOCABULARY) -> bool:
        """Whether every query word matches a word of ``text`` (a dish name, a cuisine)."""
        got = self._seen.get(text)
        if got is None:
            ids = vocabulary.ids_in(text)
            got = all(not ids.isdisjoint(m.keys()) for m in self.matches)
            if len(self._seen) < 10_000:
                self._seen[text] = got
        return got


def relevance_step(score: float) -> float:
    """``score`` rounded down to :data:`RELEVANCE_STEP` (the rank key; the table computes
    the same with numpy, in the same order of operations)."""
    return math.floor(score / RELEVANCE_STEP + 1e-9) * RELEVANCE_STEP
