# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options declared by each repository and source type, and what is derived from them.

A type class lists its own options in ``OPTIONS`` (a tuple of ``Option``); its base class lists
those every type of its kind takes. Everything above the types reads these declarations: the
modules' argument specs and ``choices`` (``argument_spec``), the generated documentation
(``scripts/generate_option_docs.py``), the job-file validator and the engine's own check of an
options dict (``accept``), which rejects an option the chosen type does not declare, with one
message for the module and the job file alike.

Descriptions use Ansible's markup (``C()``, ``E()``, ``M()``); ``O(.name)`` names another option
of the same dict and becomes ``O(repository.name)``, ``O(source.name)``... where it is shown.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os

from .errors import ConfigError

TYPES = ('str', 'int', 'bool', 'path', 'list', 'dict', 'raw')
ROLES = ('dump', 'restore', 'snapshot')
# the roles of an option that names none: a source dict of dump and of restore
DEFAULT_ROLES = ('dump', 'restore')


class Option(object):
    """One option of a repository or source type.

    ``secret``: never logged (``no_log``), scrubbed from messages. ``no_log=False`` states that a
    name that looks secret (``private_key``) holds none. ``env``: environment variables read, in
    order, when the option is not given (this type only). ``required``: this type needs it set.
    ``default``: filled in when the option is not given; ``default_text`` documents a default
    that depends on other options instead. ``roles`` (sources): ``dump``, ``restore`` or both (the default), ``snapshot`` too;
    ``ignored_by``: roles that accept the option without using it (so that one dict can serve
    dump and restore)."""

    def __init__(self, name, type='str', description=(), default=None, choices=None, required=False,
                 secret=False, no_log=None, env=(), elements=None, version_added=None, default_text=None,
                 roles=DEFAULT_ROLES, ignored_by=(), aliases=()):
        if type not in TYPES:
            raise ValueError('option %s: type %r is not one of %s' % (name, type, ', '.join(TYPES)))
        self.name = name
        self.type = type
        self.description = (description,) if isinstance(description, str) else tuple(description)
        self.default = default
        self.choices = tuple(choices) if choices else None
        self.required = required
        self.secret = secret
        self.no_log = True if secret else no_log
        self.env = (env,) if isinstance(env, str) else tuple(env)
        self.elements = elements
        self.version_added = version_added
        self.default_text = default_text
        self.roles = tuple(roles)
        self.ignored_by = tuple(ignored_by)
        self.aliases = tuple(aliases)

    def replace(self, **changes):
        """This option with some fields changed (a type that shares an option but not its text)."""
        fields = dict(self.__dict__)
        fields.pop('no_log')
        fields['no_log'] = None if self.secret else self.no_log
        fields.update(changes)
        return Option(**fields)

    def accepted_by(self, role):
        return role is None or role in self.roles or role in self.ignored_by

    def __repr__(self):
        return 'Option(%r, %r)' % (self.name, self.type)


def declared(cls):
    """The options of a type class, its bases' first: ``{name: Option}`` in declaration order."""
    found = {}
    for klass in reversed(cls.__mro__):
        for option in klass.__dict__.get('OPTIONS', ()):
            found[option.name] = option
    return found


def finish_class(cls):
    """Set the attributes derived from a type's declarations (called by the base classes'
    ``__init_subclass__``): ``required`` and ``secret_options``."""
    options = declared(cls).values()
    cls.required = tuple(o.name for o in options if o.required)
    cls.secret_options = tuple(o.name for o in options if o.secret)


