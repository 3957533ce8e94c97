"""Types of the C extension built from _valconv.c (mypy cannot read a compiled module).

A plan is the nested tuple fastabi.plan builds from a component type; addresses are of
wasmtime's value structs. Values are what a component function takes and returns: their
Python type follows the WIT type, so it is not known here."""

from typing import Any

def setup(record_cls: type, vallist_new_uninit: int, valrecord_new_uninit: int, valtuple_new_uninit: int,
          byte_vec_new: int, val_new: int, vallist_delete: int, valrecord_delete: int,
          valtuple_delete: int, /) -> None: ...
def layout() -> dict[str, int]: ...
def lower(plan: tuple[Any, ...], value: object, addr: int, /) -> None: ...
def lift(plan: tuple[Any, ...], addr: int, /) -> Any: ...
