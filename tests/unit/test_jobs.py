# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Job files: structure checks, ${VAR} expansion from the env file, env file parsing."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine import jobs
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import ConfigError


def minimal(**extra):
    job = {'name': 'crm', 'local': {'path': '/var/backups/offsite'},
           'sources': [{'name': 'crm_db', 'source': {'type': 'postgresql', 'database': 'crm'}}]}
    job.update(extra)
    return job


def test_defaults_are_filled_in():
    job = jobs.validate(minimal())
    assert job['compression'] == 'zstd' and job['repositories'] == [] and job['timezone'] == 'UTC'
    assert job['log'] == {'path': '/var/log/offsite-backup/crm.log', 'max_bytes': 10 * 2 ** 20, 'backups': 5}


@pytest.mark.parametrize('job, message', [
    (minimal(name='bad name'), 'not usable'),
    (minimal(sources=[]), 'sources is empty'),
    (minimal(sources='crm'), 'sources must be a list'),
    (minimal(sources=[{'name': 'x'}]), 'needs source'),
    (minimal(sources=[{'name': 'x', 'source': {}}]), 'source needs type'),
    (minimal(local={'path': 'rel'}), 'absolute path'),
    (minimal(local={}), 'local needs path'),
    (minimal(min_success=2, repositories=[{'type': 's3'}]), 'min_success is 2 but 1'),
    (minimal(retention={'keep_last': 3}), 'no repositories'),
    (minimal(compression='lz4'), "compression 'lz4' is not known"),
    (minimal(level=True), 'level must be an integer'),
    (minimal(repositories=[{'bucket': 'b'}]), 'repositories[0] needs type'),
    (minimal(monitoring={'heartbeats': [{}]}), 'needs url'),
    (minimal(monitoring={'webhooks': [{'url': 'https://x', 'on': ['always']}]}), 'on must be a list'),
    (minimal(monitoring={'textfile': {'path': '/tmp/metrics.txt'}}), 'ending in .prom'),
    (minimal(monitoring={'timeout': 0}), 'positive number'),
    (minimal(encryption={'type': 'age'}), 'encryption has unknown key(s) type'),
    (minimal(encryption={'gpg_homedir': '/k'}), 'names no key to encrypt with'),
    (minimal(encryption={'recipients': ['AGE-SECRET-KEY-1XYZ']}), 'not X25519 public keys'),
])
def test_bad_jobs_are_refused_with_the_place(job, message):
    with pytest.raises(ConfigError) as info:
        jobs.validate(job)
    assert message in str(info.value)


def test_expand_replaces_variables_and_names_missing_ones():
    data = {'a': ['x${ONE}y', {'b': '${TWO}'}], 'n': 3}
    assert jobs.expand(data, {'ONE': '1', 'TWO': 's3cr3t'}, 'job') == {'a': ['x1y', {'b': 's3cr3t'}], 'n': 3}
    with pytest.raises(ConfigError) as info:
        jobs.expand(data, {'ONE': '1'}, 'job')
    assert 'job.a[1].b refers to ${TWO}' in str(info.value)


def test_env_file_forms(tmp_path):
    path = tmp_path / 'crm.env'
    path.write_text('# secrets\n\nexport A=1\nB="two words"\nC=\'x=y\'\nD=\n')
    assert jobs.read_env_file(str(path)) == {'A': '1', 'B': 'two words', 'C': 'x=y', 'D': ''}
    path.write_text('just words\n')
    with pytest.raises(ConfigError) as info:
        jobs.read_env_file(str(path))
    assert 'line 1' in str(info.value)


def test_load_reports_yaml_errors(tmp_path):
    path = tmp_path / 'job.yml'
    path.write_text('name: [unclosed\n')
    with pytest.raises(ConfigError) as info:
        jobs.load(str(path), {})
    assert 'not valid YAML' in str(info.value)
    path.write_text('')
    with pytest.raises(ConfigError):
        jobs.load(str(path), {})


@pytest.mark.parametrize('threads, in_reading_thread', [(None, True), (0, True), (2, False)])
def test_compression_threads_reach_the_dump(tmp_path, threads, in_reading_thread):
    """A job's ``compression_threads`` is what the dump compresses with, 0 included (it was read
    as ``or 1``), and unset is the engine's default: zstd in the reading thread. zstd in one
    thread writes the same bytes however the input is split; with workers, other bytes."""
    zstandard = pytest.importorskip('zstandard')
    tree = tmp_path / 'site'
    tree.mkdir()
    # compressible and large enough for zstd's worker jobs to cut the frame differently
    (tree / 'rows.csv').write_bytes(b''.join(b'%d,customer %d,%d\n' % (i, i % 977, i * 7) for i in range(300000)))
    job = minimal(local={'path': str(tmp_path / 'local')},
                  sources=[{'name': 'site', 'source': {'type': 'files', 'paths': [str(tree)]}}])
    if threads is not None:
        job['compression_threads'] = threads
    [result] = jobs.run(jobs.validate(job))
    assert result.succeeded, result.error
    with open(result.backup['path'], 'rb') as artifact:
        stored = artifact.read()
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(stored)
    assert len(raw) == result.backup['raw_size']
    # compress() writes the content size into the frame; a stream cannot: compare without it
    streamed = zstandard.ZstdCompressor(level=1, threads=0).compressobj()
    one_thread = streamed.compress(raw) + streamed.flush()
    assert (stored == one_thread) is in_reading_thread
