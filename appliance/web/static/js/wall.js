// Supervisor wallboard: queue KPIs, agent board with status override, and the
// list of waiting contacts. Rows are reconciled by key so a status <select>
// the supervisor is editing survives the next snapshot.
import * as api from './api.js';
import { t, onLangChange } from './i18n.js';
import {
  $, el, banner, showActionError, agentStatusText, labelFor,
  setServerTime, serverNow, setTicking, setFrozen, fmtDuration, syncRows,
} from './ui.js';
import { startShell } from './shell.js';

const LONG_WAIT_S = 60;
const SETTABLE = ['ready', 'away', 'logged_out'];
const AGENT_COUNTS = ['ready', 'busy', 'wrap_up', 'away'];
const MANAGER_ROLES = new Set(['supervisor', 'admin']);

const dom = {
  queuesBody: $('#wall-queues tbody'),
  queuesEmpty: $('#wall-queues-empty'),
  agentsBody: $('#wall-agents tbody'),
  agentsEmpty: $('#wall-agents-empty'),
  waiting: $('#wall-waiting'),
  waitingEmpty: $('#wall-waiting-empty'),
  waitingCount: $('#wall-waiting-count'),
  kpiWaiting: $('#kpi-waiting'),
  kpiLongest: $('#kpi-longest'),
  kpiReady: $('#kpi-ready'),
  kpiBusy: $('#kpi-busy'),
  kpiWrapup: $('#kpi-wrapup'),
  kpiAway: $('#kpi-away'),
};

let shell = null;
let snapshot = null;

const canManage = () => !!(shell && MANAGER_ROLES.has(shell.role));

/** Longest wait of a queue right now, ticking from the snapshot's time. */
function longestNow(q) {
  if (!q) return 0;
  const base = Number(q.longest_wait_s) || 0;
  if (!(q.waiting > 0) || !snapshot) return base;
  return base + Math.max(0, serverNow() - snapshot.at);
}

// Percentages come as the reports give them: 0..100.
const pct = (v) => (v === null || v === undefined || !Number.isFinite(Number(v)) ? '—' : `${Math.round(Number(v))}%`);
const num = (v) => (v === null || v === undefined ? '—' : String(v));

// --- queues -------------------------------------------------------------------

function createQueueRow() {
  const tr = el('tr');
  const name = el('th', 'name');
  name.scope = 'row';
  const flag = el('span', 'flag');
  flag.hidden = true;
  name.append(el('span', 'qname'), flag);
  tr.append(
    name,
    el('td', 'waiting num big-num'),
    el('td', 'longest num big-num timer'),
    el('td', 'sl num'),
    el('td', 'answered num'),
    el('td', 'abandoned num'),
    el('td', 'asa num'),
    el('td', 'agents'),
  );
  return tr;
}

function updateQueueRow(tr, name) {
  const q = snapshot.queues[name] || {};
  const today = q.today || {};
  const agents = q.agents || {};
  const cells = tr.cells;
  cells[0].querySelector('.qname').textContent = name;
  cells[1].textContent = num(q.waiting ?? 0);
  if (q.waiting > 0 && Number.isFinite(q.longest_wait_s)) setTicking(cells[2], snapshot.at - q.longest_wait_s);
  else setFrozen(cells[2], q.longest_wait_s || 0);
  cells[3].textContent = pct(today.service_level);
  cells[4].textContent = num(today.answered);
  cells[5].textContent = num(today.abandoned);
  cells[6].textContent = today.asa_s === null || today.asa_s === undefined ? '—' : fmtDuration(today.asa_s);
  cells[7].replaceChildren(...AGENT_COUNTS.map((status) => {
    // A ringing (reserved) agent is as taken as a talking one.
    const count = (agents[status] ?? 0) + (status === 'busy' ? (agents.reserved ?? 0) : 0);
    const span = el('span', 'agent-count', `${t(`agents.${status}`)} ${count}`);
    span.dataset.status = status;
    return span;
  }));
  tr.classList.toggle('has-waiting', q.waiting > 0);
}

