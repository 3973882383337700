// The agent's notifications in the desk's header: a bell with the number of unread ones (asked every
// POLL_MS while the page is visible), and a list of the latest ones in the page's language. Choosing
// one marks it read and opens its ticket in the Tickets tab. Needs notifications.own; today the
// notifications are SLA warnings and breaches of tickets (appliance/api/routes/notifications.py).
import * as api from './api.js';
import { t, getLang, onLangChange } from './i18n.js';
import { $, el, banner, errorText, fmtTime } from './ui.js';
import { showTicket } from './tickets.js';

const POLL_MS = 30000;
const UNREAD_LIMIT = 100;
const LIST_LIMIT = 30;

const dom = {
  root: $('#notif'),
  bell: $('#notif-bell'),
  count: $('#notif-count'),
  panel: $('#notif-panel'),
  refresh: $('#notif-refresh'),
  error: $('#notif-error'),
  list: $('#notif-list'),
  empty: $('#notif-empty'),
};

let enabled = false;        // signed in with notifications.own
let onExpired = () => {};
let timer = null;
let unread = [];            // GET /api/notifications?unread=true
let items = null;           // the list shown in the panel (read ones too), null until asked
let listError = null;
let pollSeq = 0;
let listSeq = 0;

// --- helpers -------------------------------------------------------------------------------------

function isExpired(err) {
  if (err && err.status === 401) {
    onExpired();
    return true;
  }
  return false;
}

function textOf(n) {
  const text = n.text || {};
  return (getLang() === 'zh' ? text.zh || text.en : text.en || text.zh) || n.ticket || '';
}


const isOpen = () => !dom.panel.hidden;

// --- loading -------------------------------------------------------------------------------------

/** The unread ones (the bell); with the panel open, its list too. */
async function poll() {
  if (!enabled) return;
  const seq = ++pollSeq;
  try {
    const list = await api.get(`/api/notifications?unread=true&limit=${UNREAD_LIMIT}`);
    if (!enabled || seq !== pollSeq) return;
    unread = Array.isArray(list) ? list : [];
  } catch (err) {
    isExpired(err);   // the bell keeps its last count; the panel says what failed
  }
  renderBell();
  if (isOpen()) await loadList();
}

async function loadList() {
  const seq = ++listSeq;
  try {
    const list = await api.get(`/api/notifications?limit=${LIST_LIMIT}`);
    if (!enabled || seq !== listSeq) return;
    items = Array.isArray(list) ? list : [];
    listError = null;
  } catch (err) {
    if (isExpired(err) || seq !== listSeq) return;
    listError = err;
  }
  renderList();
}

// --- rendering -------------------------------------------------------------------------------------

function renderBell() {
  dom.root.hidden = !enabled;
  const n = unread.length;
  dom.count.hidden = n === 0;
  dom.count.textContent = n >= UNREAD_LIMIT ? `${UNREAD_LIMIT - 1}+` : String(n);
  dom.count.dataset.kind = unread.some((x) => x.kind === 'sla_breached') ? 'sla_breached' : (n ? 'sla_warning' : '');
  const label = n ? t('notif.bellUnread', { count: dom.count.textContent }) : t('notif.title');
  dom.bell.setAttribute('aria-label', label);
  dom.bell.title = label;
}

function renderList() {
  dom.error.hidden = !listError;
  dom.error.textContent = listError ? t('notif.loadFailed', { error: errorText(listError) }) : '';
  const shown = items || [];
  dom.empty.hidden = !items || shown.length > 0;
  const focused = document.activeElement && dom.list.contains(document.activeElement)
    ? document.activeElement.closest('li') : null;
  const focusId = focused ? focused.dataset.id : null;
  dom.list.replaceChildren(...shown.map((n) => {
    const li = el('li', 'notif-item');
    li.dataset.id = String(n.id);
    li.dataset.kind = n.kind;
    li.dataset.unread = String(!n.read_at);
    const open = el('button', 'notif-open');
    open.type = 'button';
    const kind = el('span', 'sla-badge', t(`notif.kind.${n.kind}`));
    kind.dataset.sla = n.kind === 'sla_breached' ? 'breached' : 'warning';
    const at = el('time', 'notif-at', fmtTime(n.created_at));
    at.dateTime = n.created_at || '';
    const head = el('span', 'notif-head');
    head.append(kind, at);
    if (!n.read_at) head.append(el('span', 'notif-new', t('notif.new')));
    open.append(head, el('span', 'notif-text', textOf(n)));
    open.addEventListener('click', () => choose(n));
    li.append(open);
    return li;
  }));
  if (focusId) {
    const again = dom.list.querySelector(`li[data-id="${CSS.escape(focusId)}"] button`);
    if (again) again.focus();
  }
}

