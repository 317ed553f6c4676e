// The student simulator (demo only): pick a simulated student, panic, move,
// cancel ("I am safe", or the duress PIN), stop (wipe), and write in the
// incident's silent chat. Every action is a request to the demo process,
// which holds the device keys and signs.
(function () {
  'use strict';
  const SV = window.SV;
  const L = window.L;
  const { el, t, $ } = SV;

  const S = { state: null, selected: 0, map: null, markers: new Map(), busy: false };
  window.SV_SIM = S;

  // While a phone is in panic it follows its incident: the state is read
  // again every FOLLOW_MS (each read has the simulated phone sign a status
  // query and verify the control room's report, and read its silent chat).
  const FOLLOW_MS = 2000;
  let followTimer = null;

  async function refresh() {
    clearTimeout(followTimer);
    try {
      S.state = await SV.api('/demo/api/state');
    } catch (e) {
      SV.toast(t('error.network'), 'error');
      return;
    } finally {
      // A running timer too: the phone notices its end.
      if (!S.state || S.state.students.some((s) => s.status === 'panic' || s.timer)) {
        followTimer = setTimeout(refresh, FOLLOW_MS);
      }
    }
    render();
  }

  /** Has the selected phone do `path`; resolves with whether it was done. */
  async function action(path, body) {
    if (S.busy) return false;
    S.busy = true;
    renderPhone();
    let done = false;
    try {
      const r = await SV.api('/demo/api/students/' + S.selected + '/' + path, { body: body || {} });
      if (r && r.message) SV.toast(r.message);
      done = true;
    } catch (e) {
      SV.toast(t('sim.failed', { code: e.code }), 'error');
    } finally {
      S.busy = false;
    }
    await refresh();
    return done;
  }

  function student() {
    return S.state && S.state.students.find((s) => s.idx === S.selected);
  }

  function render() {
    const st = S.state;
    if (!st) return;
    $('#control-link').href = st.control_room;
    $('#students').replaceChildren(
      ...st.students.map((s) =>
        el(
          'li',
          {},
          el(
            'button',
            {
              type: 'button',
              class: 'student-btn status-' + s.status,
              'aria-pressed': String(s.idx === S.selected),
              dataset: { student: s.idx },
              onclick: () => {
                S.selected = s.idx;
                render();
                const p = [s.lat, s.lon];
                S.map.panTo(p);
              },
            },
            el('span', { class: 'student-name' }, s.name),
            el('span', { class: 'student-status' }, t('sim.status.' + s.status)),
          ),
        ),
      ),
    );
    $('#teams').replaceChildren(
      ...st.teams.map((tm) =>
        el(
          'li',
          {},
          el('a', { href: tm.url, target: '_blank', rel: 'noopener', class: 'team-link', dataset: { team: tm.name } }, tm.name),
          el('span', { class: 'muted' }, ' · ' + t('kind.' + tm.kind)),
        ),
      ),
    );
    renderPhone();
    renderMap();
  }

  // What the phone was last drawn from: a read of the state that changes
  // nothing on the phone (the follow polling, every FOLLOW_MS) draws nothing.
  let phoneDrawn = null;

  function renderPhone() {
    const s = student();
    const box = $('#phone');
    if (!s) {
      phoneDrawn = null;
      box.replaceChildren();
      return;
    }
    const busy = S.busy;
    const drawn = JSON.stringify([s, busy, SV.lang]);
    if (drawn === phoneDrawn) return;
    phoneDrawn = drawn;
    // What the student is typing or has chosen survives a redraw (a report
    // that changed while the PIN is being typed must not wipe it).
    const kept = ['#pin', '#category', '#timer-pin', '#timer-length', '#chat-text'].map((sel) => {
      const e = $(sel, box);
      return e && { sel, value: e.value, focused: document.activeElement === e };
    }).filter(Boolean);
    const wipeOpen = !!$('details.wipe[open]', box);
    const parts = [
      el('h3', {}, s.name),
      el('p', { class: 'muted' }, s.hostel),
      el('p', { class: 'phone-status status-' + s.status, id: 'phone-status' }, t('sim.status.' + s.status)),
      s.incident ? el('p', { class: 'muted', id: 'phone-incident' }, t('sim.incident', { id: s.incident.slice(0, 8) })) : null,
      s.status === 'panic' && s.sms_to ? el('p', { class: 'muted small', id: 'phone-sms' }, t('sim.sms_sent', { number: s.sms_to })) : null,
      ...(s.status === 'panic' ? following(s.follow) : []),
      s.status === 'panic' && s.chat ? chatBox(s.chat, busy) : null,
      s.status !== 'stopped' ? readsOf(s.reads) : null,
      s.status !== 'stopped' ? trailSwitch(s, busy) : null,
      s.status === 'idle' ? timerBox(s, busy) : null,
    ];
    if (s.status === 'idle') {
      const sel = el(
        'select',
        { id: 'category' },
        ...['police', 'medical', 'mental-health'].map((c) => el('option', { value: c }, t('cat.' + c))),
      );
      parts.push(
        el('label', { for: 'category' }, t('sim.category')),
        sel,
        el('button', { type: 'button', id: 'panic', class: 'btn btn-panic btn-block btn-xxl', disabled: busy, onclick: () => action('panic', { category: sel.value }) }, t('sim.panic')),
        // The same press, for a phone with signal and no data: two texts.
        el('button', { type: 'button', id: 'panic-sms', class: 'btn btn-secondary btn-block', disabled: busy, onclick: () => action('sms-panic', { category: sel.value }) }, t('sim.panic_sms')),
        el('p', { class: 'muted small' }, t('sim.sms_hint')),
      );
    }
    if (s.status === 'panic') {
      const pin = el('input', { id: 'pin', inputmode: 'numeric', autocomplete: 'off', maxlength: 8 });
      parts.push(
        el('label', { for: 'pin' }, t('sim.pin')),
        pin,
        el('p', { class: 'muted small' }, t('sim.pin_hint', { pin: s.pin, duress: s.duress_pin })),
        el('div', { class: 'btn-row' },
          el('button', { type: 'button', id: 'cancel', class: 'btn btn-secondary', disabled: busy, onclick: () => action('cancel', { pin: pin.value }) }, t('sim.cancel')),
          el('button', { type: 'button', id: 'stop', class: 'btn btn-danger', disabled: busy, onclick: () => action('stop', { pin: pin.value }) }, t('sim.stop')),
        ),
      );
    } else if (s.status === 'idle') {
      const pin = el('input', { id: 'pin', inputmode: 'numeric', autocomplete: 'off', maxlength: 8 });
      parts.push(
        el('details', { class: 'wipe' },
          el('summary', {}, t('sim.wipe_heading')),
          el('label', { for: 'pin' }, t('sim.pin')),
          pin,
          el('button', { type: 'button', id: 'stop', class: 'btn btn-danger btn-block', disabled: busy, onclick: () => action('stop', { pin: pin.value }) }, t('sim.stop')),
        ),
      );
    } else if (s.status === 'stopped') {
      parts.push(el('p', {}, t('sim.stopped_text')));
    }
    box.replaceChildren(...parts.filter(Boolean));
    for (const k of kept) {
      const e = $(k.sel, box);
      if (!e) continue;
      e.value = k.value;
      if (k.focused) e.focus();
    }
    if (wipeOpen && $('details.wipe', box)) $('details.wipe', box).open = true;
    // The newest text in view.
    const log = $('#phone-chat-log', box);
    if (log) log.scrollTop = log.scrollHeight;
  }

  /** The incident's silent chat, as the simulated phone read it (its own
   *  signed query; the control room's signed log, verified; each text opened
   *  with the phone's own chat key). Shown only while the chat is open. */
  function chatBox(lines, busy) {
    const input = el('textarea', {
      id: 'chat-text',
      rows: 2,
      dir: 'auto',
      onkeydown: (e) => {
        if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
          e.preventDefault();
          sendChat();
        }
      },
    });
    const line = (x) => {
      const own = x.from === 'student';
      return el(
        'li',
        { class: 'chat-line ' + (own ? 'chat-student chat-own' : 'chat-control'), dataset: { from: x.from, index: x.index } },
        el('span', { class: 'chat-meta' }, own ? t('sim.chat.you') : t('sim.chat.control_room'), ' · ', el('time', {}, SV.clock(x.at * 1000))),
        typeof x.text === 'string'
          ? el('p', { class: 'chat-text', dir: 'auto' }, x.text)
          : el('p', { class: 'chat-text chat-unreadable' }, t('sim.chat.unreadable')),
      );
    };
    return el(
      'section',
      { id: 'phone-chat', class: 'chat-phone', 'aria-labelledby': 'phone-chat-heading' },
      el('h4', { id: 'phone-chat-heading' }, t('sim.chat.heading')),
      el('p', { class: 'muted small' }, t('sim.chat.hint')),
      lines.length
        ? el('ol', { id: 'phone-chat-log', class: 'chat-log', tabindex: '0', 'aria-labelledby': 'phone-chat-heading' }, ...lines.map(line))
        : el('p', { id: 'phone-chat-none', class: 'muted small' }, t('sim.chat.none')),
      el('label', { for: 'chat-text' }, t('sim.chat.label')),
      input,
      el('button', { type: 'button', id: 'chat-send', class: 'btn btn-secondary btn-block', disabled: busy, onclick: sendChat }, t('sim.chat.send')),
    );
  }

  /** The student writes: the phone seals the text to both ends, signs and sends it. */
  async function sendChat() {
    const input = $('#chat-text');
    if (!input) return;
    if (!input.value.trim()) {
      input.focus();
      return;
    }
    if (await action('chat-send', { text: input.value })) {
      const now = $('#chat-text');
      if (now) {
        now.value = '';
        now.focus();
      }
    }
  }

  /** What the phone knows of its incident: the control room's signed
   *  report, which the simulated phone asked for and verified. "Help is
   *  coming" only once a team has acknowledged. */
  function following(f) {
    if (!f) return [el('p', { id: 'phone-follow', class: 'follow follow-unknown', role: 'status' }, t('sim.follow.unknown'))];
    const team = f.team || {};
    const vars = {
      kind: team.kind ? t('kind.' + team.kind) : '',
      distance: SV.distance(team.distance_m),
      minutes: Math.max(1, Math.ceil((team.eta_secs || 0) / 60)),
    };
    // A closed incident ends the phone's panic (the simulator goes back to idle).
    if (f.stage === 'closed') return [];
    const out = [el('p', { id: 'phone-follow', class: 'follow follow-' + f.stage, role: 'status', dataset: { stage: f.stage } }, t('sim.follow.' + f.stage, vars))];
    if (f.opened_at) {
      out.push(el('p', { id: 'phone-opened', class: 'muted small' },
        t('sim.follow.opened', { time: SV.clock(f.opened_at * 1000), released: f.released, threshold: f.threshold })));
    }
    return out;
  }

  /** The sealed trail: where the student walks, sealed to their own vault
   *  (the control room reads it only after a panic's release). */
  function trailSwitch(s, busy) {
    const box = el('input', { type: 'checkbox', id: 'trail-on', disabled: busy, onchange: (e) => action('trail', { on: e.target.checked }) });
    box.checked = !!s.trail;
    return el('div', { class: 'trail-switch' },
      el('label', { for: 'trail-on' }, box, ' ', t('sim.trail.label')),
      el('p', { id: 'phone-trail', class: 'muted small', dataset: { sent: s.trail_sent } },
        s.trail ? t('sim.trail.on', { count: s.trail_sent }) : t('sim.trail.off')));
  }

  /** Walk me home: a check-in timer. While it runs every move sends a
   *  sealed trail point; "I got there" with the PIN (or, under duress, the
   *  duress PIN: the phone shows the same) ends it; if it runs out, the
   *  control room acts on it as on a panic, and the phone follows that. */
  function timerBox(s, busy) {
    if (s.timer) {
      const pin = el('input', { id: 'timer-pin', inputmode: 'numeric', autocomplete: 'off', maxlength: 8 });
      return el('section', { id: 'phone-timer', class: 'timer timer-running', dataset: { endsAt: s.timer.ends_at } },
        el('h4', {}, t('sim.timer.heading')),
        el('p', { id: 'timer-status', role: 'status' }, t('sim.timer.running', { time: SV.clock(s.timer.ends_at * 1000) })),
        el('label', { for: 'timer-pin' }, t('sim.pin')),
        pin,
        el('button', { type: 'button', id: 'check-in', class: 'btn btn-secondary btn-block', disabled: busy, onclick: () => action('check-in', { pin: pin.value }) }, t('sim.timer.check_in')));
    }
    const lengths = [[60, 'sim.timer.1min'], [300, 'sim.timer.5min'], [1200, 'sim.timer.20min']];
    const sel = el('select', { id: 'timer-length' }, ...lengths.map(([secs, key]) => el('option', { value: String(secs) }, t(key))));
    return el('section', { id: 'phone-timer', class: 'timer' },
      el('h4', {}, t('sim.timer.heading')),
      el('p', { class: 'muted small' }, t('sim.timer.hint')),
      el('label', { for: 'timer-length' }, t('sim.timer.length')),
      sel,
      el('button', { type: 'button', id: 'start-timer', class: 'btn btn-secondary btn-block', disabled: busy, onclick: () => action('timer', { secs: Number(sel.value) }) }, t('sim.timer.start')));
  }

  /** Who read the profile during the last incident: the phone's own log
   *  entries, which the simulated phone asked for and verified. */
  function readsOf(reads) {
    if (!reads || !reads.length) return null;
    const line = (r) => {
      const time = SV.clock(r.at * 1000);
      const who = r.viewer === 'guardian:sms'
        ? t('sim.reads.guardian', { time })
        : r.viewer.startsWith('operator:')
          ? t('sim.reads.operator', { time, name: r.viewer.slice('operator:'.length) })
          : t('sim.reads.team', { time });
      return el('li', { dataset: { viewer: r.viewer } }, who,
        r.reason ? el('div', { class: 'muted small' }, t('sim.reads.reason', { reason: r.reason })) : null);
    };
    return el('section', { id: 'phone-reads', class: 'reads' },
      el('h4', {}, t('sim.reads.heading')),
      el('ul', {}, ...reads.map(line)));
  }

  function renderMap() {
    if (!S.map) {
      S.map = SV.makeMap($('#sim-map'), { zoom: 14 });
      S.map.on('click', (e) => {
        const s = student();
        if (!s || s.status === 'stopped') return;
        action('move', { lat: e.latlng.lat, lon: e.latlng.lng });
      });
      const s = student();
      if (s) S.map.setView([s.lat, s.lon], 14);
    }
    for (const s of S.state.students) {
      let m = S.markers.get(s.idx);
      const cls = 'mk-student' + (s.idx === S.selected ? ' mk-selected' : '') + ' status-' + s.status;
      if (!m) {
        m = L.marker([s.lat, s.lon], { icon: SV.dotIcon(cls, true), keyboard: false, title: s.name })
          .addTo(S.map)
          .on('click', () => {
            S.selected = s.idx;
            render();
          });
        S.markers.set(s.idx, m);
      } else {
        m.setLatLng([s.lat, s.lon]);
        m.setIcon(SV.dotIcon(cls, true));
      }
      SV.tagMarker(m, s.name.slice(0, 1), { student: s.idx });
    }
  }

  document.addEventListener('DOMContentLoaded', () => {
    document.addEventListener('sv-lang', render);
    refresh();
  });
})();
