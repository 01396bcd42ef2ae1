"""``celeriac report``: one self-contained HTML file about a run, from its run database.

No server, no script, no external URL: tables and inline SVG only, so the file opens anywhere
and can be mailed. It holds the task counts, per-app timing statistics, the failures with
their error text, a Gantt chart of the tasks over time, and the task graph. Large runs are
aggregated so the page stays usable: the Gantt chart draws at most :data:`MAX_BARS` tasks
(evenly sampled in launch order), and past :data:`MAX_GRAPH_TASKS` tasks the graph shows one
node per app, with the number of task-to-task dependencies on each edge.
"""

from __future__ import annotations

import heapq
import html
import os
import sqlite3
import statistics
import time
from collections import Counter, defaultdict

from celeriac.orchestrator.runview import STATE_ORDER, connect
from celeriac.private_files import private_file

__all__ = ["write_report", "MAX_BARS", "MAX_GRAPH_TASKS"]

MAX_BARS = 2000
MAX_GRAPH_TASKS = 300
MAX_FAILURES = 100
_COLOURS = {"exec_done": "#4caf50", "memo_done": "#8bc34a", "failed": "#e53935",
            "dep_fail": "#ff9800", "launched": "#2196f3", "joining": "#03a9f4",
            "pending": "#bdbdbd"}
_CSS = """body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 8px;vertical-align:top;text-align:right}
td:first-child,th:first-child{text-align:left}
pre{white-space:pre-wrap;font-size:12px;margin:0;text-align:left;max-height:20em;overflow:auto}
tr.failed td{background:#fdecea}svg{border:1px solid #ddd;background:#fff}.note{color:#666}"""


def _e(value) -> str:
    return html.escape(str(value))


def write_report(run_dir: str, out: str | None = None) -> str:
    """Write the report of the run in ``run_dir``; returns the file's path
    (default ``<run_dir>/report.html``)."""
    out = out or os.path.join(run_dir, "report.html")
    conn = connect(run_dir)
    try:
        page = _page(conn, run_dir)
    finally:
        conn.close()
    with open(private_file(out), "w", encoding="utf-8") as f:
        f.write(page)
    return out


def _page(conn, run_dir: str) -> str:
    run = conn.execute("SELECT * FROM run").fetchone()
    counts = dict(conn.execute("SELECT state, count(*) FROM tasks GROUP BY state"))
    total = sum(counts.values())
    began = run["time_began"] if run else 0
    ended = run["time_ended"] if run else None
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>celeriac run "
             f"{_e(run['run_id'] if run else '')}</title><style>{_CSS}</style></head><body>",
             f"<h1>celeriac run {_e(run['run_id'] if run else '?')}</h1>",
             f"<p>{_e(run_dir)}; began {_e(time.ctime(began))}; "
             + (f"took {ended - began:.1f} s" if ended else "still running or killed")
             + f"; <span id='total-tasks'>{total}</span> tasks</p>",
             "<h2>Tasks per state</h2><table id='state-counts'><tr><th>state</th><th>tasks"
             "</th></tr>"]
    for state in STATE_ORDER:
        if counts.get(state):
            parts.append(f"<tr data-state='{state}'><td>{state}</td>"
                         f"<td class='n'>{counts[state]}</td></tr>")
    parts.append("</table>")
    parts += _apps(conn)
    parts += _failures(conn, counts)
    parts += _gantt(conn, began)
    parts += _graph(conn, total)
    parts.append("</body></html>")
    return "\n".join(parts)


