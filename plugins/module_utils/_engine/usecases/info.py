# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``info`` use case (backup_info): the backups of a set in one repository."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import traceback

from .. import walchain
from ..catalog import Catalog, legacy_timezone
from ..commands import CommandLog
from ..encryption import Encryption
from ..errors import ConfigError, DependencyError
from ..repositories import open_repository
from ..repositories.base import SelfCheckingStore
from ..signing import Verifier

try:
    import jmespath
    JMESPATH_IMPORT_ERROR = None
except ImportError:
    jmespath = None
    JMESPATH_IMPORT_ERROR = traceback.format_exc()


def info(name, repository, query=None, repository_check=None, clock_skew=None, signing=None, log=None):
    log = log or CommandLog()
    verifier = Verifier(signing, log, required=True)
    with open_repository(repository, log) as repo:
        if repository_check and not isinstance(repo, SelfCheckingStore):
            raise ConfigError('repository_check needs a repository that checks itself (restic); %s does not'
                              % repo.type, 'remove repository_check; restore drills prove the other types')
        catalog = Catalog(repo, name, legacy_tz=legacy_timezone(repository), clock_skew=clock_skew)
        backups = [_with_signature(b.as_dict(), b, verifier) for b in catalog.backups]
        latest = catalog.latest()
        result = {'changed': False, 'backups': backups,
                  'latest': _with_signature(latest.as_dict(), latest, verifier) if latest else None,
                  'count': len(catalog.complete), 'location': repo.location(name),
                  'repository': repo.series_name(), 'total_size': sum(b.size or 0 for b in catalog.backups),
                  'stored_bytes': catalog.stored_bytes(),
                  'suspect': [b.id for b in catalog.suspect]}
        # sets with base backups only: a WAL listing costs a request
        result['recovery_window'] = None
        if walchain.has_base_backups(catalog.backups):
            bases = [b for b in catalog.trusted if not verifier.problem(b)]
            window, problems = walchain.inspect(repo, name, bases, Encryption({}, log))
            if window is not None and window['files']:  # null without archived WAL (the drill asks)
                window['problems'] = problems
                result['recovery_window'] = window
        if catalog.suspect:
            result['warnings'] = [catalog.describe_suspect(b) for b in catalog.suspect]
        if repository_check:
            result['repository_check'] = repo.check(repository_check)  # damage raises IntegrityError
    if query:
        if jmespath is None:
            raise DependencyError('the Python library jmespath is missing on this node (needed for query)',
                                  'pip install jmespath into the interpreter that runs the modules')
        try:
            result['backups'] = jmespath.search(query, backups)
        except jmespath.exceptions.JMESPathError as exc:
            raise ConfigError('query %r is not valid JMESPath: %s' % (query, exc))
    return result


def _with_signature(entry, backup, verifier):
    """``signed``; with trusted keys also ``authentic`` (and ``authenticity_problem``)."""
    entry['signed'] = bool(backup.manifest.get('signature'))
    if verifier.enabled and backup.complete:
        problem = verifier.problem(backup)
        entry['authentic'] = problem is None
        if problem:
            entry['authenticity_problem'] = problem
    return entry