function renderAll() {
  renderBell();
  if (items || listError) renderList();
}

// --- the panel ---------------------------------------------------------------------------------------

function openPanel() {
  dom.panel.hidden = false;
  dom.bell.setAttribute('aria-expanded', 'true');
  loadList().then(() => {
    // Opened from the bell, the keyboard goes on to the first notification (or Refresh when none).
    if (!isOpen() || document.activeElement !== dom.bell) return;
    (dom.list.querySelector('button') || dom.refresh).focus();
  });
}

function closePanel({ focusBell = false } = {}) {
  if (!isOpen()) return;
  dom.panel.hidden = true;
  dom.bell.setAttribute('aria-expanded', 'false');
  if (focusBell) dom.bell.focus();
}

/** A notification chosen: mark it read (once), then show its ticket. */
async function choose(n) {
  closePanel();
  if (!n.read_at) {
    try {
      const answer = await api.post(`/api/notifications/${encodeURIComponent(n.id)}/read`);
      if (!enabled) return;
      unread = unread.filter((x) => x.id !== n.id);
      const readAt = (answer && answer.read_at) || new Date().toISOString();
      if (items) items = items.map((x) => (x.id === n.id ? { ...x, read_at: readAt } : x));
      banner.clear('notif');
      renderAll();
    } catch (err) {
      if (isExpired(err)) return;
      banner.set('notif', 'error', { key: 'notif.readFailed', params: { error: errorText(err) }, timeoutMs: 10000 });
    }
  }
  if (n.ticket) await showTicket(n.ticket);
  poll();
}

function moveFocus(step) {
  const buttons = [...dom.list.querySelectorAll('button')];
  if (!buttons.length) return;
  const index = buttons.indexOf(document.activeElement);
  const next = index < 0 ? 0 : (index + step + buttons.length) % buttons.length;
  buttons[next].focus();
}

// --- lifecycle -----------------------------------------------------------------------------------------

/** Signed in: `mePayload` is /api/auth/me's answer; `expired` ends the session (an API call answered 401). */
export function startNotifications(mePayload, expired) {
  const permissions = mePayload && Array.isArray(mePayload.permissions) ? mePayload.permissions : [];
  // An empty list: /api/auth/me failed right after the login; the API still says no where it must.
  enabled = !permissions.length || permissions.includes('notifications.own');
  onExpired = expired || (() => {});
  clearInterval(timer);
  timer = null;
  renderBell();
  if (!enabled) return;
  timer = setInterval(() => { if (!document.hidden) poll(); }, POLL_MS);
  poll();
}

export function stopNotifications() {
  enabled = false;
  clearInterval(timer);
  timer = null;
  pollSeq += 1;
  listSeq += 1;
  unread = [];
  items = null;
  listError = null;
  closePanel();
  banner.clear('notif');
  dom.list.replaceChildren();
  renderBell();
}

function wire() {
  dom.bell.addEventListener('click', () => {
    if (isOpen()) closePanel();
    else openPanel();
  });
  dom.refresh.addEventListener('click', () => poll());
  dom.root.addEventListener('keydown', (ev) => {
    if (!isOpen()) return;
    if (ev.key === 'Escape') {
      ev.preventDefault();
      closePanel({ focusBell: true });
    } else if ((ev.key === 'ArrowDown' || ev.key === 'ArrowUp') && dom.panel.contains(document.activeElement)) {
      ev.preventDefault();
      moveFocus(ev.key === 'ArrowDown' ? 1 : -1);
    }
  });
  // A click elsewhere closes the list.
  document.addEventListener('pointerdown', (ev) => {
    if (isOpen() && !dom.root.contains(ev.target)) closePanel();
  });
  document.addEventListener('visibilitychange', () => { if (!document.hidden && enabled) poll(); });
  onLangChange(renderAll);
}

wire();
renderBell();
