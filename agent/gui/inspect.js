// Ground2Cloud agent GUI, the inspector's pages: Requests (the recent requests through this
// agent, live over Server-Sent Events, each opening into its headers and captured bodies, with
// replay to the local app) and Traffic (the last hour per service, drawn as plain SVG).
// Loaded before app.js, whose helpers (h, $, api, ms, bytes, state) it uses when called.
'use strict';

const REQ_KEEP = 500;
const req = { rows: [], source: null, open: null };

function statusClass(r) {
  if (r.error || (r.status && r.status >= 500)) return 'bad';
  if (r.status && r.status >= 400) return 'warn';
  return 'good';
}

function clock(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour12: false }) + '.' + String(d.getMilliseconds()).padStart(3, '0');
}

function passes(r, f) {
  if (f.service && r.service !== f.service) return false;
  const cls = r.status ? Math.floor(r.status / 100) : null;
  if (f.status === 'error' && !(r.error || cls === 5)) return false;
  if (/^\dxx$/.test(f.status) && cls !== Number(f.status[0])) return false;
  if (f.q) {
    const q = f.q.toLowerCase();
    const hay = [r.method, r.target, r.request_id, r.error && r.error.code, r.status].join(' ').toLowerCase();
    if (!hay.includes(q)) return false;
  }
  return true;
}

function requestRow(r) {
  const tail = r.error ? r.error.code + ' (' + r.error.who.replace('_', ' ') + ')' : (r.request_id || '');
  return h('tr', { class: 'req-row', 'data-seq': r.seq, tabindex: 0, onclick: () => openRequest(r.seq), onkeydown: (ev) => { if (ev.key === 'Enter') openRequest(r.seq); } },
    h('td', { class: 'mono' }, clock(r.at_ms)),
    h('td', {}, r.service),
    h('td', { class: 'req-method' }, r.method || '—'),
    h('td', { class: 'req-target mono' }, r.target || '(refused before the request was sent)'),
    h('td', { class: 'req-status ' + statusClass(r) }, r.status || '—'),
    h('td', { class: 'num' }, ms(r.duration_us)),
    h('td', { class: 'num' }, bytes(r.bytes_in) + ' / ' + bytes(r.bytes_out)),
    h('td', { class: 'req-tail ' + (r.error ? 'bad' : 'muted') }, tail));
}

function renderRequests(view) {
  const service = h('select', { id: 'req-service' }, h('option', { value: '' }, 'all services'));
  const status = h('select', { id: 'req-status' },
    [['', 'all statuses'], ['2xx', '2xx'], ['3xx', '3xx'], ['4xx', '4xx'], ['5xx', '5xx'], ['error', 'errors']].map(([v, t]) => h('option', { value: v }, t)));
  const text = h('input', { id: 'req-filter', type: 'search', placeholder: 'method, path, status, request id' });
  const live = h('span', { id: 'req-live', class: 'pill' }, 'connecting…');
  const tbody = h('tbody');
  const filter = () => ({ service: service.value, status: status.value, q: text.value.trim() });
  const redraw = () => {
    const f = filter();
    tbody.replaceChildren(...req.rows.filter((r) => passes(r, f)).reverse().map(requestRow));
  };
  [service, status].forEach((el) => el.addEventListener('change', redraw));
  text.addEventListener('input', redraw);
  view.append(h('div', { id: 'req-layout' },
    h('section', { class: 'card' },
      h('h2', {}, 'Requests ', live),
      h('div', { class: 'toolbar' }, service, status, text),
      h('table', { id: 'req-table' },
        h('thead', {}, h('tr', {}, ['Time', 'Service', 'Method', 'Path', 'Status', 'Duration', 'In / out', 'Request ID or error'].map((t) => h('th', {}, t)))),
        tbody)),
    h('section', { id: 'req-detail', class: 'card', hidden: true })));
  api('GET', '/v1/config').then((r) => {
    if (!r.ok) return;
    service.append(...r.data.config.services.filter((s) => s.kind !== 'tcp').map((s) => h('option', { value: s.name }, s.name)));
  });
  req.redraw = redraw;
  api('GET', '/v1/requests?limit=' + REQ_KEEP).then((r) => {
    if (!r.ok) return;
    req.rows = r.data.requests;
    redraw();
    followRequests(r.data.latest, live);
  });
}

