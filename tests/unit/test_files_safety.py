# Copyright (c) offsite.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A files restore never writes outside its target directory, whatever the archive holds."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import io
import os
import tarfile

import pytest

from ansible_collections.offsite.backup.plugins.module_utils._engine.commands import CommandLog
from ansible_collections.offsite.backup.plugins.module_utils._engine.errors import (
    ConfigError, IntegrityError, TargetError)
from ansible_collections.offsite.backup.plugins.module_utils._engine.sources.files import (
    FilesSource, _check_member)

FILE, DIR, SYM, LNK = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE


def entry(name, kind=FILE, linkname=''):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o755 if kind == DIR else 0o644
    return info


# -- one member at a time ----------------------------------------------------------------------
@pytest.mark.parametrize('member', [
    entry('etc/app.conf'),
    entry('./etc/app.conf'),
    entry('etc', DIR),
    entry('etc/', DIR),
    entry('a/../b'),                                  # normalises to b
    entry('..data'),                                  # a name that merely starts with two dots
    entry('etc/current', SYM, 'releases/5'),
    entry('etc/up', SYM, '../var/log'),               # etc/../var/log stays inside
    entry('etc/self', SYM, '.'),
    entry('etc/parent', SYM, '..'),                   # the restore root itself
    entry('etc/dots', SYM, '..data'),                 # a sibling whose name starts with two dots
    entry('dots', SYM, '..data'),                     # the same, at the top
    entry('hard-dots', LNK, '..data'),
    entry('hard', LNK, 'etc/app.conf'),
    entry('a/hard', LNK, 'b/../etc/app.conf'),        # hard link names are archive-relative
], ids=['file', 'dot-slash', 'dir', 'dir-slash', 'normalised', 'dotdot-prefixed-name', 'symlink-down',
        'symlink-up-inside', 'symlink-self', 'symlink-to-root', 'symlink-dotdot-prefixed',
        'symlink-dotdot-prefixed-top', 'hardlink-dotdot-prefixed', 'hardlink', 'hardlink-normalised'])
def test_check_member_accepts_entries_inside(member):
    _check_member(member)


@pytest.mark.parametrize('member, what', [
    (entry('/etc/passwd'), 'escapes'),
    (entry('/'), 'escapes'),
    (entry('../evil'), 'escapes'),
    (entry('a/../../evil'), 'escapes'),
    (entry('a/b/../../../evil', DIR), 'escapes'),
    (entry('..'), 'escapes'),
    (entry('hard', LNK, '../outside'), 'link'),
    (entry('a/hard', LNK, '../../outside'), 'link'),
    (entry('hard', LNK, '/etc/shadow'), 'link'),
], ids=['absolute-file', 'absolute-root', 'parent-file', 'nested-parent', 'dir-escape', 'dotdot',
        'hardlink-out', 'hardlink-nested-out', 'hardlink-absolute'])
def test_check_member_refuses_escapes(member, what):
    with pytest.raises(IntegrityError) as err:
        _check_member(member)
    assert what in str(err.value)
    assert repr(member.name) in str(err.value)


@pytest.mark.parametrize('member', [
    entry('etc/passwd', SYM, '../../etc/passwd'),
    entry('deep/er/link', SYM, '../../../etc'),
    entry('link', SYM, '..'),
    entry('link', SYM, '/etc/passwd'),
    entry('link', SYM, '/'),
    entry('d', SYM, 's/../x'),
], ids=['symlink-relative-out', 'symlink-deep-out', 'symlink-parent-at-root', 'symlink-absolute',
        'symlink-to-slash', 'symlink-via-another'])
def test_a_symlink_target_is_data(member):
    """Restored as the link it was (a server's tree holds such links: /etc/alternatives...);
    what matters is that nothing is ever written through it."""
    _check_member(member, {'s'})


@pytest.mark.parametrize('member, symlinks', [
    (entry('l/passwd'), {'l'}),
    (entry('l/x/y', DIR), {'l'}),
    (entry('l/../escaped'), {'l'}),
    (entry('l'), {'l'}),
    (entry('h', LNK, 'l'), {'l'}),
], ids=['file-through-symlink', 'dir-through-symlink', 'dotdot-after-symlink', 'file-over-symlink',
        'hardlink-to-symlink'])
