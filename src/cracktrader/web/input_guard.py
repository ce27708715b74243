"""Checks of raw input at the edge, before any route sees it: JSON bodies, form bodies, query strings and paths.

No database and no JSON encoder accepts everything JSON and URLs can carry: NaN, Infinity and numbers that
overflow to infinity (`1e309`), lone UTF-16 surrogates (`"\\ud800"`) and NUL characters (PostgreSQL refuses
them in text and JSONB). Arbitrarily deep nesting exhausts the recursion limit of whoever walks it. All of
these are refused here, once, with the location of the offending value, so no route, store or error echo has to
handle them.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

MAX_JSON_DEPTH = 32
MAX_LOC_CHARS = 100
MAX_INT_DIGITS = 4300  # Python's own limit on int(str)
# A NUL, or a lone surrogate (a well-formed pair is decoded to one code point by the JSON parser).
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")
TEXT_RULE = "text must be valid Unicode without NUL characters"
NUMBER_RULE = "JSON numbers must be finite, between -1.7e308 and 1.7e308 (NaN and Infinity are not accepted)"
DEPTH_RULE = f"arrays and objects may nest at most {MAX_JSON_DEPTH} levels deep"


@dataclass(frozen=True, slots=True)
class InputProblem:
    """One refused value: where it is, what kind of problem, and a message saying what is accepted instead."""

    loc: tuple[str | int, ...]
    type: str
    msg: str
    input: Any = None

    def _loc(self) -> list[str | int]:
        # Keys on the way are valid text but may be long: the error names them, it does not reproduce them.
        return [p if isinstance(p, int) else p[:MAX_LOC_CHARS] for p in self.loc]

    def error(self) -> dict[str, Any]:
        """The item of a 422's `detail` list, shaped like FastAPI's validation errors."""
        item: dict[str, Any] = {"type": self.type, "loc": self._loc(), "msg": self.msg}
        if self.input is not None:
            item["input"] = self.input
        return item

    def summary(self) -> str:
        """`loc: msg`, as the validation handler summarizes pydantic's errors."""
        return f"{'.'.join(str(p) for p in self._loc())}: {self.msg}"


class _NonFinite(str):
    """The source text of a number that is not finite, kept so the walk can report where it was."""


class _HugeInt(str):
    """The source text of an integer longer than Python converts (4300 digits), kept for the same reason."""


def _parse_float(text: str) -> float | _NonFinite:
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(text)


def _parse_int(text: str) -> int | _HugeInt:
    return int(text) if len(text) <= MAX_INT_DIGITS else _HugeInt(text)


def text_problem(value: str, loc: tuple[str | int, ...]) -> InputProblem | None:
    """A problem when `value` holds a NUL or a lone surrogate (the value itself is never echoed)."""
    found = _BAD_TEXT.search(value)
    if found is None:
        return None
    char = found.group()
    if char == "\x00":
        return InputProblem(
            loc, "string_nul", f"contains a NUL character (\\u0000) at position {found.start()}; {TEXT_RULE}"
        )
    return InputProblem(
        loc,
        "string_surrogate",
        f"contains a lone surrogate (\\u{ord(char):04x}) at position {found.start()}; {TEXT_RULE}",
    )


def _value_problem(value: Any, loc: tuple[str | int, ...]) -> InputProblem | None:
    """The problem of a scalar: a bad string, a non-finite number, or a number the slow parser kept as text."""
    kind = type(value)
    if kind is str:
        return text_problem(value, loc)
    if kind is float:
        if math.isfinite(value):
            return None
        shown = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[repr(value)]
        return InputProblem(loc, "finite_number", f"{shown} is not a finite number; {NUMBER_RULE}", shown)
    if kind is _NonFinite:
        return InputProblem(loc, "finite_number", f"{value} is not a finite number; {NUMBER_RULE}", str(value))
    if kind is _HugeInt:
        return InputProblem(loc, "int_too_large", f"an integer of {len(value)} digits is too large; {NUMBER_RULE}")
    return None


