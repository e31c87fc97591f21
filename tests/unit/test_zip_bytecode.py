"""tests/harness/zip_bytecode.py: code imported from a zip is compiled once per source, and what
comes out of the cache is what a compile of that source at that path gives."""

import importlib.util
import os
import zipfile
import zipimport

import pytest

from tests.harness import zip_bytecode


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(zip_bytecode, "CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(zipimport, "_compile_source", zip_bytecode.cached_compile_source)
    return tmp_path / "cache"


def load_from_zip(path, source, name="zipped"):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(name + ".py", source)
    spec = zipimport.zipimporter(str(path)).find_spec(name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_second_import_of_a_source_is_not_compiled_and_names_its_own_zip(tmp_path, cache, monkeypatch):
    source = "def answer():\n    return 42\n"
    first = load_from_zip(tmp_path / "first.zip", source)
    assert first.answer() == 42
    assert len(os.listdir(cache)) == 1

    def no_compile(pathname, source):
        raise AssertionError("compiled again")

    monkeypatch.setattr(zip_bytecode, "_compile_source", no_compile)
    second = load_from_zip(tmp_path / "second.zip", source)
    assert second.answer() == 42
    # tracebacks point into the zip being run, not into the one that filled the cache
    assert second.answer.__code__.co_filename == str(tmp_path / "second.zip" / "zipped.py")


def test_another_source_is_compiled_and_a_damaged_entry_is_compiled_again(tmp_path, cache):
    assert load_from_zip(tmp_path / "a.zip", "VALUE = 1\n").VALUE == 1
    assert load_from_zip(tmp_path / "b.zip", "VALUE = 2\n").VALUE == 2
    entries = sorted(cache.iterdir())
    assert len(entries) == 2
    for entry in entries:
        entry.write_bytes(b"not marshal data")
    assert load_from_zip(tmp_path / "c.zip", "VALUE = 1\n").VALUE == 1
    assert {p.name for p in cache.iterdir()} == {p.name for p in entries}   # rewritten whole, no leftovers


def test_a_cache_it_cannot_write_only_costs_the_compile(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache directory would be")
    monkeypatch.setattr(zip_bytecode, "CACHE_DIR", str(blocked / "cache"))
    monkeypatch.setattr(zipimport, "_compile_source", zip_bytecode.cached_compile_source)
    assert load_from_zip(tmp_path / "a.zip", "VALUE = 3\n").VALUE == 3