def test_nothing_is_written_through_or_over_a_symlink(member, symlinks):
    with pytest.raises(IntegrityError, match='symlink'):
        _check_member(member, symlinks)


@pytest.mark.parametrize('member, symlinks', [
    # a -> "." then a/b -> "..": lexically the root, really its parent
    (entry('a/b', SYM, '..'), {'a'}),
    (entry('h', LNK, 's/../outside'), {'s'}),
    (entry('h', LNK, 'dir/s/x/../../y'), {'dir/s'}),
], ids=['symlink-in-symlinked-dir', 'hardlink-through-symlink', 'hardlink-through-nested-symlink'])
def test_check_member_refuses_climbing_back_out_of_another_link(member, symlinks):
    _check_member(member)                  # each entry alone looks harmless...
    with pytest.raises(IntegrityError):    # ...but not with the archive's other symlinks
        _check_member(member, symlinks)


@pytest.mark.parametrize('member, symlinks', [
    (entry('app.conf', SYM, 'current/conf/app.conf'), {'current'}),   # through a link, downwards
    (entry('l', SYM, 'releases/5/../4'), {'current'}),                 # '..' after a plain directory
], ids=['symlink-via-symlink', 'dotdot-after-directory'])
def test_check_member_allows_links_through_links_that_do_not_climb(member, symlinks):
    _check_member(member, symlinks)


# -- restores end to end -----------------------------------------------------------------------
def build_tar(path, *members):
    """members: (TarInfo, bytes or None)"""
    with tarfile.open(str(path), 'w') as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            else:
                archive.addfile(info)
    return str(path)


def files_target(path, **options):
    return FilesSource(dict({'type': 'files', 'path': str(path)}, **options), CommandLog())


@pytest.fixture(params=['tar-filter', 'no-tar-filter'])
def tar_filter(request, monkeypatch):
    """Run with and without tarfile's extraction filter: Debian 12's Python 3.11.2 has none, so
    the engine's own checks must stop every escape by themselves."""
    if request.param == 'no-tar-filter':
        monkeypatch.delattr(tarfile, 'tar_filter', raising=False)
    elif not hasattr(tarfile, 'tar_filter'):
        pytest.skip('this Python has no tarfile extraction filter')
    return request.param


def test_restore_refuses_a_parent_escape_and_leaves_nothing(tmp_path, tar_filter):
    archive = build_tar(tmp_path / 'evil.tar', (entry('ok.txt'), b'fine'), (entry('../evil'), b'pwned'))
    target = tmp_path / 'restore' / 'files'
    source = files_target(target)
    source.check_target('create')
    with pytest.raises(IntegrityError) as err:
        source.restore(archive, {}, 'create')
    assert "'../evil'" in str(err.value)
    assert not target.exists()
    assert not (tmp_path / 'restore' / 'evil').exists()
    assert os.listdir(str(tmp_path / 'restore')) == []      # no scratch directory left behind


@pytest.mark.parametrize('members, escaped', [
    # s -> ".", d -> "s/../escaped", then a file written through d
    ([(entry('s', SYM, '.'), None), (entry('d', SYM, 's/../escaped'), None),
      (entry('d/evil'), b'pwned')], 'escaped'),
    # a -> ".", a/b -> "..", then a file written through a/b
    ([(entry('a', SYM, '.'), None), (entry('a/b', SYM, '..'), None),
      (entry('a/b/evil'), b'pwned')], 'evil'),
], ids=['symlink-through-symlink', 'symlink-in-symlinked-dir'])
def test_restore_refuses_link_chains(tmp_path, tar_filter, members, escaped):
    archive = build_tar(tmp_path / 'chain.tar', *members)
    parent = tmp_path / 'restore'
    target = parent / 'files'
    with pytest.raises(IntegrityError):
        files_target(target).restore(archive, {}, 'create')
    assert not target.exists()
    assert os.listdir(str(parent)) == []
    assert not (parent / escaped).exists() and not (parent / 'evil').exists()


