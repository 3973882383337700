// Tickets in the agent desktop: the agent's own tickets and the unassigned / new ones with their SLA
// state, one ticket's details, history and actions (take, status, priority, comments), the new-ticket
// form, and a ticket from the call in progress or in wrap-up. The lists refresh every REFRESH_MS and
// after each change. Customers' and agents' text is only ever written with textContent.
import * as api from './api.js';
import { t, getLang, onLangChange } from './i18n.js';
import { $, $$, el, errorText, labelFor, syncRows } from './ui.js';

const REFRESH_MS = 20000;
const LIST_LIMIT = 100;
const TARGETS = ['first_response', 'next_response', 'resolution'];
const SLA_RANK = { breached: 0, warning: 1, running: 2, paused: 3, met: 4 };
// The moves the API allows (appliance/api/routes/tickets.py TRANSITIONS); anything else answers 409.
const MOVES = {
  new: ['open', 'pending', 'resolved'],
  open: ['pending', 'resolved'],
  pending: ['open', 'resolved'],
  resolved: ['open', 'closed'],
  closed: [],
};
const PHONE_RE = /^\+?[0-9]{2,20}$/;

const dom = {
  tabs: $$('#desk-tabs [role="tab"]'),
  tabTickets: $('#tab-tickets'),
  tabCount: $('#tab-tickets-count'),
  paneContact: $('#pane-contact'),
  paneTickets: $('#pane-tickets'),
  fromCall: $('#ticket-from-call'),
  notice: $('#tickets-notice'),
  listError: $('#tickets-error'),
  updated: $('#tickets-updated'),
  refresh: $('#tickets-refresh'),
  newButton: $('#ticket-new'),
  mineBody: $('#tickets-mine tbody'),
  mineEmpty: $('#tickets-mine-empty'),
  mineCount: $('#tickets-mine-count'),
  queueBody: $('#tickets-queue tbody'),
  queueEmpty: $('#tickets-queue-empty'),
  queueCount: $('#tickets-queue-count'),
  placeholder: $('#ticket-placeholder'),
  // new ticket
  form: $('#ticket-form'),
  ntCall: $('#nt-call'),
  ntCallId: $('#nt-call-id'),
  ntUnlink: $('#nt-unlink'),
  ntSubject: $('#nt-subject'),
  ntDescription: $('#nt-description'),
  ntPriority: $('#nt-priority'),
  ntType: $('#nt-type'),
  ntName: $('#nt-name'),
  ntPhone: $('#nt-phone'),
  ntEmail: $('#nt-email'),
  ntPhoneNote: $('#nt-phone-note'),
  ntAssignMe: $('#nt-assign-me'),
  ntError: $('#nt-error'),
  ntSubmit: $('#nt-submit'),
  ntCancel: $('#nt-cancel'),
  // one ticket
  view: $('#ticket-view'),
  tvNumber: $('#tv-number'),
  tvSubject: $('#tv-subject'),
  tvStatus: $('#tv-status'),
  tvSla: $('#tv-sla'),
  tvFacts: $('#tv-facts'),
  tvDescription: $('#tv-description'),
  tvSlaBody: $('#tv-sla-table tbody'),
  tvTake: $('#tv-take'),
  tvConfirm: $('#tv-confirm'),
  tvChange: $('#tv-change'),
  tvStatusSelect: $('#tv-status-select'),
  tvPrioritySelect: $('#tv-priority-select'),
  tvApply: $('#tv-apply'),
  tvError: $('#tv-error'),
  tvClosed: $('#tv-closed'),
  tvHistory: $('#tv-history'),
  tvComment: $('#tv-comment'),
  tvCommentBody: $('#tv-comment-body'),
  tvCommentHint: $('#tv-comment-hint'),
  tvCommentError: $('#tv-comment-error'),
  tvCommentSubmit: $('#tv-comment-submit'),
};

