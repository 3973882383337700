// Agent desktop: status, softphone, queue counters, contact pop and wrap-up; tickets in tickets.js,
// web chats in chats.js, the knowledge base (and the articles suggested for the contact) in
// knowledge.js, the header's notifications in notifications.js.
// Everything visible is re-rendered from the latest snapshot (idempotent);
// the softphone's own state comes from phone.js events.
import * as api from './api.js';
import { t, has, getLang, onLangChange } from './i18n.js';
import {
  $, $$, el, banner, errorText, showActionError, labelFor, agentStatusText,
  setServerTime, serverNow, setTicking, setFrozen, setCountdown, fmtDuration, syncRows,
} from './ui.js';
import { Softphone } from './phone.js';
import { unlockAudio } from './ringer.js';
import { startShell } from './shell.js';
import { setCall, startTickets, stopTickets } from './tickets.js';
import { suggestFor, startKnowledge, stopKnowledge } from './knowledge.js';
import { startNotifications, stopNotifications } from './notifications.js';
import { setChatOffer, startChats, stopChats } from './chats.js';

const dom = {
  phoneStatus: $('#phone-status'),
  phoneRetry: $('#phone-retry'),
  agentStatus: $('#agent-status'),
  statusText: $('#agent-status .status-text'),
  statusTime: $('#agent-status .status-time'),
  statusReady: $('#status-ready'),
  statusAway: $('#status-away'),
  statusLogout: $('#status-logout'),
  awayReason: $('#away-reason'),
  callState: $('#call-state'),
  callPeer: $('#call-peer'),
  callTimer: $('#call-timer'),
  answer: $('#answer'),
  hangup: $('#hangup'),
  hold: $('#hold'),
  mute: $('#mute'),
  dtmfButtons: $$('.dtmf button[data-digit]'),
  transferForm: $('#transfer-form'),
  transferTarget: $('#transfer-target'),
  transferBlind: $('#transfer-blind'),
  dialForm: $('#dial-form'),
  dialNumber: $('#dial-number'),
  dial: $('#dial'),
  remoteAudio: $('#remote-audio'),
  queuesBody: $('#my-queues tbody'),
  queuesEmpty: $('#my-queues-empty'),
  pop: $('#contact-pop'),
  popCaller: $('#pop-caller'),
  popPhase: $('#pop-phase'),
  popQueue: $('#pop-queue'),
  popWait: $('#pop-wait'),
  popLanguage: $('#pop-language'),
  popIntent: $('#pop-intent'),
  popSummary: $('#pop-summary'),
  popTranscript: $('#pop-transcript'),
  popCustomer: $('#pop-customer'),
  noContact: $('#no-contact'),
  wrapup: $('#wrapup'),
  wrapupForm: $('#wrapup-form'),
  wrapupDisposition: $('#wrapup-disposition'),
  wrapupNote: $('#wrapup-note'),
  wrapupSubmit: $('#wrapup-submit'),
  wrapupTimer: $('#wrapup-timer'),
};

let active = false;        // signed in and the page started
let phone = null;          // Softphone
let mic = null;            // MediaStream granted at login, reused for calls
let micBlocked = false;
let snapshot = null;       // latest snapshot
let meNow = null;          // snapshot.me, with optimistic status updates applied
let lastContactId = null;  // for wrap-up when me.contact is already cleared
let lastPop = null;        // the last full screen pop: it stays on screen through the wrap-up
let dispositions = [];
let dispositionsLoading = false;
let flashTimer = null;

// Hook for automated end-to-end checks.
window.aiccDesk = {
  phone: {
    get state() { return phoneState(); },
    get callState() { return phone ? phone.callState : 'idle'; },
    async stats() { return phone ? phone.stats() : null; },
  },
};

function phoneState() {
  if (micBlocked) return 'no-mic';
  return phone ? phone.state : 'off';
}

const pageTitle = () => `aicc · ${t('desk.title')}`;

// --- phone -------------------------------------------------------------------

