# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""DR drill and rebuild reports: JSON (the record), Markdown (for humans and tickets) and a
self-contained HTML page charting recovery time and backup age over past drills.

Two objectives, one definition each:

- RPO (recovery point): the age of the backup restored, at the time of the restore.
- RTO (recovery time): seconds from the start of the restore to the target answering its checks
  (``recovery_seconds``). A drill measures it per set (restore into the scratch target, then its
  verification queries); a rebuild from its start to the server answering every check (queries
  and health URL), which is the report's ``recovery_seconds``.

Missing either objective fails the set (or, for the rebuild's own RTO, the report).

Every report is kept in ``report_dir`` as ``<kind>-<YYYYMMDDTHHMMSSZ>.{json,md,html}``; the
JSON files are the history the chart is drawn from, so deleting old ones trims the chart.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import glob
import html
import json
import os

from . import manifest as mf
from .errors import ConfigError

KINDS = ('drill', 'rebuild')
HISTORY_LIMIT = 100


def _seconds(value):
    if value is None:
        return None
    try:
        return round(float(value), 3)
    except (TypeError, ValueError):
        raise ConfigError('%r is not a number of seconds' % (value,))


def _objective(value, objective):
    """True / False when both are known, else None (nothing to judge)."""
    if value is None or objective is None:
        return None
    return value <= objective


def normalise(result, rpo_seconds=None, rto_seconds=None):
    """One set's outcome, with the verdicts on its recovery point and time objectives."""
    if not isinstance(result, dict) or not result.get('name'):
        raise ConfigError('each result needs at least a name (got %r)' % (result,))
    out = dict(result)
    out['success'] = bool(result.get('success'))
    for key in ('age_seconds', 'restore_seconds', 'duration_seconds', 'recovery_seconds'):
        out[key] = _seconds(result.get(key))
    out['checks'] = list(result.get('checks') or [])
    out['skipped_repositories'] = list(result.get('skipped_repositories') or [])
    out['error'] = result.get('error') or None
    own_rpo, own_rto = result.get('rpo_seconds'), result.get('rto_seconds')
    out['rpo_seconds'] = _seconds(rpo_seconds if own_rpo in (None, '') else own_rpo)
    out['rto_seconds'] = _seconds(rto_seconds if own_rto in (None, '') else own_rto)
    out['rpo_met'] = _objective(out['age_seconds'], out['rpo_seconds'])
    out['rto_met'] = _objective(out['recovery_seconds'], out['rto_seconds'])
    missed = []
    if out['rpo_met'] is False:
        missed.append('backup is %s old, older than the RPO objective of %s'
                      % (human_duration(out['age_seconds']), human_duration(out['rpo_seconds'])))
    if out['rto_met'] is False:
        missed.append('recovery took %s, longer than the RTO objective of %s'
                      % (human_duration(out['recovery_seconds']), human_duration(out['rto_seconds'])))
    if missed:
        out['success'] = False
        out['error'] = '; '.join(([out['error']] if out['error'] else []) + missed)
    return out


def build(kind, results, started, finished, host=None, rpo_seconds=None, steps=None, rto_seconds=None,
          recovery_seconds=None):
    """The report. ``recovery_seconds`` is the whole recovery's RTO achieved (a rebuild: start to
    the server answering its checks); without it, the longest set's."""
    if kind not in KINDS:
        raise ConfigError('report kind %r is not known' % (kind,), 'use one of: %s' % ', '.join(KINDS))
    sets = [normalise(r, rpo_seconds, None if kind == 'rebuild' else rto_seconds) for r in results]
    recovery = _seconds(recovery_seconds)
    if recovery is None:
        known = [s['recovery_seconds'] for s in sets if s['recovery_seconds'] is not None]
        recovery = max(known) if known else None
    rto = _seconds(rto_seconds)
    rto_met = _objective(recovery, rto)
    report = {
        'kind': kind,
        'host': host,
        'started': mf.format_time(started),
        'finished': mf.format_time(finished),
        'duration_seconds': round((finished - started).total_seconds(), 3),
        'recovery_seconds': recovery,
        'rto_seconds': rto,
        'rto_met': rto_met,
        'rpo_seconds': _seconds(rpo_seconds),
        'success': bool(sets) and all(s['success'] for s in sets) and rto_met is not False,
        'sets': sets,
        'steps': list(steps or []),
        'error': None,
    }
    if rto_met is False:
        report['error'] = 'the %s took %s to answer its checks, longer than the RTO objective of %s' % (
            kind, human_duration(recovery), human_duration(rto))
    return report


def human_duration(seconds):
    if seconds is None:
        return 'n/a'
    seconds = float(seconds)
    if seconds < 120:
        return '%.1f s' % seconds
    if seconds < 7200:
        return '%.1f min' % (seconds / 60)
    if seconds < 172800:
        return '%.1f h' % (seconds / 3600)
    return '%.1f d' % (seconds / 86400)


def _objective_text(value, objective, met):
    text = human_duration(value)
    if objective is not None:
        text += ' (objective %s%s)' % (human_duration(objective), '' if met is not False else ', MISSED')
    return text


def check_lines(check):
    """A check's facts as (label, value) pairs: the query, what was expected, what came back."""
    facts = [('query', check.get('query'))]
    facts.append(('expected', check.get('expected')))
    facts.append(('got', check.get('got') if check.get('got') is not None else check.get('detail')))
    return [(label, value) for label, value in facts if value not in (None, '')]


def recovery_heading(report):
    """A drill's sets each have their RTO; a rebuild's sets only say when they were ready (its
    one RTO is the whole rebuild's, in rto_line)."""
    return 'recovery time (RTO)' if report['kind'] == 'drill' else 'ready after (from the start)'


def rto_line(report):
    return 'RTO (start of the restore to the target answering its checks): %s' % _objective_text(
        report.get('recovery_seconds'), report.get('rto_seconds'), report.get('rto_met'))


def markdown(report):
    verdict = 'PASSED' if report['success'] else 'FAILED'
    lines = ['# DR %s %s' % (report['kind'], verdict), '',
             '- host: %s' % (report['host'] or 'n/a'),
             '- started: %s, finished: %s (%s)' % (
                 report['started'], report['finished'], human_duration(report['duration_seconds'])),
             '- %s' % rto_line(report), '',
             '| set | result | backup | repository | backup age (RPO) | %s | checks |' % recovery_heading(report),
             '|---|---|---|---|---|---|---|']
    for s in report['sets']:
        checks = s['checks']
        passed = sum(1 for c in checks if c.get('ok'))
        lines.append('| %s | %s | %s | %s | %s | %s | %d/%d |' % (
            s['name'], 'ok' if s['success'] else 'FAILED', s.get('backup_id') or '-', s.get('repository') or '-',
            _objective_text(s['age_seconds'], s['rpo_seconds'], s['rpo_met']),
            _objective_text(s['recovery_seconds'], s.get('rto_seconds'), s.get('rto_met')),
            passed, len(checks)))
    failures = [s for s in report['sets'] if not s['success']]
    if failures or report.get('error'):
        lines += ['', '## Failures', '']
        lines += ['- **%s**: %s' % (s['name'], s.get('error') or 'a check failed') for s in failures]
        if report.get('error'):
            lines.append('- **%s**: %s' % (report['kind'], report['error']))
    for s in report['sets']:
        lines += ['', '## %s' % s['name'], '',
                  '- repository used: %s' % (s.get('repository') or 'none'),
                  '- repositories skipped: %s' % ('; '.join(s['skipped_repositories']) or 'none'),
                  '- restore: %s, %s: %s' % (human_duration(s['restore_seconds']), recovery_heading(report),
                                              human_duration(s['recovery_seconds']))]
        for c in s['checks']:
            lines.append('- [%s] %s' % ('x' if c.get('ok') else ' ', c.get('name')))
            lines += ['  - %s: `%s`' % (label, value) for label, value in check_lines(c)]
    if report['steps']:
        lines += ['', '## Steps', '', '| step | seconds |', '|---|---|']
        lines += ['| %s | %s |' % (st.get('name'), _seconds(st.get('seconds'))) for st in report['steps']]
    return '\n'.join(lines) + '\n'


# The page draws its charts itself from the embedded history (no network, no library), and marks
# <body data-rendered="ok"> when done: the tests check that in a real headless browser.
_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>%(title)s</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}
.ok{color:#0a7d28}.failed{color:#b00020;font-weight:bold}
svg{border:1px solid #ddd;background:#fafafa;margin:.5em 1em .5em 0}
</style></head>
<body data-rendered="no">
<h1>%(title)s</h1>
<p>Host %(host)s, %(started)s to %(finished)s.</p>
<p>%(rto)s</p>
<table><thead><tr><th>set</th><th>result</th><th>backup</th><th>repository</th>
<th>backup age (RPO)</th><th>%(recovery_heading)s</th><th>checks</th></tr></thead><tbody>%(rows)s</tbody></table>
%(failures)s
<h2>History</h2>
<div id="charts"></div>
<script id="history" type="application/json">%(history)s</script>
<script>
(function () {
  var history = JSON.parse(document.getElementById('history').textContent);
  var NS = 'http://www.w3.org/2000/svg';
  function chart(title, field, unit) {
    var names = {};
    history.forEach(function (d) { d.sets.forEach(function (s) { names[s.name] = true; }); });
    var w = 520, h = 220, pad = 40, max = 0;
    history.forEach(function (d) { d.sets.forEach(function (s) { if (s[field] > max) { max = s[field]; } }); });
    max = max || 1;
    var svg = document.createElementNS(NS, 'svg');
    svg.setAttribute('width', w); svg.setAttribute('height', h);
    svg.setAttribute('data-field', field);
    var label = document.createElementNS(NS, 'text');
    label.setAttribute('x', pad); label.setAttribute('y', 18);
    label.textContent = title + ' (max ' + (max / unit[0]).toFixed(1) + ' ' + unit[1] + ')';
    svg.appendChild(label);
    var colors = ['#1565c0', '#c62828', '#2e7d32', '#ef6c00', '#6a1b9a'];
    Object.keys(names).forEach(function (name, i) {
      var points = [];
      history.forEach(function (d, j) {
        d.sets.forEach(function (s) {
          if (s.name === name && s[field] !== null) {
            var x = pad + (history.length > 1 ? j * (w - 2 * pad) / (history.length - 1) : (w - 2 * pad) / 2);
            var y = h - pad - (s[field] / max) * (h - 2 * pad);
            points.push(x.toFixed(1) + ',' + y.toFixed(1));
          }
        });
      });
      var line = document.createElementNS(NS, 'polyline');
      line.setAttribute('points', points.join(' '));
      line.setAttribute('fill', 'none'); line.setAttribute('stroke', colors[i %% colors.length]);
      line.setAttribute('stroke-width', '2'); line.setAttribute('data-set', name);
      line.setAttribute('data-points', points.length);
      svg.appendChild(line);
    });
    document.getElementById('charts').appendChild(svg);
  }
  chart('Restore time', 'duration_seconds', [1, 's']);
  chart('Backup age', 'age_seconds', [3600, 'h']);
  document.body.setAttribute('data-rendered', 'ok');
})();
</script>
</body></html>
"""


def page(report, history):
    esc = html.escape
    rows = []
    for s in report['sets']:
        rows.append('<tr><td>%s</td><td class="%s">%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%d/%d</td></tr>' % (
            esc(s['name']), 'ok' if s['success'] else 'failed', 'ok' if s['success'] else 'FAILED',
            esc(s.get('backup_id') or '-'), esc(s.get('repository') or '-'),
            esc(_objective_text(s['age_seconds'], s['rpo_seconds'], s['rpo_met'])),
            esc(_objective_text(s['recovery_seconds'], s.get('rto_seconds'), s.get('rto_met'))),
            sum(1 for c in s['checks'] if c.get('ok')), len(s['checks'])))
    failures = ''.join('<li><b>%s</b>: %s</li>' % (esc(s['name']), esc(s.get('error') or 'a check failed'))
                       for s in report['sets'] if not s['success'])
    # history as embedded JSON: "</" must not close the script element
    data = json.dumps([{'started': h['started'], 'sets': [
        {'name': s['name'], 'duration_seconds': s.get('duration_seconds') or s.get('restore_seconds'),
         'age_seconds': s.get('age_seconds')} for s in h.get('sets', [])]} for h in history]).replace('</', '<\\/')
    return _PAGE % {
        'title': esc('DR %s %s' % (report['kind'], 'passed' if report['success'] else 'FAILED')),
        'host': esc(report['host'] or 'n/a'), 'started': esc(report['started']), 'finished': esc(report['finished']),
        'rows': ''.join(rows), 'failures': ('<h2>Failures</h2><ul>%s</ul>' % failures) if failures else '',
        'history': data, 'rto': esc(rto_line(report)), 'recovery_heading': esc(recovery_heading(report)),
    }


def _write(path, text):
    tmp = path + '.tmp'
    with open(tmp, 'w') as handle:
        handle.write(text)
    os.rename(tmp, path)


def history(report_dir, kind):
    docs = []
    for path in sorted(glob.glob(os.path.join(report_dir, '%s-*.json' % kind)))[-HISTORY_LIMIT:]:
        try:
            with open(path) as handle:
                docs.append(json.load(handle))
        except (OSError, ValueError):
            continue  # a damaged old report must not stop today's
    return docs


def write(report, report_dir, check_mode=False):
    """Write the JSON, Markdown and HTML files of ``report``; returns their paths."""
    stamp = mf.parse_time(report['started']).strftime('%Y%m%dT%H%M%SZ')
    base = os.path.join(report_dir, '%s-%s' % (report['kind'], stamp))
    paths = {'json': base + '.json', 'markdown': base + '.md', 'html': base + '.html'}
    if check_mode:
        return paths
    os.makedirs(report_dir, mode=0o755, exist_ok=True)
    _write(paths['json'], json.dumps(report, indent=2, sort_keys=True) + '\n')
    _write(paths['markdown'], markdown(report))
    _write(paths['html'], page(report, history(report_dir, report['kind'])))
    return paths


def _label(value):
    return str(value).replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')


def metrics(report):
    """The report in Prometheus text format, for a Pushgateway (``dr_<kind>_*`` per set; a
    rebuild's own recovery time and objective without a set label)."""
    prefix = 'dr_%s' % report['kind']
    series = [
        ('success', 'gauge', '1 if the set was restored, passed every check and met its objectives',
         lambda s: 1 if s['success'] else 0),
        ('duration_seconds', 'gauge', 'seconds to find, restore and check the set',
         lambda s: s['duration_seconds'] if s['duration_seconds'] is not None else s['restore_seconds']),
        ('backup_age_seconds', 'gauge', 'age of the restored backup (the recovery point)', lambda s: s['age_seconds']),
        ('rpo_seconds', 'gauge', 'recovery point objective', lambda s: s['rpo_seconds']),
        ('recovery_seconds', 'gauge', 'RTO achieved: start of the restore to the target answering its checks',
         lambda s: s['recovery_seconds'] if report['kind'] == 'drill' else None),
        ('rto_seconds', 'gauge', 'recovery time objective', lambda s: s.get('rto_seconds')),
    ]
    whole = {'recovery_seconds': report.get('recovery_seconds'), 'rto_seconds': report.get('rto_seconds')}
    lines = []
    for suffix, kind, text, value in series:
        name = '%s_%s' % (prefix, suffix)
        samples = ['%s{set="%s"} %s' % (name, _label(s['name']), value(s)) for s in report['sets']
                   if value(s) is not None]
        if report['kind'] == 'rebuild' and whole.get(suffix) is not None:
            samples.append('%s %s' % (name, whole[suffix]))
        if samples:
            lines += ['# HELP %s %s' % (name, text), '# TYPE %s %s' % (name, kind)] + samples
    name = '%s_last_run_timestamp_seconds' % prefix
    lines += ['# HELP %s when the %s finished' % (name, report['kind']), '# TYPE %s gauge' % name,
              '%s %d' % (name, int(mf.parse_time(report['finished']).timestamp()))]
    return '\n'.join(lines) + '\n'