let me = null;             // /api/auth/me's user while signed in
let canWrite = true;       // holds tickets.write (agents and supervisors); else the actions are off
let onExpired = () => {};
let timer = null;
let refreshing = null;     // the list refresh in flight (a Promise)
let again = false;         // a change came during that refresh: refresh once more after it
let lists = { mine: [], queue: [], at: null };
let listError = null;      // the last list failure (an error), shown until a refresh works
let openNumber = null;     // the ticket shown, or null
let ticket = null;         // its GET /api/tickets/{number}
let events = [];           // its history
let changes = 0;           // answers to our own changes applied: a read begun before one is stale
let call = null;           // {call_id, contact_id, caller, language} of the call in progress / wrap-up
let lastContactId = null;  // to bring the contact tab forward when a new contact arrives
let prefill = null;        // the call the new-ticket form links
let noticeTimer = null;
let notice = null;         // {key, params}

// --- small helpers ------------------------------------------------------------------------

const myId = () => (me && Number.isFinite(me.id) ? me.id : null);

function locale() {
  return getLang() === 'zh' ? 'zh-CN' : 'en-GB';
}

/** An ISO time as local time: "14:30" today, else with the date (and the year when not this year). */
function fmtTime(iso) {
  if (!iso) return '—';
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return String(iso);
  const now = new Date();
  const opts = { hour: '2-digit', minute: '2-digit', hour12: false };
  if (at.toDateString() !== now.toDateString()) {
    opts.month = 'short';
    opts.day = 'numeric';
    if (at.getFullYear() !== now.getFullYear()) opts.year = 'numeric';
  }
  try {
    return new Intl.DateTimeFormat(locale(), opts).format(at);
  } catch {
    return at.toLocaleString();
  }
}

function fmtMinutes(value) {
  if (value === null || value === undefined || !Number.isFinite(Number(value))) return '—';
  return String(Math.round(Number(value)));
}

function assigneeText(id) {
  if (id === null || id === undefined) return t('tickets.unassigned');
  if (id === myId()) return t('tickets.me', { name: me.display_name || me.username || '' });
  return t('tickets.user', { id });
}

/** The worst target's state and the due time that goes with it: {state, due}. */
function slaSummary(sla) {
  const state = sla && sla.state ? sla.state : null;
  let due = null;
  if (state) {
    for (const name of TARGETS) {
      const target = sla[name];
      if (target && target.state === state && target.due_at && (!due || target.due_at < due)) due = target.due_at;
    }
  }
  return { state, due };
}

/** A state badge: colour from data-sla, the words always beside it. */
function slaBadge(node, state) {
  node.className = 'sla-badge';
  node.dataset.sla = state || 'none';
  node.textContent = t(`sla.state.${state || 'none'}`);
}

function fillSlaCell(td, sla) {
  const { state, due } = slaSummary(sla);
  const badge = el('span');
  slaBadge(badge, state);
  td.replaceChildren(badge);
  if (due && state !== 'met' && state !== 'paused') {
    td.append(el('span', 'sla-due', t(state === 'breached' ? 'tickets.wasDue' : 'tickets.due', { time: fmtTime(due) })));
  }
  td.title = TARGETS.filter((n) => sla && sla[n])
    .map((n) => `${t(`sla.target.${n}`)}: ${t(`sla.state.${sla[n].state}`)}${sla[n].due_at ? ` (${fmtTime(sla[n].due_at)})` : ''}`)
    .join('\n');
}

function compareTickets(a, b) {
  const sa = slaSummary(a.sla);
  const sb = slaSummary(b.sla);
  const ra = SLA_RANK[sa.state] ?? 5;
  const rb = SLA_RANK[sb.state] ?? 5;
  if (ra !== rb) return ra - rb;
  if (sa.due && sb.due && sa.due !== sb.due) return sa.due < sb.due ? -1 : 1;
  if (!!sa.due !== !!sb.due) return sa.due ? -1 : 1;
  return String(b.created_at).localeCompare(String(a.created_at));
}

function isExpired(err) {
  if (err && err.status === 401) {
    onExpired();
    return true;
  }
  return false;
}

