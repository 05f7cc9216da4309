"""Query-string rewrites: rename, drop, set, default, map values, templates, pagination. Pure.

A query is a list of (name, value) pairs, decoded, in the order written; repeated names are
kept. `rewrite_query(ops, pairs, params)` returns the new pairs; `encode_query` makes the
string sent upstream.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

__all__ = [
    "Pagination",
    "Pairs",
    "QDefault",
    "QDrop",
    "QOp",
    "QRename",
    "QSet",
    "QTemplate",
    "QValues",
    "compile_template_value",
    "decode_query",
    "encode_query",
    "rewrite_query",
]

Pairs = list[tuple[str, str]]
_REF = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.-]*)\}")


def decode_query(raw: str) -> Pairs:
    return parse_qsl(raw, keep_blank_values=True)


def encode_query(pairs: Sequence[tuple[str, str]]) -> str:
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


def _first(pairs: Pairs, name: str) -> str | None:
    for k, v in pairs:
        if k == name:
            return v
    return None


def _without(pairs: Pairs, name: str) -> Pairs:
    return [(k, v) for k, v in pairs if k != name]


class QOp:
    __slots__ = ()

    def apply(self, pairs: Pairs, params: Mapping[str, str]) -> Pairs:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class QRename(QOp):
    old: str
    new: str

    def apply(self, pairs: Pairs, params: Mapping[str, str]) -> Pairs:
        return [(self.new if k == self.old else k, v) for k, v in pairs]


@dataclass(frozen=True, slots=True)
class QDrop(QOp):
    names: frozenset[str]

    def apply(self, pairs: Pairs, params: Mapping[str, str]) -> Pairs:
        return [(k, v) for k, v in pairs if k not in self.names]


@dataclass(frozen=True, slots=True)
class QSet(QOp):
    name: str
    value: str

    def apply(self, pairs: Pairs, params: Mapping[str, str]) -> Pairs:
        return [*_without(pairs, self.name), (self.name, self.value)]


@dataclass(frozen=True, slots=True)
class QDefault(QOp):
    name: str
    value: str

    def apply(self, pairs: Pairs, params: Mapping[str, str]) -> Pairs:
        return pairs if _first(pairs, self.name) is not None else [*pairs, (self.name, self.value)]


@dataclass(frozen=True, slots=True)
class QValues(QOp):
    name: str
    table: tuple[tuple[str, str], ...]

    def apply(self, pairs: Pairs, params: Mapping[str, str]) -> Pairs:
        mapping = dict(self.table)
        return [(k, mapping.get(v, v) if k == self.name else v) for k, v in pairs]


@dataclass(frozen=True, slots=True)
class QTemplate(QOp):
    """Set `name` from `parts`; `{x}` is query parameter x or path parameter x.

    Skipped when a referenced value is absent (so an optional legacy filter stays optional).
    """

    name: str
    parts: tuple[tuple[str, bool], ...]  # (text, is_reference)

    def apply(self, pairs: Pairs, params: Mapping[str, str]) -> Pairs:
        out: list[str] = []
        for text, is_ref in self.parts:
            if not is_ref:
                out.append(text)
                continue
            value = _first(pairs, text)
            if value is None:
                value = params.get(text)
            if value is None:
                return pairs
            out.append(value)
        return [*_without(pairs, self.name), (self.name, "".join(out))]


def compile_template_value(text: str) -> tuple[tuple[str, bool], ...]:
    parts: list[tuple[str, bool]] = []
    pos = 0
    for m in _REF.finditer(text):
        if m.start() > pos:
            parts.append((text[pos : m.start()], False))
        parts.append((m.group(1), True))
        pos = m.end()
    if pos < len(text):
        parts.append((text[pos:], False))
    return tuple(parts)


@dataclass(frozen=True, slots=True)
class Pagination(QOp):
    """offset + limit -> page + page_size: page = offset // limit + 1 (offset rounded down).

    Without an offset, page 1 is asked for only when `always` is set; `limit` is renamed to
    `page_size` in any case. A non-numeric offset or limit is passed on untouched, for the
    backend to refuse.
    """

    offset: str = "offset"
    limit: str = "limit"
    page: str = "page"
    page_size: str = "page_size"
    default_limit: int = 100
    always: bool = True

    def apply(self, pairs: Pairs, params: Mapping[str, str]) -> Pairs:
        raw_offset = _first(pairs, self.offset)
        raw_limit = _first(pairs, self.limit)
        try:
            offset = int(raw_offset) if raw_offset is not None else 0
            limit = int(raw_limit) if raw_limit is not None else self.default_limit
        except ValueError:
            return pairs
        rest = _without(_without(pairs, self.offset), self.limit)
        out = rest
        if raw_offset is not None or self.always:
            page = offset // limit + 1 if limit > 0 else 1
            out = [*_without(out, self.page), (self.page, str(max(page, 1)))]
        if raw_limit is not None or raw_offset is not None:
            out = [*_without(out, self.page_size), (self.page_size, str(limit))]
        return out


def rewrite_query(ops: Sequence[QOp], pairs: Pairs, params: Mapping[str, str]) -> Pairs:
    for op in ops:
        pairs = op.apply(pairs, params)
    return pairs
