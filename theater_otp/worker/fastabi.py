"""Faster component calls for wasmtime-py 50.0.1 (the pinned version).

wasmtime-py converts every `list<u8>` element through a Python ValType call
(~4 µs per byte each way) and rebuilds the function's type on every call
(~300 µs). Actor messages and state are `list<u8>`, so both costs sit on the
hot path. This module:

* `install()`: replaces `ListType.convert_to_c` / `convert_from_c` for byte
  lists with a bulk copy (one memmove of pre-laid-out value structs; other
  element types keep the original code);
* `TypedFunc`: a callable over a component `Func` that looks its type up once
  and plans each parameter's and the result's conversion from it (records,
  lists, tuples, options and results included: the stock path asks the C API
  for a record's field types on every value, ~250 µs for an HTTP request).

Both only use the pinned release's own ctypes structures; tests/test_fastabi.py
checks they give the same values as the stock path.
"""

from __future__ import annotations

import ctypes
from ctypes import byref, pointer
from types import ModuleType
from typing import Any

import wasmtime
import wasmtime.component as wc
from wasmtime import _bindings
from wasmtime import _ffi as ffi
from wasmtime.component import _types
from wasmtime.component._enter import enter_wasm

_VAL = ffi.wasmtime_component_val_t
_SIZE = ctypes.sizeof(_VAL)
_OF = _VAL.of.offset
_K_RESULT = ffi.WASMTIME_COMPONENT_RESULT.value
_U8 = ffi.WASMTIME_COMPONENT_U8.value
_LIST = ffi.WASMTIME_COMPONENT_LIST.value

_stock_to_c = _types.ListType.convert_to_c
_stock_from_c = _types.ListType.convert_from_c
_stock_result_to_c = _types.ResultType.convert_to_c
_installed = False


class Ok:
    """An explicit `ok` for a host function's `result` (needed when ok and err look alike)."""

    __slots__ = ("value",)

    def __init__(self, value: Any = None):
        self.value = value


