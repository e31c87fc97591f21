# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``offsite-backup`` command: runs job files on the host, from cron or a systemd timer.

    offsite-backup run /etc/offsite-backup/crm.yml [--dry-run] [--env-file FILE] [--verbose]
    offsite-backup list /etc/offsite-backup/crm.yml
    offsite-backup restore /etc/offsite-backup/crm.yml --set crm_db --database crm_check
    offsite-backup monitor /etc/offsite-backup/crm.yml --textfile /var/lib/node-exporter/crm.prom
    offsite-backup drill /etc/offsite-backup/crm.yml
    offsite-backup cleanup /etc/offsite-backup/crm.yml [--set crm_db] [--dry-run]
    offsite-backup wal-push /etc/offsite-backup/crm.yml %p            (PostgreSQL's archive_command)
    offsite-backup wal-status /etc/offsite-backup/crm.yml             (WAL not archived yet, as metrics)
    offsite-backup wal-fetch /etc/offsite-backup/crm.yml %f %p        (restore_command; docs/pitr.md)

The client role installs the engine as the package ``offsite_backup`` (one wheel, see
packaging/engine_wheel.py) in its virtualenv, with this as its ``offsite-backup`` console script;
in a checkout, ``python -m ansible_collections.offsite.backup.plugins.module_utils._engine.cli``.
Exit status: 0 success, 1 a backup (or restore) failed, 2 the job file or the command line is
wrong, 3 another run of the job holds the lock. ``wal-fetch`` differs (PostgreSQL reads it):
1 only when no repository holds the file, 255 (recovery aborts) for every other failure.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import sys

from . import walspool

# restore_command's fast path: a segment the prefetcher spooled is renamed into place before
# anything else is imported (walspool.py; it runs once per 16 MiB of WAL replayed)
if sys.argv[1:2] == ['wal-fetch'] and walspool.serve_once(sys.argv[1:]) == 0:
    raise SystemExit(0)

import argparse  # noqa: E402 (after the fast path)
import collections
import contextlib
import functools
import json
import logging
import os
import re
import socket
import threading
import time
import traceback

from . import jobs
from . import manifest as mf
from .commands import CommandLog
from .errors import BackupError, ConfigError, LockedError, as_backup_error
from .repositories import open_repository

# operations (every use case) and monitoring are imported by the commands that use them: wal-push
# starts once per 16 MiB of WAL, and needs neither (bench/wal_archiving.py)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_LOCKED = 0, 1, 2, 3
# restore_command: an exit status above 125 makes PostgreSQL abort recovery (FATAL) instead of
# taking the failure for the end of the archive
EXIT_ABORT_RECOVERY = 255
TAIL_LINES = 200


class Redact(logging.Filter):
    """Defence in depth: the engine builds messages without secrets, and any value from the
    env file that still slips into a log line is masked."""

    def __init__(self, secrets):
        logging.Filter.__init__(self)
        self.secrets = sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True)

    def filter(self, record):
        if self.secrets:
            text = record.getMessage()
            for secret in self.secrets:
                text = text.replace(secret, '********')
            record.msg, record.args = text, None
        return True


class Tail(logging.Handler):
    """The last lines of this run, sent with a fail ping."""

    def __init__(self):
        logging.Handler.__init__(self)
        self.lines = collections.deque(maxlen=TAIL_LINES)

    def emit(self, record):
        self.lines.append(self.format(record))

    def text(self):
        return '\n'.join(self.lines)


