"""Hypothesis strategies for any compiled .x file, derived from the compiler's model.

Deriving them from `gssproxy_py.xdrgen.resolve.Model` (rather than writing them
by hand) means every type of every .x file gets a round-trip test, and a new
type in the IDL is covered without touching the tests.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from hypothesis import strategies as st

from gssproxy_py.xdrgen.resolve import Kind, Model, Shape, class_name

_INT_RANGES = {
    Kind.INT: (-(1 << 31), (1 << 31) - 1),
    Kind.UINT: (0, (1 << 32) - 1),
    Kind.HYPER: (-(1 << 63), (1 << 63) - 1),
    Kind.UHYPER: (0, (1 << 64) - 1),
}


def load_generated(code: str, module_name: str) -> types.ModuleType:
    """Import generated source as a module (registered, as dataclasses need)."""
    mod = types.ModuleType(module_name)
    sys.modules[module_name] = mod
    exec(compile(code, f"<{module_name}>", "exec"), mod.__dict__)
    importlib.invalidate_caches()
    return mod


def union_arm_classes(mod: types.ModuleType, union_name: str) -> list[type]:
    alias = getattr(mod, class_name(union_name))
    assert isinstance(alias, str), alias
    return [getattr(mod, n.strip()) for n in alias.split("|")]


class Strategies:
    """Builds a strategy for each named type of one generated module."""

    def __init__(self, model: Model, mod: types.ModuleType, *, max_items: int = 3) -> None:
        self.m = model
        self.mod = mod
        self.max_items = max_items
        self._named: dict[str, st.SearchStrategy[Any]] = {}

    def named(self, name: str) -> st.SearchStrategy[Any]:
        if name not in self._named:
            # deferred: recursive types refer to themselves while being built
            self._named[name] = st.deferred(lambda: self._build(name))
        return self._named[name]

    def _build(self, name: str) -> st.SearchStrategy[Any]:
        m = self.m
        if name in m.enums:
            return st.sampled_from(list(getattr(self.mod, class_name(name))))
        if name in m.typedefs:
            return self.shape(m.typedefs[name].shape)
        if name in m.structs:
            s = m.structs[name]
            cls = getattr(self.mod, class_name(name))
            fields = [self.shape(f.shape) for f in s.fields]
            if s.linked_list:
                last = st.none() | st.deferred(lambda: self.named(name))
                fields[-1] = last
            return st.builds(cls, *fields)
        u = m.unions[name]
        arms = union_arm_classes(self.mod, name)
        disc = u.discriminant.shape
        options: list[st.SearchStrategy[Any]] = []
        all_arms = [*u.arms, *([u.default] if u.default else [])]
        taken = {v for a in u.arms for v in a.values}
        for cls, arm in zip(arms, all_arms, strict=True):
            value = [] if arm.field is None else [self.shape(arm.field.shape)]
            if len(arm.values) == 1:
                options.append(st.builds(cls, *value))
            else:
                discs = self._disc_values(disc, arm.values if arm.values else None, taken)
                if discs is not None:  # a default arm that no enum member can reach
                    options.append(st.builds(cls, discs, *value))
        return st.one_of(options)

    def _disc_values(
        self, disc: Shape, values: tuple[int, ...] | None, taken: set[int]
    ) -> st.SearchStrategy[Any] | None:
        if disc.kind is Kind.ENUM:
            assert disc.name is not None
            members = list(getattr(self.mod, class_name(disc.name)))
            pool = [x for x in members if (int(x) in values if values else int(x) not in taken)]
            return st.sampled_from(pool) if pool else None
        if disc.kind is Kind.BOOL:
            pool_b = [
                b for b in (False, True) if (int(b) in values if values else int(b) not in taken)
            ]
            return st.sampled_from(pool_b) if pool_b else None
        if values:
            return st.sampled_from(list(values))
        lo, hi = _INT_RANGES[disc.kind]
        return st.integers(lo, hi).filter(lambda x: x not in taken)

    def shape(self, s: Shape) -> st.SearchStrategy[Any]:
        k = s.kind
        if k in _INT_RANGES:
            lo, hi = _INT_RANGES[k]
            return st.integers(lo, hi)
        if k is Kind.BOOL:
            return st.booleans()
        if k is Kind.FLOAT:
            return st.floats(width=32, allow_nan=False)
        if k is Kind.DOUBLE:
            return st.floats(allow_nan=False)
        if k in (Kind.ENUM, Kind.STRUCT, Kind.UNION):
            assert s.name is not None
            return self.named(s.name)
        if k is Kind.VOID:
            return st.none()
        if k is Kind.FIXED_OPAQUE:
            return st.binary(min_size=s.size or 0, max_size=s.size or 0)
        if k in (Kind.VAR_OPAQUE, Kind.STRING):
            top = 40 if s.size is None else min(s.size, 40)
            return st.binary(max_size=top)
        assert s.elem is not None
        elem = self.shape(s.elem)
        if k is Kind.OPTIONAL:
            return st.none() | elem
        if k is Kind.FIXED_ARRAY:
            n = s.size or 0
            return st.lists(elem, min_size=n, max_size=n).map(tuple)
        top = self.max_items if s.size is None else min(s.size, self.max_items)
        return st.lists(elem, max_size=top).map(tuple)

    def all_type_names(self) -> list[str]:
        m = self.m
        return [*m.enums, *m.typedefs, *m.structs, *m.unions]