class Err:
    """An explicit `err` for a host function's `result`, e.g. `result<option<list<u8>>, string>`,
    where wasmtime-py's untagged guess would take a str for the ok case."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


def _result_to_c(self: _types.ResultType, store: Any, val: Any, ptr: Any) -> None:
    if not isinstance(val, (Ok, Err)):
        return _stock_result_to_c(self, store, val, ptr)
    case_ty = self.ok if isinstance(val, Ok) else self.err
    ptr.contents.kind = _K_RESULT
    ptr.contents.of.result.is_ok = isinstance(val, Ok)
    if case_ty is None:
        ptr.contents.of.result.val = None
        return
    raw = _VAL()
    lowerer(case_ty)(store, val.value, raw)
    ptr.contents.of.result.val = ffi.wasmtime_component_val_new(byref(raw))


def _bytes_to_c(self: _types.ListType, store: Any, val: Any, ptr: Any) -> None:
    if not isinstance(val, (bytes, bytearray)) or not self._is_bytes():
        return _stock_to_c(self, store, val, ptr)
    _lower_bytes(val, ptr)


def _lower_bytes(val: bytes | bytearray, ptr: Any) -> None:
    """Write `val` as a list<u8> value into `*ptr`."""
    _lower_bytes_into(val, ptr.contents)


def _lower_bytes_into(val: bytes | bytearray, c: Any) -> None:
    """Write `val` as a list<u8> value into the value struct `c`: one memmove of pre-laid-out u8
    value structs."""
    if not isinstance(val, (bytes, bytearray)):
        raise TypeError(f"expected bytes, got {type(val).__name__}")
    n = len(val)
    raw = ffi.wasmtime_component_vallist_t()
    ffi.wasmtime_component_vallist_new_uninit(raw, n)
    if n:
        layout = bytearray(n * _SIZE)
        layout[0::_SIZE] = bytes((_U8,)) * n
        layout[_OF::_SIZE] = val
        ctypes.memmove(raw.data, (ctypes.c_char * len(layout)).from_buffer(layout), len(layout))
    c.kind = _LIST
    c.of.list = raw


def _bytes_from_c(self: _types.ListType, c: Any) -> Any:
    if not self._is_bytes():
        return _stock_from_c(self, c)
    return _lift_bytes(c)


def _lift_bytes(c: Any) -> bytes:
    """Read a list<u8> value in one copy, then free it."""
    lst = c.of.list
    try:
        n = lst.size
        return ctypes.string_at(lst.data, n * _SIZE)[_OF::_SIZE] if n else b""
    finally:
        ffi.wasmtime_component_vallist_delete(byref(lst))


def install() -> None:
    """Switch byte-list conversion to the bulk path and let host results be `Ok`/`Err` (idempotent)."""
    global _installed
    if not _installed:
        # replacing wasmtime's methods is the point of this module: mypy flags any method assignment
        _types.ListType.convert_to_c = _bytes_to_c  # type: ignore[method-assign]
        _types.ListType.convert_from_c = _bytes_from_c  # type: ignore[method-assign]
        _types.ResultType.convert_to_c = _result_to_c  # type: ignore[method-assign]
        _installed = True


_K = ffi
_SIMPLE = {
    # ValType class -> (kind constant, union field)
    _types.Bool: (_K.WASMTIME_COMPONENT_BOOL.value, "boolean"),
    _types.S8: (_K.WASMTIME_COMPONENT_S8.value, "s8"), _types.U8: (_K.WASMTIME_COMPONENT_U8.value, "u8"),
    _types.S16: (_K.WASMTIME_COMPONENT_S16.value, "s16"), _types.U16: (_K.WASMTIME_COMPONENT_U16.value, "u16"),
    _types.S32: (_K.WASMTIME_COMPONENT_S32.value, "s32"), _types.U32: (_K.WASMTIME_COMPONENT_U32.value, "u32"),
    _types.S64: (_K.WASMTIME_COMPONENT_S64.value, "s64"), _types.U64: (_K.WASMTIME_COMPONENT_U64.value, "u64"),
    _types.F32: (_K.WASMTIME_COMPONENT_F32.value, "f32"), _types.F64: (_K.WASMTIME_COMPONENT_F64.value, "f64"),
}
_BOOL = _K.WASMTIME_COMPONENT_BOOL.value
_STRING = _K.WASMTIME_COMPONENT_STRING.value
_TUPLE = _K.WASMTIME_COMPONENT_TUPLE.value
_OPTION = _K.WASMTIME_COMPONENT_OPTION.value
_RESULT = _K.WASMTIME_COMPONENT_RESULT.value
_RECORD = _K.WASMTIME_COMPONENT_RECORD.value
_CHAR = _K.WASMTIME_COMPONENT_CHAR.value
_BYTES = 100  # the C converter's code for list<u8>


# wasm_byte_vec_new with a char* source, so a Python bytes object is passed without a ctypes copy
# (wasmtime's own prototype takes a uint8_t*, which would need one); a separate function object,
# so wasmtime's prototype is left as it is.
_byte_vec_new = _bindings.dll["wasm_byte_vec_new"]
_byte_vec_new.restype = None
_byte_vec_new.argtypes = [ctypes.POINTER(ffi.wasm_byte_vec_t), ctypes.c_size_t, ctypes.c_char_p]


def _forget(val: Any) -> None:
    """Mark a lifted (already freed) child so its container's delete skips it."""
    val.kind = _BOOL
    val.of.boolean = False