def setup_logging(job, verbose, secrets, to_file=True):
    """Rotated log file for every run (not for a dry run); the terminal gets progress, cron only errors."""
    logger = logging.getLogger('offsite-backup.%s' % job['name'])
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.filters = [Redact(secrets)]
    formatter = logging.Formatter('%(asctime)s %(levelname)s [%(process)d] %(message)s')
    if to_file:
        # imported here: wal-push, a process per WAL segment, logs to no file (~0.9 MiB less)
        from logging.handlers import RotatingFileHandler
        path = job['log']['path']
        try:
            os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
            file_handler = RotatingFileHandler(path, maxBytes=job['log']['max_bytes'],
                                               backupCount=job['log']['backups'])
            os.chmod(path, 0o640)
            file_handler.setFormatter(formatter)
            logger.addHandler(file_handler)
        except (IOError, OSError) as exc:
            sys.stderr.write('offsite-backup: cannot write the log file %s (%s); logging to stderr only\n'
                             % (path, exc.strerror or exc))
    console = logging.StreamHandler(sys.stdout if verbose else sys.stderr)
    console.setLevel(logging.INFO if verbose else logging.ERROR)
    console.setFormatter(logging.Formatter('%(message)s'))
    logger.addHandler(console)
    tail = Tail()
    tail.setFormatter(formatter)
    logger.addHandler(tail)
    return logger, tail


def human_bytes(count):
    value = float(count or 0)
    for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
        if value < 1024 or unit == 'TiB':
            return ('%d %s' % (value, unit)) if unit == 'B' else ('%.1f %s' % (value, unit))
        value /= 1024


def human_age(seconds):
    seconds = max(0, int(seconds))
    for size, unit in ((86400, 'd'), (3600, 'h'), (60, 'm')):
        if seconds >= size:
            return '%d%s' % (seconds // size, unit)
    return '%ds' % seconds


class Progress(object):
    """Bytes, rate and elapsed time of the dump being written, on a terminal only: it
    watches the growing ``.partial`` file, so the engine needs no callback."""

    def __init__(self, directory, stream):
        self.directory = directory
        self.stream = stream
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop)
        self.thread.daemon = True

    def __enter__(self):
        self.started = time.time()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join()
        self.stream.write('\n')
        self.stream.flush()

    def _size(self):
        total = 0
        for root, dirs, files in os.walk(self.directory):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files if f.endswith(mf.PARTIAL_SUFFIX)
                         and os.path.exists(os.path.join(root, f)))
        return total

    def _loop(self):
        while not self.stopped.wait(1.0):
            try:
                size = self._size()
            except OSError:
                continue
            elapsed = time.time() - self.started
            self.stream.write('\r  %s written, %s/s, %s elapsed   ' % (
                human_bytes(size), human_bytes(size / elapsed if elapsed else 0), human_age(elapsed)))
            self.stream.flush()


def load_job(args):
    environ = dict(os.environ)
    secrets = []
    env_file = args.env_file
    if env_file is None:
        default = os.path.splitext(args.job)[0] + '.env'
        env_file = default if os.path.exists(default) else None
    if env_file:
        values = jobs.read_env_file(env_file)
        secrets = list(values.values())
        environ.update(values)
        # tools started by the engine (pg_dump, restic...) see them too, like `source .env`
        os.environ.update(values)
    job = jobs.load(args.job, environ)
    # secrets written into the job itself (https://user:pass@host in endpoint_url) stay out of the log too
    for options in job['repositories']:
        try:
            secrets += open_repository(options).secrets()
        except BackupError:
            pass  # a repository that cannot be built fails, with its own message, when it is used
    return job, secrets


def cmd_run(args):
    from . import operations
    from .monitoring import Monitor
    job, secrets = load_job(args)
    verbose = args.verbose or sys.stdout.isatty()
    # a dry run opens nothing that writes: no log file, no local directory, no lock (it only reads)
    logger, tail = setup_logging(job, verbose, secrets, to_file=not args.dry_run)
    host = job['monitoring'].get('instance') or socket.getfqdn()
    monitor = Monitor(job['monitoring'], job['name'], host, logger)
    local = job['local']['path']
    if not args.dry_run:
        os.makedirs(local, mode=0o700, exist_ok=True)
    started = time.time()
    logger.info('job %s: %s on %s', job['name'], 'dry run' if args.dry_run else 'run', host)
    results, error = [], None
    try:
        with (contextlib.nullcontext() if args.dry_run else operations.set_lock(local, 'job-%s' % job['name'])):
            if not args.dry_run:
                monitor.start()
            show = Progress(local, sys.stderr) if (sys.stderr.isatty() and not args.dry_run) else None
            if show:
                with show:
                    results = jobs.run(job, dry_run=args.dry_run, log=CommandLog(), logger=logger)
            else:
                results = jobs.run(job, dry_run=args.dry_run, log=CommandLog(), logger=logger)
    except LockedError as exc:
        logger.error('job %s: %s', job['name'], exc)
        return EXIT_LOCKED  # the run holding the lock reports for itself: no fail ping
    except BackupError as exc:
        error = exc
        logger.error('job %s: %s', job['name'], exc)
    ok = error is None and all(r.succeeded for r in results)
    elapsed = time.time() - started
    total = sum((r.backup or {}).get('size') or 0 for r in results)
    logger.info('job %s: %s in %s (%s)', job['name'], 'succeeded' if ok else 'FAILED', human_age(elapsed),
                human_bytes(total))
    if not args.dry_run:
        monitor.finish(results, log_tail=tail.text(), error=error)
    if args.json:
        sys.stdout.write(json.dumps({'job': job['name'], 'ok': ok, 'duration': round(elapsed, 3),
                                     'sets': [r.as_dict() for r in results],
                                     'error': str(error) if error else None,
                                     'monitoring_problems': monitor.problems}, sort_keys=True, default=str) + '\n')
    return EXIT_OK if ok else EXIT_FAILED


