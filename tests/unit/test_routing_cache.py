"""tests/harness/routing_cache.py: ansible-core's routing metadata is parsed once per text, and
what comes out of the cache is what the parser gave."""

import subprocess
import sys

import pytest
from ansible.utils.collection_loader._collection_meta import _meta_yml_to_dict

from tests.harness import REPO_ROOT, routing_cache

RUNTIME_YML = b"plugin_routing:\n  modules:\n    old_name:\n      redirect: ns.coll.new_name\nrequires_ansible: '>=2.15'\n"


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(routing_cache, "CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_second_parse_of_a_text_comes_from_the_cache(cache_dir):
    calls = []

    def parse(data, content_id):
        calls.append(content_id)
        return _meta_yml_to_dict(data, content_id)

    cached = routing_cache.cached(parse)
    first = cached(RUNTIME_YML, ("ns.coll", "runtime.yml"))
    assert first == _meta_yml_to_dict(RUNTIME_YML, None)
    assert cached(RUNTIME_YML, ("ns.coll", "runtime.yml")) == first
    assert cached(RUNTIME_YML.decode(), ("ns.coll", "runtime.yml")) == first   # str and bytes alike
    assert len(calls) == 1
    other = RUNTIME_YML.replace(b"new_name", b"newer_name")
    assert cached(other, ("ns.coll", "runtime.yml"))["plugin_routing"]["modules"]["old_name"]["redirect"] \
        == "ns.coll.newer_name"
    assert len(calls) == 2


def test_a_damaged_entry_is_parsed_again(cache_dir):
    cached = routing_cache.cached(_meta_yml_to_dict)
    expected = cached(RUNTIME_YML, None)
    (entry,) = cache_dir.iterdir()
    entry.write_bytes(b"\x00not marshal")
    assert cached(RUNTIME_YML, None) == expected
    assert [p.name for p in cache_dir.iterdir()] == [entry.name]


def test_install_wraps_the_collection_finder_when_ansible_imports_it(tmp_path):
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from tests.harness import routing_cache\n"
            "routing_cache.CACHE_DIR = %r\n"
            "routing_cache.install()\n"
            "from ansible.utils.collection_loader import _collection_finder\n"
            "print(_collection_finder._meta_yml_to_dict.__name__)\n") % (str(REPO_ROOT), str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["cached_meta_yml_to_dict"]