def lowerer(ty: Any):
    """A function (store, value, c) that writes `value` as `ty` into the value struct `c` (in place:
    an element of the array or container being built, so no ctypes pointer is made per value);
    types resolved once."""
    cls = type(ty)
    if cls in _SIMPLE:
        kind, name = _SIMPLE[cls]

        def lower_simple(store, val, c):
            c.kind = kind
            setattr(c.of, name, val)
        return lower_simple
    if cls is _types.String:
        def lower_string(store, val, c):
            if not isinstance(val, str):
                raise TypeError("expected str")
            data = val.encode("utf-8")
            c.kind = _STRING
            _byte_vec_new(byref(c.of.string), len(data), data)
        return lower_string
    if cls is _types.ListType and ty._is_bytes():
        return lambda store, val, c: _lower_bytes_into(val, c)
    if cls is _types.TupleType:
        parts = [lowerer(e) for e in ty.elements]
        count = len(parts)

        def lower_tuple(store, val, c):
            if not isinstance(val, tuple) or len(val) != count:
                raise TypeError(f"expected a tuple of {count}")
            raw = ffi.wasmtime_component_valtuple_t()
            ffi.wasmtime_component_valtuple_new_uninit(raw, count)
            data = raw.data
            done = 0
            try:
                for lower, element in zip(parts, val):
                    lower(store, element, data[done])
                    done += 1
            except BaseException:
                for j in range(done, count):
                    _forget(data[j])
                ffi.wasmtime_component_valtuple_delete(byref(raw))
                raise
            c.kind = _TUPLE
            c.of.tuple = raw
        return lower_tuple
    if cls is _types.OptionType and not ty._tagged():
        inner = lowerer(ty.payload)

        def lower_option(store, val, c):
            c.kind = _OPTION
            if val is None:
                c.of.option = None
                return
            raw = _VAL()
            inner(store, val, raw)
            c.of.option = ffi.wasmtime_component_val_new(byref(raw))
        return lower_option
    if cls is _types.ResultType and not ty._tagged():
        cases = []
        for name, case_ty in ty._cases():
            classes: set = set()
            if case_ty is None:
                classes.add(type(None))
            else:
                case_ty.add_classes(classes)
            cases.append((name == "ok", tuple(classes), lowerer(case_ty) if case_ty is not None else None))

        def lower_result(store, val, c):
            for is_ok, classes, inner in cases:
                if isinstance(val, classes):
                    c.kind = _RESULT
                    c.of.result.is_ok = is_ok
                    if inner is None:
                        c.of.result.val = None
                    else:
                        raw = _VAL()
                        inner(store, val, raw)
                        c.of.result.val = ffi.wasmtime_component_val_new(byref(raw))
                    return
            raise ValueError("value not valid for this result type")
        return lower_result
    if cls is _types.RecordType:
        fields = [(name, name.encode("utf-8"), lowerer(field_ty)) for name, field_ty in ty.fields]
        count = len(fields)

        def lower_record(store, val, c):
            raw = ffi.wasmtime_component_valrecord_t()
            ffi.wasmtime_component_valrecord_new_uninit(raw, count)
            data = raw.data
            done = 0
            try:
                for name, encoded, lower in fields:
                    entry = data[done]
                    lower(store, getattr(val, name), entry.val)
                    _byte_vec_new(byref(entry.name), len(encoded), encoded)
                    done += 1
            except BaseException:
                for j in range(done, count):
                    _forget(data[j].val)
                    _byte_vec_new(byref(data[j].name), 0, b"")
                ffi.wasmtime_component_valrecord_delete(byref(raw))
                raise
            c.kind = _RECORD
            c.of.record = raw
        return lower_record
    if cls is _types.ListType:
        lower_element = lowerer(ty.element)

        def lower_list(store, val, c):
            if not isinstance(val, list):
                raise TypeError(f"expected a list, got {type(val).__name__}")
            n = len(val)
            raw = ffi.wasmtime_component_vallist_t()
            ffi.wasmtime_component_vallist_new_uninit(raw, n)
            data = raw.data
            done = 0
            try:
                for element in val:
                    lower_element(store, element, data[done])
                    done += 1
            except BaseException:
                for j in range(done, n):
                    _forget(data[j])
                ffi.wasmtime_component_vallist_delete(byref(raw))
                raise
            c.kind = _LIST
            c.of.list = raw
        return lower_list
    # variants, enums, flags, resources, tagged options/results: the stock path
    return lambda store, val, c: ty.convert_to_c(store, val, pointer(c))