/** Long-wait highlight: class for colour, flag text so it is not colour alone. */
function markLongWaits() {
  if (!snapshot) return;
  for (const tr of dom.queuesBody.rows) {
    const over = longestNow(snapshot.queues[tr.dataset.queue]) > LONG_WAIT_S;
    tr.classList.toggle('long-wait', over);
    const flag = tr.querySelector('.flag');
    flag.hidden = !over;
    flag.textContent = over ? t('wall.longWait') : '';
  }
}

function renderQueues() {
  const queues = snapshot.queues || {};
  const names = Object.keys(queues).sort((a, b) => a.localeCompare(b));
  syncRows(dom.queuesBody, names, { key: (n) => n, attr: 'data-queue', create: createQueueRow, update: updateQueueRow });
  dom.queuesEmpty.hidden = names.length > 0;
  markLongWaits();
}

function renderKpis() {
  const queues = Object.values(snapshot.queues || {});
  const waiting = queues.reduce((sum, q) => sum + (Number(q.waiting) || 0), 0);
  dom.kpiWaiting.textContent = String(waiting);
  let longest = null;
  for (const q of queues) {
    if (q.waiting > 0 && Number.isFinite(q.longest_wait_s) && (longest === null || q.longest_wait_s > longest)) longest = q.longest_wait_s;
  }
  if (longest !== null) setTicking(dom.kpiLongest, snapshot.at - longest);
  else setFrozen(dom.kpiLongest, 0);
  // Count people, not queue memberships (an agent may serve several queues).
  const counts = { ready: 0, busy: 0, wrap_up: 0, away: 0 };
  for (const a of snapshot.agents || []) {
    if (a.state === 'busy' || a.state === 'reserved') counts.busy += 1;
    else if (a.state === 'wrap_up') counts.wrap_up += 1;
    else if (a.status === 'ready') counts.ready += 1;
    else if (a.status === 'away') counts.away += 1;
  }
  dom.kpiReady.textContent = String(counts.ready);
  dom.kpiBusy.textContent = String(counts.busy);
  dom.kpiWrapup.textContent = String(counts.wrap_up);
  dom.kpiAway.textContent = String(counts.away);
}

// --- agents ------------------------------------------------------------------------

function createAgentRow() {
  const tr = el('tr');
  const status = el('td', 'status');
  status.append(el('span', 'pill status-pill'));
  const actions = el('td', 'actions');
  const select = el('select', 'set-status');
  for (const value of SETTABLE) {
    const option = el('option');
    option.value = value;
    select.append(option);
  }
  // Remember that the supervisor picked a value so snapshots do not reset it.
  select.addEventListener('change', () => { select.dataset.dirty = '1'; });
  const apply = el('button', 'btn small apply');
  apply.type = 'button';
  apply.addEventListener('click', () => applyStatus(tr, select, apply));
  const wrap = el('div', 'actions-wrap');   // flex inside the cell; the <td> stays a table cell
  wrap.append(select, apply);
  actions.append(wrap);
  tr.append(el('td', 'name'), el('td', 'extension'), status, el('td', 'since num timer'), el('td', 'contact'), actions);
  return tr;
}

function updateAgentRow(tr, agent) {
  const [name, ext, status, since, contact, actions] = tr.cells;
  name.textContent = agent.display_name || agent.username || `#${agent.agent_id}`;
  name.title = agent.username || '';
  ext.textContent = agent.extension || '—';
  const pill = status.firstChild;
  pill.dataset.status = agent.status || 'logged_out';
  pill.dataset.state = agent.state || 'idle';
  pill.textContent = agentStatusText(agent.status, agent.state, agent.reason);
  setTicking(since, agent.since);
  contact.textContent = agent.contact_id ? (agent.queue || '') : '';
  tr.dataset.status = agent.status || 'logged_out';
  tr.dataset.state = agent.state || 'idle';

  const select = actions.querySelector('select.set-status');
  const apply = actions.querySelector('button.apply');
  const label = t('wall.setStatusFor', { name: name.textContent });
  select.setAttribute('aria-label', label);
  for (const option of select.options) option.textContent = labelFor('status', option.value);
  if (!select.dataset.dirty && document.activeElement !== select && SETTABLE.includes(agent.status)) {
    select.value = agent.status;
  }
  apply.textContent = t('wall.apply');
  const manage = canManage();
  select.disabled = !manage;
  apply.disabled = !manage || apply.dataset.busy === '1';
  apply.title = manage ? label : t('wall.readOnly');
}

