"""Path templates: `/alerts/{id}` matches one segment, `/legacy/{rest*}` the rest of the path.

Templates are compiled once at load. Matching runs on the request's normalized path, the one
every matcher of the gateway reads (`core.http1.normalize_path`: escapes of unreserved
characters decoded, the others kept with uppercase hex, `%2F` distinct from `/`, dot-segments
resolved); the loader writes templates in the same form (`/api/%61lerts` is `/api/alerts`). A
parameter carries the encoding left in it into a target path. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["PathTemplate", "TargetPath", "compile_target", "compile_template"]

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(\*?)\}")
_BAD_BRACE = re.compile(r"[{}]")


@dataclass(frozen=True, slots=True)
class PathTemplate:
    """A compiled match path; `prefix` is the literal text before the first parameter."""

    text: str
    prefix: str
    params: tuple[str, ...]
    regex: re.Pattern[str] | None  # None: a literal path

    @property
    def literal(self) -> bool:
        return self.regex is None

    def match(self, path: str) -> dict[str, str] | None:
        """The parameters when `path` matches, else None."""
        if self.regex is None:
            return {} if path == self.text else None
        if not path.startswith(self.prefix):
            return None
        m = self.regex.fullmatch(path)
        return m.groupdict() if m is not None else None


def compile_template(text: str) -> PathTemplate:
    """Compile `text`; raises ValueError saying what is wrong."""
    if not text.startswith("/"):
        raise ValueError("a path starting with '/'")
    pattern: list[str] = []
    params: list[str] = []
    pos = 0
    for m in _PARAM.finditer(text):
        literal = text[pos : m.start()]
        if _BAD_BRACE.search(literal):
            raise ValueError("parameters written as {name} or {name*}")
        name, rest = m.group(1), m.group(2)
        if name in params:
            raise ValueError(f"each parameter once ({name!r} is repeated)")
        if rest and m.end() != len(text):
            raise ValueError(f"{{{name}*}} only at the end of the path")
        params.append(name)
        pattern.append(re.escape(literal))
        pattern.append(f"(?P<{name}>.*)" if rest else f"(?P<{name}>[^/]+)")
        pos = m.end()
    tail = text[pos:]
    if _BAD_BRACE.search(tail):
        raise ValueError("parameters written as {name} or {name*}")
    if not params:
        return PathTemplate(text, text, (), None)
    pattern.append(re.escape(tail))
    prefix = text[: text.index("{")]
    return PathTemplate(text, prefix, tuple(params), re.compile("".join(pattern)))


@dataclass(frozen=True, slots=True)
class TargetPath:
    """A path to send a request to, with `{name}` filled from the matched parameters."""

    text: str
    parts: tuple[tuple[str, bool], ...]  # (text, is_param)

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(t for t, is_param in self.parts if is_param)

    def render(self, params: Mapping[str, str]) -> str:
        return "".join(params.get(t, "") if p else t for t, p in self.parts)


def compile_target(text: str) -> TargetPath:
    """Compile a target path; raises ValueError saying what is wrong."""
    if not text.startswith("/"):
        raise ValueError("a path starting with '/'")
    parts: list[tuple[str, bool]] = []
    pos = 0
    for m in _PARAM.finditer(text):
        if m.group(2):
            raise ValueError("parameters written as {name} in a target path")
        if m.start() > pos:
            parts.append((text[pos : m.start()], False))
        parts.append((m.group(1), True))
        pos = m.end()
    if pos < len(text):
        parts.append((text[pos:], False))
    if any(_BAD_BRACE.search(t) for t, p in parts if not p):
        raise ValueError("parameters written as {name}")
    return TargetPath(text, tuple(parts))