async function startPhone() {
  micBlocked = false;
  renderPhone();
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    micFailed();
    return;
  }
  try {
    mic = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    console.warn('microphone unavailable', err);
    micFailed();
    return;
  }
  if (!active) {                       // signed out while the prompt was open
    stopMic();
    return;
  }
  const p = new Softphone({
    fetchToken: () => api.post('/api/agents/me/sip-token'),
    micStream: mic,
    remoteAudio: dom.remoteAudio,
  });
  phone = p;
  p.addEventListener('state', () => onPhoneState(p));
  p.addEventListener('callstate', renderCall);
  p.addEventListener('mute', renderCall);
  p.addEventListener('connection-lost', () => {
    banner.set('phone-conn', 'warn', { key: 'phone.lost' });
  });
  p.addEventListener('reconnected', () => {
    banner.set('phone-conn', 'info', { key: 'phone.reconnected', timeoutMs: 4000 });
  });
  p.addEventListener('transfer', (ev) => {
    const { phase, cause } = ev.detail;
    if (phase === 'failed') banner.set('transfer', 'error', { key: 'call.transferFailed', params: { cause: cause || '' }, timeoutMs: 10000 });
    else banner.set('transfer', 'info', { key: `call.transfer.${phase}`, timeoutMs: 5000 });
  });
  await p.start();
}

function micFailed() {
  micBlocked = true;
  banner.set('mic', 'error', { key: 'phone.micBlocked' });
  renderPhone();
}

function stopMic() {
  if (mic) for (const track of mic.getTracks()) track.stop();
  mic = null;
}

function onPhoneState(p) {
  if (p !== phone) return;
  if (p.state === 'failed') {
    const reason = p.failure || 'sip';
    banner.set('phone', 'error', { key: has(`phone.fail.${reason}`) ? `phone.fail.${reason}` : 'phone.fail.sip' });
  } else if (p.state === 'registered') {
    banner.clear('phone');     // 'phone-conn' is replaced by the 'reconnected' notice
  }
  renderPhone();
}

function renderPhone() {
  const state = phoneState();
  dom.phoneStatus.dataset.state = state;
  dom.phoneStatus.textContent = t(`phone.${state}`);
  dom.phoneRetry.hidden = !(phone && state === 'failed');
  renderCall();
}

function renderCall() {
  const cs = phone ? phone.callState : 'idle';
  const direction = phone ? phone.direction : null;
  dom.callState.dataset.state = cs;
  dom.callState.dataset.direction = cs === 'idle' ? '' : (direction || '');
  dom.callState.textContent = cs === 'ringing' && direction === 'out' ? t('call.state.dialing') : t(`call.state.${cs}`);
  // An incoming call is the pop's contact: show its number as masked for this agent, not the
  // signalling's From.
  const incoming = direction === 'in' && lastPop ? lastPop.caller : '';
  dom.callPeer.textContent = phone && cs !== 'idle' ? (incoming || phone.peer) : '';
  renderCallTimer();

  const held = !!(phone && phone.held);
  const muted = !!(phone && phone.muted);
  setToggle(dom.hold, held, held ? 'call.unhold' : 'call.hold');
  setToggle(dom.mute, muted, muted ? 'call.unmute' : 'call.mute');

  if (cs === 'ringing' && direction === 'in') startTitleFlash();
  else stopTitleFlash();
  updateControls();
}

function setToggle(button, on, key) {
  button.dataset.on = String(on);
  button.setAttribute('aria-pressed', String(on));
  button.textContent = t(key);
}

function renderCallTimer() {
  const secs = phone ? phone.talkSeconds : null;
  dom.callTimer.textContent = secs === null ? '00:00' : fmtDuration(secs);
}

function updateControls() {
  const cs = phone ? phone.callState : 'idle';
  const inCall = cs === 'talking' || cs === 'held';
  const registered = phoneState() === 'registered';
  dom.answer.disabled = !(cs === 'ringing' && phone.direction === 'in');
  dom.hangup.disabled = !(cs === 'ringing' || inCall);
  dom.hold.disabled = !inCall;
  dom.mute.disabled = !inCall;
  for (const b of dom.dtmfButtons) b.disabled = !inCall;
  dom.transferBlind.disabled = !inCall;
  dom.dial.disabled = !(registered && (cs === 'idle' || cs === 'ended'));
  dom.statusReady.disabled = !registered;
  dom.statusReady.title = registered ? t('desk.readyHint') : t('desk.readyNeedsPhone');
}

function startTitleFlash() {
  if (flashTimer) return;
  let on = true;
  document.title = t('call.titleIncoming');
  flashTimer = setInterval(() => {
    on = !on;
    document.title = on ? t('call.titleIncoming') : pageTitle();
  }, 1000);
}

function stopTitleFlash() {
  if (flashTimer) clearInterval(flashTimer);
  flashTimer = null;
  document.title = pageTitle();
}

