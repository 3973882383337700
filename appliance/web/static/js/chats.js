// Web chats in the agent desktop (the Chats tab). Two lists: the chats waiting for an agent (handed
// over by the bot and nobody's yet, the longest waiting first, with the wait) and the agent's own open
// ones, each marked "New" while its last line (the customer's or the bot's) is one the agent has not
// had on screen. One chat: the customer (identities masked as the API masks them for this role),
// channel, language, the bot's hand-over note, the whole history (customer, bot, agent and system
// lines styled apart), whether the customer is connected and typing, Take and Resolve, and a reply
// box: Enter sends, Shift+Enter is a new line; each reply carries a client id, so a retry after a lost
// answer is stored once; "typing" goes to the visitor at most every TYPING_EVERY_MS. Articles are
// suggested from the bot's note and the customer's latest lines (the Knowledge tab opens them).
//
// A chat the ACD offers the agent (the live snapshot's me.chat_offer, passed in by desk.js through
// setChatOffer) shows above the tabs, whichever is open, with its ring time counting down: Accept
// makes it the agent's and opens it here; Decline (or letting it ring out) gives it to the next agent.
// The Chats tab says how many chats the agent holds of their chat capacity; an open chat its queue,
// why the ACD does not route it (when it does not), and when the agent's first reply is due.
//
// Live updates are polled: there is no push of conversations to agents yet. While the Chats tab is
// shown (and the browser tab visible) both lists and the open chat are asked for every FAST_MS, with
// If-None-Match (the API answers 304 while nothing changed) and, for the chat, after_seq (only the
// messages not seen yet); on another desk tab only the lists, every SLOW_MS, for the tab's badge;
// nothing while the browser tab is hidden. Failures back off, doubling up to BACKOFF_MAX_MS.
// Customers' and agents' text is only ever written with textContent.
import * as api from './api.js';
import { t, getLang, onLangChange } from './i18n.js';
import {
  $, banner, el, errorText, fmtTime, labelFor, serverNow, setCountdown, setTicking,
} from './ui.js';
import { openArticle, snippetNodes } from './knowledge.js';
import { showTicket } from './tickets.js';

const FAST_MS = 3000;
const SLOW_MS = 15000;
const BACKOFF_MAX_MS = 30000;
const LIST_LIMIT = 100;
const BODY_MAX = 4000;          // the API's limit of a message (store.BODY_MAX)
const TYPING_EVERY_MS = 3000;
const NOTICE_MS = 8000;
const KB_LIMIT = 3;
const KB_QUERY_CAP = 480;       // the search reads the first 500 characters of a question
const KB_SUMMARY_CAP = 200;
const KB_CUSTOMER_LINES = 6;
const KB_DELAY_MS = 400;
const SEEN_MAX = 300;           // conversations whose last seen message is remembered (sessionStorage)

const dom = {
  tab: $('#tab-chats'),
  tabCount: $('#tab-chats-count'),
  pane: $('#pane-chats'),
  lists: $('#pane-chats .chats-lists'),
  updated: $('#chats-updated'),
  listError: $('#chats-error'),
  waiting: $('#chats-waiting'),
  waitingEmpty: $('#chats-waiting-empty'),
  waitingCount: $('#chats-waiting-count'),
  mine: $('#chats-mine'),
  mineEmpty: $('#chats-mine-empty'),
  mineCount: $('#chats-mine-count'),
  placeholder: $('#chat-placeholder'),
  view: $('#chat-view'),
  customer: $('#cv-customer'),
  state: $('#cv-state'),
  presence: $('#cv-presence'),
  take: $('#cv-take'),
  resolve: $('#cv-resolve'),
  ticket: $('#cv-ticket'),
  notice: $('#cv-notice'),
  error: $('#cv-error'),
  messages: $('#cv-messages'),
  typing: $('#cv-typing'),
  reply: $('#cv-reply'),
  body: $('#cv-body'),
  hint: $('#cv-reply-hint'),
  count: $('#cv-count'),
  send: $('#cv-send'),
  facts: $('#cv-facts'),
  summaryBox: $('#cv-summary-box'),
  summary: $('#cv-summary'),
  kb: $('#cv-kb'),
  kbList: $('#cv-kb-list'),
  kbNote: $('#cv-kb-note'),
  capacity: $('#chats-capacity'),
  offer: $('#chat-offer'),
  offerTimer: $('#chat-offer-timer'),
  offerCustomer: $('#chat-offer-customer'),
  offerChannel: $('#chat-offer-channel'),
  offerQueue: $('#chat-offer-queue'),
  offerWait: $('#chat-offer-wait'),
  offerSummary: $('#chat-offer-summary'),
  offerAccept: $('#chat-offer-accept'),
  offerDecline: $('#chat-offer-decline'),
};

