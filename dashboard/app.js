// The heat-pump dashboard: live values over the WebSocket of pipelines/realtime-fanout.yaml, a
// chart from the history API, and the settings form of the command loop. No framework, no build.
//
// Served by realtime-fanout (port 8090) at /; the APIs are other processes on other ports, called
// cross-origin (their http_server inputs allow this page's origin, `cors` / DASHBOARD_ORIGINS):
//   ?api=<base URL>      the settings API (pipelines/settings-api.yaml), default this host, port 8080
//   ?history=<base URL>  the history API (pipelines/history-api.yaml), default this host, port 8082
//   ?token=<token>       bearer token for the WebSocket when REALTIME_TOKEN is set

const params = new URLSearchParams(location.search);
const base = (name, port) => (params.get(name) ?? `${location.protocol}//${location.hostname}:${port}`).replace(/\/$/, '');
const API = base('api', 8080);
const HISTORY_API = base('history', 8082);
const TOKEN = params.get('token');
const POLL_MS = 2000;
const CONFIRM_TIMEOUT_MS = 60_000;

const $ = (sel) => document.querySelector(sel);
const fmt = (v, digits = 1) => (typeof v === 'number' ? v.toFixed(digits) : '–');
const MODES = ['off', 'heating', 'cooling', 'auto'];

// ---------------------------------------------------------------------------------------------
// Live values

const devices = new Map(); // device id -> last heat-pump payload and when it arrived
let energy = null;

function renderLive() {
  const body = $('#devices tbody');
  const rows = [...devices.entries()].sort(([a], [b]) => a.localeCompare(b));
  $('#live-empty').hidden = rows.length > 0;
  body.replaceChildren(
    ...rows.map(([id, { data, at }]) => {
      const tr = document.createElement('tr');
      tr.dataset.device = id;
      const cells = [id, fmt(data.d0), fmt(data.d1), fmt(data.d5), fmt(data.d6), fmt(data.d8, 0), fmt(data.d9, 0), fmt(data.indoor_target_temp), MODES[data.mode] ?? '–', at.toLocaleTimeString()];
      const names = ['device', 'outdoor', 'room', 'supply', 'return', 'power', 'heat', 'setpoint', 'mode', 'updated'];
      cells.forEach((text, i) => {
        const td = document.createElement('td');
        td.textContent = text;
        td.dataset.field = names[i];
        tr.append(td);
      });
      return tr;
    }),
  );
  if (energy) $('#energy').textContent = `House power ${fmt(energy.data.active_power_total, 0)} W (meter ${energy.device}, ${energy.at.toLocaleTimeString()})`;
  for (const sel of ['#history-device', '#settings-device']) fillDevices($(sel));
}

function fillDevices(select) {
  const have = new Set([...select.options].map((o) => o.value));
  for (const id of [...devices.keys()].sort()) {
    if (have.has(id)) continue;
    select.append(new Option(id, id));
    if (select.options.length === 1) select.dispatchEvent(new Event('change'));
  }
}

/** The newest heat-pump message of each device from the last hour (same origin), before the WebSocket has any. */
async function loadRecent() {
  try {
    const res = await fetch(new URL('/api/v1/heatpump/realtime/last-hour?topic=heatpump-realtime', location.href));
    if (!res.ok) return;
    const { messages = [] } = await res.json();
    for (const m of messages) {
      const id = m.data?.device_id;
      if (!id) continue;
      const at = new Date(m.time);
      if (!devices.has(id) || devices.get(id).at <= at) devices.set(id, { data: m.data, at });
    }
    scheduleRender();
  } catch {
    // live values come over the WebSocket anyway
  }
}

function connect(attempt = 0) {
  const url = new URL('/ws', location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  if (TOKEN) url.searchParams.set('token', TOKEN);
  const ws = new WebSocket(url);
  const status = $('#connection');
  ws.onopen = () => {
    attempt = 0;
    status.dataset.state = 'live';
    status.textContent = 'live';
  };
  ws.onmessage = (ev) => {
    const frame = JSON.parse(ev.data);
    if (frame.type !== 'message') return;
    if (frame.topic === 'heatpump-realtime' && frame.data?.device_id) {
      devices.set(frame.data.device_id, { data: frame.data, at: new Date() });
    } else if (frame.topic === 'energy-realtime') {
      energy = { data: frame.data, device: frame.device, at: new Date() };
    }
    scheduleRender();
  };
  ws.onclose = (ev) => {
    status.dataset.state = 'down';
    status.textContent = ev.code === 1008 ? `refused: ${ev.reason}` : 'reconnecting…';
    setTimeout(() => connect(attempt + 1), Math.min(30_000, 500 * 2 ** attempt));
  };
}

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    renderLive();
  });
}

