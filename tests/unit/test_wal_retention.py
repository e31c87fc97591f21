"""Retention, recovery windows and continuity of archived WAL (walchain.py; issue 17 item 5).

Pure parts: segment arithmetic (wraparound with 16 MiB and 1 GiB segments), history files, the
keys of a WAL directory, the retention plan and the recovery paths; properties of the plan over
generated archives (segments on several timelines with history files, .partial and .backup
files, base backups anywhere in them):

* every file is kept or removed, never both; without a base backup nothing is removed;
* the newest base backup and every WAL file at or after its start segment on its timeline or a
  later one survive, as do the files of every other kept base backup;
* exactly the files no kept base backup needs are removed (nothing more);
* what recovery from each kept base backup reaches (path, newest segment, first gap) is the
  same before and after the removal;
* planning again after applying the plan removes nothing; deletions go oldest first.

Then the use case against local repositories: check mode deletes nothing, a real run deletes
manifests before payloads and nothing outside ``.wal/<set>/``, and the window and gaps as
backup_info and verify report them.

Reproducing a failure: examples come from ``SEED`` (random per run unless
``WAL_PROPERTY_SEED`` is set); a failure shows ``seed <N>``, and
``WAL_PROPERTY_SEED=<N> pytest tests/unit/test_wal_retention.py`` replays it.
"""

import datetime
import hashlib
import json
import os
import random
import subprocess

import pytest
from hypothesis import HealthCheck, given, note, seed, settings, strategies as st

from ansible_collections.offsite.backup.plugins.module_utils._engine import manifest as mf
from ansible_collections.offsite.backup.plugins.module_utils._engine import operations, wal, walchain
from ansible_collections.offsite.backup.plugins.module_utils._engine.encryption import Encryption
from ansible_collections.offsite.backup.plugins.module_utils._engine.commands import CommandLog
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import BackupError, IntegrityError
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories.base import ObjectInfo
from ansible_collections.offsite.backup.plugins.module_utils._engine.repositories import open_repository
from ansible_collections.offsite.backup.plugins.module_utils._engine.signing import Signer
from ansible_collections.offsite.backup.plugins.module_utils._engine.verify import verify

SEED = int(os.environ.get('WAL_PROPERTY_SEED') or random.SystemRandom().randrange(2 ** 32))
print('wal retention properties: seed %d (WAL_PROPERTY_SEED=%d replays it)' % (SEED, SEED))
MB16 = 16 * 1024 * 1024
SET = 'crm_cluster'
NOW = datetime.datetime(2026, 12, 6, 12, 0, 0, tzinfo=datetime.timezone.utc)


# -- segment arithmetic ----------------------------------------------------------------------
def test_segment_numbers_wrap_after_ff_with_16_mib_segments():
    assert walchain.per_log(MB16) == 256
    assert walchain.segment_name(1, 255, MB16) == '0000000100000000000000FF'
    assert walchain.segment_name(1, 256, MB16) == '000000010000000100000000'
    assert walchain.segment_name(3, 0xA0 * 256 + 0xFF, MB16) == '00000003000000A0000000FF'
    last = wal.parse_name('00000001000000A0000000FF')
    assert walchain.segno(last, MB16) + 1 == walchain.segno(wal.parse_name('00000001000000A100000000'), MB16)


def test_other_segment_sizes_wrap_elsewhere_and_bad_names_do_not_fit():
    gib = 1 << 30
    assert walchain.per_log(gib) == 4
    assert walchain.segment_name(1, 4, gib) == '000000010000000100000000'
    assert not walchain.fits(wal.parse_name('000000010000000000000004'), gib)
    assert walchain.fits(wal.parse_name('0000000100000000000000FF'), MB16)
    assert not walchain.fits(wal.parse_name('000000010000000000000100'), MB16)
    assert [walchain.segment_size_ok(s) for s in (MB16, 1 << 20, 1 << 30, 3 << 20, 1 << 31, '16MB', True)] == [
        True, True, True, False, False, False, False]


def test_history_files_parse_and_hostile_ones_are_refused():
    text = '1\t0/3000060\tno recovery target specified\n\n2\t0/50000A0\tbefore 2026-12-06 14:32:00+00\n'
    assert walchain.parse_history(text, 3) == [(1, 0x3000060), (2, 0x50000A0)]
    for bad in ('x\t0/1\n', '1\tnot-an-lsn\n', '3\t0/1\n', '2\t0/5\n1\t0/6\n', '1\t0/9\n2\t0/5\n', '1\n'):
        with pytest.raises(ValueError):
            walchain.parse_history(bad, 3)


