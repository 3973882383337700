// Softphone: a thin wrapper around JsSIP (global `JsSIP`, loaded by a classic
// <script> before the modules). It owns the UA, the single active call and the
// ring tone, and reports through DOM-style events so the page stays in charge
// of what is shown:
//   'state'      {state: off|registering|registered|failed, failure}
//   'callstate'  {state: idle|ringing|talking|held|ended}
//   'mute'       {}
//   'connection-lost', 'reconnected'
//   'transfer'   {phase: requested|accepted|failed, cause}
//   'token-error'{error}
import { Ringer } from './ringer.js';

// No ICE servers: the media server is on the same LAN as the agents.
const PC_CONFIG = { iceServers: [], rtcpMuxPolicy: 'require' };
const MEDIA_CONSTRAINTS = { audio: true, video: false };
const ENDED_SHOWN_MS = 4000;          // how long "ended" stays before "idle"
const REGISTER_RETRY_MS = 10000;      // after a non-auth registration failure
const TOKEN_RETRY_MS = 30000;         // after a failed credential refresh
const UNREGISTER_WAIT_MS = 1500;

/** "sip:1001@aicc.example;transport=ws" -> "aicc.example" */
export function sipDomain(sipUri) {
  const rest = String(sipUri || '').replace(/^sips?:/i, '');
  const at = rest.indexOf('@');
  const host = at >= 0 ? rest.slice(at + 1) : rest;
  return host.split(/[;?>]/)[0];
}

/** Why fetching SIP credentials failed, as a short reason code. */
function tokenFailure(err) {
  switch (err && err.status) {
    case 404: return 'no-profile';
    case 409: return 'no-extension';
    case 401: return 'session';
    case 0: return 'network';
    default: return 'token';
  }
}

export class Softphone extends EventTarget {
  /**
   * @param {object} opts
   * @param {() => Promise<object>} opts.fetchToken  POST /api/agents/me/sip-token
   * @param {MediaStream} opts.micStream            kept for every call
   * @param {HTMLAudioElement} opts.remoteAudio
   */
  constructor({ fetchToken, micStream, remoteAudio }) {
    super();
    this._fetchToken = fetchToken;
    this._mic = micStream;
    this._remoteAudio = remoteAudio;
    this._ringer = new Ringer();

    this._ua = null;
    this._domain = '';
    this._state = 'off';
    this._failure = null;
    this._stopping = false;
    this._lost = false;             // transport dropped since the last registration
    this._authRetried = false;      // one fresh-token retry per auth failure streak
    this._refreshTimer = null;
    this._retryTimer = null;

    this._session = null;
    this._callState = 'idle';
    this._direction = null;         // 'in' | 'out'
    this._peer = '';
    this._startedAt = null;         // Date.now() when media was connected
    this._endedAt = null;
    this._endedTimer = null;
  }

  get state() { return this._state; }
  get failure() { return this._failure; }
  get callState() { return this._callState; }
  get direction() { return this._direction; }
  get peer() { return this._peer; }
  get domain() { return this._domain; }
  get session() { return this._session; }
  /** Talk time in seconds (frozen once the call ended), or null. */
  get talkSeconds() {
    if (!this._startedAt) return null;
    return ((this._endedAt || Date.now()) - this._startedAt) / 1000;
  }
  get held() { return !!(this._session && this._session.isOnHold().local); }
  get muted() { return !!(this._session && this._session.isMuted().audio); }

  _emit(type, detail = {}) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _setState(state, failure = null) {
    if (state === this._state && failure === this._failure) return;
    this._state = state;
    this._failure = failure;
    this._emit('state', { state, failure });
  }

  _setCallState(state) {
    if (state === this._callState) return;
    this._callState = state;
    this._emit('callstate', { state });
  }

  // --- registration -----------------------------------------------------------

  async start() {
    if (this._ua) return;
    this._stopping = false;
    if (typeof window.JsSIP === 'undefined') {
      this._setState('failed', 'nolib');
      return;
    }
    this._setState('registering');
    let token;
    try {
      token = await this._fetchToken();
    } catch (err) {
      if (this._stopping) return;
      this._setState('failed', tokenFailure(err));
      this._emit('token-error', { error: err });
      return;
    }
    if (this._stopping) return;
    try {
      this._createUa(token);
    } catch (err) {
      console.error('JsSIP UA could not start', err);
      this._ua = null;
      this._setState('failed', 'config');
      return;
    }
    this._scheduleRefresh(token);
  }

