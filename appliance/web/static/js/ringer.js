// Ring tone synthesised with WebAudio (two-tone 440+480 Hz, 1 s on / 2 s off)
// so the appliance ships no audio files.
const CYCLE_S = 3;
const ON_S = 1;

let ctx = null;

function context() {
  if (!ctx) {
    const Ctor = window.AudioContext || window.webkitAudioContext;
    if (!Ctor) return null;
    ctx = new Ctor();
  }
  return ctx;
}

/**
 * Browsers only let audio start after a user gesture; the login click and any
 * later click unlock it so an incoming call can ring without one.
 */
export function unlockAudio() {
  const c = context();
  if (c && c.state === 'suspended') c.resume().catch(() => {});
}

export class Ringer {
  constructor() {
    this._nodes = null;
    this._timer = null;
  }

  get ringing() { return this._nodes !== null; }

  start() {
    if (this._nodes) return;
    const c = context();
    if (!c) return;
    unlockAudio();
    const gain = c.createGain();
    gain.gain.value = 0;
    gain.connect(c.destination);
    const oscillators = [440, 480].map((freq) => {
      const osc = c.createOscillator();
      osc.frequency.value = freq;
      osc.connect(gain);
      osc.start();
      return osc;
    });
    this._nodes = { gain, oscillators };
    const burst = () => {
      const now = c.currentTime;
      gain.gain.cancelScheduledValues(now);
      gain.gain.setValueAtTime(0.12, now);
      gain.gain.setValueAtTime(0, now + ON_S);
    };
    burst();
    this._timer = setInterval(burst, CYCLE_S * 1000);
  }

  stop() {
    clearInterval(this._timer);
    this._timer = null;
    if (!this._nodes) return;
    for (const osc of this._nodes.oscillators) {
      try { osc.stop(); } catch { /* already stopped */ }
      osc.disconnect();
    }
    this._nodes.gain.disconnect();
    this._nodes = null;
  }
}