# -- properties of the plan ------------------------------------------------------------------
def _anchor(backup_id, timeline, number, size=MB16):
    per = walchain.per_log(size)
    return walchain.Anchor(backup_id, timeline, number // per, number % per,
                           walchain.segment_name(timeline, number, size), None, size)


@st.composite
def archives(draw):
    """Timelines 1..k: each (after the first) branches off its parent at a switch segment and
    has a history file (sometimes lost); segments with holes; .partial at switches, .backup
    files, and base backups starting on segments of any timeline (ids ordered by start)."""
    count = draw(st.integers(1, 4))
    files, switches, timelines = set(), {}, []
    start = draw(st.integers(0, 600))  # crosses the 00..FF wrap
    for timeline in range(1, count + 1):
        parent = draw(st.sampled_from(timelines)) if timelines else None
        if parent is not None:
            low = switches[parent][0]
            begin = draw(st.integers(low, low + 40))
            files.add('%s.partial' % walchain.segment_name(parent, begin, MB16))
            if draw(st.integers(0, 9)):
                files.add('%08X.history' % timeline)
        else:
            begin = start
        length = draw(st.integers(0, 60))
        holes = draw(st.sets(st.integers(begin, begin + 60), max_size=3))
        for number in range(begin, begin + length):
            if number not in holes:
                files.add(walchain.segment_name(timeline, number, MB16))
        if length and draw(st.booleans()):
            files.add('%s.00000028.backup' % walchain.segment_name(timeline, begin + length // 2, MB16))
        switches[timeline] = (begin, begin + length)
        timelines.append(timeline)
    anchors = []
    for index in range(draw(st.integers(0, 4))):
        timeline = draw(st.sampled_from(timelines))
        low, high = switches[timeline]
        anchors.append(_anchor('b%d' % index, timeline, draw(st.integers(low, max(low, high + 5)))))
    return [wal.parse_name(n) for n in sorted(files)], anchors


@seed(SEED)
@settings(max_examples=300, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])
@given(archives())
def test_retention_keeps_exactly_what_the_kept_base_backups_need(archive):
    files, anchors = archive
    note('seed %d' % SEED)
    keep, remove = walchain.plan_retention(files, anchors)
    kept, removed = set(f.name for f in keep), set(f.name for f in remove)
    assert kept | removed == set(f.name for f in files) and not kept & removed
    if not anchors:
        assert not removed
        return
    newest = anchors[-1]
    for wal_file in files:
        after = any(a.timeline <= wal_file.timeline
                    and (wal_file.kind == 'history' or (wal_file.log, wal_file.seg) >= (a.log, a.seg))
                    for a in anchors)
        assert (wal_file.name in kept) == after, wal_file  # exactly: nothing more, nothing less
        if wal_file.kind != 'history' and wal_file.timeline >= newest.timeline and \
                (wal_file.log, wal_file.seg) >= (newest.log, newest.seg):
            assert wal_file.name in kept  # the newest base backup and all WAL after it survive
    # what each kept base backup reaches is the same without the removed files
    before, after = walchain.Archive(files, MB16), walchain.Archive(keep, MB16)
    for anchor in anchors:
        assert after.follow(anchor) == before.follow(anchor), anchor
    # again: nothing more to remove; oldest first
    assert walchain.plan_retention(keep, anchors)[1] == []
    order = [walchain.deletion_order(f) for f in remove]
    assert order == sorted(order)


def test_a_linear_archive_follows_history_switch_points_and_finds_the_first_gap():
    names = [walchain.segment_name(1, n, MB16) for n in range(250, 260)]       # wraps at 0xFF
    names += [walchain.segment_name(2, n, MB16) for n in (259, 260, 262)]       # 261 missing
    archive = walchain.Archive([wal.parse_name(n) for n in names + ['00000002.history']], MB16)
    archive.histories[2] = [(1, 259 * MB16 + 0x60)]
    chain = archive.follow(_anchor('b', 1, 252))
    assert chain['target'] == 2 and not chain['inferred']
    assert chain['ranges'] == [(1, 252, 259), (2, 259, None)]
    assert archive.name(*chain['first_missing']) == '000000020000000100000005'
    assert archive.name(*chain['reached']) == '000000020000000100000004'
    assert archive.name(*chain['newest']) == '000000020000000100000006'
    archive.histories.clear()  # encrypted history: the switch is the lowest segment of timeline 2
    assert archive.follow(_anchor('b', 1, 252))['ranges'] == [(1, 252, 259), (2, 259, None)]


def test_a_newest_timeline_that_is_not_a_child_is_what_postgresql_refuses():
    names = [walchain.segment_name(1, n, MB16) for n in range(1, 10)] + ['00000002.history']
    archive = walchain.Archive([wal.parse_name(n) for n in names], MB16)
    archive.histories[2] = [(1, 4 * MB16)]  # timeline 2 left timeline 1 at segment 4
    assert 'branched off timeline 1 at segment 000000010000000000000004' in archive.follow(_anchor('b', 1, 6))['problem']


# -- against repositories ----------------------------------------------------------------------
def _put_base(repo, number, created, timeline=1, extra=None, signing=None):
    backup_id = mf.make_id(SET, created)
    data = b'base backup %d' % number
    facts = {'type': 'postgresql_physical', 'format': 'basebackup', 'timeline': timeline,
             'wal_start': walchain.segment_name(timeline, number, MB16),
             'wal_end': walchain.segment_name(timeline, number + 1, MB16),
             'wal_segment_size': MB16, 'system_identifier': '42',
             'start_time': mf.format_time(created), 'stop_time': mf.format_time(created + datetime.timedelta(minutes=1))}
    facts.update(extra or {})
    manifest = mf.build(SET, backup_id, created, 'tar.zst', 'zstd', 'basebackup', len(data),
                        hashlib.sha256(data).hexdigest(), len(data), facts, [], 1.0)
    repo.put_bytes('%s/%s' % (SET, manifest['artifact']), data)
    repo.put_bytes(mf.manifest_key(SET, backup_id), mf.dumps(Signer(signing, CommandLog()).sign(manifest)))
    return backup_id


def _put_wal(repo, name, created, set_name=SET, content=None, signing=None):
    """``name`` pushed by wal-push itself (zstd, manifest last) at ``created``."""
    folder = os.path.join(repo.root, '.incoming')
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with open(path, 'wb') as handle:
        handle.write(content or ('payload of %s' % name).encode())
    try:
        wal.push(set_name, path, [{'type': 'local', 'path': repo.root}], now=created, signing=signing)
    finally:
        os.unlink(path)
        os.rmdir(folder)


def _keys(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, dummy, fs in os.walk(root) for f in fs)


@pytest.fixture
def archive_repo(tmp_path):
    """Three base backups (segments 0xFD, 0x102, 0x108 of timeline 1) and WAL 0xF8..0x10C, a
    history file and timeline 2 from 0x10A; another set's WAL beside it."""
    options = {'type': 'local', 'path': str(tmp_path)}
    repo = open_repository(options)
    for index, number in enumerate((0xFD, 0x102, 0x108)):
        _put_base(repo, number, NOW - datetime.timedelta(days=3 - index))
    for number in range(0xF8, 0x10A):
        _put_wal(repo, walchain.segment_name(1, number, MB16), NOW - datetime.timedelta(days=4, minutes=-number))
    _put_wal(repo, '00000002.history', NOW - datetime.timedelta(hours=2),
             content=b'1\t1/A000060\tno recovery target specified\n')
    _put_wal(repo, walchain.segment_name(1, 0x10A, MB16) + '.partial', NOW - datetime.timedelta(hours=2))
    for number in range(0x10A, 0x10D):
        _put_wal(repo, walchain.segment_name(2, number, MB16), NOW - datetime.timedelta(minutes=60 - number % 16))
    _put_wal(repo, walchain.segment_name(1, 0xF0, MB16), NOW - datetime.timedelta(days=9), set_name='crm_other')
    repo.put_bytes('.wal/%s/README' % SET, b'not ours')
    return options, repo


def test_check_mode_reports_and_a_real_run_deletes_only_unneeded_wal_manifest_first(archive_repo, tmp_path):
    options, repo = archive_repo
    before = _keys(str(tmp_path))
    preview = operations.retention(SET, options, {'keep_last': 2}, check_mode=True, now=NOW)
    assert _keys(str(tmp_path)) == before
    expected = [walchain.segment_name(1, n, MB16) for n in range(0xF8, 0x102)]
    assert preview['wal']['remove'] == expected and preview['wal']['removed'] == [] and preview['changed']
    assert preview['wal']['oldest_needed'] == '000000010000000100000002'
    deletes = []
    original = type(repo).delete

    def spy(self, key):
        deletes.append(key)
        return original(self, key)

    type(repo).delete = spy
    try:
        done = operations.retention(SET, options, {'keep_last': 2}, now=NOW)
    finally:
        type(repo).delete = original
    assert done['wal']['removed'] == expected and len(done['removed']) == 1
    wal_deletes = [k for k in deletes if k.startswith('.wal/')]
    assert all(k.startswith('.wal/%s/' % SET) for k in wal_deletes)
    assert wal_deletes[:2] == ['.wal/%s/%s.json' % (SET, expected[0]), '.wal/%s/%s.wal.zst' % (SET, expected[0])]
    after = _keys(str(tmp_path))
    assert set(before) - set(after) == set(deletes)
    assert '.wal/crm_other/0000000100000000000000F0.json' in after and '.wal/%s/README' % SET in after
    again = operations.retention(SET, options, {'keep_last': 2}, now=NOW)
    assert again['wal']['remove'] == [] and not again['changed']


def test_no_kept_base_backup_keeps_all_wal_and_says_so(tmp_path):
    options = {'type': 'local', 'path': str(tmp_path)}
    repo = open_repository(options)
    _put_base(repo, 5, NOW - datetime.timedelta(days=1), extra={'wal_start': '../../etc'})
    for number in range(1, 8):
        _put_wal(repo, walchain.segment_name(1, number, MB16), NOW)
    before = _keys(str(tmp_path))
    done = operations.retention(SET, options, {'keep_last': 1}, now=NOW)
    assert done['wal']['remove'] == [] and _keys(str(tmp_path)) == before
    assert any('all 7 WAL files of crm_cluster' in w and 'no WAL start segment' in w for w in done['warnings'])


def test_the_window_and_the_gaps_backup_info_and_verify_report(archive_repo):
    options, repo = archive_repo
    info = operations.info(SET, options)
    window = info['recovery_window']
    assert window['earliest'] == mf.format_time(NOW - datetime.timedelta(days=3) + datetime.timedelta(minutes=1))
    assert window['latest_segment'] == '00000002000000010000000C' and window['continuous'] and window['gaps'] == []
    assert window['latest'] == mf.format_time(NOW - datetime.timedelta(minutes=60 - 0x10C % 16))
    assert [t['timeline'] for t in window['timelines']] == [1, 2] and window['segments'] == 18 + 3
    assert window['notes'] == []
    assert operations.info('crm_other', options)['recovery_window'] is None  # WAL, but no base backup
    assert verify(SET, [options], now=NOW)['ok']

    repo.delete(wal.manifest_key(SET, '000000010000000100000005'))  # a hole, as wal-fetch sees it
    window = operations.info(SET, options)['recovery_window']
    assert not window['continuous'] and window['gaps'][0]['first_missing'] == '000000010000000100000005'
    with pytest.raises(Exception) as raised:
        verify(SET, [options], now=NOW)
    message = str(raised.value)
    assert 'segment 000000010000000100000005 is missing' in message and str(repo.location('')) in message
    assert raised.value.details['repositories'][0]['wal']['gaps'][0]['first_missing'] == '000000010000000100000005'


@pytest.mark.parametrize('damage, expected', [
    (b'{not json', 'not valid JSON'),
    (b'[]', 'not a JSON object'),
    (json.dumps({'format_version': 1}).encode(), 'lacks'),
])
def test_a_damaged_wal_manifest_is_a_clear_verify_failure(archive_repo, damage, expected):
    options, repo = archive_repo
    repo.put_bytes(wal.manifest_key(SET, '000000010000000100000003'), damage)
    with pytest.raises(Exception) as raised:
        verify(SET, [options], now=NOW)
    assert 'WAL file 000000010000000100000003 is damaged' in str(raised.value) and expected in str(raised.value)
    assert 'segment 000000010000000100000003 is missing' in str(raised.value)


def test_verify_reads_each_wal_manifest_once(archive_repo):
    """One GET per manifest (the chains' ends and the history file are not read again); the
    listing is all a repository API offers in bulk, so N files are still N requests."""
    options, repo = archive_repo
    reads = []
    original = type(repo).get_bytes

    def spy(self, key):
        reads.append(key)
        return original(self, key)

    type(repo).get_bytes = spy
    try:
        verify(SET, [options], now=NOW)
    finally:
        type(repo).get_bytes = original
    wal_reads = [k for k in reads if k.startswith('.wal/')]
    assert sorted(wal_reads) == sorted(set(wal_reads)) and len(wal_reads) == 18 + 1 + 1 + 3


# -- signed WAL: verify checks what wal-fetch checks -----------------------------------------
@pytest.fixture(scope='module')
def ssh_keys(tmp_path_factory):
    base = tmp_path_factory.mktemp('walkeys')
    found = {}
    for label in ('server', 'other'):
        subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', label, '-f', str(base / label)],
                       check=True, capture_output=True)
        found[label] = (str(base / label), (base / (label + '.pub')).read_text().strip())
    return found


