"""Search-box completions from a text search's hits: cuisines, dishes, restaurants. Pure.

The hits are those of the same search a customer would run (restaurants that deliver to
the point, matching every word, the last as a beginning), so a suggestion never leads to
an empty result. Cuisines and dishes come first, by how many of those restaurants have
them (then alphabetically); restaurants follow in the search's order (relevance, then
distance). At most half the list goes to cuisines and dishes while restaurants remain.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from servers.catalog.search import Hit, SearchDoc
from servers.catalog.text import TextQuery, fold

__all__ = ["DEFAULT_SUGGESTIONS", "MAX_HITS_READ", "MAX_SUGGESTIONS", "Kind", "Suggestion",
           "matched_dishes", "suggest"]  # fmt: skip

DEFAULT_SUGGESTIONS = 8
MAX_SUGGESTIONS = 20
#: Hits read for suggestions, best first (a one-letter query can match thousands): counts
#: are among these, the most relevant and nearest.
MAX_HITS_READ = 60


class Kind(enum.IntEnum):
    """SuggestionKind values (the enum of catalog.proto)."""

    CUISINE = 1
    DISH = 2
    RESTAURANT = 3


@dataclass(frozen=True, slots=True)
class Suggestion:
    text: str
    kind: Kind
    restaurant_id: str = ""
    restaurant_count: int = 1


def matched_dishes(doc: SearchDoc, text: TextQuery, *, limit: int = 5) -> list[str]:
    """The dishes of ``doc`` whose name (or description) matches every word of ``text``."""
    out: list[str] = []
    for name, description in doc.dishes:
        if name not in out and (
            text.matches_text(name) or text.matches_text(f"{name} {description}")
        ):
            out.append(name)
            if len(out) >= limit:
                break
    return out


def suggest(hits: Sequence[Hit], text: TextQuery, *, limit: int) -> list[Suggestion]:
    """Up to ``limit`` completions of ``text`` from ``hits`` (in the search's order)."""
    cuisines: Counter[str] = Counter()
    dishes: Counter[str] = Counter()
    spelled: dict[str, str] = {}
    restaurants: list[Suggestion] = []
    matches = text.matches_text
    for hit in hits[:MAX_HITS_READ]:
        d = hit.doc
        for c in d.cuisines:
            if matches(c):
                cuisines[c] += 1
        seen: set[str] = set()
        for name, _ in d.dishes:
            key = name.casefold()
            if key not in seen and matches(name):
                seen.add(key)
                dishes[key] += 1
                spelled.setdefault(key, name)
        if text.matches_text(d.name):
            restaurants.append(Suggestion(d.name, Kind.RESTAURANT, d.restaurant_id, 1))
    words = [Suggestion(c, Kind.CUISINE, "", n) for c, n in cuisines.items()]
    words += [Suggestion(spelled[k], Kind.DISH, "", n) for k, n in dishes.items()]
    words.sort(key=lambda s: (-s.restaurant_count, s.kind, fold(s.text)))
    first = words[: max(limit - len(restaurants), (limit + 1) // 2)]
    rest = restaurants[: limit - len(first)]
    return first + rest + words[len(first) : len(first) + limit - len(first) - len(rest)]