  _createUa(token) {
    const { JsSIP } = window;
    this._domain = sipDomain(token.sip_uri);
    const ua = new JsSIP.UA({
      // Every SIP proxy, for failover: JsSIP moves to the next when one cannot be reached.
      sockets: (token.ws_urls && token.ws_urls.length ? token.ws_urls : [token.ws_url])
        .map((url) => new JsSIP.WebSocketInterface(url)),
      uri: token.sip_uri,
      authorization_user: token.authorization_user,
      password: token.password,
      display_name: token.display_name,
      register: true,
      register_expires: 120,
      session_timers: false,
      connection_recovery_min_interval: 1,
      connection_recovery_max_interval: 8,
    });
    this._ua = ua;
    ua.on('disconnected', () => this._onDisconnected());
    ua.on('registered', () => this._onRegistered());
    ua.on('unregistered', () => {
      if (!this._stopping && this._state === 'registered') this._setState('registering');
    });
    ua.on('registrationFailed', (e) => this._onRegistrationFailed(e));
    ua.on('newRTCSession', (e) => this._onNewSession(e));
    ua.start();
  }

  _onRegistered() {
    clearTimeout(this._retryTimer);
    this._authRetried = false;
    const wasLost = this._lost;
    this._lost = false;
    this._setState('registered');
    if (wasLost) this._emit('reconnected');
  }

  _onDisconnected() {
    if (this._stopping) return;
    // JsSIP retries the WebSocket by itself (1..8 s) and re-registers after.
    if (!this._lost) {
      this._lost = true;
      this._emit('connection-lost');
    }
    if (this._state !== 'failed') this._setState('registering');
  }