function doAnswer() {
  if (!phone || dom.answer.disabled) return;
  try {
    phone.answer();
  } catch (err) {
    console.error('answer failed', err);
    banner.set('call', 'error', { key: 'call.answerFailed', timeoutMs: 8000 });
  }
}

function doHangup() {
  if (!phone || dom.hangup.disabled) return;
  try {
    phone.hangup();
  } catch (err) {
    console.error('hangup failed', err);
  }
}

// --- agent status --------------------------------------------------------------

async function setStatus(status, reason = '') {
  try {
    const res = await api.post('/api/agents/me/status', { status, reason });
    banner.clear('status');
    applyAgentNow(res);
  } catch (err) {
    showActionError(err, 'status');
  }
}

/** Apply an AgentNow response right away; the next snapshot confirms it. */
function applyAgentNow(res) {
  if (!res || !meNow) return;
  const changed = (res.status && res.status !== meNow.status) || (res.state && res.state !== meNow.state);
  meNow = {
    ...meNow,
    status: res.status || meNow.status,
    state: res.state || meNow.state,
    reason: res.reason !== undefined ? res.reason : meNow.reason,
    since: changed ? serverNow() : meNow.since,
  };
  renderAll();
}

function renderStatus() {
  const me = meNow;
  const node = dom.agentStatus;
  if (!me) {
    node.dataset.status = 'logged_out';
    node.dataset.state = 'idle';
    dom.statusText.textContent = snapshot ? t('desk.noAgentProfile') : '…';
    setTicking(dom.statusTime, null);
    dom.statusTime.textContent = '';
  } else {
    node.dataset.status = me.status || 'logged_out';
    node.dataset.state = me.state || 'idle';
    dom.statusText.textContent = agentStatusText(me.status, me.state, me.reason);
    setTicking(dom.statusTime, me.since);
    if (me.status === 'away' && me.reason && document.activeElement !== dom.awayReason
        && [...dom.awayReason.options].some((o) => o.value === me.reason)) {
      dom.awayReason.value = me.reason;
    }
  }
  const status = me ? me.status : null;
  dom.statusReady.setAttribute('aria-pressed', String(status === 'ready'));
  dom.statusAway.setAttribute('aria-pressed', String(status === 'away'));
  dom.statusLogout.setAttribute('aria-pressed', String(status === 'logged_out'));
}

// --- queues ----------------------------------------------------------------------

function renderQueues() {
  const names = (meNow && Array.isArray(meNow.queues)) ? meNow.queues : [];
  const queues = (snapshot && snapshot.queues) || {};
  const at = snapshot ? snapshot.at : serverNow();
  syncRows(dom.queuesBody, names, {
    key: (name) => name,
    attr: 'data-queue',
    create: () => {
      const tr = el('tr');
      tr.append(el('th', 'name'), el('td', 'waiting num'), el('td', 'longest num timer'));
      tr.firstChild.scope = 'row';
      return tr;
    },
    update: (tr, name) => {
      const q = queues[name];
      const [nameCell, waiting, longest] = tr.cells;
      nameCell.textContent = name;
      waiting.textContent = q ? String(q.waiting ?? 0) : '—';
      if (q && q.waiting > 0 && Number.isFinite(q.longest_wait_s)) setTicking(longest, at - q.longest_wait_s);
      else setFrozen(longest, q ? (q.longest_wait_s || 0) : null);
      tr.classList.toggle('has-waiting', !!(q && q.waiting > 0));
    },
  });
  dom.queuesEmpty.hidden = names.length > 0 || !meNow;
}

// --- contact pop -------------------------------------------------------------------

function languageName(code) {
  if (!code) return '—';
  try {
    const names = new Intl.DisplayNames([getLang() === 'zh' ? 'zh-CN' : 'en'], { type: 'language' });
    const name = names.of(code);
    return name && name !== code ? `${name} (${code})` : code;
  } catch {
    return String(code);
  }
}