/** An API failure in a form's error box: the message, and each field a 422 names (marked invalid). */
function showError(box, err, fields = {}, key = 'tickets.failed') {
  for (const node of Object.values(fields)) node.removeAttribute('aria-invalid');
  if (!err) {
    box.hidden = true;
    box.replaceChildren();
    return;
  }
  box.replaceChildren(el('span', null, t(key, { error: errorText(err) })));
  const problems = (err.body && err.body.error && Array.isArray(err.body.error.problems)) ? err.body.error.problems : [];
  let first = null;
  if (problems.length) {
    const list = el('ul', 'problems');
    for (const p of problems) {
      const field = String(p.field || '');
      const input = fields[field];
      const label = input ? fieldLabel(input) : field;
      list.append(el('li', null, t('tickets.problem', { field: label, message: p.message || '' })));
      if (input) {
        input.setAttribute('aria-invalid', 'true');
        if (!first) first = input;
      }
    }
    box.append(list);
  }
  box.hidden = false;
  if (first) first.focus();
}

function fieldLabel(input) {
  const label = input.id ? document.querySelector(`label[for="${input.id}"]`) : null;
  return label ? label.textContent.trim() : input.name || input.id;
}

function setNotice(key, params) {
  notice = key ? { key, params } : null;
  clearTimeout(noticeTimer);
  renderNotice();
  if (key) noticeTimer = setTimeout(() => setNotice(null), 10000);
}

function renderNotice() {
  dom.notice.textContent = notice ? t(notice.key, notice.params) : '';
  dom.notice.hidden = !notice;
}

// --- tabs ---------------------------------------------------------------------------------

function selectTab(name, { focus = false } = {}) {
  for (const tab of dom.tabs) {
    const on = tab.dataset.tab === name;
    tab.setAttribute('aria-selected', String(on));
    tab.tabIndex = on ? 0 : -1;
    if (on && focus) tab.focus();
  }
  dom.paneContact.hidden = name !== 'contact';
  dom.paneTickets.hidden = name !== 'tickets';
  if (name === 'tickets') refresh();
}

function wireTabs() {
  for (const tab of dom.tabs) tab.addEventListener('click', () => selectTab(tab.dataset.tab));
  $('#desk-tabs').addEventListener('keydown', (ev) => {
    // Only the tabs this user sees (a role without a tab's permission has it hidden).
    const tabs = dom.tabs.filter((tab) => !tab.hidden);
    const index = tabs.indexOf(document.activeElement);
    if (index < 0) return;
    let next = null;
    if (ev.key === 'ArrowRight' || ev.key === 'ArrowDown') next = (index + 1) % tabs.length;
    else if (ev.key === 'ArrowLeft' || ev.key === 'ArrowUp') next = (index - 1 + tabs.length) % tabs.length;
    else if (ev.key === 'Home') next = 0;
    else if (ev.key === 'End') next = tabs.length - 1;
    if (next === null) return;
    ev.preventDefault();
    selectTab(tabs[next].dataset.tab, { focus: true });
  });
}

// --- lists ----------------------------------------------------------------------------------

