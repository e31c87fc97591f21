"""The repository options are documented twice (one dict, a list); they must not drift."""
import importlib.util
import os

import yaml

from ansible_collections.offsite.backup.plugins.module_utils._common import repository_spec

FRAGMENT = os.path.join(os.path.dirname(__file__), '..', '..', 'plugins', 'doc_fragments', 'repository.py')


def _fragment():
    spec = importlib.util.spec_from_file_location('repository_fragment', FRAGMENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ModuleDocFragment


def test_repository_and_repositories_document_the_same_options():
    one = yaml.safe_load(_fragment().DOCUMENTATION)['options']['repository']['suboptions']
    many = yaml.safe_load(_fragment().REPOSITORIES)['options']['repositories']['suboptions']
    as_text = yaml.safe_dump(many).replace('O(repositories[].', 'O(repository.')
    assert yaml.safe_load(as_text) == one


def test_documented_options_match_the_argument_spec():
    one = yaml.safe_load(_fragment().DOCUMENTATION)['options']['repository']['suboptions']
    assert sorted(one) == sorted(repository_spec())


def test_encryption_fragment_matches_the_argument_spec():
    from ansible_collections.offsite.backup.plugins.module_utils._common import encryption_spec
    path = os.path.join(os.path.dirname(FRAGMENT), 'encryption.py')
    spec = importlib.util.spec_from_file_location('encryption_fragment', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    documented = yaml.safe_load(module.ModuleDocFragment.DOCUMENTATION)['options']['encryption']['suboptions']
    assert sorted(documented) == sorted(encryption_spec())
    for name, option in encryption_spec().items():
        assert documented[name]['type'] == option['type'], name


def test_clock_skew_fragment_matches_the_argument_spec():
    from ansible_collections.offsite.backup.plugins.module_utils._common import clock_skew_spec
    from ansible_collections.offsite.backup.plugins.module_utils._engine import manifest as mf
    path = os.path.join(os.path.dirname(FRAGMENT), 'clock_skew.py')
    spec = importlib.util.spec_from_file_location('clock_skew_fragment', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    documented = yaml.safe_load(module.ModuleDocFragment.DOCUMENTATION)['options']['clock_skew']
    assert (documented['type'], documented['default']) == (clock_skew_spec()['type'], clock_skew_spec()['default'])
    assert clock_skew_spec()['default'] == mf.DEFAULT_CLOCK_SKEW


def _options(fragment_file):
    spec = importlib.util.spec_from_file_location(fragment_file[:-3] + '_fragment',
                                                  os.path.join(os.path.dirname(FRAGMENT), fragment_file))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return yaml.safe_load(module.ModuleDocFragment.DOCUMENTATION)['options']


def test_signing_fragment_matches_the_argument_spec():
    from ansible_collections.offsite.backup.plugins.module_utils._common import signing_spec
    from ansible_collections.offsite.backup.plugins.module_utils._engine.signing import OPTIONS
    documented = _options('signing.py')['signing']['suboptions']
    assert sorted(documented) == sorted(signing_spec()) == sorted(OPTIONS)
    assert dict((k, v['type']) for k, v in documented.items()) == dict((k, v['type']) for k, v in signing_spec().items())