function renderContact() {
  const me = meNow;
  let c = me && me.contact;
  // Ringing or connected, the pop is whole; in wrap-up the server only names the contact.
  if (c && 'caller' in c) lastPop = c;
  else if (c && lastPop && lastPop.contact_id === c.contact_id) c = { ...lastPop, ...c };
  setCall(c, me && me.state);
  suggestFor(c || null);
  if (!c) {
    dom.pop.hidden = true;
    dom.pop.dataset.contactId = '';
    delete dom.pop.dataset.state;
    dom.noContact.hidden = !dom.wrapup.hidden;
    return;
  }
  if (c.contact_id) lastContactId = c.contact_id;
  dom.pop.hidden = false;
  dom.noContact.hidden = true;
  dom.pop.dataset.contactId = c.contact_id || '';
  dom.pop.dataset.state = me.state || '';
  dom.popPhase.dataset.state = me.state || '';
  dom.popPhase.textContent = labelFor('pop.phase', me.state);
  dom.popCaller.textContent = c.caller || t('pop.unknownCaller');
  dom.popQueue.textContent = c.queue || '—';
  // The wait only grows while the contact still rings for us.
  if (me.state === 'reserved' && snapshot && Number.isFinite(c.waiting_s)) setTicking(dom.popWait, snapshot.at - c.waiting_s);
  else setFrozen(dom.popWait, c.waiting_s);
  dom.popLanguage.textContent = languageName(c.language);
  dom.popIntent.textContent = c.intent || '—';
  dom.popSummary.textContent = c.summary || t('pop.noSummary');
  renderTranscript(Array.isArray(c.transcript) ? c.transcript : []);
  renderCustomer(c.customer);
  renderCall();  // the caller's number shown on the phone comes from the pop
}

function renderTranscript(lines) {
  const list = dom.popTranscript;
  const scroller = list.parentElement;
  const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 24;
  list.replaceChildren(...lines.map((line) => {
    const li = el('li', 'line');
    li.dataset.speaker = line.speaker || '';
    li.append(el('span', 'speaker', labelFor('speaker', line.speaker) || '?'));
    if (Number.isFinite(line.at_s)) li.append(el('span', 'at', fmtDuration(line.at_s)));
    li.append(el('span', 'text', line.text || ''));
    return li;
  }));
  if (!lines.length) list.append(el('li', 'muted', t('pop.noTranscript')));
  if (atBottom) scroller.scrollTop = scroller.scrollHeight;
}

