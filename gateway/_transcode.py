"""HTTP request parts to protobuf requests, and protobuf replies to JSON.

JSON is protobuf's canonical mapping with the proto field names kept (``order_id``),
int64 as strings and timestamps in RFC 3339. A field JSON does not know is refused
(400 naming it), never silently dropped: a typo in a client must not pass unnoticed.

Request bodies also take the design's spellings (:func:`documented_spellings`): an enum
value in its short lower-case form (``"delivery_option": "standard"`` for
``DELIVERY_OPTION_STANDARD``), as query parameters do, and a ``Money`` given as a bare
number of major units of a two-decimal currency (``"price": 14.99``: 1499 minor units,
the currency left to the service, which prices in the restaurant's).
"""

from __future__ import annotations

import base64
import decimal
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, cast

from google.protobuf import descriptor, json_format
from google.protobuf.message import Message

from foodmesh.v1 import options_pb2
from gateway._errors import GatewayError, bad_request

__all__ = [
    "FieldError",
    "apply_body",
    "apply_query",
    "count_problem",
    "decode_json",
    "find_field",
    "message_json",
    "message_to_dict",
    "set_field",
    "unknown_fields",
]

FD = descriptor.FieldDescriptor
_INTS = {
    FD.TYPE_INT32, FD.TYPE_INT64, FD.TYPE_UINT32, FD.TYPE_UINT64, FD.TYPE_SINT32,
    FD.TYPE_SINT64, FD.TYPE_FIXED32, FD.TYPE_FIXED64, FD.TYPE_SFIXED32, FD.TYPE_SFIXED64,
}  # fmt: skip
_FLOATS = {FD.TYPE_DOUBLE, FD.TYPE_FLOAT}
# Well-known types whose JSON form is a string (or a scalar): settable from a query value.
_SCALAR_WKT = {
    "google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask",
    "google.protobuf.StringValue", "google.protobuf.BytesValue", "google.protobuf.BoolValue",
    "google.protobuf.Int32Value", "google.protobuf.Int64Value", "google.protobuf.UInt32Value",
    "google.protobuf.UInt64Value", "google.protobuf.FloatValue", "google.protobuf.DoubleValue",
}  # fmt: skip
# Types whose JSON is free-form: nothing inside them is "unknown".
_OPAQUE = {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue",
           "google.protobuf.Any"}  # fmt: skip


