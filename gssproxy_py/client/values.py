"""Generated XDR dataclasses to and from plain JSON values, for any program.

The walk is driven by the dataclasses themselves: a field's annotation (a
string, since generated modules use postponed annotations) is parsed against
its module's namespace, which tells apart bytes, ints, bools, enums, nested
structs, optional data (`T | None`), arrays (`tuple[T, ...]`) and unions (an
alias of `A | B | C`, one class per arm). Type aliases are followed but
remembered, so a `gssx_OID` can be shown as an OID and not just as bytes.

JSON shapes, both ways:

* bytes: a string when the bytes are printable UTF-8 (one trailing NUL
  allowed, written `\\u0000`, since GSS-Proxy option names carry one), else
  `{"hex": "..."}`; an OID field also gets `{"oid": "1.2.840...", "hex": ...}`.
  Input also takes `{"oid": ...}`, `{"text": ...}` and `{"cstr": ...}` (text
  with a NUL appended);
* enums by member name (input: name, case-insensitive, or number);
* a struct as an object; on input, missing fields take their defaults, so
  `{}` is the all-default value;
* a union as `{"ArmClassName": {...}}` (input also takes the arm's single
  field name, e.g. `{"cred_info": {...}}`);
* optional data as null or the value, arrays as lists.

Every shape printed by `to_json` is accepted by `from_json` and gives back an
equal value.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.machinery import EXTENSION_SUFFIXES
from typing import Any, Final, TypeAlias

from gssproxy_py import compiled
from gssproxy_py.errors import LocalError
from gssproxy_py.vocab.oids import OidError, decode_oid, encode_oid

_PRIMITIVES: Final = {"bytes": bytes, "int": int, "bool": bool, "str": str, "float": float}


class JsonValueError(LocalError, ValueError):
    """A JSON value does not fit the XDR type it is meant for."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        super().__init__(f"{where}: {message}")


# -- type descriptors -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Prim:
    """A primitive; `aliases` are the typedef names it was reached through."""

    kind: type[Any]
    aliases: tuple[str, ...] = ()

    @property
    def is_oid(self) -> bool:
        return self.kind is bytes and any(a.upper().endswith("OID") for a in self.aliases)


@dataclass(frozen=True, slots=True)
class EnumType:
    cls: type[enum.IntEnum]


@dataclass(frozen=True, slots=True)
class StructType:
    cls: type[Any]


@dataclass(frozen=True, slots=True)
class OptionalType:
    inner: TypeDesc


@dataclass(frozen=True, slots=True)
class SeqType:
    inner: TypeDesc


@dataclass(frozen=True, slots=True)
class UnionType:
    name: str
    arms: tuple[type[Any], ...]


TypeDesc: TypeAlias = "Prim | EnumType | StructType | OptionalType | SeqType | UnionType"


def describe(annotation: str | type[Any], namespace: Mapping[str, Any]) -> TypeDesc:
    """The descriptor of one annotation as the generator writes them."""
    if not isinstance(annotation, str):
        return _describe_object(annotation)
    text = annotation.strip()
    parts = _split_top(text, "|")
    if len(parts) > 1:
        optional = "None" in parts
        rest = [p for p in parts if p != "None"]
        if len(rest) == 1:
            inner = describe(rest[0], namespace)
        else:
            arms = tuple(_arm_class(p, namespace) for p in rest)
            inner = UnionType(" | ".join(rest), arms)
        return OptionalType(inner) if optional else inner
    if text.startswith("tuple[") and text.endswith(", ...]"):
        return SeqType(describe(text[len("tuple[") : -len(", ...]")], namespace))
    if text in _PRIMITIVES:
        return Prim(_PRIMITIVES[text])
    if text not in namespace:
        raise TypeError(f"cannot resolve the annotation {text!r}")
    obj = namespace[text]
    if isinstance(obj, str):
        desc = describe(obj, namespace)
        if isinstance(desc, Prim):
            return Prim(desc.kind, (text, *desc.aliases))
        if isinstance(desc, UnionType):
            return UnionType(text, desc.arms)
        return desc
    return _describe_object(obj)


