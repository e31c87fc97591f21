"""The parsed routing metadata (``meta/runtime.yml``) of Ansible collections, kept by the hash of
its text.

Installed by scripts/bootstrap.sh into the tests' controller virtualenv only (as
``offsite_routing_cache.py`` with a ``.pth`` line that calls ``install()``), never on a user's
machine.

Why: every ansible-playbook run parses ansible-core's own routing table
(``ansible/config/ansible_builtin_runtime.yml``, ~10,000 lines) with PyYAML: ~0.1 of the ~1.2
CPU seconds that starting a run costs, paid by each of the suite's ~220 runs. ansible-core
reads that metadata through ``_collection_finder._meta_yml_to_dict``, which its docstring
says tools may replace "to cache the output"; here the replacement returns what the original
returned for the same bytes (dicts, lists and strings only: PyYAML's BaseLoader), kept on disk
with marshal, written whole (a rename), and computed again whenever that fails.
"""

import os
import sys

CACHE_DIR = os.path.join(sys.prefix, "routing-cache")
FINDER_MODULE = "ansible.utils.collection_loader._collection_finder"


def cached(meta_yml_to_dict):
    def cached_meta_yml_to_dict(yaml_string_data, content_id):
        import hashlib
        import marshal

        data = yaml_string_data.encode() if isinstance(yaml_string_data, str) else bytes(yaml_string_data)
        entry = os.path.join(CACHE_DIR, hashlib.sha256(data).hexdigest())
        try:
            with open(entry, "rb") as f:
                return marshal.loads(f.read())
        except (OSError, ValueError, EOFError, TypeError):
            pass
        routing = meta_yml_to_dict(yaml_string_data, content_id)
        try:
            os.makedirs(CACHE_DIR, exist_ok=True)
            partial = "%s.%d.partial" % (entry, os.getpid())
            with open(partial, "wb") as f:
                f.write(marshal.dumps(routing))
            os.replace(partial, entry)
        except (OSError, ValueError):
            pass
        return routing

    return cached_meta_yml_to_dict


class _ReplaceOnImport:
    """A one-shot sys.meta_path entry: lets the collection finder module load as usual, then
    wraps its _meta_yml_to_dict."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != FINDER_MODULE:
            return None
        sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_wrap(module):
            exec_module(module)
            if getattr(module, "_meta_yml_to_dict", None):
                module._meta_yml_to_dict = cached(module._meta_yml_to_dict)

        spec.loader.exec_module = exec_and_wrap
        return spec


def install():
    if FINDER_MODULE in sys.modules:
        module = sys.modules[FINDER_MODULE]
        if getattr(module, "_meta_yml_to_dict", None):
            module._meta_yml_to_dict = cached(module._meta_yml_to_dict)
    else:
        sys.meta_path.insert(0, _ReplaceOnImport())
