"""Issue 8, data side: ids, checksums, atomic --overwrite, stale temps, full disks, bad manifests."""

from __future__ import annotations

import errno
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from hotpipe.data import atomic, columnar, writer
from hotpipe.data.columnar import (
    ColumnarDataset,
    ColumnarWriter,
    TableSpec,
    UnverifiedDatasetWarning,
)
from hotpipe.data.prepare import prepare_criteo
from hotpipe.errors import ConfigError, DataFormatError, ResourceError
from tests.conftest import make_dataset


def edit_manifest(d: Path, fn) -> None:  # type: ignore[no-untyped-def]
    m = json.loads((d / "manifest.json").read_text())
    fn(m)
    (d / "manifest.json").write_text(json.dumps(m))


def criteo_file(path: Path, n: int = 200) -> Path:
    lines = []
    for i in range(n):
        cats = [f"{(i * 31 + t) % 40:08x}" for t in range(26)]
        lines.append("\t".join([str(i % 2), str(i % 5), *[""] * 12, *cats]))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_manifest_records_id_ranges_checksums_and_a_fingerprint(tmp_path: Path) -> None:
    d = make_dataset(tmp_path / "d", rows=300)
    ds = ColumnarDataset.open(d)
    assert ds.verified == "quick"
    sparse = np.asarray(ds.sparse)
    for t, table in enumerate(ds.manifest["tables"]):
        assert (table["min_id"], table["max_id"]) == (sparse[:, t].min(), sparse[:, t].max())
    files = ds.manifest["checksums"]["files"]
    assert set(files) == {"label.bin", "dense.bin", "sparse.bin"}
    import hashlib

    assert files["sparse.bin"]["sha256"] == hashlib.sha256((d / "sparse.bin").read_bytes()).hexdigest()
    assert ds.fingerprint == ds.manifest["fingerprint"]
    assert make_dataset(tmp_path / "e", rows=300, seed=1) and \
        ColumnarDataset.open(tmp_path / "e").fingerprint != ds.fingerprint
    ds.verify()
    assert ds.verified == "full"


def test_cardinality_edited_down_is_caught_on_open_naming_table_and_row(tmp_path: Path) -> None:
    d = make_dataset(tmp_path / "d", rows=300, cards=(50, 7, 300, 20))
    sparse = np.fromfile(d / "sparse.bin", np.int32).reshape(300, 4)
    first = int(np.flatnonzero(sparse[:, 2] >= 100)[0])
    edit_manifest(d, lambda m: m["tables"][2].update(cardinality=100))
    with pytest.raises(DataFormatError) as e:
        ColumnarDataset.open(d)
    assert e.value.field == "C3" and "sparse.bin" in str(e.value) and f"at row {first}" in str(e.value)


@pytest.mark.parametrize("bad_id", [7, -1])
def test_a_tampered_id_is_caught_by_verify(tmp_path: Path, bad_id: int) -> None:
    d = make_dataset(tmp_path / "d", rows=400_000, cards=(50, 7))  # sparse.bin: 3.2 MB > 2 x 1 MiB
    mm = np.memmap(d / "sparse.bin", np.int32, "r+", shape=(400_000, 2))
    mm[200_000, 1] = bad_id  # the middle: outside the quick head/tail digest
    mm.flush()
    del mm
    ds = ColumnarDataset.open(d)  # quick check: sizes, head/tail, recorded bounds all fine
    with pytest.raises(DataFormatError, match="does not match its sha256"):
        ds.verify()
    edit_manifest(d, lambda m: m.pop("checksums"))  # an old-style dataset: ids are still scanned
    with pytest.warns(UnverifiedDatasetWarning):
        ds = ColumnarDataset.open(d)
    with pytest.raises(DataFormatError) as e:
        ds.verify()
    assert e.value.field == "C2" and f"{bad_id} at row 200000" in str(e.value)


def test_damage_at_the_ends_or_a_size_change_fails_the_quick_check(tmp_path: Path) -> None:
    d = make_dataset(tmp_path / "d", rows=100)
    data = bytearray((d / "dense.bin").read_bytes())
    data[5] ^= 0xFF
    (d / "dense.bin").write_bytes(bytes(data))
    with pytest.raises(DataFormatError, match="dense.bin.*damaged"):
        ColumnarDataset.open(d)
    assert ColumnarDataset.open(d, verify=False).rows == 100


