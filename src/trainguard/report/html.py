"""A self-contained HTML report: one file, no scripts, no network.

Poisoned records often carry `<script>` or markup meant for whoever looks at
them, so every data-derived string is `html.escape`d and invisible code points
are shown as labelled `U+XXXX` chips. The page contains no JavaScript at all,
and a Content-Security-Policy forbids scripts and remote loads as a second
line of defence. Charts are inline SVG built here.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any, Mapping, Sequence

import numpy as np

from trainguard.findings import Finding, Severity
from trainguard.records import Record
from trainguard.report._safe import ATLAS_URL, jsonable, split_visible, visible
from trainguard.report.highlight import segments, terms_of
from trainguard.report.model import Report

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
SEV_COLOR = {
    Severity.CRITICAL: "#7f1d1d",
    Severity.HIGH: "#dc2626",
    Severity.MEDIUM: "#d97706",
    Severity.LOW: "#0891b2",
    Severity.INFO: "#6b7280",
}
ROWS_SHOWN = 12
SKIPPED_LISTED = 1000
ROWS_LISTED = 2000
TEXTS_SHOWN = 10  # held rows whose text each finding shows (when the scanned records are at hand)
TEXT_CHARS = 1_000  # characters of one field shown there
BINS = 20

CSS = """
:root{--fg:#1f2937;--muted:#6b7280;--bg:#f8fafc;--card:#fff;--line:#e5e7eb;--accent:#4f46e5}
@media (prefers-color-scheme:dark){:root{--fg:#e5e7eb;--muted:#9ca3af;--bg:#0f172a;--card:#111827;--line:#374151;--accent:#818cf8}}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:1280px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px}
.muted{color:var(--muted)}code,pre,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:12px 0}
.meta dt{color:var(--muted)}.meta dd{margin:0;word-break:break-all}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin-top:16px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 16px;min-width:140px}
.card .n{font-size:24px;font-weight:650}.card .l{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card.bad{border-color:#dc2626}.card.bad .n{color:#dc2626}
.charts{display:flex;flex-wrap:wrap;gap:12px}
.chart{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:10px 12px}
.chart h3{font-size:13px;margin:0 0 4px}
.chart svg text{fill:var(--muted);font-size:10px;font-family:system-ui,sans-serif}
table{width:100%;border-collapse:collapse;background:var(--card);border:1px solid var(--line);border-radius:10px;overflow:hidden}
th,td{text-align:left;vertical-align:top;padding:7px 10px;border-bottom:1px solid var(--line)}
th{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em;background:rgba(127,127,127,.06)}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.sev{display:inline-block;border-radius:999px;padding:1px 9px;color:#fff;font-size:12px;font-weight:600}
.status-ok{color:#16a34a;font-weight:600}.status-failed{color:#dc2626;font-weight:700}.status-skipped{color:var(--muted)}.status-disabled{color:#b45309;font-weight:600}
.bar{height:6px;background:var(--line);border-radius:3px;margin-top:4px;min-width:60px}
.bar span{display:block;height:6px;border-radius:3px;background:var(--accent)}
.cp{display:inline-block;border:1px solid #dc2626;color:#dc2626;border-radius:4px;padding:0 3px;margin:0 1px;
 font:11px ui-monospace,monospace;background:rgba(220,38,38,.08)}
details summary{cursor:pointer;color:var(--accent)}
pre{white-space:pre-wrap;word-break:break-word;margin:6px 0 0;max-height:360px;overflow:auto;
 background:rgba(127,127,127,.07);padding:8px;border-radius:6px}
a{color:var(--accent)}
.texts{margin:6px 0;padding-left:18px;max-height:420px;overflow:auto}
.texts li{margin:4px 0}
mark{background:#fde047;color:#111;border-radius:3px;padding:0 2px}
.banner{background:#fee2e2;color:#7f1d1d;border:1px solid #dc2626;border-radius:10px;padding:10px 14px;margin-top:16px}
.ok{color:#16a34a;font-weight:600}
"""


def esc(value: Any, keep_newlines: bool = False) -> str:
    """HTML-escape and show hidden code points as chips (newlines kept in <pre> blocks)."""
    s = str(value)
    if keep_newlines:
        return "\n".join(esc(part) for part in s.split("\n"))
    out = []
    for chunk, hidden in split_visible(s):
        out.append(f'<span class="cp" title="invisible character">{chunk}</span>' if hidden else html.escape(chunk))
    return "".join(out)


def render(report: Report, records: Sequence[Record] | None = None) -> str:
    """The page; with the scanned `records`, each finding also shows its rows' text, trigger marked."""
    by_row = {r.row: r for r in records} if records is not None else None
    ds = report.dataset
    name = str(ds.path or "dataset").replace("\\", "/").rsplit("/", 1)[-1]
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>trainguard report: {html.escape(visible(name))}</title>",
        f"<style>{CSS}</style></head><body><main>",
        _header(report),
        _cards(report),
        _charts(report),
        _detectors(report),
        _findings(report, by_row),
        _skipped(ds.skipped),
        f'<p class="muted">Generated by trainguard {esc(report.tool_version)} at {esc(report.created)}. '
        "Rows are 0-based record positions in the input file. This page contains no scripts.</p>",
        "</main></body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def _header(report: Report) -> str:
    ds = report.dataset
    fields = ds.fields
    items = [
        ("dataset", f'<span class="mono">{esc(ds.path)}</span>'),
        ("sha256", f'<span class="mono">{esc(ds.sha256 or "n/a (in-memory data)")}</span>'),
        ("kind", esc(ds.kind)),
        ("fields", esc(", ".join(f"{k}={v}" for k, v in sorted(fields.items())) if isinstance(fields, dict)
                       else json.dumps(jsonable(fields), ensure_ascii=False)) or "-"),
        ("created", esc(report.created)),
    ]
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
    banner = ""
    if report.failed:
        names = ", ".join(esc(d.name) for d in report.failed)
        banner = (f'<div class="banner"><strong>Incomplete scan:</strong> detector(s) {names} failed. '
                  "A gate built on this report must not pass it.</div>")
    return f"<header><h1>trainguard scan report</h1><dl class=\"meta\">{dl}</dl>{banner}</header>"


def _cards(report: Report) -> str:
    ds = report.dataset
    counts = report.severity_counts()
    skipped = len(ds.skipped)
    cards = [
        (f"{int(ds.records):,}", "records", False),
        (f"{len(report.findings):,}", "findings", False),
        (f"{counts['critical'] + counts['high']:,}", "critical + high", counts["critical"] + counts["high"] > 0),
        (f"{len(report.flagged_rows()):,}", "flagged rows", False),
        (f"{skipped:,}", "skipped rows", skipped > 0),
        (f"{len(report.failed)}", "failed detectors", bool(report.failed)),
    ]
    body = "".join(f'<div class="card{" bad" if bad else ""}"><div class="n">{n}</div>'
                   f'<div class="l">{label}</div></div>' for n, label, bad in cards)
    return f'<section class="cards">{body}</section>'


def _charts(report: Report) -> str:
    charts = [_severity_chart(report)]
    for det in sorted(report.row_scores):
        charts.append(_histogram(det, np.asarray(report.row_scores[det], dtype=float)))
    return f'<h2>Scores</h2><section class="charts">{"".join(charts)}</section>'


def _severity_chart(report: Report) -> str:
    counts = report.severity_counts()
    sevs = sorted(Severity, reverse=True)
    top = max(max(counts.values()), 1)
    w, row_h, left = 300, 22, 70
    bars = []
    for i, s in enumerate(sevs):
        n = counts[str(s)]
        y = 8 + i * row_h
        bw = (w - left - 40) * n / top
        bars.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{s}</text>'
                    f'<rect x="{left}" y="{y + 2}" width="{bw:.1f}" height="14" rx="3" fill="{SEV_COLOR[s]}">'
                    f"<title>{s}: {n}</title></rect>"
                    f'<text x="{left + bw + 5:.1f}" y="{y + 13}">{n}</text>')
    h = 16 + len(sevs) * row_h
    return (f'<div class="chart"><h3>Findings by severity</h3><svg role="img" aria-label="findings by severity" '
            f'width="{w}" height="{h}" viewBox="0 0 {w} {h}">{"".join(bars)}</svg></div>')


def _histogram(detector: str, scores: np.ndarray) -> str:
    """Per-row score histogram on a log count axis: a handful of suspects must stay visible next to 60k zeros."""
    finite = scores[np.isfinite(scores)]
    counts, edges = np.histogram(np.clip(finite, 0.0, 1.0), bins=BINS, range=(0.0, 1.0))
    w, h, pad_l, pad_b, pad_t = 320, 150, 34, 22, 8
    plot_w, plot_h = w - pad_l - 8, h - pad_b - pad_t
    ymax = int(counts.max()) if counts.size else 0
    top = math.log10(1 + max(ymax, 1))
    bw = plot_w / BINS
    bars = []
    for i, c in enumerate(counts):
        bh = plot_h * math.log10(1 + int(c)) / top if c else 0.0
        x = pad_l + i * bw
        hue = 120 - 120 * (i + 0.5) / BINS  # green (low score) to red (high)
        bars.append(f'<rect x="{x + 0.5:.1f}" y="{pad_t + plot_h - bh:.1f}" width="{bw - 1:.1f}" height="{bh:.1f}" '
                    f'fill="hsl({hue:.0f},65%,45%)"><title>score {edges[i]:.2f}-{edges[i + 1]:.2f}: {int(c):,} rows'
                    "</title></rect>")
    axis = (f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{w - 8}" y2="{pad_t + plot_h}" stroke="currentColor" '
            'stroke-opacity=".3"/>'
            f'<text x="{pad_l}" y="{h - 6}">0</text><text x="{pad_l + plot_w / 2:.0f}" y="{h - 6}" '
            f'text-anchor="middle">row score</text><text x="{w - 8}" y="{h - 6}" text-anchor="end">1</text>'
            f'<text x="{pad_l - 4}" y="{pad_t + 8}" text-anchor="end">{ymax:,}</text>'
            f'<text x="{pad_l - 4}" y="{pad_t + plot_h}" text-anchor="end">0</text>')
    n_pos = int((finite > 0).sum())
    caption = f"{finite.size:,} rows, {n_pos:,} scored above 0 (log count axis)"
    if finite.size < scores.size:
        caption += f"; {scores.size - finite.size:,} without a finite score, left out"
    return (f'<div class="chart"><h3>{esc(detector)}</h3><svg role="img" aria-label="row score histogram" '
            f'width="{w}" height="{h}" viewBox="0 0 {w} {h}">{"".join(bars)}{axis}</svg>'
            f'<div class="muted" style="font-size:11px">{caption}</div></div>')


def _detectors(report: Report) -> str:
    rows = []
    for d in report.detectors:
        settings = json.dumps(jsonable(d.settings), ensure_ascii=False, sort_keys=True, indent=1)
        rows.append(
            f'<tr><td class="mono">{esc(d.name)}</td><td>{esc(d.version)}</td>'
            f'<td class="status-{d.status.value}">{esc(d.status.value)}</td>'
            f'<td class="num">{d.seconds:.2f}</td>'
            f"<td>{esc(d.message) or '<span class=muted>-</span>'}"
            f"<details><summary>settings</summary><pre>{esc(settings, keep_newlines=True)}</pre></details></td></tr>"
        )
    if not rows:
        rows.append('<tr><td colspan="5" class="status-failed">no detector ran</td></tr>')
    return ("<h2>Detectors</h2><table><thead><tr><th>detector</th><th>version</th><th>status</th>"
            f"<th>seconds</th><th>note</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _findings(report: Report, by_row: Mapping[int, Record] | None = None) -> str:
    if not report.findings:
        return '<h2>Findings</h2><p class="ok">No findings.</p>'
    rows = [_finding_row(i, f, by_row) for i, f in enumerate(report.findings, 1)]
    return (f"<h2>Findings ({len(report.findings)})</h2><table><thead><tr><th>#</th><th>severity</th>"
            "<th>confidence</th><th>score</th><th>detector / rule</th><th>finding</th><th>rows</th><th>ATLAS</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _row_texts(f: Finding, by_row: Mapping[int, Record]) -> str:
    """The first held rows' fields, trigger tokens marked and hidden characters as chips, all escaped."""
    terms = terms_of(dict(f.evidence))
    items = []
    for row in f.rows[:TEXTS_SHOWN]:
        rec = by_row.get(row)
        if rec is None:
            continue
        fields = [(name, value) for name, value in (("text", rec.text), ("label", rec.label),
                                                    ("response", rec.response), ("chosen", rec.chosen),
                                                    ("rejected", rec.rejected)) if value is not None]
        body = "".join(f'<div><span class="muted">{name}</span> {_marked(value, terms)}</div>' for name, value in fields)
        items.append(f'<li><span class="mono">row {row}</span>{body}</li>')
    if not items:
        return ""
    more = f" (first {TEXTS_SHOWN} of {len(f.rows):,})" if len(f.rows) > TEXTS_SHOWN else ""
    return f'<details open><summary>row texts{more}</summary><ul class="texts">{"".join(items)}</ul></details>'


def _marked(text: str, terms: list[str]) -> str:
    cut = len(text) > TEXT_CHARS
    out = []
    for piece, cls in segments(text[:TEXT_CHARS], terms):
        if "cp" in cls:
            out.append(f'<span class="cp" title="invisible character">{html.escape(piece)}</span>')
        elif cls == "mark":
            out.append(f"<mark>{html.escape(piece)}</mark>")
        else:
            out.append(html.escape(piece).replace("\n", "<br>"))
    return "".join(out) + (" …" if cut else "")


def _finding_row(i: int, f: Finding, by_row: Mapping[int, Record] | None = None) -> str:
    evidence = json.dumps(jsonable(f.evidence), ensure_ascii=False, sort_keys=True, indent=2)
    atlas = "<br>".join(f'<a href="{html.escape(ATLAS_URL.format(a))}" rel="noreferrer">{esc(a)}</a>'
                        if _atlas_like(a) else esc(a) for a in f.atlas) or "-"
    shown = ", ".join(str(r) for r in f.rows[:ROWS_SHOWN])
    rows_html = f"<strong>{len(f.rows):,}</strong><br><span class=\"mono\">{shown}</span>"
    if len(f.rows) > ROWS_SHOWN:
        listed = ", ".join(str(r) for r in f.rows[:ROWS_LISTED])
        cut = f" (first {ROWS_LISTED:,}; the JSON report has all)" if len(f.rows) > ROWS_LISTED else ""
        rows_html += f"<details><summary>all rows{cut}</summary><pre>{listed}</pre></details>"
    sev = f.severity
    return (
        f'<tr><td class="num">{i}</td>'
        f'<td><span class="sev" style="background:{SEV_COLOR[sev]}">{sev}</span></td>'
        f"<td>{f.confidence}</td>"
        f'<td class="num">{f.score:.2f}<div class="bar"><span style="width:{100 * f.score:.0f}%"></span></div></td>'
        f'<td class="mono">{esc(f.detector)}<br>{esc(f.rule)}</td>'
        f"<td>{esc(f.title)}{_row_texts(f, by_row) if by_row else ''}<details><summary>evidence</summary><pre>{esc(evidence, keep_newlines=True)}</pre>"
        f'<div class="muted mono">fingerprint {esc(f.fingerprint)}</div></details></td>'
        f"<td>{rows_html}</td><td>{atlas}</td></tr>"
    )


def _atlas_like(a: str) -> bool:
    import re

    return re.fullmatch(r"AML\.[A-Z]+\d{4}(\.\d{3})?", a) is not None


def _skipped(skipped: list[dict]) -> str:
    if not skipped:
        return ""
    rows = "".join(
        f"<tr><td class=\"num\">{esc(_dash(e.get('row')))}</td><td class=\"num\">{esc(_dash(e.get('line')))}</td>"
        f"<td class=\"mono\">{esc(_dash(e.get('field')))}</td><td>{esc(e.get('message', ''))}</td></tr>"
        for e in skipped[:SKIPPED_LISTED]
    )
    more = (f'<p class="muted">{len(skipped) - SKIPPED_LISTED:,} more skipped rows: see the JSON report.</p>'
            if len(skipped) > SKIPPED_LISTED else "")
    return (f"<h2>Skipped input rows ({len(skipped):,}), not scanned</h2>{more}"
            "<table><thead><tr><th>row</th><th>line</th><th>field</th><th>problem</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def _dash(v: Any) -> str:
    return "-" if v is None else str(v)
