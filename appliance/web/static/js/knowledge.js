// The knowledge base in the agent desktop: the Knowledge tab (search, results with their highlighted
// passage, one article to read and copy into a reply) and the articles suggested for the contact on
// screen from the bot's summary and the caller's words. Needs kb.read; the API returns published
// articles only. Articles' text is only ever written with textContent; the search's snippet (escaped
// text with <mark>..</mark> around the matched words) is split on those markers into text nodes and
// <mark> elements, never parsed as HTML.
import * as api from './api.js';
import { t, getLang, onLangChange } from './i18n.js';
import { $, $$, el, errorText } from './ui.js';

const RESULT_LIMIT = 20;
const SUGGEST_LIMIT = 3;
const QUERY_CAP = 480;         // the API reads the first 500 characters of a question
const SUMMARY_CAP = 200;
const CALLER_LINES = 6;        // the caller's latest lines that go into a suggestion's question
const SUGGEST_DELAY_MS = 400;  // a transcript growing line by line asks once
const COPY_NOTE_MS = 5000;

const dom = {
  tab: $('#tab-knowledge'),
  pane: $('#pane-knowledge'),
  form: $('#kb-form'),
  q: $('#kb-q'),
  submit: $('#kb-submit'),
  langs: $$('input[name="kb-lang"]'),
  error: $('#kb-error'),
  status: $('#kb-status'),
  results: $('#kb-results'),
  placeholder: $('#kb-placeholder'),
  articleError: $('#kb-article-error'),
  article: $('#kb-article'),
  title: $('#kb-article-title'),
  meta: $('#kb-article-meta'),
  body: $('#kb-article-body'),
  copy: $('#kb-copy'),
  copyNote: $('#kb-copy-note'),
  suggest: $('#kb-suggest'),
  suggestList: $('#kb-suggest-list'),
  suggestNote: $('#kb-suggest-note'),
};

let enabled = false;       // signed in with kb.read
let onExpired = () => {};
let categories = new Map(); // name -> {title_zh, title_en}
let searchLang = null;     // 'zh' | 'en' chosen with the toggle; null: the page's language
let searchSeq = 0;         // the latest search: older answers are dropped
let searching = false;
let results = null;        // {q, language, hits} of the last search
let searchError = null;
let articleSeq = 0;
let openId = null;         // the article asked for
let article = null;        // its GET /api/kb/articles/{id}
let articleError = null;
let copyNote = null;       // i18n key
let copyTimer = null;
// Suggestions for the contact on screen: key = what was asked (contact, language, question).
let suggestion = { key: '', query: '', hits: [], error: null, loading: false };
let suggestTimer = null;

// --- helpers -------------------------------------------------------------------------------

const ENTITIES = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

/** Undo HTML escaping (&amp; &lt; &gt; &quot; &#x27; ...) in text that is then written as text. */
function unescapeHtml(text) {
  return text.replace(/&(#[xX][0-9a-fA-F]{1,6}|#[0-9]{1,7}|[a-zA-Z]{2,6});/g, (match, name) => {
    if (name[0] === '#') {
      const code = name[1] === 'x' || name[1] === 'X' ? parseInt(name.slice(2), 16) : parseInt(name.slice(1), 10);
      return code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : match;
    }
    const known = ENTITIES[name.toLowerCase()];
    return known === undefined ? match : known;
  });
}

/**
 * The search's snippet as DOM nodes: text nodes, and <mark> elements holding text. Only the exact
 * markers <mark> and </mark> are structure; anything else (the server escapes every "<") stays text.
 */
export function snippetNodes(snippet) {
  const nodes = [];
  let marked = false;
  for (const part of String(snippet || '').split(/(<mark>|<\/mark>)/)) {
    if (part === '<mark>') marked = true;
    else if (part === '</mark>') marked = false;
    else if (part) {
      const text = unescapeHtml(part);
      nodes.push(marked ? el('mark', null, text) : document.createTextNode(text));
    }
  }
  return nodes;
}

function pageLang() {
  return getLang() === 'zh' ? 'zh' : 'en';
}

function shortLang(code) {
  const v = String(code || '').toLowerCase();
  if (v.startsWith('zh')) return 'zh';
  if (v.startsWith('en')) return 'en';
  return null;
}

