// fdr web UI: builds every `section.timeline` of a page (console or report)
// and adds a few small behaviours to the server-rendered pages.
//
// Plain ES2020, no framework, no build step, no external resources. Safe
// under a strict CSP: no eval, no inline handlers, no <style> text. Every
// text that comes from the data is set with `textContent` or as an
// attribute value, never parsed as HTML (file names and argv are
// attacker-controlled).
'use strict';

(() => {
  const PAGE = 100;
  const BINS = 120;
  const DEBOUNCE_MS = 250;
  const SVG_NS = 'http://www.w3.org/2000/svg';
  // Plot geometry of the histogram, in px (the x axis is in % of the width).
  const H_TOP = 6;
  const H_BOTTOM = 96;
  const H_TICKS = 114;

  // The EventKind number order (fdr_proto::names), used to sort kinds the
  // way the server does. Unknown kinds sort after these, by name.
  const KIND_ORDER = [
    'unspecified', 'fork', 'exec', 'exit',
    'write', 'rename', 'unlink', 'chmod', 'chown', 'link', 'truncate',
    'sensitive-read', 'listen', 'bind', 'connect', 'accept',
    'priv-change', 'account', 'binary', 'container-start', 'container-stop',
    'model-learned', 'audit',
  ];
  const KIND_ALIAS = {
    'file-write': 'write', 'file-rename': 'rename', 'file-unlink': 'unlink',
    'file-chmod': 'chmod', 'file-chown': 'chown', 'file-link': 'link',
    'file-truncate': 'truncate', priv: 'priv-change',
  };

  function kindRank(kind) {
    const i = KIND_ORDER.indexOf(KIND_ALIAS[kind] || kind);
    return i < 0 ? KIND_ORDER.length : i;
  }

  function compareKinds(a, b) {
    const d = kindRank(a) - kindRank(b);
    if (d !== 0) return d;
    return a < b ? -1 : a > b ? 1 : 0;
  }

  // A CSS class for a kind's colour; only [a-z0-9-] survive (kind names
  // come from the data).
  function kindClass(kind) {
    return 'k-' + String(kind).toLowerCase().replace(/[^a-z0-9-]/g, '_');
  }

  // ---------------------------------------------------------------- helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      node.append(typeof c === 'string' ? document.createTextNode(c) : c);
    }
    return node;
  }

  function svgEl(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    return node;
  }

  function setAttrs(node, attrs) {
    if (!attrs) return;
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') node.setAttribute('class', v);
      else if (k === 'text') node.textContent = v;
      else node.setAttribute(k, v === true ? '' : String(v));
    }
  }

  // 1234567 -> "1 234 567" (plain spaces, as in the contract's examples).
  function fmtInt(n) {
    const s = String(Math.trunc(Math.abs(Number(n) || 0)));
    const g = s.replace(/\B(?=(\d{3})+(?!\d))/g, ' ');
    return (Number(n) < 0 ? '-' : '') + g;
  }

  function pad(n, w) {
    return String(n).padStart(w, '0');
  }

  // Microseconds since the epoch -> RFC 3339 UTC. Milliseconds are shown;
  // microseconds too when the value is not on a millisecond (so that what
  // the range inputs show parses back to the exact same value).
  function fmtTime(us) {
    const ms = Math.floor(us / 1000);
    const micro = us - ms * 1000;
    const d = new Date(ms);
    if (Number.isNaN(d.getTime())) return '';
    const base =
      pad(d.getUTCFullYear(), 4) + '-' + pad(d.getUTCMonth() + 1, 2) + '-' +
      pad(d.getUTCDate(), 2) + 'T' + pad(d.getUTCHours(), 2) + ':' +
      pad(d.getUTCMinutes(), 2) + ':' + pad(d.getUTCSeconds(), 2) + '.' +
      pad(d.getUTCMilliseconds(), 3);
    return base + (micro ? pad(micro, 3) : '') + 'Z';
  }

  // A short clock time for axis labels and bar titles; `stepUs` decides
  // the precision.
  function fmtClock(us, stepUs) {
    const d = new Date(Math.floor(us / 1000));
    if (Number.isNaN(d.getTime())) return '';
    let s = pad(d.getUTCHours(), 2) + ':' + pad(d.getUTCMinutes(), 2);
    if (stepUs < 60e6) s += ':' + pad(d.getUTCSeconds(), 2);
    if (stepUs < 1e6) s += '.' + pad(d.getUTCMilliseconds(), 3);
    if (stepUs >= 86400e6) {
      s = pad(d.getUTCMonth() + 1, 2) + '-' + pad(d.getUTCDate(), 2) + ' ' + s;
    }
    return s;
  }

  const TIME_RE =
    /^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?\s*([Zz]|[+-]\d{2}(?::?\d{2})?)?$/;

  // RFC 3339 text -> microseconds since the epoch, or null when empty, or
  // NaN when not a time. Without a zone the time is UTC; without seconds or
  // a fraction they are 0.
  function parseTime(text) {
    const s = text.trim();
    if (s === '') return null;
    const m = TIME_RE.exec(s);
    if (!m) return NaN;
    const [y, mo, d, h, mi, se] = m.slice(1, 7).map((x) => Number(x || 0));
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60) return NaN;
    let ms = Date.UTC(y, mo - 1, d, h, mi, se);
    const probe = new Date(ms);
    if (probe.getUTCDate() !== d) return NaN; // 2026-02-31
    const zone = m[8];
    if (zone && zone !== 'Z' && zone !== 'z') {
      const sign = zone[0] === '-' ? -1 : 1;
      const digits = zone.slice(1).replace(':', '');
      const zh = Number(digits.slice(0, 2));
      const zm = Number(digits.slice(2, 4) || 0);
      if (zh > 23 || zm > 59) return NaN;
      ms -= sign * (zh * 60 + zm) * 60000;
    }
    const frac = (m[7] || '').padEnd(6, '0').slice(0, 6);
    return ms * 1000 + Number(frac);
  }

  // ---------------------------------------------------------------- sources

  // Turns the view's parameters into the query string of the contract.
  function queryString(p) {
    const qs = new URLSearchParams();
    qs.set('offset', String(p.offset || 0));
    qs.set('limit', String(p.limit || PAGE));
    if (p.kinds !== null && p.kinds !== undefined) qs.set('kinds', p.kinds.join(','));
    if (p.q) qs.set('q', p.q);
    if (p.from_us !== null && p.from_us !== undefined) qs.set('from_us', String(p.from_us));
    if (p.to_us !== null && p.to_us !== undefined) qs.set('to_us', String(p.to_us));
    if (p.marked) qs.set('marked', '1');
    qs.set('bins', String(p.bins || BINS));
    return qs.toString();
  }

  class ServerSource {
    constructor(base) {
      this.base = base.replace(/\/+$/, '');
    }

    async get(url) {
      let resp;
      try {
        resp = await fetch(url, {
          credentials: 'same-origin',
          headers: { Accept: 'application/json' },
        });
      } catch (e) {
        throw new Error('The server could not be reached: ' + (e && e.message ? e.message : e));
      }
      if (!resp.ok) {
        let text = '';
        try {
          text = (await resp.text()).trim();
        } catch (_) {
          /* keep the status */
        }
        throw new Error(text || 'The server answered ' + resp.status + ' ' + resp.statusText);
      }
      return resp.json();
    }

    query(p) {
      return this.get(this.base + '/query?' + queryString(p));
    }

    detail(i) {
      return this.get(this.base + '/event/' + encodeURIComponent(String(i)));
    }
  }

  function base64Bytes(text) {
    const clean = text.replace(/\s+/g, '');
    if (typeof Uint8Array.fromBase64 === 'function') return Uint8Array.fromBase64(clean);
    const bin = atob(clean);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  // The inline data is one JSON object whose `details` (one per row, most
  // of the bytes) are needed only when a row is opened. When the text has
  // the top-level key `"details"` after the others (as the report writer
  // emits it), the rest is parsed first and drawn, and the details later.
  // `,"details":` cannot occur inside a JSON string (its quote would be
  // escaped) and no other object of the contract has that key.
  const DETAILS_KEY = ',"details":';
  const META_KEYS = ['rows', 'total', 'window', 'gaps', 'completeness', 'lost'];

  // Parses the text before DETAILS_KEY as the object without its details;
  // null when that is not the whole rest of the object.
  function parseHead(headText) {
    let head = null;
    try {
      head = JSON.parse(headText + '}');
    } catch (_) {
      return null;
    }
    if (head && typeof head === 'object' && META_KEYS.every((k) => k in head)) return head;
    return null;
  }

  // -> {data, tail}: `tail()` starts reading the rest of the data (if any)
  // and resolves to a function that parses and returns the details.
  async function decodeInline(script) {
    const encoding = (script.getAttribute('data-encoding') || 'json').toLowerCase();
    const text = script.textContent || '';
    if (encoding === 'json') {
      const at = text.indexOf(DETAILS_KEY);
      const head = at > 0 ? parseHead(text.slice(0, at)) : null;
      if (head) {
        return { data: head, tail: () => Promise.resolve(() => JSON.parse('{' + text.slice(at + 1)).details) };
      }
      const data = JSON.parse(text);
      return { data, tail: () => Promise.resolve(() => data.details) };
    }
    if (encoding !== 'gzip-base64') throw new Error('Unknown data encoding: ' + encoding);
    if (typeof DecompressionStream !== 'function') {
      throw new Error('This browser cannot decompress the report data (no DecompressionStream).');
    }
    const bytes = base64Bytes(text);
    const reader = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip')).getReader();
    const decoder = new TextDecoder();
    const pieces = [];
    let searching = true;
    let carry = ''; // the last characters of the text before the current piece
    for (;;) {
      const { done, value } = await reader.read();
      const piece = done ? decoder.decode() : decoder.decode(value, { stream: true });
      if (piece && searching) {
        const whole = carry + piece;
        const at = whole.indexOf(DETAILS_KEY);
        if (at >= 0) {
          searching = false;
          // The key may straddle two pieces: cut the whole text there.
          const before = pieces.join('');
          const head = parseHead(before.slice(0, before.length - carry.length) + whole.slice(0, at));
          if (head) {
            // The stream waits (back-pressure) until the rest is asked for.
            let rest = null;
            const first = whole.slice(at + 1);
            return { data: head, tail: () => rest || (rest = readRest(reader, decoder, first)) };
          }
        } else {
          carry = whole.slice(-DETAILS_KEY.length);
        }
      }
      if (piece) pieces.push(piece);
      if (done) break;
    }
    const data = JSON.parse(pieces.join(''));
    return { data, tail: () => Promise.resolve(() => data.details) };
  }

  // Reads the rest of the stream (`"details":…`), without parsing it yet.
  async function readRest(reader, decoder, first) {
    const pieces = ['{', first];
    for (;;) {
      const { done, value } = await reader.read();
      if (done) {
        pieces.push(decoder.decode());
        break;
      }
      pieces.push(decoder.decode(value, { stream: true }));
    }
    return () => JSON.parse(pieces.join('')).details;
  }

  // Rows up to which a report parses its details before they are asked for.
  const PRELOAD_DETAILS_MAX = 20000;

  // The report's data, queried in the browser with the server's semantics.
  class LocalSource {
    constructor(script) {
      this.script = script;
      this.ready = null;
      this.tail = null;
      this.details = null;
    }

    load() {
      if (!this.ready) {
        this.ready = decodeInline(this.script).then(({ data, tail }) => {
          this.index(data);
          this.tail = tail;
          // A small report reads and parses its details once the first page
          // is drawn and the page is idle, so that the first click on a row
          // is quick; a large one only when a row is opened (parsing tens of
          // MB would keep the page busy for seconds).
          if (this.rows.length > PRELOAD_DETAILS_MAX) return;
          const idle = (fn) => {
            if (typeof requestIdleCallback === 'function') requestIdleCallback(fn, { timeout: 5000 });
            else setTimeout(fn, 500);
          };
          idle(() => {
            tail().then((parse) => {
              idle(() => {
                try {
                  this.parseDetails(parse);
                } catch (_) {
                  /* reported when a row is opened */
                }
              });
            }, () => {});
          });
        });
      }
      return this.ready;
    }

    parseDetails(parse) {
      if (this.details === null) {
        const list = parse();
        this.details = Array.isArray(list) ? list : [];
      }
      return this.details;
    }

    index(data) {
      const rows = Array.isArray(data.rows) ? data.rows : [];
      this.data = data;
      this.rows = rows;
      const kinds = new Map();
      let wFrom = Infinity;
      let wTo = -Infinity;
      for (const r of rows) {
        kinds.set(r.kind, (kinds.get(r.kind) || 0) + 1);
        if (r.t_us < wFrom) wFrom = r.t_us;
        if (r.t_us > wTo) wTo = r.t_us;
        if (typeof r.hay !== 'string') {
          r.hay = [r.time, r.kind, r.user, r.pid, r.what, r.addr, r.msg]
            .map((x) => (x === null || x === undefined ? '' : String(x)))
            .join(' ')
            .toLowerCase();
        }
      }
      this.kindNames = [...kinds.keys()].sort(compareKinds);
      this.kindIndex = new Map(this.kindNames.map((k, i) => [k, i]));
      this.kindCount = this.kindNames.map((k) => kinds.get(k));
      this.rowKind = new Int32Array(rows.length);
      rows.forEach((r, i) => {
        this.rowKind[i] = this.kindIndex.get(r.kind);
      });
      const w = data.window || {};
      this.window = {
        from_us: typeof w.from_us === 'number' ? w.from_us : rows.length ? wFrom : 0,
        to_us: typeof w.to_us === 'number' ? w.to_us : rows.length ? wTo : 0,
      };
    }

    async query(p) {
      await this.load();
      const rows = this.rows;
      const nk = this.kindNames.length;
      const enabled = new Uint8Array(nk);
      if (p.kinds === null || p.kinds === undefined) enabled.fill(1);
      else {
        for (const k of p.kinds) {
          const i = this.kindIndex.get(k);
          if (i !== undefined) enabled[i] = 1;
        }
      }
      const q = (p.q || '').toLowerCase();
      const hasFrom = p.from_us !== null && p.from_us !== undefined;
      const hasTo = p.to_us !== null && p.to_us !== undefined;
      const from = hasFrom ? p.from_us : -Infinity;
      const to = hasTo ? p.to_us : Infinity;
      const marked = !!p.marked;
      const offset = Math.max(0, p.offset || 0);
      const limit = Math.min(1000, Math.max(1, p.limit || PAGE));
      const bins = Math.min(1000, Math.max(1, p.bins || BINS));
      const hFrom = hasFrom ? p.from_us : this.window.from_us;
      const hTo = hasTo ? p.to_us : this.window.to_us;
      const span = Math.max(1, hTo - hFrom + 1);
      const kindMatched = new Array(nk).fill(0);
      const counts = [];
      for (let k = 0; k < nk; k++) counts.push(new Array(bins).fill(0));
      const page = [];
      let matched = 0;
      for (let i = 0; i < rows.length; i++) {
        const r = rows[i];
        const t = r.t_us;
        if (t < from || t > to) continue;
        if (marked && !r.mark) continue;
        if (q && r.hay.indexOf(q) < 0) continue;
        const k = this.rowKind[i];
        kindMatched[k]++;
        if (!enabled[k]) continue;
        if (matched >= offset && page.length < limit) page.push(r);
        matched++;
        if (t >= hFrom && t <= hTo) {
          const b = Math.min(bins - 1, Math.floor(((t - hFrom) * bins) / span));
          counts[k][b]++;
        }
      }
      const series = [];
      for (let k = 0; k < nk; k++) {
        if (counts[k].some((c) => c > 0)) series.push({ kind: this.kindNames[k], counts: counts[k] });
      }
      const d = this.data;
      return {
        total: typeof d.total === 'number' ? d.total : rows.length,
        matched,
        offset,
        rows: page.map((r) => {
          const o = Object.assign({}, r);
          delete o.hay;
          return o;
        }),
        kinds: this.kindNames.map((kind, k) => ({
          kind,
          count: this.kindCount[k],
          matched: kindMatched[k],
        })),
        window: this.window,
        histogram: { from_us: hFrom, to_us: hTo, bins, series },
        gaps: Array.isArray(d.gaps) ? d.gaps : [],
        completeness: typeof d.completeness === 'number' ? d.completeness : null,
        lost: typeof d.lost === 'number' ? d.lost : 0,
      };
    }

    async detail(i) {
      await this.load();
      const d = this.parseDetails(await this.tail())[i];
      if (!d) throw new Error('No detail for event ' + i + '.');
      return d;
    }
  }

  // ---------------------------------------------------------------- the view

  // The time cell: the date part in its own span, hidden on narrow screens
  // (the cell's text stays the whole RFC 3339 time).
  function timeCell(text) {
    const td = el('td', { class: 'c-time', title: text });
    const t = text.indexOf('T');
    if (t > 0) td.append(el('span', { class: 'tl-date', text: text.slice(0, t + 1) }), text.slice(t + 1));
    else td.textContent = text;
    return td;
  }

  let serial = 0;

  // Nice steps for the time axis, in µs.
  const TICK_STEPS = [
    1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5,
    1e6, 2e6, 5e6, 10e6, 15e6, 30e6,
    60e6, 120e6, 300e6, 600e6, 900e6, 1800e6,
    3600e6, 7200e6, 10800e6, 21600e6, 43200e6,
    86400e6, 172800e6, 604800e6,
  ];

  class Timeline {
    constructor(section, source) {
      this.section = section;
      this.source = source;
      this.id = 'tl' + ++serial;
      this.hasMarks = section.hasAttribute('data-marks');
      this.state = {
        offset: 0,
        q: '',
        from_us: null,
        to_us: null,
        marked: false,
        disabled: new Set(), // kinds switched off; unknown kinds are on
      };
      this.kindNames = [];
      this.kindLabels = new Map();
      this.seq = 0; // last query sent
      this.detailSeq = 0;
      this.rendered = 0;
      this.last = null; // last drawn response
      this.selected = null;
      this.searchTimer = 0;
      this.build();
      this.loadHash();
      this.refresh();
    }

    // The first timeline of a page keeps its filters in the URL's fragment
    // (`#hide=fork,exit&q=curl&from=…&to=…&marked=1&offset=100`), so that a
    // filtered view can be linked from a ticket and survives a reload.
    get ownsHash() {
      return this.id === 'tl1';
    }

    loadHash() {
      if (!this.ownsHash || !location.hash) return;
      let p;
      try {
        p = new URLSearchParams(location.hash.slice(1));
      } catch (_) {
        return;
      }
      const st = this.state;
      const hide = p.get('hide');
      if (hide) st.disabled = new Set(hide.split(',').filter((k) => k));
      const q = p.get('q');
      if (q !== null) {
        st.q = q;
        this.search.value = q;
      }
      const us = (k) => {
        const v = p.get(k);
        return v !== null && /^-?[0-9]+$/.test(v) ? Number(v) : null;
      };
      st.from_us = us('from');
      st.to_us = us('to');
      this.fromInput.value = st.from_us === null ? '' : fmtTime(st.from_us);
      this.toInput.value = st.to_us === null ? '' : fmtTime(st.to_us);
      if (this.hasMarks && p.get('marked') === '1') {
        st.marked = true;
        this.markedBox.checked = true;
      }
      const off = us('offset');
      if (off !== null && off >= 0 && off % PAGE === 0) st.offset = off;
    }

    saveHash() {
      if (!this.ownsHash || typeof history === 'undefined' || !history.replaceState) return;
      const st = this.state;
      const p = new URLSearchParams();
      if (st.disabled.size > 0) p.set('hide', [...st.disabled].sort().join(','));
      if (st.q) p.set('q', st.q);
      if (st.from_us !== null) p.set('from', String(st.from_us));
      if (st.to_us !== null) p.set('to', String(st.to_us));
      if (st.marked) p.set('marked', '1');
      if (st.offset > 0) p.set('offset', String(st.offset));
      const text = p.toString();
      const want = text ? '#' + text : '';
      if (location.hash === want || (!want && !location.hash)) return;
      try {
        history.replaceState(null, '', want || location.pathname + location.search);
      } catch (_) {
        /* a page that may not change its URL */
      }
    }

    setState(s) {
      this.section.setAttribute('data-state', s);
      this.section.setAttribute('aria-busy', s === 'loading' ? 'true' : 'false');
    }

    build() {
      const s = this.section;
      const id = this.id;
      s.textContent = '';
      s.classList.add('tl-built');
      this.setState('loading');
      s.setAttribute('data-rendered', '0');

      this.completeness = el('div', { class: 'tl-completeness' });
      this.completenessText = el('p', { class: 'tl-completeness-text', text: 'Loading…' });
      this.gapsList = el('ul', { class: 'tl-gaps' });
      this.completeness.append(this.completenessText, this.gapsList);

      this.error = el('div', { class: 'tl-error', role: 'alert', hidden: true });

      // Kinds.
      this.allBtn = el('button', { type: 'button', class: 'tl-all', text: 'All' });
      this.noneBtn = el('button', { type: 'button', class: 'tl-none', text: 'None' });
      this.kindBox = el('span', { class: 'tl-kind-list' });
      this.kinds = el('fieldset', { class: 'tl-kinds' },
        el('legend', { text: 'Kinds' }), this.allBtn, this.noneBtn, this.kindBox);
      this.allBtn.addEventListener('click', () => this.setAllKinds(true));
      this.noneBtn.addEventListener('click', () => this.setAllKinds(false));
      this.kindBox.addEventListener('change', (e) => {
        const input = e.target;
        const label = input.closest && input.closest('label.tl-kind');
        if (!label) return;
        const kind = label.getAttribute('data-kind');
        if (input.checked) this.state.disabled.delete(kind);
        else this.state.disabled.add(kind);
        this.requery();
      });

      // Search, marked.
      this.search = el('input', {
        type: 'search', class: 'tl-search', id: id + '-q', autocomplete: 'off',
        spellcheck: 'false', placeholder: 'command, path, user, address…',
      });
      this.search.addEventListener('input', () => {
        clearTimeout(this.searchTimer);
        this.searchTimer = setTimeout(() => this.applySearch(), DEBOUNCE_MS);
      });
      this.search.addEventListener('keydown', (e) => {
        if (e.key === 'Enter') {
          e.preventDefault();
          this.applySearch();
        }
      });
      this.search.addEventListener('search', () => this.applySearch());
      const searchBox = el('div', { class: 'tl-searchbox' },
        el('label', { for: id + '-q', text: 'Search' }), this.search);
      const filters = el('div', { class: 'tl-filters' }, searchBox);
      if (this.hasMarks) {
        this.markedBox = el('input', { type: 'checkbox', class: 'tl-marked', id: id + '-m' });
        this.markedBox.addEventListener('change', () => {
          this.state.marked = this.markedBox.checked;
          this.requery();
        });
        filters.append(el('label', { class: 'tl-marked-label', for: id + '-m' },
          this.markedBox, " Only the incident's events"));
      }

      // Range.
      this.fromInput = el('input', {
        type: 'text', class: 'tl-from', id: id + '-from', inputmode: 'text',
        autocomplete: 'off', spellcheck: 'false', placeholder: 'start of the data',
      });
      this.toInput = el('input', {
        type: 'text', class: 'tl-to', id: id + '-to', inputmode: 'text',
        autocomplete: 'off', spellcheck: 'false', placeholder: 'end of the data',
      });
      this.applyBtn = el('button', { type: 'button', class: 'tl-apply', text: 'Apply' });
      this.resetBtn = el('button', { type: 'button', class: 'tl-reset', text: 'Reset' });
      this.rangeMsg = el('span', { class: 'tl-range-msg', role: 'status' });
      this.rangeHint = el('span', { class: 'tl-hint', id: id + '-fmt', text: 'UTC, e.g. 2026-12-03T18:04:15.123Z' });
      this.fromInput.setAttribute('aria-describedby', id + '-fmt');
      this.toInput.setAttribute('aria-describedby', id + '-fmt');
      this.range = el('div', { class: 'tl-range', role: 'group', 'aria-label': 'Time range (UTC)' },
        el('label', { for: id + '-from', text: 'From' }), this.fromInput,
        el('label', { for: id + '-to', text: 'To' }), this.toInput,
        this.applyBtn, this.resetBtn, this.rangeHint, this.rangeMsg);
      this.applyBtn.addEventListener('click', () => this.applyRange());
      this.resetBtn.addEventListener('click', () => this.setRange(null, null));
      for (const input of [this.fromInput, this.toInput]) {
        input.addEventListener('keydown', (e) => {
          if (e.key === 'Enter') {
            e.preventDefault();
            this.applyRange();
          }
        });
      }

      // Histogram.
      this.svg = svgEl('svg', {
        class: 'tl-histogram', role: 'img', width: '100%', height: '120',
        'aria-label': 'Histogram of matching events over time',
      });
      this.svg.append(svgEl('title', {}));
      this.svg.addEventListener('pointerdown', (e) => this.brushStart(e));
      if (typeof ResizeObserver === 'function') {
        new ResizeObserver((entries) => {
          const w = entries[entries.length - 1].contentRect.width;
          if (!w) return;
          this.svgWidth = w;
          if (this.last && this.drawnTicks !== this.tickCount()) this.drawHistogram(this.last);
        }).observe(this.svg);
      }
      this.histoBox = el('div', { class: 'tl-histo' }, this.svg,
        el('p', { class: 'tl-hint', text: 'Drag across the histogram to select a time range.' }));

      // Status + paging.
      this.status = el('p', { class: 'tl-status', role: 'status', text: 'Loading…' });
      this.prevBtn = el('button', { type: 'button', class: 'tl-prev', disabled: true, text: '‹ Previous' });
      this.nextBtn = el('button', { type: 'button', class: 'tl-next', disabled: true, text: 'Next ›' });
      this.prevBtn.addEventListener('click', () => this.page(-1));
      this.nextBtn.addEventListener('click', () => this.page(1));
      const bar = el('div', { class: 'tl-bar-row' }, this.status,
        el('span', { class: 'tl-pager' }, this.prevBtn, this.nextBtn));

      // Grid.
      const head = el('tr', {});
      const cols = [
        ['Time (UTC)', 'c-time'], ['Kind', 'c-kind'], ['User', 'c-user'], ['PID', 'c-pid'],
        ['Command or path', 'c-what'], ['Port or address', 'c-addr'], ['Message', 'c-msg'],
      ];
      for (const [name, cls] of cols) head.append(el('th', { scope: 'col', class: cls, text: name }));
      this.tbody = el('tbody', {});
      this.grid = el('table', { class: 'tl-grid' },
        el('caption', { class: 'tl-sr', text: 'Events' }), el('thead', {}, head), this.tbody);
      this.tbody.addEventListener('click', (e) => {
        const tr = e.target.closest && e.target.closest('tr.tl-row');
        if (tr) this.select(tr);
      });
      this.tbody.addEventListener('keydown', (e) => this.gridKey(e));
      const scroller = el('div', { class: 'tl-scroll' }, this.grid);

      // Detail.
      this.detail = el('aside', { class: 'tl-detail', 'aria-live': 'polite', 'aria-label': 'Event details' });
      this.detailEmpty();

      const body = el('div', { class: 'tl-body' },
        el('div', { class: 'tl-main' }, bar, scroller), this.detail);

      s.append(this.completeness, this.error,
        el('div', { class: 'tl-controls' }, this.kinds, filters, this.range),
        this.histoBox, body);
    }

    // ------------------------------------------------------------ queries

    params() {
      const st = this.state;
      let kinds = null;
      if (st.disabled.size > 0) {
        kinds = this.kindNames.filter((k) => !st.disabled.has(k));
      }
      return {
        offset: st.offset, limit: PAGE, kinds, q: st.q, from_us: st.from_us,
        to_us: st.to_us, marked: st.marked, bins: BINS,
      };
    }

    requery() {
      this.state.offset = 0;
      this.refresh();
    }

    async refresh() {
      const seq = ++this.seq;
      this.setState('loading');
      let resp;
      try {
        resp = await this.source.query(this.params());
      } catch (e) {
        if (seq !== this.seq) return;
        this.showError(e);
        return;
      }
      if (seq !== this.seq) return; // a newer query is on its way
      try {
        this.draw(resp);
      } catch (e) {
        this.showError(e);
        return;
      }
      this.error.hidden = true;
      this.error.textContent = '';
      this.saveHash();
      this.setState('ready');
      this.rendered++;
      this.section.setAttribute('data-rendered', String(this.rendered));
    }

    showError(e) {
      this.error.textContent = e && e.message ? e.message : String(e);
      this.error.hidden = false;
      this.setState('error');
      if (!this.last) {
        this.completenessText.textContent = '';
        this.status.textContent = 'No data';
      }
    }

    applySearch() {
      clearTimeout(this.searchTimer);
      const q = this.search.value;
      if (q === this.state.q) return;
      this.state.q = q;
      this.requery();
    }

    setAllKinds(on) {
      if (on) this.state.disabled.clear();
      else this.state.disabled = new Set(this.kindNames);
      for (const [kind, label] of this.kindLabels) {
        label.input.checked = !this.state.disabled.has(kind);
      }
      this.requery();
    }

    applyRange() {
      const from = parseTime(this.fromInput.value);
      const to = parseTime(this.toInput.value);
      let bad = null;
      if (Number.isNaN(from)) bad = this.fromInput;
      else if (Number.isNaN(to)) bad = this.toInput;
      this.fromInput.removeAttribute('aria-invalid');
      this.toInput.removeAttribute('aria-invalid');
      if (bad) {
        bad.setAttribute('aria-invalid', 'true');
        this.rangeMsg.textContent = 'Use RFC 3339 UTC, e.g. 2026-12-03T18:04:15.123Z';
        bad.focus();
        return;
      }
      if (from !== null && to !== null && from > to) {
        this.toInput.setAttribute('aria-invalid', 'true');
        this.rangeMsg.textContent = '“To” is before “From”.';
        return;
      }
      this.setRange(from, to);
    }

    setRange(from, to) {
      this.state.from_us = from;
      this.state.to_us = to;
      this.fromInput.value = from === null ? '' : fmtTime(from);
      this.toInput.value = to === null ? '' : fmtTime(to);
      this.fromInput.removeAttribute('aria-invalid');
      this.toInput.removeAttribute('aria-invalid');
      this.rangeMsg.textContent = '';
      this.requery();
    }

    page(dir) {
      const next = this.state.offset + dir * PAGE;
      if (next < 0 || (this.last && next >= this.last.matched)) return;
      this.state.offset = next;
      this.refresh();
    }

    // ------------------------------------------------------------ drawing

    draw(r) {
      this.last = r;
      this.drawCompleteness(r);
      this.drawKinds(r.kinds || []);
      this.drawHistogram(r);
      this.drawStatus(r);
      this.drawRows(r.rows || []);
    }

    drawCompleteness(r) {
      const lost = Number(r.lost) || 0;
      const c = r.completeness;
      let text;
      if (typeof c === 'number') {
        if (c >= 1 && lost === 0) text = 'Complete: no events lost';
        else text = 'Completeness ' + (c * 100).toFixed(2) + ' % — ' + fmtInt(lost) + ' events lost';
      } else {
        text = lost > 0 ? 'Completeness unknown — ' + fmtInt(lost) + ' events lost' : 'Completeness unknown';
      }
      this.completenessText.textContent = text;
      this.completeness.classList.toggle('tl-lossy', lost > 0 || (typeof c === 'number' && c < 1));
      const gaps = Array.isArray(r.gaps) ? r.gaps : [];
      this.gapsList.textContent = '';
      this.gapsList.hidden = gaps.length === 0;
      for (const g of gaps) {
        const text =
          fmtTime(g.from_us) + ' – ' + fmtTime(g.to_us) + ': ' + fmtInt(g.lost) + ' lost' +
          (g.cause ? ' (' + g.cause + ')' : '') + ', kind ' + (g.kind ? g.kind : 'any') +
          (g.host_wide ? ', host-wide' : '');
        const btn = el('button', { type: 'button', class: 'tl-gap-go', text: 'Show' });
        btn.setAttribute('aria-label', 'Set the time range to this gap');
        btn.addEventListener('click', () => this.setRange(g.from_us, g.to_us));
        this.gapsList.append(el('li', {}, el('span', { class: 'tl-gap-text', text }), ' ', btn));
      }
    }

    drawKinds(kinds) {
      const names = kinds.map((k) => k.kind);
      const same = names.length === this.kindNames.length && names.every((k, i) => k === this.kindNames[i]);
      if (!same) {
        const focused = document.activeElement;
        const focusedKind = focused && focused.closest && focused.closest('label.tl-kind')
          ? focused.closest('label.tl-kind').getAttribute('data-kind') : null;
        this.kindNames = names;
        this.kindLabels.clear();
        this.kindBox.textContent = '';
        for (const k of kinds) {
          const input = el('input', { type: 'checkbox' });
          input.checked = !this.state.disabled.has(k.kind);
          const count = el('span', { class: 'count' });
          const label = el('label', { class: 'tl-kind ' + kindClass(k.kind), 'data-kind': k.kind },
            input, el('span', { class: 'tl-swatch', 'aria-hidden': 'true' }), ' ' + k.kind + ' ', count);
          this.kindLabels.set(k.kind, { label, input, count });
          this.kindBox.append(label);
          if (focusedKind === k.kind) input.focus();
        }
      }
      for (const k of kinds) {
        const l = this.kindLabels.get(k.kind);
        l.count.textContent = fmtInt(k.matched);
        l.label.title = fmtInt(k.matched) + ' matching of ' + fmtInt(k.count) + ' ' + k.kind + ' events';
        l.label.classList.toggle('tl-zero', !k.matched);
        l.input.checked = !this.state.disabled.has(k.kind);
      }
    }

    drawHistogram(r) {
      const svg = this.svg;
      const h = r.histogram || {};
      const bins = Math.max(1, Number(h.bins) || 1);
      const from = Number(h.from_us) || 0;
      const to = Number(h.to_us) || 0;
      const span = Math.max(1, to - from + 1);
      this.histo = { from, to, span, bins };
      svg.textContent = '';
      const series = Array.isArray(h.series) ? h.series : [];
      const totals = new Array(bins).fill(0);
      let sum = 0;
      for (const s of series) {
        for (let b = 0; b < bins; b++) {
          const c = Number(s.counts[b]) || 0;
          totals[b] += c;
          sum += c;
        }
      }
      const max = Math.max(1, ...totals);
      const binUs = span / bins;
      const perKind = series
        .map((s) => s.kind + ' ' + fmtInt(s.counts.reduce((a, c) => a + (Number(c) || 0), 0)))
        .join(', ');
      svg.setAttribute('aria-label',
        'Histogram: ' + fmtInt(sum) + ' matching events from ' + fmtTime(from) + ' to ' + fmtTime(to) +
        ' in ' + bins + ' bins, at most ' + fmtInt(max === 1 && sum === 0 ? 0 : max) + ' per bin' +
        (perKind ? '; ' + perKind : ''));
      const title = svgEl('title', {});
      title.textContent = svg.getAttribute('aria-label');
      svg.append(title);

      svg.append(svgEl('rect', {
        class: 'tl-plot', x: '0', y: H_TOP, width: '100%', height: H_BOTTOM - H_TOP,
      }));

      // Stacked bars.
      const plotH = H_BOTTOM - H_TOP;
      const base = new Array(bins).fill(0);
      const bw = 100 / bins;
      const gapW = bins > 200 ? 0 : Math.min(bw * 0.15, 0.2);
      const frag = document.createDocumentFragment();
      const barW = Math.max(0.05, bw - gapW).toFixed(4) + '%';
      for (const s of series) {
        const proto = svgEl('rect', { class: 'tl-bar ' + kindClass(s.kind), 'data-kind': s.kind, width: barW });
        for (let b = 0; b < bins; b++) {
          const c = Number(s.counts[b]) || 0;
          if (c <= 0) continue;
          const y0 = (base[b] / max) * plotH;
          base[b] += c;
          const y1 = (base[b] / max) * plotH;
          const hpx = Math.max(1, y1 - y0);
          const rect = proto.cloneNode(false);
          rect.setAttribute('data-bin', b);
          rect.setAttribute('data-count', c);
          rect.setAttribute('x', (b * bw).toFixed(4) + '%');
          rect.setAttribute('y', (H_BOTTOM - y0 - hpx).toFixed(2));
          rect.setAttribute('height', hpx.toFixed(2));
          const t = document.createElementNS(SVG_NS, 'title');
          const b0 = from + b * binUs;
          t.textContent = s.kind + ': ' + fmtInt(c) + (c === 1 ? ' event, ' : ' events, ') +
            fmtClock(b0, binUs) + '–' + fmtClock(b0 + binUs, binUs);
          rect.append(t);
          frag.append(rect);
        }
      }
      svg.append(frag);

      // Gaps, over the bars.
      const gaps = Array.isArray(r.gaps) ? r.gaps : [];
      for (const g of gaps) {
        if (g.to_us < from || g.from_us > to) continue;
        const a = Math.max(from, g.from_us);
        const b = Math.min(to, g.to_us);
        const x = ((a - from) / span) * 100;
        const w = Math.max(0.35, ((b - a + 1) / span) * 100);
        const rect = svgEl('rect', {
          class: 'tl-gap', x: Math.min(x, 100 - w).toFixed(3) + '%', y: 0,
          width: w.toFixed(3) + '%', height: H_BOTTOM, 'data-lost': g.lost,
        });
        const t = svgEl('title', {});
        t.textContent = 'Gap: ' + fmtInt(g.lost) + ' events lost' + (g.cause ? ' (' + g.cause + ')' : '') +
          ', kind ' + (g.kind || 'any') + ', ' + fmtTime(g.from_us) + ' – ' + fmtTime(g.to_us);
        rect.append(t);
        svg.append(rect);
      }

      // Axis and ticks.
      svg.append(svgEl('line', { class: 'tl-axis', x1: '0', x2: '100%', y1: H_BOTTOM, y2: H_BOTTOM }));
      const want = this.tickCount();
      this.drawnTicks = want;
      let step = TICK_STEPS[TICK_STEPS.length - 1];
      for (const st of TICK_STEPS) {
        if (span / st <= want) {
          step = st;
          break;
        }
      }
      while (span / step > want * 2) step *= 2;
      const first = Math.ceil(from / step) * step;
      for (let t = first; t <= to; t += step) {
        const pct = ((t - from) / span) * 100;
        svg.append(svgEl('line', {
          class: 'tl-tickline', x1: pct.toFixed(3) + '%', x2: pct.toFixed(3) + '%',
          y1: H_BOTTOM, y2: H_BOTTOM + 4,
        }));
        const anchor = pct < 4 ? 'start' : pct > 96 ? 'end' : 'middle';
        const text = svgEl('text', {
          class: 'tl-tick', x: pct.toFixed(3) + '%', y: H_TICKS, 'text-anchor': anchor,
        });
        text.textContent = fmtClock(t, step);
        svg.append(text);
      }
      if (sum === 0) {
        const text = svgEl('text', { class: 'tl-empty', x: '50%', y: (H_TOP + H_BOTTOM) / 2, 'text-anchor': 'middle' });
        text.textContent = 'No matching events in this range';
        svg.append(text);
      }
      this.brushRect = null;
    }

    // How many axis labels fit: from the histogram's width as last seen by
    // the ResizeObserver (no forced layout while drawing).
    tickCount() {
      const width = this.svgWidth || Math.min(window.innerWidth, 1600) - 80;
      return Math.max(2, Math.min(10, Math.floor(width / 80)));
    }

    drawStatus(r) {
      const matched = Number(r.matched) || 0;
      const offset = Number(r.offset) || 0;
      const n = (r.rows || []).length;
      if (matched === 0 || n === 0) {
        this.status.textContent = 'No matching events';
      } else {
        this.status.textContent = 'Rows ' + fmtInt(offset + 1) + '–' + fmtInt(offset + n) + ' of ' +
          fmtInt(matched) + ' matching (' + fmtInt(r.total) + ' events)';
      }
      this.prevBtn.disabled = offset <= 0;
      this.nextBtn.disabled = offset + n >= matched;
    }

    drawRows(rows) {
      const frag = document.createDocumentFragment();
      for (const r of rows) {
        const tr = el('tr', {
          class: 'tl-row ' + kindClass(r.kind) + (r.mark ? ' marked' : ''),
          'data-i': r.i, 'data-kind': r.kind, tabindex: '0',
        });
        tr.append(
          timeCell(r.time || fmtTime(r.t_us)),
          el('td', { class: 'c-kind' }, el('span', { class: 'tl-swatch', 'aria-hidden': 'true' }), String(r.kind)),
          el('td', { class: 'c-user', text: r.user === undefined ? '' : String(r.user) }),
          el('td', { class: 'c-pid', text: r.pid === undefined || r.pid === null ? '' : String(r.pid) }),
          el('td', { class: 'c-what', title: r.what || null, text: r.what || '' }),
          el('td', { class: 'c-addr', text: r.addr || '' }),
          el('td', { class: 'c-msg', title: r.msg || null, text: r.msg || '' }),
        );
        if (this.selected !== null && String(r.i) === String(this.selected)) {
          tr.classList.add('selected');
          tr.setAttribute('aria-selected', 'true');
        }
        frag.append(tr);
      }
      this.tbody.textContent = '';
      this.tbody.append(frag);
    }

    // ------------------------------------------------------------ rows

    gridKey(e) {
      const tr = e.target.closest && e.target.closest('tr.tl-row');
      if (!tr) return;
      if (e.key === 'Enter' || e.key === ' ' || e.key === 'Spacebar') {
        e.preventDefault();
        this.select(tr);
      } else if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
        e.preventDefault();
        const next = e.key === 'ArrowDown' ? tr.nextElementSibling : tr.previousElementSibling;
        if (next) next.focus();
      } else if (e.key === 'Home' || e.key === 'End') {
        e.preventDefault();
        const rows = this.tbody.rows;
        if (rows.length) rows[e.key === 'Home' ? 0 : rows.length - 1].focus();
      }
    }

    select(tr) {
      for (const old of this.tbody.querySelectorAll('tr.selected')) {
        old.classList.remove('selected');
        old.removeAttribute('aria-selected');
      }
      tr.classList.add('selected');
      tr.setAttribute('aria-selected', 'true');
      const i = tr.getAttribute('data-i');
      this.selected = i;
      this.loadDetail(Number(i));
    }

    detailEmpty() {
      this.detail.textContent = '';
      this.detail.append(el('h2', { class: 'tl-detail-title', text: 'Event details' }),
        el('p', { class: 'tl-hint', text: 'Select a row to see the event and its process ancestry.' }));
    }

    async loadDetail(i) {
      const seq = ++this.detailSeq;
      this.detail.setAttribute('aria-busy', 'true');
      let d;
      try {
        d = await this.source.detail(i);
      } catch (e) {
        if (seq !== this.detailSeq) return;
        this.detail.removeAttribute('aria-busy');
        this.detail.textContent = '';
        this.detail.append(el('h2', { class: 'tl-detail-title', text: 'Event details' }),
          el('p', { class: 'tl-hint', text: 'This event could not be loaded (see the message above).' }));
        this.showError(e);
        return;
      }
      if (seq !== this.detailSeq) return;
      this.detail.removeAttribute('aria-busy');
      this.drawDetail(d);
    }

    drawDetail(d) {
      const box = this.detail;
      box.textContent = '';
      box.setAttribute('data-i', String(d.i));
      box.append(el('h2', { class: 'tl-detail-title', text: 'Event ' + d.i }));
      const dl = el('dl', { class: 'tl-fields' });
      for (const f of Array.isArray(d.fields) ? d.fields : []) {
        const name = String(f[0]);
        dl.append(el('dt', { text: name }), el('dd', { 'data-field': name, text: String(f[1]) }));
      }
      box.append(dl);
      const anc = Array.isArray(d.ancestry) ? d.ancestry : [];
      box.append(el('h3', { text: 'Ancestry' }));
      if (anc.length === 0) {
        box.append(el('p', { class: 'tl-hint', text: 'No ancestry recorded.' }));
      } else {
        const ol = el('ol', { class: 'tl-ancestry' });
        for (const a of anc) {
          let text = 'pid ' + a.pid + ' uid ' + a.uid;
          if (a.user) text += ' (' + a.user + ')';
          if (a.exe) text += ' ' + a.exe;
          if (a.cmd) text += ' — ' + a.cmd;
          ol.append(el('li', { text }));
        }
        box.append(ol);
      }
    }

    // ------------------------------------------------------------ brushing

    fracAt(clientX) {
      const rect = this.svg.getBoundingClientRect();
      if (rect.width <= 0) return 0;
      return Math.min(1, Math.max(0, (clientX - rect.left) / rect.width));
    }

    brushStart(e) {
      if (e.button !== 0 || !this.histo) return;
      e.preventDefault();
      const startX = e.clientX;
      const f0 = this.fracAt(startX);
      let f1 = f0;
      let active = false;
      const svg = this.svg;
      try {
        svg.setPointerCapture(e.pointerId);
      } catch (_) {
        /* not essential */
      }
      const move = (ev) => {
        f1 = this.fracAt(ev.clientX);
        if (!active && Math.abs(ev.clientX - startX) < 3) return;
        active = true;
        if (!this.brushRect) {
          this.brushRect = svgEl('rect', { class: 'tl-brush', y: 0, height: H_BOTTOM });
          svg.append(this.brushRect);
        }
        const a = Math.min(f0, f1);
        const b = Math.max(f0, f1);
        this.brushRect.setAttribute('x', (a * 100).toFixed(3) + '%');
        this.brushRect.setAttribute('width', ((b - a) * 100).toFixed(3) + '%');
      };
      const up = (ev) => {
        svg.removeEventListener('pointermove', move);
        svg.removeEventListener('pointerup', up);
        svg.removeEventListener('pointercancel', cancel);
        f1 = this.fracAt(ev.clientX);
        if (this.brushRect) {
          this.brushRect.remove();
          this.brushRect = null;
        }
        if (!active && Math.abs(ev.clientX - startX) < 3) return; // a plain click
        const { from, span } = this.histo;
        const a = Math.min(f0, f1);
        const b = Math.max(f0, f1);
        // Whole milliseconds, so that the range inputs show the exact bounds.
        const t0 = Math.floor((from + a * span) / 1000) * 1000;
        const t1 = Math.ceil((from + b * span) / 1000) * 1000;
        this.setRange(t0, Math.max(t0, t1));
      };
      const cancel = () => {
        svg.removeEventListener('pointermove', move);
        svg.removeEventListener('pointerup', up);
        svg.removeEventListener('pointercancel', cancel);
        if (this.brushRect) {
          this.brushRect.remove();
          this.brushRect = null;
        }
      };
      svg.addEventListener('pointermove', move);
      svg.addEventListener('pointerup', up);
      svg.addEventListener('pointercancel', cancel);
    }
  }

  // ---------------------------------------------------------------- startup

  function start() {
    for (const section of document.querySelectorAll('section.timeline')) {
      if (section.classList.contains('tl-built')) continue;
      const base = section.getAttribute('data-source');
      const inline = section.getAttribute('data-inline');
      let source = null;
      if (base) source = new ServerSource(base);
      else if (inline) {
        const script = document.getElementById(inline);
        if (script) source = new LocalSource(script);
      }
      if (!source) {
        section.textContent = '';
        section.setAttribute('data-state', 'error');
        section.append(el('div', { class: 'tl-error', role: 'alert', text: 'This timeline has no data source.' }));
        continue;
      }
      new Timeline(section, source); // eslint-disable-line no-new
    }
  }

  // Forms that change state may ask first.
  document.addEventListener('submit', (e) => {
    const form = e.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute('data-confirm')) return;
    const text = form.getAttribute('data-confirm') || 'Are you sure?';
    if (!window.confirm(text)) {
      e.preventDefault();
      e.stopImmediatePropagation();
    }
  });

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