@pytest.fixture
def signed_repo(tmp_path, ssh_keys):
    """A signed base backup at segment 3 and signed WAL 1..6 of timeline 1."""
    options = {'type': 'local', 'path': str(tmp_path)}
    repo = open_repository(options)
    signing = {'key_file': ssh_keys['server'][0]}
    _put_base(repo, 3, NOW - datetime.timedelta(days=1), signing=signing)
    for number in range(1, 7):
        _put_wal(repo, walchain.segment_name(1, number, MB16), NOW - datetime.timedelta(hours=7 - number),
                 signing=signing)
    return options, repo


def _resigned(manifest, key_file):
    unsigned = dict((k, v) for k, v in manifest.items() if k != 'signature')
    return Signer({'key_file': key_file}, CommandLog()).sign(unsigned) if key_file else unsigned


@pytest.mark.parametrize('forgery, expected', [
    ('unsigned', 'backup 000000010000000000000005 is not signed'),
    ('other key', 'does not verify with any trusted key'),
    ('changed', 'does not verify with any trusted key'),
])
def test_verify_refuses_the_wal_wal_fetch_would_refuse(signed_repo, ssh_keys, forgery, expected):
    options, repo = signed_repo
    trusted = {'trusted_keys': [ssh_keys['server'][1]]}
    log = CommandLog()
    done = verify(SET, [options, dict(options)], now=NOW, signing=trusted, log=log)
    assert done['ok'] and done['repositories'][0]['wal']['continuous']
    # each signature is checked once, however many repositories hold the same manifest
    assert sum(' -Y verify ' in c for c in log.commands) == 1 + 6

    name = '000000010000000000000005'
    key = wal.manifest_key(SET, name)
    manifest = json.loads(repo.get_bytes(key))
    if forgery == 'changed':
        manifest['created'] = mf.format_time(NOW)  # any field: the signature no longer covers it
    else:
        manifest = _resigned(manifest, ssh_keys['other'][0] if forgery == 'other key' else None)
    before = _keys(repo.root)
    repo.put_bytes(key, mf.dumps(manifest))
    with pytest.raises(IntegrityError) as raised:
        verify(SET, [options], now=NOW, signing=trusted)
    message = str(raised.value)
    assert raised.value.kind == 'integrity'
    assert 'WAL file %s is not authentic (wal-fetch refuses it)' % name in message and expected in message
    # it counts as missing: recovery from the base backup stops before it
    assert 'segment %s is missing' % name in message
    window = raised.value.details['repositories'][0]['wal']
    assert window['unauthentic'] == [name] and window['damaged'] == [name] and not window['continuous']
    assert _keys(repo.root) == before  # verify only reads
    assert verify(SET, [options], now=NOW)['ok']  # without trusted keys, as wal-fetch: accepted


