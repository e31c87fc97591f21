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

import datetime
import glob
import html
import json
import math
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
    out['point_in_time'] = point_in_time(result.get('point_in_time'))
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


PIT_KEYS = ('target', 'chosen', 'reached', 'window_start', 'window_end', 'newest_wal')


def point_in_time(facts):
    """A point-in-time set's facts (or None): the moment recovered to (``target``, ``chosen``
    random or given), the last transaction replayed (``reached``), the recovery window and its
    newest WAL segment, and the restore's phases."""
    if not facts:
        return None
    if not isinstance(facts, dict) or not facts.get('target'):
        raise ConfigError('point_in_time must be a mapping with target (got %r)' % (facts,))
    out = dict((key, facts.get(key) or None) for key in PIT_KEYS)
    out['phases'] = dict((k, _seconds(v)) for k, v in (facts.get('phases') or {}).items())
    return out


def pit_line(s):
    """One sentence on a point-in-time set: the moment, how it was chosen, what was reached, the window."""
    pit = s['point_in_time']
    return ('point in time %s (%s, in the window %s .. %s, newest WAL %s), recovered to the last transaction at %s; '
            'RPO achieved (now - newest archived WAL) %s, RTO %s' % (
                pit['target'], pit['chosen'] or 'given', pit['window_start'] or '?', pit['window_end'] or '?',
                pit['newest_wal'] or '?', pit['reached'] or 'n/a', human_duration(s['age_seconds']),
                human_duration(s['recovery_seconds'])))


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
                  '- restore: %s, %s: %s' % (
                      human_duration(s['restore_seconds']), recovery_heading(report), human_duration(s['recovery_seconds']))]
        if s.get('point_in_time'):
            lines.append('- %s' % pit_line(s))
        for c in s['checks']:
            lines.append('- [%s] %s' % ('x' if c.get('ok') else ' ', c.get('name')))
            lines += ['  - %s: `%s`' % (label, value) for label, value in check_lines(c)]
    if report['steps']:
        lines += ['', '## Steps', '', '| step | seconds |', '|---|---|']
        lines += ['| %s | %s |' % (st.get('name'), _seconds(st.get('seconds'))) for st in report['steps']]
    return '\n'.join(lines) + '\n'