def test_restore_of_a_good_archive_with_mode_create(tmp_path, tar_filter):
    archive = build_tar(
        tmp_path / 'good.tar',
        (entry('etc', DIR), None),
        (entry('etc/app.conf'), b'listen = 8080\n'),
        (entry('etc/releases', DIR), None),
        (entry('etc/releases/5.txt'), b'five'),
        (entry('etc/current', SYM, 'releases/5.txt'), None),
        (entry('etc/app.conf.bak', LNK, 'etc/app.conf'), None),
        (entry('empty.txt'), b''),
    )
    target = tmp_path / 'restore' / 'files'
    source = files_target(target)
    assert source.check_target('create') == {'exists': False}
    result = source.restore(archive, {}, 'create')
    assert result == {'path': str(target), 'replaced': False, 'files': 7, 'verified': {'files': 4, 'bytes': 18}}
    assert (target / 'etc' / 'app.conf').read_bytes() == b'listen = 8080\n'
    assert os.readlink(str(target / 'etc' / 'current')) == 'releases/5.txt'
    assert (target / 'etc' / 'current').read_bytes() == b'five'
    assert os.stat(str(target / 'etc' / 'app.conf.bak')).st_ino == os.stat(str(target / 'etc' / 'app.conf')).st_ino
    assert (target / 'empty.txt').read_bytes() == b''
    assert sorted(os.listdir(str(tmp_path / 'restore'))) == ['files']


def test_restore_replace_swaps_the_directory(tmp_path):
    archive = build_tar(tmp_path / 'good.tar', (entry('new.txt'), b'new'))
    target = tmp_path / 'files'
    target.mkdir()
    (target / 'old.txt').write_bytes(b'old')
    source = files_target(target)
    assert source.check_target('replace') == {'exists': True}
    result = source.restore(archive, {}, 'replace')
    assert result['replaced'] is True and 'previous' not in result
    assert sorted(os.listdir(str(target))) == ['new.txt']
    assert sorted(os.listdir(str(tmp_path))) == ['files', 'good.tar']   # the previous copy is gone


def test_restore_of_a_damaged_archive_leaves_the_target_alone(tmp_path):
    good = build_tar(tmp_path / 'good.tar', (entry('a.txt'), b'x' * 5000))
    with open(good, 'rb') as handle:
        data = handle.read()
    broken = tmp_path / 'broken.tar'
    broken.write_bytes(data[:600])          # header and part of the file
    target = tmp_path / 'files'
    target.mkdir()
    (target / 'keep.txt').write_bytes(b'keep')
    with pytest.raises(IntegrityError):
        files_target(target).restore(str(broken), {}, 'replace')
    assert sorted(os.listdir(str(target))) == ['keep.txt']
    assert sorted(os.listdir(str(tmp_path))) == ['broken.tar', 'files', 'good.tar']


@pytest.mark.parametrize('prepare, exists', [
    (None, False),
    ('empty-dir', False),
    ('non-empty-dir', True),
    ('file', True),
], ids=['absent', 'empty-dir', 'non-empty-dir', 'file'])
def test_check_target(tmp_path, prepare, exists):
    target = tmp_path / 'files'
    if prepare == 'empty-dir':
        target.mkdir()
    elif prepare == 'non-empty-dir':
        target.mkdir()
        (target / 'x').write_bytes(b'x')
    elif prepare == 'file':
        target.write_bytes(b'x')
    source = files_target(target)
    assert source.check_target('replace') == {'exists': exists}
    if exists:
        with pytest.raises(TargetError) as err:
            source.check_target('create')
        assert 'mode: replace' in str(err.value)
    else:
        assert source.check_target('create') == {'exists': False}


@pytest.mark.parametrize('options, mode, message', [
    ({}, 'merge', 'restore mode'),
    ({'path': None}, 'create', 'needs path'),
], ids=['unknown-mode', 'no-path'])
def test_check_target_bad_options(tmp_path, options, mode, message):
    source = FilesSource(dict({'type': 'files', 'path': str(tmp_path / 'x')}, **options), CommandLog())
    with pytest.raises(ConfigError) as err:
        source.check_target(mode)
    assert message in str(err.value)


def test_absolute_and_outward_symlinks_are_restored_as_links(tmp_path, tar_filter):
    archive = build_tar(tmp_path / 'links.tar', (entry('etc', DIR), None),
                        (entry('etc/localtime', SYM, '/usr/share/zoneinfo/UTC'), None),
                        (entry('etc/up', SYM, '../../outside'), None), (entry('etc/f'), b'x'))
    target = tmp_path / 'restore' / 'files'
    files_target(target).restore(archive, {}, 'create')
    assert os.readlink(str(target / 'etc' / 'localtime')) == '/usr/share/zoneinfo/UTC'
    assert os.readlink(str(target / 'etc' / 'up')) == '../../outside'


