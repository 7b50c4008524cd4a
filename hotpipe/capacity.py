"""The one parser of capacities and sizes, used by the config, every CLI flag and the planner search.

A fast-tier capacity is written in one of three forms, and each spelling has
one meaning everywhere (``cache.capacity``, ``hotpipe simulate --capacity``,
``hotpipe plan``):

==========================  =========================================
spelling                    meaning
==========================  =========================================
``0.1``, ``1.0``, ``10%``   a fraction of all rows (in (0, 1])
``500000``, ``1``           a row count (an integer: ``1`` is one row)
``2GiB``, ``64MB``, ``4096B``  bytes of weights + optimizer state
==========================  =========================================

Why an integer is always a row count and a number with a decimal point always
a fraction: ``1`` meant one row in the config and all rows in ``simulate``
before; ``1.0`` (or ``100%``) is the unambiguous "all rows". Booleans are
rejected (YAML reads ``true`` as a number otherwise).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from hotpipe.errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB)\s*$")
_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
          "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_INT = re.compile(r"^\s*\d+\s*$")
_FRACTION = re.compile(r"^\s*(\d*\.\d+|\d+\.\d*|\d+(?:\.\d*)?[eE][-+]?\d+)\s*$")
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")

EXPECTED = "a fraction of all rows (0.1, 1.0, 10%), a row count (500000) or a size (2GiB)"


def parse_size(value: object, key: str) -> int:
    """``"64MiB"`` -> 67108864 bytes; a plain integer is bytes too.

    Raises:
        ConfigError: naming ``key``, for anything else (booleans included).
    """
    if isinstance(value, bool):
        raise ConfigError(key, f"expected a size like 64MiB or 8GiB, found {value!r}")
    if isinstance(value, int) and value >= 0:
        return value
    text = str(value)
    m = _SIZE.match(text)
    if m:
        return int(float(m.group(1)) * _UNITS[m.group(2)])
    if _INT.match(text):
        return int(text)
    raise ConfigError(key, f"expected a size like 64MiB or 8GiB, found {value!r}")


@dataclass(frozen=True)
class Capacity:
    """A parsed capacity: ``kind`` says which of the three forms it was.

    Example:
        >>> Capacity.parse("10%").rows(total_rows=1000, bytes_per_row=68)
        100
        >>> Capacity.parse(1).rows(total_rows=1000, bytes_per_row=68)
        1
        >>> Capacity.parse("68KiB").rows(total_rows=10**6, bytes_per_row=68)
        1024
    """

    kind: Literal["fraction", "rows", "bytes"]
    value: float

    @classmethod
    def parse(cls, value: object, key: str = "cache.capacity") -> Capacity:
        """Read any accepted spelling (a YAML/JSON value or CLI text).

        Raises:
            ConfigError: naming ``key``, what is accepted and what was found.
        """
        if isinstance(value, Capacity):
            return value
        if isinstance(value, bool) or value is None:
            raise ConfigError(key, f"expected {EXPECTED}; found {value!r}")
        if isinstance(value, int):
            if value < 1:
                raise ConfigError(key, f"a row count must be >= 1; found {value}")
            return cls("rows", float(value))
        if isinstance(value, float):
            return cls._fraction(value, key, value)
        text = str(value)
        if _INT.match(text):
            return cls.parse(int(text), key)
        m = _PERCENT.match(text)
        if m:
            return cls._fraction(float(m.group(1)) / 100, key, value)
        if _FRACTION.match(text):
            return cls._fraction(float(text), key, value)
        m = _SIZE.match(text)
        if m:
            n = float(m.group(1)) * _UNITS[m.group(2)]
            if n <= 0:
                raise ConfigError(key, f"a size must be > 0; found {value!r}")
            return cls("bytes", n)
        raise ConfigError(key, f"expected {EXPECTED}; found {value!r}")

    @classmethod
    def _fraction(cls, f: float, key: str, found: object) -> Capacity:
        if not 0.0 < f <= 1.0:
            raise ConfigError(key, f"a fraction of rows must be in (0, 1]; found {found!r}")
        return cls("fraction", f)

    def rows(self, total_rows: int, bytes_per_row: int) -> int:
        """Resolve to slots: at least 1, at most ``total_rows`` (a cache never needs more)."""
        if self.kind == "fraction":
            n = round(self.value * total_rows)
        elif self.kind == "rows":
            n = int(self.value)
        else:
            n = int(self.value) // bytes_per_row
        return max(1, min(total_rows, n))

    def __str__(self) -> str:
        if self.kind == "fraction":
            return f"{self.value:g}"
        if self.kind == "rows":
            return str(int(self.value))
        return f"{int(self.value)}B"
