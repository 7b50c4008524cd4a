"""The schema of a CSV/Parquet click log: which columns are what, and how to read them.

Every key, with an example (``schema_doc.py`` holds the same for ``--help``) (``examples/*.yaml`` has complete files)::

    label: clicked                  # the label column, values 0/1 (also 0.0/1.0, true/false)
    # ... or a rule that derives the label (exactly one of positive/threshold/map):
    label: {column: behavior_type, positive: [buy, cart]}               # others -> 0
    label: {column: behavior_type, positive: [buy], negative: [pv, fav]} # others: error
    label: {column: rating, threshold: 4}                               # rating >= 4 -> 1
    label: {column: y, map: {"-1": 0, "1": 1}}                          # others: error
    categorical: [user, item]       # one embedding table each, in this order
    # ... a column holding a list of values is a multi-hot table (a bag of rows):
    categorical: [user, {column: history, type: list, sep: "|", max_len: 50, keep: last}]
    dense: [price]                  # numeric features (may be empty)
    columns: [user, item, behavior_type, ts]  # header-less file: its columns in order
    skip_rows: 0                    # lines to skip at the top (before the header, if any)
    delimiter: auto                 # auto | comma | tab | semicolon | pipe | space | one char
    na_values: [""]                 # strings that mean "missing" (exactly these; default: empty)
    encoding: utf-8                 # any Python codec name: latin-1, cp1252, utf-16, ...
    sort_by: ts                     # optional: order rows by this column (numbers or ISO-8601
                                    # times; stable) so the validation split is the latest data
    format: csv                     # csv | parquet; default by extension (.parquet/.pq)
    dense_transform: none           # none | log1p (Criteo-style counts)

List columns (``type: list``): in CSV a field like ``i7|i3|i9`` split at
``sep`` (one character, not the file's delimiter; default ``|``); in
Parquet a list column (``list<string|int>``) or text split at ``sep``. Items
are values like any categorical value (same vocabulary/hash rules, counted
per item), in the order written. Rules:

* longer than ``max_len`` (required, >= 1): truncated, keeping the last
  ``max_len`` items (``keep: last``, the default: the most recent of a
  time-ordered list) or the first (``keep: first``); counted per table in the
  summary and the manifest (``bag.truncated``), never an error;
* empty (an empty field, a value in ``na_values``, a null, ``[]``): allowed,
  an empty bag, pooled to a zero vector; counted (``bag.empty``);
* an empty item (``a||b``, a trailing ``|``, a null inside a Parquet list):
  a malformed row, reported as file:line:column (or skipped and counted with
  ``--on-bad-line skip``).

Label values are compared as text with surrounding spaces removed, so
``positive: [1, 2]`` matches the file's ``1`` and ``2`` (not ``1.0``). A
label that is missing or fits no rule is a bad row (file:line:column).
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hotpipe.errors import ConfigError

FORMATS = ("csv", "parquet")
TRANSFORMS = ("none", "log1p")
NAMED_DELIMITERS = {"comma": ",", "tab": "\t", "semicolon": ";", "pipe": "|", "space": " "}
AUTO_CANDIDATES = (",", "\t", ";", "|")  # space is never guessed: it is common inside values
_LABEL_KEYS = ("column", "positive", "negative", "threshold", "map")


@dataclass(frozen=True)
class LabelRule:
    """How a label column becomes 0/1.

    Attributes:
        column: the column.
        kind: ``"binary"`` (0/1 as they are), ``"positive"`` (a set of values
            is 1; ``negative`` lists the 0s, else everything else is 0),
            ``"threshold"`` (a number >= ``threshold`` is 1), ``"map"``.
    """

    column: str
    kind: str = "binary"
    positive: tuple[str, ...] = ()
    negative: tuple[str, ...] | None = None
    threshold: float = 0.0
    mapping: tuple[tuple[str, int], ...] = ()

    def describe(self) -> str:
        """What a valid label looks like, for error messages."""
        if self.kind == "positive":
            neg = ", ".join(self.negative) if self.negative is not None else None
            return f"one of {', '.join(self.positive)} (-> 1)" + (f" or {neg} (-> 0)" if neg else " or any other value (-> 0)")
        if self.kind == "threshold":
            return f"a number (label = value >= {self.threshold:g})"
        if self.kind == "map":
            return "one of " + ", ".join(f"{k} (-> {v})" for k, v in self.mapping)
        return "0 or 1"

    def to_json(self) -> dict[str, Any] | str:
        if self.kind == "binary":
            return self.column
        d: dict[str, Any] = {"column": self.column}
        if self.kind == "positive":
            d["positive"] = list(self.positive)
            if self.negative is not None:
                d["negative"] = list(self.negative)
        elif self.kind == "threshold":
            d["threshold"] = self.threshold
        else:
            d["map"] = dict(self.mapping)
        return d

    @classmethod
    def parse(cls, v: Any, *, column_required: bool = True) -> LabelRule:
        if isinstance(v, str):
            return cls(_name(v, "label"))
        if not isinstance(v, Mapping):
            raise ConfigError("schema.label", f"expected a column name or a rule mapping, found {v!r}")
        for k in v:
            if k not in _LABEL_KEYS:
                raise ConfigError(f"schema.label.{k}", f"unknown key; allowed: {', '.join(_LABEL_KEYS)}")
        column = _name(v["column"], "label.column") if "column" in v else ""
        if column_required and not column:
            raise ConfigError("schema.label.column", "required")
        kinds = [k for k in ("positive", "threshold", "map") if k in v]
        if len(kinds) > 1:
            raise ConfigError("schema.label", f"give one of positive, threshold, map; found {', '.join(kinds)}")
        if "negative" in v and "positive" not in v:
            raise ConfigError("schema.label.negative", "only applies with 'positive'")
        if not kinds:
            return cls(column)
        kind = kinds[0]
        if kind == "positive":
            pos = _texts(v["positive"], "label.positive")
            neg = _texts(v["negative"], "label.negative") if "negative" in v else None
            both = set(pos) & set(neg or ())
            if both:
                raise ConfigError("schema.label", f"values both positive and negative: {sorted(both)}")
            return cls(column, "positive", positive=pos, negative=neg)
        if kind == "threshold":
            t = v["threshold"]
            if isinstance(t, bool) or not isinstance(t, (int, float)):
                raise ConfigError("schema.label.threshold", f"expected a number, found {t!r}")
            return cls(column, "threshold", threshold=float(t))
        m = v["map"]
        if not isinstance(m, Mapping) or not m:
            raise ConfigError("schema.label.map", f"expected a mapping of values to 0/1, found {m!r}")
        pairs = []
        for key, val in m.items():
            if isinstance(val, bool) or val not in (0, 1):
                raise ConfigError(f"schema.label.map.{key}", f"expected 0 or 1, found {val!r}")
            pairs.append((_text(key, "label.map"), int(val)))
        return cls(column, "map", mapping=tuple(pairs))


@dataclass(frozen=True)
class ListColumn:
    """A categorical column holding a list of values (a multi-hot table); see the module docstring."""

    column: str
    max_len: int
    sep: str = "|"
    keep: str = "last"  # which end of a too-long list is kept

    _KEYS = ("column", "type", "sep", "max_len", "keep")

    @classmethod
    def parse(cls, v: Any, i: int) -> ListColumn:
        key = f"categorical[{i}]"
        if not isinstance(v, Mapping):
            raise ConfigError(f"schema.{key}", f"expected a column name or a mapping, found {v!r}")
        for k in v:
            if k not in cls._KEYS:
                raise ConfigError(f"schema.{key}.{k}", f"unknown key; allowed: {', '.join(cls._KEYS)}")
        if v.get("type") != "list":
            raise ConfigError(f"schema.{key}.type", f"expected 'list', found {v.get('type')!r}")
        column = _name(v.get("column"), f"{key}.column")
        m = v.get("max_len")
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ConfigError(f"schema.{key}.max_len", f"expected an integer >= 1 (longer lists are "
                                                       f"truncated), found {m!r}")
        sep = v.get("sep", "|")
        if not isinstance(sep, str) or len(sep) != 1 or sep in "\"\n\r":
            raise ConfigError(f"schema.{key}.sep", f"expected one character, found {sep!r}")
        keep = v.get("keep", "last")
        if keep not in ("first", "last"):
            raise ConfigError(f"schema.{key}.keep", f"expected first or last, found {keep!r}")
        return cls(column, m, sep, keep)

    def to_json(self) -> dict[str, Any]:
        return {"column": self.column, "type": "list", "sep": self.sep, "max_len": self.max_len,
                "keep": self.keep}


@dataclass(frozen=True)
class TabularSchema:
    """Which columns of a CSV/Parquet file are the label, tables and dense features.

    See the module docstring for every key.

    Example:
        >>> s = TabularSchema.from_dict({"label": "y", "categorical": ["a", "b"]})
        >>> s.columns
        ('y', 'a', 'b')
    """

    label_rule: LabelRule
    categorical: tuple[str, ...]
    dense: tuple[str, ...] = ()
    format: str | None = None  # None: .parquet/.pq -> parquet, anything else -> csv
    delimiter: str = "auto"
    dense_transform: str = "none"  # not log1p by default: generic dense may be negative
    file_columns: tuple[str, ...] | None = None  # the "columns" key: header-less input
    skip_rows: int = 0
    na_values: tuple[str, ...] = ("",)
    encoding: str = "utf-8"
    sort_by: str | None = None
    lists: tuple[ListColumn, ...] = ()  # the categorical columns that hold lists

    @property
    def list_of(self) -> dict[str, ListColumn]:
        return {c.column: c for c in self.lists}

    @property
    def label(self) -> str:
        return self.label_rule.column

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns this schema reads (label, categorical, dense, then sort_by if separate)."""
        cols = (self.label, *self.categorical, *self.dense)
        return cols if self.sort_by is None or self.sort_by in cols else (*cols, self.sort_by)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TabularSchema:
        """Build from a mapping; unknown keys, wrong types, duplicates raise ConfigError."""
        if not isinstance(d, Mapping):
            raise ConfigError("schema", f"expected a mapping, found {type(d).__name__}")
        allowed = {"label", "categorical", "dense", "format", "delimiter", "dense_transform", "columns",
                   "skip_rows", "na_values", "encoding", "sort_by"}
        for key in d:
            if key not in allowed:
                raise ConfigError(f"schema.{key}", f"unknown key; allowed: {', '.join(sorted(allowed))}")
        for key in ("label", "categorical"):
            if key not in d:
                raise ConfigError(f"schema.{key}", "required")
        skip = d.get("skip_rows", 0)
        if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
            raise ConfigError("schema.skip_rows", f"expected an integer >= 0, found {skip!r}")
        cat = d["categorical"]
        if not isinstance(cat, (list, tuple)):
            raise ConfigError("schema.categorical", f"expected a list of column names, found {cat!r}")
        lists = tuple(ListColumn.parse(v, i) for i, v in enumerate(cat) if not isinstance(v, str))
        schema = cls(
            label_rule=LabelRule.parse(d["label"]),
            categorical=tuple(v if isinstance(v, str) and v else ListColumn.parse(v, i).column
                              for i, v in enumerate(cat)),
            lists=lists,
            dense=_names(d.get("dense") or [], "dense"),
            format=_choice(d.get("format"), "format", FORMATS, optional=True),
            delimiter=_delimiter(d.get("delimiter", "auto")),
            dense_transform=_choice(d.get("dense_transform", "none"), "dense_transform", TRANSFORMS) or "none",
            file_columns=_names(d["columns"], "columns") if d.get("columns") is not None else None,
            skip_rows=skip,
            na_values=_texts(d.get("na_values", [""]), "na_values", allow_empty=True),
            encoding=_encoding(d.get("encoding", "utf-8")),
            sort_by=_name(d["sort_by"], "sort_by") if d.get("sort_by") is not None else None,
        )
        if not schema.categorical:
            raise ConfigError("schema.categorical", "needs at least one column (one embedding table each)")
        for lc in schema.lists:
            if lc.sep == schema.delimiter:
                raise ConfigError("schema.categorical", f"list column {lc.column!r}: sep {lc.sep!r} is the "
                                                        "file's delimiter; choose another")
        seen: set[str] = set()
        for c in (schema.label, *schema.categorical, *schema.dense):
            if c in seen:
                raise ConfigError("schema", f"column {c!r} is listed twice")
            seen.add(c)
        if schema.file_columns is not None:
            if len(set(schema.file_columns)) != len(schema.file_columns):
                raise ConfigError("schema.columns", "a column name is listed twice")
            for c in schema.columns:
                if c not in schema.file_columns:
                    raise ConfigError("schema.columns", f"{c!r} is used but not among the file's columns "
                                                        f"{list(schema.file_columns)}")
        return schema

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TabularSchema:
        """Read a YAML (or JSON) schema file."""
        try:
            d = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError("schema", f"cannot read {path}: {e}") from e
        return cls.from_dict(d)

    def to_json(self) -> dict[str, Any]:
        lists = self.list_of
        d: dict[str, Any] = {"label": self.label_rule.to_json(),
                             "categorical": [lists[c].to_json() if c in lists else c for c in self.categorical],
                             "dense": list(self.dense), "format": self.format, "delimiter": self.delimiter,
                             "dense_transform": self.dense_transform, "skip_rows": self.skip_rows,
                             "na_values": list(self.na_values), "encoding": self.encoding}
        if self.file_columns is not None:
            d["columns"] = list(self.file_columns)
        if self.sort_by is not None:
            d["sort_by"] = self.sort_by
        return d

    def format_of(self, path: str | os.PathLike[str]) -> str:
        if self.format is not None:
            return self.format
        return "parquet" if Path(path).suffix.lower() in (".parquet", ".pq") else "csv"


