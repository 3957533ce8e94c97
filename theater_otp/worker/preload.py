"""Imported once by the node's forkserver so that every forked worker starts warm.

Importing wasmtime (with its component module), pyzmq and the worker code
costs ~120 ms; paying it once in the forkserver is what makes a restart take
milliseconds. Nothing here may start threads or compile wasm (see component.py).
"""

import gc
import sqlite3  # noqa: F401  (the chain-writer's storage)

import httpx  # noqa: F401  (the http-client handler: ~40 ms off its first call in each worker)
import msgpack  # noqa: F401
import wasmtime  # noqa: F401
import wasmtime.component  # noqa: F401
import zmq  # noqa: F401

from ..chain import writer  # noqa: F401
from ..proc import bound_malloc
from . import main  # noqa: F401

bound_malloc()  # inherited by every worker, writer and gateway forked from here

# everything imported so far lives as long as the process: out of the collector's sight, so a
# forked child's collections never touch (and copy) the pages these objects share with the server
gc.collect()
gc.freeze()
