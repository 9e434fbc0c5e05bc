// The admin page: audit search and one subject's usage over time, read from the admin API
// with the bearer token the user gives (kept in this tab's sessionStorage only). Read-only.
// Everything shown is inserted as text, never as HTML: audit rows hold what callers sent.

const $ = (sel) => document.querySelector(sel);
const svgNs = 'http://www.w3.org/2000/svg';
let cursor = null;

function token() {
  return sessionStorage.getItem('nox-token') ?? '';
}

async function api(path, query) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query))
    if (v !== '' && v !== undefined && v !== null) url.searchParams.set(k, v);
  const res = await fetch(url, { headers: { authorization: `Bearer ${token()}` } });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(`${res.status} ${body.error ?? ''}: ${body.message ?? res.statusText}`);
  return body;
}

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** datetime-local (the browser's zone) ↔ ISO 8601 (UTC) */
const toIso = (local) => (local ? new Date(local).toISOString() : undefined);
function toLocal(iso) {
  const d = new Date(iso);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60_000).toISOString().slice(0, 19);
}

/**
 * The form's filters as the API takes them. The page's URL carries them too (never the
 * token), so a search can be shared as a link; from defaults to an hour ago.
 */
function filters() {
  const f = Object.fromEntries([...new FormData($('#filters'))].filter(([, v]) => v !== ''));
  const to = toIso(f.to);
  const from = toIso(f.from) ?? new Date((to ? Date.parse(to) : Date.now()) - HOUR).toISOString();
  const out = { ...f, from, ...(to ? { to } : {}) };
  history.replaceState(null, '', `?${new URLSearchParams(out)}`);
  return out;
}

function fillForm() {
  const q = new URLSearchParams(location.search);
  for (const el of $('#filters').elements) {
    const v = q.get(el.name);
    if (!el.name || v === null) continue;
    el.value = el.type === 'datetime-local' ? toLocal(v) : v;
  }
}

function showError(e) {
  $('#error').hidden = !e;
  $('#error').textContent = e ? String(e.message ?? e) : '';
}

function cell(tr, text) {
  const td = document.createElement('td');
  td.textContent = text ?? '';
  tr.append(td);
}

function addRows(items) {
  const body = $('#decisions tbody');
  for (const d of items) {
    const tr = document.createElement('tr');
    tr.className = d.decision;
    cell(tr, new Date(d.occurred_at).toLocaleString());
    cell(tr, d.decision);
    cell(tr, d.code);
    cell(tr, `${d.method} ${d.host}${d.path}`);
    cell(tr, d.subject ?? 'anonymous');
    cell(tr, d.policy ? `${d.policy} · ${d.rule ?? ''}` : '');
    cell(tr, d.quota_tier ?? '');
    body.append(tr);
  }
}

async function search(more) {
  showError(null);
  const f = filters();
  if (!more) {
    $('#decisions tbody').replaceChildren();
    cursor = null;
  }
  try {
    const page = await api('/v1/audit/decisions', { ...f, limit: 100, cursor: more ? cursor : undefined });
    addRows(page.items);
    cursor = page.nextCursor;
    $('#more').hidden = !cursor;
    $('#served-by').textContent = `served by the ${page.servedBy}`;
    if (f.subject) await usage(f);
    else $('#usage').hidden = true;
  } catch (e) {
    showError(e);
  }
}

/** Decisions of one subject per time bucket, allowed and denied stacked, as an SVG bar chart. */
async function usage(f) {
  const span = (f.to ? Date.parse(f.to) : Date.now()) - Date.parse(f.from);
  const bucket = span <= 2 * HOUR ? 'minute' : span <= 2 * DAY ? 'hour' : 'day';
  const { buckets } = await api('/v1/audit/stats', { from: f.from, to: f.to, subject: f.subject, bucket });
  const per = new Map();
  for (const b of buckets) {
    const v = per.get(b.start) ?? { allow: 0, deny: 0 };
    v[b.decision] += b.count;
    per.set(b.start, v);
  }
  const starts = [...per.keys()].sort();
  const max = Math.max(1, ...[...per.values()].map((v) => v.allow + v.deny));
  const W = 800;
  const H = 200;
  const barW = Math.max(2, Math.floor((W - 40) / Math.max(1, starts.length)) - 2);
  const svg = document.createElementNS(svgNs, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H + 20}`);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', `decisions of ${f.subject} per ${bucket}`);
  const rect = (x, y, h, cls, title) => {
    const r = document.createElementNS(svgNs, 'rect');
    for (const [k, v] of Object.entries({ x, y, width: barW, height: h, class: cls })) r.setAttribute(k, v);
    const t = document.createElementNS(svgNs, 'title');
    t.textContent = title;
    r.append(t);
    svg.append(r);
  };
  starts.forEach((s, i) => {
    const v = per.get(s);
    const x = 40 + i * (barW + 2);
    const hAllow = (v.allow / max) * H;
    const hDeny = (v.deny / max) * H;
    rect(x, H - hAllow, hAllow, 'allow', `${s}: ${v.allow} allowed`);
    rect(x, H - hAllow - hDeny, hDeny, 'deny', `${s}: ${v.deny} denied`);
  });
  const label = (x, y, text) => {
    const t = document.createElementNS(svgNs, 'text');
    t.setAttribute('x', x);
    t.setAttribute('y', y);
    t.textContent = text;
    svg.append(t);
  };
  label(0, 10, String(max));
  label(0, H, '0');
  if (starts.length) {
    label(40, H + 15, new Date(starts[0]).toLocaleString());
    label(W - 160, H + 15, new Date(starts.at(-1)).toLocaleString());
  }
  $('#usage-subject').textContent = f.subject;
  $('#chart').replaceChildren(svg);
  $('#usage').hidden = false;
}

$('#token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  sessionStorage.setItem('nox-token', $('#token').value.trim());
  $('#token').value = '';
  $('#who').textContent = 'token set';
  search(false);
});
$('#filters').addEventListener('submit', (e) => {
  e.preventDefault();
  search(false);
});
$('#more').addEventListener('click', () => search(true));
fillForm();
if (token()) {
  $('#who').textContent = 'token set';
  search(false);
}
