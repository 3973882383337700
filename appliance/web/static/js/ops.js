// Operations page for SREs: the dashboards of monitoring/panels.py, drawn with
// uPlot (a global from /static/vendor) from /api/ops/query, which runs only
// the named panel's own queries against the site's Prometheus. Read-only;
// the shown dashboard refreshes every 30 s while the tab is visible.
import * as api from './api.js';
import { t, getLang, onLangChange } from './i18n.js';
import { $, el, banner, errorText } from './ui.js';
import { startShell } from './shell.js';

const REFRESH_MS = 30000;
const RANGE_KEY = 'aicc.ops.range';
const COLORS = ['#1f5fbf', '#c4291c', '#168a44', '#8a5200', '#6434c0', '#0b7d8a', '#b8336a', '#5a6675'];
const AXIS = { stroke: '#5a6675', grid: { stroke: '#e8ecf1', width: 1 }, ticks: { stroke: '#d8dee6', width: 1 } };

const dom = {
  app: $('#ops'),
  tabs: $('#ops-tabs'),
  board: $('#ops-board'),
  stats: $('#ops-stats'),
  charts: $('#ops-charts'),
  forbidden: $('#ops-forbidden'),
  source: $('#ops-source'),
  range: $('#ops-range'),
  updated: $('#ops-updated'),
};

let shell = null;
let defs = null;            // GET /api/ops/dashboards
let current = null;         // the shown dashboard's id
let cards = [];             // the shown dashboard's panels: {panel, node, plot, plotKey}
const results = new Map();  // "dashboard/panel" -> {data} or {error}: the last answer, shown at once on a tab switch
let generation = 0;         // bumped by every load: a late answer of an older one is dropped
let timer = null;
let lastLoad = 0;
let updatedAt = null;

// --- values -------------------------------------------------------------------------------

const pad2 = (n) => String(n).padStart(2, '0');
const trim = (v, digits) => String(Number(v.toFixed(digits)));

function short(v) {
  const a = Math.abs(v);
  if (a >= 1e9) return `${trim(v / 1e9, 1)}G`;
  if (a >= 1e6) return `${trim(v / 1e6, 1)}M`;
  if (a >= 1e4) return `${trim(v / 1e3, 1)}k`;
  if (a >= 100 || a === 0) return String(Math.round(v));
  if (a >= 1) return trim(v, 2);
  return String(Number(v.toPrecision(2)));
}

function seconds(v) {
  const a = Math.abs(v);
  if (a === 0) return '0 s';
  if (a < 1) return `${short(v * 1000)} ms`;
  if (a < 120) return `${trim(v, a < 10 ? 2 : 1)} s`;
  if (a < 7200) return `${trim(v / 60, 1)} min`;
  return `${trim(v / 3600, 1)} h`;
}

function bytes(v) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let x = v;
  let i = 0;
  while (Math.abs(x) >= 1024 && i < units.length - 1) {
    x /= 1024;
    i += 1;
  }
  return `${trim(x, i ? 1 : 0)} ${units[i]}`;
}

/** A value in the panel's unit, as people read it. */
function formatValue(unit, v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return '—';
  switch (unit) {
    case 'percent': return `${trim(v, Math.abs(v) < 10 ? 1 : 0)}%`;
    case 'ratio': return `${trim(v * 100, 1)}%`;
    case 'seconds': return seconds(v);
    case 'per_second': return `${short(v)}/s`;
    case 'bytes': return bytes(v);
    case 'mos': return trim(v, 2);
    default: return short(v);
  }
}

function beyond(panel, v) {
  if (panel.threshold === null || panel.threshold === undefined || v === null || v === undefined) return false;
  return panel.lower_is_worse ? v < panel.threshold : v > panel.threshold;
}

const text = (texts) => (texts && (texts[getLang()] || texts.en)) || '';

