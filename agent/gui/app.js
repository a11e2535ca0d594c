// Ground2Cloud agent GUI: status, logs, configuration and operations of the local agent.
// Plain browser JavaScript (no framework, no build step, no CDN), served from the agent binary.
// It talks only to the agent's JSON API on the same origin; state changes carry the CSRF token.
'use strict';

const state = { csrf: null, view: 'status', timers: [], config: null, status: null };

// --- small helpers ----------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function $(sel) { return document.querySelector(sel); }

async function api(method, path, body) {
  const headers = {};
  if (method !== 'GET') headers['X-CSRF-Token'] = state.csrf || '';
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let resp;
  try {
    resp = await fetch(path, {
      method, headers, credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    return { ok: false, status: 0, data: { error: { code: 'offline', message: 'the agent does not answer' } } };
  }
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  if (resp.status === 401 && path !== '/v1/login') {
    renderLogin('Your session ended; log in again.');
  }
  return { ok: resp.ok, status: resp.status, data };
}

function errText(r) {
  const e = r.data && r.data.error;
  return e ? (e.field ? e.field + ': ' : '') + e.message : 'HTTP ' + r.status;
}

function every(ms, fn) {
  fn();
  state.timers.push(setInterval(fn, ms));
}

function stopTimers() {
  state.timers.forEach(clearInterval);
  state.timers = [];
  stopFollowing();
}

function ago(unix) {
  const s = Math.max(0, Math.floor(Date.now() / 1000) - unix);
  if (s < 60) return s + ' s';
  if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
  return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
}

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + ' ' + units[i];
}

function ms(us) { return (us / 1000).toFixed(1) + ' ms'; }

// --- login ------------------------------------------------------------------------------------

function renderLogin(message) {
  stopTimers();
  state.csrf = null;
  const secret = h('input', { id: 'secret', type: 'password', autocomplete: 'current-password', placeholder: 'GUI secret', autofocus: true });
  const error = h('p', { id: 'login-error', class: 'error', role: 'alert' }, message || '');
  const submit = async (ev) => {
    ev.preventDefault();
    const r = await api('POST', '/v1/login', { secret: secret.value.trim() });
    if (r.ok) { state.csrf = r.data.csrf; renderShell(); }
    else error.textContent = r.status === 401 ? 'Wrong secret.' : errText(r);
  };
  $('#app').replaceChildren(h('div', { class: 'login' },
    h('h1', {}, 'Ground2Cloud Agent'),
    h('form', { onsubmit: submit },
      h('label', { for: 'secret' }, 'Login secret'),
      secret,
      h('button', { id: 'login', type: 'submit' }, 'Log in'),
      error,
      h('p', { class: 'hint' }, 'Show it on this machine with: ', h('code', {}, 'g2c-agent gui --show-secret')))));
  secret.focus();
}

// --- page shell -------------------------------------------------------------------------------

const VIEWS = { status: renderStatus, requests: renderRequests, traffic: renderTraffic, logs: renderLogs, config: renderConfig, ops: renderOps };
const TITLES = { status: 'Status', requests: 'Requests', traffic: 'Traffic', logs: 'Logs', config: 'Configuration', ops: 'Operations' };

function renderShell() {
  const nav = h('nav', {}, Object.keys(VIEWS).map((v) =>
    h('a', { href: '#' + v, id: 'nav-' + v, 'data-view': v }, TITLES[v])));
  $('#app').replaceChildren(
    h('header', {},
      h('h1', {}, 'Ground2Cloud Agent'),
      h('span', { id: 'conn-pill', class: 'pill' }, '…'),
      nav,
      h('button', { id: 'logout', class: 'link', onclick: logout }, 'Log out')),
    h('main', { id: 'view' }));
  const view = (location.hash || '#status').slice(1);
  showView(VIEWS[view] ? view : 'status');
}

async function refreshPill() {
  const r = await api('GET', '/v1/status');
  const pill = $('#conn-pill');
  if (!pill) return;
  if (!r.ok) { pill.textContent = r.status === 0 ? 'agent not answering' : '?'; pill.className = 'pill bad'; return; }
  pill.textContent = r.data.connected ? 'connected' : 'disconnected';
  pill.className = 'pill ' + (r.data.connected ? 'good' : 'bad');
}

async function logout() {
  await api('POST', '/v1/logout');
  renderLogin('Logged out.');
}

function showView(name) {
  stopTimers();
  state.view = name;
  document.querySelectorAll('nav a').forEach((a) => a.classList.toggle('active', a.dataset.view === name));
  document.title = TITLES[name] + ' · Ground2Cloud Agent';
  const view = $('#view');
  view.replaceChildren();
  VIEWS[name](view);
  if ($('#conn-pill')) every(2000, refreshPill);
}

window.addEventListener('hashchange', () => {
  const view = location.hash.slice(1);
  if (state.csrf !== null && VIEWS[view] && $('#view')) showView(view);
});

// --- status -----------------------------------------------------------------------------------

function renderStatus(view) {
  const field = (id, label) => [h('dt', {}, label), h('dd', { id }, '…')];
  view.append(
    h('section', { class: 'card' },
      h('h2', {}, 'Tunnel'),
      h('p', { class: 'big' }, h('span', { id: 'tunnel-state' }, '…')),
      h('p', { id: 'tunnel-reason', class: 'muted' }),
      h('dl', {},
        field('st-gateway', 'Gateway'),
        field('st-registration', 'Registration ID'),
        field('st-since', 'Connected since'),
        field('st-reconnects', 'Reconnects'),
        field('st-last-error', 'Last error'),
        field('st-rtt', 'Control round trip'),
        field('st-streams', 'Active streams'),
        field('st-bytes', 'Bytes in / out'),
        field('st-version', 'Agent'))),
    h('section', { class: 'card' },
      h('h2', {}, 'Local services'),
      h('table', { id: 'st-services' },
        h('thead', {}, h('tr', {}, ['Service', 'Kind', 'Local address', 'Probe', 'Last test', ''].map((t) => h('th', {}, t)))),
        h('tbody'))));
  api('GET', '/v1/config').then((r) => { if (r.ok) state.config = r.data.config; });
  every(1000, refreshStatus);
}

async function refreshStatus() {
  const r = await api('GET', '/v1/status');
  if (!r.ok || !$('#tunnel-state')) return;
  const s = r.data;
  state.status = s;
  const set = (id, text) => { const el = $('#' + id); if (el) el.textContent = text; };
  $('#tunnel-state').textContent = s.connected ? 'connected' : 'disconnected';
  $('#tunnel-state').className = s.connected ? 'good' : 'bad';
  set('tunnel-reason', s.connected ? '' : (s.last_error ? 'Why: ' + s.last_error : 'Connecting…'));
  set('st-gateway', s.gateway);
  set('st-registration', s.registration_id);
  set('st-since', s.connected_since ? new Date(s.connected_since * 1000).toLocaleString() + ' (' + ago(s.connected_since) + ')' : '—');
  set('st-reconnects', s.reconnects);
  set('st-last-error', s.last_error || 'none');
  set('st-rtt', s.rtt_us != null ? ms(s.rtt_us) : '—');
  set('st-streams', s.active_streams);
  set('st-bytes', bytes(s.bytes_in) + ' / ' + bytes(s.bytes_out));
  set('st-version', 'version ' + s.version + ', pid ' + s.pid);
  const services = (state.config && state.config.services) || s.services.map((p) => ({ name: p.name }));
  const rows = services.map((svc) => {
    const probe = s.services.find((p) => p.name === svc.name);
    const test = (s.tests || []).find((t) => t.name === svc.name);
    return h('tr', { 'data-service': svc.name },
      h('td', {}, svc.name),
      h('td', {}, svc.kind || ''),
      h('td', {}, svc.local || ''),
      h('td', { class: probe ? (probe.healthy ? 'good' : 'bad') : 'muted' },
        probe ? (probe.healthy ? 'up (TCP connect, ' + ms(probe.latency_us) + ')' : 'DOWN (TCP connect failed)') : 'not probed'),
      h('td', { class: test ? (test.healthy ? 'good' : 'bad') : 'muted' },
        test ? test.detail + ' in ' + ms(test.latency_us) : '—'),
      h('td', {}, h('button', { type: 'button', class: 'small', onclick: () => api('POST', '/v1/services/' + encodeURIComponent(svc.name) + '/test').then(refreshStatus) }, 'Test')));
  });
  $('#st-services tbody').replaceChildren(...rows);
}

// --- logs -------------------------------------------------------------------------------------

function renderLogs(view) {
  const file = h('select', { id: 'log-file' }, h('option', { value: 'agent.log' }, 'agent.log'));
  const level = h('select', { id: 'log-level' },
    ['', 'ERROR', 'WARN', 'INFO', 'DEBUG'].map((l) => h('option', { value: l }, l || 'all levels')));
  const filter = h('input', { id: 'log-filter', type: 'search', placeholder: 'filter text' });
  const follow = h('input', { id: 'log-follow', type: 'checkbox', checked: true });
  const lines = h('div', { id: 'log-lines', class: 'log', role: 'log', 'aria-live': 'polite' });
  const log = { offset: null };
  const reload = () => { log.offset = null; lines.replaceChildren(); poll(); };
  const poll = async () => {
    const q = new URLSearchParams({ file: file.value, level: level.value, q: filter.value });
    if (log.offset !== null) q.set('after', log.offset);
    const r = await api('GET', '/v1/logs?' + q);
    if (!r.ok) return;
    if (r.data.reset) lines.replaceChildren();
    log.offset = r.data.offset;
    const atBottom = lines.scrollTop + lines.clientHeight >= lines.scrollHeight - 4;
    lines.append(...r.data.lines.map((l) => h('div', { class: 'line lvl-' + (l.level || 'cont').toLowerCase() }, l.text)));
    while (lines.childElementCount > 5000) lines.firstElementChild.remove();
    if (atBottom || log.offset === null) lines.scrollTop = lines.scrollHeight;
  };
  let debounce = null;
  file.addEventListener('change', reload);
  level.addEventListener('change', reload);
  filter.addEventListener('input', () => { clearTimeout(debounce); debounce = setTimeout(reload, 250); });
  view.append(h('section', { class: 'card wide' },
    h('h2', {}, 'Logs'),
    h('div', { class: 'toolbar' }, file, level, filter, h('label', {}, follow, ' follow')),
    lines));
  api('GET', '/v1/logs/files').then((r) => {
    if (!r.ok) return;
    file.replaceChildren(...r.data.files.map((f) => h('option', { value: f.name }, f.name + ' (' + bytes(f.size) + ')')));
    if (!r.data.files.length) file.append(h('option', { value: 'agent.log' }, 'agent.log'));
  });
  poll();
  state.timers.push(setInterval(() => { if (follow.checked) poll(); }, 1000));
}

// --- configuration ----------------------------------------------------------------------------

function input(field, value, attrs) {
  return h('input', Object.assign({ 'data-field': field, value: value === null || value === undefined ? '' : value }, attrs || {}));
}

function labelled(label, control, field) {
  return h('div', { class: 'field' }, h('label', {}, label, control), h('span', { class: 'field-error', 'data-error-for': field }));
}

function splitLocal(local) {
  const i = (local || '').lastIndexOf(':');
  return i < 0 ? [local || '', ''] : [local.slice(0, i), local.slice(i + 1)];
}

// Settings the form shows but does not edit (TLS to the origin, the probe): kept as they are
// when the form is saved, so editing an address never drops a CA file or a health check.
const FORM_FIELDS = ['name', 'kind', 'local', 'health_check'];

function serviceExtras(svc) {
  return Object.fromEntries(Object.entries(svc).filter(([k]) => !FORM_FIELDS.includes(k)));
}

function describeExtras(svc) {
  const parts = [];
  if ((svc.local || '').startsWith('https://')) parts.push('HTTPS');
  if (svc.ca_file) parts.push('CA ' + svc.ca_file);
  if (svc.server_name) parts.push('name ' + svc.server_name);
  if (svc.tls_skip_verify) parts.push('NOT VERIFIED');
  if (svc.http2) parts.push('HTTP/2');
  if (svc.health) parts.push('probe ' + svc.health.probe + (svc.health.path ? ' ' + svc.health.path : ''));
  return parts.join(' · ') || '-';
}

function serviceRow(svc, i) {
  const [host, port] = splitLocal(svc.local);
  const health = svc.health_check === true ? 'on' : svc.health_check === false ? 'off' : '';
  const row = h('tr', { class: 'service-row' },
    h('td', {}, input(`services[${i}].name`, svc.name, { class: 'svc-name', 'aria-label': 'name' })),
    h('td', {}, h('select', { class: 'svc-kind', 'aria-label': 'kind' },
      ['http', 'tcp'].map((k) => h('option', { value: k, selected: svc.kind === k }, k)))),
    h('td', {}, input(`services[${i}].local`, host, { class: 'svc-host', 'aria-label': 'host' })),
    h('td', {}, input(`services[${i}].local`, port, { class: 'svc-port', inputmode: 'numeric', 'aria-label': 'port' })),
    h('td', {}, h('select', { class: 'svc-health', 'aria-label': 'health check' },
      [['', 'default'], ['on', 'on'], ['off', 'off']].map(([v, t]) => h('option', { value: v, selected: health === v }, t)))),
    h('td', { class: 'svc-extras muted', title: 'set in agent.toml' }, describeExtras(svc)),
    h('td', {}, h('button', { type: 'button', class: 'link svc-remove', onclick: (ev) => ev.target.closest('tr').remove() }, 'remove')),
    h('td', { class: 'field-error', 'data-error-for': `services[${i}].local` }));
  row.extras = serviceExtras(svc);
  return row;
}

async function renderConfig(view) {
  const r = await api('GET', '/v1/config');
  if (!r.ok) { view.append(h('p', { class: 'error' }, errText(r))); return; }
  const c = r.data.config;
  state.config = c;
  const g = c.gateway, rc = c.reconnect, lg = c.log || {}, la = c.local_api || {};
  const tbody = h('tbody', {}, c.services.map(serviceRow));
  const add = () => tbody.append(serviceRow({ name: '', kind: 'http', local: '127.0.0.1:' }, tbody.children.length));
  view.append(h('form', { id: 'config-form', class: 'card wide', onsubmit: (ev) => { ev.preventDefault(); saveConfig(); } },
    h('h2', {}, 'Configuration'),
    h('p', { class: 'muted' }, 'File: ', h('code', {}, r.data.path || '(none: changes apply to this run only)')),
    h('h3', {}, 'Services'),
    h('table', { id: 'services-table' },
      h('thead', {}, h('tr', {}, ['Name', 'Kind', 'Host', 'Port', 'Health check', 'TLS and probe', '', ''].map((t) => h('th', {}, t)))),
      tbody),
    h('button', { type: 'button', id: 'service-add', onclick: add }, 'Add service'),
    h('h3', {}, 'Gateway'),
    labelled('SSH host', input('gateway.ssh_host', g.ssh_host, { id: 'cfg-ssh-host' }), 'gateway.ssh_host'),
    labelled('SSH port', input('gateway.ssh_port', g.ssh_port, { id: 'cfg-ssh-port', inputmode: 'numeric' }), 'gateway.ssh_port'),
    labelled('Tunnel port', input('gateway.tunnel_port', g.tunnel_port, { id: 'cfg-tunnel-port', inputmode: 'numeric' }), 'gateway.tunnel_port'),
    labelled('Host key', input('gateway.host_key', g.host_key, { id: 'cfg-host-key', class: 'wide' }), 'gateway.host_key'),
    labelled('Backchannel URL', input('gateway.backchannel', g.backchannel, { id: 'cfg-backchannel' }), 'gateway.backchannel'),
    h('h3', {}, 'Identity'),
    labelled('Registration ID', input('registration_id', c.registration_id, { id: 'cfg-registration' }), 'registration_id'),
    labelled('Key file', input('key_file', c.key_file, { id: 'cfg-key-file' }), 'key_file'),
    h('h3', {}, 'Reconnect'),
    labelled('First delay (ms)', input('reconnect.initial_delay_ms', rc.initial_delay_ms, { inputmode: 'numeric' }), 'reconnect.initial_delay_ms'),
    labelled('Longest delay (ms)', input('reconnect.max_delay_ms', rc.max_delay_ms, { inputmode: 'numeric' }), 'reconnect.max_delay_ms'),
    labelled('Stable after (s)', input('reconnect.stable_after_secs', rc.stable_after_secs, { inputmode: 'numeric' }), 'reconnect.stable_after_secs'),
    h('h3', {}, 'Log files'),
    labelled('Directory (empty: the system default)', input('log.dir', lg.dir, {}), 'log.dir'),
    labelled('Rotate at (bytes)', input('log.max_bytes', lg.max_bytes === undefined ? 10485760 : lg.max_bytes, { inputmode: 'numeric' }), 'log.max_bytes'),
    labelled('Files kept', input('log.max_files', lg.max_files === undefined ? 5 : lg.max_files, { inputmode: 'numeric' }), 'log.max_files'),
    h('h3', {}, 'Local GUI (changes need a restart)'),
    labelled('Listen address', input('local_api.listen', la.listen || '127.0.0.1:3015', {}), 'local_api.listen'),
    h('div', { class: 'field' }, h('label', { class: 'check' }, h('input', { type: 'checkbox', 'data-field': 'local_api.allow_remote', checked: !!la.allow_remote }), ' allow a non-loopback address (exposes this page to the network)')),
    h('div', { class: 'actions' },
      h('button', { type: 'submit', id: 'config-save', class: 'primary' }, 'Save and apply'),
      h('button', { type: 'button', id: 'config-reset', onclick: () => showView('config') }, 'Discard changes'),
      h('div', { id: 'config-message', role: 'status' }))));
}

function num(v) {
  const t = String(v).trim();
  return /^[0-9]+$/.test(t) ? Number(t) : t;
}

function collectConfig() {
  const val = (f) => { const el = document.querySelector(`#config-form [data-field="${f}"]`); return el ? el.value.trim() : ''; };
  const services = [...document.querySelectorAll('#services-table tbody tr')].map((tr) => {
    const health = tr.querySelector('.svc-health').value;
    const svc = {
      ...(tr.extras || {}),
      name: tr.querySelector('.svc-name').value.trim(),
      kind: tr.querySelector('.svc-kind').value,
      local: tr.querySelector('.svc-host').value.trim() + ':' + tr.querySelector('.svc-port').value.trim(),
    };
    if (health) svc.health_check = health === 'on';
    return svc;
  });
  const config = {
    registration_id: val('registration_id'),
    key_file: val('key_file'),
    gateway: {
      ssh_host: val('gateway.ssh_host'),
      ssh_port: num(val('gateway.ssh_port')),
      host_key: val('gateway.host_key'),
      tunnel_port: num(val('gateway.tunnel_port')),
    },
    services,
    reconnect: {
      initial_delay_ms: num(val('reconnect.initial_delay_ms')),
      max_delay_ms: num(val('reconnect.max_delay_ms')),
      stable_after_secs: num(val('reconnect.stable_after_secs')),
    },
    log: { max_bytes: num(val('log.max_bytes')), max_files: num(val('log.max_files')) },
    local_api: {
      listen: val('local_api.listen'),
      allow_remote: document.querySelector('#config-form [data-field="local_api.allow_remote"]').checked,
    },
  };
  if (val('gateway.backchannel')) config.gateway.backchannel = val('gateway.backchannel');
  if (val('log.dir')) config.log.dir = val('log.dir');
  return config;
}

async function saveConfig() {
  document.querySelectorAll('#config-form .invalid').forEach((el) => el.classList.remove('invalid'));
  document.querySelectorAll('#config-form .field-error').forEach((el) => { el.textContent = ''; });
  const msg = $('#config-message');
  msg.className = '';
  msg.textContent = 'Saving…';
  const r = await api('PUT', '/v1/config', { config: collectConfig() });
  if (!r.ok) {
    const e = r.data && r.data.error;
    msg.className = 'error';
    msg.textContent = 'Not saved (the file is unchanged): ' + errText(r);
    if (e && e.field) {
      const fields = document.querySelectorAll(`#config-form [data-field="${e.field}"]`);
      fields.forEach((el) => el.classList.add('invalid'));
      document.querySelectorAll(`#config-form [data-error-for="${e.field}"]`).forEach((el) => { el.textContent = e.message; });
      if (fields.length) { fields[fields.length - 1].scrollIntoView({ block: 'center' }); fields[fields.length - 1].focus(); }
    }
    return;
  }
  const o = r.data;
  const parts = ['Saved' + (o.backup ? ' (previous file kept as ' + o.backup + ')' : '') + '.'];
  parts.push(o.changed.length ? 'Changed: ' + o.changed.join(', ') + '.' : 'Nothing changed.');
  if (o.reconnect) parts.push('The tunnel reconnects to apply it.');
  else if (o.changed.length) parts.push('Applied live.');
  msg.className = 'ok';
  msg.replaceChildren(parts.join(' '));
  if (o.restart_required.length) {
    msg.append(h('p', { id: 'restart-needed', class: 'warn' }, 'A restart is needed for: ' + o.restart_required.join(', ') + '. ',
      h('button', { type: 'button', onclick: restartAgent }, 'Restart now')));
  }
}

// --- operations -------------------------------------------------------------------------------

async function restartAgent() {
  const out = $('#op-message') || $('#config-message');
  const r = await api('POST', '/v1/restart');
  if (out) out.textContent = r.ok ? 'Restarting the agent…' : errText(r);
  if (!r.ok) return;
  for (let i = 0; i < 60; i++) {
    await new Promise((res) => setTimeout(res, 500));
    const s = await api('GET', '/v1/status');
    if (s.ok && s.data.pid) { if (out) out.textContent = 'The agent restarted.'; return; }
  }
  if (out) out.textContent = 'The agent has not come back yet; check the service.';
}

function renderOps(view) {
  const message = h('p', { id: 'op-message', role: 'status' });
  const say = (r, ok) => { message.className = r.ok ? 'ok' : 'error'; message.textContent = r.ok ? ok : errText(r); };
  const serviceSelect = h('select', { id: 'op-test-service' });
  const testResult = h('span', { id: 'op-test-result' });
  const token = h('input', { id: 'op-token', type: 'password', placeholder: 'enrollment token', autocomplete: 'off' });
  api('GET', '/v1/config').then((r) => {
    if (r.ok) serviceSelect.replaceChildren(...r.data.config.services.map((s) => h('option', { value: s.name }, s.name)));
  });
  view.append(h('section', { class: 'card wide' },
    h('h2', {}, 'Operations'),
    h('div', { class: 'op' },
      h('button', { id: 'op-reconnect', onclick: async () => say(await api('POST', '/v1/reconnect'), 'Reconnecting now.') }, 'Reconnect now'),
      h('span', { class: 'muted' }, 'Drop the tunnel and connect to the gateway again at once.')),
    h('div', { class: 'op' },
      serviceSelect,
      h('button', { id: 'op-test', onclick: async () => {
        testResult.textContent = 'testing…';
        const r = await api('POST', '/v1/services/' + encodeURIComponent(serviceSelect.value) + '/test');
        testResult.className = r.ok && r.data.healthy ? 'good' : 'bad';
        testResult.textContent = r.ok ? r.data.name + ': ' + r.data.detail + ' in ' + ms(r.data.latency_us) : errText(r);
      } }, 'Test service'),
      testResult),
    h('div', { class: 'op' },
      token,
      h('button', { id: 'op-rotate', onclick: async () => {
        if (!token.value.trim()) { message.className = 'error'; message.textContent = 'Enter an enrollment token from your operator first.'; return; }
        const r = await api('POST', '/v1/rotate-key', { token: token.value.trim() });
        token.value = '';
        say(r, r.ok ? 'New key registered as ' + r.data.registration_id + '. Ask your operator to revoke ' + r.data.old_registration_id + '.' : '');
      } }, 'Rotate key (re-register)')),
    h('div', { class: 'op' },
      h('button', { id: 'op-restart', onclick: restartAgent }, 'Restart agent'),
      h('span', { class: 'muted' }, 'Stop the tunnel and the GUI, re-read the config file, start again.')),
    h('div', { class: 'op' },
      h('a', { id: 'op-diagnostics', class: 'button', href: '/v1/diagnostics', download: '' }, 'Download diagnostics bundle'),
      h('span', { class: 'muted' }, 'Status, configuration (secrets masked) and recent logs, for support.')),
    message));
}

// --- start ------------------------------------------------------------------------------------

async function start() {
  const m = /^#secret=([^&]+)/.exec(location.hash);
  if (m) {
    history.replaceState(null, '', location.pathname + '#status');
    const r = await api('POST', '/v1/login', { secret: decodeURIComponent(m[1]) });
    if (r.ok) { state.csrf = r.data.csrf; renderShell(); return; }
  }
  const r = await fetch('/v1/session', { credentials: 'same-origin' }).catch(() => null);
  if (r && r.ok) {
    state.csrf = (await r.json()).csrf;
    renderShell();
  } else {
    renderLogin('');
  }
}

start();