def test_writer_rejects_ids_beyond_the_table(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError) as e, \
            ColumnarWriter(tmp_path / "ds", tables=[TableSpec("C1", 5), TableSpec("C2", 3)], num_dense=0) as w:
        w.append(np.zeros(4, np.float32), np.zeros((4, 0), np.float32),
                 np.array([[0, 0], [4, 2], [1, 3], [0, 0]], np.int32))
    assert e.value.field == "C2" and "3 at row 2" in str(e.value)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("edit,key", [
    (lambda m: m.pop("tables"), "tables"),
    (lambda m: m.pop("rows"), "rows"),
    (lambda m: m.update(rows="abc"), "rows"),
    (lambda m: m.update(rows=True), "rows"),
    (lambda m: m["tables"][1].update(cardinality=0), "tables[1].cardinality"),
    (lambda m: m["tables"][0].pop("cardinality"), "tables[0].cardinality"),
    (lambda m: m.update(tables=[]), "tables"),
    (lambda m: m.update(num_dense=-1), "num_dense"),
])
def test_bad_manifests_name_the_key(tmp_path: Path, edit, key: str) -> None:  # type: ignore[no-untyped-def]
    d = make_dataset(tmp_path / "d", rows=10)
    edit_manifest(d, edit)
    with pytest.raises(DataFormatError) as e:
        ColumnarDataset.open(d)
    assert e.value.field is not None and e.value.field.startswith(key) and "manifest.json" in str(e.value)


def test_old_datasets_open_unverified_with_a_note(tmp_path: Path) -> None:
    d = make_dataset(tmp_path / "d", rows=10)

    def strip(m: dict) -> None:
        m.pop("checksums"), m.pop("fingerprint")
        for t in m["tables"]:
            t.pop("min_id"), t.pop("max_id")
    edit_manifest(d, strip)
    with pytest.warns(UnverifiedDatasetWarning, match="written before integrity checks"):
        ds = ColumnarDataset.open(d)
    assert ds.verified == "unverified" and len(ds.fingerprint) == 64
    ds.verify()  # ids are in range
    assert ds.verified == "unverified"


def test_check_ids_for_a_loader(tmp_path: Path) -> None:
    ds = ColumnarDataset.open(make_dataset(tmp_path / "d", rows=10, cards=(5, 3)))
    ds.check_ids(np.array([[4, 2]]), 0)
    with pytest.raises(DataFormatError, match="3 at row 9"):
        ds.check_ids(np.array([[0, 0], [1, 3]]), 8)


# ------------------------------------------------------------ atomic placement


