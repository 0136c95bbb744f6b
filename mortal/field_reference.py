"""The reference of every settable key of nested pydantic config models.

:func:`field_rows` lists each field of a model, nested models flattened to
dotted keys, with its type and constraints, default and meaning (a
:class:`FieldRow`); :func:`reference_markdown` renders those rows as the
markdown tables of ``docs/config.md``.  Defaults are rendered as JSON, as a
``--set`` value (:mod:`mortal.options`), so a default can be copied into a
``--set`` as is.  Meanings are the fields' descriptions: models set
``use_attribute_docstrings=True`` so that pydantic takes them from the
docstring under each field.

This module knows nothing of the project's models and imports nothing from ``mortal``.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

__all__ = ["FieldRow", "field_rows", "reference_markdown"]

_UNION_TYPES = (typing.Union, types.UnionType)


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
    rows: list[FieldRow] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        has_default = instance is not None or not field.is_required()
        default = getattr(instance, name) if instance is not None else _default_value(field)
        doc = _one_line(field.description or "")
        sub, optional = _sub_model(field.annotation)
        if sub is not None and sub not in stack:
            if optional:
                rows.append(FieldRow(key, _type_string(field), _render_default(default, has_default), doc))
            sub_instance = default if isinstance(default, sub) else None
            rows.extend(_rows(sub, key, sub_instance, stack + (sub,)))
        else:
            rows.append(FieldRow(key, _type_string(field), _render_default(default, has_default), doc))
    return rows


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
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _json_literal(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except TypeError:
        return repr(value)


def _constraints(metadata: Any) -> str:
    """``>= 1``, ``in (0, 10]``, ``< 1``... from annotated metadata ("" if none)."""
    found: dict[str, Any] = {}
    for item in metadata:
        items = item.metadata if isinstance(item, FieldInfo) else [item]
        for obj in items:
            for attr in ("gt", "ge", "lt", "le"):
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
