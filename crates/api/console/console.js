/* The operator console of the loyalty engine: plain ES2020, no framework, no build step.
 *
 * The API key lives in sessionStorage only (never localStorage, cookies or a URL) and goes to
 * this same origin as `Authorization: Bearer KEY` on every call. Screens are routed by the URL
 * hash (#/overview/PROG, #/member/LOY, #/simulate, #/backtest); the hash never holds the key.
 * Everything built from API data goes through text nodes (no innerHTML of data).
 */
(function () {
  'use strict';

  const KEY_STORE = 'loyaltyConsole.key';
  const PROGRAM_STORE = 'loyaltyConsole.program';
  const CUSTOMER_STORE = 'loyaltyConsole.customer';
  const SVG_NS = 'http://www.w3.org/2000/svg';

  const COLORS = {
    earned: '#16a34a', redeemed: '#2563eb', expired: '#d97706', reversed: '#dc2626',
    enrolled: '#7c3aed', adjusted: '#0891b2', transferred: '#64748b',
    baseline: '#94a3b8', candidate: '#4f46e5', bar: '#4f46e5',
  };

  const state = {
    programs: [],          // program objects from GET /v1/programs
    programId: null,       // the selected program
    range: { from: '', to: '' },
    cleanups: [],          // charts and observers of the current screen
    renderId: 0,
  };

  // ---------------------------------------------------------------------------------------
  // Small DOM helpers

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null) el.setAttribute(k, String(v));
    }
    append(el, children);
    return el;
  }

  function setAttrs(el, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'class') el.className = v;
      else if (k === 'value') el.value = v;
      else if (k === 'text') el.textContent = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }

  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
  }

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------------------------------
  // Formatting

  const intFmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
  const decFmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 6 });

  function fmtInt(n) {
    if (n === null || n === undefined || n === '') return '—';
    const x = Number(n);
    return Number.isFinite(x) ? intFmt.format(x) : String(n);
  }

  function fmtSigned(n) {
    const x = Number(n);
    if (!Number.isFinite(x)) return String(n);
    return (x > 0 ? '+' : x < 0 ? '−' : '') + intFmt.format(Math.abs(x));
  }

  function fmtNum(n) {
    if (n === null || n === undefined) return '—';
    if (typeof n === 'number') return decFmt.format(n);
    return String(n);
  }

  function fmtCompact(v) {
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(a >= 1e10 ? 0 : 1) + 'G';
    if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e7 ? 0 : 1) + 'M';
    if (a >= 1e4) return (v / 1e3).toFixed(a >= 1e5 ? 0 : 1) + 'k';
    return intFmt.format(v);
  }

  function minorDigits(currency) {
    try {
      return new Intl.NumberFormat('en-US', { style: 'currency', currency }).resolvedOptions().maximumFractionDigits;
    } catch (e) {
      return 2;
    }
  }

  function fmtMoney(minor, currency) {
    const digits = minorDigits(currency);
    const value = Number(minor) / Math.pow(10, digits);
    try {
      return new Intl.NumberFormat('en-US', { style: 'currency', currency }).format(value);
    } catch (e) {
      return value.toFixed(digits) + ' ' + currency;
    }
  }

  const dateTimeFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

  function fmtTime(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? String(iso) : dateTimeFmt.format(d);
  }

  /** An RFC 3339 time in UTC as text, to the minute (what a UTC form field takes). */
  function fmtUtc(iso) {
    return iso ? String(iso).slice(0, 16).replace('T', ' ') + ' UTC' : '—';
  }

  function timeEl(iso) {
    return h('time', { datetime: iso || '', title: iso || '' }, fmtTime(iso));
  }

  function pointsName(program) {
    return (program && program.points && program.points.name) || 'points';
  }

  function pct(part, whole) {
    if (!whole) return '0%';
    return (100 * part / whole).toFixed(part / whole < 0.1 ? 1 : 0) + '%';
  }

  // ---------------------------------------------------------------------------------------
  // The key

  function getKey() {
    try {
      return sessionStorage.getItem(KEY_STORE);
    } catch (e) {
      return null;
    }
  }

  function setKey(key) {
    sessionStorage.setItem(KEY_STORE, key);
  }

  function forgetKey() {
    try {
      sessionStorage.removeItem(KEY_STORE);
    } catch (e) { /* storage unavailable: nothing to clear */ }
  }

  function keyIsReadOnly() {
    const k = getKey() || '';
    return k.startsWith('rk_');
  }

  // ---------------------------------------------------------------------------------------
  // The API

  class ApiError extends Error {
    constructor(status, error) {
      const e = error || {};
      super(e.message || `HTTP ${status}`);
      this.status = status;
      this.type = e.type || 'api_error';
      this.code = e.code || null;
      this.param = e.param || null;
    }

    describe() {
      let t = this.message;
      const extra = [];
      if (this.code) extra.push(this.code);
      if (this.param) extra.push('param ' + this.param);
      if (extra.length) t += ` (${extra.join(', ')})`;
      return t;
    }
  }

  function uuid() {
    if (window.crypto && typeof crypto.randomUUID === 'function') return crypto.randomUUID();
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const x = Array.from(b, (v) => v.toString(16).padStart(2, '0')).join('');
    return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
  }

  /** Calls the API; resolves to {status, body}; rejects with an ApiError on any non-2xx. */
  async function api(method, path, body, opts) {
    const key = getKey();
    if (!key) {
      showKeyScreen('Enter an API key.');
      throw new ApiError(401, { type: 'authentication_error', message: 'No API key' });
    }
    const headers = { Authorization: 'Bearer ' + key, Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (opts && opts.idempotent) headers['Idempotency-Key'] = uuid();
    let res;
    try {
      res = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        credentials: 'omit',
        referrerPolicy: 'no-referrer',
      });
    } catch (e) {
      throw new ApiError(0, { type: 'network_error', message: `Could not reach the server (${e.message})` });
    }
    const text = await res.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch (e) {
      json = null;
    }
    if (!res.ok) {
      const err = json && typeof json.error === 'object' && json.error
        ? json.error
        : { type: 'api_error', message: `HTTP ${res.status} ${res.statusText}${text ? ': ' + text.slice(0, 300) : ''}` };
      const apiErr = new ApiError(res.status, err);
      if (res.status === 401) {
        forgetKey();
        showKeyScreen(apiErr.describe());
      }
      throw apiErr;
    }
    return { status: res.status, body: json };
  }

  const get = async (path) => (await api('GET', path)).body;

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
    }
    const t = q.toString();
    return t ? '?' + t : '';
  }

  const enc = encodeURIComponent;

  // ---------------------------------------------------------------------------------------
  // Messages

  function errorText(e) {
    return e instanceof ApiError ? e.describe() : (e && e.message) || String(e);
  }

  function errorBox(e, testid) {
    return h('div', { class: 'alert alert-error', role: 'alert', 'data-testid': testid || 'error' },
      e instanceof ApiError && e.status ? h('strong', {}, `${e.status} ${e.type}: `) : null,
      errorText(e));
  }

  function showGlobalError(e) {
    const el = $('global-error');
    if (!e) {
      el.hidden = true;
      clear(el);
      return;
    }
    clear(el);
    append(el, [errorText(e)]);
    el.hidden = false;
  }

  function loading(text) {
    return h('div', { class: 'loading', 'aria-live': 'polite' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), text || 'Loading…');
  }

  /** Replaces a placeholder's content with what `load` builds, or an error box. */
  async function fill(el, load, testid) {
    clear(el);
    el.append(loading());
    try {
      const content = await load();
      clear(el);
      append(el, [content]);
    } catch (e) {
      clear(el);
      el.append(errorBox(e, testid));
      if (!(e instanceof ApiError)) console.error(e);
    }
  }

  // ---------------------------------------------------------------------------------------
  // Screens: plumbing

  function cleanupScreen() {
    for (const f of state.cleanups.splice(0)) {
      try {
        f();
      } catch (e) { /* already gone */ }
    }
  }

  function currentProgram() {
    return state.programs.find((p) => p.id === state.programId) || null;
  }

  function selectProgram(id) {
    if (!state.programs.some((p) => p.id === id)) return false;
    state.programId = id;
    try {
      sessionStorage.setItem(PROGRAM_STORE, id);
    } catch (e) { /* not kept */ }
    $('program-select').value = id;
    return true;
  }

  function parseRoute() {
    const raw = (location.hash || '').replace(/^#\/?/, '');
    const parts = raw.split('/').filter(Boolean).map((p) => {
      try {
        return decodeURIComponent(p);
      } catch (e) {
        return p;
      }
    });
    return { screen: parts[0] || 'overview', arg: parts[1] || null };
  }

  function section(title, attrs, ...children) {
    return h('section', Object.assign({ class: 'card' }, attrs || {}),
      title ? h('h2', { class: 'card-title' }, title) : null, children);
  }

  function tableWrap(table) {
    return h('div', { class: 'table-wrap' }, table);
  }

  function table(head, rows, attrs) {
    const a = Object.assign({}, attrs || {});
    if (a.stack) {
      delete a.stack;
      a.class = ((a.class || '') + ' stack').trim();
    }
    const t = h('table', a,
      h('thead', {}, h('tr', {}, head.map((c) => (c instanceof Node ? c : h('th', {}, c))))),
      h('tbody', {}, rows));
    labelCells(t);
    return tableWrap(t);
  }

  /** Gives each body cell its column's heading as data-label (shown on phones, where a
   * `stack` table lays each row out as a block of labelled lines). */
  function labelCells(t) {
    const names = Array.from(t.querySelectorAll('thead th'), (th) => th.textContent.trim());
    for (const tr of t.querySelectorAll('tbody tr:not(.empty)')) {
      Array.from(tr.children).forEach((td, i) => {
        if (!td.hasAttribute('data-label') && names[i]) td.setAttribute('data-label', names[i]);
      });
    }
  }

  function emptyRow(cols, text) {
    return h('tr', { class: 'empty' }, h('td', { colspan: cols }, text));
  }

  function num(v, attrs) {
    return h('td', Object.assign({ class: 'num' }, attrs || {}), v);
  }

  function signedCell(v, attrs) {
    const x = Number(v);
    const cls = 'num ' + (x > 0 ? 'pos' : x < 0 ? 'neg' : '');
    return h('td', Object.assign({ class: cls }, attrs || {}), fmtSigned(v));
  }

  function memberLink(account, text) {
    return h('a', { href: '#/member/' + enc(account) }, text || account);
  }

  function stat(label, value, attrs, sub) {
    return h('div', { class: 'stat' },
      h('div', { class: 'stat-label' }, label),
      h('div', Object.assign({ class: 'stat-value' }, attrs || {}), value),
      sub ? h('div', { class: 'stat-sub' }, sub) : null);
  }

  async function render() {
    cleanupScreen();
    const id = ++state.renderId;
    showGlobalError(null);
    closeMenu();
    const route = parseRoute();
    const view = $('view');
    clear(view);
    for (const a of document.querySelectorAll('[data-nav]')) {
      a.classList.toggle('active', a.dataset.nav === route.screen);
      if (a.dataset.nav === route.screen) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    const root = h('div', { class: 'screen' });
    view.append(root);
    const alive = () => id === state.renderId;
    try {
      switch (route.screen) {
        case 'overview':
          if (route.arg && !selectProgram(route.arg)) {
            root.append(errorBox(new Error(`Unknown program ${route.arg}`)));
            return;
          }
          await renderOverview(root, alive);
          break;
        case 'member':
          await renderMember(root, route.arg, alive);
          break;
        case 'simulate':
          renderSimulate(root);
          break;
        case 'backtest':
          renderBacktest(root);
          break;
        default:
          root.append(section('Not found', {}, h('p', {}, 'No such screen. '), h('a', { href: '#/overview' }, 'Go to the overview')));
      }
    } catch (e) {
      if (alive()) root.append(errorBox(e));
    }
    document.title = (route.screen.charAt(0).toUpperCase() + route.screen.slice(1)) + ' · Loyalty console';
  }

  // ---------------------------------------------------------------------------------------
  // Charts

  function dayToTs(d) {
    const [y, m, dd] = d.split('-').map(Number);
    return Date.UTC(y, m - 1, dd) / 1000;
  }

  function tsToDay(ts) {
    return new Date(ts * 1000).toISOString().slice(0, 10);
  }

  /** Days from `first` to `last` (both "YYYY-MM-DD"), every day present, at least `minDays`. */
  function dayRange(first, last, minDays) {
    let start = dayToTs(first);
    const end = dayToTs(last);
    if ((end - start) / 86400 + 1 < minDays) start = end - (minDays - 1) * 86400;
    const out = [];
    for (let t = start; t <= end; t += 86400) out.push(t);
    return out;
  }

  // Whole-number steps for the y axes (points and counts are integers).
  const INT_INCRS = [1, 2, 5].flatMap((m) => [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12].map((p) => m * p))
    .sort((a, b) => a - b);

  /** A uPlot time-series chart of daily values into `container` (already in the document). */
  function timeChart(container, { title, xs, series, height, testid, bars }) {
    const holder = h('div', { class: 'chart', 'data-testid': testid || null });
    const wrap = h('figure', { class: 'chart-figure' }, title ? h('figcaption', {}, title) : null, holder);
    container.append(wrap);
    if (typeof window.uPlot !== 'function') {
      holder.append(errorBox(new Error('The chart library (vendor/uPlot.iife.min.js) did not load')));
      return null;
    }
    const hgt = height || 240;
    const width = Math.max(240, Math.floor(holder.clientWidth || container.clientWidth || 600));
    const opts = {
      width,
      height: hgt,
      tzDate: (ts) => window.uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC'),
      // Bars need half a day of room on either side.
      scales: { x: bars ? { time: true, range: (u, lo, hi) => [lo - 43200, hi + 43200] } : { time: true } },
      cursor: { drag: { x: true, y: false } },
      legend: { show: true, live: true },
      series: [
        { label: 'Day', value: (u, v) => (v == null ? '—' : tsToDay(v)) },
        ...series.map((sr, i) => (bars ? {
          // Nested bars: each series narrower than the one before, drawn over it, so every
          // series of a day stays visible.
          label: sr.label,
          stroke: sr.color,
          fill: sr.color + 'cc',
          width: 0,
          paths: window.uPlot.paths.bars({ size: [0.8 * (1 - i / (series.length + 1)), 48], align: 0 }),
          points: { show: false },
          value: (u, v) => (v == null ? '—' : fmtInt(v)),
        } : {
          label: sr.label,
          stroke: sr.color,
          width: 2,
          fill: sr.fill || null,
          dash: sr.dash || undefined,
          points: { show: xs.length <= 62, size: 5, fill: sr.color },
          value: (u, v) => (v == null ? '—' : fmtInt(v)),
        })),
      ],
      axes: [
        { stroke: '#6b7280', grid: { stroke: '#eef0f3' }, ticks: { stroke: '#e5e7eb' } },
        {
          stroke: '#6b7280', grid: { stroke: '#eef0f3' }, ticks: { stroke: '#e5e7eb' },
          size: 52, incrs: INT_INCRS, values: (u, vals) => vals.map((v) => fmtCompact(v)),
        },
      ],
    };
    const data = [xs, ...series.map((sr) => sr.values)];
    const chart = new window.uPlot(opts, data, holder);
    let last = width;
    const ro = new ResizeObserver(() => {
      const w = Math.floor(holder.clientWidth);
      if (w > 0 && Math.abs(w - last) > 2) {
        last = w;
        chart.setSize({ width: Math.max(240, w), height: hgt });
      }
    });
    ro.observe(holder);
    state.cleanups.push(() => {
      ro.disconnect();
      chart.destroy();
    });
    return chart;
  }

  /**
   * A horizontal bar chart in SVG: one group per category, one bar per series; drawn at the
   * container's width and redrawn when it changes.
   */
  function barChart(container, { categories, series, testid, valueFmt }) {
    const holder = h('div', { class: 'bar-chart', 'data-testid': testid || null });
    container.append(holder);
    const fmt = valueFmt || fmtInt;
    const draw = (width) => {
      clear(holder);
      const labelW = Math.min(180, Math.max(80, Math.floor(width * 0.3)));
      const valueW = 64;
      const barH = 16;
      const gap = 4;
      const groupGap = 14;
      const groupH = series.length * barH + (series.length - 1) * gap;
      const legendH = series.length > 1 ? 26 : 0;
      const height = legendH + categories.length * (groupH + groupGap) + 4;
      const plotW = Math.max(40, width - labelW - valueW - 8);
      let lo = 0;
      let hi = 0;
      for (const sr of series) {
        for (const v of sr.values) {
          lo = Math.min(lo, Number(v) || 0);
          hi = Math.max(hi, Number(v) || 0);
        }
      }
      if (hi === lo) hi = lo + 1;
      const xOf = (v) => labelW + ((v - lo) / (hi - lo)) * plotW;
      const svg = s('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', class: 'bar-svg' });
      svg.append(s('title', {}, series.map((sr) => sr.label).join(' vs ') + ' by ' + categories.join(', ')));
      if (legendH) {
        let x = labelW;
        for (const sr of series) {
          svg.append(s('rect', { x, y: 6, width: 12, height: 12, rx: 2, fill: sr.color }));
          const t = s('text', { x: x + 16, y: 16, class: 'bar-legend' }, sr.label);
          svg.append(t);
          x += 24 + sr.label.length * 7.5;
        }
      }
      categories.forEach((cat, i) => {
        const y0 = legendH + i * (groupH + groupGap);
        const label = String(cat);
        const maxChars = Math.floor((labelW - 8) / 7);
        svg.append(s('text', { x: labelW - 8, y: y0 + groupH / 2 + 4, 'text-anchor': 'end', class: 'bar-label' },
          s('title', {}, label), label.length > maxChars ? label.slice(0, maxChars - 1) + '…' : label));
        series.forEach((sr, j) => {
          const v = Number(sr.values[i]) || 0;
          const y = y0 + j * (barH + gap);
          const x1 = xOf(Math.min(0, v));
          const x2 = xOf(Math.max(0, v));
          svg.append(s('rect', {
            x: x1, y, width: Math.max(v === 0 ? 0 : 2, x2 - x1), height: barH, rx: 3, fill: sr.color,
          }, s('title', {}, `${label} · ${sr.label}: ${fmt(v)}`)));
          svg.append(s('text', { x: x2 + 6, y: y + barH - 4, class: 'bar-value' }, fmt(v)));
        });
      });
      if (lo < 0) svg.append(s('line', { x1: xOf(0), x2: xOf(0), y1: legendH, y2: height, stroke: '#9ca3af' }));
      holder.append(svg);
    };
    let last = Math.floor(holder.clientWidth || container.clientWidth || 500);
    draw(Math.max(200, last));
    const ro = new ResizeObserver(() => {
      const w = Math.floor(holder.clientWidth);
      if (w > 0 && Math.abs(w - last) > 2) {
        last = w;
        draw(Math.max(200, w));
      }
    });
    ro.observe(holder);
    state.cleanups.push(() => ro.disconnect());
  }

  // ---------------------------------------------------------------------------------------
  // Overview

  async function renderOverview(root, alive) {
    const prog = currentProgram();
    if (!prog) {
      root.append(section('No program', {}, h('p', {}, 'This engine has no program configured.')));
      return;
    }
    if (parseRoute().arg !== prog.id) history.replaceState(null, '', '#/overview/' + enc(prog.id));
    const pn = pointsName(prog);
    const fromIn = h('input', { type: 'date', value: state.range.from, 'data-testid': 'stats-from', 'aria-label': 'From' });
    const toIn = h('input', { type: 'date', value: state.range.to, 'data-testid': 'stats-to', 'aria-label': 'To' });
    const rangeForm = h('form', {
      class: 'range-form',
      onsubmit: (ev) => {
        ev.preventDefault();
        state.range = { from: fromIn.value, to: toIn.value };
        render();
      },
    }, h('label', {}, 'From ', fromIn), h('label', {}, 'To ', toIn),
    h('button', { type: 'submit', class: 'btn btn-small' }, 'Apply'),
    h('button', {
      type: 'button', class: 'btn btn-small btn-ghost',
      onclick: () => {
        state.range = { from: '', to: '' };
        render();
      },
    }, 'All time'));

    root.append(h('div', { class: 'page-head' },
      h('div', {},
        h('h1', {}, prog.name || prog.id),
        h('div', { class: 'muted mono-small' }, [prog.id, prog.currency, prog.timezone || 'UTC'].join(' · '))),
      rangeForm));

    const statsEl = h('div', { class: 'stats-grid', 'data-testid': 'overview-stats' });
    const tiersEl = section('Members per tier', { 'data-testid': 'tiers' });
    const chartsEl = section(`${pn.charAt(0).toUpperCase() + pn.slice(1)} per day`, { 'data-testid': 'daily' });
    const atRiskEl = section('Members at risk', { 'data-testid': 'at-risk' });
    const rewardsEl = section('Reward stock', { 'data-testid': 'reward-stock' });
    root.append(statsEl, h('div', { class: 'grid-2' }, tiersEl, rewardsEl), chartsEl, atRiskEl);

    const statsP = get(`/v1/programs/${enc(prog.id)}/stats` + query(state.range));
    const atRiskP = get('/v1/accounts' + query({ program: prog.id, at_risk: 'true', limit: 100 }));
    const rewardsP = get(`/v1/programs/${enc(prog.id)}/rewards` + query({ limit: 100 }));

    // Stats: headline numbers, tiers, daily charts.
    statsEl.append(loading());
    tiersEl.append(loading());
    chartsEl.append(loading());
    let stats;
    try {
      stats = await statsP;
    } catch (e) {
      if (!alive()) return;
      for (const el of [statsEl, tiersEl, chartsEl]) {
        el.querySelector('.loading')?.remove();
        el.append(errorBox(e));
      }
      stats = null;
    }
    if (stats && alive()) {
      clear(statsEl);
      const days = stats.days || [];
      const sum = (k) => days.reduce((a, d) => a + (Number(d[k]) || 0), 0);
      statsEl.append(
        stat('Members', fmtInt(stats.members), { 'data-testid': 'stat-members' }),
        stat(`${pn} outstanding`, fmtInt(stats.pointsOutstanding), { 'data-testid': 'stat-outstanding' }),
        stat('At risk', fmtInt(stats.atRisk), { 'data-testid': 'stat-at-risk' },
          stats.members ? pct(stats.atRisk, stats.members) + ' of members' : null),
        stat(`Earned${state.range.from || state.range.to ? '' : ' (all time)'}`, fmtInt(sum('earned')), { 'data-testid': 'stat-earned' }),
        stat('Redeemed', fmtInt(sum('redeemed')), { 'data-testid': 'stat-redeemed' }),
        stat('Enrolled', fmtInt(sum('enrolled')), { 'data-testid': 'stat-enrolled' }));
      renderTiers(tiersEl, prog, stats);
      renderDaily(chartsEl, prog, stats);
    }

    // At-risk members.
    fillSection(atRiskEl, atRiskP, alive, (list) => {
      const rows = list.data.map((a) => h('tr', {},
        h('td', {}, memberLink(a.id, a.customer)),
        h('td', { class: 'mono-small' }, memberLink(a.id)),
        h('td', {}, a.tier ? a.tier.name : '—'),
        num(fmtInt(a.balance)),
        num(fmtQualifying(prog, a.qualifyingValue))));
      return [
        h('p', { class: 'muted' }, 'Members who would lose their tier if it were evaluated now.'),
        table(['Customer', 'Account', 'Tier', h('th', { class: 'num' }, 'Balance'), h('th', { class: 'num' }, 'Qualifying')],
          rows.length ? rows : [emptyRow(5, 'No member is at risk.')], { 'data-testid': 'at-risk-table', stack: true }),
        list.has_more ? h('p', { class: 'muted' }, 'Showing the first 100.') : null,
      ];
    });

    // Reward stock.
    fillSection(rewardsEl, rewardsP, alive, (list) => {
      const rows = list.data.map((r) => h('tr', { 'data-reward': r.id },
        h('td', {}, h('div', {}, r.name || r.id), r.name ? h('div', { class: 'muted mono-small' }, r.id) : null),
        num(fmtInt(r.cost)),
        h('td', { class: 'num', 'data-testid': 'stock-' + r.id },
          r.stockLeft === null || r.stockLeft === undefined
            ? h('span', { class: 'muted' }, 'unlimited')
            : h('span', { class: Number(r.stockLeft) === 0 ? 'badge badge-red' : '' }, fmtInt(r.stockLeft)))));
      return table(['Reward', h('th', { class: 'num' }, 'Cost'), h('th', { class: 'num' }, 'Stock left')],
        rows.length ? rows : [emptyRow(3, 'No reward in the catalogue.')], { 'data-testid': 'rewards-table' });
    });
  }

  async function fillSection(el, promise, alive, build) {
    const spinner = loading();
    el.append(spinner);
    try {
      const data = await promise;
      if (!alive()) return;
      spinner.remove();
      append(el, [build(data)]);
    } catch (e) {
      if (!alive()) return;
      spinner.remove();
      el.append(errorBox(e));
    }
  }

  function fmtQualifying(prog, v) {
    const on = prog.tierConfig && prog.tierConfig.qualifyOn;
    if (v === null || v === undefined) return '—';
    if ((on === 'spend' || on === undefined) && prog.currency) return fmtMoney(v, prog.currency);
    return fmtInt(v);
  }

  function tiersOf(prog) {
    const tc = prog && prog.tierConfig;
    return tc && Array.isArray(tc.tiers) ? tc.tiers.slice().sort((a, b) => a.rank - b.rank) : [];
  }

  function renderTiers(el, prog, stats) {
    el.querySelector('.loading')?.remove();
    const byTier = stats.membersByTier || {};
    const tiers = tiersOf(prog);
    const names = tiers.map((t) => t.name);
    for (const n of Object.keys(byTier)) if (!names.includes(n)) names.push(n);
    if (!names.length) {
      el.append(h('p', { class: 'muted' }, 'This program has no tiers.'));
      return;
    }
    const counts = names.map((n) => Number(byTier[n]) || 0);
    const total = counts.reduce((a, b) => a + b, 0);
    barChart(el, { categories: names, series: [{ label: 'Members', color: COLORS.bar, values: counts }], testid: 'tier-chart' });
    const rows = names.map((n, i) => {
      const t = tiers.find((x) => x.name === n);
      return h('tr', {},
        h('td', {}, n),
        num(t ? fmtQualifying(prog, t.threshold) : '—'),
        num(t && t.earnMultiplier !== undefined && t.earnMultiplier !== null ? '×' + fmtNum(t.earnMultiplier) : t ? '×1' : '—'),
        h('td', { class: 'num', 'data-testid': 'tier-count-' + n }, String(counts[i])),
        num(pct(counts[i], total)));
    });
    el.append(table(['Tier', h('th', { class: 'num' }, 'Threshold'), h('th', { class: 'num' }, 'Earn'),
      h('th', { class: 'num' }, 'Members'), h('th', { class: 'num' }, 'Share')], rows, { 'data-testid': 'tier-table' }));
  }

  function renderDaily(el, prog, stats) {
    el.querySelector('.loading')?.remove();
    const days = stats.days || [];
    const today = new Date().toISOString().slice(0, 10);
    const first = state.range.from || (days.length ? days[0].date : today);
    let last = state.range.to || today;
    if (days.length && days[days.length - 1].date > last) last = days[days.length - 1].date;
    const xs = dayRange(first < last ? first : last, last, 14);
    const byDay = new Map(days.map((d) => [d.date, d]));
    const col = (k) => xs.map((t) => Number((byDay.get(tsToDay(t)) || {})[k]) || 0);
    if (!days.length) el.append(h('p', { class: 'muted' }, 'No activity in this range.'));
    const grid = h('div', { class: 'charts' });
    el.append(grid);
    timeChart(grid, {
      title: `${pointsName(prog)} earned, redeemed, expired and reversed`,
      testid: 'points-chart',
      bars: true,
      xs,
      series: ['earned', 'redeemed', 'expired', 'reversed'].map((k) => ({
        label: k, color: COLORS[k], values: col(k),
      })),
    });
    timeChart(grid, {
      title: 'Enrolments, net adjustments and transfers',
      testid: 'members-chart',
      bars: true,
      xs,
      height: 200,
      series: [
        { label: 'enrolled', color: COLORS.enrolled, values: col('enrolled') },
        { label: 'adjusted (net)', color: COLORS.adjusted, values: col('adjusted') },
        { label: 'transferred (net)', color: COLORS.transferred, values: col('transferred') },
      ],
    });
  }

  // ---------------------------------------------------------------------------------------
  // Why: a transaction's explanation in words

  function multiplierText(m) {
    return fmtNum(m);
  }

  function isOne(m) {
    return m === undefined || m === null || Number(m) === 1;
  }

  function describeWhy(tx) {
    const w = tx.why;
    const pts = tx.points;
    if (!w || typeof w !== 'object' || !Object.keys(w).length) {
      const bits = [tx.type];
      if (tx.rule) bits.push('rule ' + tx.rule);
      if (tx.metadata && tx.metadata.reason) bits.push(tx.metadata.reason);
      return bits.join(' · ');
    }
    if ('base' in w) {
      const m = w.multipliers || {};
      const parts = ['base ' + fmtNum(w.base)];
      if (!isOne(m.rule)) parts.push('rule ' + multiplierText(m.rule));
      if (!isOne(m.tier)) parts.push('tier ' + (w.tier ? w.tier + ' ' : '') + multiplierText(m.tier));
      for (const [c, v] of Object.entries(m.campaigns || {})) parts.push(c + ' ' + multiplierText(v));
      const result = w.uncapped !== undefined && w.uncapped !== null ? w.uncapped : pts;
      let t = parts.join(' × ') + ' = ' + fmtNum(result) + (w.rounding ? ` (${w.rounding})` : '');
      if (w.cap && typeof w.cap === 'object') {
        const capped = Number(pts) < Number(result) || (tx.metadata && tx.metadata.capped === true);
        const window_ = w.cap.window ? '/' + w.cap.window : '';
        t += `; ${capped ? 'capped' : 'cap'}: headroom ${fmtNum(w.cap.headroom)} of ${fmtNum(w.cap.points)}${window_}`;
        if (capped) t += ` → ${fmtInt(pts)}`;
      }
      if (tx.rule) t = `${tx.rule}: ` + t;
      return t;
    }
    if ('bonus' in w) return `campaign bonus ${w.campaign || ''}: +${fmtNum(w.bonus)}`.replace('  ', ' ');
    if ('refunded' in w || 'payment' in w) {
      const parts = ['reversal of ' + (w.award || 'an award')];
      if (w.payment) parts.push('refund on ' + w.payment);
      if (w.refunded !== undefined && w.amount !== undefined) parts.push(`${fmtNum(w.refunded)} of ${fmtNum(w.amount)} refunded`);
      else if (w.refunded !== undefined) parts.push(`${fmtNum(w.refunded)} refunded`);
      if (w.writtenOff !== undefined && Number(w.writtenOff) > 0) parts.push(`${fmtNum(w.writtenOff)} written off`);
      return parts.join(', ');
    }
    if ('lot' in w) return `expiry of lot ${w.lot}` + (w.expiresAt ? ` (expired ${fmtTime(w.expiresAt)})` : '');
    if ('reward' in w) {
      let t = `redeemed ${fmtNum(w.quantity || 1)} × ${w.reward}`;
      if (w.unitCost !== undefined) t += ` at ${fmtNum(w.unitCost)}`;
      if (w.discount !== undefined && w.discount !== null && Number(w.discount) !== 0) t += ` (discount ${fmtNum(w.discount)}%)`;
      return t;
    }
    if ('reason' in w) return `adjustment: ${w.reason}`;
    if ('counterparty' in w) {
      return (tx.type === 'transfer_in' ? 'transfer from ' : tx.type === 'transfer_out' ? 'transfer to ' : 'transfer with ') + w.counterparty;
    }
    if ('award' in w) {
      let t = `vesting of ${w.award}`;
      if (w.awarded !== undefined) t += `: ${fmtNum(w.awarded)} awarded`;
      if (w.reversed !== undefined && Number(w.reversed) !== 0) t += `, ${fmtNum(w.reversed)} reversed before vesting`;
      return t;
    }
    return JSON.stringify(w);
  }

  function whyCell(tx) {
    return h('td', { class: 'why', 'data-testid': 'why' },
      h('div', { class: 'why-text' }, describeWhy(tx)),
      h('details', { class: 'raw' }, h('summary', {}, 'raw'),
        h('pre', {}, JSON.stringify({ why: tx.why === undefined ? null : tx.why, metadata: tx.metadata, source: tx.source, campaigns: tx.campaigns }, null, 2))));
  }

  function typeBadge(type) {
    const cls = {
      award: 'badge-green', vest: 'badge-green', transfer_in: 'badge-green',
      redemption: 'badge-blue', expiry: 'badge-amber', reversal: 'badge-red',
      transfer_out: 'badge-gray', adjustment: 'badge-cyan',
    }[type] || 'badge-gray';
    return h('span', { class: 'badge ' + cls }, type);
  }

  function txRow(tx, opts) {
    const o = opts || {};
    return h('tr', { 'data-tx': tx.id || '' },
      h('td', { class: 'nowrap' }, timeEl(tx.created)),
      o.account ? h('td', {}, memberLink(tx.account, tx.customer || tx.account)) : null,
      h('td', {}, typeBadge(tx.type),
        tx.status === 'pending' ? [' ', h('span', { class: 'badge badge-amber', 'data-testid': 'tx-pending', title: 'Counts in the pending balance until it vests' }, 'pending')] : null),
      signedCell(tx.points, { 'data-testid': 'tx-points' }),
      num(tx.balanceAfter === undefined || tx.balanceAfter === null ? '—' : fmtInt(tx.balanceAfter)),
      whyCell(tx),
      h('td', { class: 'mono-small' }, tx.id || ''));
  }

  const TX_HEAD = (account) => ['Time', account ? 'Member' : null, 'Type', h('th', { class: 'num' }, 'Points'),
    h('th', { class: 'num' }, 'Balance'), 'Why', 'Transaction'].filter(Boolean);

  // ---------------------------------------------------------------------------------------
  // Member

  async function findAccount(term) {
    const t = term.trim();
    if (!t) throw new Error('Enter a customer id (cus_…) or an account id (loy_…).');
    if (t.startsWith('loy_')) return (await get('/v1/accounts/' + enc(t))).id;
    const prog = currentProgram();
    if (!prog) throw new Error('Select a program first.');
    const list = await get('/v1/accounts' + query({ program: prog.id, customer: t, limit: 1 }));
    if (!list.data || !list.data.length) throw new Error(`No account of customer ${t} in program ${prog.id}.`);
    return list.data[0].id;
  }

  async function renderMember(root, loyId, alive) {
    const input = h('input', {
      type: 'search', placeholder: 'cus_… or loy_…', 'data-testid': 'member-search',
      'aria-label': 'Customer or account id', autocomplete: 'off', spellcheck: 'false', value: '',
    });
    const searchErr = h('div');
    const form = h('form', {
      class: 'search-form',
      onsubmit: async (ev) => {
        ev.preventDefault();
        clear(searchErr);
        const btn = form.querySelector('button');
        btn.disabled = true;
        try {
          const id = await findAccount(input.value);
          if (location.hash === '#/member/' + enc(id)) render();
          else location.hash = '#/member/' + enc(id);
        } catch (e) {
          searchErr.append(errorBox(e, 'search-error'));
        } finally {
          btn.disabled = false;
        }
      },
    }, input, h('button', { type: 'submit', class: 'btn btn-primary', 'data-testid': 'member-search-submit' }, 'Find member'));
    const prog = currentProgram();
    root.append(h('div', { class: 'page-head' },
      h('div', {}, h('h1', {}, 'Member'),
        h('div', { class: 'muted' }, 'A customer id is searched in the selected program' + (prog ? ` (${prog.id})` : '') + '.')),
      form), searchErr);
    if (!loyId) {
      input.focus();
      return;
    }
    const body = h('div', { class: 'member' });
    root.append(body);
    body.append(loading('Loading the account…'));
    let account;
    try {
      account = await get('/v1/accounts/' + enc(loyId));
    } catch (e) {
      if (!alive()) return;
      clear(body);
      body.append(errorBox(e));
      return;
    }
    if (!alive()) return;
    clear(body);
    if (account.program && account.program !== state.programId) selectProgram(account.program);
    try {
      sessionStorage.setItem(CUSTOMER_STORE, account.customer);
    } catch (e) { /* not kept */ }
    input.value = account.customer || account.id;

    const summary = h('section', { class: 'card member-summary', 'data-testid': 'member-summary' });
    const actions = section('Actions', { 'data-testid': 'actions' });
    const lotsEl = section('Lots', { 'data-testid': 'lots-card' });
    const ledgerEl = section('Ledger', { 'data-testid': 'ledger-card' });
    body.append(h('div', { class: 'grid-2' }, summary, actions), lotsEl, ledgerEl);

    const view = { account, summary, lotsEl, ledgerEl, alive };
    drawSummary(view);
    renderActions(actions, view);
    await refreshMember(view, false);
  }

  async function refreshMember(view, rereadAccount) {
    const id = view.account.id;
    const tasks = [loadLots(view), loadLedger(view)];
    if (rereadAccount) {
      tasks.push((async () => {
        try {
          view.account = await get('/v1/accounts/' + enc(id));
          if (view.alive()) drawSummary(view);
        } catch (e) {
          if (view.alive()) view.summary.append(errorBox(e));
        }
      })());
    }
    await Promise.all(tasks);
  }

  function drawSummary(view) {
    const a = view.account;
    const prog = state.programs.find((p) => p.id === a.program) || currentProgram();
    const el = view.summary;
    clear(el);
    el.append(
      h('div', { class: 'member-head' },
        h('div', {},
          h('div', { class: 'member-customer', 'data-testid': 'member-customer' }, a.customer),
          h('div', { class: 'muted mono-small' }, `${a.id} · ${a.program}`)),
        a.atRisk ? h('span', { class: 'badge badge-amber', 'data-testid': 'at-risk-badge' }, 'at risk') : null),
      h('div', { class: 'balance-row' },
        h('span', { class: 'balance', 'data-testid': 'balance' }, String(a.balance)),
        h('span', { class: 'balance-unit' }, pointsName(prog)),
        a.pendingBalance !== undefined && a.pendingBalance !== null
          ? h('span', { class: 'badge badge-amber pending-balance', 'data-testid': 'pending-balance', title: 'Awarded but not vested yet: not spendable' },
            `+${fmtInt(a.pendingBalance)} pending`)
          : null),
      tierProgress(prog, a),
      h('dl', { class: 'facts' },
        h('dt', {}, 'Qualifying'), h('dd', { 'data-testid': 'qualifying' }, fmtQualifying(prog || {}, a.qualifyingValue)),
        h('dt', {}, 'Tier status'), h('dd', {}, a.atRisk ? 'at risk of losing its tier at the next evaluation' : 'holds its tier'),
        a.manualTier ? [h('dt', {}, 'Manual tier'),
          h('dd', { 'data-testid': 'manual-tier' },
            `${a.manualTier.tier}, kept until `, h('time', { datetime: a.manualTier.until }, fmtUtc(a.manualTier.until)),
            a.manualTier.reason ? h('span', { class: 'muted' }, ` · ${a.manualTier.reason}`) : null)] : null,
        h('dt', {}, 'Referral code'), h('dd', { class: 'mono-small' }, a.referralCode || '—'),
        a.stamps && Object.keys(a.stamps).length ? [h('dt', {}, 'Stamps'),
          h('dd', {}, Object.entries(a.stamps).map(([k, v]) => `${k}: ${v}`).join(', '))] : null));
  }

  function tierProgress(prog, a) {
    const tiers = tiersOf(prog);
    const box = h('div', { class: 'tier-box', 'data-testid': 'tier' });
    if (!tiers.length) {
      box.append(h('div', { class: 'muted' }, 'This program has no tiers.'));
      return box;
    }
    const current = a.tier ? tiers.find((t) => t.name === a.tier.name) : null;
    const rank = a.tier ? a.tier.rank : (current ? current.rank : -1);
    const next = tiers.find((t) => t.rank > rank);
    const qv = Number(a.qualifyingValue) || 0;
    box.append(h('div', { class: 'tier-line' },
      h('span', { class: 'badge badge-indigo tier-name', 'data-testid': 'tier-name' }, a.tier ? a.tier.name : 'no tier'),
      // "manual" when the tier held is the one set by hand; above it (promoted by value),
      // the floor it keeps.
      a.manualTier ? h('span', { class: 'badge badge-gray', 'data-testid': 'tier-manual', title: 'Set by an operator; kept until ' + fmtUtc(a.manualTier.until) },
        a.tier && a.tier.name === a.manualTier.tier ? 'manual' : `floor ${a.manualTier.tier}`) : null,
      a.tier && !isOne(a.tier.earnMultiplier) ? h('span', { class: 'muted' }, ` earns ×${fmtNum(a.tier.earnMultiplier)}`) : null));
    if (current && qv < current.threshold) {
      box.append(h('div', { class: 'tier-progress-text warn' },
        `${fmtQualifying(prog, current.threshold - qv)} below ${current.name}'s threshold of ${fmtQualifying(prog, current.threshold)}`));
    }
    if (!next) {
      box.append(h('div', { class: 'tier-progress-text', 'data-testid': 'tier-progress' }, 'Top tier · qualifying ' + fmtQualifying(prog, qv)));
      return box;
    }
    const ratio = next.threshold > 0 ? Math.max(0, Math.min(1, qv / next.threshold)) : 1;
    const bar = h('div', { class: 'progress', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': String(Math.round(ratio * 100)) },
      h('div', { class: 'progress-fill', style: `width:${(ratio * 100).toFixed(1)}%` }));
    const unit = (prog.tierConfig && prog.tierConfig.qualifyOn) || 'spend';
    let text = `${fmtQualifying(prog, qv)} of ${fmtQualifying(prog, next.threshold)} ${unit} to ${next.name} (${(ratio * 100).toFixed(0)}%)`;
    if (qv >= next.threshold) text += ' · reaches it at the next evaluation';
    box.append(bar, h('div', { class: 'tier-progress-text', 'data-testid': 'tier-progress' }, text));
    return box;
  }

  async function loadLots(view) {
    const el = view.lotsEl;
    const content = h('div');
    const old = el.querySelector('.content');
    if (old) old.replaceWith(content);
    else el.append(content);
    content.className = 'content';
    await fill(content, async () => {
      const list = await get(`/v1/accounts/${enc(view.account.id)}/lots` + query({ limit: 100 }));
      const now = Date.now();
      const rows = list.data.map((l) => {
        const exp = l.expiresAt ? new Date(l.expiresAt).getTime() : null;
        const soon = exp !== null && exp - now < 30 * 86400e3;
        return h('tr', {},
          num(fmtInt(l.points)),
          h('td', {}, l.expiresAt ? [timeEl(l.expiresAt), soon ? h('span', { class: 'badge badge-amber' }, 'soon') : null] : h('span', { class: 'muted' }, 'never')),
          h('td', { class: 'nowrap' }, timeEl(l.created)),
          h('td', { class: 'mono-small' }, l.transaction));
      });
      return [
        table([h('th', { class: 'num' }, 'Points left'), 'Expires', 'Credited', 'From transaction'],
          rows.length ? rows : [emptyRow(4, 'No lot: the balance holds no points.')], { 'data-testid': 'lots', stack: true }),
        list.has_more ? h('p', { class: 'muted' }, 'Showing the first 100 lots.') : null,
      ];
    });
  }

  async function loadLedger(view) {
    const el = view.ledgerEl;
    const content = h('div', { class: 'content' });
    const old = el.querySelector('.content');
    if (old) old.replaceWith(content);
    else el.append(content);
    await fill(content, async () => {
      const path = '/v1/points_transactions';
      const list = await get(path + query({ account: view.account.id, limit: 100 }));
      const tbody = h('tbody', {}, list.data.length ? list.data.map((t) => txRow(t)) : emptyRow(6, 'No transaction yet.'));
      const tbl = h('table', { 'data-testid': 'ledger', class: 'ledger stack' },
        h('thead', {}, h('tr', {}, TX_HEAD(false).map((c) => (c instanceof Node ? c : h('th', {}, c))))), tbody);
      const more = h('div', { class: 'more' });
      const addMore = (hasMore, lastId) => {
        clear(more);
        if (!hasMore) return;
        const btn = h('button', {
          type: 'button', class: 'btn btn-small', 'data-testid': 'ledger-more',
          onclick: async () => {
            btn.disabled = true;
            try {
              const next = await get(path + query({ account: view.account.id, limit: 100, starting_after: lastId }));
              append(tbody, next.data.map((t) => txRow(t)));
              labelCells(tbl);
              addMore(next.has_more, next.data.length ? next.data[next.data.length - 1].id : lastId);
            } catch (e) {
              clear(more);
              more.append(errorBox(e));
            }
          },
        }, 'Load older transactions');
        more.append(btn);
      };
      labelCells(tbl);
      addMore(list.has_more, list.data.length ? list.data[list.data.length - 1].id : null);
      return [h('p', { class: 'muted' }, 'Newest first.'), tableWrap(tbl), more];
    });
  }

  function renderActions(el, view) {
    const readOnly = keyIsReadOnly();
    const result = h('div', { class: 'action-result', 'aria-live': 'polite' });
    const showError = (e) => {
      clear(result);
      result.append(errorBox(e, 'action-error'));
    };
    const showOk = (text) => {
      clear(result);
      result.append(h('div', { class: 'alert alert-ok', 'data-testid': 'action-ok' }, text));
    };

    /** Runs a write; re-reads the account, lots and ledger after it (or after a pending answer). */
    const run = async (form, call, describe) => {
      const buttons = form.querySelectorAll('button');
      buttons.forEach((b) => { b.disabled = true; });
      clear(result);
      result.append(loading('Sending…'));
      try {
        const res = await call();
        if (res.status === 202) {
          showOk('Accepted: the engine has not applied it yet. The page re-reads the account shortly.');
          for (let i = 0; i < 10 && view.alive(); i++) {
            await new Promise((r) => setTimeout(r, 700));
            await refreshMember(view, true);
          }
        } else {
          showOk(describe(res.body));
          await refreshMember(view, true);
        }
        form.reset();
      } catch (e) {
        showError(e);
      } finally {
        buttons.forEach((b) => { b.disabled = readOnly; });
      }
    };

    const pts = h('input', { type: 'number', step: '1', inputmode: 'numeric', placeholder: 'e.g. 100 or -50', 'data-testid': 'adjust-points', required: true, disabled: readOnly });
    const reason = h('input', { type: 'text', placeholder: 'Reason (kept in the ledger)', 'data-testid': 'adjust-reason', maxlength: '500', required: true, disabled: readOnly });
    const adjustForm = h('form', {
      class: 'action-form',
      onsubmit: (ev) => {
        ev.preventDefault();
        const n = Number(pts.value);
        if (!Number.isInteger(n) || n === 0) return showError(new Error('Points must be a whole number other than 0.'));
        if (!reason.value.trim()) return showError(new Error('Give a reason for the adjustment.'));
        run(adjustForm, () => api('POST', `/v1/accounts/${enc(view.account.id)}/adjustments`, { points: n, reason: reason.value.trim() }, { idempotent: true }),
          (tx) => `Adjusted ${fmtSigned(tx && tx.points !== undefined ? tx.points : n)}${tx && tx.id ? ` (${tx.id})` : ''}.`);
      },
    }, h('h3', {}, 'Adjust points'),
    h('div', { class: 'form-row' }, h('label', {}, 'Points', pts), h('label', { class: 'grow' }, 'Reason', reason)),
    h('button', { type: 'submit', class: 'btn btn-primary', 'data-testid': 'adjust-submit', disabled: readOnly }, 'Adjust'));

    const rewardSel = h('select', { 'data-testid': 'redeem-reward', disabled: readOnly, 'aria-label': 'Reward' }, h('option', { value: '' }, 'Loading rewards…'));
    const qty = h('input', { type: 'number', min: '1', step: '1', value: '1', inputmode: 'numeric', 'data-testid': 'redeem-quantity', disabled: readOnly });
    const redeemForm = h('form', {
      class: 'action-form',
      onsubmit: (ev) => {
        ev.preventDefault();
        const q = Number(qty.value || 1);
        if (!rewardSel.value) return showError(new Error('Choose a reward.'));
        if (!Number.isInteger(q) || q < 1) return showError(new Error('Quantity must be a whole number of at least 1.'));
        const body = { reward: rewardSel.value };
        if (q !== 1) body.quantity = q;
        run(redeemForm, () => api('POST', `/v1/accounts/${enc(view.account.id)}/redemptions`, body, { idempotent: true }),
          (r) => `Redeemed ${q} × ${rewardSel.value}${r && r.cost !== undefined ? ` for ${fmtInt(r.cost)}` : ''}${r && r.id ? ` (${r.id})` : ''}.`)
          .then(loadRewards);
      },
    }, h('h3', {}, 'Redeem a reward'),
    h('div', { class: 'form-row' }, h('label', { class: 'grow' }, 'Reward', rewardSel), h('label', { class: 'qty' }, 'Quantity', qty)),
    h('button', { type: 'submit', class: 'btn btn-primary', 'data-testid': 'redeem-submit', disabled: readOnly }, 'Redeem'));

    // Set a tier by hand (SPEC 13): only where the program has tiers.
    const tiers = tiersOf(state.programs.find((p) => p.id === view.account.program) || currentProgram());
    let tierForm = null;
    if (tiers.length) {
      const tierSel = h('select', { 'data-testid': 'tier-set-tier', disabled: readOnly, 'aria-label': 'Tier', required: true },
        h('option', { value: '' }, 'Choose a tier'),
        tiers.map((t) => h('option', { value: t.name }, `${t.name} (rank ${t.rank})`)));
      const until = h('input', { type: 'datetime-local', 'data-testid': 'tier-set-until', disabled: readOnly, 'aria-label': 'Kept until (UTC)' });
      const why = h('input', { type: 'text', placeholder: 'Reason (kept on the account)', 'data-testid': 'tier-set-reason', maxlength: '500', required: true, disabled: readOnly });
      tierForm = h('form', {
        class: 'action-form',
        onsubmit: (ev) => {
          ev.preventDefault();
          if (!tierSel.value) return showError(new Error('Choose a tier.'));
          if (until.validity && until.validity.badInput) return showError(new Error('Finish the until date and time, or clear it.'));
          if (!why.value.trim()) return showError(new Error('Give a reason for the tier change.'));
          const body = { tier: tierSel.value, reason: why.value.trim() };
          if (until.value) {
            // A datetime-local value has no zone: it is read as UTC, as the label says.
            const v = until.value.length === 16 ? until.value + ':00' : until.value;
            body.until = v + 'Z';
          }
          run(tierForm, () => api('POST', `/v1/accounts/${enc(view.account.id)}/tier`, body, { idempotent: true }),
            (acc) => `Tier set to ${body.tier}${acc && acc.manualTier ? ` until ${fmtUtc(acc.manualTier.until)}` : ''}.`);
        },
      }, h('h3', {}, 'Set tier'),
      h('div', { class: 'form-row' }, h('label', {}, 'Tier', tierSel), h('label', {}, 'Until (UTC, optional)', until),
        h('label', { class: 'grow' }, 'Reason', why)),
      h('p', { class: 'muted' }, 'Without an until, the tier is kept for one tier period. Promotion by value still happens.'),
      h('button', { type: 'submit', class: 'btn btn-primary', 'data-testid': 'tier-set-submit', disabled: readOnly }, 'Set tier'));
    }

    const loadRewards = async () => {
      try {
        const list = await get(`/v1/programs/${enc(view.account.program)}/rewards` + query({ limit: 100 }));
        const keep = rewardSel.value;
        clear(rewardSel);
        if (!list.data.length) rewardSel.append(h('option', { value: '' }, 'No reward in the catalogue'));
        for (const r of list.data) {
          const stock = r.stockLeft === null || r.stockLeft === undefined ? '' : ` · ${fmtInt(r.stockLeft)} left`;
          rewardSel.append(h('option', { value: r.id }, `${r.name || r.id} — ${fmtInt(r.cost)}${stock}`));
        }
        if (keep) rewardSel.value = keep;
      } catch (e) {
        clear(rewardSel);
        rewardSel.append(h('option', { value: '' }, 'Rewards unavailable'));
        showError(e);
      }
    };
    loadRewards();

    append(el, [
      readOnly ? h('div', { class: 'alert alert-info' }, 'This is a read-only key (rk_…): actions need an sk_ key.') : null,
      adjustForm, redeemForm, tierForm, result]);
  }

  // ---------------------------------------------------------------------------------------
  // Simulate

  const REASONS = {
    trigger: 'another trigger',
    not_enrolled: 'customer not enrolled',
    'condition.minAmount': 'amount below minAmount',
    'condition.maxAmount': 'amount above maxAmount',
    'condition.currencies': 'currency not in the rule\'s currencies',
    'condition.validFrom': 'before validFrom',
    'condition.validUntil': 'at or after validUntil',
    'condition.minRank': 'tier rank below minRank',
    'condition.maxRank': 'tier rank above maxRank',
    'condition.metadata': 'metadata does not match',
    maxUses: 'maxUses reached',
    currency_not_listed: 'currency not listed in the rates',
    zero: 'award is zero',
    cap: 'cap reached',
  };

  function exampleEnvelope() {
    const prog = currentProgram();
    let customer = 'cus_example';
    try {
      customer = sessionStorage.getItem(CUSTOMER_STORE) || customer;
    } catch (e) { /* default */ }
    const tag = Math.random().toString(36).slice(2, 8);
    return {
      id: 'sim_' + tag,
      type: 'payment.completed',
      created: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'),
      data: { id: 'pay_sim_' + tag, customer, amount: 10000, currency: (prog && prog.currency) || 'EUR' },
    };
  }

  function renderSimulate(root) {
    const prog = currentProgram();
    const ta = h('textarea', { class: 'code', rows: '12', spellcheck: 'false', 'data-testid': 'simulate-input', 'aria-label': 'Input envelope (JSON)' });
    ta.value = JSON.stringify(exampleEnvelope(), null, 2);
    const out = h('div', { class: 'results', 'data-testid': 'simulate-result' });
    const submit = h('button', { type: 'submit', class: 'btn btn-primary', 'data-testid': 'simulate-submit' }, 'Simulate');
    const form = h('form', {
      class: 'card',
      onsubmit: async (ev) => {
        ev.preventDefault();
        clear(out);
        let body;
        try {
          body = JSON.parse(ta.value);
        } catch (e) {
          out.append(errorBox(new Error('The envelope is not valid JSON: ' + e.message), 'simulate-error'));
          return;
        }
        submit.disabled = true;
        out.append(loading('Simulating…'));
        try {
          const res = await api('POST', '/v1/simulate', body);
          clear(out);
          drawSimulation(out, res.body);
        } catch (e) {
          clear(out);
          out.append(errorBox(e, 'simulate-error'));
        } finally {
          submit.disabled = false;
        }
      },
    },
    h('p', { class: 'muted' }, 'Runs one input envelope through the engine as it stands now, without writing anything: the transactions and events it would produce, what it would reject, and why each rule fired or not.'),
    h('label', { class: 'field-label' }, 'Input envelope'), ta,
    h('div', { class: 'form-actions' }, submit,
      h('button', { type: 'button', class: 'btn btn-ghost', onclick: () => { ta.value = JSON.stringify(exampleEnvelope(), null, 2); } }, 'Reset example')));
    root.append(h('div', { class: 'page-head' }, h('div', {}, h('h1', {}, 'Simulate'),
      h('div', { class: 'muted' }, prog ? `Example for ${prog.id} (${prog.currency})` : ''))), form, out);
  }

  function drawSimulation(out, sim) {
    const txs = sim.transactions || [];
    const events = sim.events || [];
    const rejected = sim.rejected || [];
    const rules = sim.rules || [];
    const awarded = rules.filter((r) => r.outcome === 'awarded').length;
    out.append(h('div', { class: 'stats-grid' },
      stat('Transactions', fmtInt(txs.length)),
      stat('Points', fmtSigned(txs.reduce((a, t) => a + (Number(t.points) || 0), 0))),
      stat('Rules awarded', `${awarded} of ${rules.length}`),
      stat('Events', fmtInt(events.length)),
      stat('Rejected', fmtInt(rejected.length))));
    out.append(section('Rules', {},
      table(['Program', 'Rule', 'Outcome', 'Reason'], rules.length ? rules.map((r) => h('tr', { 'data-rule': r.rule },
        h('td', { class: 'mono-small' }, r.program),
        h('td', {}, r.rule),
        h('td', {}, h('span', { class: 'badge ' + (r.outcome === 'awarded' ? 'badge-green' : 'badge-gray') }, r.outcome)),
        h('td', {}, r.reason ? [REASONS[r.reason] || r.reason, h('span', { class: 'muted mono-small' }, ` (${r.reason})`)] : '—')))
        : [emptyRow(4, 'No rule.')], { 'data-testid': 'rules' })));
    out.append(section('Would-be transactions', {},
      table(['Time', 'Member', 'Type', h('th', { class: 'num' }, 'Points'), h('th', { class: 'num' }, 'Balance'), 'Why', 'Transaction'],
        txs.length ? txs.map((t) => txRow(t, { account: true })) : [emptyRow(7, 'No transaction.')], { 'data-testid': 'sim-transactions', stack: true })));
    out.append(section('Events', {},
      table(['Type', 'Time', 'Data'], events.length ? events.map((e) => h('tr', {},
        h('td', {}, e.type),
        h('td', { class: 'nowrap' }, timeEl(e.created)),
        h('td', {}, h('details', { class: 'raw' }, h('summary', {}, eventSummary(e)), h('pre', {}, JSON.stringify(e, null, 2))))))
        : [emptyRow(3, 'No event.')], { 'data-testid': 'sim-events' })));
    out.append(section('Rejected', {},
      table(['Source', 'Reason', 'Detail'], rejected.length ? rejected.map((r) => h('tr', {},
        h('td', { class: 'mono-small' }, r.source || '—'),
        h('td', {}, h('span', { class: 'badge badge-red' }, r.reason)),
        h('td', {}, r.detail || '')))
        : [emptyRow(3, 'Nothing rejected.')], { 'data-testid': 'sim-rejected' })));
  }

  function eventSummary(e) {
    const d = e.data || {};
    const bits = [];
    if (d.customer) bits.push(d.customer);
    if (d.points !== undefined) bits.push(fmtSigned(d.points));
    if (d.tier) bits.push(typeof d.tier === 'string' ? d.tier : d.tier.name);
    return bits.length ? bits.join(' · ') : 'data';
  }

  // ---------------------------------------------------------------------------------------
  // Backtest

  function candidatePrefill() {
    const programs = state.programs.map((p) => {
      const c = Object.assign({}, p);
      delete c.object;
      return c;
    });
    return JSON.stringify({ programs }, null, 2);
  }

  function renderBacktest(root) {
    const ta = h('textarea', { class: 'code', rows: '18', spellcheck: 'false', 'data-testid': 'backtest-input', 'aria-label': 'Candidate config (JSON)' });
    ta.value = candidatePrefill();
    const from = h('input', { type: 'date', 'data-testid': 'backtest-from', 'aria-label': 'From (UTC date)' });
    const out = h('div', { class: 'results', 'data-testid': 'backtest-result' });
    const submit = h('button', { type: 'submit', class: 'btn btn-primary', 'data-testid': 'backtest-submit' }, 'Run backtest');
    const form = h('form', {
      class: 'card',
      onsubmit: async (ev) => {
        ev.preventDefault();
        cleanupScreen();
        clear(out);
        let config;
        try {
          config = JSON.parse(ta.value);
        } catch (e) {
          out.append(errorBox(new Error('The candidate config is not valid JSON: ' + e.message), 'backtest-error'));
          return;
        }
        const body = { config };
        if (from.value) body.from = from.value + 'T00:00:00Z';
        submit.disabled = true;
        out.append(loading('Replaying the log under both configs…'));
        try {
          const res = await api('POST', '/v1/backtest', body);
          clear(out);
          drawBacktest(out, res.body);
        } catch (e) {
          clear(out);
          out.append(errorBox(e, 'backtest-error'));
        } finally {
          submit.disabled = false;
        }
      },
    },
    h('p', { class: 'muted' }, 'Replays the recorded input under the current programs (baseline) and under a candidate config, and compares what each would have awarded. Nothing is written.'),
    h('label', { class: 'field-label' }, 'Candidate config: {"programs": [...]}'), ta,
    h('div', { class: 'form-actions' },
      h('label', { class: 'inline' }, 'From (UTC date, optional) ', from), submit,
      h('button', { type: 'button', class: 'btn btn-ghost', onclick: () => { ta.value = candidatePrefill(); } }, 'Reset to current')));
    root.append(h('div', { class: 'page-head' }, h('div', {}, h('h1', {}, 'Backtest'))), form, out);
  }

  function diffRow(label, d, attrs) {
    return h('tr', attrs || {}, h('td', {}, label), num(fmtInt(d.baseline)), num(fmtInt(d.candidate)), signedCell(d.difference, { 'data-testid': 'difference' }));
  }

  const DIFF_HEAD = (first) => [first, h('th', { class: 'num' }, 'Baseline'), h('th', { class: 'num' }, 'Candidate'), h('th', { class: 'num' }, 'Difference')];

  function drawBacktest(out, bt) {
    const programs = bt.programs || [];
    const charts = h('div', { class: 'backtest', 'data-testid': 'backtest-charts' });
    out.append(charts);
    if (!programs.length) {
      charts.append(section(null, {}, h('p', { class: 'muted' }, 'No program in the answer.')));
      return;
    }
    for (const p of programs) {
      const sec = h('section', { class: 'card', 'data-program': p.program });
      charts.append(sec);
      sec.append(h('h2', { class: 'card-title' }, 'Program ' + p.program));
      const po = p.pointsOutstanding || {};
      const rd = p.redemptions || {};
      sec.append(h('div', { class: 'stats-grid' },
        stat('Outstanding, baseline', fmtInt(po.baseline)),
        stat('Outstanding, candidate', fmtInt(po.candidate)),
        stat('Outstanding, difference', fmtSigned(po.difference || 0), { class: 'stat-value ' + (po.difference > 0 ? 'pos' : po.difference < 0 ? 'neg' : '') }),
        stat('Redemptions, difference', fmtSigned(rd.difference || 0), {}, `${fmtInt(rd.baseline)} → ${fmtInt(rd.candidate)}`)));

      const rules = p.rules || [];
      const rulesBox = h('div', { class: 'subsection' }, h('h3', {}, 'Points awarded per rule'));
      sec.append(rulesBox);
      if (rules.length) {
        barChart(rulesBox, {
          categories: rules.map((r) => r.rule),
          series: [
            { label: 'baseline', color: COLORS.baseline, values: rules.map((r) => r.baseline) },
            { label: 'candidate', color: COLORS.candidate, values: rules.map((r) => r.candidate) },
          ],
          testid: 'backtest-rules-chart',
        });
      }
      rulesBox.append(table(DIFF_HEAD('Rule'), rules.length ? rules.map((r) => diffRow(r.rule, r, { 'data-rule': r.rule })) : [emptyRow(4, 'No rule.')],
        { 'data-testid': 'backtest-rules' }));

      const days = p.days || [];
      const daysBox = h('div', { class: 'subsection' }, h('h3', {}, 'Points awarded per day'));
      sec.append(daysBox);
      if (days.length) {
        const xs = dayRange(days[0].date, days[days.length - 1].date, 7);
        const byDay = new Map(days.map((d) => [d.date, d]));
        const col = (k) => xs.map((t) => Number((byDay.get(tsToDay(t)) || {})[k]) || 0);
        timeChart(daysBox, {
          testid: 'backtest-days-chart',
          xs,
          series: [
            { label: 'baseline', color: COLORS.baseline, values: col('baseline') },
            { label: 'candidate', color: COLORS.candidate, values: col('candidate') },
          ],
        });
      } else {
        daysBox.append(h('p', { class: 'muted' }, 'No award in the replayed range.'));
      }

      const grid = h('div', { class: 'grid-2' });
      sec.append(grid);
      const tiers = Object.entries(p.membersByTier || {});
      grid.append(h('div', { class: 'subsection' }, h('h3', {}, 'Members per tier'),
        table(DIFF_HEAD('Tier'), tiers.length ? tiers.map(([n, d]) => diffRow(n, d)) : [emptyRow(4, 'No tiers.')], { 'data-testid': 'backtest-tiers' })));
      grid.append(h('div', { class: 'subsection' }, h('h3', {}, 'Totals'),
        table(DIFF_HEAD(''), [diffRow('Points outstanding', po), diffRow('Redemptions', rd)], { 'data-testid': 'backtest-totals' })));

      const top = p.topChanges || [];
      sec.append(h('div', { class: 'subsection' }, h('h3', {}, 'Largest changes per member'),
        table(['Member', 'Account', h('th', { class: 'num' }, 'Baseline'), h('th', { class: 'num' }, 'Candidate'), h('th', { class: 'num' }, 'Difference')],
          top.length ? top.map((c) => h('tr', {},
            h('td', {}, c.customer || '—'),
            h('td', { class: 'mono-small' }, memberLink(c.account)),
            num(fmtInt(c.baseline)), num(fmtInt(c.candidate)), signedCell(c.difference)))
            : [emptyRow(5, 'No member changes.')], { 'data-testid': 'backtest-top', stack: true })));
    }
  }

  // ---------------------------------------------------------------------------------------
  // Start, the key form, the shell

  function showKeyScreen(message) {
    cleanupScreen();
    $('app').hidden = true;
    $('key-screen').hidden = false;
    const err = $('key-error');
    clear(err);
    if (message) {
      err.append(message);
      err.hidden = false;
    } else {
      err.hidden = true;
    }
    const input = $('key-input');
    input.value = '';
    input.focus();
  }

  function showApp() {
    $('key-screen').hidden = true;
    $('app').hidden = false;
    const ro = keyIsReadOnly();
    const mode = $('key-mode');
    clear(mode);
    mode.append(h('span', { class: 'dot ' + (ro ? 'dot-amber' : 'dot-green') }), ro ? 'Read-only key' : 'Read-write key');
  }

  async function boot() {
    let list;
    try {
      list = await get('/v1/programs' + query({ limit: 100 }));
    } catch (e) {
      if (e.status === 401) return; // the key form is shown with the message
      showApp();
      showGlobalError(e);
      return;
    }
    state.programs = list.data || [];
    const sel = $('program-select');
    clear(sel);
    for (const p of state.programs) sel.append(h('option', { value: p.id }, p.name ? `${p.name} (${p.id})` : p.id));
    let saved = null;
    try {
      saved = sessionStorage.getItem(PROGRAM_STORE);
    } catch (e) { /* none */ }
    if (!selectProgram(saved) && state.programs.length) selectProgram(state.programs[0].id);
    showApp();
    render();
  }

  function closeMenu() {
    document.body.classList.remove('menu-open');
    $('menu-toggle').setAttribute('aria-expanded', 'false');
  }

  function init() {
    $('key-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const key = $('key-input').value.trim();
      if (!key) {
        showKeyScreen('Enter an API key.');
        return;
      }
      $('key-input').value = '';
      setKey(key);
      boot();
    });
    $('forget-key').addEventListener('click', () => {
      forgetKey();
      state.programs = [];
      showKeyScreen(null);
    });
    $('program-select').addEventListener('change', (ev) => {
      selectProgram(ev.target.value);
      const r = parseRoute();
      if (r.screen === 'overview') location.hash = '#/overview/' + enc(state.programId);
      else if (r.screen === 'member') location.hash = '#/member';
      else render();
    });
    $('menu-toggle').addEventListener('click', () => {
      const open = !document.body.classList.contains('menu-open');
      document.body.classList.toggle('menu-open', open);
      $('menu-toggle').setAttribute('aria-expanded', String(open));
    });
    for (const a of document.querySelectorAll('[data-nav]')) {
      a.addEventListener('click', (ev) => {
        // Keep the selected program in the overview's address.
        if (a.dataset.nav === 'overview' && state.programId) {
          ev.preventDefault();
          location.hash = '#/overview/' + enc(state.programId);
        }
        closeMenu();
      });
    }
    window.addEventListener('hashchange', () => {
      if (getKey() && !$('app').hidden) render();
    });
    if (getKey()) boot();
    else showKeyScreen(null);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
}());
