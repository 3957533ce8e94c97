"""Types of the C extension built from _native.c (mypy cannot read a compiled module).

Same signatures as native.py_record and native.py_scan; the C functions take positional
arguments only (METH_VARARGS)."""

def record(actor_part: bytes, seq: int, incarnation: int, parent: bytes | None, type_part: bytes,
           timestamp: int, data: bytes, /) -> tuple[bytes, bytes]: ...
def scan(blob: bytes, offset: int, prefix: bytes, expect: int,
         prev: bytes | None, /) -> tuple[int, int, bytes | None]: ...