class FieldError(ValueError):
    """A value that cannot be put into a field; ``field`` is its dotted path."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description


def _desc(msg: Message) -> descriptor.Descriptor:
    return cast(descriptor.Descriptor, msg.DESCRIPTOR)


def find_field(desc: descriptor.Descriptor, name: str) -> descriptor.FieldDescriptor | None:
    """The field named ``name`` (proto name or JSON name)."""
    f = desc.fields_by_name.get(name)
    if f is not None:
        return f
    return next((f for f in desc.fields if f.json_name == name), None)


def _enum_value(f: descriptor.FieldDescriptor, text: str) -> int:
    enum = f.enum_type
    assert enum is not None
    if text in enum.values_by_name:
        return int(enum.values_by_name[text].number)
    # The short lowercase form: SEARCH_SORT_RATING is "rating" (prefix = the enum's name).
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
    full = prefix + text.upper()
    if full in enum.values_by_name:
        return int(enum.values_by_name[full].number)
    try:
        number = int(text)
    except ValueError:
        number = None
    if number is not None and number in enum.values_by_number:
        return number
    names = ", ".join(v.name.removeprefix(prefix).lower() for v in enum.values if v.number)
    raise ValueError(f"{text!r} is not a {enum.name}; expected one of: {names}")


def _scalar(f: descriptor.FieldDescriptor, text: str) -> Any:
    t = f.type
    if t == FD.TYPE_STRING:
        return text
    if t == FD.TYPE_BYTES:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if t == FD.TYPE_BOOL:
        low = text.lower()
        if low in ("true", "1"):
            return True
        if low in ("false", "0"):
            return False
        raise ValueError(f"{text!r} is not a boolean (true or false)")
    if t in _INTS:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{text!r} is not an integer") from None
    if t in _FLOATS:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
    if t == FD.TYPE_ENUM:
        return _enum_value(f, text)
    raise ValueError("cannot be given as text")


def set_field(msg: Message, path: str, text: str, *, append: bool = False) -> None:
    """Sets the field at dotted ``path`` from text (a path variable or query value).

    Repeated fields get the value appended when ``append`` is true (repeated query
    parameters), replaced otherwise. Raises :class:`FieldError`.
    """
    names = path.split(".")
    target = msg
    for i, name in enumerate(names):
        where = ".".join(names[: i + 1])
        f = find_field(_desc(target), name)
        if f is None:
            raise FieldError(where, f"no field {name!r} in {target.DESCRIPTOR.full_name}")
        last = i == len(names) - 1
        if f.message_type is not None and (not last or f.message_type.full_name not in _SCALAR_WKT):
            if f.is_repeated:
                raise FieldError(where, "a repeated message cannot be set from the URL")
            if last:
                raise FieldError(where, "is a message: set its fields, e.g. " + where + ".x=")
            target = getattr(target, f.name)
            continue
        if not last:
            raise FieldError(where, "is not a message")
        try:
            if f.message_type is not None:
                sub = getattr(target, f.name)
                json_format.Parse(json.dumps(text), sub)
                return
            value = _scalar(f, text)
        except (ValueError, json_format.ParseError) as exc:
            raise FieldError(path, str(exc)) from None
        try:
            if f.is_repeated:
                field = getattr(target, f.name)
                if not append:
                    del field[:]
                field.append(value)
            else:
                setattr(target, f.name, value)
        except (ValueError, TypeError) as exc:  # out of the field's range
            raise FieldError(path, f"{text[:40]!r}: {exc}") from None
        return


def field_path(desc: descriptor.Descriptor, dotted: str) -> str:
    """``dotted`` with each name as its proto field name (``orderId`` -> ``order_id``)."""
    names = dotted.split(".")
    d: descriptor.Descriptor | None = desc
    for i, name in enumerate(names):
        f = find_field(d, name) if d is not None else None
        if f is None:
            break
        names[i] = f.name
        d = f.message_type
    return ".".join(names)


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def apply_query(
    msg: Message, query: Iterable[tuple[str, str]], *, bound: Iterable[str] = ()
) -> None:
    """Puts query parameters into ``msg`` (``a.b=1``, repeated keys append); 400 on error.

    ``bound`` are the fields the URL path (or the body) sets: a query parameter that
    names one of them, in or around it, is refused, never applied over it.
    """
    desc = _desc(msg)
    taken = [field_path(desc, b) for b in bound]
    problems: list[tuple[str, str]] = []
    for key, value in query:
        if any(_overlaps(field_path(desc, key), t) for t in taken):
            problems.append((key, "is set by the URL path or the body; it cannot be a query "
                                  "parameter here"))  # fmt: skip
            continue
        try:
            set_field(msg, key, value, append=True)
        except FieldError as exc:
            problems.append((exc.field, exc.description))
    if problems:
        raise bad_request(
            "bad query parameters: " + "; ".join(f"{f}: {d}" for f, d in problems), problems
        )


def unknown_fields(data: Any, desc: descriptor.Descriptor, prefix: str = "") -> list[str]:
    """Dotted paths of the keys of JSON ``data`` that ``desc`` has no field for."""
    if not isinstance(data, dict) or desc.full_name in _OPAQUE:
        return []
    found: list[str] = []
    for key, value in data.items():
        where = f"{prefix}{key}"
        f = find_field(desc, key)
        if f is None:
            if key != "@type":
                found.append(where)
            continue
        sub = f.message_type
        if sub is None:
            continue
        if sub.GetOptions().map_entry:
            val = sub.fields_by_name["value"].message_type
            if val is not None and isinstance(value, dict):
                for k, v in value.items():
                    found += unknown_fields(v, val, f"{where}[{k}].")
        elif f.is_repeated and isinstance(value, list):
            for n, item in enumerate(value):
                found += unknown_fields(item, sub, f"{where}[{n}].")
        else:
            found += unknown_fields(value, sub, f"{where}.")
    return found


_FAILED_FIELD = re.compile(r"Failed to parse (\w+) field")


def _parse_error(exc: json_format.ParseError, prefix: str) -> GatewayError:
    # json_format says "Failed to parse items field: Failed to parse quantity field: ...".
    text = str(exc)
    field = ".".join(_FAILED_FIELD.findall(text))
    return bad_request(f"invalid request body: {text}", [(field or prefix, text)])


#: Deepest JSON nesting taken (protobuf's own recursion limit is 100).
MAX_DEPTH = 64


def _too_deep(data: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def decode_json(raw: bytes) -> Any:
    """JSON from a request body; 400 with the line, column and offset when malformed."""
    too_deep = bad_request(
        f"the request body is nested deeper than {MAX_DEPTH} levels",
        [("", f"nested deeper than {MAX_DEPTH} levels")],
    )
    try:
        data = json.loads(raw)
    except RecursionError:
        raise too_deep from None
    except UnicodeDecodeError as exc:
        raise bad_request(
            f"request body is not UTF-8 (byte {exc.start})", [("", "not UTF-8")]
        ) from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno} (char {exc.pos})"
        raise bad_request(
            f"malformed JSON at {where}: {exc.msg}", [("", f"malformed JSON at {where}")]
        ) from None
    if _too_deep(data, MAX_DEPTH):
        raise too_deep
    return data


#: Elements of a repeated field without a declared ``(foodmesh.v1.max_items)``.
UNDECLARED_MAX_ITEMS = 1000


def _max_items(f: descriptor.FieldDescriptor) -> int:
    declared = int(f.GetOptions().Extensions[options_pb2.max_items])
    return declared or UNDECLARED_MAX_ITEMS


def count_problem(
    data: Any, desc: descriptor.Descriptor, prefix: str = ""
) -> tuple[str, int] | None:
    """The first list in JSON ``data`` longer than its field's ``max_items``: (path, cap).

    Each list's length is checked before any of its elements is looked at, so a body of
    a million elements costs one comparison.
    """
    if not isinstance(data, dict) or desc.full_name in _OPAQUE:
        return None
    for key, value in data.items():
        f = find_field(desc, key) if isinstance(value, list | dict) else None
        sub = f.message_type if f is not None else None
        if f is None or (sub is not None and sub.GetOptions().map_entry):
            continue
        where = f"{prefix}{key}"
        if f.is_repeated and isinstance(value, list):
            cap = _max_items(f)
            if len(value) > cap:
                return where, cap
            if sub is not None:
                for n, item in enumerate(value):
                    if (bad := count_problem(item, sub, f"{where}[{n}].")) is not None:
                        return bad
        elif sub is not None and (bad := count_problem(value, sub, f"{where}.")) is not None:
            return bad
    return None


def _check_counts(data: Any, desc: descriptor.Descriptor) -> None:
    if (bad := count_problem(data, desc)) is not None:
        where, cap = bad
        raise bad_request(f"{where}: at most {cap} items", [(where, f"at most {cap} items")])


def _given(data: Any, desc: descriptor.Descriptor, path: str) -> tuple[str, Any] | None:
    """The body's value at proto field ``path``, and the keys as the body spelled them."""
    node, spelled = data, []
    d: descriptor.Descriptor | None = desc
    for name in path.split("."):
        if not isinstance(node, dict) or d is None:
            return None
        found = [(k, f) for k in node if (f := find_field(d, k)) is not None and f.name == name]
        if not found:
            return None
        key, f = found[0]
        spelled.append(key)
        node, d = node[key], f.message_type
    return ".".join(spelled), node