  _onRegistrationFailed(e) {
    if (this._stopping || !this._ua) return;
    const causes = window.JsSIP.C.causes;
    const code = e.response ? e.response.status_code : null;
    const authFailure = code === 401 || code === 403 || code === 407
      || e.cause === causes.AUTHENTICATION_ERROR || e.cause === causes.REJECTED;
    if (authFailure) {
      // Credentials are short-lived: the first rejection most likely means an
      // expired one, so fetch a fresh token once before giving up.
      if (!this._authRetried) {
        this._authRetried = true;
        this._setState('registering');
        this._refreshCredentials(true);
      } else {
        this._setState('failed', 'auth');
      }
      return;
    }
    if (e.cause === causes.CONNECTION_ERROR || !this._ua.isConnected()) {
      this._setState('registering');     // re-registers after the reconnect
      return;
    }
    this._setState('failed', 'sip');
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => {
      if (this._ua && !this._stopping) {
        this._setState('registering');
        this._ua.register();
      }
    }, REGISTER_RETRY_MS);
  }

  _scheduleRefresh(token) {
    clearTimeout(this._refreshTimer);
    let delayS = Number(token.refresh_after_s) > 0 ? Number(token.refresh_after_s) : 3000;
    const expires = Date.parse(token.expires_at);
    if (Number.isFinite(expires)) {
      // Never let the credential expire even if refresh_after_s is too generous.
      delayS = Math.min(delayS, (expires - Date.now()) / 1000 - 60);
    }
    delayS = Math.max(delayS, 30);
    this._refreshTimer = setTimeout(() => this._refreshCredentials(true), delayS * 1000);
  }

  /** Fetch a fresh SIP credential and (re-)register with it. */
  async _refreshCredentials(reregister) {
    clearTimeout(this._refreshTimer);
    let token;
    try {
      token = await this._fetchToken();
    } catch (err) {
      if (this._stopping || !this._ua) return;
      this._emit('token-error', { error: err });
      if (this._state !== 'registered') this._setState('failed', tokenFailure(err));
      this._refreshTimer = setTimeout(() => this._refreshCredentials(reregister), TOKEN_RETRY_MS);
      return;
    }
    if (this._stopping || !this._ua) return;
    // A password set at runtime takes precedence over JsSIP's cached HA1.
    this._ua.set('authorization_user', token.authorization_user);
    this._ua.set('password', token.password);
    if (reregister) this._ua.register();
    this._scheduleRefresh(token);
  }

  /** Manual retry after a failure (the page's retry button). */
  retry() {
    if (this._stopping) return;
    this._authRetried = false;
    if (!this._ua) {
      this.start();
      return;
    }
    this._setState('registering');
    this._refreshCredentials(true);
  }

  /** Unregister, stop the UA and drop the call. Resolves when done (bounded). */
  async stop() {
    this._stopping = true;
    clearTimeout(this._refreshTimer);
    clearTimeout(this._retryTimer);
    clearTimeout(this._endedTimer);
    this._ringer.stop();
    const ua = this._ua;
    this._ua = null;
    if (this._session) {
      try { this._session.terminate(); } catch { /* already gone */ }
    }
    this._clearCall();
    if (ua) {
      if (ua.isRegistered()) {
        await new Promise((resolve) => {
          const timer = setTimeout(resolve, UNREGISTER_WAIT_MS);
          const done = () => { clearTimeout(timer); resolve(); };
          ua.once('unregistered', done);
          try { ua.unregister(); } catch { done(); }
        });
      }
      try { ua.stop(); } catch { /* ignore */ }
    }
    this._lost = false;
    this._setState('off');
    this._setCallState('idle');
  }

  // --- calls ------------------------------------------------------------------

  _callOptions() {
    const options = { mediaConstraints: MEDIA_CONSTRAINTS, pcConfig: PC_CONFIG };
    // Reuse the microphone granted at login; JsSIP then leaves it open after
    // the call. If the device went away, let JsSIP ask for a new one.
    if (this._mic && this._mic.getAudioTracks().some((t) => t.readyState === 'live')) {
      options.mediaStream = this._mic;
    }
    return options;
  }

  _onNewSession({ originator, session }) {
    if (this._session && this._session !== session) {
      // One call at a time: a second inbound call gets busy.
      if (originator === 'remote') {
        try { session.terminate({ status_code: 486, reason_phrase: 'Busy Here' }); } catch { /* ignore */ }
      }
      return;
    }
    clearTimeout(this._endedTimer);
    this._session = session;
    this._direction = originator === 'remote' ? 'in' : 'out';
    const identity = session.remote_identity;
    this._peer = identity ? (identity.display_name || (identity.uri && identity.uri.user) || '') : '';
    this._startedAt = null;
    this._endedAt = null;

    this._watchPeerConnection(session);
    session.on('accepted', () => this._onMediaUp(session));
    session.on('confirmed', () => this._onMediaUp(session));
    session.on('hold', () => this._onHoldChange(session));
    session.on('unhold', () => this._onHoldChange(session));
    session.on('muted', () => this._emit('mute'));
    session.on('unmuted', () => this._emit('mute'));
    session.on('ended', () => this._onEnded(session));
    session.on('failed', () => this._onEnded(session));

    if (this._direction === 'in') this._ringer.start();
    this._setCallState('ringing');
  }

  _watchPeerConnection(session) {
    const watch = (pc) => {
      pc.addEventListener('track', (ev) => {
        if (ev.track.kind !== 'audio') return;
        this._playRemote(ev.streams[0] || new MediaStream([ev.track]));
      });
    };
    // Outgoing sessions create their RTCPeerConnection before newRTCSession fires.
    if (session.connection) watch(session.connection);
    session.on('peerconnection', (e) => watch(e.peerconnection));
  }

  _playRemote(stream) {
    const audio = this._remoteAudio;
    if (!audio || audio.srcObject === stream) return;
    audio.srcObject = stream;
    audio.play().catch(() => { /* autoplay policy: retried on the next gesture */ });
  }

  _onMediaUp(session) {
    if (session !== this._session) return;
    this._ringer.stop();
    if (!this._startedAt) this._startedAt = Date.now();
    const pc = session.connection;
    if (pc && this._remoteAudio && !this._remoteAudio.srcObject) {
      const tracks = pc.getReceivers().map((r) => r.track).filter((t) => t && t.kind === 'audio');
      if (tracks.length) this._playRemote(new MediaStream(tracks));
    }
    this._setCallState(session.isOnHold().local ? 'held' : 'talking');
  }

  _onHoldChange(session) {
    if (session !== this._session || !this._startedAt) return;
    this._setCallState(session.isOnHold().local ? 'held' : 'talking');
  }

  _onEnded(session) {
    if (session !== this._session) return;
    this._ringer.stop();
    this._endedAt = this._startedAt ? Date.now() : null;
    this._clearCall();
    this._setCallState('ended');
    clearTimeout(this._endedTimer);
    this._endedTimer = setTimeout(() => {
      if (!this._session) {
        this._startedAt = null;
        this._endedAt = null;
        this._setCallState('idle');
      }
    }, ENDED_SHOWN_MS);
  }

  _clearCall() {
    this._session = null;
    if (this._remoteAudio) this._remoteAudio.srcObject = null;
    // mute()/hold() disable our shared mic tracks; re-enable them for the next call.
    if (this._mic) for (const track of this._mic.getAudioTracks()) track.enabled = true;
  }

  /** Answer the ringing inbound call. Returns false when there is none. */
  answer() {
    const s = this._session;
    if (!s || this._callState !== 'ringing' || this._direction !== 'in') return false;
    this._ringer.stop();
    s.answer(this._callOptions());
    return true;
  }

  /** Hang up; a ringing inbound call is rejected with 486 Busy Here. */
  hangup() {
    const s = this._session;
    if (!s || s.isEnded()) return false;
    if (this._callState === 'ringing' && this._direction === 'in') {
      s.terminate({ status_code: 486, reason_phrase: 'Busy Here' });
    } else {
      s.terminate();
    }
    return true;
  }

  toggleHold() {
    const s = this._session;
    if (!s || !this._startedAt) return false;
    return s.isOnHold().local ? s.unhold() : s.hold();
  }

  toggleMute() {
    const s = this._session;
    if (!s) return false;
    if (s.isMuted().audio) s.unmute({ audio: true });
    else s.mute({ audio: true });
    this._emit('mute');
    return true;
  }

  sendDtmf(digit) {
    const s = this._session;
    if (!s || !this._startedAt) return false;
    s.sendDTMF(digit, { transportType: 'RFC2833' });
    return true;
  }

  /** Build a SIP URI from an extension/number or a queue name typed by the agent, or null. A number's
   *  separators go (138-0013-8000); a queue name keeps its hyphens (billing-en). */
  targetUri(input) {
    const raw = String(input || '').trim();
    if (!raw) return null;
    if (/^sips?:/i.test(raw)) return raw;
    if (raw.includes('@')) return `sip:${raw}`;
    const user = /^[a-z0-9][a-z0-9_-]*$/.test(raw) && /[a-z]/.test(raw) ? raw : raw.replace(/[\s().-]/g, '');
    if (!/^[0-9A-Za-z*#+_-]+$/.test(user) || !this._domain) return null;
    return `sip:${user.replace(/#/g, '%23')}@${this._domain}`;
  }

  /** Blind transfer via REFER; we hang up once the far end accepts it. */
  blindTransfer(target) {
    const s = this._session;
    const uri = this.targetUri(target);
    if (!s || !this._startedAt || !uri) return false;
    const subscriber = s.refer(uri, {
      eventHandlers: {
        requestSucceeded: () => this._emit('transfer', { phase: 'requested' }),
        requestFailed: (e) => this._emit('transfer', { phase: 'failed', cause: e && e.cause }),
        accepted: () => {
          this._emit('transfer', { phase: 'accepted' });
          if (this._session === s && !s.isEnded()) {
            try { s.terminate(); } catch { /* ignore */ }
          }
        },
        // A NOTIFY saying why (404 No Such Queue) carries a status line, not a cause.
        failed: (e) => this._emit('transfer', {
          phase: 'failed',
          cause: e && (e.cause || (e.status_line && `${e.status_line.status_code} ${e.status_line.reason_phrase}`)),
        }),
      },
    });
    return subscriber !== false;
  }

  /** Outbound call. Returns false when not possible (not registered, busy, bad number). */
  call(number) {
    const uri = this.targetUri(number);
    if (!this._ua || this._state !== 'registered' || this._session || !uri) return false;
    this._ua.call(uri, this._callOptions());
    return true;
  }

  /** RTP counters of the current call for automated checks, or null. */
  async stats() {
    const pc = this._session && this._session.connection;
    if (!pc) return null;
    const report = await pc.getStats();
    const out = {
      inboundPackets: 0, outboundPackets: 0, packetsLost: 0,
      bytesReceived: 0, audioLevel: null, dtlsState: null,
    };
    report.forEach((s) => {
      const isAudio = s.kind === 'audio' || s.mediaType === 'audio';
      if (s.type === 'inbound-rtp' && isAudio) {
        out.inboundPackets += s.packetsReceived || 0;
        out.packetsLost += s.packetsLost || 0;
        out.bytesReceived += s.bytesReceived || 0;
        if (typeof s.audioLevel === 'number') out.audioLevel = s.audioLevel;
      } else if (s.type === 'outbound-rtp' && isAudio) {
        out.outboundPackets += s.packetsSent || 0;
      } else if (s.type === 'transport' && s.dtlsState) {
        out.dtlsState = s.dtlsState;
      }
    });
    return out;
  }
}