def test_history_files_are_read_as_wal_fetch_reads_them(archive_repo):
    options, repo = archive_repo
    stored, dummy = wal.list_stored(repo, SET)
    entries = walchain.read_history(repo, SET, stored['00000002.history'], Encryption({}, CommandLog()))
    assert entries == [(1, 0x10A000060)]
    window = operations.info(SET, options)['recovery_window']
    assert not any(b['switches_inferred'] for b in window['base_backups'])


# -- hostile input -----------------------------------------------------------------------------
class _Memory(object):
    """Just what read_manifest asks of a repository."""

    def __init__(self, objects):
        self.objects = objects

    def get_bytes(self, key):
        return self.objects[key]

    def location(self, key=''):
        return 'memory:' + key


scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=2)
                           | st.dictionaries(st.text(max_size=4), inner, max_size=2), max_leaves=4)


@seed(SEED)
@settings(max_examples=200, deadline=None, print_blob=True)
@given(st.dictionaries(st.sampled_from(wal.MANIFEST_FIELDS + ('raw_size', 'raw_sha256', 'timeline', 'encryption')),
                       json_values, max_size=4), st.booleans())
def test_any_wal_manifest_is_read_or_refused_clearly(changes, as_list):
    note('seed %d' % SEED)
    name = '000000010000000000000003'
    good = {'format_version': 1, 'kind': 'wal', 'name': SET, 'id': name, 'created': '2026-12-06T12:00:00Z',
            'artifact': name + '.wal.zst', 'compression': 'zstd', 'encryption': None, 'size': 5, 'sha256': 'a' * 64,
            'raw_size': 9, 'raw_sha256': 'b' * 64, 'timeline': 1}
    good.update(changes)
    data = json.dumps([good] if as_list else good).encode()
    stored = wal.Stored(wal.parse_name(name))
    stored.manifest = ObjectInfo(wal.manifest_key(SET, name), len(data), None)
    stored.payloads = [ObjectInfo(wal.directory(SET) + name + '.wal.zst', 5, None)]
    try:
        walchain.read_manifest(_Memory({stored.manifest.key: data}), SET, stored)
    except BackupError as exc:  # anything else fails the test: a crash on what storage holds
        assert 'memory:' in str(exc)


