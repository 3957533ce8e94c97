"""Envelopes and socket helpers shared by the node, workers, the chain-writer and the CLI."""

from .envelope import (
                       MAILBOX_KINDS,
                       MAX_FRAME,
                       NOBLOCK,
                       SNDMORE,
                       Envelope,
                       ProtocolError,
                       decode,
                       encode,
                       message_size,
                       recv_frames,
                       recv_routed,
)

__all__ = ["MAILBOX_KINDS", "MAX_FRAME", "NOBLOCK", "SNDMORE", "Envelope", "ProtocolError", "decode", "encode",
           "message_size", "recv_frames", "recv_routed"]