def accept(cls, options, kind, role=None, environ=None, required=True):
    """``options`` checked against what type ``cls`` declares: None values dropped, aliases
    resolved, environment fallbacks and defaults filled in, undeclared options and values not
    in ``choices`` refused, and (``required``) missing required options. ``kind`` is ``repository`` or
    ``source``; ``role`` limits a source's options to those of ``dump`` or ``restore``. Returns a new dict."""
    table = dict((name, option) for name, option in declared(cls).items() if option.accepted_by(role))
    aliases = dict((alias, option.name) for option in table.values() for alias in option.aliases)
    given = {}
    for key, value in (options or {}).items():
        if value is not None:
            given[aliases.get(key, key)] = value
    unknown = sorted(key for key in given if key != 'type' and key not in table)
    if unknown and cls.type is not None:  # a base class used on its own (tests) checks nothing
        raise unknown_options_error(cls, kind, unknown, table)
    environ = os.environ if environ is None else environ
    missing = []
    for name, option in table.items():
        if name not in given:
            for variable in option.env:
                if environ.get(variable):
                    given[name] = environ[variable]
                    break
        if name not in given and option.default is not None:
            given[name] = option.default
        value = given.get(name)
        if required and option.required and not value:
            missing.append(name)
        if value is not None and option.choices and value not in option.choices:
            raise ConfigError('%s: %r is not known' % (name, value),
                              'use one of: %s' % ', '.join(map(str, option.choices)))
    if missing:
        raise ConfigError('a %s %s needs %s' % (cls.type, kind, ', '.join(missing)), 'set them in the %s options' % kind)
    return given


def unknown_options_error(cls, kind, unknown, table=None):
    """The one message for options a type does not take, from the module and the job file."""
    table = declared(cls) if table is None else table
    return ConfigError('a %s %s does not take %s %s'
                       % (cls.type, kind, 'the option' if len(unknown) == 1 else 'the options', ', '.join(unknown)),
                       'a %s %s takes: %s' % (cls.type, kind, ', '.join(['type'] + sorted(table))))


class Capability(object):
    """Base of the declared interfaces a type may have beyond its kind's verbs (mixins such as
    ``repositories.base.TreeStore``): code above the types asks ``isinstance``, never ``hasattr``.
    ``NAME`` is what the documentation calls it."""

    NAME = None


def capabilities(cls):
    """The ``NAME`` of every capability ``cls`` declares, in MRO order."""
    return [klass.__dict__['NAME'] for klass in cls.__mro__
            if issubclass(klass, Capability) and klass.__dict__.get('NAME')]


# -- the union over the types of a kind: argument specs and documentation ---------------------

def union(classes, role=None):
    """``[(name, [(cls, Option), ...])]`` in first-declared order, over ``classes``."""
    names, by_name = [], {}
    for cls in classes:
        for name, option in declared(cls).items():
            if not option.accepted_by(role):
                continue
            if name not in by_name:
                names.append(name)
                by_name[name] = []
            by_name[name].append((cls, option))
    for name in names:
        kinds = set((o.type, o.elements) for _cls, o in by_name[name])
        if len(kinds) > 1:
            raise AssertionError('option %s is declared with different types: %s' % (name, sorted(kinds)))
    return [(name, by_name[name]) for name in names]


def shared_default(classes, declarations):
    """The default of an option that every type declares with the same default, else None."""
    if len(declarations) != len(classes):
        return None
    defaults = set(repr(o.default) for _cls, o in declarations)
    return declarations[0][1].default if len(defaults) == 1 else None


def argument_spec(classes, role=None, only=None):
    """The Ansible argument spec of a ``repository`` or ``source`` dict accepting the options of
    every type in ``classes`` (their union; ``accept`` then refuses what the chosen type does not
    take). Defaults appear only where every type shares them; environment fallbacks are the
    engine's, per type."""
    spec = {'type': dict(type='str', required=True, choices=sorted(cls.type for cls in classes))}
    for name, declarations in union(classes, role):
        if only is not None and name not in only:
            continue
        first = declarations[0][1]
        entry = dict(type=first.type)
        if first.elements:
            entry['elements'] = first.elements
        default = shared_default(classes, declarations)
        if default is not None:
            entry['default'] = default
        choices = _union_choices(declarations)
        if choices:
            entry['choices'] = choices
        no_logs = set(o.no_log for _cls, o in declarations)
        if True in no_logs:
            entry['no_log'] = True
        elif False in no_logs:
            entry['no_log'] = False
        aliases = sorted(set(a for _cls, o in declarations for a in o.aliases))
        if aliases:
            entry['aliases'] = aliases
        spec[name] = entry
    return spec


