"""Envelopes and socket helpers shared by the node, workers, the chain-writer and the CLI."""

from .envelope import MAX_FRAME, Envelope, ProtocolError, decode, encode, recv_routed

__all__ = ["MAX_FRAME", "Envelope", "ProtocolError", "decode", "encode", "recv_routed"]