function followRequests(after, live) {
  stopFollowing();
  const source = new EventSource('/v1/requests/stream?after=' + after);
  req.source = source;
  source.onopen = () => { live.textContent = 'live'; live.className = 'pill good'; };
  source.onerror = () => { live.textContent = 'reconnecting…'; live.className = 'pill bad'; };
  source.addEventListener('request', (ev) => {
    const r = JSON.parse(ev.data);
    if (req.rows.length && req.rows[req.rows.length - 1].seq >= r.seq) return;
    req.rows.push(r);
    if (req.rows.length > REQ_KEEP) req.rows.shift();
    const tbody = $('#req-table tbody');
    if (!tbody) return;
    const f = {
      service: $('#req-service').value, status: $('#req-status').value, q: $('#req-filter').value.trim(),
    };
    if (!passes(r, f)) return;
    tbody.prepend(requestRow(r));
    while (tbody.childElementCount > REQ_KEEP) tbody.lastElementChild.remove();
  });
}

function stopFollowing() {
  if (req.source) { req.source.close(); req.source = null; }
}

function headerTable(id, headers) {
  return h('table', { id, class: 'headers' }, h('tbody', {}, headers.map((x) =>
    h('tr', {}, h('th', {}, x.name), h('td', { class: 'mono' }, x.value)))));
}

function bodyBlock(id, body) {
  if (!body) return h('p', { class: 'muted' }, 'Body not captured (turn on capture_bodies for the service to keep the first KiB).');
  if (!body.length) return h('p', { id, class: 'muted' }, 'No body.');
  const binary = body.text.includes('\uFFFD');
  return h('div', {},
    h('p', { class: 'muted' }, bytes(body.length) + (body.truncated ? ', first KiB shown' : '') + (binary ? ', not text: base64' : '')),
    h('pre', { id, class: 'body' }, binary ? body.base64 : body.text));
}

function messageBlock(prefix, title, m) {
  if (!m) return h('div', { class: 'half' }, h('h3', {}, title), h('p', { class: 'muted' }, 'none'));
  return h('div', { class: 'half' },
    h('h3', {}, title),
    h('p', { id: prefix + '-line', class: 'mono' }, m.line),
    headerTable(prefix + '-headers', m.headers),
    bodyBlock(prefix + '-body', m.body));
}

async function openRequest(seq) {
  const panel = $('#req-detail');
  const r = await api('GET', '/v1/requests/' + seq);
  if (!panel) return;
  panel.hidden = false;
  document.querySelectorAll('.req-row').forEach((row) => row.classList.toggle('selected', Number(row.dataset.seq) === seq));
  if (!r.ok) { panel.replaceChildren(h('p', { class: 'error' }, errText(r))); return; }
  const d = r.data;
  req.open = d;
  const error = d.error ? h('p', { id: 'req-error', class: 'bad' },
    h('strong', {}, d.error.code), ' — ', d.error.who.replace('_', ' ') + ' failed: ' + d.error.message) : null;
  const replay = h('button', { id: 'replay', type: 'button', disabled: !d.replayable, onclick: () => askReplay(d) }, 'Replay to the local app');
  panel.replaceChildren(...[
    h('h2', {}, (d.method || 'refused') + ' ' + (d.target || '') + ' ', h('span', { class: 'pill ' + statusClass(d) }, d.status || '—')),
    h('p', { class: 'muted' }, d.service + ' · ' + clock(d.at_ms) + ' · ' + ms(d.duration_us) +
      (d.wait_us != null ? ' (answer began after ' + ms(d.wait_us) + ')' : '') + ' · ' + (d.request_id || 'no request id')),
    error,
    h('div', { class: 'toolbar' }, replay,
      d.replayable ? null : h('span', { class: 'muted' }, 'Not replayable: its body was not kept whole.')),
    h('div', { id: 'replay-confirm', class: 'confirm', hidden: true }),
    h('div', { class: 'split' }, messageBlock('req', 'Request', d.request), messageBlock('resp', 'Response', d.response)),
    h('div', { id: 'replay-result' })].filter(Boolean));
  $('#req-layout').classList.add('open');
}