def _name(v: Any, key: str) -> str:
    if not isinstance(v, str) or not v:
        raise ConfigError(f"schema.{key}", f"expected a column name, found {v!r}")
    return v


def _names(v: Any, key: str) -> tuple[str, ...]:
    if not isinstance(v, (list, tuple)):
        raise ConfigError(f"schema.{key}", f"expected a list of column names, found {v!r}")
    return tuple(_name(x, key) for x in v)


def _text(v: Any, key: str) -> str:
    # YAML reads `1` as an int and `yes` as a bool; values are matched as the file's text.
    if isinstance(v, bool):
        raise ConfigError(f"schema.{key}", f"{v!r} is ambiguous in YAML; quote it (\"true\"/\"yes\")")
    if not isinstance(v, (str, int, float)):
        raise ConfigError(f"schema.{key}", f"expected text or a number, found {v!r}")
    return str(v).strip()


def _texts(v: Any, key: str, allow_empty: bool = False) -> tuple[str, ...]:
    if not isinstance(v, (list, tuple)) or (not v and not allow_empty):
        raise ConfigError(f"schema.{key}", f"expected a list of values, found {v!r}")
    return tuple(_text(x, key) for x in v)


def _choice(v: Any, key: str, options: tuple[str, ...], optional: bool = False) -> str | None:
    if v is None and optional:
        return None
    if v not in options:
        raise ConfigError(f"schema.{key}", f"expected one of {', '.join(options)}, found {v!r}")
    return str(v)


def _delimiter(v: Any) -> str:
    if v == "auto" or (isinstance(v, str) and len(v) == 1 and v not in "\"\n\r"):
        return v
    if isinstance(v, str) and v in NAMED_DELIMITERS:
        return NAMED_DELIMITERS[v]
    raise ConfigError("schema.delimiter", f"expected auto, {', '.join(NAMED_DELIMITERS)} or one character, "
                                          f"found {v!r}")


def _encoding(v: Any) -> str:
    try:
        return codecs.lookup(v).name if isinstance(v, str) else codecs.lookup("").name
    except LookupError:
        raise ConfigError("schema.encoding", f"unknown text encoding {v!r}; e.g. utf-8, latin-1, cp1252") from None