def verified(row):
    """The VERIFIED column of ``list`` (docs/verify.md): the strongest proof a copy has.
    ``restored``: a restore proved it (its proven marker, written by drills and restores that
    mark it); ``checksum``: the upload proved that what landed has the backup's size and sha256
    (a repository writes the manifest only after that proof); ``size``: the same with the
    repository's ``verify: size``; ``no``: nothing re-read it (the local copy as the dump wrote
    it, an incomplete upload, a legacy backup without a manifest)."""
    if row.get('proven'):
        return 'restored'
    if row['repository'] == 'local' or not row.get('complete') or row.get('legacy'):
        return 'no'
    return 'size' if row.get('verify') == 'size' else 'checksum'


def cmd_list(args):
    job, secrets = load_job(args)
    windows = []
    rows = jobs.listing(job, windows=windows)
    if args.json:  # the shape is docs/role-client.md's ("offsite-backup list --json")
        sys.stdout.write(json.dumps({'backups': rows, 'recovery_windows': windows}, sort_keys=True, default=str)
                         + '\n')
        return EXIT_FAILED if any('error' in r for r in rows) else EXIT_OK
    now = mf.utcnow()
    table = [('SET', 'REPOSITORY', 'BACKUP', 'AGE', 'SIZE', 'VERIFIED', 'STATE')]
    for row in rows:
        if 'error' in row:
            table.append((row['set'], row['repository'], '-', '-', '-', '-', 'ERROR: %s' % row['error']))
            continue
        age = (now - mf.parse_time(row['created'])).total_seconds()
        state = 'complete' if row.get('complete') else ('damaged: %s' % row['problem'] if row.get('problem')
                                                        else 'incomplete')
        if row.get('suspect'):
            state = 'SUSPECT: dated %s in the future (wrong clock?)' % human_age(-age)
        if row.get('authentic') is False:  # the job trusts signing keys and this backup has no good signature
            state = 'UNAUTHENTIC: %s' % row['authenticity_problem']
        table.append((row['set'], row['repository'], row['id'], human_age(age), human_bytes(row.get('size')),
                      verified(row), state))
    _print_table(table)
    if windows:
        sys.stdout.write('\nRecovery windows (point-in-time recovery, docs/pitr.md):\n')
        _print_table([('SET', 'REPOSITORY', 'EARLIEST', 'LATEST', 'SEGMENTS', 'TIMELINES', 'STATE')]
                     + [window_row(w) for w in windows])
    return EXIT_FAILED if any('error' in r for r in rows) else EXIT_OK


def window_row(window):
    """One line of ``list``'s recovery windows: backup_info's ``recovery_window`` of a place."""
    if window['gaps']:
        first = window['gaps'][0]
        state = 'GAP: %s missing%s' % (first['first_missing'], ' (and %d more)' % (len(window['gaps']) - 1)
                                       if len(window['gaps']) > 1 else '')
    elif window.get('problems'):
        state = 'PROBLEM: %s' % window['problems'][0]
    elif not window['earliest']:
        state = 'no base backup'
    else:
        state = 'continuous'
    return (window['set'], window['repository'], window['earliest'] or '-', window['latest'] or '-',
            str(window['segments']), ','.join(str(t['timeline']) for t in window['timelines']) or '-', state)


