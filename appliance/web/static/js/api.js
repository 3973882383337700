// Same-origin JSON API client, auth helpers and the live-stream (SSE) helper.
// The session lives in an HttpOnly cookie, so nothing here stores a token.

/** Error thrown for every failed API call: carries the HTTP status and the parsed body. */
export class ApiError extends Error {
  constructor(status, body, fallback = '') {
    super(messageFromBody(body) || fallback || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;            // 0 = network failure (no response at all)
    this.body = body;
    this.code = (body && typeof body === 'object' && body.error && body.error.code) || null;
  }
}

// The backend answers {"error": {"code", "message"}} or FastAPI's {"detail": ...}.
function messageFromBody(body) {
  if (!body) return '';
  if (typeof body === 'string') return body.slice(0, 300);
  if (body.error) {
    if (typeof body.error === 'string') return body.error;
    return body.error.message || body.error.code || '';
  }
  const detail = body.detail;
  if (typeof detail === 'string') return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => (d && d.msg) || JSON.stringify(d)).join('; ');
  }
  if (detail && typeof detail === 'object') return detail.message || JSON.stringify(detail);
  return '';
}

/** fetch wrapper: JSON in/out, same-origin credentials, throws ApiError on non-2xx. */
export async function request(method, path, body) {
  const init = {
    method,
    credentials: 'same-origin',
    cache: 'no-store',
    headers: { Accept: 'application/json', 'X-Requested-With': 'fetch' },
  };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, null, 'network error');
  }
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = text; }
  }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

export const get = (path) => request('GET', path);
export const post = (path, body) => request('POST', path, body);

// --- auth -----------------------------------------------------------------

export const login = (username, password) => post('/api/auth/login', { username, password });
export const logout = () => post('/api/auth/logout');
/** Resolves {user, permissions}; rejects with ApiError(401) when not signed in. */
export const me = () => get('/api/auth/me');

// --- live stream ------------------------------------------------------------

const BACKOFF_MAX_S = 10;
const STALL_MS = 40000;  // three missed pings

/**
 * EventSource wrapper with our own reconnect policy. The browser's built-in
 * retry cannot tell an expired session (401) from a network blip, so on every
 * error we close the source, ask /api/auth/me, and either report the expiry or
 * reconnect after 1, 2, 4 ... 10 s.
 */
export class LiveStream {
  constructor({ url = '/api/live/stream', onSnapshot, onStateChange, onAuthExpired } = {}) {
    this.url = url;
    this.onSnapshot = onSnapshot || (() => {});
    this.onStateChange = onStateChange || (() => {});
    this.onAuthExpired = onAuthExpired || (() => {});
    this._state = 'stopped';     // stopped | connecting | live | reconnecting
    this._es = null;
    this._timer = null;
    this._attempt = 0;
    this._onOnline = () => { if (this._state === 'reconnecting') this._reconnectNow(); };
  }

  get state() { return this._state; }

  start() {
    if (this._state !== 'stopped') return;
    this._attempt = 0;
    window.addEventListener('online', this._onOnline);
    this._setState('connecting');
    this._open();
  }

  stop() {
    window.removeEventListener('online', this._onOnline);
    clearTimeout(this._timer);
    this._timer = null;
    this._close();
    this._setState('stopped');
  }

  _setState(state) {
    if (state === this._state) return;
    this._state = state;
    this.onStateChange(state);
  }

  _open() {
    this._close();
    const es = new EventSource(this.url);
    this._es = es;
    es.addEventListener('open', () => { if (this._es === es) this._setState('live'); });
    es.addEventListener('snapshot', (ev) => {
      if (this._es !== es) return;
      let data;
      try { data = JSON.parse(ev.data); } catch { return; }   // a torn frame: wait for the next one
      this._seen = Date.now();
      this._attempt = 0;     // a real snapshot proves the connection works
      this._setState('live');
      try { this.onSnapshot(data); } catch (err) { console.error('snapshot render failed', err); }
    });
    // The server pings every 15 s: a stream silent for longer than STALL_MS is dead (a proxy or
    // network that dropped it without closing), so reconnect instead of showing stale figures.
    es.addEventListener('ping', () => { if (this._es === es) this._seen = Date.now(); });
    // The server ends the stream when the session is revoked or expired: find out which and say so.
    es.addEventListener('end', () => { if (this._es === es) this._handleError(); });
    es.addEventListener('error', () => { if (this._es === es) this._handleError(); });
    this._seen = Date.now();
    clearInterval(this._watchdog);
    this._watchdog = setInterval(() => {
      if (this._es === es && Date.now() - this._seen > STALL_MS) this._handleError();
    }, 5000);
  }

  _close() {
    clearInterval(this._watchdog);
    if (this._es) {
      this._es.close();
      this._es = null;
    }
  }

  async _handleError() {
    this._close();
    if (this._state === 'stopped') return;
    this._setState('reconnecting');
    try {
      await me();
    } catch (err) {
      if (this._state === 'stopped') return;
      if (err.status === 401) {
        this.stop();
        this.onAuthExpired();
        return;
      }
      // Other failures (server down, network): keep retrying below.
    }
    if (this._state === 'stopped') return;
    const delay = Math.min(2 ** this._attempt, BACKOFF_MAX_S);
    this._attempt += 1;
    clearTimeout(this._timer);
    this._timer = setTimeout(() => { this._timer = null; this._open(); }, delay * 1000);
  }

  _reconnectNow() {
    clearTimeout(this._timer);
    this._timer = null;
    this._open();
  }
}
