"""Every field of nested pydantic config models, reachable from the command line.

Instead of one hand-written option per field, a command takes repeated
``--set dotted.key=value`` options; :func:`parse_assignments` turns them into a
nested dict; :func:`merge` lays it over the config file's data, and the model
validates the result.  :func:`format_validation_error` puts what the model rejected on
one line with dotted keys, :func:`suggest` finds the key a typo meant, and
:func:`field_rows` / :func:`reference_markdown` list every settable key with
its type, default and meaning (``docs/config.md``).

Values are JSON when they parse as JSON (``3``, ``0.5``, ``true``, ``null``,
``[1, 2]``, ``"x"``, ``{"bits": 6}``) and the raw text otherwise, so
``--set train.policy=mixed`` needs no quotes.  Defaults in the reference are
rendered the same way, so a default can be copied into a ``--set`` as is.

This module knows nothing of the project's models; it imports only
:mod:`mortal.errors` from ``mortal``.
"""

from __future__ import annotations

import ast
import copy
import difflib
import enum
import functools
import inspect
import json
import textwrap
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

from .errors import InputError

__all__ = ["FieldRow", "parse_value", "parse_assignments", "merge", "field_rows", "reference_markdown",
           "format_validation_error", "suggest"]

_UNION_TYPES = (typing.Union, types.UnionType)


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


# --- field reference ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FieldRow:
    """One settable key of a config model.

    Attributes
    ----------
    key
        Dotted path from the top model (with the prefix), e.g. ``train.lr``.
    type
        Short type with constraints, e.g. ``float in (0, 10]``, ``"a" | "b"``, ``int | None``.
    default
        JSON rendering of the default (as a ``--set`` value), or ``required``.
    doc
        The field's description or attribute docstring, on one line ("" if none).
    """

    key: str
    type: str
    default: str
    doc: str


def field_rows(model: type[BaseModel], prefix: str = "") -> list[FieldRow]:
    """Every field of ``model``, nested models flattened to dotted keys, in definition order.

    Fields whose type is a model (or an optional model) are replaced by their
    own fields; an optional model also gets a row of its own (it can be set to
    ``null``).  Dicts, lists and unions of several models are single rows.
    The defaults of a nested model's fields are those of the parent's default
    instance when it has one (a ``default_factory=lambda: Sub(x=5)`` shows
    ``5``), else the nested model's own.

    Parameters
    ----------
    model
        A pydantic v2 model class.
    prefix
        Dotted path of ``model`` itself, e.g. ``"train"`` gives ``train.lr``.
    """
    return _rows(model, prefix, None, (model,))


def _rows(model: type[BaseModel], prefix: str, instance: BaseModel | None,
          stack: tuple[type, ...]) -> list[FieldRow]:
    docs = _attribute_docs(model)
    rows: list[FieldRow] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}.{_cli_name(name, field)}" if prefix else _cli_name(name, field)
        has_default = instance is not None or not field.is_required()
        default = getattr(instance, name) if instance is not None else _default_value(field)
        doc = _one_line(field.description if field.description is not None else docs.get(name, ""))
        sub, optional = _sub_model(field.annotation)
        if sub is not None and sub not in stack:
            if optional:
                rows.append(FieldRow(key, _type_string(field), _render_default(default, has_default), doc))
            sub_instance = default if isinstance(default, sub) else None
            rows.extend(_rows(sub, key, sub_instance, stack + (sub,)))
        else:
            rows.append(FieldRow(key, _type_string(field), _render_default(default, has_default), doc))
    return rows


def _cli_name(name: str, field: FieldInfo) -> str:
    """The key the model accepts for a field: its validation alias (a plain string) or alias, else its name."""
    if isinstance(field.validation_alias, str):
        return field.validation_alias
    return field.alias or name


_NO_DEFAULT = object()  # a required field
_COMPUTED = object()  # a default factory that cannot be called here


def _default_value(field: FieldInfo) -> Any:
    if field.default is not PydanticUndefined:
        return field.default
    if field.default_factory is None:
        return _NO_DEFAULT
    try:
        return field.get_default(call_default_factory=True)
    except Exception:  # noqa: BLE001 - a factory taking the validated data, or failing without it
        return _COMPUTED


def _render_default(value: Any, has_default: bool) -> str:
    if not has_default or value is _NO_DEFAULT:
        return "required"
    if value is _COMPUTED:
        return "(computed)"
    try:
        data = to_jsonable_python(value)
        return json.dumps(data, sort_keys=True, ensure_ascii=False)
    except Exception:  # noqa: BLE001 - no JSON form; avoid reprs with memory addresses
        return f"<{type(value).__name__}>"