def test_overwrite_killed_between_the_renames_keeps_the_old_dataset(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    src = criteo_file(tmp_path / "in.txt")
    out = tmp_path / "ds"
    prepare_criteo([src], out, progress=False)
    old_fp = ColumnarDataset.open(out).fingerprint
    real_replace = os.replace
    calls = []

    def replace(a, b):  # type: ignore[no-untyped-def]
        calls.append((Path(a).name, Path(b).name))
        if len(calls) == 2:  # old moved aside; the kill comes before the new one is moved in
            raise KeyboardInterrupt
        return real_replace(a, b)
    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        prepare_criteo([criteo_file(tmp_path / "in2.txt", 50)], out, progress=False, overwrite=True)
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert calls[0][0] == "ds" and calls[0][1].startswith(".ds.old-")
    # publish() put the old one back on the way out; simulate a hard kill by moving it aside again.
    assert ColumnarDataset.open(out).fingerprint == old_fp
    aside = tmp_path / f".ds.old-{atomic.owner_tag().rsplit('-', 1)[0]}-999999999"
    real_replace(out, aside)
    assert not out.exists()
    with pytest.raises(DataFormatError, match="left aside by an interrupted --overwrite"):
        ColumnarDataset.open(out)
    summary = prepare_criteo([src], tmp_path / "other", progress=False)  # another out: untouched
    assert summary.rows == 200 and aside.exists()
    notes = atomic.clean_stale(out)  # what the next writer of `out` does first
    assert ColumnarDataset.open(out).fingerprint == old_fp and "restored" in notes[0] and not aside.exists()


def test_overwrite_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    prepare_criteo([criteo_file(tmp_path / "a.txt", 200)], out, progress=False)
    prepare_criteo([criteo_file(tmp_path / "b.txt", 50)], out, progress=False, overwrite=True)
    assert ColumnarDataset.open(out).rows == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt", "ds"]


def test_stale_temp_folders_of_dead_writers_are_removed(tmp_path: Path) -> None:
    host = atomic.owner_tag().rsplit("-", 1)[0]
    dead = tmp_path / f".ds.tmp-{host}-999999999"
    live = tmp_path / f".ds.tmp-{host}-{os.getppid()}"  # a live process
    remote = tmp_path / ".ds.tmp-otherhost-999999999"  # another machine's: not ours to judge
    legacy = tmp_path / ".ds.tmp-999999998"  # the naming before hosts were recorded
    for p in (dead, live, remote, legacy):
        (p / "x").mkdir(parents=True)
    summary = prepare_criteo([criteo_file(tmp_path / "in.txt")], tmp_path / "ds", progress=False)
    assert not dead.exists() and not legacy.exists() and live.exists() and remote.exists()
    assert any("removed abandoned" in n for n in summary.notes)


def test_full_disk_is_a_resource_error_and_removes_the_temp_dir(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    src = criteo_file(tmp_path / "in.txt", 300)
    real = writer._write_all
    for fail_at in (1, 5, 12):  # column files and the vocab spill
        n = [0]

        def write(f, data, fail_at=fail_at, n=n):  # type: ignore[no-untyped-def]
            n[0] += 1
            if n[0] == fail_at:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(f, data)
        monkeypatch.setattr(writer, "_write_all", write)
        with pytest.raises(ResourceError, match="disk full"):
            prepare_criteo([src], tmp_path / "ds", progress=False, chunk_rows=32)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_synth_overwrite_and_full_disk_use_the_same_writer(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from hotpipe.data.synth import synthesize

    out = tmp_path / "syn"
    synthesize(out, rows=500, scale=0.0001, progress=False)
    fp = ColumnarDataset.open(out).fingerprint

    def full(f, data):  # type: ignore[no-untyped-def]
        raise OSError(errno.EDQUOT, "Disk quota exceeded")
    monkeypatch.setattr(writer, "_write_all", full)
    with pytest.raises(ResourceError, match="disk full"):
        synthesize(out, rows=800, scale=0.0001, progress=False, overwrite=True)
    assert ColumnarDataset.open(out).fingerprint == fp and sorted(p.name for p in tmp_path.iterdir()) == ["syn"]


def test_out_that_is_a_file_or_a_foreign_folder(tmp_path: Path) -> None:
    src = criteo_file(tmp_path / "in.txt")
    (tmp_path / "file").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match="is a file"):
            prepare_criteo([src], tmp_path / "file", progress=False, overwrite=overwrite)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match="not a hotpipe dataset"):
        prepare_criteo([src], tmp_path / "home", progress=False, overwrite=True)
    assert (tmp_path / "home" / "thesis.tex").exists() and (tmp_path / "file").read_text() == "mine"


def test_permission_denied_input_and_output(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    src = criteo_file(tmp_path / "in.txt")
    from hotpipe.data import criteo

    def no_read(*a, **k):  # type: ignore[no-untyped-def]
        raise PermissionError(errno.EACCES, "Permission denied", str(src))
    with monkeypatch.context() as m:
        m.setattr(criteo, "open", no_read, raising=False)  # root ignores chmod: inject the error
        with pytest.raises(ResourceError, match="in.txt: permission denied"):
            prepare_criteo([src], tmp_path / "ds", progress=False)
    with monkeypatch.context() as m:
        m.setattr(atomic.os, "access", lambda p, mode: False)
        with pytest.raises(ResourceError, match="permission denied"):
            prepare_criteo([src], tmp_path / "ro" / "ds", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_quick_open_cost_does_not_grow_with_the_data(tmp_path: Path) -> None:
    d = make_dataset(tmp_path / "d", rows=50_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a dataset written now is never "unverified"
        ColumnarDataset.open(d)
    reads = []
    real = columnar.integrity.quick_digest

    def spy(path, size, quick_bytes=1 << 20):  # type: ignore[no-untyped-def]
        reads.append(min(size, 2 * quick_bytes))
        return real(path, size, quick_bytes)
    columnar.integrity.quick_digest = spy  # type: ignore[assignment]
    try:
        ColumnarDataset.open(d)
    finally:
        columnar.integrity.quick_digest = real  # type: ignore[assignment]
    assert max(reads) <= 2 << 20 and len(reads) == 3
