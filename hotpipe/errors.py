"""Typed errors a caller can act on.

Every message names where the problem is (file/line/field or config key), what
was expected and what was found. Library code raises these; only the CLI turns
them into an exit status.
"""

from __future__ import annotations


class HotpipeError(Exception):
    """Base class of every error hotpipe raises on purpose."""


class DataFormatError(HotpipeError):
    """Input data does not match the expected layout.

    Attributes:
        path: the file (or ``None`` for in-memory input).
        line: 1-based line number, when the input is line-oriented.
        field: the field name (``label``, ``I3``, ``C17``, a CSV column...).
        expected: what a valid value looks like.
        found: what was there (truncated for display).
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
        expected: str | None = None,
        found: str | None = None,
    ) -> None:
        self.path, self.line, self.field = path, line, field
        self.expected, self.found = expected, found
        where = ":".join(str(p) for p in (path, line) if p is not None)
        parts = [f"{where}: " if where else "", message]
        if field is not None:
            parts.append(f" (field {field}")
            if expected is not None:
                parts.append(f"; expected {expected}")
            if found is not None:
                parts.append(f"; found {found!r}")
            parts.append(")")
        elif expected is not None or found is not None:
            parts.append(f" (expected {expected}; found {found!r})")
        super().__init__("".join(parts))


class ConfigError(HotpipeError):
    """A configuration key is unknown or its value has the wrong type/range."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"config key {key!r}: {message}")


class CapacityError(HotpipeError):
    """The fast tier cannot hold the rows that must be resident at once.

    Attributes:
        needed: the minimum capacity (rows) that would have worked.
        capacity: the capacity that was configured.
    """

    def __init__(self, message: str, *, needed: int, capacity: int) -> None:
        self.needed, self.capacity = needed, capacity
        super().__init__(f"{message}: need at least {needed} rows of fast-tier capacity, have "
                         f"{capacity} (a smaller data.batch_size or cache.depth pins fewer rows "
                         "at once; cache.capacity raises the capacity)")


class CheckpointError(HotpipeError):
    """A checkpoint is missing, incomplete or does not match the run."""


class LockError(HotpipeError):
    """Another live process holds a run directory or a backing file.

    Attributes:
        path: the locked path.
        holder: what the holder wrote into the lock (pid, host, command), if readable.
    """

    def __init__(self, path: str, holder: str) -> None:
        self.path, self.holder = path, holder
        super().__init__(f"{path} is in use by another hotpipe process ({holder}); "
                         "wait for it to finish or use another directory")


class ResourceError(HotpipeError):
    """The machine lacks a resource the job needs: disk space, memory, a readable path."""


class DivergedError(HotpipeError):
    """Training produced a non-finite loss; the step is named and nothing after it is kept.

    Attributes:
        step: the 0-based step whose loss was not finite.
    """

    def __init__(self, step: int, loss: float, hint: str = "") -> None:
        self.step = step
        super().__init__(f"the loss of step {step} is {loss} (not finite): training stopped before "
                         f"applying that step; the last good checkpoint is kept{hint}")
