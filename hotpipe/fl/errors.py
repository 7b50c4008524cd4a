"""Typed errors of the federated-learning subpackage.

All subclass :class:`hotpipe.errors.HotpipeError`, so the CLI prints them and
exits 2 instead of showing a traceback.
"""

from __future__ import annotations

from hotpipe.errors import HotpipeError


class FLError(HotpipeError):
    """Base class of every error ``hotpipe.fl`` raises on purpose."""


class SubModelShapeError(FLError):
    """A client returned a tensor whose shape does not match the sub-model it was sent.

    Attributes:
        client: the client id (``None`` when not known at the raise site).
        param: the parameter name (state-dict key).
        expected: the shape the server sent.
        found: the shape that came back (``None`` when the key is missing).
    """

    def __init__(self, param: str, *, expected: tuple[int, ...] | None,
                 found: tuple[int, ...] | None, client: int | None = None) -> None:
        self.client, self.param, self.expected, self.found = client, param, expected, found
        who = f"client {client}: " if client is not None else ""
        super().__init__(f"{who}sub-model parameter {param!r}: expected shape {expected}, "
                         f"found {found}")


class ClientFailedError(FLError):
    """A client raised while training; the round goes on without its update."""

    def __init__(self, client: int, reason: str) -> None:
        self.client, self.reason = client, reason
        super().__init__(f"client {client} failed: {reason}")