def _sub_model(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """``(Model, optional)`` when ``annotation`` is a model or ``Model | None``, else ``(None, False)``."""
    annotation = _strip_annotated(annotation)
    if _is_model(annotation):
        return annotation, False
    if typing.get_origin(annotation) in _UNION_TYPES:
        args = [_strip_annotated(a) for a in typing.get_args(annotation)]
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2 and _is_model(rest[0]):
            return rest[0], True
    return None, False


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _strip_annotated(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _type_string(field: FieldInfo) -> str:
    """The field's type with the constraints of its metadata (``int >= 1``; ``int in [1, 8] | None``)."""
    bounds = _constraints(field.metadata)
    annotation = field.annotation
    if bounds and typing.get_origin(annotation) in _UNION_TYPES:
        args = typing.get_args(annotation)
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return f"{_type_name(rest[0])} {bounds} | None"
    return f"{_type_name(annotation)} {bounds}" if bounds else _type_name(annotation)


def _type_name(tp: Any) -> str:
    """Short human rendering of a type annotation."""
    if tp is type(None) or tp is None:
        return "None"
    if tp is Any:
        return "Any"
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        bounds = _constraints(args[1:])
        return f"{_type_name(args[0])} {bounds}" if bounds else _type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(_json_literal(a) for a in args)
    if origin in _UNION_TYPES:
        rest = [a for a in args if a is not type(None)]
        names = [_type_name(a) for a in rest] + (["None"] if len(rest) < len(args) else [])
        return " | ".join(names)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        if not args:
            return name
        return f"{name}[{', '.join('...' if a is Ellipsis else _type_name(a) for a in args)}]"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " | ".join(_json_literal(m.value) for m in tp)
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _json_literal(value: Any) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    try:
        return json.dumps(value, ensure_ascii=False)
    except TypeError:
        return repr(value)


def _constraints(metadata: Any) -> str:
    """``>= 1``, ``in (0, 10]``, ``len >= 1``, ``multiple of 2``... from annotated metadata ("" if none)."""
    found: dict[str, Any] = {}
    for item in metadata:
        items = item.metadata if isinstance(item, FieldInfo) else [item]
        for obj in items:
            for attr in ("gt", "ge", "lt", "le", "multiple_of", "min_length", "max_length", "pattern"):
                value = getattr(obj, attr, None)
                if value is not None:
                    found[attr] = value
    parts = []
    low = ("[", found["ge"]) if "ge" in found else ("(", found["gt"]) if "gt" in found else None
    high = ("]", found["le"]) if "le" in found else (")", found["lt"]) if "lt" in found else None
    if low and high:
        parts.append(f"in {low[0]}{_num(low[1])}, {_num(high[1])}{high[0]}")
    elif low:
        parts.append(f"{'>=' if low[0] == '[' else '>'} {_num(low[1])}")
    elif high:
        parts.append(f"{'<=' if high[0] == ']' else '<'} {_num(high[1])}")
    if "multiple_of" in found:
        parts.append(f"multiple of {_num(found['multiple_of'])}")
    lo_len, hi_len = found.get("min_length"), found.get("max_length")
    if lo_len is not None and hi_len is not None:
        parts.append(f"len in [{lo_len}, {hi_len}]")
    elif lo_len is not None:
        parts.append(f"len >= {lo_len}")
    elif hi_len is not None:
        parts.append(f"len <= {hi_len}")
    if "pattern" in found:
        pattern = getattr(found["pattern"], "pattern", found["pattern"])
        parts.append(f"matching {json.dumps(pattern, ensure_ascii=False)}")
    return ", ".join(parts)


def _num(value: Any) -> str:
    """``0`` for 0.0, ``100000`` for 100_000, ``0.01`` for 0.01."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _one_line(text: str) -> str:
    return " ".join(text.split())


@functools.lru_cache(maxsize=None)
def _attribute_docs(model: type) -> dict[str, str]:
    """Attribute docstrings (a string right after ``name: type = ...``) of ``model`` and its bases.

    Read from the source, so they are found whether or not the model sets
    ``use_attribute_docstrings``; {} where the source is not available.
    """
    docs: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = next((n.body for n in tree.body if isinstance(n, ast.ClassDef)), [])
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def reference_markdown(sections: list[tuple], *, title: str | None = None) -> str:
    """Markdown reference of every settable key: per section a heading and a table.

    Parameters
    ----------
    sections
        ``(title, model, prefix)``: a ``## title`` heading, the model's
        docstring (one line, if it has one) and the table
        ``| key | type | default | meaning |`` with the rows of ``field_rows(model, prefix)``;
        an optional fourth element, a tuple of key prefixes, leaves those rows out (a subtree
        documented in its own section).
    title
        If given, a ``# title`` line first.

    Returns
    -------
    str
        Deterministic text (same models, same text) ending in one newline.
    """
    lines: list[str] = []
    if title is not None:
        lines += [f"# {title}", ""]
    for heading, model, prefix, *rest in sections:
        skip = tuple(rest[0]) if rest else ()
        lines += [f"## {heading}", ""]
        doc = model.__dict__.get("__doc__")
        if doc:
            lines += [_one_line(inspect.cleandoc(doc)), ""]
        lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for row in field_rows(model, prefix):
            if skip and row.key.startswith(skip):
                continue
            cells = [_code(row.key), _code(row.type), _code(row.default), _cell(row.doc)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def _cell(text: str) -> str:
    return _one_line(text).replace("|", "\\|")


def _code(text: str) -> str:
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{_cell(text)}{pad}{fence}"


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
        known = sorted(keys | {k.rsplit(".", i)[0] for k in keys for i in range(1, k.count(".") + 1)})
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