def _print_table(table):
    widths = [max(len(str(line[i])) for line in table) for i in range(len(table[0]) - 1)]
    for line in table:
        cells = [str(c).ljust(w) for c, w in zip(line, widths)] + [str(line[-1])]
        sys.stdout.write('  '.join(cells).rstrip() + '\n')


def cmd_restore(args):
    from . import operations
    job, secrets = load_job(args)
    entries = dict((e['name'], e) for e in job['sources'])
    if args.set not in entries:
        raise ConfigError('job %s has no backup set %s' % (job['name'], args.set),
                          'use one of: %s' % ', '.join(sorted(entries)))
    if args.repository == 'local':
        repository = jobs.local_repository(job)
    else:
        try:
            repository = job['repositories'][int(args.repository)]
        except (ValueError, IndexError):
            raise ConfigError('--from %s is neither local nor the index of one of the job\'s %d repositories'
                              % (args.repository, len(job['repositories'])))
    target = dict(entries[args.set]['source'])
    if args.database:
        target['database'] = args.database
    if args.path:
        target['path'] = args.path
    result = operations.restore(args.set, repository, target, backup=args.backup, mode=args.mode,
                                work_dir=args.work_dir, clock_skew=job.get('clock_skew'),
                                encryption=_decryption(job, args), signing=jobs.trusted_keys(job),
                                log=CommandLog())
    for warning in result.get('warnings', []):
        sys.stderr.write('offsite-backup: warning: %s\n' % warning)
    for item in result.get('cleaned') or []:
        sys.stdout.write('removed %s (left by a killed restore)\n' % item)
    sys.stdout.write('restored %s into %s (%s, %ss)\n' % (result['backup']['id'], result['target'],
                                                          result['mode'], result['duration']))
    return EXIT_OK


def cmd_monitor(args):
    """Read every repository of the job and export what is there (freshness.py)."""
    from . import freshness
    job, secrets = load_job(args)
    if not job['repositories']:
        raise ConfigError('job %s lists no repositories to watch' % job['name'])
    prom = freshness.prometheus()[0]
    logger = logging.getLogger('offsite-backup.monitor')
    logger.addHandler(logging.StreamHandler(sys.stderr))
    logger.filters = [Redact(secrets)]
    if not (args.textfile or args.pushgateway or args.listen):
        raise ConfigError('say where the metrics go: --textfile PATH, --pushgateway URL or --listen [HOST:]PORT')
    families = freshness.collect(job, read_data=args.read_data, logger=logger)
    registry, snapshot = freshness.registry_with(families)
    host = job['monitoring'].get('instance') or socket.getfqdn()
    if args.textfile:
        if not args.textfile.endswith('.prom'):
            raise ConfigError('--textfile %s must end in .prom (node_exporter reads only those)' % args.textfile)
        prom.write_to_textfile(args.textfile, registry)  # written aside, then renamed
        os.chmod(args.textfile, 0o644)
    if args.pushgateway:
        # one group per job and watching host: a later read replaces all of it
        prom.push_to_gateway(args.pushgateway, job=job['name'], registry=registry,
                             grouping_key={'instance': host, 'watch': 'repositories'}, timeout=30)
    if args.listen:
        address, _sep, port = args.listen.rpartition(':')
        prom.start_http_server(int(port), addr=address or '0.0.0.0', registry=registry)
        while True:  # serve the last reading; read again every --interval seconds
            time.sleep(args.interval)
            snapshot.families = freshness.collect(job, read_data=args.read_data, logger=logger)
    if args.json:
        sys.stdout.write(json.dumps([{'name': f.name, 'samples': [[s.labels, s.value] for s in f.samples]}
                                     for f in families], sort_keys=True) + '\n')
    return EXIT_OK