def lifter(ty: Any):
    """A function (c value) -> Python value for `ty`; frees what it lifts. Types resolved once."""
    cls = type(ty)
    if cls in _SIMPLE:
        _kind, name = _SIMPLE[cls]
        if cls is _types.Bool:
            return lambda c: bool(c.of.boolean)
        return lambda c: getattr(c.of, name)
    if cls is _types.String:
        def lift_string(c):
            text = ffi.to_str(c.of.string)
            ffi.wasm_byte_vec_delete(byref(c.of.string))
            return text
        return lift_string
    if cls is _types.ListType and ty._is_bytes():
        return _lift_bytes
    if cls is _types.TupleType:
        parts = [lifter(e) for e in ty.elements]

        def lift_tuple(c):
            tup = c.of.tuple
            try:
                out = []
                for i, lift in enumerate(parts):
                    field = tup.data[i]
                    out.append(lift(field))
                    _forget(field)
                return tuple(out)
            finally:
                ffi.wasmtime_component_valtuple_delete(byref(tup))
        return lift_tuple
    if cls is _types.OptionType and not ty._tagged():
        inner = lifter(ty.payload)

        def lift_option(c):
            p = c.of.option
            if not p:
                return None
            value = inner(p.contents)
            _forget(p.contents)
            ffi.wasmtime_component_val_delete(p)
            return value
        return lift_option
    if cls is _types.ResultType and not ty._tagged():
        ok_ty, err_ty = ty.ok, ty.err
        lift_ok = lifter(ok_ty) if ok_ty is not None else None
        lift_err = lifter(err_ty) if err_ty is not None else None

        def lift_result(c):
            inner = lift_ok if c.of.result.is_ok else lift_err
            p = c.of.result.val
            if inner is None or not p:
                return None
            value = inner(p.contents)
            _forget(p.contents)
            ffi.wasmtime_component_val_delete(p)
            return value
        return lift_result
    if cls is _types.RecordType:
        fields = [(name, lifter(field_ty)) for name, field_ty in ty.fields]

        def lift_record(c):
            rec = c.of.record
            try:
                out = _types.Record()
                for i, (name, lift) in enumerate(fields):
                    field = rec.data[i].val
                    setattr(out, name, lift(field))
                    _forget(field)
                return out
            finally:
                ffi.wasmtime_component_valrecord_delete(byref(rec))
        return lift_record
    if cls is _types.ListType:
        lift_element = lifter(ty.element)

        def lift_list(c):
            lst = c.of.list
            try:
                out = []
                for i in range(lst.size):
                    element = lst.data[i]
                    out.append(lift_element(element))
                    _forget(element)
                return out
            finally:
                ffi.wasmtime_component_vallist_delete(byref(lst))
        return lift_list
    return ty.convert_from_c


def plan(ty: Any, lifting: bool) -> tuple | None:
    """`ty` as a plan for the C converter (`_valconv.c` says the shape), or None where it has no
    path for the type (variants, enums, flags, resources, tagged options and results; results
    only when lifting)."""
    cls = type(ty)
    if cls in _SIMPLE:
        return (_SIMPLE[cls][0],)
    if cls is _types.Char:
        return (_CHAR,)
    if cls is _types.String:
        return (_STRING,)
    if cls is _types.ListType:
        if ty._is_bytes():
            return (_BYTES,)
        element = plan(ty.element, lifting)
        return None if element is None else (_LIST, element)
    if cls is _types.TupleType:
        parts = [plan(e, lifting) for e in ty.elements]
        return None if any(p is None for p in parts) else (_TUPLE, tuple(parts))
    if cls is _types.OptionType and not ty._tagged():
        inner = plan(ty.payload, lifting)
        return None if inner is None else (_OPTION, inner)
    if cls is _types.ResultType and not ty._tagged() and lifting:
        cases = [plan(t, lifting) if t is not None else None for t in (ty.ok, ty.err)]
        if any(p is None and t is not None for p, t in zip(cases, (ty.ok, ty.err))):
            return None
        return (_RESULT, cases[0], cases[1])
    if cls is _types.RecordType:
        fields = [(name, name.encode("utf-8"), plan(t, lifting)) for name, t in ty.fields]
        return None if any(f[2] is None for f in fields) else (_RECORD, tuple(fields))
    return None