function categoryLabel(name) {
  const c = categories.get(name);
  if (!c) return name || '';
  return (getLang() === 'zh' ? c.title_zh : c.title_en) || name;
}

function visibilityTag(visibility) {
  const tag = el('span', 'kb-visibility', t(`kb.visibility.${visibility === 'public' ? 'public' : 'internal'}`));
  tag.dataset.visibility = visibility;
  if (visibility !== 'public') tag.title = t('kb.internalHint');
  return tag;
}

function fmtTime(iso) {
  if (!iso) return '';
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return String(iso);
  try {
    return new Intl.DateTimeFormat(getLang() === 'zh' ? 'zh-CN' : 'en-GB', { dateStyle: 'medium' }).format(at);
  } catch {
    return at.toLocaleDateString();
  }
}

function isExpired(err) {
  if (err && err.status === 401) {
    onExpired();
    return true;
  }
  return false;
}

// --- the tab -------------------------------------------------------------------------------

// tickets.js owns the tab bar (clicks, arrow keys, the other panes): this pane follows its tab.
function syncPane() {
  const on = enabled && dom.tab.getAttribute('aria-selected') === 'true';
  dom.pane.hidden = !on;
}

function selectKnowledgeTab() {
  if (dom.tab.getAttribute('aria-selected') !== 'true') dom.tab.click();
  syncPane();
}

// --- search -----------------------------------------------------------------------------------

function currentSearchLang() {
  return searchLang || pageLang();
}

function renderLangToggle() {
  const value = currentSearchLang();
  for (const radio of dom.langs) radio.checked = radio.value === value;
}

async function search() {
  const q = dom.q.value.trim();
  const seq = ++searchSeq;
  if (!q) {
    searching = false;
    results = null;
    searchError = null;
    renderResults();
    dom.status.textContent = t('kb.enterQuery');
    dom.q.focus();
    return;
  }
  const language = currentSearchLang();
  searching = true;
  renderResults();
  try {
    const params = new URLSearchParams({ q, language, limit: String(RESULT_LIMIT) });
    const hits = await api.get(`/api/kb/search?${params}`);
    if (seq !== searchSeq || !enabled) return;
    results = { q, language, hits: Array.isArray(hits) ? hits : [] };
    searchError = null;
  } catch (err) {
    if (seq !== searchSeq || isExpired(err)) return;
    results = null;
    searchError = err;
  }
  searching = false;
  renderResults();
}

function hitItem(hit, className) {
  const li = el('li', className);
  li.dataset.id = String(hit.id);
  const head = el('div', 'kb-hit-head');
  const open = el('button', 'link-button kb-hit-title', hit.title);
  open.type = 'button';
  open.setAttribute('aria-label', t('kb.openNamed', { title: hit.title }));
  open.addEventListener('click', () => openArticle(hit.id));
  const meta = el('span', 'kb-hit-meta');
  meta.append(el('span', 'kb-category', categoryLabel(hit.category)), visibilityTag(hit.visibility));
  head.append(open, meta);
  const snippet = el('p', 'kb-snippet');
  snippet.append(...snippetNodes(hit.snippet));
  li.append(head, snippet);
  if (String(hit.id) === String(openId)) li.setAttribute('aria-current', 'true');
  return li;
}

function renderResults() {
  dom.error.hidden = !searchError;
  dom.error.textContent = searchError ? t('kb.searchFailed', { error: errorText(searchError) }) : '';
  dom.submit.disabled = searching;
  dom.results.setAttribute('aria-busy', String(searching));
  if (searching) dom.status.textContent = t('kb.searching');
  else if (results && results.hits.length) dom.status.textContent = t('kb.found', { count: results.hits.length });
  else if (results) dom.status.textContent = t('kb.none', { q: results.q });
  else dom.status.textContent = '';
  if (!searching) dom.results.replaceChildren(...(results ? results.hits.map((h) => hitItem(h, 'kb-hit')) : []));
}

// --- one article ------------------------------------------------------------------------------

