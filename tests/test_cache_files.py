"""numba's on-disk cache files under concurrent processes (numbanorm/_cache.py,
KeyedFiles): a signature never loads another signature's machine code."""

from __future__ import annotations

from unittest import mock

import numba
import numpy as np
import pytest
from numba.core.caching import IndexDataCacheFile

from numbanorm._cache import PackageCache, _KeyedIndexDataCacheFile


def _files(cls, path):
    return cls(cache_path=str(path), filename_base="f-1.py311", source_stamp="stamp")


def _both_save_at_once(a, b, ka, kb):
    """Saver ``a`` saves ``ka`` while saver ``b`` (another process) saves
    ``kb``: ``b`` read the index before ``a`` wrote it, and ``a``'s data write
    lands last (the interleaving of two xdist workers finishing two
    signatures of one function together)."""
    write_data = a._save_data

    def a_writes_data(name, data):
        with mock.patch.object(b, "_load_index", return_value={}):
            b.save(kb, "machine code of kb")
        write_data(name, data)

    with mock.patch.object(a, "_save_data", a_writes_data):
        a.save(ka, "machine code of ka")


KA = ("(float32,)", ("magic",), ("h1", "h2"))
KB = ("(float64,)", ("magic",), ("h1", "h2"))


def test_concurrent_saves_keep_every_entry_with_its_own_code(tmp_path):
    a, b = _files(_KeyedIndexDataCacheFile, tmp_path), _files(_KeyedIndexDataCacheFile, tmp_path)
    _both_save_at_once(a, b, KA, KB)
    reader = _files(_KeyedIndexDataCacheFile, tmp_path)  # a third process, later
    assert reader.load(KA) == "machine code of ka"
    assert reader.load(KB) == "machine code of kb"
    # and a saver keeps its file: saving again replaces only its own entry
    a.save(KA, "recompiled ka")
    assert reader.load(KA) == "recompiled ka" and reader.load(KB) == "machine code of kb"


def test_numbas_own_files_mix_entries_in_that_interleaving(tmp_path):
    # why KeyedFiles exists: numba's IndexDataCacheFile (0.68) numbers the data
    # files in save order, so both savers take number 1 and the index maps kb
    # to ka's machine code
    a, b = _files(IndexDataCacheFile, tmp_path), _files(IndexDataCacheFile, tmp_path)
    _both_save_at_once(a, b, KA, KB)
    got = _files(IndexDataCacheFile, tmp_path).load(KB)
    if got != "machine code of ka":
        pytest.skip(f"numba {numba.__version__}'s own cache files no longer mix entries here ({got!r})")
    assert got == "machine code of ka"


def test_a_file_of_another_format_or_key_is_a_miss(tmp_path):
    f = _files(_KeyedIndexDataCacheFile, tmp_path)
    f.save(KA, "code")
    name = f._load_index()[KA]
    f._save_data(name, "untagged: numba's own format")  # an older cache, a foreign write
    assert f.load(KA) is None
    f._save_data(name, (KB, "code of another key"))
    assert f.load(KA) is None
    (tmp_path / name).write_bytes(b"truncated")
    assert f.load(KA) is None
    f.save(KA, "code again")  # the recompiled kernel is saved over it
    assert f.load(KA) == "code again"


def test_package_cache_round_trip(tmp_path, monkeypatch):
    # a real kernel through PackageCache: saved and loaded with KeyedFiles
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))

    def twice(a):
        return a * 2

    for _ in range(2):  # the second dispatcher (a new process) loads from disk
        disp = numba.njit(twice)
        disp._cache = PackageCache(twice)
        assert isinstance(disp._cache._cache_file, _KeyedIndexDataCacheFile)
        assert disp(np.float32(1.5)) == 3.0 and disp(2) == 4
    assert disp._cache_hits and sum(disp._cache_hits.values()) == 2
    assert any(p.name.endswith(".nbc") for p in tmp_path.rglob("*"))
