// Page shell shared by the desk, the wallboard and the operations page: login
// form, header (user name, language, logout, stream status), the live stream
// (for pages that take snapshots) and the one-second ticker. Page modules plug
// in through callbacks.
import * as api from './api.js';
import { t, applyI18n, bindLangSwitch, onLangChange } from './i18n.js';
import { $, banner, errorText, tickTimers } from './ui.js';

/**
 * @param {object} opts
 * @param {string} opts.appId            id of the page's main element (#desk / #wall)
 * @param {(me: object) => any} opts.onEnter      signed in (me = /api/auth/me body)
 * @param {(reason: string) => any} opts.onLeave  'logout' | 'expired'; runs before the session ends
 * @param {(snapshot: object) => void} [opts.onSnapshot]  the live stream's pictures; without it, no stream
 * @param {() => void} [opts.onTick]     once a second, after the shared timers
 */
export function startShell({ appId, onEnter, onLeave, onSnapshot, onTick }) {
  const app = document.getElementById(appId);
  const form = $('#login-form');
  const username = $('#login-username');
  const password = $('#login-password');
  const submit = $('#login-submit');
  const loginError = $('#login-error');
  const streamStatus = $('#stream-status');
  const meName = $('#me-name');
  const logoutBtn = $('#logout');

  let current = null;       // /api/auth/me payload while signed in
  let stream = null;
  let loginMsg = null;      // {key} or {text}, kept to re-translate
  let leaving = false;

  applyI18n();
  bindLangSwitch($('#lang-switch'));

  function renderLoginError() {
    if (!loginMsg) {
      loginError.hidden = true;
      loginError.textContent = '';
      return;
    }
    loginError.textContent = loginMsg.key ? t(loginMsg.key) : loginMsg.text;
    loginError.hidden = false;
  }

  function setLoginError(msg) {
    loginMsg = msg;
    renderLoginError();
  }

  function renderStreamStatus() {
    if (!streamStatus) return;
    const state = stream ? stream.state : 'stopped';
    // Two visual states only: live, or not live (connecting/reconnecting).
    streamStatus.dataset.state = state === 'live' ? 'live' : 'reconnecting';
    streamStatus.textContent = t(`stream.${state}`);
  }

  function renderMeName() {
    const user = current && current.user;
    meName.textContent = user ? (user.display_name || user.username || '') : '';
    meName.title = user && user.role ? t(`role.${user.role}`) : '';
  }

  onLangChange(() => {
    renderLoginError();
    renderStreamStatus();
    renderMeName();
  });

  function showLogin(msg = null) {
    document.body.dataset.auth = 'out';
    app.hidden = true;
    form.hidden = false;
    password.value = '';
    setLoginError(msg);
    submit.disabled = false;
    (username.value ? password : username).focus();
  }

  async function enter(mePayload) {
    current = mePayload;
    leaving = false;
    document.body.dataset.auth = 'in';
    form.hidden = true;
    app.hidden = false;
    logoutBtn.disabled = false;
    renderMeName();
    if (onSnapshot) {
      stream = new api.LiveStream({
        onSnapshot,
        onStateChange: renderStreamStatus,
        onAuthExpired: () => leave('expired'),
      });
      stream.start();
    }
    renderStreamStatus();
    try {
      await onEnter(mePayload);
    } catch (err) {
      console.error('page start failed', err);
      banner.set('start', 'error', { text: errorText(err) });
    }
  }

  async function leave(reason) {
    if (!current || leaving) return;
    leaving = true;
    try {
      await onLeave(reason);
    } catch (err) {
      console.error('page stop failed', err);
    }
    if (stream) stream.stop();
    stream = null;
    if (reason === 'logout') {
      try { await api.logout(); } catch { /* the cookie may already be gone */ }
    }
    current = null;
    renderMeName();
    renderStreamStatus();
    banner.clearAll();
    showLogin(reason === 'expired' ? { key: 'login.expired' } : null);
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const user = username.value.trim();
    const pass = password.value;
    if (!user || !pass) {
      setLoginError({ key: 'login.missing' });
      return;
    }
    submit.disabled = true;
    setLoginError(null);
    try {
      const res = await api.login(user, pass);
      let mePayload;
      try {
        mePayload = await api.me();
      } catch {
        mePayload = { user: res && res.user, permissions: [] };
      }
      password.value = '';
      await enter(mePayload);
    } catch (err) {
      if (err.status === 401) setLoginError({ key: 'login.bad' });
      else if (err.status === 429 || err.status === 423) setLoginError({ text: err.message || t('login.throttled') });
      else setLoginError({ text: errorText(err) });
      password.select();
    } finally {
      submit.disabled = false;
    }
  });

  logoutBtn.addEventListener('click', () => {
    logoutBtn.disabled = true;
    leave('logout');
  });

  setInterval(() => {
    if (!current) return;
    tickTimers(app);
    if (onTick) onTick();
  }, 1000);

  // Decide between the login form and the app.
  (async () => {
    try {
      await enter(await api.me());
    } catch (err) {
      if (err.status === 401) showLogin();
      else showLogin({ text: errorText(err) });
    }
  })();

  return {
    get me() { return current; },
    /** Signed-in user's role, or null. */
    get role() { return current && current.user ? current.user.role : null; },
    /** The page found the session gone (an API call answered 401): back to the login form. */
    expired() { return leave('expired'); },
  };
}