def cmd_drill(args):
    """The DR drill of the job's sets (drill.py), reported and pushed like the playbook's."""
    from . import drill, operations
    from .monitoring import Monitor, quote
    job, secrets = load_job(args)
    verbose = args.verbose or sys.stdout.isatty()
    drill_log = dict(job['log'], path='%s-drill.log' % os.path.splitext(job['log']['path'])[0])
    logger, tail = setup_logging(dict(job, log=drill_log), verbose, secrets)
    host = job['monitoring'].get('instance') or socket.getfqdn()
    with operations.set_lock(job['local']['path'], 'drill-%s' % job['name']):
        report, paths, metrics = drill.run(job, host, log=CommandLog(), logger=logger)
    gateway = (job.get('drill') or {}).get('pushgateway') or job['monitoring'].get('pushgateway')
    if gateway:
        url = '%s/metrics/job/offsite_dr_drill/instance/%s' % (gateway['url'].rstrip('/'), quote(host, safe=''))
        Monitor({}, job['name'], host, logger)._send('drill metrics push', url, metrics, 'text/plain; version=0.0.4')
    failed = [s for s in report['sets'] if not s['success']]
    for s in failed:
        logger.error('drill of %s FAILED: %s', s['name'], s.get('error'))
    logger.info('drill report: %s', paths['html'])
    if args.json:
        sys.stdout.write(json.dumps(dict(report, paths=paths), sort_keys=True, default=str) + '\n')
    return EXIT_OK if report['success'] else EXIT_FAILED


def cmd_cleanup(args):
    """What killed restores of the job's sets left (scratch databases, work directories): removed
    where the owner provably died, listed otherwise."""
    from . import operations
    job, secrets = load_job(args)
    entries = dict((e['name'], e) for e in job['sources'])
    if args.set and args.set not in entries:
        raise ConfigError('job %s has no backup set %s' % (job['name'], args.set),
                          'use one of: %s' % ', '.join(sorted(entries)))
    removed, kept = [], []
    for name in [args.set] if args.set else sorted(entries):
        target = dict(entries[name]['source'])
        if args.database:
            target['database'] = args.database
        if args.path:
            target['path'] = args.path
        if target.get('type') == 'files' and not target.get('path'):
            target = None  # a files restore's scratch lies next to its --path: only work directories then
        result = operations.cleanup(target, work_dir=args.work_dir, check_mode=args.dry_run, log=CommandLog())
        removed += [item for item in result['removed'] if item not in removed]
        kept += [item for item in result['kept'] if item not in kept]
    if args.json:
        sys.stdout.write(json.dumps({'removed': removed, 'kept': kept, 'dry_run': args.dry_run}, sort_keys=True) + '\n')
        return EXIT_OK
    verb = 'would remove' if args.dry_run else 'removed'
    for item in removed:
        sys.stdout.write('%s %s\n' % (verb, item))
    for item in kept:
        sys.stdout.write('kept %s (%s)\n' % (item['what'], item['why']))
    if not removed and not kept:
        sys.stdout.write('nothing left by killed restores\n')
    return EXIT_OK


def _wal_job(args):
    from . import wal
    job, secrets = load_job(args)
    return wal, job, wal.choose_set(job['sources'], args.set)


# glibc's mallopt parameter (malloc.h) for the number of malloc arenas
M_ARENA_MAX = -8


def _one_malloc_arena():
    """Every thread of this process allocates from one malloc arena (glibc; elsewhere nothing).
    Why: archive_command starts a wal-push per WAL segment, and its threads (one per repository)
    each got an arena of their own: S3 + local with age peaked at 59.5 MiB, 57.1 with one arena
    (issue 17: < 60 MB; bench/wal_archiving.py). ctypes costs 0.3 MiB of that."""
    try:
        import ctypes
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, 1)
    except (ImportError, OSError, AttributeError):
        pass


