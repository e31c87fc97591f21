"""The drill report's HTML page, rendered in headless Chromium after one drill and after thirty:
the charts have dated time axes, units and the RPO/RTO objective lines, failed drills are
marked, every check shows its query, expectation and answer, and nothing overflows the page.
The page has no script of its own; the test adds a small probe that measures the rendered DOM."""

from __future__ import annotations

import datetime
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.ansible import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / ".cache" / "collections"))
from ansible_collections.offsite.backup.plugins.module_utils._engine import drill_report  # noqa: E402

WIDTH = 1024
# measures what the browser laid out: chart texts inside their SVG's box, nothing wider than the window
PROBE = """<script>
(function () {
  var out = {viewport: window.innerWidth, page_width: document.documentElement.scrollWidth, charts: [],
             wide: []};
  document.querySelectorAll('body *').forEach(function (el) {
    var r = el.getBoundingClientRect();
    if (r.width && r.right > window.innerWidth + 0.5) { out.wide.push(el.tagName + '.' + el.className); }
  });
  document.querySelectorAll('svg.chart').forEach(function (svg) {
    var box = svg.viewBox.baseVal, chart = {id: svg.id, outside: [], texts: {}, objectives: [], markers: {},
                                            plot: null};
    svg.querySelectorAll('text').forEach(function (t) {
      var b = t.getBBox();
      var m = t.getCTM && t.transform.baseVal.numberOfItems ? t.getBoundingClientRect() : null;
      if (!m && (b.x < box.x - 0.5 || b.y < box.y - 0.5 || b.x + b.width > box.x + box.width + 0.5 ||
                 b.y + b.height > box.y + box.height + 0.5)) { chart.outside.push(t.textContent); }
      var kind = t.getAttribute('class') || 'text';
      (chart.texts[kind] = chart.texts[kind] || []).push(t.textContent);
    });
    svg.querySelectorAll('line.axis').forEach(function (l) {
      chart.plot = chart.plot || {};
      if (l.y1.baseVal.value === l.y2.baseVal.value) { chart.plot.bottom = l.y1.baseVal.value; }
      else { chart.plot.top = l.y1.baseVal.value; }
    });
    svg.querySelectorAll('line.objective').forEach(function (l) {
      chart.objectives.push({seconds: parseFloat(l.getAttribute('data-seconds')), y: l.y1.baseVal.value,
                             shown: l.getBoundingClientRect().width > 0});
    });
    chart.markers.pass = svg.querySelectorAll('circle.pass').length;
    chart.markers.fail = svg.querySelectorAll('path.fail').length;
    out.charts.push(chart);
  });
  var pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"""


def render(html: Path, tmp_path: Path) -> tuple[str, dict]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.fail("chromium is missing: scripts/bootstrap.sh installs it")
    probed = tmp_path / ("probed-" + html.name)
    probed.write_text(html.read_text().replace("</body>", PROBE + "</body>"))
    profile = tmp_path / "chromium-profile"
    r = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--no-first-run", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", f"--window-size={WIDTH},900", "--dump-dom", probed.as_uri()],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', r.stdout, re.S)
    assert found, r.stdout[-2000:]
    return r.stdout, json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&")
                                .replace("&lt;", "<").replace("&gt;", ">"))


def drills(report_dir: Path, count: int, seed: int) -> tuple[list[dict], Path]:
    """``count`` weekly drills of two sets with random ages and recovery times (some over their
    objectives, one set failing a check now and then); returns the reports and the last page."""
    rng = random.Random(seed)
    start = datetime.datetime(2026, 6, 1, 5, 0, tzinfo=datetime.timezone.utc)
    reports = []
    for week in range(count):
        began = start + datetime.timedelta(days=7 * week)
        sets = []
        for name in ("crm_db", "erp_files"):
            check_ok = rng.random() > 0.15
            sets.append({
                "name": name, "success": check_ok, "backup_id": f"{name}_{began:%Y%m%dT030000Z}",
                "repository": f"s3://crm-backups/prod at https://s3.eu-central-1.example.com/{name}",
                "skipped_repositories": ["sftp u123456@u123456.your-storagebox.de: connection refused"],
                "age_seconds": rng.uniform(3600, 100000), "restore_seconds": rng.uniform(5, 300),
                "recovery_seconds": rng.uniform(10, 900), "duration_seconds": rng.uniform(900, 1000),
                "checks": [{"name": "users", "ok": check_ok, "query": "SELECT count(*) FROM public.users",
                            "expected": "at least 1000", "got": "1234" if check_ok else "12"}],
                "error": None if check_ok else "a verification query failed"})
        report = drill_report.build("drill", sets, began, began + datetime.timedelta(minutes=20), host="drill1",
                                    rpo_seconds=93600, rto_seconds=600)
        paths = drill_report.write(report, str(report_dir))
        reports.append(report)
    return reports, Path(paths["html"])