/** Refresh both lists (and the open ticket); a refresh asked for during one runs after it. */
function refresh() {
  if (!me) return Promise.resolve();
  if (refreshing) {
    again = true;
    return refreshing;
  }
  refreshing = (async () => {
    try {
      do {
        again = false;
        await loadLists();
        if (openNumber && me) await loadTicket(openNumber);
      } while (again && me);
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

async function loadLists() {
  const id = myId();
  try {
    const [mine, free] = await Promise.all([
      id === null ? [] : api.get(`/api/tickets?assignee=${id}&limit=${LIST_LIMIT}`),
      api.get(`/api/tickets?unassigned=true&limit=${LIST_LIMIT}`),
    ]);
    if (!me) return;
    const queue = new Map();
    for (const item of free) {
      if (item.status !== 'resolved' && item.status !== 'closed') queue.set(item.number, item);
    }
    lists = {
      mine: mine.filter((x) => x.status !== 'closed').sort(compareTickets),
      queue: [...queue.values()].sort(compareTickets),
      at: new Date().toISOString(),
    };
    listError = null;
  } catch (err) {
    if (isExpired(err)) return;
    listError = err;
  }
  renderLists();
}

function renderLists() {
  dom.listError.hidden = !listError;
  dom.listError.textContent = listError ? t('tickets.loadFailed', { error: errorText(listError) }) : '';
  dom.updated.textContent = lists.at ? t('tickets.updated', { time: fmtTime(lists.at) }) : '';
  renderRows(dom.mineBody, lists.mine);
  renderRows(dom.queueBody, lists.queue);
  dom.mineEmpty.hidden = lists.mine.length > 0;
  dom.queueEmpty.hidden = lists.queue.length > 0;
  dom.mineCount.textContent = String(lists.mine.length);
  dom.queueCount.textContent = String(lists.queue.length);
  // The tab shows how many tickets are the agent's, red or amber when any of them (or of the
  // unassigned ones) is breached or at risk.
  const worst = [...lists.mine, ...lists.queue].map((x) => slaSummary(x.sla).state)
    .reduce((a, b) => ((SLA_RANK[b] ?? 5) < (SLA_RANK[a] ?? 5) ? b : a), null);
  dom.tabCount.textContent = String(lists.mine.length);
  dom.tabCount.dataset.sla = worst === 'breached' || worst === 'warning' ? worst : '';
  dom.tabCount.title = worst === 'breached' || worst === 'warning' ? t(`sla.state.${worst}`) : '';
  dom.tabCount.hidden = !me;
  dom.newButton.hidden = !canWrite;
}

function renderRows(tbody, items) {
  syncRows(tbody, items, {
    key: (x) => x.number,
    attr: 'data-number',
    create: (x) => {
      const tr = el('tr', 'ticket-row');
      const th = el('th', 'number');
      th.scope = 'row';
      const open = el('button', 'link-button');
      open.type = 'button';
      open.addEventListener('click', (ev) => {
        ev.stopPropagation();
        openTicket(tr.dataset.number);
      });
      th.append(open);
      tr.append(th, el('td', 'subject'), el('td', 'priority'), el('td', 'status'), el('td', 'sla'));
      // The whole row opens the ticket for the mouse; the number is the keyboard's button.
      tr.addEventListener('click', () => openTicket(tr.dataset.number));
      tr.dataset.number = x.number;
      return tr;
    },
    update: (tr, x) => {
      const [th, subject, priority, status, sla] = tr.cells;
      const button = th.firstChild;
      button.textContent = x.number;
      button.setAttribute('aria-label', t('tickets.openNamed', { number: x.number, subject: x.subject }));
      subject.textContent = x.subject;
      subject.title = x.subject;
      priority.replaceChildren(priorityTag(x.priority));
      status.textContent = labelFor('ticket.status', x.status);
      status.dataset.status = x.status;
      fillSlaCell(sla, x.sla);
      tr.dataset.sla = slaSummary(x.sla).state || '';
      tr.classList.toggle('selected', x.number === openNumber);
      if (x.number === openNumber) tr.setAttribute('aria-current', 'true');
      else tr.removeAttribute('aria-current');
    },
  });
}

function priorityTag(priority) {
  const tag = el('span', 'priority-tag', labelFor('priority', priority));
  tag.dataset.priority = priority;
  return tag;
}

// --- one ticket ---------------------------------------------------------------------------------

function showDetail(which) {
  dom.placeholder.hidden = which !== 'none';
  dom.form.hidden = which !== 'form';
  dom.view.hidden = which !== 'view';
}

async function openTicket(number, { focus = true } = {}) {
  if (!number) return;
  if (openNumber !== number) {
    openNumber = number;
    ticket = null;
    events = [];
    showError(dom.tvError, null);
    showError(dom.tvCommentError, null);
    dom.tvCommentBody.value = '';
    delete dom.tvChange.dataset.dirty;
    dom.view.dataset.number = number;
    dom.tvNumber.textContent = number;
    dom.tvSubject.textContent = t('tickets.loading');
    dom.tvHistory.replaceChildren();
  }
  showDetail('view');
  renderLists();   // the selected row
  if (focus) dom.tvSubject.focus();
  await loadTicket(number);
}

async function loadTicket(number) {
  const seen = changes;
  try {
    const path = `/api/tickets/${encodeURIComponent(number)}`;
    const [one, history] = await Promise.all([api.get(path), api.get(`${path}/events`)]);
    if (openNumber !== number || seen !== changes) return;   // the refresh after the change follows
    ticket = one;
    events = Array.isArray(history) ? history : [];
    renderTicket();
  } catch (err) {
    if (isExpired(err) || openNumber !== number) return;
    showError(dom.tvError, err, {}, 'tickets.loadOneFailed');
  }
}

function renderTicket() {
  if (!ticket) return;
  const x = ticket;
  dom.view.dataset.number = x.number;
  dom.view.dataset.status = x.status;
  dom.tvNumber.textContent = x.number;
  dom.tvSubject.textContent = x.subject;
  dom.tvStatus.textContent = labelFor('ticket.status', x.status);
  dom.tvStatus.dataset.status = x.status;
  slaBadge(dom.tvSla, x.sla && x.sla.state);

  const facts = [
    ['tickets.priority', priorityTag(x.priority)],
    ['tickets.assignee', assigneeText(x.assignee)],
    ['tickets.type', labelFor('type', x.type)],
    ['tickets.customer', customerText(x.customer)],
    ['tickets.source', labelFor('source', x.source)],
  ];
  if (x.call_id) facts.push(['tickets.call', x.call_id]);
  if (x.group) facts.push(['tickets.group', x.group]);
  facts.push(['tickets.createdAt', t('tickets.byWhom', { time: fmtTime(x.created_at), name: x.created_by })]);
  facts.push(['tickets.updatedAt', fmtTime(x.updated_at)]);
  dom.tvFacts.replaceChildren(...facts.map(([key, value]) => {
    const row = el('div', 'kv-row');
    const dd = el('dd');
    if (value instanceof Node) dd.append(value);
    else dd.textContent = value;
    row.append(el('dt', null, t(key)), dd);
    return row;
  }));
  dom.tvDescription.textContent = x.description || '';
  dom.tvDescription.hidden = !x.description;

  renderSlaTable(x.sla);
  renderActions();
  renderHistory();
}

function customerText(customer) {
  if (!customer) return '—';
  const parts = [customer.name, customer.phone, customer.email, customer.external_id].filter((v) => v);
  return parts.length ? parts.join(' · ') : '—';
}

function renderSlaTable(sla) {
  const rows = TARGETS.filter((name) => sla && sla[name]).map((name) => {
    const target = sla[name];
    const tr = el('tr');
    tr.dataset.target = name;
    const head = el('th', null, t(`sla.target.${name}`));
    head.scope = 'row';
    const state = el('td');
    const badge = el('span');
    slaBadge(badge, target.state);
    state.append(badge);
    let due = target.due_at ? fmtTime(target.due_at) : '—';
    if (target.met_at) due = t('sla.metAt', { time: fmtTime(target.met_at) });
    const used = t('sla.minutes', {
      used: fmtMinutes(target.used_minutes),
      left: fmtMinutes(target.remaining_minutes),
      target: target.target_minutes,
    });
    tr.append(head, state, el('td', null, due), el('td', 'num', used));
    return tr;
  });
  if (!rows.length) {
    const tr = el('tr');
    const td = el('td', 'muted', t('sla.none'));
    td.colSpan = 4;
    tr.append(td);
    rows.push(tr);
  }
  dom.tvSlaBody.replaceChildren(...rows);
}

function renderActions() {
  const x = ticket;
  const closed = x.status === 'closed';
  dom.tvClosed.hidden = !closed;
  for (const node of [dom.tvTake, dom.tvConfirm, dom.tvChange, dom.tvComment]) node.hidden = !canWrite;
  dom.tvTake.disabled = closed || x.assignee === myId();
  dom.tvTake.textContent = t(x.assignee === myId() ? 'tickets.takenByMe' : 'tickets.take');
  dom.tvConfirm.hidden = !canWrite || x.status !== 'resolved';
  const moves = MOVES[x.status] || [];
  for (const option of dom.tvStatusSelect.options) {
    option.disabled = option.value !== x.status && !moves.includes(option.value);
  }
  // A half-made choice survives the periodic refresh; a saved one shows what the server has.
  if (!dom.tvChange.dataset.dirty) {
    dom.tvStatusSelect.value = x.status;
    dom.tvPrioritySelect.value = x.priority;
  }
  dom.tvStatusSelect.disabled = closed;
  dom.tvPrioritySelect.disabled = closed;
  dom.tvApply.disabled = closed;
  dom.tvCommentBody.disabled = closed;
  dom.tvCommentSubmit.disabled = closed;
  renderCommentMode();
}

function renderHistory() {
  const items = events.map((ev) => {
    const li = el('li', 'event');
    li.dataset.kind = ev.kind;
    const head = el('div', 'event-head');
    head.append(el('span', 'event-what', eventTitle(ev)), el('span', 'event-who', ev.actor || ''),
      el('time', 'event-at', fmtTime(ev.at)));
    head.lastChild.dateTime = ev.at;
    li.append(head);
    const data = ev.data || {};
    if (ev.kind === 'commented') {
      li.dataset.visibility = data.author === 'customer' ? 'customer' : (data.visibility || 'public');
      li.append(el('p', 'event-body', data.body || ''));
    } else if (ev.kind === 'customer_confirmed') {
      if (data.note) li.append(el('p', 'event-body', data.note));
    } else {
      const change = changeText(ev);
      if (change) li.append(el('p', 'event-change', change));
    }
    return li;
  });
  dom.tvHistory.replaceChildren(...items);
}

function eventTitle(ev) {
  const data = ev.data || {};
  if (ev.kind === 'commented') {
    if (data.author === 'customer') return t('tickets.customerMessage');
    return t(data.visibility === 'internal' ? 'tickets.internal' : 'tickets.public');
  }
  return labelFor('event', ev.kind);
}

function changeText(ev) {
  const data = ev.data || {};
  const pair = (from, to) => t('tickets.fromTo', { from, to });
  switch (ev.kind) {
    case 'created':
      return [labelFor('source', data.source), labelFor('priority', data.priority)].filter((v) => v).join(' · ');
    case 'status_changed':
      return pair(labelFor('ticket.status', data.from), labelFor('ticket.status', data.to));
    case 'priority_changed':
      return pair(labelFor('priority', data.from), labelFor('priority', data.to));
    case 'assigned':
      return pair(assigneeText(data.from), assigneeText(data.to));
    case 'group_changed':
      return pair(data.from || '—', data.to || '—');
    default:
      return '';
  }
}

/** PATCH, comment or confirm the open ticket; the answer is the ticket as it now is. */
async function act(button, errorBox, send, fields = {}) {
  const number = openNumber;
  button.disabled = true;
  showError(errorBox, null, fields);
  try {
    const answer = await send(number);
    changes += 1;
    if (openNumber === number && answer) {
      ticket = answer;
      renderTicket();
    }
    refresh();
    return true;
  } catch (err) {
    if (!isExpired(err)) showError(errorBox, err, fields);
    return false;
  } finally {
    button.disabled = false;
    if (ticket) renderActions();
  }
}

const ticketPath = (number) => `/api/tickets/${encodeURIComponent(number)}`;

function take() {
  return act(dom.tvTake, dom.tvError, (n) => api.request('PATCH', ticketPath(n), { assignee: myId() }))
    .then((ok) => { if (ok) setNotice('tickets.takenNotice', { number: openNumber }); });
}

async function applyChange(ev) {
  ev.preventDefault();
  if (!ticket) return;
  const body = {};
  if (dom.tvStatusSelect.value !== ticket.status) body.status = dom.tvStatusSelect.value;
  if (dom.tvPrioritySelect.value !== ticket.priority) body.priority = dom.tvPrioritySelect.value;
  if (!Object.keys(body).length) {
    setNotice('tickets.noChanges');
    return;
  }
  const fields = { status: dom.tvStatusSelect, priority: dom.tvPrioritySelect };
  const ok = await act(dom.tvApply, dom.tvError, (n) => api.request('PATCH', ticketPath(n), body), fields);
  if (ok) {
    delete dom.tvChange.dataset.dirty;
    renderActions();
    setNotice('tickets.saved', { number: openNumber });
  }
}

function confirmResolution() {
  return act(dom.tvConfirm, dom.tvError, (n) => api.post(`${ticketPath(n)}/confirm`, { note: '' }))
    .then((ok) => { if (ok) setNotice('tickets.confirmedNotice', { number: openNumber }); });
}

function visibility() {
  const checked = $('input[name="tv-visibility"]:checked', dom.tvComment);
  return checked ? checked.value : 'public';
}

function renderCommentMode() {
  const internal = visibility() === 'internal';
  dom.tvComment.dataset.visibility = internal ? 'internal' : 'public';
  dom.tvCommentSubmit.textContent = t(internal ? 'tickets.addNote' : 'tickets.sendReply');
  dom.tvCommentHint.textContent = t(internal ? 'tickets.internalHint' : 'tickets.publicHint');
}

async function addComment(ev) {
  ev.preventDefault();
  if (!ticket) return;
  const text = dom.tvCommentBody.value.trim();
  if (!text) {
    dom.tvCommentBody.setAttribute('aria-invalid', 'true');
    dom.tvCommentError.replaceChildren(el('span', null, t('tickets.commentRequired')));
    dom.tvCommentError.hidden = false;
    dom.tvCommentBody.focus();
    return;
  }
  const kind = visibility();
  const fields = { body: dom.tvCommentBody, visibility: dom.tvCommentBody };
  const ok = await act(dom.tvCommentSubmit, dom.tvCommentError,
    (n) => api.post(`${ticketPath(n)}/comments`, { body: text, visibility: kind }), fields);
  if (ok) {
    dom.tvCommentBody.value = '';
    setNotice(kind === 'internal' ? 'tickets.noteAdded' : 'tickets.replySent', { number: openNumber });
    await loadTicket(openNumber);
    const last = dom.tvHistory.lastElementChild;
    if (last) last.scrollIntoView({ block: 'nearest' });
  }
}

// --- new ticket -------------------------------------------------------------------------------------

const formFields = () => ({
  subject: dom.ntSubject,
  description: dom.ntDescription,
  priority: dom.ntPriority,
  type: dom.ntType,
  'customer.name': dom.ntName,
  'customer.phone': dom.ntPhone,
  'customer.email': dom.ntEmail,
});

/** Show the new-ticket form, linked to `fromCall` ({call_id, contact_id, caller, language}) if given. */
function newTicket(fromCall = null) {
  dom.form.reset();
  showError(dom.ntError, null, formFields());
  prefill = fromCall;
  dom.ntCall.hidden = !prefill;
  dom.ntCallId.textContent = prefill ? prefill.call_id : '';
  const caller = prefill && prefill.caller ? String(prefill.caller) : '';
  const usable = PHONE_RE.test(caller);
  dom.ntPhone.value = usable ? caller : '';
  dom.ntPhoneNote.hidden = !(caller && !usable);
  openNumber = null;
  ticket = null;
  renderLists();
  showDetail('form');
  selectTab('tickets');
  dom.ntSubject.focus();
}

function closeForm() {
  prefill = null;
  dom.form.reset();
  showError(dom.ntError, null, formFields());
  showDetail('none');
  dom.newButton.focus();
}

async function createTicket(ev) {
  ev.preventDefault();
  const fields = formFields();
  const subject = dom.ntSubject.value.trim();
  if (!subject) {
    showError(dom.ntError, null, fields);
    dom.ntSubject.setAttribute('aria-invalid', 'true');
    dom.ntError.replaceChildren(el('span', null, t('tickets.subjectRequired')));
    dom.ntError.hidden = false;
    dom.ntSubject.focus();
    return;
  }
  const customer = {};
  for (const [key, input] of [['name', dom.ntName], ['phone', dom.ntPhone], ['email', dom.ntEmail]]) {
    const value = input.value.trim();
    if (value) customer[key] = value;
  }
  const body = {
    subject,
    description: dom.ntDescription.value.trim(),
    priority: dom.ntPriority.value,
    type: dom.ntType.value,
    customer,
    source: prefill ? 'call' : 'agent',
  };
  if (prefill) {
    body.call_id = prefill.call_id;
    if (prefill.contact_id) body.contact_id = prefill.contact_id;
    if (prefill.language && /^[a-z]{2}$/.test(prefill.language)) body.language = prefill.language;
  }
  if (dom.ntAssignMe.checked && myId() !== null) body.assignee = myId();
  dom.ntSubmit.disabled = true;
  showError(dom.ntError, null, fields);
  try {
    const created = await api.post('/api/tickets', body);
    prefill = null;
    dom.form.reset();
    setNotice('tickets.created', { number: created.number });
    ticket = null;
    openNumber = null;
    await openTicket(created.number, { focus: true });
    refresh();
  } catch (err) {
    if (!isExpired(err)) showError(dom.ntError, err, fields);
  } finally {
    dom.ntSubmit.disabled = false;
  }
}

// --- the call in progress -----------------------------------------------------------------------------

/**
 * The desk's contact as it renders it (the pop, or in wrap-up the pop merged with what the server
 * still names) and the agent's ACD state. A new contact brings the contact tab forward; a call in
 * progress or in wrap-up offers "Ticket from this call".
 */
export function setCall(contact, agentState) {
  const id = contact && contact.contact_id ? contact.contact_id : null;
  if (id && id !== lastContactId) selectTab('contact');
  lastContactId = id;
  const working = agentState === 'busy' || agentState === 'wrap_up';
  call = contact && contact.call_id && working
    ? { call_id: contact.call_id, contact_id: id, caller: contact.caller || '', language: contact.language || '' }
    : null;
  dom.fromCall.hidden = !call || !canWrite;
}

/** Show ticket `number` (e.g. "T-000123") in the Tickets tab, as a notification asks. */
export function showTicket(number) {
  if (!me || !number) return Promise.resolve();
  selectTab('tickets');
  return openTicket(String(number));
}

// --- lifecycle ---------------------------------------------------------------------------------------------

function renderAll() {
  renderNotice();
  renderLists();
  if (ticket) renderTicket();
}

/** Signed in: `mePayload` is /api/auth/me's answer; `expired` ends the session (an API call answered 401). */
export function startTickets(mePayload, expired) {
  const permissions = mePayload && Array.isArray(mePayload.permissions) ? mePayload.permissions : [];
  // An empty list: /api/auth/me failed right after the login; the API still says no where it must.
  const can = (p) => !permissions.length || permissions.includes(p);
  onExpired = expired || (() => {});
  canWrite = can('tickets.write');
  $('#tab-tickets').hidden = !can('tickets.read');
  if (!can('tickets.read')) return;
  me = (mePayload && mePayload.user) || null;
  clearInterval(timer);
  timer = setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
  refresh();
}

export function stopTickets() {
  me = null;
  clearInterval(timer);
  timer = null;
  lists = { mine: [], queue: [], at: null };
  listError = null;
  openNumber = null;
  ticket = null;
  events = [];
  prefill = null;
  call = null;
  lastContactId = null;
  setNotice(null);
  dom.form.reset();
  showError(dom.ntError, null, formFields());
  showDetail('none');
  dom.fromCall.hidden = true;
  renderLists();
  selectTab('contact');
}

function wire() {
  wireTabs();
  dom.refresh.addEventListener('click', () => refresh());
  dom.newButton.addEventListener('click', () => newTicket(null));
  dom.fromCall.addEventListener('click', () => { if (call) newTicket(call); });
  dom.form.addEventListener('submit', createTicket);
  dom.ntCancel.addEventListener('click', closeForm);
  dom.ntUnlink.addEventListener('click', () => {
    prefill = null;
    dom.ntCall.hidden = true;
    dom.ntPhoneNote.hidden = true;
    dom.ntSubject.focus();
  });
  dom.form.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape') {
      ev.preventDefault();
      closeForm();
    }
  });
  for (const input of Object.values(formFields())) {
    input.addEventListener('input', () => input.removeAttribute('aria-invalid'));
  }
  dom.tvTake.addEventListener('click', take);
  dom.tvConfirm.addEventListener('click', confirmResolution);
  dom.tvChange.addEventListener('submit', applyChange);
  for (const select of [dom.tvStatusSelect, dom.tvPrioritySelect]) {
    select.addEventListener('change', () => { dom.tvChange.dataset.dirty = '1'; });
  }
  dom.tvComment.addEventListener('submit', addComment);
  dom.tvComment.addEventListener('change', renderCommentMode);
  dom.tvCommentBody.addEventListener('input', () => dom.tvCommentBody.removeAttribute('aria-invalid'));
  dom.tvCommentBody.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      dom.tvComment.requestSubmit();
    }
  });
  document.addEventListener('visibilitychange', () => { if (!document.hidden && me) refresh(); });
  onLangChange(renderAll);
}

wire();
showDetail('none');
renderNotice();
