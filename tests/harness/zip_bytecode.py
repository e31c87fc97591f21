"""Compiled code of the modules that Python imports from zip files, kept by their source's hash.

Installed by scripts/bootstrap.sh into the tests' controller virtualenv only (as
``offsite_zip_bytecode.py`` with a ``.pth`` line that imports it), never on a user's node.

Why: every Ansible module runs from an AnsiballZ zip of its module_utils, and ``zipimport``
cannot write ``.pyc`` files, so each module run compiled ansible.module_utils.basic and our
engine from source again: about 0.45 of its 0.65 CPU seconds, and 0.8 CPU s per task of an
ansible-playbook run in all. Here ``zipimport``'s compile step first looks for the code compiled
from the same source bytes (sha256) by an earlier run; the code object is the one ``compile``
returns, its file names set to this zip's path. Entries are written whole (a rename), so runs at
the same time never read half of one; a cache that cannot be read or written only costs the
compile.
"""

import os
import sys
import zipimport

CACHE_DIR = os.path.join(sys.prefix, "zip-bytecode", "%s-O%d" % (sys.implementation.cache_tag, sys.flags.optimize))
_compile_source = zipimport._compile_source


def cached_compile_source(pathname, source):
    import _imp
    import hashlib
    import marshal

    entry = os.path.join(CACHE_DIR, hashlib.sha256(source).hexdigest())
    try:
        with open(entry, "rb") as f:
            code = marshal.loads(f.read())
    except (OSError, ValueError, EOFError, TypeError):
        code = _compile_source(pathname, source)
        try:
            os.makedirs(CACHE_DIR, exist_ok=True)
            partial = "%s.%d.partial" % (entry, os.getpid())
            with open(partial, "wb") as f:
                f.write(marshal.dumps(code))
            os.replace(partial, entry)
        except OSError:
            pass
        return code
    _imp._fix_co_filename(code, pathname)
    return code


def install():
    zipimport._compile_source = cached_compile_source