# -- the HTML page --------------------------------------------------------------------------
# Drawn on the server as inline SVG (no script, no library, nothing fetched): what a browser,
# a mail client or a ticket attachment shows is what the tests measured in headless Chromium.
CHART_WIDTH, CHART_HEIGHT = 760, 280
MARGIN = {'left': 70, 'right': 20, 'top': 34, 'bottom': 56}
COLOURS = ('#1565c0', '#2e7d32', '#6a1b9a', '#ef6c00', '#00838f', '#5d4037')
UNITS = ((120, 1, 's'), (7200, 60, 'min'), (172800, 3600, 'h'), (None, 86400, 'd'))

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:64em;padding:0 1em;color:#222}
table{border-collapse:collapse;width:100%;table-layout:fixed;margin:.5em 0 1em}
td,th{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top;overflow-wrap:anywhere}
code{font-size:.9em;white-space:pre-wrap;overflow-wrap:anywhere}
.ok{color:#0a7d28}.failed{color:#b00020;font-weight:bold}.missed{color:#b00020;font-weight:bold}
figure{margin:1em 0}svg.chart{display:block;width:100%;max-width:760px;height:auto;background:#fafafa;
border:1px solid #ddd}svg.chart text{font-size:12px;fill:#333}svg.chart .title{font-size:14px;font-weight:bold}
svg.chart .grid{stroke:#e3e3e3}svg.chart .axis{stroke:#555}svg.chart .objective{stroke:#b00020;
stroke-dasharray:6 4;stroke-width:1.5}svg.chart text.objective-label{fill:#b00020}
"""


def _unit(max_seconds):
    for limit, factor, name in UNITS:
        if limit is None or max_seconds < limit:
            return factor, name


def _nice_step(span, ticks=5):
    raw = span / float(ticks)
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for multiple in (1, 2, 2.5, 5, 10):
        if raw <= multiple * power:
            return multiple * power
    return 10 * power


def _number(value):
    return ('%.2f' % value).rstrip('0').rstrip('.')


def _time_ticks(low, high):
    """About six evenly spaced instants with labels: dates over long spans, hours over short."""
    span = high - low
    fmt = '%Y-%m-%d' if span > 3 * 86400 else '%m-%d %H:%M'
    count = 5
    return [(low + span * i / count,
             datetime.datetime.fromtimestamp(low + span * i / count, datetime.timezone.utc).strftime(fmt))
            for i in range(count + 1)]


def chart(title, points, objectives, objective_name, chart_id):
    """An SVG chart of ``points`` [(unix time, seconds, set name, passed)] over time, with the
    ``objectives`` (seconds) as dashed lines. Dates on the x axis, the unit on the y axis."""
    esc = html.escape
    left, right, top, bottom = MARGIN['left'], CHART_WIDTH - MARGIN['right'], MARGIN['top'], CHART_HEIGHT - MARGIN['bottom']
    values = [p[1] for p in points] + list(objectives)
    factor, unit = _unit(max(values) if values else 1)
    top_value = (max(values) / factor if values else 1) * 1.15 or 1
    step = _nice_step(top_value)
    top_value = math.ceil(top_value / step) * step
    times = [p[0] for p in points]
    low, high = (min(times), max(times)) if times else (0, 0)
    if high - low < 3600:  # one drill (or several within the hour): a day around them
        low, high = low - 43200, high + 43200

    def x(t):
        return left + (t - low) / float(high - low) * (right - left)

    def y(seconds):
        return bottom - (seconds / factor) / top_value * (bottom - top)

    out = ['<svg class="chart" id="%s" viewBox="0 0 %d %d" role="img" aria-label="%s" data-points="%d">'
           % (chart_id, CHART_WIDTH, CHART_HEIGHT, esc(title), len(points)),
           '<text class="title" x="%d" y="20">%s</text>' % (left, esc(title))]
    tick = 0.0
    while tick <= top_value + 1e-9:
        ty = bottom - tick / top_value * (bottom - top)
        out.append('<line class="grid" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/>' % (left, right, ty, ty))
        out.append('<text class="y-tick" x="%d" y="%.1f" text-anchor="end">%s %s</text>'
                   % (left - 6, ty + 4, _number(tick), unit))
        tick += step
    ticks = _time_ticks(low, high)
    for index, (when, label) in enumerate(ticks):
        tx = x(when)
        # the outer labels lean inwards so that they stay inside the chart
        anchor = 'start' if index == 0 else 'end' if index == len(ticks) - 1 else 'middle'
        out.append('<line class="grid" x1="%.1f" x2="%.1f" y1="%d" y2="%d"/>' % (tx, tx, top, bottom))
        out.append('<text class="x-tick" x="%.1f" y="%d" text-anchor="%s">%s</text>' % (tx, bottom + 16, anchor, label))
    out.append('<line class="axis" x1="%d" x2="%d" y1="%d" y2="%d"/>' % (left, right, bottom, bottom))
    out.append('<line class="axis" x1="%d" x2="%d" y1="%d" y2="%d"/>' % (left, left, top, bottom))
    out.append('<text class="axis-title" x="%d" y="%d" text-anchor="middle">drill date (UTC)</text>'
               % ((left + right) // 2, CHART_HEIGHT - 8))
    out.append('<text class="axis-title" transform="translate(14 %d) rotate(-90)" text-anchor="middle">%s (%s)</text>'
               % ((top + bottom) // 2, esc(title.split(' (')[0].lower()), unit))
    for objective in sorted(set(objectives)):
        oy = y(objective)
        out.append('<line class="objective" data-seconds="%s" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/>'
                   % (objective, left, right, oy, oy))
        out.append('<text class="objective-label" x="%d" y="%.1f" text-anchor="end">%s objective %s</text>'
                   % (right - 4, oy - 4, objective_name, human_duration(objective)))
    names = sorted(set(p[2] for p in points))
    for index, name in enumerate(names):
        colour = COLOURS[index % len(COLOURS)]
        mine = sorted(p for p in points if p[2] == name)
        if len(mine) > 1:
            out.append('<polyline fill="none" stroke="%s" stroke-width="1.5" data-set="%s" points="%s"/>' % (
                colour, esc(name), ' '.join('%.1f,%.1f' % (x(p[0]), y(p[1])) for p in mine)))
        for when, seconds, _name, passed in mine:
            px, py = x(when), y(seconds)
            label = '%s %s: %s, %s' % (
                esc(name), datetime.datetime.fromtimestamp(when, datetime.timezone.utc).strftime('%Y-%m-%d %H:%M'),
                human_duration(seconds), 'passed' if passed else 'FAILED')
            if passed:
                out.append('<circle class="pass" cx="%.1f" cy="%.1f" r="4" fill="%s"><title>%s</title></circle>'
                           % (px, py, colour, label))
            else:
                out.append('<path class="fail" d="M%.1f %.1fl8 8m0 -8l-8 8" stroke="#b00020" stroke-width="2.5">'
                           '<title>%s</title></path>' % (px - 4, py - 4, label))
    for index, name in enumerate(names[:4]):
        out.append('<text class="legend" x="%d" y="20" style="fill:%s">&#9679; %s</text>'
                   % (right - 110 * (min(len(names), 4) - index), COLOURS[index % len(COLOURS)], esc(name[:14])))
    out.append('</svg>')
    return '\n'.join(out)


def _recovery_of(s):
    """Recovery seconds of a set in a report, also of reports written before recovery_seconds."""
    for key in ('recovery_seconds', 'duration_seconds', 'restore_seconds'):
        if s.get(key) is not None:
            return s[key]
    return None


def history_points(history, field):
    points = []
    for report in history:
        when = mf.parse_time(report['started']).timestamp()
        for s in report.get('sets', []):
            value = _recovery_of(s) if field == 'recovery' else s.get('age_seconds')
            if value is not None:
                points.append((when, float(value), s['name'], bool(s.get('success'))))
    return points


def charts(report, history):
    """The two history charts: recovery time with its RTO objective(s), backup age with RPO."""
    history = [h for h in history if h.get('started') != report['started']] + [report]
    rto = [s['rto_seconds'] for s in report['sets'] if s.get('rto_seconds') is not None]
    if report.get('rto_seconds') is not None and not rto:
        rto = [report['rto_seconds']]
    rpo = [s['rpo_seconds'] for s in report['sets'] if s.get('rpo_seconds') is not None]
    return [chart('Recovery time (RTO)', history_points(history, 'recovery'), rto, 'RTO', 'chart-recovery'),
            chart('Backup age at the %s (RPO)' % report['kind'], history_points(history, 'age'), rpo, 'RPO',
                  'chart-age')]


def page(report, history):
    esc = html.escape
    verdict = 'PASSED' if report['success'] else 'FAILED'
    heading = '<h1>DR %s <span class="%s">%s</span></h1>' % (
        esc(report['kind']), 'ok' if report['success'] else 'failed', verdict)
    body = [heading,
            '<p>Host %s, %s to %s (%s).</p>' % (esc(report['host'] or 'n/a'), esc(report['started']),
                                                esc(report['finished']), human_duration(report['duration_seconds'])),
            '<p id="rto" class="%s">%s</p>' % ('missed' if report.get('rto_met') is False else '', esc(rto_line(report))),
            '<table id="sets"><thead><tr><th>set</th><th>result</th><th>backup</th><th>repository</th>'
            '<th>backup age (RPO)</th><th>%s</th><th>checks</th></tr></thead><tbody>' % esc(recovery_heading(report))]
    for s in report['sets']:
        body.append('<tr><td>%s</td><td class="%s">%s</td><td>%s</td><td>%s</td><td class="%s">%s</td>'
                    '<td class="%s">%s</td><td>%d/%d</td></tr>' % (
                        esc(s['name']), 'ok' if s['success'] else 'failed', '&#10004; ok' if s['success'] else '&#10008; FAILED',
                        esc(s.get('backup_id') or '-'), esc(s.get('repository') or '-'),
                        'missed' if s['rpo_met'] is False else '',
                        esc(_objective_text(s['age_seconds'], s['rpo_seconds'], s['rpo_met'])),
                        'missed' if s.get('rto_met') is False else '',
                        esc(_objective_text(s['recovery_seconds'], s.get('rto_seconds'), s.get('rto_met'))),
                        sum(1 for c in s['checks'] if c.get('ok')), len(s['checks'])))
    body.append('</tbody></table>')
    failures = ['<li><b>%s</b>: %s</li>' % (esc(s['name']), esc(s.get('error') or 'a check failed'))
                for s in report['sets'] if not s['success']]
    if report.get('error'):
        failures.append('<li><b>%s</b>: %s</li>' % (esc(report['kind']), esc(report['error'])))
    if failures:
        body.append('<h2>Failures</h2><ul id="failures">%s</ul>' % ''.join(failures))
    body.append('<h2>History</h2>')
    body += ['<figure>%s</figure>' % svg for svg in charts(report, history)]
    for s in report['sets']:
        body.append('<h2>Set %s</h2>' % esc(s['name']))
        body.append('<ul class="repositories"><li>repository used: %s</li><li>repositories skipped: %s</li>'
                    '<li>restore %s, %s %s</li></ul>' % (
                        esc(s.get('repository') or 'none'),
                        esc('; '.join(s['skipped_repositories']) or 'none'),
                        human_duration(s['restore_seconds']), esc(recovery_heading(report)),
                        human_duration(s['recovery_seconds'])))
        if s.get('point_in_time'):
            body.append('<p class="point-in-time">%s</p>' % esc(pit_line(s)))
        if s['checks']:
            body.append('<table class="checks"><thead><tr><th>check</th><th>query</th><th>expected</th><th>got</th>'
                        '<th>result</th></tr></thead><tbody>')
            for c in s['checks']:
                facts = dict(check_lines(c))
                body.append('<tr><td>%s</td><td><code>%s</code></td><td>%s</td><td>%s</td><td class="%s">%s</td></tr>' % (
                    esc(str(c.get('name'))), esc(str(facts.get('query', '-'))), esc(str(facts.get('expected', '-'))),
                    esc(str(facts.get('got', '-'))), 'ok' if c.get('ok') else 'failed',
                    '&#10004; passed' if c.get('ok') else '&#10008; FAILED'))
            body.append('</tbody></table>')
    if report['steps']:
        body.append('<h2>Steps</h2><table id="steps"><thead><tr><th>step</th><th>seconds</th></tr></thead><tbody>%s'
                    '</tbody></table>' % ''.join('<tr><td>%s</td><td>%s</td></tr>' % (
                        esc(str(st.get('name'))), _seconds(st.get('seconds'))) for st in report['steps']))
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<title>DR %s %s</title><style>%s</style></head>\n<body>\n%s\n</body></html>\n'
            % (esc(report['kind']), verdict.lower(), _STYLE, '\n'.join(body)))


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


def _timestamp(text):
    return None if not text else round(mf.parse_time(text).timestamp(), 3)


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
        # point-in-time sets only: the RPO achieved is now - the newest archived WAL segment
        ('pitr_rpo_seconds', 'gauge', 'point-in-time set: seconds from the newest archived WAL segment to the drill',
         lambda s: s['age_seconds'] if s.get('point_in_time') else None),
        ('pitr_rto_seconds', 'gauge', 'point-in-time set: start of the restore to the scratch server answering its checks',
         lambda s: s['recovery_seconds'] if s.get('point_in_time') else None),
        ('pitr_target_timestamp_seconds', 'gauge', 'point-in-time set: the moment recovered to (Unix time)',
         lambda s: _timestamp((s.get('point_in_time') or {}).get('target'))),
        ('pitr_reached_timestamp_seconds', 'gauge', 'point-in-time set: the last transaction replayed (Unix time)',
         lambda s: _timestamp((s.get('point_in_time') or {}).get('reached'))),
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