let enabled = false;       // signed in with conversations.read
let canWrite = false;      // conversations.write: take, resolve, reply
let canKb = false;         // kb.read: suggestions
let canTicket = false;     // tickets.write: a ticket from the chat
let me = null;             // /api/auth/me's user
let onExpired = () => {};
let session = 0;           // bumped at each start and stop: answers of an earlier session are dropped
let timer = null;
let failures = 0;          // polls in a row that failed: the next waits longer
let polling = null;        // the poll in flight (a Promise)
let again = false;         // something changed during that poll: poll once more after it
let lists = { waiting: [], mine: [], at: null };
let listTags = { waiting: null, mine: null };   // {path, tag} of the lists shown
let listError = null;
let openId = null;         // the chat shown
let chat = null;           // its GET /api/conversations/{id}, without the messages
let messages = [];         // its messages, by seq
let lastSeq = 0;
let chatTag = null;        // {path, tag} of the last answer applied
let chatError = null;
let changes = 0;           // answers to our own changes applied: a chat read begun before one is stale
const outbox = new Map();  // client_id -> {conversation, body, state: sending|sent|failed, error}
let seen = new Map();      // conversation id -> the last seq the agent has had on screen
let typingSentAt = 0;
let notice = null;         // {key, kind}
let noticeTimer = null;
let actionError = null;
let kb = { key: '', hits: [], error: null, loading: false };
let kbTimer = null;
let offer = null;          // the chat the ACD offers the agent now (me.chat_offer), with `since`
let offerDone = null;      // the offer's contact id once accepted or declined here: not shown again
let offerTimer = null;     // hides the offer when its ring time is over
let offerBusy = false;
let held = null;           // me.chats: {held, capacity}

// --- helpers --------------------------------------------------------------------------------

const myId = () => (me && Number.isFinite(me.id) ? me.id : null);
const chatPath = (id) => `/api/conversations/${encodeURIComponent(id)}`;
const waitingPath = () => `/api/conversations?handler=queue&unassigned=true&status=open&order=waiting&limit=${LIST_LIMIT}`;
const minePath = () => `/api/conversations?assignee=${myId()}&status=open&limit=${LIST_LIMIT}`;

function paneShown() {
  return enabled && dom.tab.getAttribute('aria-selected') === 'true';
}

function isExpired(err) {
  if (err && err.status === 401) {
    onExpired();
    return true;
  }
  return false;
}

const fmtTimeOrDash = (iso) => fmtTime(iso, '—');

function timeNode(iso) {
  const node = el('time', 'chat-time', fmtTimeOrDash(iso));
  if (iso) node.dateTime = iso;
  return node;
}

/** Server epoch seconds of an ISO time (the page's timers run on the server's clock). */
const epoch = (iso) => Date.parse(iso) / 1000;