_CHECKED = frozenset({str, float, _NonFinite, _HugeInt})


def _walk(root: Any) -> InputProblem | None:
    """The first bad string, key or number in a parsed body, or a container nested too deep."""
    if type(root) not in (dict, list):
        return _value_problem(root, ("body",))
    stack: list[tuple[Any, tuple[str | int, ...], int]] = [(root, ("body",), 1)]
    while stack:
        node, loc, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return InputProblem(loc, "json_too_deep", f"nested deeper than {MAX_JSON_DEPTH} levels; {DEPTH_RULE}")
        if type(node) is dict:
            for key in node:
                if (problem := text_problem(key, (*loc, "<key>"))) is not None:
                    return problem
            items: Any = node.items()
        elif _finite_numbers(node):
            continue
        else:
            items = enumerate(node)
        # Type checks inline: this loop runs once per value of the body.
        for key, value in items:
            kind = type(value)
            if kind in _CHECKED:
                if (problem := _value_problem(value, (*loc, key))) is not None:
                    return problem
            elif kind is dict or kind is list:
                stack.append((value, (*loc, key), depth + 1))
    return None


def _finite_numbers(values: list[Any]) -> bool:
    """Whether a list holds only finite numbers, checked in C (fsum refuses anything else or overflows)."""
    try:
        return math.isfinite(math.fsum(values))
    except (TypeError, OverflowError):
        return False


def _slow_parse_problem(raw: bytes) -> InputProblem | None:
    """Parse again keeping non-finite numbers as written (`1e309`) and huge integers as text, to locate them."""
    try:
        parsed = json.loads(raw, parse_float=_parse_float, parse_int=_parse_int, parse_constant=_NonFinite)
    except ValueError as exc:  # nothing known raises it here; a body that does is still bad input, not a crash
        return InputProblem(("body",), "json_invalid", f"cannot be parsed as JSON ({type(exc).__name__})")
    return _walk(parsed)


def json_body_problem(raw: bytes) -> InputProblem | None:
    """The problem of a JSON body, or None when it is acceptable (or not JSON at all: routes report syntax errors)."""
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        return None  # FastAPI answers its own 422 json_invalid with the position
    except RecursionError:
        return InputProblem(("body",), "json_too_deep", f"nested deeper than {MAX_JSON_DEPTH} levels; {DEPTH_RULE}")
    except UnicodeDecodeError:
        return InputProblem(("body",), "json_invalid", "is not valid UTF-8; send JSON encoded as UTF-8")
    except ValueError:  # an integer over Python's 4300-digit limit
        return _slow_parse_problem(raw)
    problem = _walk(parsed)
    if problem is not None and problem.type == "finite_number":
        # The fast parse turned `1e309` into inf; the error should quote what was sent.
        return _slow_parse_problem(raw) or problem
    return problem


def form_body_problem(raw: bytes) -> InputProblem | None:
    """The problem of an urlencoded form body (only a NUL can survive its decoding, which replaces bad bytes)."""
    if b"\x00" not in raw and b"%00" not in raw:
        return None
    for key, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        if "\x00" in key:
            return text_problem(key, ("body", "<key>"))
        if (problem := text_problem(value, ("body", key))) is not None:
            return problem
    return InputProblem(("body",), "string_nul", f"contains a NUL character (\\u0000); {TEXT_RULE}")


def query_problem(query_string: bytes) -> InputProblem | None:
    """The problem of a query string: a NUL in any name or value (decoding replaces any other bad byte)."""
    if b"\x00" not in query_string and b"%00" not in query_string:
        return None
    for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if (problem := text_problem(key, ("query", "<name>"))) is not None:
            return problem
        if (problem := text_problem(value, ("query", key))) is not None:
            return problem
    return InputProblem(("query",), "string_nul", f"contains a NUL character (\\u0000); {TEXT_RULE}")


def path_problem(path: str) -> InputProblem | None:
    """The problem of a decoded URL path."""
    return text_problem(path, ("path",))