async function applyStatus(tr, select, button) {
  const agentId = tr.dataset.agentId;
  const name = tr.cells[0].textContent;
  button.dataset.busy = '1';
  button.disabled = true;
  try {
    const res = await api.post(`/api/agents/${encodeURIComponent(agentId)}/status`, { status: select.value, reason: '' });
    delete select.dataset.dirty;
    banner.set('agent-action', 'info', {
      key: 'wall.statusSet',
      params: { name, status: labelFor('status', (res && res.status) || select.value) },
      timeoutMs: 4000,
    });
  } catch (err) {
    showActionError(err, 'agent-action');
  } finally {
    delete button.dataset.busy;
    button.disabled = !canManage();
  }
}

function renderAgents() {
  const agents = (snapshot.agents || []).slice().sort((a, b) => {
    const an = a.display_name || a.username || '';
    const bn = b.display_name || b.username || '';
    return an.localeCompare(bn) || String(a.agent_id).localeCompare(String(b.agent_id));
  });
  syncRows(dom.agentsBody, agents, { key: (a) => a.agent_id, attr: 'data-agent-id', create: createAgentRow, update: updateAgentRow });
  dom.agentsEmpty.hidden = agents.length > 0;
}

// --- waiting contacts ------------------------------------------------------------------

function renderWaiting() {
  const waiting = (snapshot.contacts || [])
    .filter((c) => c.state === 'waiting')
    .sort((a, b) => (Number(b.waiting_s) || 0) - (Number(a.waiting_s) || 0));
  dom.waiting.replaceChildren(...waiting.map((c) => {
    const li = el('li', 'waiting-item');
    li.dataset.contactId = c.contact_id || '';
    const wait = el('span', 'wait timer');
    if (Number.isFinite(c.waiting_s)) setTicking(wait, snapshot.at - c.waiting_s);
    else setFrozen(wait, null);
    const meta = el('span', 'meta');
    meta.append(el('span', 'queue', c.queue || '—'));
    if (c.language) meta.append(el('span', 'lang', c.language));
    li.append(el('span', 'caller', c.caller || t('pop.unknownCaller')), meta, wait);
    return li;
  }));
  dom.waitingCount.textContent = String(waiting.length);
  dom.waitingEmpty.hidden = waiting.length > 0;
}

// --- page ----------------------------------------------------------------------------------

function renderAll() {
  if (!snapshot) return;
  renderKpis();
  renderQueues();
  renderAgents();
  renderWaiting();
}

function clearAll() {
  snapshot = null;
  dom.queuesBody.replaceChildren();
  dom.agentsBody.replaceChildren();
  dom.waiting.replaceChildren();
  dom.waitingCount.textContent = '0';
  for (const node of [dom.kpiWaiting, dom.kpiReady, dom.kpiBusy, dom.kpiWrapup, dom.kpiAway]) node.textContent = '0';
  setFrozen(dom.kpiLongest, 0);
}

onLangChange(() => {
  document.title = `aicc · ${t('wall.title')}`;
  renderAll();
});
document.title = `aicc · ${t('wall.title')}`;

shell = startShell({
  appId: 'wall',
  onSnapshot(snap) {
    if (!snap || typeof snap !== 'object') return;
    snapshot = { ...snap, queues: snap.queues || {}, agents: snap.agents || [], contacts: snap.contacts || [] };
    setServerTime(snap.at);
    renderAll();
  },
  onTick: markLongWaits,
  onEnter() {
    clearAll();
    if (!canManage()) banner.set('role', 'info', { key: 'wall.readOnlyNotice', timeoutMs: 8000 });
  },
  onLeave() {
    clearAll();
  },
});