// ---------------------------------------------------------------------------------------------
// History chart

const SERIES = [
  ['outdoor_temp', 'l-outdoor'],
  ['supply_temp', 'l-supply'],
  ['return_temp', 'l-return'],
  ['indoor_temp', 'l-room'],
];

async function loadHistory() {
  const device = $('#history-device').value;
  if (!device) return;
  const hours = Number($('#hours').value);
  const end = new Date();
  const start = new Date(end.getTime() - hours * 3600_000);
  const bucket = hours <= 1 ? '1m' : hours <= 6 ? '5m' : '15m';
  const q = new URLSearchParams({ device_id: device, start: start.toISOString(), end: end.toISOString(), bucket });
  const status = $('#history-status');
  try {
    const res = await fetch(`${HISTORY_API}/api/v1/heatpump/history?${q}`);
    const body = await res.json();
    if (!res.ok) throw new Error(body.problems?.join('; ') ?? body.error ?? res.statusText);
    drawChart(body.points ?? [], start, end);
    status.textContent = `${(body.points ?? []).length} points, ${bucket} buckets (${body.source})`;
  } catch (err) {
    status.textContent = `history unavailable: ${err.message}`;
  }
}

function drawChart(points, start, end) {
  const svg = $('#chart');
  const W = 800, H = 260, P = 30;
  const values = points.flatMap((p) => SERIES.map(([k]) => p[k]).filter((v) => typeof v === 'number'));
  const lo = values.length ? Math.floor(Math.min(...values) - 1) : 0;
  const hi = values.length ? Math.ceil(Math.max(...values) + 1) : 40;
  const x = (t) => P + Math.max(0, (new Date(t) - start) / (end - start)) * (W - 2 * P); // a first bucket may begin before start
  const y = (v) => H - P - ((v - lo) / (hi - lo || 1)) * (H - 2 * P);
  const ns = 'http://www.w3.org/2000/svg';
  const el = (name, attrs) => {
    const e = document.createElementNS(ns, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    return e;
  };
  const children = [el('line', { x1: P, y1: H - P, x2: W - P, y2: H - P, class: 'axis' }), el('line', { x1: P, y1: P, x2: P, y2: H - P, class: 'axis' })];
  for (const v of [lo, (lo + hi) / 2, hi]) {
    const t = el('text', { x: 2, y: y(v) + 4, class: 'tick' });
    t.textContent = v.toFixed(0);
    children.push(t);
  }
  for (const [t, anchor] of [[start, 'start'], [end, 'end']]) {
    const label = el('text', { x: x(t), y: H - 8, class: 'tick', 'text-anchor': anchor });
    label.textContent = t.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    children.push(label);
  }
  for (const [key, cls] of SERIES) {
    const pts = points.filter((p) => typeof p[key] === 'number').map((p) => `${x(p.time).toFixed(1)},${y(p[key]).toFixed(1)}`);
    if (pts.length) children.push(el('polyline', { points: pts.join(' '), class: `series ${cls}` }));
  }
  svg.replaceChildren(...children);
}

// ---------------------------------------------------------------------------------------------
// Settings form: the same rules as the API (its OpenAPI document), then PATCH and follow the command

let patchSchema = null;

async function loadSchema() {
  try {
    const doc = await (await fetch(`${API}/api/v1/openapi.json`)).json();
    const op = doc.paths?.['/api/v1/heatpump/settings/{device_id}']?.patch;
    patchSchema = op?.requestBody?.content?.['application/json']?.schema ?? null;
    if (patchSchema?.$ref) patchSchema = resolveRef(doc, patchSchema.$ref);
  } catch {
    patchSchema = null; // the API answers with every problem anyway
  }
  // Where the form's rules come from: the API's document, or none (the API checks alone).
  $('#settings-form').dataset.rules = patchSchema ? 'api' : 'none';
}

function resolveRef(doc, ref) {
  return ref.replace(/^#\//, '').split('/').reduce((o, k) => o?.[k], doc);
}

/** Every problem of `body` against the schema's properties (type, range, step, unknown fields). */
function validate(body, schema) {
  if (!schema) return [];
  const problems = [];
  const props = schema.properties ?? {};
  if (schema.additionalProperties === false) for (const k of Object.keys(body)) if (!props[k]) problems.push(`${k} is not a settable field`);
  if (schema.minProperties && Object.keys(body).length < schema.minProperties) problems.push('change at least one field');
  for (const [k, v] of Object.entries(body)) {
    const s = props[k];
    if (!s) continue;
    if (s.type === 'boolean' && typeof v !== 'boolean') problems.push(`${k} must be true or false`);
    if (s.type === 'number' || s.type === 'integer') {
      if (typeof v !== 'number' || Number.isNaN(v)) { problems.push(`${k} must be a number`); continue; }
      if (s.type === 'integer' && !Number.isInteger(v)) problems.push(`${k} must be a whole number`);
      if (s.minimum !== undefined && v < s.minimum) problems.push(`${k} must be at least ${s.minimum}`);
      if (s.maximum !== undefined && v > s.maximum) problems.push(`${k} must be at most ${s.maximum}`);
      if (s.multipleOf && Math.abs(v / s.multipleOf - Math.round(v / s.multipleOf)) > 1e-9) problems.push(`${k} must be a multiple of ${s.multipleOf}`);
    }
  }
  return problems;
}

let current = null; // the device's settings as last read

async function loadSettings() {
  const device = $('#settings-device').value;
  if (!device) return;
  const res = await fetch(`${API}/api/v1/heatpump/settings/${encodeURIComponent(device)}`).catch(() => null);
  if (!res?.ok) return showStatus('idle', res ? `settings of ${device}: ${res.status}` : 'the settings API does not answer');
  current = await res.json();
  const form = $('#settings-form');
  for (const el of form.elements) {
    if (!el.name || current[el.name] === undefined || current[el.name] === null) continue;
    if (el.type === 'checkbox') el.checked = Boolean(current[el.name]);
    else el.value = String(current[el.name]);
  }
}

/** The fields the user changed, typed as the API wants them. */
function changes() {
  const body = {};
  for (const el of $('#settings-form').elements) {
    if (!el.name) continue;
    const v = el.type === 'checkbox' ? el.checked : el.value === '' ? undefined : Number(el.value);
    if (v === undefined) continue;
    if (current && current[el.name] !== undefined && current[el.name] !== null && Number(current[el.name]) === Number(v) && el.type !== 'checkbox') continue;
    if (current && el.type === 'checkbox' && Boolean(current[el.name]) === v) continue;
    body[el.name] = v;
  }
  return body;
}

function showErrors(list) {
  $('#errors').replaceChildren(...list.map((t) => Object.assign(document.createElement('li'), { textContent: t })));
}

function showStatus(state, text) {
  const s = $('#command-status');
  s.dataset.state = state;
  s.textContent = text;
}

async function save(ev) {
  ev.preventDefault();
  const device = $('#settings-device').value;
  const body = changes();
  const problems = validate(body, patchSchema);
  showErrors(problems);
  if (problems.length) return showStatus('invalid', 'Not saved: fix the fields above.');
  if (!Object.keys(body).length) return showStatus('idle', 'Nothing changed.');
  $('#save').disabled = true;
  try {
    const res = await fetch(`${API}/api/v1/heatpump/settings/${encodeURIComponent(device)}`, { method: 'PATCH', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const answer = await res.json().catch(() => ({}));
    if (res.status !== 202) {
      showErrors(answer.problems ?? answer.errors ?? [answer.error ?? `HTTP ${res.status}`]);
      return showStatus('failed', `Rejected by the API (${res.status}).`);
    }
    showStatus('sending', 'Sending to heatpump…');
    const outcome = await follow(answer.outbox_id);
    if (outcome.status === 'confirmed') {
      showStatus('updated', 'Settings updated: the heat pump confirmed them.');
      current = { ...current, ...body };
    } else if (outcome.status === 'timeout') showStatus('timeout', 'No confirmation from the heat pump within 60 s.');
    else if (outcome.status === 'superseded') showStatus('failed', 'Replaced by a newer change before it was sent.');
    else showStatus('failed', `Failed: ${outcome.status}${outcome.error_message ? `: ${outcome.error_message}` : ''}`);
  } catch (err) {
    showStatus('failed', `Failed: ${err.message}`);
  } finally {
    $('#save').disabled = false;
  }
}

/** Poll the outbox row every 2 s until it is confirmed, failed, or 60 s passed. */
async function follow(id) {
  const deadline = Date.now() + CONFIRM_TIMEOUT_MS;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, POLL_MS));
    const res = await fetch(`${API}/api/v1/heatpump/settings/outbox/${encodeURIComponent(id)}`).catch(() => null);
    if (!res?.ok) continue;
    const row = await res.json();
    if (['confirmed', 'failed', 'timed_out', 'superseded'].includes(row.status)) return row;
    if (row.status === 'published') showStatus('sending', 'Sending to heatpump… (sent, waiting for its confirmation)');
  }
  return { status: 'timeout' };
}

// ---------------------------------------------------------------------------------------------

$('#history-device').addEventListener('change', loadHistory);
$('#hours').addEventListener('change', loadHistory);
$('#settings-device').addEventListener('change', loadSettings);
$('#settings-form').addEventListener('submit', save);
setInterval(loadHistory, 60_000);
loadSchema();
loadRecent();
connect();
