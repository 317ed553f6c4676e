// Shared helpers of every page: strings (i18n), the API, live streams,
// formatting, sound and screen-reader announcements. No framework, no build.
(function () {
  'use strict';

  const I18N = window.SOSVAULT_I18N || {};
  const SV = {};
  window.SV = SV;

  // ---------------------------------------------------------------- strings
  const LANGS = ['en', 'hi'];
  SV.lang = LANGS.includes(localStorage.getItem('sosvault.lang'))
    ? localStorage.getItem('sosvault.lang')
    : 'en';

  /** The string `key` in the current language (English as fallback), `{name}` filled from `vars`. */
  SV.t = function (key, vars) {
    const table = I18N[SV.lang] || {};
    // One of a count: the language's own singular, if it has one
    // (`key.one`); a language without one says it as the plural.
    if (vars && vars.count === 1 && table[key + '.one'] !== undefined) key += '.one';
    let s = table[key];
    if (s === undefined) s = (I18N.en || {})[key];
    if (s === undefined) s = key;
    if (vars) s = s.replace(/\{(\w+)\}/g, (_, k) => (vars[k] === undefined ? '' : String(vars[k])));
    return s;
  };

  /** Fills `[data-i18n]` text and `[data-i18n-attr="attr:key;attr:key"]` attributes under `root`. */
  SV.applyI18n = function (root) {
    root = root || document;
    document.documentElement.lang = SV.lang;
    root.querySelectorAll('[data-i18n]').forEach((el) => {
      el.textContent = SV.t(el.dataset.i18n);
    });
    root.querySelectorAll('[data-i18n-attr]').forEach((el) => {
      el.dataset.i18nAttr.split(';').forEach((pair) => {
        const [attr, key] = pair.split(':');
        if (attr && key) el.setAttribute(attr.trim(), SV.t(key.trim()));
      });
    });
    document.querySelectorAll('[data-lang-switch]').forEach((b) => {
      b.setAttribute('aria-pressed', String(b.dataset.langSwitch === SV.lang));
    });
    if (document.body && document.body.dataset.titleKey) {
      document.title = SV.t(document.body.dataset.titleKey) + ' · sosvault';
    }
  };

  /** Switches the language, re-labels the page and tells the page (`sv-lang` event). */
  SV.setLang = function (lang) {
    if (!LANGS.includes(lang)) return;
    SV.lang = lang;
    localStorage.setItem('sosvault.lang', lang);
    SV.applyI18n();
    document.dispatchEvent(new CustomEvent('sv-lang'));
  };

  document.addEventListener('click', (e) => {
    const b = e.target.closest('[data-lang-switch]');
    if (b) SV.setLang(b.dataset.langSwitch);
  });

  // ---------------------------------------------------------------- DOM
  /** `el('div', {class: 'x', onclick: f}, child, 'text')`: builds elements without innerHTML. */
  SV.el = function (tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
      else if (k === 'class') e.className = v;
      else if (k === 'dataset') Object.assign(e.dataset, v);
      else if (v === true) e.setAttribute(k, '');
      else e.setAttribute(k, String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  };

  SV.$ = (sel, root) => (root || document).querySelector(sel);

  // ---------------------------------------------------------------- API
  /** An answer with an error status. */
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message || code);
      this.status = status;
      this.code = code;
    }
  }
  SV.ApiError = ApiError;

  /** `fetch` of a JSON API on this origin; throws `ApiError` on 4xx/5xx. */
  SV.api = async function (path, opts) {
    opts = opts || {};
    const headers = { Accept: 'application/json' };
    if (opts.token) headers.Authorization = 'Bearer ' + opts.token;
    let body;
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(opts.body);
    }
    let resp;
    try {
      resp = await fetch(path, { method: opts.method || (body ? 'POST' : 'GET'), headers, body, cache: 'no-store' });
    } catch (e) {
      throw new ApiError(0, 'transport', String(e));
    }
    let data = null;
    if (resp.status !== 204) {
      try {
        data = await resp.json();
      } catch (_) {
        data = null;
      }
    }
    if (!resp.ok) {
      throw new ApiError(resp.status, (data && data.error) || 'http_' + resp.status, data && data.message);
    }
    return data;
  };

  /**
   * A live SSE stream read with `fetch` (EventSource cannot send a bearer token).
   * Calls `handlers.event(ev)` with each event's JSON, `handlers.state('live'|'reconnecting')`,
   * `handlers.open()` after every (re)connection (the page re-syncs then) and
   * `handlers.unauthorized()` on 401, `handlers.forbidden()` on 403 (both end the
   * stream). Reconnects with back-off. Returns `{close()}`.
   */
  SV.stream = function (path, token, handlers) {
    let stopped = false;
    let ctrl = null;
    let delay = 500;
    async function once() {
      ctrl = new AbortController();
      const resp = await fetch(path, {
        headers: { Authorization: 'Bearer ' + token, Accept: 'text/event-stream' },
        signal: ctrl.signal,
        cache: 'no-store',
      });
      if (resp.status === 401) {
        stopped = true;
        if (handlers.unauthorized) handlers.unauthorized();
        return;
      }
      if (resp.status === 403) {
        // The role may not watch (an auditor): asking again will not change that.
        stopped = true;
        if (handlers.forbidden) handlers.forbidden();
        return;
      }
      if (!resp.ok || !resp.body) throw new Error('stream ' + resp.status);
      delay = 500;
      if (handlers.state) handlers.state('live');
      if (handlers.open) handlers.open();
      const reader = resp.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      let data = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).replace(/\r$/, '');
          buf = buf.slice(nl + 1);
          if (line === '') {
            if (data) {
              let ev = null;
              try {
                ev = JSON.parse(data);
              } catch (_) {
                ev = null;
              }
              data = '';
              if (ev) {
                try {
                  handlers.event(ev);
                } catch (e) {
                  console.error('event handler', e);
                }
              }
            }
          } else if (line.startsWith('data:')) {
            data += line.slice(5).replace(/^ /, '');
          }
        }
      }
    }
    (async function loop() {
      while (!stopped) {
        try {
          await once();
        } catch (e) {
          if (stopped) return;
        }
        if (stopped) return;
        if (handlers.state) handlers.state('reconnecting');
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 8000);
      }
    })();
    return {
      close() {
        stopped = true;
        if (ctrl) ctrl.abort();
      },
    };
  };

  // ---------------------------------------------------------------- formatting
  /** "2 min 13 s" since `ms`. */
  SV.since = function (ms) {
    const s = Math.max(0, Math.floor((Date.now() - ms) / 1000));
    if (s < 60) return SV.t('time.s', { s });
    const m = Math.floor(s / 60);
    if (m < 60) return SV.t('time.ms', { m, s: s % 60 });
    const h = Math.floor(m / 60);
    return SV.t('time.hm', { h, m: m % 60 });
  };

  /** Wall-clock time of `ms`, 24 h. */
  /**
   * One text of an incident's silent chat, as both the control room and the
   * team draw it: who wrote it and when, then the text, always as text
   * (never HTML); one that does not open says so.
   */
  SV.chatLine = function (x) {
    const student = x.from === 'student';
    const who = student
      ? SV.t('chat.student')
      : x.author
        ? SV.t('chat.by', { name: x.author })
        : SV.t('chat.control_room');
    return SV.el(
      'li',
      { class: 'chat-line ' + (student ? 'chat-student' : 'chat-control chat-own'), dataset: { index: x.index, from: x.from } },
      SV.el('span', { class: 'chat-meta' }, SV.el('span', { class: 'chat-who' }, who), ' · ', SV.el('time', { datetime: new Date(x.at_ms).toISOString() }, SV.clock(x.at_ms))),
      typeof x.text === 'string'
        ? SV.el('p', { class: 'chat-text', dir: 'auto' }, x.text)
        : SV.el('p', { class: 'chat-text chat-unreadable' }, SV.t('chat.unreadable')),
    );
  };

  SV.clock = function (ms) {
    const d = new Date(ms);
    return d.toLocaleTimeString(SV.lang === 'hi' ? 'hi-IN' : 'en-GB', { hour12: false });
  };

  /** "350 m" / "1.2 km". */
  SV.distance = function (m) {
    if (m === null || m === undefined || !isFinite(m)) return SV.t('unknown');
    if (m < 1000) return SV.t('dist.m', { m: Math.round(m) });
    return SV.t('dist.km', { km: (m / 1000).toFixed(1) });
  };

  /** Great-circle distance in metres. */
  SV.haversine = function (a, b) {
    const R = 6371008.8;
    const rad = Math.PI / 180;
    const dLat = (b.lat - a.lat) * rad;
    const dLon = (b.lon - a.lon) * rad;
    const h = Math.sin(dLat / 2) ** 2 + Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dLon / 2) ** 2;
    return 2 * R * Math.asin(Math.min(1, Math.sqrt(h)));
  };

  SV.coords = (p) => (p ? p.lat.toFixed(5) + ', ' + p.lon.toFixed(5) : SV.t('unknown'));

  /** Category label key. */
  SV.categoryKey = (c) => 'cat.' + (c || 'unknown');

  /** Only photos embedded as PNG/JPEG data URLs are shown (never a remote URL). */
  SV.safePhoto = (p) => (typeof p === 'string' && /^data:image\/(png|jpeg);base64,[A-Za-z0-9+/=]+$/.test(p) ? p : null);

  // ---------------------------------------------------------------- sound and speech
  let audio = null;
  /** Unlocks sound (browsers allow it only after a user gesture). */
  SV.unlockSound = function () {
    try {
      if (!audio) audio = new (window.AudioContext || window.webkitAudioContext)();
      if (audio.state === 'suspended') audio.resume();
    } catch (_) {
      audio = null;
    }
  };
  /** Two short rising tones: a new incident. */
  SV.alertTone = function () {
    if (!audio) return false;
    try {
      const now = audio.currentTime;
      [0, 0.22].forEach((offset, i) => {
        const osc = audio.createOscillator();
        const gain = audio.createGain();
        osc.type = 'square';
        osc.frequency.value = i === 0 ? 880 : 1175;
        gain.gain.setValueAtTime(0.0001, now + offset);
        gain.gain.exponentialRampToValueAtTime(0.25, now + offset + 0.02);
        gain.gain.exponentialRampToValueAtTime(0.0001, now + offset + 0.18);
        osc.connect(gain).connect(audio.destination);
        osc.start(now + offset);
        osc.stop(now + offset + 0.2);
      });
      SV.tonesPlayed = (SV.tonesPlayed || 0) + 1;
      return true;
    } catch (_) {
      return false;
    }
  };

  /** Says `text` to screen readers through the page's live region. */
  SV.announce = function (text, assertive) {
    const region = document.getElementById(assertive ? 'sv-alert' : 'sv-status');
    if (!region) return;
    region.textContent = '';
    // A new text node in a separate task makes screen readers speak repeats too.
    setTimeout(() => {
      region.textContent = text;
    }, 30);
  };

  /** A short message in the corner (also announced). */
  SV.toast = function (text, kind) {
    let box = document.getElementById('sv-toasts');
    if (!box) {
      // A named region: its text is announced through the live region below, not twice.
      box = SV.el('div', { id: 'sv-toasts', class: 'toasts', role: 'region' });
      document.body.append(box);
    }
    box.setAttribute('aria-label', SV.t('toast.label'));
    const t = SV.el('div', { class: 'toast toast-' + (kind || 'info') }, text);
    box.append(t);
    setTimeout(() => t.remove(), 6000);
    SV.announce(text, kind === 'error');
  };

  document.addEventListener('DOMContentLoaded', () => SV.applyI18n());
})();