/** Time axis labels in 24-hour time, the date where the day changes (or only dates for long steps). */
function timeLabels(u, splits, axisIdx, space, incr) {
  let previous = null;
  return splits.map((s) => {
    const d = new Date(s * 1000);
    const day = `${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}`;
    const hm = `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
    const label = incr >= 86400 ? day : (previous !== null && day !== previous ? `${day} ${hm}` : hm);
    previous = day;
    return label;
  });
}

function timeText(v) {
  if (v === null || v === undefined) return '—';
  const d = new Date(v * 1000);
  return `${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

/** uPlot's columns: one time axis, the union of every series' times; a missing point is a gap. */
function aligned(series) {
  const xs = [...new Set(series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  return [xs, ...series.map((s) => {
    const column = new Array(xs.length).fill(null);
    for (const [x, v] of s.points) column[index.get(x)] = v;
    return column;
  })];
}

// --- panels --------------------------------------------------------------------------------

function createCard(panel) {
  const node = el('article', 'ops-panel');
  node.dataset.panel = panel.id;
  node.dataset.kind = panel.kind;
  node.dataset.state = 'loading';
  const head = el('header', 'ops-panel-head');
  const promql = el('details', 'ops-promql');
  const summary = el('summary', null, 'PromQL');
  const code = el('pre', 'ops-promql-code');
  code.textContent = panel.queries
    .map((q) => (q.legend ? `${q.expr}\n  # ${t('ops.legend')}: ${q.legend}` : q.expr))
    .join('\n\n');
  promql.append(summary, code);
  head.append(el('h2', 'ops-panel-title'), promql);
  const body = el('div', 'ops-panel-body');
  if (panel.kind === 'stat') {
    body.append(el('span', 'ops-stat-value', '—'), el('span', 'ops-stat-note'));
  } else {
    body.append(el('div', 'ops-chart'));
  }
  const message = el('p', 'ops-panel-message');
  message.setAttribute('role', 'status');
  node.append(head, body, message);
  return { panel, node, plot: null, plotKey: '' };
}

function setState(card, state, message = '') {
  card.node.dataset.state = state;
  const node = card.node.querySelector('.ops-panel-message');
  node.textContent = message;
  node.hidden = !message;
}

function renderStat(card, series) {
  const { panel, node } = card;
  const points = series.length ? series[0].points : [];
  const value = points.length ? points[points.length - 1][1] : null;
  const bad = beyond(panel, value);
  const valueNode = node.querySelector('.ops-stat-value');
  valueNode.textContent = formatValue(panel.unit, value);
  valueNode.title = bad ? t('ops.beyond') : '';
  node.dataset.bad = bad ? 'true' : 'false';
  const note = node.querySelector('.ops-stat-note');
  note.textContent = panel.threshold === null || panel.threshold === undefined ? ''
    : t(panel.lower_is_worse ? 'ops.target' : 'ops.limit', { value: formatValue(panel.unit, panel.threshold) });
  setState(card, value === null ? 'empty' : 'ok', value === null ? t('ops.noData') : '');
}

function plotOptions(card, series, size) {
  const format = (v) => formatValue(card.panel.unit, v);
  return {
    ...size,
    legend: { show: true, live: true },
    scales: { x: { time: true } },
    axes: [
      { ...AXIS, values: timeLabels },
      { ...AXIS, size: 62, values: (u, splits) => splits.map(format) },
    ],
    series: [
      { value: (u, v) => timeText(v) },
      ...series.map((s, i) => ({
        label: s.name || text(card.panel.title),
        stroke: COLORS[i % COLORS.length],
        width: 1.5,
        value: (u, v) => format(v),
      })),
    ],
  };
}

/** The plot's size: the chart box less the legend under it. */
function fit(card) {
  const box = card.node.querySelector('.ops-chart');
  if (!card.plot || !box) return;
  const legend = card.plot.root.querySelector('.u-legend');
  const width = Math.max(120, box.clientWidth);
  const height = Math.max(60, box.clientHeight - (legend ? legend.offsetHeight : 0));
  if (width !== card.plot.width || height !== card.plot.height) card.plot.setSize({ width, height });
}

function renderChart(card, series) {
  if (!series.length) {
    destroyPlot(card);
    setState(card, 'empty', t('ops.noData'));
    return;
  }
  setState(card, 'ok');
  const data = aligned(series);
  const key = series.map((s) => s.name).join('\n');
  if (card.plot && card.plotKey === key) {
    card.plot.setData(data);
    return;
  }
  destroyPlot(card);
  if (typeof window.uPlot !== 'function') {
    setState(card, 'error', t('ops.noChartLib'));
    return;
  }
  const box = card.node.querySelector('.ops-chart');
  const size = { width: Math.max(120, box.clientWidth), height: Math.max(60, box.clientHeight - 24) };
  card.plot = new window.uPlot(plotOptions(card, series, size), data, box);
  card.plotKey = key;
  fit(card);
}

function destroyPlot(card) {
  if (card.plot) card.plot.destroy();
  card.plot = null;
  card.plotKey = '';
}

function renderCard(card) {
  const { panel, node } = card;
  node.querySelector('.ops-panel-title').textContent = text(panel.title);
  node.querySelector('.ops-promql summary').title = t('ops.showPromql');
  if (!defs.prometheus_url) {
    setState(card, 'unavailable', t('ops.noPrometheus'));
    return;
  }
  const result = results.get(`${current}/${panel.id}`);
  if (!result) {
    setState(card, 'loading', t('ops.loading'));
  } else if (result.error) {
    destroyPlot(card);
    setState(card, 'error', errorText(result.error));
  } else if (panel.kind === 'stat') {
    renderStat(card, result.data.series || []);
  } else {
    renderChart(card, result.data.series || []);
  }
}

const resizer = new ResizeObserver((entries) => {
  for (const entry of entries) {
    const card = cards.find((c) => c.node.contains(entry.target));
    if (card) fit(card);
  }
});

// --- dashboards ----------------------------------------------------------------------------

function dashboard() {
  return defs && defs.dashboards.find((d) => d.id === current);
}

function buildBoard() {
  for (const card of cards) destroyPlot(card);
  resizer.disconnect();
  cards = [];
  dom.stats.replaceChildren();
  dom.charts.replaceChildren();
  const dash = dashboard();
  if (!dash) return;
  for (const panel of dash.panels) {
    const card = createCard(panel);
    cards.push(card);
    (panel.kind === 'stat' ? dom.stats : dom.charts).append(card.node);
  }
  dom.stats.hidden = !dom.stats.childElementCount;
  // The grid's shape follows the count, so that few panels get more room (1366x768 without scrolling).
  dom.charts.dataset.count = String(dom.charts.childElementCount);
  for (const card of cards) {
    renderCard(card);
    const box = card.node.querySelector('.ops-chart');
    if (box) resizer.observe(box);
  }
  dom.board.setAttribute('aria-labelledby', `ops-tab-${dash.id}`);
}

function renderTabs() {
  dom.tabs.replaceChildren(dom.tabs.firstElementChild, ...defs.dashboards.map((d) => {
    const tab = el('button', 'ops-tab', text(d.title));
    tab.type = 'button';
    tab.id = `ops-tab-${d.id}`;
    tab.dataset.dashboard = d.id;
    tab.setAttribute('role', 'tab');
    tab.setAttribute('aria-controls', 'ops-board');
    tab.setAttribute('aria-selected', d.id === current ? 'true' : 'false');
    tab.tabIndex = d.id === current ? 0 : -1;
    tab.addEventListener('click', () => select(d.id));
    return tab;
  }));
}

function select(id, focus = false) {
  if (!defs || !defs.dashboards.some((d) => d.id === id)) return;
  current = id;
  history.replaceState(null, '', `#${id}`);
  renderTabs();
  buildBoard();
  if (focus) $(`#ops-tab-${id}`).focus();
  load();
}

// Arrow keys move between tabs (the WAI-ARIA tabs pattern).
dom.tabs.addEventListener('keydown', (ev) => {
  if (!defs || !['ArrowLeft', 'ArrowRight', 'Home', 'End'].includes(ev.key)) return;
  const ids = defs.dashboards.map((d) => d.id);
  const at = ids.indexOf(current);
  const next = { ArrowLeft: at - 1, ArrowRight: at + 1, Home: 0, End: ids.length - 1 }[ev.key];
  ev.preventDefault();
  select(ids[(next + ids.length) % ids.length], true);
});

async function load() {
  const dash = dashboard();
  if (!dash || !defs.prometheus_url) return;
  const gen = ++generation;
  const range = Number(dom.range.value);
  lastLoad = Date.now();
  await Promise.all(dash.panels.map(async (panel) => {
    const query = new URLSearchParams({ dashboard: dash.id, panel: panel.id, range: String(range) });
    let result;
    try {
      result = { data: await api.get(`/api/ops/query?${query}`) };
    } catch (err) {
      if (err.status === 401) {
        shell.expired();
        return;
      }
      result = { error: err };
    }
    if (gen !== generation) return;
    results.set(`${dash.id}/${panel.id}`, result);
    const card = cards.find((c) => c.panel.id === panel.id);
    if (card) renderCard(card);
  }));
  if (gen !== generation) return;
  updatedAt = new Date();
  renderUpdated();
}

function renderUpdated() {
  dom.updated.textContent = updatedAt
    ? t('ops.updated', { time: `${pad2(updatedAt.getHours())}:${pad2(updatedAt.getMinutes())}:${pad2(updatedAt.getSeconds())}` })
    : '';
}

function renderSource() {
  dom.source.textContent = defs && defs.prometheus_url ? t('ops.source', { url: defs.prometheus_url }) : '';
}

function stop() {
  clearInterval(timer);
  timer = null;
  generation += 1;
  defs = null;
  current = null;
  updatedAt = null;
  results.clear();
  for (const card of cards) destroyPlot(card);
  cards = [];
  resizer.disconnect();
  dom.stats.replaceChildren();
  dom.charts.replaceChildren();
  dom.tabs.replaceChildren(dom.tabs.firstElementChild);
  dom.forbidden.hidden = true;
  delete document.body.dataset.access;
  renderUpdated();
  renderSource();
}

async function start() {
  stop();
  try {
    defs = await api.get('/api/ops/dashboards');
  } catch (err) {
    if (err.status === 401) {
      shell.expired();
      return;
    }
    if (err.status === 403) {
      // Said in the page, with nothing of the page's controls left around it.
      document.body.dataset.access = 'denied';
      dom.forbidden.textContent = t('ops.forbidden', { role: t(`role.${shell.role}`) });
      dom.forbidden.hidden = false;
      return;
    }
    throw err;
  }
  if (!defs.prometheus_url) banner.set('prometheus', 'warn', { key: 'ops.noPrometheus' });
  renderSource();
  const wanted = decodeURIComponent(location.hash.slice(1));
  select(defs.dashboards.some((d) => d.id === wanted) ? wanted : defs.dashboards[0].id);
  timer = setInterval(() => {
    if (document.visibilityState === 'visible') load();
  }, REFRESH_MS);
}

// --- page ----------------------------------------------------------------------------------

try {
  const saved = localStorage.getItem(RANGE_KEY);
  if ([...dom.range.options].some((o) => o.value === saved)) dom.range.value = saved;
} catch { /* storage disabled */ }

dom.range.addEventListener('change', () => {
  try { localStorage.setItem(RANGE_KEY, dom.range.value); } catch { /* storage disabled */ }
  results.clear();
  buildBoard();
  load();
});

// A hidden tab is not refreshed; coming back shows fresh figures at once.
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && defs && Date.now() - lastLoad >= REFRESH_MS) load();
});

window.addEventListener('hashchange', () => {
  const wanted = decodeURIComponent(location.hash.slice(1));
  if (wanted !== current) select(wanted);
});

onLangChange(() => {
  document.title = `aicc · ${t('ops.title')}`;
  if (!defs) {
    if (!dom.forbidden.hidden) dom.forbidden.textContent = t('ops.forbidden', { role: t(`role.${shell.role}`) });
    return;
  }
  renderTabs();
  buildBoard();
  renderUpdated();
  renderSource();
});
document.title = `aicc · ${t('ops.title')}`;

shell = startShell({
  appId: 'ops',
  onEnter: start,
  onLeave() {
    stop();
    banner.clear('prometheus');
  },
});