def test_a_file_written_through_an_absolute_symlink_is_refused(tmp_path, tar_filter):
    outside = tmp_path / 'outside'
    outside.mkdir()
    archive = build_tar(tmp_path / 'evil.tar', (entry('l', SYM, str(outside)), None), (entry('l/evil'), b'pwned'))
    target = tmp_path / 'restore' / 'files'
    with pytest.raises(IntegrityError, match="through or over its symlink 'l'"):
        files_target(target).restore(archive, {}, 'create')
    assert os.listdir(str(outside)) == [] and not target.exists()


def test_counts_differing_from_the_manifest_refuse_the_restore(tmp_path):
    archive = build_tar(tmp_path / 'a.tar', (entry('a'), b'12345'), (entry('b'), b'67'))
    target = tmp_path / 'restore' / 'files'
    with pytest.raises(IntegrityError, match='holds 2 files, 7 bytes but its manifest records 3 files, 7 bytes'):
        files_target(target).restore(archive, {'source': {'counts': {'files': 3, 'bytes': 7}}}, 'create')
    assert not target.exists()
    result = files_target(target).restore(archive, {'source': {'counts': {'files': 2, 'bytes': 7}}}, 'create')
    assert result['verified'] == {'files': 2, 'bytes': 7}


def test_dump_counts_files_and_bytes_from_the_stream(tmp_path):
    tree = tmp_path / 'tree'
    (tree / 'd').mkdir(parents=True)
    (tree / 'd' / 'a').write_bytes(b'a' * 1000)
    (tree / 'b').write_bytes(b'')
    os.link(str(tree / 'd' / 'a'), str(tree / 'hard'))
    os.symlink('/etc/passwd', str(tree / 'abs'))
    with open(str(tree / 'sparse'), 'wb') as handle:
        handle.truncate(10 * 1024 * 1024)
        handle.write(b'head')
    source = FilesSource({'type': 'files', 'paths': [str(tree)]}, CommandLog())
    with source.dump() as reader:
        while reader.read(65536):
            pass
    assert source.dump_facts() == {'counts': {'files': 4, 'bytes': 1000 + 10 * 1024 * 1024}}


def test_overlapping_paths_are_refused(tmp_path):
    (tmp_path / 'a' / 'b').mkdir(parents=True)
    source = FilesSource({'type': 'files', 'paths': [str(tmp_path / 'a'), str(tmp_path / 'a' / 'b')]}, CommandLog())
    with pytest.raises(ConfigError, match='archive it twice'):
        source.probe()


def test_mode_bits_come_back_with_and_without_the_filter(tmp_path, tar_filter):
    modes = {'tool': 0o4755, 'group-tool': 0o2711, 'team.txt': 0o664, 'world.txt': 0o666}
    members = [(_with_mode(entry('drop', DIR), 0o1777), None)]
    members += [(_with_mode(entry(name), mode), b'x') for name, mode in modes.items()]
    archive = build_tar(tmp_path / 'modes.tar', *members)
    target = tmp_path / 'restored'
    files_target(target).restore(archive, {}, 'create')
    for name, mode in dict(modes, drop=0o1777).items():
        assert oct(os.lstat(str(target / name)).st_mode & 0o7777) == oct(mode), name


@pytest.mark.parametrize('kind', [tarfile.CHRTYPE, tarfile.BLKTYPE])
def test_device_files_are_refused(tmp_path, tar_filter, kind):
    device = entry('dev/sda', kind)
    device.devmajor, device.devminor = 8, 0
    archive = build_tar(tmp_path / 'dev.tar', (entry('ok.txt'), b'fine'), (device, None))
    target = tmp_path / 'restore' / 'files'
    with pytest.raises(IntegrityError, match='device file'):
        files_target(target).restore(archive, {}, 'create')
    assert os.listdir(str(tmp_path / 'restore')) == []


def _with_mode(info, mode):
    info.mode = mode
    return info