def cmd_wal_push(args):
    """archive_command: exit 0 only once min_success repositories hold the file complete."""
    _one_malloc_arena()  # before any thread starts
    wal, job, name = _wal_job(args)
    try:
        result = wal.push(name, args.wal_path, job['repositories'], min_success=job.get('min_success'),
                          compression=job['compression'], level=job.get('compression_level'),
                          encryption=job.get('encryption'), signing=job.get('signing'), log=CommandLog())
    except BackupError as exc:
        _wal_metrics(job, name, ((exc.details or {}).get('repositories') if isinstance(exc.details, dict) else None)
                     or [{'type': r.get('type'), 'repository': r.get('name') or r.get('type'), 'status': 'failed'}
                         for r in job['repositories']])
        raise
    _wal_metrics(job, name, result['repositories'])
    for outcome in result['repositories']:
        if outcome['status'] == 'failed':  # below min_success it raised; this one is reported only
            sys.stderr.write('offsite-backup: warning: %s not archived to %s: %s\n'
                             % (result['file'], outcome['location'] or outcome['type'], outcome['error']))
    if args.json:
        sys.stdout.write(json.dumps(result, sort_keys=True) + '\n')
    return EXIT_OK


def _wal_metrics(job, name, outcomes):
    """backup_wal_* series (monitoring.record_wal_push), when the job has a textfile or a
    Pushgateway; a problem there is a warning on stderr, never a failed archive_command."""
    config = job['monitoring']
    if not (config.get('textfile') or config.get('pushgateway')):
        return
    from . import monitoring
    logger = logging.getLogger('offsite-backup.wal-push')
    if not logger.handlers:
        logger.addHandler(logging.StreamHandler(sys.stderr))
    host = config.get('instance') or (socket.getfqdn() if config.get('pushgateway') else None)
    monitoring.record_wal_push(config, job, name, outcomes, host, logger)


WAL_STATUS_SQL = (
    "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN '' ELSE pg_current_wal_lsn()::text END, "
    "coalesce(last_archived_wal, ''), current_setting('wal_segment_size') FROM pg_stat_archiver")


def cmd_wal_status(args):
    """Scheduled beside archive_command: how much WAL the cluster of the set wrote and has not
    archived (backup_wal_unarchived_*), into the job's WAL metrics; WalArchiveStale needs it to
    tell an idle cluster from one whose WAL waits. A standby (in recovery) is read as unknown."""
    from . import monitoring
    from .sources import open_source
    from .sources.postgresql_physical import parse_lsn, parse_size
    wal, job, name = _wal_job(args)
    options = dict([entry for entry in job['sources'] if entry['name'] == name][0]['source'])
    options.update((key, value) for key, value in (('host', args.host), ('port', args.port)) if value is not None)
    source = open_source(options, CommandLog())
    row = source._psql(WAL_STATUS_SQL, options.get('maintenance_db', 'postgres'), 'reading pg_stat_archiver')[0]
    backlog = None
    if row[0] != 't':
        backlog = monitoring.wal_backlog(parse_lsn(row[1]), row[2], parse_size(row[3]))
    config = job['monitoring']
    logger = logging.getLogger('offsite-backup.wal-status')
    if not logger.handlers:
        logger.addHandler(logging.StreamHandler(sys.stderr))
    host = config.get('instance') or (socket.getfqdn() if config.get('pushgateway') else None)
    path = monitoring.record_wal_status(config, job, name, backlog, host, logger)
    result = {'set': name, 'last_archived_wal': row[2] or None, 'in_recovery': row[0] == 't', 'metrics': path,
              'unarchived_bytes': backlog and backlog[0], 'unarchived_segments': backlog and backlog[1]}
    if args.json:
        sys.stdout.write(json.dumps(result, sort_keys=True) + '\n')
    return EXIT_OK


def _decryption(job, args):
    """The job's encryption settings, with the identity of --identity-file when given."""
    encryption = dict(job.get('encryption') or {})
    if args.identity_file:
        encryption['identity_file'] = args.identity_file
    return encryption or None