def _describe_object(obj: Any) -> TypeDesc:
    if isinstance(obj, type):
        if issubclass(obj, enum.IntEnum):
            return EnumType(obj)
        if dataclasses.is_dataclass(obj):
            return StructType(obj)
        if obj in _PRIMITIVES.values():
            return Prim(obj)
    raise TypeError(f"unsupported annotation {obj!r}")


def _arm_class(text: str, namespace: Mapping[str, Any]) -> type[Any]:
    obj = namespace.get(text.strip())
    if not (isinstance(obj, type) and dataclasses.is_dataclass(obj)):
        raise TypeError(f"union arm {text!r} is not a generated dataclass")
    return obj


def _split_top(text: str, sep: str) -> list[str]:
    """Split on sep outside brackets: "tuple[A | B, ...] | None" -> 2 parts."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


_FIELDS: dict[type[Any], tuple[tuple[str, TypeDesc], ...]] = {}


def struct_fields(cls: type[Any]) -> tuple[tuple[str, TypeDesc], ...]:
    """(name, descriptor) of each field of a generated dataclass, in order.

    The discriminant of a single-case union arm is a property, not a
    dataclass field, so an arm lists only what it carries. Results are
    cached per class (a race between threads only computes the same tuple
    twice).
    """
    cached = _FIELDS.get(cls)
    if cached is not None:
        return cached
    module = sys.modules[cls.__module__]
    namespace = vars(module)
    annotations: dict[str, Any] = {}
    origin = getattr(module, "__file__", None) or ""  # none for code built in memory
    if origin.endswith(tuple(EXTENSION_SUFFIXES)):
        annotations = _source_annotations(cls)
    else:
        for klass in reversed(cls.__mro__):
            annotations.update(getattr(klass, "__annotations__", {}))
    fields = tuple(
        (f.name, describe(annotations[f.name], namespace)) for f in dataclasses.fields(cls)
    )
    _FIELDS[cls] = fields
    return fields


def _source_annotations(cls: type[Any]) -> dict[str, str]:
    """A class's field annotations as written in its module's .py file.

    A module compiled with mypyc (gssproxy_py/compiled.py) keeps only the
    runtime classes in `__annotations__` (`tuple`, not `tuple[GssxOption,
    ...]`, names qualified); its source, which the build keeps beside the
    extension, still has the text the descriptors are made from.
    """
    source = compiled.source_of(cls.__module__)
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            return {
                item.target.id: ast.unparse(item.annotation)
                for item in node.body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            }
    raise TypeError(f"no class {cls.__name__} in {source}")


#: What a procedure table gives as an argument or result type: a class, or the
#: tuple of arm classes of a union.
ProcType: TypeAlias = "type[Any] | tuple[type[Any], ...]"


def type_name(tp: ProcType) -> str:
    """A procedure type for messages: the class name, or the arms joined by `|`."""
    if isinstance(tp, tuple):
        return " | ".join(arm.__name__ for arm in tp)
    return tp.__name__


def describe_type(tp: ProcType) -> TypeDesc:
    """The descriptor of a whole generated type (a struct, enum, primitive or union)."""
    if isinstance(tp, tuple):
        return UnionType(type_name(tp), tp)
    return _describe_object(tp)


# -- defaults -------------------------------------------------------------------


def default_value(desc: TypeDesc) -> Any:
    """The all-zero value: empty bytes and arrays, 0, False, None for optional
    data, an enum's first member, a union's first arm."""
    if isinstance(desc, Prim):
        return desc.kind()
    if isinstance(desc, EnumType):
        return next(iter(desc.cls))
    if isinstance(desc, OptionalType):
        return None
    if isinstance(desc, SeqType):
        return ()
    if isinstance(desc, UnionType):
        return default_value(StructType(desc.arms[0]))
    return desc.cls(**{name: default_value(d) for name, d in struct_fields(desc.cls)})


def default_of(tp: ProcType) -> Any:
    return default_value(describe_type(tp))


# -- to JSON --------------------------------------------------------------------


def bytes_to_json(data: bytes, *, oid: bool = False) -> Any:
    if oid and data:
        try:
            return {"oid": decode_oid(data), "hex": data.hex()}
        except OidError:
            pass  # a malformed OID still prints, as hex
    text = printable_text(data)
    return text if text is not None else {"hex": data.hex()}


def printable_text(data: bytes) -> str | None:
    """data as text if it is printable UTF-8 with at most one trailing NUL."""
    body = data[:-1] if data.endswith(b"\0") else data
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text.isprintable():
        return None
    return data.decode("utf-8")


def to_json(value: Any, desc: TypeDesc) -> Any:
    """A JSON-serialisable view of value (see the module docstring)."""
    if isinstance(desc, Prim):
        if desc.kind is bytes:
            return bytes_to_json(value, oid=desc.is_oid)
        return value
    if isinstance(desc, EnumType):
        return value.name if isinstance(value, enum.Enum) else value
    if isinstance(desc, OptionalType):
        return None if value is None else to_json(value, desc.inner)
    if isinstance(desc, SeqType):
        return [to_json(v, desc.inner) for v in value]
    if isinstance(desc, UnionType):
        return {type(value).__name__: struct_to_json(value)}
    return struct_to_json(value)


def struct_to_json(value: Any) -> dict[str, Any]:
    return {name: to_json(getattr(value, name), d) for name, d in struct_fields(type(value))}


def value_to_json(value: Any) -> Any:
    """to_json for a whole generated value (None for void)."""
    if value is None:
        return None
    return to_json(value, describe_type(type(value)))


# -- from JSON ------------------------------------------------------------------


def from_json(data: Any, desc: TypeDesc, where: str = "$") -> Any:
    """The value of type desc that data describes; JsonValueError if none."""
    if isinstance(desc, Prim):
        return _prim_from_json(data, desc, where)
    if isinstance(desc, EnumType):
        return _enum_from_json(data, desc.cls, where)
    if isinstance(desc, OptionalType):
        return None if data is None else from_json(data, desc.inner, where)
    if isinstance(desc, SeqType):
        if not isinstance(data, list):
            raise JsonValueError(where, f"expected a list, got {_kind(data)}")
        return tuple(from_json(v, desc.inner, f"{where}[{i}]") for i, v in enumerate(data))
    if isinstance(desc, UnionType):
        return _union_from_json(data, desc, where)
    return struct_from_json(data, desc.cls, where)


def struct_from_json(data: Any, cls: type[Any], where: str = "$") -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise JsonValueError(where, f"expected an object for {cls.__name__}, got {_kind(data)}")
    fields = struct_fields(cls)
    known = {name for name, _ in fields}
    unknown = sorted(set(data) - known)
    if unknown:
        raise JsonValueError(
            where,
            f"{cls.__name__} has no field {', '.join(map(repr, unknown))} "
            f"(fields: {', '.join(n for n, _ in fields)})",
        )
    kwargs = {
        name: from_json(data[name], d, f"{where}.{name}") if name in data else default_value(d)
        for name, d in fields
    }
    return cls(**kwargs)


def _prim_from_json(data: Any, desc: Prim, where: str) -> Any:
    kind = desc.kind
    if kind is bytes:
        return _bytes_from_json(data, where)
    if kind is bool:
        if isinstance(data, bool):
            return data
        raise JsonValueError(where, f"expected true or false, got {_kind(data)}")
    if kind is int:
        if isinstance(data, int) and not isinstance(data, bool):
            return data
        if isinstance(data, str):
            try:
                return int(data, 0)  # "0x10" for flag words
            except ValueError:
                pass
        raise JsonValueError(where, f"expected an integer, got {_kind(data)}")
    if kind is str and isinstance(data, str):
        return data
    if kind is float and isinstance(data, int | float) and not isinstance(data, bool):
        return float(data)
    raise JsonValueError(where, f"expected {kind.__name__}, got {_kind(data)}")


def _bytes_from_json(data: Any, where: str) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    _check_bytes_object(data, where)
    if "text" in data:
        return bytes(data["text"].encode("utf-8"))
    if "cstr" in data:
        return bytes(data["cstr"].encode("utf-8") + b"\0")
    out = _hex_from_json(data["hex"], where) if "hex" in data else None
    if "oid" in data:
        try:
            oid = encode_oid(data["oid"])
        except OidError as e:
            raise JsonValueError(where, str(e)) from None
        if out is not None and out != oid:
            raise JsonValueError(where, f"oid {data['oid']} and hex {data['hex']} disagree")
        out = oid
    assert out is not None
    return out


def _check_bytes_object(data: Any, where: str) -> None:
    """`data` is one of the object shapes bytes take, with string values."""
    if not isinstance(data, dict) or not data:
        raise JsonValueError(where, f'expected a string or {{"hex": ...}}, got {_kind(data)}')
    keys = set(data)
    if not keys <= {"hex", "oid", "text", "cstr"} or (len(keys) > 1 and keys != {"hex", "oid"}):
        raise JsonValueError(
            where, 'bytes are "text", {"hex": ...}, {"oid": ...}, {"text": ...} or {"cstr": ...}'
        )
    for key, v in data.items():
        if not isinstance(v, str):
            raise JsonValueError(where, f'"{key}" needs a string, got {_kind(v)}')


def _hex_from_json(text: str, where: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise JsonValueError(where, f"not hex: {text!r}") from None


def _enum_from_json(data: Any, cls: type[enum.IntEnum], where: str) -> enum.IntEnum:
    if isinstance(data, str):
        for member in cls:
            if member.name.upper() == data.strip().upper():
                return member
    elif isinstance(data, int) and not isinstance(data, bool):
        try:
            return cls(data)
        except ValueError:
            pass
    names = ", ".join(m.name for m in cls)
    raise JsonValueError(where, f"{data!r} is not a {cls.__name__} ({names})")


def _union_from_json(data: Any, desc: UnionType, where: str) -> Any:
    if not isinstance(data, dict) or len(data) != 1:
        raise JsonValueError(where, f"a union is {{ARM: {{...}}}} with one of {_arm_names(desc)}")
    ((key, body),) = data.items()
    for arm in desc.arms:
        fields = struct_fields(arm)
        if key == arm.__name__:
            return struct_from_json(body, arm, f"{where}.{key}")
        if len(fields) == 1 and key == fields[0][0]:
            # The arm named by its one field: the value is that field's.
            return arm(from_json(body, fields[0][1], f"{where}.{key}"))
    raise JsonValueError(where, f"{key!r} is not an arm; use one of {_arm_names(desc)}")


def _arm_names(desc: UnionType) -> str:
    return ", ".join(a.__name__ for a in desc.arms)


def _kind(data: Any) -> str:
    if data is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string"}.get(
        type(data), "a list" if isinstance(data, list) else "an object"
    )


def value_from_json(data: Any, tp: ProcType) -> Any:
    """from_json for a whole generated type."""
    return from_json(data, describe_type(tp))


__all__ = [
    "EnumType",
    "JsonValueError",
    "OptionalType",
    "Prim",
    "SeqType",
    "StructType",
    "TypeDesc",
    "UnionType",
    "bytes_to_json",
    "default_of",
    "default_value",
    "describe",
    "describe_type",
    "from_json",
    "printable_text",
    "struct_fields",
    "struct_from_json",
    "struct_to_json",
    "to_json",
    "value_from_json",
    "value_to_json",
]
