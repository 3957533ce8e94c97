"""theater-otp: supervised, sandboxed, fully traced WebAssembly actors.

A node process runs a tree of OTP-style supervisors; every actor is one OS
process running a wasmtime host loop; processes speak msgpack over ZeroMQ and
every actor action is a hash-chained event kept by a chain-writer process.
"""

__version__ = "0.1.0"
