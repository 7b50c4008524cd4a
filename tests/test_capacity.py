"""One capacity parser, one meaning per spelling: config, CLI flags and plan agree."""

from __future__ import annotations

import pytest

from hotpipe.capacity import Capacity, parse_size
from hotpipe.config import load_config
from hotpipe.errors import ConfigError

ROWS, ROW_BYTES = 1000, 80


@pytest.mark.parametrize(("spelling", "rows"), [
    ("0.1", 100), (0.1, 100), ("1.0", 1000), (1.0, 1000), ("10%", 100), ("100%", 1000),
    ("1", 1), (1, 1), ("250", 250), (250, 250), ("5000", 1000), ("1e-4", 1), (".5", 500),
    ("8000B", 100), ("8KB", 100), ("8KiB", 102), ("1GiB", 1000),
])
def test_each_spelling_has_one_meaning(spelling: object, rows: int) -> None:
    assert Capacity.parse(spelling).rows(ROWS, ROW_BYTES) == rows


@pytest.mark.parametrize("bad", [True, False, None, 0, -3, "0", "0.0", "2.5", "150%", "lots",
                                 "5 rows", "0B", [1]])
def test_bad_spellings_name_the_key(bad: object) -> None:
    with pytest.raises(ConfigError, match="cache.capacity"):
        Capacity.parse(bad)


@pytest.mark.parametrize(("text", "rows"), [("1", 1), ("1.0", 1000), ("10%", 100), ("8KB", 100)])
def test_config_and_cli_agree(text: str, rows: int) -> None:
    """`cache.capacity=X` (YAML-typed) and `--capacity X` (text) resolve the same."""
    cfg = load_config(None, [f"cache.capacity={text}"])
    assert cfg.cache.capacity_spec.rows(ROWS, ROW_BYTES) == rows
    assert Capacity.parse(text, "--capacity").rows(ROWS, ROW_BYTES) == rows


def test_config_rejects_a_boolean_capacity() -> None:
    with pytest.raises(ConfigError, match="cache.capacity"):
        load_config(None, ["cache.capacity=true"])


@pytest.mark.parametrize(("text", "n"), [("64MiB", 64 << 20), ("1GB", 10**9), ("4096", 4096),
                                         (4096, 4096)])
def test_parse_size(text: object, n: int) -> None:
    assert parse_size(text, "--memory") == n


@pytest.mark.parametrize("bad", ["lots", "-1GiB", True, "1.5.2GiB"])
def test_parse_size_rejects(bad: object) -> None:
    with pytest.raises(ConfigError, match="--memory"):
        parse_size(bad, "--memory")


@pytest.mark.parametrize(("value", "rows"), [("0", 0), ("0.01", 10), ("50", 50), ("8KB", 100)])
def test_dist_replicate_is_spelled_like_a_capacity(value: str, rows: int) -> None:
    cfg = load_config(None, [f"dist.replicate={value}"])
    assert cfg.dist.replicate_rows(ROWS, ROW_BYTES) == rows


@pytest.mark.parametrize("bad", ["true", "2.5", "lots"])
def test_dist_replicate_rejects_other_spellings(bad: str) -> None:
    with pytest.raises(ConfigError, match="dist.replicate"):
        load_config(None, [f"dist.replicate={bad}"])
