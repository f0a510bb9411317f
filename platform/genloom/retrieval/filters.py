"""Metadata filters: one grammar for the CLI, the HTTP API and Python, compiled to a SQL/JSON path.

Two spellings of the same filter:

- `--where` strings (CLI, `/v1/search?where=`), all of which must hold:
      lang=en    lang!=en    lang in en,fr    year>=2020    date<2024-06-01    summary exists
- a JSON document (`--where-json`, API bodies, Python), MongoDB/Chroma style:
      {"lang": "en", "year": {"$gte": 2020}}
      {"$or": [{"lang": "en"}, {"lang": {"$in": ["fr", "de"]}}], "$not": {"draft": "yes"}}
  Operators: $eq $ne $in $nin $gt $gte $lt $lte $exists, combined with $and $or $not;
  several keys in one object all must hold. A plain {"key": "value"} dict (the old
  equality-only filter) is still valid.

Both compile (`to_jsonpath`) to one Postgres SQL/JSON path predicate, bound as a single
parameter and tested with `documents.metadata @@ CAST(:where AS jsonpath)`. The `@@`
operator suppresses type and conversion errors, so a document whose value cannot be
compared (a word where a number is wanted, a missing key) simply does not match.

Values: equality compares the text form, so `year=2020` matches 2020 stored as a number or
as the string "2020". Range operators compare numbers numerically (`.double()`, which also
reads numeric strings) and ISO dates (YYYY-MM-DD[THH:MM[:SS]]) as strings, which orders them
correctly when they share a format. `key!=v` also matches documents without `key`.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from genloom.errors import BadInput

COMPARISONS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
OPERATORS = ("$eq", "$ne", "$in", "$nin", "$exists", *COMPARISONS)
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")
# Longest operators first, so `>=` is not read as `>` followed by `=x`.
_PAIR = re.compile(r"^\s*(?P<key>[^!<>=\s][^!<>=]*?)\s*(?P<op>!=|>=|<=|=|<|>)\s*(?P<value>.*)$", re.S)
_IN = re.compile(r"^\s*(?P<key>[^!<>=\s]+)\s+(?P<op>in|not in)\s+(?P<values>.+)$", re.S)
_EXISTS = re.compile(r"^\s*(?P<key>[^!<>=\s]+)\s+(?P<op>exists|missing)\s*$")
_SYMBOLS = {"=": "$eq", "!=": "$ne", ">": "$gt", ">=": "$gte", "<": "$lt", "<=": "$lte"}
MAX_DEPTH = 32  # $and/$or/$not nesting; deeper is refused before it can exhaust the stack


def parse_where(pairs: list[str] | None) -> dict[str, Any] | None:
    """`--where` strings → one filter document (all conditions must hold); None when empty."""
    if not pairs:
        return None
    conditions: list[dict[str, Any]] = []
    for pair in pairs:
        if m := _EXISTS.match(pair):
            conditions.append({m["key"]: {"$exists": m["op"] == "exists"}})
        elif m := _IN.match(pair):
            values = [v.strip() for v in m["values"].split(",") if v.strip()]
            if not values:
                raise BadInput(f"--where {pair!r}: give the values after 'in', separated by commas")
            conditions.append({m["key"]: {"$in" if m["op"] == "in" else "$nin": values}})
        elif m := _PAIR.match(pair):
            conditions.append({m["key"].strip(): {_SYMBOLS[m["op"]]: m["value"]}})
        else:
            raise BadInput(
                f"--where expects key=value, key!=value, 'key in a,b', key>=x (> < <=) or 'key exists' (got {pair!r})"
            )
    return conditions[0] if len(conditions) == 1 else {"$and": conditions}


def parse_where_json(text: str | None) -> dict[str, Any] | None:
    """`--where-json` text → a validated filter document."""
    if text is None or not text.strip():
        return None
    try:
        where = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"--where-json is not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise BadInput(f"--where-json is nested too deeply (at most {MAX_DEPTH} levels)") from None
    to_jsonpath(where)  # validates
    return where


def combine(*filters: dict[str, Any] | None) -> dict[str, Any] | None:
    """All of the given filters (None ones ignored)."""
    present = [f for f in filters if f]
    if not present:
        return None
    return present[0] if len(present) == 1 else {"$and": present}


def to_jsonpath(where: dict[str, Any] | None) -> str | None:
    """A filter document → a SQL/JSON path predicate for `metadata @@ CAST(:where AS jsonpath)`."""
    if where is None or where == {}:
        return None
    return _node(where, "filter", 1)


# --------------------------------------------------------------------------- compilation


def _node(node: Any, where: str, depth: int) -> str:
    if depth > MAX_DEPTH:
        raise BadInput(f"filter: nested deeper than {MAX_DEPTH} levels")
    if not isinstance(node, dict) or not node:
        raise BadInput(f"{where}: expected a non-empty JSON object of conditions, got {json.dumps(node)[:60]}")
    parts: list[str] = []
    for key, value in node.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise BadInput(f"{where}: {key} takes a non-empty list of conditions")
            joined = (" && " if key == "$and" else " || ").join(_node(v, f"{where}.{key}", depth + 1) for v in value)
            parts.append(f"({joined})")
        elif key == "$not":
            parts.append(f"!({_node(value, f'{where}.$not', depth + 1)})")
        elif key.startswith("$"):
            raise BadInput(f"{where}: unknown operator {key!r}; use $and, $or, $not, or a metadata key")
        else:
            parts.append(_field(key, value, f"{where}.{key}"))
    return parts[0] if len(parts) == 1 else "(" + " && ".join(parts) + ")"


def _field(key: str, condition: Any, where: str) -> str:
    if not key.strip():
        raise BadInput(f"{where}: empty metadata key")
    if "\x00" in key:
        raise BadInput("filter: a metadata key must not contain NUL (\\u0000) characters")
    path = "$." + json.dumps(key, ensure_ascii=False)  # a quoted key: any characters are safe
    if not isinstance(condition, dict):
        return _equal(path, condition, where)
    if not condition:
        raise BadInput(f"{where}: empty condition")
    parts = []
    for op, value in condition.items():
        if op == "$eq":
            parts.append(_equal(path, value, where))
        elif op == "$ne":
            parts.append(f"!({_equal(path, value, where)})")
        elif op in ("$in", "$nin"):
            if not isinstance(value, list) or not value:
                raise BadInput(f"{where}: {op} takes a non-empty list of values")
            any_of = " || ".join(_equal(path, v, where) for v in value)
            parts.append(f"({any_of})" if op == "$in" else f"!({any_of})")
        elif op == "$exists":
            if not isinstance(value, bool):
                raise BadInput(f"{where}: $exists takes true or false")
            parts.append(f"exists({path})" if value else f"!exists({path})")
        elif op in COMPARISONS:
            parts.append(_compare(path, COMPARISONS[op], value, where))
        else:
            raise BadInput(f"{where}: unknown operator {op!r}; use one of: {', '.join(OPERATORS)}")
    return parts[0] if len(parts) == 1 else "(" + " && ".join(parts) + ")"


def _literal(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        raise BadInput(f"{where}: numbers must be finite (no NaN or Infinity)")
    if isinstance(value, str) and "\x00" in value:
        raise BadInput(f"{where}: values must not contain NUL (\\u0000) characters")
    if isinstance(value, (int, float, str)):
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return "null"
    raise BadInput(f"{where}: values must be strings, numbers, booleans or null")


def _number(value: Any) -> float | None:
    """A finite number, or None: "nan", "1e999" and 10**400 are not numbers jsonpath can compare."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _equal(path: str, value: Any, where: str) -> str:
    """Equal by text form: 2020 matches "2020" and 2020; "true" matches true."""
    if isinstance(value, (dict, list)):
        raise BadInput(f"{where}: values must be strings, numbers, booleans or null")
    options = [_literal(value, where)]
    number = _number(value)
    if isinstance(value, str) and number is not None and value.strip() == value:
        options.append(json.dumps(int(number) if number.is_integer() and "." not in value else number))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        options.append(json.dumps(str(value)))
    elif isinstance(value, str) and value in ("true", "false"):
        options.append(value)
    elif isinstance(value, bool):
        options.append(json.dumps("true" if value else "false"))
    return "(" + " || ".join(f"{path} == {o}" for o in options) + ")" if len(options) > 1 else f"{path} == {options[0]}"


def _compare(path: str, symbol: str, value: Any, where: str) -> str:
    number = _number(value)
    if number is not None:
        # .double() reads numbers and numeric strings alike; anything else is an error @@ hides.
        return f"{path}.double() {symbol} {json.dumps(number)}"
    if isinstance(value, str) and _ISO_DATE.match(value.strip()):
        return f"{path} {symbol} {json.dumps(value.strip())}"
    raise BadInput(f"{where}: {symbol} compares numbers or ISO dates (YYYY-MM-DD), got {value!r}")