def cmd_wal_fetch(args):
    """restore_command: 0 served, 1 in no repository, EXIT_ABORT_RECOVERY otherwise (main)."""
    wal, job, name = _wal_job(args)
    fetch = functools.partial(wal.fetch, name, repositories=job['repositories'], encryption=_decryption(job, args),
                              signing=job.get('signing'), system_identifier=args.system_identifier)
    try:
        result = fetch(args.wal_file, args.dest_path, log=CommandLog())
    except wal.NotArchived as exc:
        sys.stderr.write('offsite-backup: %s\n' % exc)
        return EXIT_FAILED
    for problem in result['problems']:
        sys.stderr.write('offsite-backup: warning: %s skipped: %s\n' % (problem['location'], problem['error']))
    if args.json:
        sys.stdout.write(json.dumps(result, sort_keys=True) + '\n')
    if args.spool and args.prefetch > 0:
        sys.stdout.flush()
        sys.stderr.flush()
        _prefetch(args, wal, fetch, result)
    return EXIT_OK


def _prefetch(args, wal, fetch, result):
    """Start (or redirect) the prefetcher of ``--spool`` after ``result`` was fetched (walspool.py)."""
    size = result.get('raw_size') or 0
    segment_size = size if (1 << 20) <= size <= (1 << 30) and not size & (size - 1) else walspool.DEFAULT_SEGMENT_SIZE

    def work(spool, key, want):
        session, log = wal.Session(), CommandLog()
        try:
            walspool.prefetch(spool, key, want, lambda name, path: fetch(name, path, log=log, session=session),
                              wal.NotArchived, count=args.prefetch, segment_size=segment_size)
        finally:
            session.close()

    walspool.start(args.spool, walspool.key_text(args.job, args.set, args.system_identifier), args.wal_file, work,
                   segment_size)


def parser():
    top = argparse.ArgumentParser(prog='offsite-backup', description='Run offsite.backup job files.')
    commands = top.add_subparsers(dest='command')
    commands.required = True

    def common(sub):
        sub.add_argument('job', help='job file, e.g. /etc/offsite-backup/crm.yml')
        sub.add_argument('--env-file', help='KEY=VALUE secrets (default: the job file with .env, if present)')
        sub.add_argument('--json', action='store_true', help='machine-readable output')
        return sub

    run = common(commands.add_parser('run', help='back up every source of the job'))
    run.add_argument('--dry-run', action='store_true',
                     help='check the job file, probe sources and repositories; write nothing (no log, no lock)')
    run.add_argument('--verbose', '-v', action='store_true', help='log to stdout even when not on a terminal')
    common(commands.add_parser('list', help='the backups in the local copy and each repository'))
    restore = common(commands.add_parser('restore', help='restore one backup set'))
    restore.add_argument('--set', required=True, help='backup set name (a source of the job)')
    restore.add_argument('--backup', default='latest', help='latest (default), a backup id, or a time')
    restore.add_argument('--from', dest='repository', default='0',
                         help='local, or the index of a repository in the job (default 0)')
    restore.add_argument('--database', help='restore into this database instead of the source\'s')
    restore.add_argument('--path', help='restore files into this directory instead of the source\'s')
    restore.add_argument('--mode', default='create', choices=['create', 'replace'])
    restore.add_argument('--work-dir', help='scratch directory for the download (default: TMPDIR)')
    restore.add_argument('--identity-file', help='age identity (private key) file to decrypt with; '
                                                 'default: the job\'s encryption.identity_file')
    watch = common(commands.add_parser('monitor', help='read every repository and export what is there'))
    watch.add_argument('--textfile', help='write the metrics to this .prom file (node_exporter textfile collector)')
    watch.add_argument('--pushgateway', help='push the metrics to this Pushgateway URL')
    watch.add_argument('--listen', help='serve /metrics on [HOST:]PORT and read again every --interval')
    watch.add_argument('--interval', type=int, default=3600, help='seconds between readings with --listen')
    watch.add_argument('--read-data', default='1',
                       help='backups to download and check per set and repository: N, N%% or all (default 1: the newest)')
    drill_cmd = common(commands.add_parser('drill', help='restore the newest backup of each set into a scratch '
                                                         'target, check it, drop it and report'))
    drill_cmd.add_argument('--verbose', '-v', action='store_true', help='log to stdout even when not on a terminal')
    cleanup = common(commands.add_parser('cleanup', help='remove what killed restores left behind'))
    cleanup.add_argument('--set', help='only this backup set (default: every set of the job)')
    cleanup.add_argument('--database', help='the database restored into, if not the source\'s')
    cleanup.add_argument('--path', help='the directory files were restored into')
    cleanup.add_argument('--work-dir', help='the restores\' work directory (TMPDIR is always swept too)')
    cleanup.add_argument('--dry-run', action='store_true', help='report, remove nothing')
    push = common(commands.add_parser('wal-push', help='archive one WAL file (PostgreSQL\'s archive_command)'))
    push.add_argument('wal_path', help='%%p: the file to archive')
    push.add_argument('--set', help='backup set the WAL belongs to (default: the job\'s postgresql_physical source)')
    status = common(commands.add_parser('wal-status', help='export the WAL the cluster wrote and has not archived '
                                                           '(scheduled beside archive_command)'))
    status.add_argument('--set', help='backup set the WAL belongs to (default: the job\'s postgresql_physical source)')
    status.add_argument('--host', help='connect here instead of the source\'s host (a socket directory)')
    status.add_argument('--port', type=int, help='connect to this port instead of the source\'s')
    fetch = common(commands.add_parser('wal-fetch', help='fetch one archived WAL file (restore_command)'))
    fetch.add_argument('wal_file', help='%%f: the name of the file wanted')
    fetch.add_argument('dest_path', help='%%p: where to write it')
    fetch.add_argument('--set', help='backup set the WAL belongs to (default: the job\'s postgresql_physical source)')
    fetch.add_argument('--identity-file', help='age identity (private key) file to decrypt with; '
                                               'default: the job\'s encryption.identity_file')
    fetch.add_argument('--system-identifier', help='the cluster the restore recovers: a segment of another one is '
                                                   'refused (integrity)')
    fetch.add_argument('--spool', help='fetch the next segments ahead into this private directory (0700, the '
                                       'server\'s user\'s; the restore creates and removes it) and serve them from it')
    fetch.add_argument('--prefetch', type=int, default=walspool.PREFETCH,
                       help='segments kept ahead in --spool (default %d)' % walspool.PREFETCH)
    return top