def _apps(conn) -> list:
    rows = conn.execute("SELECT app, state, count(*) FROM tasks GROUP BY app, state")
    per = defaultdict(Counter)
    for app, state, n in rows:
        per[app][state] = n
    out = ["<h2>Apps</h2><table id='apps'><tr><th>app</th><th>tasks</th><th>done</th>"
           "<th>failed</th><th>retries</th><th>min s</th><th>median s</th><th>mean s</th>"
           "<th>max s</th></tr>"]
    retries = dict(conn.execute(
        "SELECT app, sum(tries - 1) FROM tasks WHERE tries > 1 GROUP BY app"))
    for app in sorted(per):
        durations = [d for (d,) in conn.execute(
            "SELECT time_finished - time_launched FROM tasks WHERE app = ? AND state = "
            "'exec_done' AND time_launched IS NOT NULL", (app,))]
        stats = (min(durations), statistics.median(durations), statistics.fmean(durations),
                 max(durations)) if durations else None
        c = per[app]
        cells = "".join(f"<td>{v:.3f}</td>" for v in stats) if stats else "<td></td>" * 4
        out.append(f"<tr data-app='{_e(app)}'><td>{_e(app)}</td><td>{sum(c.values())}</td>"
                   f"<td>{c['exec_done'] + c['memo_done']}</td>"
                   f"<td>{c['failed'] + c['dep_fail']}</td><td>{retries.get(app) or 0}</td>"
                   f"{cells}</tr>")
    out.append("</table><p class='note'>Times are from launch to result, as the "
               "orchestrator saw them.</p>")
    return out


def _failures(conn, counts) -> list:
    failed = counts.get("failed", 0)
    out = [f"<h2>Failures</h2><p>{failed} failed, {counts.get('dep_fail', 0)} not run "
           "because a dependency failed.</p>"]
    if not failed:
        return out
    out.append("<table id='failures'><tr><th>task</th><th>app</th><th>tries</th>"
               "<th>host</th><th>error</th></tr>")
    for tid, app, tries, error in conn.execute(
            "SELECT task_id, app, tries, error FROM tasks WHERE state = 'failed' "
            "ORDER BY task_id LIMIT ?", (MAX_FAILURES,)).fetchall():
        out.append(f"<tr class='failed' data-task='{tid}'><td>{tid}</td><td>{_e(app)}</td>"
                   f"<td>{tries}</td><td class='host'>{_e(_host(conn, tid))}</td>"
                   f"<td><pre>{_e(error or '')}</pre></td></tr>")
    out.append("</table>")
    if failed > MAX_FAILURES:
        out.append(f"<p class='note'>The first {MAX_FAILURES} of {failed} failures; "
                   "the run database has them all.</p>")
    return out


def _host(conn, tid: int) -> str:
    """The host (and block) of the task's last try that reported one, or ""."""
    try:
        row = conn.execute("SELECT host, block FROM all_tries WHERE task_id = ? AND host IS "
                           "NOT NULL ORDER BY try DESC LIMIT 1", (tid,)).fetchone()
    except sqlite3.OperationalError:  # a database of an older celeriac: no hosts
        return ""
    if row is None:
        return ""
    return row[0] if row[1] is None else f"{row[0]} (block {row[1]})"