def _path_conflicts(data: Any, bound: Mapping[str, str], desc: descriptor.Descriptor) -> None:
    """400 when the body gives a field the URL path sets a value other than the path's."""
    problems: list[tuple[str, str]] = []
    for path, text in bound.items():
        given = _given(data, desc, field_path(desc, path))
        if given is None:
            continue
        where, value = given
        if (value if isinstance(value, str) else json.dumps(value)) != text:
            problems.append((where, f"the URL path sets it to {text[:64]!r}"))
    if problems:
        raise bad_request(
            "the body cannot change what the URL path names: " + ", ".join(f for f, _ in problems),
            problems,
        )


def apply_body(
    msg: Message, body_field: str, raw: bytes, *, bound: Mapping[str, str] | None = None
) -> None:
    """Parses the JSON body into ``msg`` (``*``) or into its field ``body_field``.

    Refuses (400) a list longer than its field's cap before parsing into ``msg``, and
    a body that gives a field set by the URL path (``bound``: path -> value) another
    value. CPU-bound on large bodies: callers run those in a worker thread.
    """
    if not raw.strip():
        return
    data = decode_json(raw)
    desc = _desc(msg)
    if body_field == "*":
        if not isinstance(data, dict):
            raise bad_request("the request body must be a JSON object", [("", "not an object")])
        _check_counts(data, desc)
        if bound:
            _path_conflicts(data, bound, desc)
        unknown = unknown_fields(data, desc)
        doc: Any = data
    else:
        f = desc.fields_by_name[body_field]
        _check_counts({body_field: data}, desc)
        unknown = []
        if f.message_type is not None and not f.is_repeated:
            unknown = unknown_fields(data, f.message_type, f"{body_field}.")
        doc = {f.json_name: data}
    if unknown:
        raise bad_request(
            "unknown fields in the request body: " + ", ".join(unknown),
            [(u, "unknown field") for u in unknown],
        )
    if body_field == "*":
        doc = documented_spellings(doc, desc)
    elif f.message_type is not None and not f.is_repeated:
        doc = {f.json_name: documented_spellings(data, f.message_type, f"{body_field}.")}
    try:
        json_format.ParseDict(doc, msg)
    except json_format.ParseError as exc:
        raise _parse_error(exc, "" if body_field == "*" else body_field) from None


