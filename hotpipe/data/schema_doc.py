"""The schema reference shown by ``hotpipe prepare --help`` (no imports: the CLI stays fast)."""

SCHEMA_REFERENCE = """\
schema keys (YAML, --schema FILE; complete examples in examples/*.yaml):
  label: clicked                 label column with 0/1 values (also 0.0/1.0, true/false)
  label: {column: behavior_type, positive: [buy, cart]}      others -> 0
  label: {column: behavior_type, positive: [buy], negative: [pv, fav]}
                                 listed values only; any other value is an error
  label: {column: rating, threshold: 4}                      rating >= 4 -> 1
  label: {column: y, map: {"-1": 0, "1": 1}}                 unlisted values are errors
  categorical: [user, item]      one embedding table each, in this order (required)
  categorical: [user, {column: history, type: list, sep: "|", max_len: 50, keep: last}]
                                 a list column is a multi-hot table: CSV "i7|i3|i9" split at
                                 sep, or a Parquet list; lists over max_len keep the last
                                 (or first) max_len items, counted; an empty list is allowed
                                 (pooled to zeros); an empty item ("a||b") is a bad row
  dense: [price]                 numeric features (default none)
  columns: [user, item, behavior_type, ts]
                                 header-less file: the names of its columns, in order
  skip_rows: 1                   lines to skip at the top (before the header, if any)
  delimiter: auto                auto | comma | tab | semicolon | pipe | space | one character
  na_values: ["", "NULL"]        strings that mean missing: exactly these (default: [""])
  encoding: latin-1              the file's text encoding (default utf-8)
  sort_by: ts                    order rows by this column (numbers or ISO-8601 times,
                                 stable) so the validation tail is the latest data
  format: csv                    csv | parquet (default: by extension)
  dense_transform: log1p         none | log1p (default none)

libsvm / libfm / ffm (--format): "label index:value ..." / "label field:index:value ...";
  one table per field: the ffm field, the --feature-map file's field (lines
  "INDEX FIELD"), or else the token's position in the line. Labels 1/+1 -> 1,
  0/-1 -> 0, or a --schema holding only a label rule, e.g. "label: {threshold: 4}".

--val FILE: a validation file, encoded with the training vocabulary (unseen
  values -> the OOV row, counted) into OUT/val/, a dataset of its own.
"""