def _union_choices(declarations):
    choices = []
    for _cls, option in declarations:
        for choice in option.choices or ():
            if choice not in choices:
                choices.append(choice)
    return choices


def documentation(classes, prefix, role=None, only=None, kind='repository'):
    """``{name: documentation}`` of every option of ``classes`` (the ``suboptions`` of a module's
    ``repository``, ``source`` or ``target``), ``prefix`` the dict's name for ``O()``."""
    docs = {'type': dict(description=['The kind of %s.' % kind] + [line for cls in classes for line in cls.DESCRIPTION],
                         type='str', required=True, choices=sorted(cls.type for cls in classes))}
    spec = argument_spec(classes, role, only)
    for name, declarations in union(classes, role):
        if name not in spec:
            continue
        entry = dict((k, v) for k, v in spec[name].items() if k in ('type', 'elements', 'default', 'choices', 'aliases'))
        entry['description'] = [_refer(line, prefix) for line in _describe(classes, declarations, role)]
        versions = set(o.version_added for _cls, o in declarations if o.version_added)
        if versions:
            entry['version_added'] = sorted(versions)[0]
        docs[name] = entry
    return docs


def _types(classes):
    return ', '.join('C(%s)' % cls.type for cls in classes)


def _describe(classes, declarations, role):
    everywhere = len(declarations) == len(classes)
    ignored = [cls for cls, o in declarations if role in o.ignored_by]
    if role and ignored and len(ignored) == len(declarations):
        return ['Not used by %s (%s); accepted so that one dict can serve dump and restore.' % (role, _types(ignored))]
    groups = _grouped((cls, option.description) for cls, option in declarations)
    lines = []
    if len(groups) == 1:
        lines.extend(groups[0][0])
        if not everywhere:
            lines.append('Used by %s.' % _types(groups[0][1]))
    else:
        for text, members in groups:
            text = list(text) or ['']
            lines.append(('%s - %s' % (_types(members), text[0])).rstrip())
            lines.extend(text[1:])
    lines.extend(_facts(classes, declarations))
    return lines


def _facts(classes, declarations):
    """Required-ness, defaults that differ between types, environment fallbacks, secrecy."""
    lines = []
    required = [cls for cls, o in declarations if o.required]
    if required:
        lines.append('Required for %s.' % _types(required))
    if shared_default(classes, declarations) is None:
        defaults = [(cls, o.default_text or (_literal(o.default) if o.default is not None else None))
                    for cls, o in declarations]
        texts = _grouped((cls, text) for cls, text in defaults if text)
        if texts:
            if len(texts) == 1 and len(texts[0][1]) == len(declarations):
                lines.append('Defaults to %s.' % texts[0][0])
            else:
                lines.append('Defaults to %s.' % ', '.join('%s (%s)' % (text, _types(members)) for text, members in texts))
    fallbacks = _grouped((cls, ', then '.join('E(%s)' % v for v in option.env))
                         for cls, option in declarations if option.env)
    if fallbacks:
        every = len(fallbacks) == 1 and len(fallbacks[0][1]) == len(declarations)
        texts = [text if every else '%s (%s)' % (text, _types(members)) for text, members in fallbacks]
        lines.append('Falls back to %s.' % '; '.join(texts))
    if any(o.secret for _cls, o in declarations):
        lines.append('Never logged.')
    return lines


def _grouped(pairs):
    """``[(text, [classes])]`` from ``(class, text)`` pairs, in first-seen order."""
    groups = []
    for cls, text in pairs:
        for entry in groups:
            if entry[0] == text:
                entry[1].append(cls)
                break
        else:
            groups.append((text, [cls]))
    return groups


def _literal(value):
    if isinstance(value, bool):
        return 'C(%s)' % ('true' if value else 'false')
    return 'C(%s)' % (value,)


def _refer(line, prefix):
    return line.replace('O(.', 'O(%s.' % prefix)
