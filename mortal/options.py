"""Every field of nested pydantic config models, reachable from the command line.

Instead of one hand-written option per field, a command takes repeated
``--set dotted.key=value`` options; :func:`parse_assignments` turns them into a
nested dict; :func:`merge` lays it over the config file's data, and the model
validates the result.  :func:`format_validation_error` puts what the model rejected on
one line with dotted keys, and :func:`suggest` finds the key a typo meant.

Values are JSON when they parse as JSON (``3``, ``0.5``, ``true``, ``null``,
``[1, 2]``, ``"x"``, ``{"bits": 6}``) and the raw text otherwise, so
``--set train.policy=mixed`` needs no quotes.

The reference of every settable key (:func:`field_rows`, :class:`FieldRow`,
:func:`reference_markdown`, ``docs/config.md``) lives in
:mod:`mortal.field_reference` and is re-exported here.

This module knows nothing of the project's models; it imports only
:mod:`mortal.errors` and :mod:`mortal.field_reference` from ``mortal``.
"""

from __future__ import annotations

import copy
import difflib
import json
from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import InputError
from .field_reference import FieldRow, field_rows, reference_markdown

__all__ = ["FieldRow", "parse_value", "parse_assignments", "merge", "field_rows", "reference_markdown",
           "format_validation_error", "suggest"]


# --- assignments -------------------------------------------------------------------------------------------

def parse_value(text: str) -> Any:
    """A ``--set`` value: JSON if ``text`` parses as JSON, else ``text`` itself (surrounding blanks removed)."""
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignments(items: list[str]) -> dict:
    """Nested dict of ``dotted.key=value`` assignments (the repeated ``--set`` options).

    Parameters
    ----------
    items
        Each ``dotted.key=value``; the key is split at dots, the value at the
        first ``=`` is parsed by :func:`parse_value` (JSON, else the raw text).

    Returns
    -------
    dict
        ``["a.b.c=1", "a.d=x"]`` gives ``{"a": {"b": {"c": 1}, "d": "x"}}``.

    Raises
    ------
    mortal.errors.InputError
        (a ``ValueError``) naming the item: no ``=``, an empty key or key
        segment, a key given twice, or a key given a value that is also the
        prefix of another key (``a=1`` with ``a.b=2``).
    """
    out: dict = {}
    seen: dict[tuple[str, ...], str] = {}  # path -> the item that set it
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise InputError(f"assignment {item!r} has no '=' (expected dotted.key=value)")
        key = key.strip()
        if not key:
            raise InputError(f"assignment {item!r} has an empty key (expected dotted.key=value)")
        path = tuple(key.split("."))
        if any(not part.strip() for part in path):
            raise InputError(f"assignment {item!r} has an empty segment in its key {key!r}")
        if path in seen:
            raise InputError(f"key {key!r} is given twice ({seen[path]!r} and {item!r})")
        for other, other_item in seen.items():
            shorter, longer = sorted((path, other), key=len)
            if longer[:len(shorter)] == shorter:
                leaf, deep = (item, other_item) if path == shorter else (other_item, item)
                raise InputError(f"key {'.'.join(shorter)!r} is given a value ({leaf!r}) and also has "
                                 f"sub-keys ({deep!r})")
        seen[path] = item
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = parse_value(raw)
    return out


def merge(base: dict, overrides: dict) -> dict:
    """Deep merge: ``overrides`` win; dicts found in both are merged key by key.

    Returns a new dict; neither argument is changed and the result shares no
    mutable values with them.
    """
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# --- errors ------------------------------------------------------------------------------------------------

_MESSAGE_PREFIXES = ("Value error, ", "Assertion failed, ")


def format_validation_error(exc: ValidationError, prefix: str = "", *,
                            model: type[BaseModel] | None = None) -> str:
    """Every problem of ``exc`` on one line: ``dotted.key: message``, joined by ``"; "``.

    Parameters
    ----------
    exc
        What the model raised.
    prefix
        Dotted path of the validated model, prepended to every location.
    model
        The validated model; if given, an unknown key says which known key it
        probably meant (``did you mean train.policy?``).

    Returns
    -------
    str
        e.g. ``train.lr: Input should be greater than 0; train.polcy: unknown key (typo?)``.
        Locations inside lists render as ``layers[1]``; ``Value error, ``
        prefixes of validator messages are dropped.
    """
    known: list[str] | None = None
    if model is not None:
        keys = {row.key for row in field_rows(model, prefix)}
        groups = {k.rsplit(".", i)[0] for k in keys for i in range(1, k.count(".") + 1)}
        known = sorted((keys | groups) - {prefix})  # the prefix itself is never the key meant
    problems = []
    for error in exc.errors():
        where = _location(prefix, error["loc"])
        if error["type"] == "extra_forbidden":
            guess = suggest(where, known) if known else None
            message = f"unknown key (did you mean {guess}?)" if guess else "unknown key (typo?)"
        else:
            message = error["msg"]
            for start in _MESSAGE_PREFIXES:
                if message.startswith(start):
                    message = message[len(start):]
        message = _one_line(message)
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


def _location(prefix: str, loc: tuple[int | str, ...]) -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else str(part)
    return out


def suggest(key: str, known: list[str]) -> str | None:
    """The known key closest to ``key`` (difflib, cutoff 0.6), or None; ``key`` itself if it is known."""
    matches = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _one_line(text: str) -> str:
    return " ".join(text.split())
