"""The report page's inline stylesheet: system fonts only (no web fonts), readable on screen and in print."""

CSS = """
:root { --ink: #1f2328; --muted: #5b636e; --line: #d9dde3; --soft: #f5f7fa; --accent: #2f6db5;
        --ng: #c0392b; --ok: #1e8449; --wrong-bg: #fdecea; }
* { box-sizing: border-box; }
body { margin: 0; background: #eef1f5; color: var(--ink);
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 24px auto; background: #fff; padding: 28px 36px 20px;
       border: 1px solid var(--line); border-radius: 6px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 30px 0 10px; padding-bottom: 5px; border-bottom: 2px solid var(--accent); }
h3 { font-size: 14.5px; margin: 18px 0 6px; }
p.subtitle { color: var(--muted); margin: 0 0 16px; }
p.lead { color: var(--muted); margin: 2px 0 10px; }
code { font: 12.5px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--soft);
       padding: 1px 4px; border-radius: 3px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 8px 0 12px; }
.card { flex: 1 1 130px; max-width: 210px; border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px;
        background: var(--soft); }
.card .value { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .label { color: var(--muted); font-size: 12.5px; }
p.warning, p.info { padding: 8px 12px; border-radius: 5px; margin: 8px 0; }
p.warning { background: #fff4e0; border-left: 4px solid #e69b00; }
p.info { background: #e8f1fb; border-left: 4px solid var(--accent); }
table { border-collapse: collapse; margin: 4px 0 8px; font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 4px 9px; text-align: left; vertical-align: top; }
thead th { background: var(--soft); font-weight: 600; }
table.facts th { background: var(--soft); font-weight: 600; white-space: nowrap; }
table.facts td { word-break: break-all; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.total { font-weight: 600; }
table.confusion td.num { font-size: 16px; min-width: 70px; text-align: center; }
table.confusion td.hit { background: #e9f6ee; }
table.confusion td.miss { background: var(--wrong-bg); }
.pair { display: flex; flex-wrap: wrap; gap: 28px; align-items: flex-start; }
.pair > div { min-width: 0; }
ul.notes { margin: 4px 0; padding-left: 20px; color: var(--muted); }
.figures { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 14px; }
@media (max-width: 900px) { .figures { grid-template-columns: 1fr; } }
.figures.wide { grid-template-columns: 1fr; }
.figures.wide figure { max-width: 900px; }
figure { margin: 0; }
figure img { max-width: 100%; height: auto; display: block; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 12.5px; margin-top: 4px; }
figure.example { margin: 8px 0 16px; padding-left: 8px; border-left: 4px solid var(--ok); }
figure.example.wrong { border-left-color: var(--ng); }
table.per-image { width: 100%; }
table.per-image td { padding: 2px 8px; }
table.per-image tbody tr:nth-child(even) { background: #fafbfc; }
table.per-image td.ng { color: var(--ng); font-weight: 600; }
table.per-image td.ok { color: var(--ok); font-weight: 600; }
table.per-image tbody tr.wrong { background: var(--wrong-bg); }
table.per-image td.wrong { color: var(--ng); font-weight: 600; }
footer { margin-top: 28px; padding-top: 10px; border-top: 1px solid var(--line); color: var(--muted);
         font-size: 12px; }
@media print {
  body { background: #fff; }
  main { border: 0; margin: 0; padding: 0; max-width: none; }
  section, figure, table { break-inside: avoid; }
  table.per-image { break-inside: auto; }
}
"""