@seed(SEED)
@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_any_history_text_parses_or_is_a_value_error(text):
    try:
        entries = walchain.parse_history(text, 5)
    except ValueError:
        return
    assert all(1 <= parent < 5 for parent, dummy in entries)


def test_list_json_holds_backup_infos_recovery_window_per_place(archive_repo, tmp_path, capsys):
    from ansible_collections.offsite.backup.plugins.module_utils._engine import cli
    options, repo = archive_repo
    repo.delete(wal.manifest_key(SET, '000000010000000100000005'))  # a gap, so there is something to show
    (tmp_path / 'empty-local').mkdir()
    job = tmp_path / 'job.json'  # JSON is YAML
    job.write_text(json.dumps({'name': 'crm', 'local': {'path': str(tmp_path / 'empty-local')},
                               'sources': [{'name': SET, 'source': {'type': 'postgresql_physical'}}],
                               'repositories': [options]}))
    assert cli.main(['list', str(job), '--json']) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(listed) == ['backups', 'recovery_windows']
    assert [(b['set'], b['repository']) for b in listed['backups']] == [(SET, 'local #0')] * 3
    # the same source of truth as backup_info: its recovery_window, with the set and the place
    expected = dict(operations.info(SET, options)['recovery_window'], set=SET, repository='local #0')
    assert listed['recovery_windows'] == [json.loads(json.dumps(expected))]
    assert listed['recovery_windows'][0]['gaps'][0]['first_missing'] == '000000010000000100000005'
    assert cli.main(['list', str(job)]) == 0
    text = capsys.readouterr().out
    assert 'GAP: 000000010000000100000005 missing' in text.split('Recovery windows')[1]


def test_list_prints_a_window_line_per_place():
    from ansible_collections.offsite.backup.plugins.module_utils._engine.cli import window_row
    window = {'set': SET, 'repository': 's3 #0', 'earliest': '2026-12-01T02:00:00Z', 'latest': '2026-12-06T14:31:40Z',
              'segments': 12, 'timelines': [{'timeline': 1}, {'timeline': 2}], 'problems': [],
              'gaps': [{'first_missing': '000000010000000100000005'}, {'first_missing': '000000010000000100000009'}]}
    assert window_row(window)[-1] == 'GAP: 000000010000000100000005 missing (and 1 more)'
    assert window_row(dict(window, gaps=[]))[-3:] == ('12', '1,2', 'continuous')