def in_flags(args, exc):
    """The engine's hints name the restore module's options ("use mode: replace"); on the
    command line the same choice is a flag ("use --mode replace")."""
    text = str(exc)
    if args.command == 'restore':
        text = re.sub(r'\bmode: (create|replace)\b', r'--mode \1', text)
    return text


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code and argv[:1] == ['wal-fetch']:
            return EXIT_ABORT_RECOVERY  # argparse's 2 would read as "not archived": recovery would end early
        raise
    if argv[:1] == ['wal-fetch'] and walspool.serve_once(argv) == 0:  # once: the import may have asked
        return EXIT_OK
    handler = {'run': cmd_run, 'list': cmd_list, 'restore': cmd_restore, 'monitor': cmd_monitor,
               'drill': cmd_drill, 'cleanup': cmd_cleanup, 'wal-push': cmd_wal_push,
               'wal-status': cmd_wal_status, 'wal-fetch': cmd_wal_fetch}[args.command]
    if args.command == 'wal-fetch':
        # any failure but "not archived" must stop recovery, a wrong job file or key included
        failed = config_failed = EXIT_ABORT_RECOVERY
    else:
        failed, config_failed = EXIT_FAILED, EXIT_CONFIG
    try:
        try:
            return handler(args)
        except OSError as exc:  # an ordinary condition of a disk or a path: config, io, disk_full
            raise as_backup_error(exc, args.command)
    except ConfigError as exc:
        sys.stderr.write('offsite-backup: %s\n' % in_flags(args, exc))
        return config_failed
    except BackupError as exc:
        sys.stderr.write('offsite-backup: %s failed (%s): %s\n' % (args.command, exc.kind, in_flags(args, exc)))
        return failed
    except KeyboardInterrupt:
        sys.stderr.write('offsite-backup: interrupted\n')
        return failed
    except Exception:
        if args.command != 'wal-fetch':
            raise
        # a bug must not read as "not archived" either (Python's own exit status would be 1)
        sys.stderr.write('offsite-backup: wal-fetch failed (internal): %s\n' % traceback.format_exc())
        return EXIT_ABORT_RECOVERY


if __name__ == '__main__':
    raise SystemExit(main())
