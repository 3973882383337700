// Small DOM, time and banner helpers shared by the desk and the wallboard.
// Server strings are only ever written with textContent.
import { t, has, getLang, onLangChange } from './i18n.js';

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

/** Create an element with optional class and text (text is never parsed as HTML). */
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

export function show(node, visible) {
  if (node) node.hidden = !visible;
}

// --- server clock ----------------------------------------------------------

// Offset (ms) between the server clock and ours, from each snapshot's "at":
// elapsed times are computed on the server clock so a skewed PC still ticks right.
let clockOffsetMs = 0;

export function setServerTime(atSeconds) {
  if (typeof atSeconds === 'number' && Number.isFinite(atSeconds)) {
    clockOffsetMs = atSeconds * 1000 - Date.now();
  }
}

/** Current server time in epoch seconds. */
export const serverNow = () => (Date.now() + clockOffsetMs) / 1000;

const pad2 = (n) => String(n).padStart(2, '0');

/** 75 -> "01:15", 3725 -> "1:02:05". */
/** An ISO time as local time: "14:30" today, else with the date; `empty` when there is none. */
export function fmtTime(iso, empty = '') {
  if (!iso) return empty;
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return String(iso);
  const opts = { hour: '2-digit', minute: '2-digit', hour12: false };
  if (at.toDateString() !== new Date().toDateString()) {
    opts.month = 'short';
    opts.day = 'numeric';
  }
  try {
    return new Intl.DateTimeFormat(getLang() === 'zh' ? 'zh-CN' : 'en-GB', opts).format(at);
  } catch {
    return at.toLocaleString();
  }
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(Number(seconds))) return '—';
  const total = Math.max(0, Math.floor(Number(seconds)));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  return h > 0 ? `${h}:${pad2(m)}:${pad2(s)}` : `${pad2(m)}:${pad2(s)}`;
}

/**
 * Mark an element as a ticking timer. `since` is a server epoch (seconds) at
 * which the counted period started; null shows a dash and stops ticking.
 */
export function setTicking(node, since) {
  if (since === null || since === undefined || !Number.isFinite(Number(since))) {
    delete node.dataset.tickSince;
    node.textContent = '—';
    return;
  }
  node.dataset.tickSince = String(since);
  node.textContent = fmtDuration(serverNow() - Number(since));
}

/** Countdown to a server epoch (seconds). */
export function setCountdown(node, until) {
  if (until === null || until === undefined || !Number.isFinite(Number(until))) {
    delete node.dataset.tickUntil;
    node.textContent = '';
    return;
  }
  node.dataset.tickUntil = String(until);
  node.textContent = fmtDuration(Number(until) - serverNow());
}

/** Static (non-ticking) duration text. */
export function setFrozen(node, seconds) {
  delete node.dataset.tickSince;
  node.textContent = fmtDuration(seconds);
}

/** Refresh every ticking timer under root; called once a second. */
export function tickTimers(root = document) {
  const now = serverNow();
  for (const node of root.querySelectorAll('[data-tick-since]')) {
    node.textContent = fmtDuration(now - Number(node.dataset.tickSince));
  }
  for (const node of root.querySelectorAll('[data-tick-until]')) {
    node.textContent = fmtDuration(Number(node.dataset.tickUntil) - now);
  }
}

/**
 * Keyed row reconciliation: keeps existing <tr>s (and any half-edited
 * controls inside them) and only creates/removes what changed.
 */
export function syncRows(tbody, items, { key, attr, create, update }) {
  const existing = new Map();
  for (const row of tbody.rows) existing.set(row.getAttribute(attr), row);
  let previous = null;
  for (const item of items) {
    const id = String(key(item));
    let row = existing.get(id);
    if (row) {
      existing.delete(id);
    } else {
      row = create(item);
      row.setAttribute(attr, id);
    }
    update(row, item);
    const wanted = previous ? previous.nextSibling : tbody.firstChild;
    if (row !== wanted) tbody.insertBefore(row, wanted);
    previous = row;
  }
  for (const row of existing.values()) row.remove();
}

/** Translated label for an enum value from the server, or the raw value when unknown. */
export function labelFor(prefix, value) {
  if (value === null || value === undefined || value === '') return '';
  const key = `${prefix}.${value}`;
  return has(key) ? t(key) : String(value);
}

/** "Ready · On call", "Away · Lunch", "Offline". */
export function agentStatusText(status, state, reason) {
  const parts = [labelFor('status', status || 'logged_out')];
  if (status !== 'logged_out' && state && state !== 'idle') parts.push(labelFor('state', state));
  if (reason) parts.push(labelFor('reason', reason));
  return parts.join(' · ');
}

/** User-facing text for any error (ApiError or otherwise). */
export function errorText(err) {
  if (!err) return t('err.generic');
  if (err.status === 0) return t('err.network');
  return err.message || t('err.generic');
}

// --- banner ----------------------------------------------------------------

/**
 * One message area (#banner). Several sources may want it at once (mic
 * blocked, phone reconnecting, an action error), so messages are kept by tag
 * and the most recent one is shown; clearing it reveals the previous one.
 * Messages given as i18n keys are re-translated when the language changes.
 */
class Banner {
  constructor() {
    this.entries = [];   // {tag, kind, key, params, text, timer}
    onLangChange(() => this.render());
  }

  /**
   * @param {string} tag     identifies the source, so it can be replaced/cleared
   * @param {'error'|'warn'|'info'} kind
   * @param {{key?: string, params?: object, text?: string, timeoutMs?: number}} msg
   */
  set(tag, kind, { key, params, text, timeoutMs } = {}) {
    this.clear(tag, false);
    const entry = { tag, kind, key, params, text, timer: null };
    if (timeoutMs) entry.timer = setTimeout(() => this.clear(tag), timeoutMs);
    this.entries.push(entry);
    this.render();
  }

  clear(tag, rerender = true) {
    const idx = this.entries.findIndex((e) => e.tag === tag);
    if (idx >= 0) {
      clearTimeout(this.entries[idx].timer);
      this.entries.splice(idx, 1);
    }
    if (rerender) this.render();
  }

  clearAll() {
    for (const e of this.entries) clearTimeout(e.timer);
    this.entries = [];
    this.render();
  }

  render() {
    const node = document.getElementById('banner');
    if (!node) return;
    const top = this.entries[this.entries.length - 1];
    if (!top) {
      node.hidden = true;
      node.textContent = '';
      node.removeAttribute('role');
      delete node.dataset.tag;
      return;
    }
    node.dataset.kind = top.kind;
    node.dataset.tag = top.tag;
    node.setAttribute('role', top.kind === 'error' ? 'alert' : 'status');
    node.textContent = top.key ? t(top.key, top.params) : top.text;
    node.hidden = false;
  }
}

export const banner = new Banner();

/** Show an API failure from a user action for a while. */
export function showActionError(err, tag = 'action') {
  banner.set(tag, 'error', { text: errorText(err), timeoutMs: 12000 });
}