def _native_converter() -> ModuleType | None:
    """theater_otp.worker._valconv, set up, when it was built and was built for this wasmtime's
    struct layout; else None (the Python converters serve)."""
    try:
        from . import _valconv
    except ImportError:
        return None
    entry = _bindings.wasmtime_component_valrecord_entry
    expected = {"val": _SIZE, "of": _OF, "entry": ctypes.sizeof(entry), "entry_val": entry.val.offset,
                "vec": ctypes.sizeof(ffi.wasmtime_component_vallist_t),
                # a ctypes field read on its class is the field descriptor (with .offset); wasmtime's
                # annotation of `val` is the instance attribute's type
                "result_val": _OF + ffi.wasmtime_component_valresult_t.val.offset}  # type: ignore[attr-defined]
    if _valconv.layout() != expected:
        return None

    def address(name: str) -> int:
        return ctypes.cast(getattr(_bindings.dll, name), ctypes.c_void_p).value or 0

    _valconv.setup(_types.Record, *(address(n) for n in (
        "wasmtime_component_vallist_new_uninit", "wasmtime_component_valrecord_new_uninit",
        "wasmtime_component_valtuple_new_uninit", "wasm_byte_vec_new", "wasmtime_component_val_new",
        "wasmtime_component_vallist_delete", "wasmtime_component_valrecord_delete",
        "wasmtime_component_valtuple_delete")))
    return _valconv


_native = _native_converter()


class TypedFunc:
    """An exported component function whose conversions are planned once from its type.

    With `native` (the default when `_valconv` is built) each parameter and the result the C
    converter has a plan for go through it; the rest through this module's Python converters.
    Owns nothing: the Func belongs to its instance and store.
    """

    def __init__(self, func: wc.Func, store: wasmtime.Store, native: bool | None = None):
        self.func = func
        fty = func.type(store)
        self._types = fty  # keeps the type objects the plans refer to alive
        self.lowers = [lowerer(ty) for _name, ty in fty.params]
        result_ty = fty.result
        self.lift = lifter(result_ty) if result_ty is not None else None
        use_c = _native is not None and native is not False
        self.lower_plans = [plan(ty, False) if use_c else None for _name, ty in fty.params]
        self.lift_plan = plan(result_ty, True) if use_c and result_ty is not None else None

    def __call__(self, store: wasmtime.Store, *params: Any) -> Any:
        if len(params) != len(self.lowers):
            raise TypeError(f"wrong number of parameters: given {len(params)}, expected {len(self.lowers)}")
        param_capi = (_VAL * len(params))()
        base = ctypes.addressof(param_capi)
        n = 0
        try:
            for lower, lower_plan, val in zip(self.lowers, self.lower_plans, params):
                if lower_plan is not None and _native is not None:  # a plan only where _native is
                    _native.lower(lower_plan, val, base + n * _SIZE)
                else:
                    lower(store, val, param_capi[n])
                n += 1
            lift = self.lift
            result_space = _VAL() if lift is not None else None
            func = self.func._func

            def run():
                return ffi.wasmtime_component_func_call(
                    byref(func), store._context(), param_capi, n,
                    byref(result_space) if result_space is not None else None,
                    1 if result_space is not None else 0)

            enter_wasm(run)
            if result_space is None or lift is None:  # both or neither
                return None
            if self.lift_plan is not None and _native is not None:  # a plan only where _native is
                try:
                    return _native.lift(self.lift_plan, ctypes.addressof(result_space))
                finally:
                    ffi.wasmtime_component_val_delete(byref(result_space))
            return lift(result_space)
        finally:
            for i in range(n):
                ffi.wasmtime_component_val_delete(byref(param_capi[i]))

    def post_return(self, store: wasmtime.Store) -> None:
        self.func.post_return(store)