_MONEY = "foodmesh.v1.Money"


def _money_number(value: float | int, where: str) -> dict[str, str]:
    try:
        minor = decimal.Decimal(str(value)) * 100
    except decimal.InvalidOperation:
        raise bad_request(f"{where}: not a number", [(where, "not a number")]) from None
    if not minor.is_finite() or minor != minor.to_integral_value() or abs(minor) >= 2**63:
        raise bad_request(f"{where}: {value} is not an amount in cents",
                          [(where, "an amount of money has at most 2 decimals")])  # fmt: skip
    return {"amount_minor": str(int(minor))}


def _enum_name(f: descriptor.FieldDescriptor, value: Any, where: str) -> Any:
    enum = f.enum_type
    assert enum is not None
    if not isinstance(value, str) or value in enum.values_by_name:
        return value
    try:
        return enum.values_by_number[_enum_value(f, value)].name
    except ValueError as exc:
        raise bad_request(f"{where}: {exc}", [(where, str(exc))]) from None


def _spelled(f: descriptor.FieldDescriptor, value: Any, where: str) -> Any:
    """One value of field ``f`` in protobuf's spelling."""
    if f.type == FD.TYPE_ENUM:
        return _enum_name(f, value, where)
    sub = f.message_type
    if sub is None or sub.GetOptions().map_entry:
        return value
    if sub.full_name == _MONEY and isinstance(value, int | float) and not isinstance(value, bool):
        return _money_number(value, where)
    return documented_spellings(value, sub, f"{where}.")


def documented_spellings(data: Any, desc: descriptor.Descriptor, prefix: str = "") -> Any:
    """``data`` with the design's spellings put in protobuf's: short enum names, Money as a
    bare number (see the module's docstring). Anything else is left for the parser."""
    if not isinstance(data, dict) or desc.full_name in _OPAQUE:
        return data
    out = dict(data)
    for key, value in data.items():
        f = find_field(desc, key)
        if f is None or value is None:
            continue
        where = f"{prefix}{key}"
        if f.is_repeated and isinstance(value, list):
            out[key] = [_spelled(f, v, f"{where}[{n}]") for n, v in enumerate(value)]
        else:
            out[key] = _spelled(f, value, where)
    return out


def message_to_dict(msg: Message) -> dict[str, Any]:
    """The JSON object of a reply: proto field names, zero values included."""
    return json_format.MessageToDict(
        msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def message_json(msg: Message, *, response_body: str = "") -> bytes:
    """Serialized JSON of a reply (or of its ``response_body`` field)."""
    doc: Any = message_to_dict(msg)
    if response_body:
        doc = doc.get(response_body)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
