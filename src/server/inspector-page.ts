/**
 * The inspector's page (GET /inspector): markup and style only; its script is /inspector.js (src/inspector/, bundled),
 * which imports the client from /client.js. Served with a Content-Security-Policy that allows nothing but this
 * server: no inline script, no other origin.
 */

export const INSPECTOR_CSP =
  "default-src 'none'; script-src 'self'; connect-src 'self' ws: wss:; style-src 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

export const INSPECTOR_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>commy inspector</title>
<link rel="icon" href="data:,">
<style>
  :root { color-scheme: light dark; --fg: #1d2330; --muted: #6b7385; --line: #d9dde5; --bg: #fff; --panel: #f5f7fa; --accent: #2f6fde; --bad: #c0392b; }
  @media (prefers-color-scheme: dark) { :root { --fg: #e3e7ee; --muted: #98a1b3; --line: #333a47; --bg: #14171d; --panel: #1b1f27; --accent: #6b9bff; --bad: #ff7b6b; } }
  * { box-sizing: border-box; }
  [hidden] { display: none !important; }
  body { margin: 0; font: 14px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
  header { display: flex; align-items: baseline; gap: 1rem; padding: .75rem 1.25rem; border-bottom: 1px solid var(--line); }
  header h1 { font-size: 1.05rem; margin: 0; }
  header .tenant { color: var(--muted); }
  main, #signin { padding: 1rem 1.25rem; }
  #signin { max-width: 22rem; display: grid; gap: .6rem; }
  #signin label { display: grid; gap: .2rem; color: var(--muted); }
  input { font: inherit; padding: .3rem .45rem; border: 1px solid var(--line); border-radius: 4px; background: var(--bg); color: var(--fg); }
  button { font: inherit; padding: .35rem .8rem; border: 0; border-radius: 4px; background: var(--accent); color: #fff; cursor: pointer; }
  .error { color: var(--bad); min-height: 1.2em; }
  .layout { display: grid; grid-template-columns: 1fr 18rem; gap: 1.25rem; align-items: start; }
  @media (max-width: 900px) { .layout { grid-template-columns: 1fr; } }
  #traffic { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: .75rem 1rem; }
  #traffic h2 { font-size: .9rem; margin: 0 0 .5rem; }
  #traffic dl { display: grid; grid-template-columns: 1fr auto; gap: .2rem .75rem; margin: 0; }
  #traffic dt { color: var(--muted); } #traffic dd { margin: 0; text-align: right; font-variant-numeric: tabular-nums; }
  details { border: 1px solid var(--line); border-radius: 6px; margin-bottom: .75rem; background: var(--panel); }
  summary { cursor: pointer; padding: .5rem .75rem; display: flex; gap: .75rem; align-items: baseline; }
  .service-name { font-weight: 600; } .badge, .status { color: var(--muted); font-size: .85em; }
  table { width: 100%; border-collapse: collapse; background: var(--bg); }
  /* A service with many variables (service-view.ts): fixed layout, the columns' widths from the header, so that a
     changed cell never makes the browser measure every row again (with 5,000 rows and one changing at every
     frame, the automatic layout held the page for seconds at a time). */
  details { overflow-x: auto; }
  table.many { table-layout: fixed; min-width: 56rem; }
  table.many td { overflow-wrap: anywhere; }
  table.many th:nth-child(1) { width: 14%; } table.many th:nth-child(2) { width: 4rem; } table.many th:nth-child(4) { width: calc(120px + 1.2rem); }
  table.many th:nth-child(5) { width: 4.5rem; } table.many th:nth-child(6) { width: 5.5rem; } table.many th:nth-child(7) { width: 7rem; }
  table.many th:nth-child(8) { width: 10rem; } table.many th:nth-child(8):empty { width: 0; padding: 0; }
  th, td { text-align: left; padding: .3rem .6rem; border-top: 1px solid var(--line); vertical-align: middle; }
  th { font-weight: 500; color: var(--muted); font-size: .85em; }
  td.value { font-family: ui-monospace, monospace; max-width: 28rem; overflow-wrap: anywhere; white-space: pre-line; }
  td.num { font-variant-numeric: tabular-nums; } td.type, td.when { color: var(--muted); white-space: nowrap; }
  #traffic dt { white-space: nowrap; }
  td.spark polyline { fill: none; stroke: var(--accent); stroke-width: 1.5; }
  td input { width: 9rem; } .note { margin-left: .4rem; color: var(--muted); font-size: .85em; }
</style>
</head>
<body>
<header><h1>commy inspector</h1><span class="tenant" id="tenant-name"></span></header>
<form id="signin" autocomplete="off">
  <label>Tenant <input name="tenant" required autocomplete="off"></label>
  <label>Key <input name="key" type="password" required autocomplete="off" placeholder="id:secret"></label>
  <button type="submit">Sign in</button>
  <div class="error" id="signin-error" role="alert"></div>
</form>
<main id="main" hidden>
  <div class="layout">
    <section><div class="error" id="services-error"></div><div id="services"></div></section>
    <aside id="traffic" data-panel="traffic"><h2>Server</h2><div id="traffic-figures">loading…</div></aside>
  </div>
</main>
<script type="module" src="/inspector.js"></script>
</body>
</html>
`;