/** Open article `id` in the Knowledge tab (from the results, a suggestion, or another page module). */
export async function openArticle(id, { focus = true } = {}) {
  if (!enabled || !id) return;
  selectKnowledgeTab();
  const seq = ++articleSeq;
  openId = String(id);
  articleError = null;
  if (!article || String(article.id) !== openId) {
    article = null;
    dom.title.textContent = t('kb.loading');
    dom.meta.textContent = '';
    dom.body.textContent = '';
  }
  setCopyNote(null);
  renderArticle();
  markCurrent();
  if (focus) dom.title.focus();
  try {
    const answer = await api.get(`/api/kb/articles/${encodeURIComponent(openId)}`);
    if (seq !== articleSeq || !enabled) return;
    article = answer;
  } catch (err) {
    if (seq !== articleSeq || isExpired(err)) return;
    article = null;
    articleError = err;
  }
  renderArticle();
}

function markCurrent() {
  for (const li of dom.results.children) {
    if (li.dataset.id === openId) li.setAttribute('aria-current', 'true');
    else li.removeAttribute('aria-current');
  }
}

function renderArticle() {
  dom.placeholder.hidden = !!openId;
  dom.articleError.hidden = !articleError;
  dom.articleError.textContent = articleError ? t('kb.loadFailed', { error: errorText(articleError) }) : '';
  dom.article.hidden = !openId || !!articleError;
  dom.article.dataset.id = article ? String(article.id) : '';
  dom.copy.disabled = !article;
  if (!article) return;
  dom.title.textContent = article.title;
  const langName = t(`kb.lang.${article.language === 'zh' ? 'zh' : 'en'}`);
  dom.meta.replaceChildren(
    el('span', 'kb-category', categoryLabel(article.category)),
    el('span', 'kb-lang', langName),
    visibilityTag(article.visibility),
    el('span', 'kb-updated', t('kb.updated', { time: fmtTime(article.updated_at) })),
  );
  dom.body.textContent = article.body || '';   // white-space: pre-wrap keeps its line breaks
}

function setCopyNote(key) {
  copyNote = key;
  clearTimeout(copyTimer);
  dom.copyNote.textContent = key ? t(key) : '';
  dom.copyNote.hidden = !key;
  dom.copyNote.dataset.kind = key === 'kb.copied' ? 'ok' : 'error';
  if (key) copyTimer = setTimeout(() => setCopyNote(null), COPY_NOTE_MS);
}

function copyByHand(text) {
  const area = el('textarea', 'visually-hidden');
  area.value = text;
  area.setAttribute('readonly', '');
  document.body.append(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand('copy');
  } catch {
    ok = false;
  }
  area.remove();
  dom.copy.focus();
  return ok;
}

async function copyBody() {
  if (!article) return;
  const text = article.body || '';
  let ok = false;
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      ok = true;
    } catch {
      ok = false;
    }
  }
  if (!ok) ok = copyByHand(text);
  setCopyNote(ok ? 'kb.copied' : 'kb.copyFailed');
}

// --- suggestions for the contact on screen ----------------------------------------------------------

/** The question for a contact: the bot's summary, then the caller's latest lines, capped. */
function contactQuery(contact) {
  const parts = [];
  const summary = String(contact.summary || '').trim();
  if (summary) parts.push(summary.slice(0, SUMMARY_CAP));
  const lines = (Array.isArray(contact.transcript) ? contact.transcript : [])
    .filter((line) => line && line.speaker === 'caller' && line.text)
    .map((line) => String(line.text).trim())
    .filter((text) => text)
    .slice(-CALLER_LINES);
  let room = QUERY_CAP - (parts.length ? parts[0].length + 1 : 0);
  const picked = [];
  for (const line of lines.reverse()) {   // the latest words first, while there is room
    if (room <= 0) break;
    const piece = line.slice(0, room);
    picked.unshift(piece);
    room -= piece.length + 1;
  }
  parts.push(...picked);
  if (!parts.length && contact.intent) parts.push(String(contact.intent).replace(/[_-]+/g, ' '));
  return parts.join(' ').slice(0, QUERY_CAP);
}

/**
 * The contact the desk shows (its pop: summary, intent, transcript, language), or null: asks the
 * search for the articles that fit once per new question, and lists up to SUGGEST_LIMIT of them.
 */