function newClientId() {
  if (window.crypto && typeof window.crypto.randomUUID === 'function') return `desk-${window.crypto.randomUUID()}`;
  const bytes = new Uint8Array(16);
  window.crypto.getRandomValues(bytes);
  return `desk-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

function customerName(x) {
  const name = x.customer_name || (x.customer && x.customer.name) || '';
  return name || t('chats.visitor', { short: String(x.customer_id || '').slice(0, 6) });
}

/** waiting (nobody's), mine, other (another agent's), bot, resolved. */
function stateOf(x) {
  if (x.status === 'resolved') return 'resolved';
  if (x.assignee !== null && x.assignee !== undefined) return x.assignee === myId() ? 'mine' : 'other';
  return x.handler === 'bot' ? 'bot' : 'waiting';
}

/** New to the agent: a line after the last one they had on screen, and not their own (or a colleague's). */
function unread(x) {
  if (!x.last_author || x.last_author === 'agent' || !Number.isFinite(x.last_seq)) return false;
  if (x.id === openId && paneShown()) return false;
  return x.last_seq > (seen.get(x.id) || 0);
}

// "Seen" survives a reload of the page (sessionStorage, per user), not the browser's session.
const seenKey = () => `aicc.chats.seen.${myId()}`;

function loadSeen() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(seenKey()) || '[]');
    return new Map(Array.isArray(saved) ? saved.filter((e) => Array.isArray(e) && e.length === 2) : []);
  } catch {
    return new Map();
  }
}

function markSeen(id, seq) {
  if (!id || !Number.isFinite(seq) || (seen.get(id) || 0) >= seq) return;
  seen.delete(id);
  seen.set(id, seq);
  while (seen.size > SEEN_MAX) seen.delete(seen.keys().next().value);
  try {
    sessionStorage.setItem(seenKey(), JSON.stringify([...seen]));
  } catch { /* storage full or disabled: kept in memory */ }
}

/** GET with If-None-Match: {changed: false} on 304, else {changed: true, data, tag}. */
async function fetchTagged(path, known) {
  const headers = { Accept: 'application/json', 'X-Requested-With': 'fetch' };
  if (known && known.path === path && known.tag) headers['If-None-Match'] = known.tag;
  let res;
  try {
    res = await fetch(path, { credentials: 'same-origin', cache: 'no-store', headers });
  } catch {
    throw new api.ApiError(0, null, 'network error');
  }
  if (res.status === 304) return { changed: false };
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = text; }
  }
  if (!res.ok) throw new api.ApiError(res.status, data);
  return { changed: true, data, tag: res.headers.get('ETag') };
}

function setNotice(key, kind = 'ok', params = undefined) {
  notice = key ? { key, kind, params } : null;
  clearTimeout(noticeTimer);
  renderNotice();
  if (key) noticeTimer = setTimeout(() => setNotice(null), NOTICE_MS);
}

function renderNotice() {
  dom.notice.textContent = notice ? t(notice.key, notice.params) : '';
  dom.notice.dataset.kind = notice ? notice.kind : '';
  dom.notice.hidden = !notice;
}

function renderActionError() {
  const err = actionError || chatError;
  dom.error.textContent = '';
  if (err) {
    const key = actionError ? 'chats.failed' : 'chats.loadOneFailed';
    dom.error.textContent = err.key ? t(err.key, err.params) : t(key, { error: errorText(err) });
  }
  dom.error.hidden = !err;
}

// --- polling -----------------------------------------------------------------------------------

/** Poll now (the lists, and the open chat while the tab is shown); one asked for meanwhile follows. */
function pollNow() {
  if (!enabled) return Promise.resolve();
  if (polling) {
    again = true;
    return polling;
  }
  polling = (async () => {
    try {
      do {
        again = false;
        const ok = await loadLists();
        const chatOk = paneShown() && openId ? await loadChat() : true;
        failures = ok && chatOk ? 0 : failures + 1;
      } while (again && enabled);
    } finally {
      polling = null;
    }
  })();
  return polling;
}

/** The next poll: FAST_MS with the tab shown, SLOW_MS behind another tab, none while hidden. */
function schedule() {
  clearTimeout(timer);
  timer = null;
  if (!enabled || document.hidden) return;
  const base = paneShown() ? FAST_MS : SLOW_MS;
  const delay = failures ? Math.min(base * 2 ** failures, BACKOFF_MAX_MS) : base;
  const mine = session;
  timer = setTimeout(async () => {
    timer = null;
    await pollNow();
    if (mine === session) schedule();
  }, delay);
}

async function loadLists() {
  const mine = session;
  const paths = { waiting: waitingPath(), mine: minePath() };
  try {
    const [waiting, own] = await Promise.all([
      fetchTagged(paths.waiting, listTags.waiting),
      fetchTagged(paths.mine, listTags.mine),
    ]);
    if (mine !== session) return true;
    if (waiting.changed) {
      lists.waiting = Array.isArray(waiting.data) ? waiting.data : [];
      listTags.waiting = { path: paths.waiting, tag: waiting.tag };
    }
    if (own.changed) {
      lists.mine = Array.isArray(own.data) ? own.data : [];
      listTags.mine = { path: paths.mine, tag: own.tag };
    }
    lists.at = new Date().toISOString();
    listError = null;
    renderLists();
    return true;
  } catch (err) {
    if (mine !== session || isExpired(err)) return true;
    listError = err;
    renderLists();
    return false;
  }
}

async function loadChat() {
  const id = openId;
  const mine = session;
  const began = changes;
  const path = `${chatPath(id)}?after_seq=${lastSeq}`;
  try {
    const got = await fetchTagged(path, chatTag);
    if (mine !== session || id !== openId) return true;
    if (began !== changes) {   // one of our changes answered meanwhile: this read may be older
      again = true;
      return true;
    }
    chatError = null;
    if (got.changed) {
      applyChat(got.data);
      chatTag = { path, tag: got.tag };
      renderChat();
    } else {
      renderActionError();
    }
    return true;
  } catch (err) {
    if (mine !== session || id !== openId || isExpired(err)) return true;
    chatError = err;
    renderChat();
    return err.status === 404;   // gone: no point in backing off
  }
}

/** An answer about the open chat: the new messages are appended (or all of them, `whole`). */
function applyChat(data, { whole = false } = {}) {
  const { messages: fresh, ...rest } = data;
  chat = rest;
  if (whole) {
    messages = [];
    lastSeq = 0;
  }
  for (const m of Array.isArray(fresh) ? fresh : []) {
    if (m.seq > lastSeq) {
      messages.push(m);
      lastSeq = m.seq;
    }
    if (m.author === 'agent' && m.client_id) outbox.delete(m.client_id);
  }
  if (paneShown()) markSeen(chat.id, lastSeq);
  suggest();
}

// --- the lists -----------------------------------------------------------------------------------

/** Keyed reconciliation of <li>s: existing items (and the focus inside them) are kept. */
function syncList(list, items, create, update) {
  // Moving a node blurs it: a keyboard user whose chat moves up the list keeps the focus.
  const focused = list.contains(document.activeElement) ? document.activeElement : null;
  const existing = new Map([...list.children].map((li) => [li.dataset.id, li]));
  let previous = null;
  for (const item of items) {
    let li = existing.get(item.id);
    if (li) existing.delete(item.id);
    else li = create(item);
    update(li, item);
    const wanted = previous ? previous.nextSibling : list.firstChild;
    if (li !== wanted) list.insertBefore(li, wanted);
    previous = li;
  }
  for (const li of existing.values()) li.remove();
  if (focused && focused.isConnected && document.activeElement !== focused) focused.focus({ preventScroll: true });
}

function createItem(x) {
  const li = el('li', 'chat-item');
  li.dataset.id = x.id;
  const button = el('button', 'chat-open');
  button.type = 'button';
  const top = el('span', 'chat-item-top');
  top.append(el('span', 'chat-item-name'), el('span', 'chat-new'), el('span', 'chat-item-when'));
  button.append(top, el('span', 'chat-item-last'));
  button.addEventListener('click', () => openChat(li.dataset.id));
  li.append(button);
  return li;
}

function updateItem(li, x, kind) {
  const button = li.firstChild;
  const [top, last] = button.children;
  const [name, badge, when] = top.children;
  const who = customerName(x);
  name.textContent = who;
  const fresh = unread(x);
  badge.textContent = fresh ? t('chats.new') : '';
  badge.hidden = !fresh;
  li.dataset.unread = String(fresh);
  if (kind === 'waiting') {
    when.className = 'chat-item-when chat-wait';
    when.title = t('chats.waited');
    setTicking(when, epoch(x.queued_at || x.created_at));
  } else {
    delete when.dataset.tickSince;
    when.className = 'chat-item-when';
    when.title = '';
    when.textContent = fmtTimeOrDash(x.last_message_at || x.updated_at);
  }
  const preview = x.last_message ? `${labelFor('chats.author', x.last_author)}: ${x.last_message}` : '';
  last.textContent = preview || x.summary || '';
  const selected = x.id === openId;
  li.classList.toggle('selected', selected);
  if (selected) button.setAttribute('aria-current', 'true');
  else button.removeAttribute('aria-current');
  const label = kind === 'waiting' ? 'chats.openWaiting' : 'chats.openNamed';
  button.setAttribute('aria-label', t(label, { name: who, last: preview, new: fresh ? t('chats.new') : '' }));
}

function renderLists() {
  dom.listError.hidden = !listError;
  dom.listError.textContent = listError ? t('chats.loadFailed', { error: errorText(listError) }) : '';
  dom.updated.textContent = lists.at ? t('chats.updated', { time: fmtTimeOrDash(lists.at) }) : '';
  syncList(dom.waiting, lists.waiting, createItem, (li, x) => updateItem(li, x, 'waiting'));
  syncList(dom.mine, lists.mine, createItem, (li, x) => updateItem(li, x, 'mine'));
  dom.waitingEmpty.hidden = lists.waiting.length > 0;
  dom.mineEmpty.hidden = lists.mine.length > 0;
  dom.waitingCount.textContent = String(lists.waiting.length);
  dom.mineCount.textContent = String(lists.mine.length);
  // The tab counts what needs the agent: chats waiting, and their own with new customer messages.
  const fresh = lists.mine.filter(unread).length;
  const count = lists.waiting.length + fresh;
  dom.tabCount.textContent = String(count);
  dom.tabCount.hidden = !enabled || count === 0;
  dom.tabCount.dataset.unread = fresh ? 'true' : '';
  dom.tabCount.title = t('chats.badge', { waiting: lists.waiting.length, unread: fresh });
}

// --- one chat ----------------------------------------------------------------------------------------

async function openChat(id, { focus = true } = {}) {
  if (!id || !enabled) return;
  if (id !== openId) {
    openId = id;
    chat = null;
    messages = [];
    lastSeq = 0;
    chatTag = null;
    chatError = null;
    actionError = null;
    typingSentAt = 0;
    setNotice(null);
    dom.body.value = '';
    kb = { key: '', hits: [], error: null, loading: false };
    clearTimeout(kbTimer);
  }
  renderChat();
  renderLists();
  if (focus) dom.customer.focus();
  await pollNow();
  if (openId === id && focus && chat && stateOf(chat) === 'mine') dom.body.focus();
}

function canReply() {
  return canWrite && !!chat && stateOf(chat) === 'mine';
}

function authorText(m) {
  if (m.author === 'agent') {
    if (m.author_id === myId()) return t('chats.author.me');
    if (m.author_id !== null && m.author_id !== undefined) return t('chats.agentNamed', { id: m.author_id });
  }
  return labelFor('chats.author', m.author);
}

function messageItem(m) {
  const li = el('li', 'chat-msg');
  li.dataset.author = m.author;
  li.dataset.seq = String(m.seq);
  if (m.author === 'agent' && m.author_id === myId()) li.dataset.mine = 'true';
  const head = el('div', 'chat-msg-head');
  head.append(el('span', 'chat-msg-who', authorText(m)), timeNode(m.created_at));
  li.append(head, el('p', 'chat-msg-body', m.body));
  return li;
}

function outgoingItem(clientId, o) {
  const li = el('li', 'chat-msg');
  li.dataset.author = 'agent';
  li.dataset.mine = 'true';
  li.dataset.pending = o.state;
  li.dataset.clientId = clientId;
  const head = el('div', 'chat-msg-head');
  head.append(el('span', 'chat-msg-who', t('chats.author.me')));
  const status = el('span', 'chat-msg-status');
  if (o.state === 'failed') {
    status.textContent = t('chats.sendFailed', { error: errorText(o.error) });
    const retry = el('button', 'btn small chat-retry', t('chats.retry'));
    retry.type = 'button';
    retry.addEventListener('click', () => deliver(clientId));
    head.append(status, retry);
  } else {
    status.textContent = t(o.state === 'sent' ? 'chats.sent' : 'chats.sending');
    head.append(status);
  }
  li.append(head, el('p', 'chat-msg-body', o.body));
  return li;
}

function renderMessages({ toBottom = false } = {}) {
  const list = dom.messages;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const items = messages.map(messageItem);
  for (const [clientId, o] of outbox) {
    if (o.conversation === openId) items.push(outgoingItem(clientId, o));
  }
  if (!items.length) items.push(el('li', 'muted chat-empty', t(chat ? 'chats.noMessages' : 'chats.loading')));
  list.replaceChildren(...items);
  if (atBottom || toBottom) list.scrollTop = list.scrollHeight;
}

function fact(key, value) {
  const row = el('div', 'kv-row');
  const dd = el('dd');
  if (value instanceof Node) dd.append(value);
  else dd.textContent = value === null || value === undefined || value === '' ? '—' : String(value);
  row.append(el('dt', null, t(key)), dd);
  return row;
}

function renderFacts() {
  const x = chat;
  const rows = [];
  const identities = x.customer && Array.isArray(x.customer.identities) ? x.customer.identities : [];
  for (const identity of identities) {
    const row = fact(`chats.ident.${['phone', 'email', 'wecom', 'openid', 'app'].includes(identity.kind) ? identity.kind : 'other'}`, identity.value);
    row.dataset.kind = identity.kind;
    rows.push(row);
  }
  rows.push(fact('chats.channel', labelFor('chats.channelName', x.channel)));
  rows.push(fact('chats.language', x.language ? labelFor('chats.lang', x.language) : ''));
  rows.push(fact('chats.started', fmtTimeOrDash(x.created_at)));
  if (x.queue) rows.push(fact('chats.queue', x.queue));
  if (x.route_error && stateOf(x) === 'waiting') {
    const row = fact('chats.notRouted', x.route_error);
    row.classList.add('chat-route-error');
    rows.push(row);
  }
  if (x.reply_due_at && stateOf(x) === 'mine') {
    const due = el('span', 'chat-wait');
    setCountdown(due, epoch(x.reply_due_at));
    rows.push(fact('chats.replyDue', due));
  }
  if (x.queued_at) {
    const state = stateOf(x);
    const wait = el('span', state === 'waiting' ? 'chat-wait' : 'chat-time');
    if (state === 'waiting') setTicking(wait, epoch(x.queued_at));
    else wait.textContent = fmtTimeOrDash(x.queued_at);
    rows.push(fact(state === 'waiting' ? 'chats.waited' : 'chats.queuedAt', wait));
  }
  dom.facts.replaceChildren(...rows);
  dom.summary.textContent = x.summary || '';
  dom.summaryBox.hidden = !x.summary;
}

function renderChat() {
  dom.placeholder.hidden = !!openId;
  dom.view.hidden = !openId;
  renderActionError();
  renderNotice();
  if (!openId) return;
  dom.view.dataset.id = openId;
  if (!chat) {
    dom.customer.textContent = t('chats.loading');
    dom.state.textContent = '';
    dom.state.dataset.state = '';
    dom.presence.textContent = '';
    dom.typing.textContent = '';
    dom.take.hidden = true;
    dom.resolve.hidden = true;
    dom.ticket.hidden = true;
    dom.facts.replaceChildren();
    dom.summaryBox.hidden = true;
    renderReply();
    renderMessages();
    renderKb();
    return;
  }
  const state = stateOf(chat);
  dom.view.dataset.state = state;
  dom.customer.textContent = customerName(chat);
  dom.state.dataset.state = state;
  dom.state.textContent = t(`chats.state.${state}`, { id: chat.assignee });
  const online = !!chat.visitor_connected && state !== 'resolved';
  dom.presence.dataset.online = String(online);
  dom.presence.textContent = t(online ? 'chats.online' : 'chats.offline');
  dom.typing.textContent = chat.visitor_typing && state !== 'resolved' ? t('chats.typing') : '';
  dom.take.hidden = !canWrite || !(state === 'waiting' || state === 'bot');
  dom.resolve.hidden = !canWrite || !(state === 'mine' || state === 'waiting');
  dom.ticket.hidden = !canTicket;
  renderFacts();
  renderReply();
  renderMessages();
  renderKb();
}

function renderReply() {
  const ok = canReply();
  dom.reply.hidden = !canWrite;
  dom.body.disabled = !ok;
  dom.send.disabled = !ok;
  let hint = 'chats.replyHint';
  if (chat && !ok) {
    const state = stateOf(chat);
    if (state === 'resolved') hint = 'chats.resolvedNote';
    else if (state === 'other') hint = 'chats.otherHolds';
    else hint = 'chats.takeToReply';
  }
  dom.hint.textContent = t(hint, { id: chat ? chat.assignee : '' });
  renderCount();
}

function renderCount() {
  const n = dom.body.value.length;
  dom.count.textContent = n > BODY_MAX - 500 ? t('chats.count', { count: n, max: BODY_MAX }) : '';
  dom.count.dataset.over = String(n > BODY_MAX);
}

/** Take, resolve: the answer is the chat as it now is, with every message. */
async function act(button, send, noticeKey) {
  const id = openId;
  if (!id) return;
  button.disabled = true;
  actionError = null;
  renderActionError();
  try {
    const answer = await send(id);
    changes += 1;
    if (openId === id && answer) {
      applyChat(answer, { whole: true });
      chatTag = null;
      setNotice(noticeKey);
      renderChat();
    }
  } catch (err) {
    if (isExpired(err)) return;
    actionError = err.status === 409 && button === dom.take ? { key: 'chats.takenByOther' } : err;
    renderActionError();
  } finally {
    button.disabled = false;
    await pollNow();
  }
}

function take() {
  return act(dom.take, (id) => api.post(`${chatPath(id)}/assign`, { unassigned_only: true }), 'chats.taken')
    .then(() => { if (canReply()) dom.body.focus(); });
}

function resolve() {
  return act(dom.resolve, (id) => api.post(`${chatPath(id)}/resolve`), 'chats.resolvedNotice');
}

/** A ticket from the open chat (source email for an email thread): subject from the summary (the
 *  bot's, or an email's subject) or the customer's last words, the conversation in the description;
 *  the API links the chat and takes the customer (name, phone, email) from it. The new ticket opens in
 *  the Tickets tab for the agent to complete. */
async function ticketFromChat() {
  const id = openId;
  if (!id || !chat) return;
  const said = messages.filter((m) => m.author === 'customer');
  const last = said.length ? said[said.length - 1].body : '';
  const subject = (chat.summary || last || t('chats.ticketSubject')).replace(/\s+/g, ' ').trim().slice(0, 120);
  const lines = messages.slice(-30).map((m) => `${labelFor('chats.author', m.author)}: ${m.body}`);
  dom.ticket.disabled = true;
  actionError = null;
  renderActionError();
  try {
    const ticket = await api.post('/api/tickets', {
      subject,
      description: lines.join('\n').slice(0, 20000),
      source: chat.channel === 'email' ? 'email' : 'chat',
      conversation_id: id,
      language: chat.language || '',
    });
    setNotice('chats.ticketCreated', 'ok', { number: ticket.number });
    await showTicket(ticket.number);
  } catch (err) {
    if (isExpired(err)) return;
    actionError = err;
    renderActionError();
  } finally {
    dom.ticket.disabled = false;
  }
}

function submitReply(ev) {
  ev.preventDefault();
  if (!canReply()) return;
  const text = dom.body.value.trim();
  if (!text) {
    dom.body.focus();
    return;
  }
  if (text.length > BODY_MAX) {
    actionError = { key: 'chats.tooLong', params: { count: text.length, max: BODY_MAX } };
    renderActionError();
    dom.body.setAttribute('aria-invalid', 'true');
    return;
  }
  actionError = null;
  renderActionError();
  dom.body.removeAttribute('aria-invalid');
  const clientId = newClientId();
  outbox.set(clientId, { conversation: openId, body: text, state: 'sending', error: null });
  dom.body.value = '';
  renderCount();
  deliver(clientId);
}

/** Send (or send again, under the same client id: stored once) a reply of the outbox. */
async function deliver(clientId) {
  const o = outbox.get(clientId);
  if (!o) return;
  o.state = 'sending';
  o.error = null;
  if (o.conversation === openId) renderMessages({ toBottom: true });
  try {
    await api.post(`${chatPath(o.conversation)}/messages`, { body: o.body, client_id: clientId });
    o.state = 'sent';   // shown so until the poll brings it back as stored
    typingSentAt = 0;
  } catch (err) {
    if (isExpired(err)) return;
    o.state = 'failed';
    o.error = err;
  }
  if (o.conversation === openId && outbox.has(clientId)) renderMessages({ toBottom: true });
  pollNow();
}

function typing() {
  renderCount();
  dom.body.removeAttribute('aria-invalid');
  if (!canReply() || !dom.body.value.trim()) return;
  const now = Date.now();
  if (now - typingSentAt < TYPING_EVERY_MS) return;
  typingSentAt = now;
  api.post(`${chatPath(openId)}/typing`).catch((err) => { isExpired(err); });
}

// --- suggested articles ------------------------------------------------------------------------------

function kbQuery() {
  const parts = [];
  const summary = String(chat.summary || '').trim();
  if (summary) parts.push(summary.slice(0, KB_SUMMARY_CAP));
  const lines = messages.filter((m) => m.author === 'customer').slice(-KB_CUSTOMER_LINES)
    .map((m) => String(m.body).trim()).filter((text) => text);
  let room = KB_QUERY_CAP - (parts.length ? parts[0].length + 1 : 0);
  const picked = [];
  for (const line of lines.reverse()) {   // the latest words first, while there is room
    if (room <= 0) break;
    const piece = line.slice(0, room);
    picked.unshift(piece);
    room -= piece.length + 1;
  }
  return [...parts, ...picked].join(' ').slice(0, KB_QUERY_CAP);
}

function suggest() {
  if (!canKb || !chat) return;
  const query = kbQuery();
  const language = chat.language === 'zh' || chat.language === 'en' ? chat.language : (getLang() === 'zh' ? 'zh' : 'en');
  const key = query ? `${chat.id}\n${language}\n${query}` : '';
  if (key === kb.key) return;
  clearTimeout(kbTimer);
  const sameChat = kb.key.split('\n')[0] === String(chat.id);
  kb = { key, query, language, hits: sameChat ? kb.hits : [], error: null, loading: !!query };
  if (query) kbTimer = setTimeout(() => loadKb(key), KB_DELAY_MS);
}

async function loadKb(key) {
  if (!enabled || kb.key !== key) return;
  renderKb();
  const { query, language } = kb;
  try {
    const params = new URLSearchParams({ q: query, language, limit: String(KB_LIMIT) });
    const hits = await api.get(`/api/kb/search?${params}`);
    if (!enabled || kb.key !== key) return;
    kb = { ...kb, hits: Array.isArray(hits) ? hits.slice(0, KB_LIMIT) : [], loading: false };
  } catch (err) {
    if (isExpired(err) || kb.key !== key) return;
    kb = { ...kb, error: err, loading: false };
  }
  renderKb();
}

function kbItem(hit) {
  const li = el('li', 'kb-hit kb-suggestion');
  li.dataset.id = String(hit.id);
  const open = el('button', 'link-button kb-hit-title', hit.title);
  open.type = 'button';
  open.setAttribute('aria-label', t('kb.openNamed', { title: hit.title }));
  open.addEventListener('click', () => openArticle(hit.id));
  const snippet = el('p', 'kb-snippet');
  snippet.append(...snippetNodes(hit.snippet));
  li.append(open, snippet);
  return li;
}

function renderKb() {
  dom.kb.hidden = !canKb || !chat || !kb.key;
  dom.kbList.replaceChildren(...kb.hits.map(kbItem));
  let note = '';
  if (kb.loading) note = t('kb.suggesting');
  else if (kb.error) note = t('kb.suggestFailed', { error: errorText(kb.error) });
  else if (kb.key && !kb.hits.length) note = t('kb.suggestNone');
  dom.kbNote.textContent = note;
  dom.kbNote.hidden = !note;
}

// --- a chat the ACD offers ---------------------------------------------------------------------------

function offerShown() {
  return enabled && canWrite && !!offer && offer.contact_id !== offerDone
    && Number(offer.expires_at) > serverNow();
}

function renderOffer() {
  clearTimeout(offerTimer);
  offerTimer = null;
  const shown = offerShown();
  dom.offer.hidden = !shown;
  if (!shown) {
    dom.offer.dataset.id = '';
    return;
  }
  dom.offer.dataset.id = offer.conversation_id || '';
  dom.offerCustomer.textContent = offer.customer || t('chats.visitor', { short: '' }).trim();
  dom.offerChannel.textContent = offer.channel ? labelFor('chats.channelName', offer.channel) : '';
  dom.offerQueue.textContent = offer.queue || '';
  setTicking(dom.offerWait, offer.since);
  setCountdown(dom.offerTimer, Number(offer.expires_at));
  dom.offerSummary.textContent = offer.summary || '';
  dom.offerSummary.hidden = !offer.summary;
  dom.offerAccept.disabled = offerBusy;
  dom.offerDecline.disabled = offerBusy;
  // Rung out: the API reports no answer and the next snapshot says so; hide it on time meanwhile.
  offerTimer = setTimeout(renderOffer, Math.max(0, (Number(offer.expires_at) - serverNow()) * 1000) + 50);
}

function renderCapacity() {
  const shown = enabled && !!held && held.capacity > 0;
  dom.capacity.hidden = !shown;
  dom.capacity.textContent = shown ? t('chats.capacity', { held: held.held, capacity: held.capacity }) : '';
}

let chimes = null;  // the AudioContext of the offer chime, made on the first offer

/** A short two-note chime when a chat is offered: the agent may be looking at another tab or window.
 *  Made with WebAudio (no file to fetch); where the browser has no audio it is silently skipped and
 *  the offer still shows. body[data-chimes] counts them (the page's tests read it). */
function chime() {
  try {
    chimes = chimes || new AudioContext();
    if (chimes.state === 'suspended') chimes.resume();
    const start = chimes.currentTime;
    [[880, 0], [1320, 0.18]].forEach(([hz, at]) => {
      const tone = chimes.createOscillator();
      const gain = chimes.createGain();
      tone.frequency.value = hz;
      gain.gain.setValueAtTime(0.0001, start + at);
      gain.gain.exponentialRampToValueAtTime(0.2, start + at + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, start + at + 0.16);
      tone.connect(gain).connect(chimes.destination);
      tone.start(start + at);
      tone.stop(start + at + 0.18);
    });
    document.body.dataset.chimes = String(Number(document.body.dataset.chimes || 0) + 1);
  } catch (err) {
    console.warn('chat offer chime: no audio', err);
  }
}

/** The live snapshot's me.chat_offer and me.chats (desk.js passes every snapshot's). */
export function setChatOffer(chatOffer, chats) {
  const same = offer && chatOffer && offer.contact_id === chatOffer.contact_id;
  if (chatOffer && !same && chatOffer.contact_id !== offerDone) chime();
  offer = chatOffer
    ? { ...chatOffer, since: same ? offer.since : serverNow() - (Number(chatOffer.waiting_s) || 0) }
    : null;
  if (!offer) offerDone = null;
  held = chats || null;
  renderOffer();
  renderCapacity();
}

async function answerOffer(accept) {
  if (!offerShown() || offerBusy) return;
  const { conversation_id: id, contact_id: contact } = offer;
  offerBusy = true;
  renderOffer();
  try {
    const answer = await api.post(`${chatPath(id)}/${accept ? 'accept' : 'decline'}`);
    offerDone = contact;
    banner.clear('chat-offer');
    if (accept) {
      if (dom.tab.getAttribute('aria-selected') !== 'true') dom.tab.click();   // tickets.js selects it
      await openChat(id);
      if (openId === id && answer && answer.id) {
        applyChat(answer, { whole: true });
        chatTag = null;
        changes += 1;
        renderChat();
        if (canReply()) dom.body.focus();
      }
      setNotice('chats.offer.accepted');
    }
  } catch (err) {
    if (isExpired(err)) return;
    offerDone = contact;
    banner.set('chat-offer', 'error', { key: 'chats.offer.gone', params: { error: errorText(err) }, timeoutMs: 8000 });
  } finally {
    offerBusy = false;
    renderOffer();
    pollNow();
  }
}

// --- the tab and lifecycle ---------------------------------------------------------------------------

// tickets.js owns the tab bar (clicks, arrow keys, the other panes): this pane follows its tab.
function syncPane() {
  const shown = paneShown();
  const was = !dom.pane.hidden;
  dom.pane.hidden = !shown;
  if (shown === was || !enabled) return;
  if (shown) {
    if (chat) markSeen(chat.id, lastSeq);
    renderLists();
    pollNow().then(schedule);
  } else {
    schedule();
  }
}

/** Arrow keys move between the chats of both lists; Home and End to the first and last. */
function listKeys(ev) {
  const buttons = [...dom.lists.querySelectorAll('.chat-open')];
  const index = buttons.indexOf(document.activeElement);
  if (index < 0) return;
  let next = null;
  if (ev.key === 'ArrowDown') next = Math.min(index + 1, buttons.length - 1);
  else if (ev.key === 'ArrowUp') next = Math.max(index - 1, 0);
  else if (ev.key === 'Home') next = 0;
  else if (ev.key === 'End') next = buttons.length - 1;
  if (next === null) return;
  ev.preventDefault();
  buttons[next].focus();
}

function renderAll() {
  renderLists();
  renderChat();
  renderOffer();
  renderCapacity();
}

/** Signed in: `mePayload` is /api/auth/me's answer; `expired` ends the session (an API call answered 401). */
export function startChats(mePayload, expired) {
  const permissions = mePayload && Array.isArray(mePayload.permissions) ? mePayload.permissions : [];
  // An empty list: /api/auth/me failed right after the login; the API still says no where it must.
  const can = (p) => !permissions.length || permissions.includes(p);
  session += 1;
  onExpired = expired || (() => {});
  me = (mePayload && mePayload.user) || null;
  enabled = can('conversations.read') && myId() !== null;
  canWrite = can('conversations.write');
  canKb = can('kb.read');
  canTicket = can('tickets.write');
  dom.tab.hidden = !enabled;
  syncPane();
  if (!enabled) return;
  seen = loadSeen();
  failures = 0;
  renderAll();
  pollNow().then(schedule);
}

export function stopChats() {
  session += 1;
  enabled = false;
  me = null;
  clearTimeout(timer);
  timer = null;
  clearTimeout(kbTimer);
  lists = { waiting: [], mine: [], at: null };
  listTags = { waiting: null, mine: null };
  listError = null;
  openId = null;
  chat = null;
  messages = [];
  lastSeq = 0;
  chatTag = null;
  chatError = null;
  actionError = null;
  outbox.clear();
  seen = new Map();
  kb = { key: '', hits: [], error: null, loading: false };
  offer = null;
  offerDone = null;
  held = null;
  setNotice(null);
  dom.body.value = '';
  dom.tab.hidden = true;
  syncPane();
  renderAll();
}

function wire() {
  new MutationObserver(syncPane).observe(dom.tab, { attributes: true, attributeFilter: ['aria-selected'] });
  dom.lists.addEventListener('keydown', listKeys);
  dom.take.addEventListener('click', take);
  dom.resolve.addEventListener('click', resolve);
  dom.ticket.addEventListener('click', ticketFromChat);
  dom.offerAccept.addEventListener('click', () => answerOffer(true));
  dom.offerDecline.addEventListener('click', () => answerOffer(false));
  dom.reply.addEventListener('submit', submitReply);
  dom.body.addEventListener('input', typing);
  dom.body.addEventListener('keydown', (ev) => {
    // Enter sends; Shift+Enter is a new line; Enter that ends an input method's composition (pinyin) is not.
    if (ev.key !== 'Enter' || ev.shiftKey || ev.isComposing || ev.keyCode === 229) return;
    ev.preventDefault();
    dom.reply.requestSubmit();
  });
  document.addEventListener('visibilitychange', () => {
    if (!enabled) return;
    if (document.hidden) schedule();
    else pollNow().then(schedule);
  });
  onLangChange(renderAll);
}

wire();
renderAll();