function keyLabel(key) {
  const k = `cust.${key}`;
  if (has(k)) return t(k);
  const text = String(key).replace(/[_-]+/g, ' ').trim();
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** Free-form customer record -> nested definition lists, all as text. */
function valueNode(value, depth) {
  if (value === null || value === undefined || value === '') return document.createTextNode('—');
  if (typeof value === 'boolean') return document.createTextNode(t(value ? 'common.yes' : 'common.no'));
  if (typeof value !== 'object') return document.createTextNode(String(value));
  if (depth > 3) return document.createTextNode(JSON.stringify(value));
  if (Array.isArray(value)) {
    if (!value.length) return document.createTextNode('—');
    if (value.every((v) => v === null || typeof v !== 'object')) {
      return document.createTextNode(value.map((v) => (v === null ? '—' : String(v))).join(', '));
    }
    const ul = el('ul', 'kv-list');
    for (const item of value) {
      const li = el('li');
      li.append(valueNode(item, depth + 1));
      ul.append(li);
    }
    return ul;
  }
  const dl = el('dl', 'kv nested');
  fillKv(dl, value, depth + 1);
  return dl;
}

function fillKv(dl, obj, depth) {
  for (const [key, value] of Object.entries(obj)) {
    const row = el('div', 'kv-row');
    const dd = el('dd');
    dd.append(valueNode(value, depth));
    row.append(el('dt', null, keyLabel(key)), dd);
    dl.append(row);
  }
}

function renderCustomer(customer) {
  const dl = dom.popCustomer;
  dl.replaceChildren();
  if (!customer || typeof customer !== 'object' || !Object.keys(customer).length) {
    const row = el('div', 'kv-row');
    row.append(el('dt', null, t('pop.customer')), el('dd', 'muted', t('pop.noCustomer')));
    dl.append(row);
    return;
  }
  fillKv(dl, customer, 0);
}

// --- transfer targets -------------------------------------------------------------------

let transferQueues = [];

/** The voice queues an agent may transfer a caller to, offered in the transfer field's list. */
async function loadTransferQueues() {
  try {
    const list = await api.get('/api/queues');
    transferQueues = (Array.isArray(list) ? list : []).filter((q) => q && q.name && (q.channel || 'voice') === 'voice');
  } catch (err) {
    transferQueues = [];  // the field still takes a typed queue name
    if (active && err.status !== 401) console.warn('queues for transfer not loaded', err);
  }
  renderTransferQueues();
}

function renderTransferQueues() {
  const list = $('#transfer-queues');
  if (!list) return;
  list.replaceChildren(...transferQueues.map((q) => {
    const option = document.createElement('option');
    option.value = q.name;
    const names = q.display_name || {};
    option.label = names[getLang()] || names.en || names.zh || q.name;
    return option;
  }));
}

// --- wrap-up -------------------------------------------------------------------------

async function loadDispositions() {
  if (dispositionsLoading) return;
  dispositionsLoading = true;
  try {
    const list = await api.get('/api/dispositions');
    const items = Array.isArray(list) ? list : (list && Array.isArray(list.items) ? list.items : []);
    dispositions = items.filter((d) => d && d.code && d.active !== false);
    banner.clear('dispositions');
    renderDispositions();
  } catch (err) {
    if (active && err.status !== 401) {
      banner.set('dispositions', 'warn', { key: 'wrapup.loadFailed', params: { error: errorText(err) }, timeoutMs: 10000 });
    }
  } finally {
    dispositionsLoading = false;
  }
}

function dispositionLabel(d) {
  if (getLang() === 'zh' && d.label_zh) return d.label_zh;
  return d.label || d.code;
}

function renderDispositions() {
  const select = dom.wrapupDisposition;
  const selected = select.value;
  const placeholder = select.options[0];
  select.replaceChildren(placeholder);
  for (const d of dispositions) {
    const option = el('option', null, dispositionLabel(d));
    option.value = d.code;
    select.append(option);
  }
  if (dispositions.some((d) => d.code === selected)) select.value = selected;
}

function renderWrapup() {
  const me = meNow;
  const inWrapup = !!(me && me.state === 'wrap_up');
  if (!inWrapup && !dom.wrapup.hidden) {
    dom.wrapupForm.reset();
    dom.wrapupDisposition.removeAttribute('aria-invalid');
  }
  dom.wrapup.hidden = !inWrapup;
  if (!inWrapup) return;
  if (!dispositions.length) loadDispositions();
  const until = me.wrapup_until;
  setCountdown(dom.wrapupTimer, Number.isFinite(until) ? until : null);
  dom.wrapupTimer.parentElement.hidden = !Number.isFinite(until);
}

async function submitWrapup(ev) {
  ev.preventDefault();
  const code = dom.wrapupDisposition.value;
  if (!code) {
    dom.wrapupDisposition.setAttribute('aria-invalid', 'true');
    dom.wrapupDisposition.focus();
    banner.set('wrapup', 'error', { key: 'wrapup.needDisposition', timeoutMs: 8000 });
    return;
  }
  dom.wrapupDisposition.removeAttribute('aria-invalid');
  const contactId = (meNow && meNow.contact && meNow.contact.contact_id) || lastContactId;
  if (!contactId) {
    banner.set('wrapup', 'error', { key: 'wrapup.noContact', timeoutMs: 8000 });
    return;
  }
  dom.wrapupSubmit.disabled = true;
  try {
    const res = await api.post('/api/agents/me/wrapup', {
      contact_id: contactId,
      disposition: code,
      note: dom.wrapupNote.value.trim(),
    });
    dom.wrapupForm.reset();
    banner.set('wrapup', 'info', { key: 'wrapup.saved', timeoutMs: 4000 });
    applyAgentNow(res);
  } catch (err) {
    showActionError(err, 'wrapup');
  } finally {
    dom.wrapupSubmit.disabled = false;
  }
}

// --- rendering -------------------------------------------------------------------------

function renderAll() {
  renderStatus();
  renderQueues();
  renderWrapup();
  renderContact();
  renderPhone();
  // A chat the ACD offers, and the chats held: the Chats tab's (chats.js).
  setChatOffer(meNow ? meNow.chat_offer || null : null, meNow ? meNow.chats || null : null);
}

function onSnapshot(snap) {
  if (!active || !snap || typeof snap !== 'object') return;
  snapshot = snap;
  setServerTime(snap.at);
  meNow = snap.me ? { ...snap.me } : null;
  renderAll();
}

function resetPage() {
  snapshot = null;
  meNow = null;
  lastContactId = null;
  micBlocked = false;
  dom.wrapupForm.reset();
  dom.transferTarget.value = '';
  dom.dialNumber.value = '';
  renderAll();
}

// --- wiring ------------------------------------------------------------------------------

function wireControls() {
  dom.statusReady.addEventListener('click', () => setStatus('ready'));
  dom.statusAway.addEventListener('click', () => setStatus('away', dom.awayReason.value));
  dom.statusLogout.addEventListener('click', () => setStatus('logged_out'));
  dom.phoneRetry.addEventListener('click', () => { if (phone) phone.retry(); });

  dom.answer.addEventListener('click', doAnswer);
  dom.hangup.addEventListener('click', doHangup);
  dom.hold.addEventListener('click', () => { if (phone) phone.toggleHold(); renderCall(); });
  dom.mute.addEventListener('click', () => { if (phone) phone.toggleMute(); renderCall(); });
  for (const button of dom.dtmfButtons) {
    button.addEventListener('click', () => {
      try {
        if (phone) phone.sendDtmf(button.dataset.digit);
      } catch (err) {
        console.warn('DTMF failed', err);
      }
    });
  }

  dom.transferForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const target = dom.transferTarget.value.trim();
    if (!phone || !target) return;
    try {
      if (phone.blindTransfer(target)) {
        banner.set('transfer', 'info', { key: 'call.transfer.sent', params: { target }, timeoutMs: 5000 });
        dom.transferTarget.value = '';
      } else {
        banner.set('transfer', 'error', { key: 'call.transferInvalid', timeoutMs: 8000 });
      }
    } catch (err) {
      banner.set('transfer', 'error', { key: 'call.transferFailed', params: { cause: err.message || '' }, timeoutMs: 8000 });
    }
  });

  dom.dialForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const number = dom.dialNumber.value.trim();
    if (!phone || !number) return;
    let key = null;
    if (phoneState() !== 'registered') key = 'call.notRegistered';
    else if (phone.session) key = 'call.busy';
    else if (!phone.targetUri(number)) key = 'call.invalidNumber';
    if (!key) {
      try {
        if (!phone.call(number)) key = 'call.dialFailed';
      } catch (err) {
        console.error('dial failed', err);
        key = 'call.dialFailed';
      }
    }
    if (key) banner.set('call', 'error', { key, timeoutMs: 8000 });
  });

  dom.wrapupForm.addEventListener('submit', submitWrapup);
  dom.wrapupDisposition.addEventListener('change', () => dom.wrapupDisposition.removeAttribute('aria-invalid'));

  // Ctrl+Alt shortcuts; e.code keeps them layout independent.
  document.addEventListener('keydown', (ev) => {
    if (!active || !ev.ctrlKey || !ev.altKey || ev.shiftKey || ev.metaKey) return;
    const code = ev.code || `Key${(ev.key || '').toUpperCase()}`;
    if (code === 'KeyA') { ev.preventDefault(); doAnswer(); }
    else if (code === 'KeyH') { ev.preventDefault(); doHangup(); }
    else if (code === 'KeyR') {
      ev.preventDefault();
      if (!dom.statusReady.disabled) setStatus('ready');
    }
  });

  // Any gesture unlocks WebAudio (ring tone) and a remote stream the autoplay policy paused.
  const unlock = () => {
    unlockAudio();
    const audio = dom.remoteAudio;
    if (audio.srcObject && audio.paused) audio.play().catch(() => {});
  };
  document.addEventListener('pointerdown', unlock, true);
  document.addEventListener('keydown', unlock, true);

  onLangChange(() => {
    renderDispositions();
    renderTransferQueues();
    renderAll();
    if (!flashTimer) document.title = pageTitle();
  });
}

wireControls();
document.title = pageTitle();
renderAll();

const shell = startShell({
  appId: 'desk',
  onSnapshot,
  onTick: renderCallTimer,
  async onEnter(mePayload) {
    active = true;
    resetPage();
    loadDispositions();
    loadTransferQueues();
    startTickets(mePayload, () => shell.expired());
    startKnowledge(mePayload, () => shell.expired());
    startChats(mePayload, () => shell.expired());
    startNotifications(mePayload, () => shell.expired());
    await startPhone();
  },
  async onLeave(reason) {
    active = false;
    stopTickets();
    stopKnowledge();
    stopChats();
    stopNotifications();
    stopTitleFlash();
    const p = phone;
    phone = null;
    if (p) await p.stop();
    if (reason === 'logout') {
      try { await api.post('/api/agents/me/status', { status: 'logged_out', reason: '' }); } catch { /* best effort */ }
    }
    stopMic();
    dispositions = [];
    renderDispositions();
    resetPage();
  },
});