export function suggestFor(contact) {
  if (!enabled) return;
  const query = contact ? contactQuery(contact) : '';
  const language = (contact && shortLang(contact.language)) || pageLang();
  const key = query ? `${contact.contact_id || ''}\n${language}\n${query}` : '';
  if (key === suggestion.key) return;
  clearTimeout(suggestTimer);
  suggestion = { key, query, language, hits: [], error: null, loading: !!query };
  renderSuggestions();
  if (query) suggestTimer = setTimeout(() => loadSuggestions(key), SUGGEST_DELAY_MS);
}

async function loadSuggestions(key) {
  if (!enabled || suggestion.key !== key) return;
  const { query, language } = suggestion;
  try {
    const params = new URLSearchParams({ q: query, language, limit: String(SUGGEST_LIMIT) });
    const hits = await api.get(`/api/kb/search?${params}`);
    if (!enabled || suggestion.key !== key) return;
    suggestion = { ...suggestion, hits: Array.isArray(hits) ? hits.slice(0, SUGGEST_LIMIT) : [], loading: false };
  } catch (err) {
    if (isExpired(err) || suggestion.key !== key) return;
    suggestion = { ...suggestion, error: err, loading: false };
  }
  renderSuggestions();
}

function renderSuggestions() {
  const s = suggestion;
  dom.suggest.hidden = !enabled || !s.key;
  dom.suggestList.replaceChildren(...s.hits.map((h) => hitItem(h, 'kb-hit kb-suggestion')));
  let note = '';
  if (s.loading) note = t('kb.suggesting');
  else if (s.error) note = t('kb.suggestFailed', { error: errorText(s.error) });
  else if (s.key && !s.hits.length) note = t('kb.suggestNone');
  dom.suggestNote.textContent = note;
  dom.suggestNote.hidden = !note;
  dom.suggestNote.classList.toggle('form-error', !!s.error);
}

// --- lifecycle -----------------------------------------------------------------------------------

async function loadCategories() {
  try {
    const list = await api.get('/api/kb/categories');
    if (!enabled) return;
    categories = new Map((Array.isArray(list) ? list : []).map((c) => [c.name, c]));
    renderAll();
  } catch (err) {
    isExpired(err);   // without the titles the categories show by name
  }
}

function renderAll() {
  renderLangToggle();
  renderResults();
  renderArticle();
  renderSuggestions();
  if (copyNote) dom.copyNote.textContent = t(copyNote);
}

/** Signed in: `mePayload` is /api/auth/me's answer; `expired` ends the session (an API call answered 401). */
export function startKnowledge(mePayload, expired) {
  const permissions = mePayload && Array.isArray(mePayload.permissions) ? mePayload.permissions : [];
  // An empty list: /api/auth/me failed right after the login; the API still says no where it must.
  enabled = !permissions.length || permissions.includes('kb.read');
  onExpired = expired || (() => {});
  dom.tab.hidden = !enabled;
  syncPane();
  if (!enabled) return;
  searchLang = null;
  renderAll();
  loadCategories();
}

export function stopKnowledge() {
  enabled = false;
  searchSeq += 1;
  articleSeq += 1;
  clearTimeout(suggestTimer);
  searching = false;
  results = null;
  searchError = null;
  openId = null;
  article = null;
  articleError = null;
  categories = new Map();
  suggestion = { key: '', query: '', hits: [], error: null, loading: false };
  dom.form.reset();
  setCopyNote(null);
  dom.tab.hidden = true;
  renderAll();
  syncPane();
}

function wire() {
  new MutationObserver(syncPane).observe(dom.tab, { attributes: true, attributeFilter: ['aria-selected'] });
  dom.form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    search();
  });
  for (const radio of dom.langs) {
    radio.addEventListener('change', () => {
      if (!radio.checked) return;
      searchLang = radio.value === pageLang() ? null : radio.value;
      if (dom.q.value.trim()) search();
    });
  }
  dom.copy.addEventListener('click', copyBody);
  onLangChange(() => {
    // The toggle follows the page's language again; a search made shows that language's articles.
    const before = currentSearchLang();
    searchLang = null;
    renderAll();
    if (enabled && results && currentSearchLang() !== before) search();
  });
}

wire();
renderAll();