function askReplay(d) {
  if (!d.confirm_replay) { sendReplay(d, false); return; }
  const box = $('#replay-confirm');
  box.hidden = false;
  box.replaceChildren(
    h('p', {}, d.method + ' may change something in the app. Send it again?'),
    h('button', { id: 'replay-confirm-yes', type: 'button', class: 'primary', onclick: () => { box.hidden = true; sendReplay(d, true); } }, 'Send ' + d.method + ' again'),
    ' ',
    h('button', { id: 'replay-confirm-no', type: 'button', onclick: () => { box.hidden = true; } }, 'Cancel'));
}

async function sendReplay(d, confirm) {
  const out = $('#replay-result');
  out.replaceChildren(h('p', { class: 'muted' }, 'Replaying…'));
  const r = await api('POST', '/v1/requests/' + d.seq + '/replay', { confirm });
  if (!r.ok) { out.replaceChildren(h('p', { id: 'replay-error', class: 'error' }, errText(r))); return; }
  const n = r.data.replay;
  const old = d.response;
  out.replaceChildren(...[
    h('h3', {}, 'Replay'),
    n.sent_without.length ? h('p', { id: 'replay-without', class: 'muted' },
      'Sent without what was masked (it was never kept): ' + n.sent_without.join(', ')) : null,
    h('div', { class: 'split' },
      h('div', { class: 'half' },
        h('h3', {}, 'Then'),
        h('p', {}, h('span', { id: 'replay-old-status', class: 'pill ' + statusClass(d) }, d.status || '—'), ' in ', ms(d.duration_us)),
        old ? bodyBlock('replay-old-body', old.body) : null),
      h('div', { class: 'half' },
        h('h3', {}, 'Now'),
        h('p', {}, h('span', { id: 'replay-new-status', class: 'pill ' + statusClass(n) }, n.status), ' in ', ms(n.duration_us)),
        headerTable('replay-headers', n.headers),
        bodyBlock('replay-new-body', n.body)))].filter(Boolean));
}

// --- traffic ----------------------------------------------------------------------------------

const SVG = 'http://www.w3.org/2000/svg';
const W = 760, H = 170, PAD_L = 64, PAD_B = 22, PAD_T = 10;

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

// One chart: lines over the last hour, reconnects as red dashed marks.
function chart(id, title, lines, view, fmt) {
  const span = view.span || 3600;
  const from = view.now - span;
  const x = (t) => PAD_L + ((t - from) / span) * (W - PAD_L - 8);
  const max = Math.max(1e-9, ...lines.flatMap((l) => l.points.map((p) => p[1]))) * 1.1;
  const y = (v) => PAD_T + (1 - v / max) * (H - PAD_T - PAD_B);
  const svg = s('svg', { id, class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title,
    'data-points': lines.reduce((n, l) => n + l.points.length, 0) });
  svg.append(s('line', { x1: PAD_L, y1: y(0), x2: W - 8, y2: y(0), class: 'axis' }));
  svg.append(s('text', { x: PAD_L - 6, y: PAD_T + 8, class: 'tick', 'text-anchor': 'end' }, fmt(max / 1.1)));
  svg.append(s('text', { x: PAD_L - 6, y: y(0), class: 'tick', 'text-anchor': 'end' }, fmt(0)));
  [[from, '-' + span / 60 + ' min'], [from + span / 2, '-' + span / 120 + ' min'], [view.now, 'now']].forEach(([t, label]) =>
    svg.append(s('text', { x: x(t), y: H - 6, class: 'tick', 'text-anchor': 'middle' }, label)));
  for (const t of view.reconnects.filter((t) => t / 1000 >= from)) {
    svg.append(s('line', { x1: x(t / 1000), y1: PAD_T, x2: x(t / 1000), y2: y(0), class: 'mark' },
      s('title', {}, 'tunnel went down at ' + clock(t))));
  }
  lines.forEach((l) => {
    l.points = l.points.filter((p) => p[0] >= from);
    if (!l.points.length) return;
    const pts = l.points.map(([t, v]) => x(t).toFixed(1) + ',' + y(v).toFixed(1)).join(' ');
    svg.append(s('polyline', { points: pts, fill: 'none', stroke: l.color, 'stroke-width': 2, 'data-series': l.name }));
    if (l.points.length < 60) l.points.forEach(([t, v]) => svg.append(s('circle', { cx: x(t), cy: y(v), r: 2.5, fill: l.color })));
  });
  const legend = h('p', { class: 'legend' }, lines.map((l) => {
    const key = h('span', { class: 'key' }, '■ ', l.name);
    key.style.color = l.color;
    return key;
  }));
  return h('div', { class: 'chart-box' }, h('h3', {}, title), svg, legend);
}

