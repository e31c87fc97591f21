"""The option documentation is generated from the types' declarations (scripts/generate_option_docs.py);
the committed files must be what the script writes. And a new repository type is one class plus one
registry entry: the argument spec, the docs and the engine's checks pick it up with nothing else."""
import contextlib
import importlib.util
import io
import os

import pytest
import yaml

from ansible_collections.offsite.backup.plugins.module_utils import _common
from ansible_collections.offsite.backup.plugins.module_utils._engine import repositories
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import ConfigError, NotFoundError
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories.base import (
    ObjectInfo, PutResult, Repository)
from ansible_collections.offsite.backup.plugins.module_utils._engine.schema import Option

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _generator():
    spec = importlib.util.spec_from_file_location('generate_option_docs',
                                                  os.path.join(ROOT, 'scripts', 'generate_option_docs.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_docs_are_what_the_script_generates():
    stale = [path for path, text in _generator().generated().items()
             if not os.path.exists(os.path.join(ROOT, path)) or open(os.path.join(ROOT, path)).read() != text]
    assert not stale, 'run scripts/generate_option_docs.py: %s differ from the declarations' % ', '.join(stale)


def test_the_fragments_document_exactly_the_argument_specs():
    fragments = _generator().fragments()

    def suboptions(filename, attribute, name):
        namespace = {}
        exec(fragments[os.path.join('plugins', 'doc_fragments', filename)], namespace)
        return yaml.safe_load(getattr(namespace['ModuleDocFragment'], attribute))['options'][name]['suboptions']

    for documented, spec in ((suboptions('repository.py', 'DOCUMENTATION', 'repository'), _common.repository_spec()),
                             (suboptions('source.py', 'DOCUMENTATION', 'source'), _common.source_spec('dump')),
                             (suboptions('source.py', 'RESTORE', 'target'), _common.source_spec('restore')),
                             (suboptions('source.py', 'SNAPSHOT', 'source'), _common.source_spec('snapshot'))):
        assert sorted(documented) == sorted(spec)
        for name, option in spec.items():
            for key in ('type', 'elements', 'default', 'choices', 'required'):
                assert documented[name].get(key) == option.get(key), (name, key)


# -- a trivial type, added the way a new one is: one class, one registry entry ---------------------

class MemoryRepository(Repository):
    """Objects in a dict: enough to show what a type declares and what it gets for free."""
    type = 'memory'
    DESCRIPTION = ('C(memory) keeps objects in the process (a test type).',)
    OPTIONS = (
        Option('capacity', 'int', required=True, description='Most objects kept.'),
        Option('label', default='scratch', choices=('scratch', 'kept'), description='What the objects are.'),
        Option('token', secret=True, env='MEMORY_TOKEN', description='A secret the type never shows.'),
    )

    def __init__(self, options, log=None):
        super().__init__(options, log)
        self.objects = {}

    def put(self, key, reader, size, sha256):
        data = reader.read()
        self.check_landed(key, size, sha256, len(data))
        self.objects[key] = data
        return PutResult(key, len(data), sha256, 'size')

    @contextlib.contextmanager
    def get(self, key):
        if key not in self.objects:
            raise NotFoundError('%s is missing' % key)
        yield io.BytesIO(self.objects[key])

    def list(self, prefix):
        return [ObjectInfo(k, len(v), 0) for k, v in sorted(self.objects.items()) if k.startswith(prefix)]

    def stat(self, key):
        return ObjectInfo(key, len(self.objects[key]), 0) if key in self.objects else None

    def delete(self, key):
        self.objects.pop(key, None)

    def location(self, key=''):
        return 'memory:%s' % key


@pytest.fixture
def registered(monkeypatch):
    """The one registry line of repositories/__init__.py: the class in REPOSITORY_CLASSES."""
    monkeypatch.setattr(repositories, 'REPOSITORY_CLASSES', repositories.REPOSITORY_CLASSES + (MemoryRepository,))
    monkeypatch.setattr(repositories, 'TYPES', dict(repositories.TYPES, memory=MemoryRepository))
    return MemoryRepository


def test_a_new_type_gets_its_argument_spec_docs_and_checks(registered, monkeypatch):
    spec = _common.repository_spec()
    assert 'memory' in spec['type']['choices']
    assert spec['capacity'] == {'type': 'int'} and spec['token']['no_log'] is True
    assert spec['label'] == {'type': 'str', 'choices': ['scratch', 'kept']}

    files = _generator().generated()
    fragment = files[os.path.join('plugins', 'doc_fragments', 'repository.py')]
    assert 'C(memory) keeps objects in the process (a test type).' in fragment
    namespace = {}
    exec(fragment, namespace)
    documented = yaml.safe_load(namespace['ModuleDocFragment'].DOCUMENTATION)['options']['repository']['suboptions']
    assert documented['token']['description'] == ['A secret the type never shows.', 'Used by C(memory).',
                                                  'Falls back to E(MEMORY_TOKEN).', 'Never logged.']
    assert 'Required for C(memory).' in documented['capacity']['description']
    listed = yaml.safe_load(namespace['ModuleDocFragment'].REPOSITORIES)['options']['repositories']['suboptions']
    assert 'capacity' in listed
    assert '### `memory`' in files[os.path.join('docs', 'options.md')]

    # the engine: required, defaults, choices, per-type fallbacks, secrets, foreign options
    monkeypatch.setenv('MEMORY_TOKEN', 'memory-secret-1')
    repo = repositories.open_repository({'type': 'memory', 'capacity': 3})
    assert repo.options == {'type': 'memory', 'capacity': 3, 'label': 'scratch', 'token': 'memory-secret-1',
                            'verify': 'full'}
    assert repo.secret_options == ('token',) and repo.scrub('token memory-secret-1') == 'token ***'
    with pytest.raises(ConfigError, match='a memory repository needs capacity'):
        repositories.open_repository({'type': 'memory'})
    with pytest.raises(ConfigError, match='a memory repository does not take the option bucket'):
        repositories.open_repository({'type': 'memory', 'capacity': 3, 'bucket': 'b'})
    with pytest.raises(ConfigError, match="label: 'lost' is not known"):
        repositories.open_repository({'type': 'memory', 'capacity': 3, 'label': 'lost'})
    # the five verbs are all it implements; the rest comes from the base class
    repo.put_bytes('crm/a.manifest.json', b'{}')
    assert repo.get_bytes('crm/a.manifest.json') == b'{}' and repo.series_name() == 'memory:'
    # the job file checks it like every type
    from ansible_collections.offsite.backup.plugins.module_utils._engine import jobs
    job = {'name': 'crm', 'local': {'path': '/var/backups/offsite'}, 'repositories': [{'type': 'memory', 'capacity': 2}],
           'sources': [{'name': 'crm_db', 'source': {'type': 'postgresql', 'database': 'crm'}}]}
    jobs.validate(job)
    job['repositories'][0]['capacty'] = 2
    with pytest.raises(ConfigError, match=r'job.repositories\[0\]: a memory repository does not take the option capacty'):
        jobs.validate(job)
    # other types do not take its options
    with pytest.raises(ConfigError, match='a local repository does not take the option capacity'):
        repositories.open_repository({'type': 'local', 'path': '/srv', 'capacity': 3})