def _gantt(conn, began: float) -> list:
    total = conn.execute("SELECT count(*) FROM tasks WHERE time_launched IS NOT NULL"
                         ).fetchone()[0]
    out = ["<h2>Tasks over time</h2>"]
    if not total:
        return out + ["<p>No task was launched.</p>"]
    step = max(1, -(-total // MAX_BARS))
    rows = conn.execute(
        "SELECT task_id, app, state, time_launched, coalesce(time_finished, ?) FROM tasks "
        "WHERE time_launched IS NOT NULL ORDER BY time_launched", (time.time(),)).fetchall()
    rows = rows[::step]
    t0 = min(r[3] for r in rows)
    span = max(max(r[4] for r in rows) - t0, 1e-6)
    lanes: list = []  # (end, lane) heap: each bar goes on the first lane free at its start
    placed = []
    free: list = []
    for tid, app, state, start, end in rows:
        while lanes and lanes[0][0] <= start:
            heapq.heappush(free, heapq.heappop(lanes)[1])
        lane = heapq.heappop(free) if free else len(lanes) + len(free)
        heapq.heappush(lanes, (end, lane))
        placed.append((tid, app, state, start, end, lane))
    n_lanes = max(p[5] for p in placed) + 1
    width, bar = 1000, 6 if n_lanes < 100 else 2
    height = n_lanes * (bar + 1) + 20
    out.append(f"<p class='note'>{len(placed)} of {total} launched tasks drawn"
               + (f" (every {step}th, in launch order)" if step > 1 else "")
               + f", packed into {n_lanes} rows; {span:.2f} s from the first launch.</p>")
    out.append(f"<svg id='gantt' width='{width + 20}' height='{height}'>")
    for tid, app, state, start, end, lane in placed:
        x = 10 + (start - t0) / span * width
        w = max(1.0, (end - start) / span * width)
        out.append(f"<rect class='bar {state}' data-task='{tid}' x='{x:.1f}' "
                   f"y='{lane * (bar + 1)}' width='{w:.1f}' height='{bar}' "
                   f"fill='{_COLOURS.get(state, '#999')}'><title>task {tid} {_e(app)} "
                   f"{state} {end - start:.3f} s</title></rect>")
    out.append("</svg>")
    return out


def _graph(conn, total: int) -> list:
    out = ["<h2>Task graph</h2>"]
    if not total:
        return out + ["<p>No tasks.</p>"]
    tasks = {tid: (app, state) for tid, app, state in
             conn.execute("SELECT task_id, app, state FROM tasks")}
    edges = [(d, t) for t, d in conn.execute("SELECT task_id, depends_on FROM dependencies")
             if d in tasks]
    depth = dict.fromkeys(tasks, 0)
    parents = defaultdict(list)
    for d, t in edges:
        parents[t].append(d)
    for tid in sorted(tasks):  # a dependency always has a smaller id than its dependent
        if parents[tid]:
            depth[tid] = 1 + max(depth[d] for d in parents[tid])
    if total <= MAX_GRAPH_TASKS:
        nodes = {tid: (f"{tid} {app}", state, depth[tid], 1) for tid, (app, state)
                 in tasks.items()}
        links = Counter(edges)
        out.append(f"<p class='note'>{len(nodes)} tasks, {len(edges)} dependencies.</p>")
    else:
        per_app: dict = defaultdict(Counter)
        app_depth: dict = {}
        for tid, (app, state) in tasks.items():
            per_app[app][state] += 1
            app_depth[app] = min(app_depth.get(app, depth[tid]), depth[tid])
        nodes = {}
        for app, c in per_app.items():
            worst = next((s for s in ("failed", "dep_fail") if c[s]), "exec_done")
            nodes[app] = (f"{app} ({sum(c.values())} tasks)", worst, app_depth[app],
                          sum(c.values()))
        links = Counter((tasks[d][0], tasks[t][0]) for d, t in edges)
        out.append(f"<p class='note'>{total} tasks: one node per app ({len(nodes)} apps); "
                   "an edge's number is how many task-to-task dependencies it stands for."
                   "</p>")
    layers = defaultdict(list)
    for key, node in sorted(nodes.items(), key=lambda kv: str(kv[0])):
        layers[node[2]].append(key)
    per_row = 20
    pos, y = {}, 20
    for level in sorted(layers):
        keys = layers[level]
        for i, key in enumerate(keys):
            pos[key] = (20 + (i % per_row) * 150, y + (i // per_row) * 40)
        y += (len(keys) - 1) // per_row * 40 + 70
    width = 40 + min(per_row, max(len(v) for v in layers.values())) * 150
    out.append(f"<svg id='graph' width='{width}' height='{y}'>")
    for (a, b), n in links.items():
        (x1, y1), (x2, y2) = pos[a], pos[b]
        out.append(f"<line class='edge' x1='{x1 + 60}' y1='{y1 + 24}' x2='{x2 + 60}' "
                   f"y2='{y2}' stroke='#999'/>")
        if n > 1 or total > MAX_GRAPH_TASKS:
            out.append(f"<text x='{(x1 + x2) / 2 + 64:.0f}' y='{(y1 + y2) / 2 + 12:.0f}' "
                       f"font-size='10' fill='#666'>{n}</text>")
    for key, (label, state, _, _) in nodes.items():
        x, y0 = pos[key]
        out.append(f"<g class='node {state}' data-node='{_e(key)}'><rect x='{x}' y='{y0}' "
                   f"width='120' height='24' rx='4' fill='{_COLOURS.get(state, '#999')}'/>"
                   f"<text x='{x + 4}' y='{y0 + 16}' font-size='11'>{_e(label[:22])}</text>"
                   f"<title>{_e(label)}: {state}</title></g>")
    out.append("</svg>")
    return out