// Rates over every bucket of the hour (a bucket without traffic is zero).
function filled(points, view, key) {
  const step = view.bucket_secs;
  const byT = new Map(points.map((p) => [p.t, p[key]]));
  const out = [];
  const span = view.span || 3600;
  for (let t = Math.ceil((view.now - span) / step) * step; t <= view.now; t += step) out.push([t, byT.get(t) || 0]);
  return out;
}

function busiest(services) {
  const total = (pts) => pts.reduce((n, p) => n + p.requests_per_s, 0);
  return Object.keys(services).sort((a, b) => total(services[b]) - total(services[a]))[0];
}

function renderTraffic(view) {
  const service = h('select', { id: 'traffic-service' });
  const range = h('select', { id: 'traffic-range' },
    [[300, 'last 5 min'], [900, 'last 15 min'], [3600, 'last hour']].map(([v, t]) => h('option', { value: v, selected: v === 900 }, t)));
  const charts = h('div', { id: 'charts' });
  view.append(h('section', { class: 'card wide' },
    h('h2', {}, 'Traffic'),
    h('div', { class: 'toolbar' }, service, range, h('span', { class: 'muted' }, '10-second buckets; red marks: the tunnel went down')),
    charts));
  const draw = async () => {
    const r = await api('GET', '/v1/metrics/series');
    if (!r.ok || !$('#charts')) return;
    const v = r.data;
    v.span = Number(range.value);
    state.series = v;
    const names = Object.keys(v.services);
    if (service.options.length !== names.length) {
      const keep = service.value || busiest(v.services);
      service.replaceChildren(...names.map((n) => h('option', { value: n, selected: n === keep }, n)));
    }
    const pts = v.services[service.value] || [];
    const rate = (x) => x.toFixed(x < 10 ? 2 : 0) + '/s';
    const lat = (us) => (us >= 1e6 ? (us / 1e6).toFixed(1) + ' s' : (us / 1000).toFixed(us < 1e4 ? 1 : 0) + ' ms');
    const bps = (b) => bytes(Math.round(b)) + '/s';
    charts.replaceChildren(
      chart('chart-rate', 'Requests and errors per second', [
        { name: 'requests/s', color: '#2156c7', points: filled(pts, v, 'requests_per_s') },
        { name: 'errors/s', color: '#b3261e', points: filled(pts, v, 'errors_per_s') }], v, rate),
      chart('chart-latency', 'Latency, p50 and p99', [
        { name: 'p50', color: '#157f3b', points: pts.map((p) => [p.t, p.p50_us]) },
        { name: 'p99', color: '#8a5a00', points: pts.map((p) => [p.t, p.p99_us]) }], v, lat),
      chart('chart-bytes', 'Bytes per second through the tunnel', [
        { name: 'to the apps', color: '#2156c7', points: v.bytes.map((p) => [p.t, p.in_per_s]) },
        { name: 'from the apps', color: '#157f3b', points: v.bytes.map((p) => [p.t, p.out_per_s]) }], v, bps));
  };
  service.addEventListener('change', draw);
  range.addEventListener('change', draw);
  every(5000, draw);
}