@pytest.mark.parametrize("count", [1, 30])
def test_report_page_renders_usefully(tmp_path, count):
    seed = random.randrange(2 ** 32)
    print(f"seed {seed}")
    reports, page = drills(tmp_path / "reports", count, seed)
    dom, probe = render(page, tmp_path)

    # nothing wider than the window: no horizontal scrolling, no text cut off at a chart's edge
    assert probe["page_width"] <= probe["viewport"] == WIDTH, probe
    assert probe["wide"] == [], probe["wide"]
    charts = {c["id"]: c for c in probe["charts"]}
    assert set(charts) == {"chart-recovery", "chart-age"}
    points = 2 * count
    failed = sum(1 for r in reports for s in r["sets"] if not s["success"])
    for chart_id, unit_of_objective, objective in (("chart-recovery", "RTO", 600), ("chart-age", "RPO", 93600)):
        chart = charts[chart_id]
        assert chart["outside"] == [], (chart_id, chart["outside"])
        texts = chart["texts"]
        # a dated time axis and a value axis with its unit
        assert texts["axis-title"][0] == "drill date (UTC)" and re.search(r"\((s|min|h|d)\)$", texts["axis-title"][1])
        unit = texts["axis-title"][1].rsplit("(", 1)[1].rstrip(")")
        assert len(texts["y-tick"]) >= 3 and all(t.endswith(" " + unit) for t in texts["y-tick"])
        assert len(texts["x-tick"]) >= 3
        first_day = reports[0]["started"][:10]
        if count == 1:
            assert all(re.match(r"^\d\d-\d\d \d\d:\d\d$", t) for t in texts["x-tick"])
            assert any(t.startswith(first_day[5:]) for t in texts["x-tick"])
        else:
            assert all(re.match(r"^\d{4}-\d\d-\d\d$", t) for t in texts["x-tick"])
            assert texts["x-tick"][0] == first_day and texts["x-tick"][-1] == reports[-1]["started"][:10]
        # the objective, drawn inside the plot and labelled
        (line,) = chart["objectives"]
        assert line["seconds"] == objective and line["shown"]
        assert chart["plot"]["top"] <= line["y"] <= chart["plot"]["bottom"]
        assert texts["objective-label"] == [f"{unit_of_objective} objective {drill_report.human_duration(objective)}"]
        # one marker per set and drill; failed ones are crosses
        assert chart["markers"]["pass"] + chart["markers"]["fail"] == points
        assert chart["markers"]["fail"] == failed

    # the per-check facts and the repositories, in the page, the Markdown and the JSON alike
    last = reports[-1]
    markdown = page.with_suffix(".md").read_text()
    record = json.loads(page.with_suffix(".json").read_text())
    for s in last["sets"]:
        check = s["checks"][0]
        for fact in (check["query"], check["expected"], check["got"], s["skipped_repositories"][0], s["repository"]):
            assert fact in dom and fact in markdown, fact
        stored = next(x for x in record["sets"] if x["name"] == s["name"])
        assert stored["checks"] == s["checks"] and stored["skipped_repositories"] == s["skipped_repositories"]
        assert stored["rto_seconds"] == 600 and stored["rpo_seconds"] == 93600
    assert "RTO (start of the restore to the target answering its checks)" in dom
    assert ("PASSED" if last["success"] else "FAILED") in dom and ("PASSED" if last["success"] else "FAILED") in markdown
