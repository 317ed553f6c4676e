// The control room: sign-in, the live incident list, the map, the incident view.
(function () {
  'use strict';
  const SV = window.SV;
  const L = window.L;
  const { el, t, $ } = SV;

  const isDuressStop = (inc) => !!inc && Array.isArray(inc.flags) && inc.flags.includes('duress_stop');

  const TOKEN_KEY = 'sosvault.operator';
  const S = {
    token: sessionStorage.getItem(TOKEN_KEY),
    user: sessionStorage.getItem(TOKEN_KEY + '.user') || '',
    incidents: new Map(), // id -> summary
    order: [], // ids, newest first
    units: new Map(), // id -> unit view
    fresh: new Set(), // ids highlighted as new until opened
    known: null, // ids seen at start (not announced)
    trails: new Map(), // id -> [[lat, lon], ...]
    selected: null,
    detail: null,
    filter: 'open',
    stream: null,
    map: null,
    markers: new Map(), // incident id -> marker
    unitMarkers: new Map(),
    trailLine: null,
    forwards: null, // GET /v1/operator/forwards: what the trustees have not confirmed
  };
  window.SV_CONTROL = S; // for debugging and the browser tests

  // ------------------------------------------------------------ sign-in
  function showLogin(message) {
    $('#room').hidden = true;
    $('#logout').hidden = true;
    $('#login-view').hidden = false;
    $('#who').textContent = '';
    $('#login-error').textContent = message || '';
    $('#login-user').focus();
  }

  async function login(ev) {
    ev.preventDefault();
    SV.unlockSound();
    const username = $('#login-user').value.trim();
    const password = $('#login-pass').value;
    $('#login-error').textContent = '';
    try {
      const r = await SV.api('/v1/operator/login', { body: { username, password } });
      S.token = r.token;
      S.user = username;
      sessionStorage.setItem(TOKEN_KEY, r.token);
      sessionStorage.setItem(TOKEN_KEY + '.user', username);
      $('#login-pass').value = '';
      start();
    } catch (e) {
      $('#login-error').textContent = e.status === 401 ? t('login.bad') : t('error.network');
    }
  }

  async function logout() {
    try {
      await SV.api('/v1/operator/logout', { method: 'POST', token: S.token });
    } catch (_) {
      /* the session is dropped locally either way */
    }
    expired(t('login.signed_out'));
  }

  function expired(message) {
    if (S.stream) S.stream.close();
    S.stream = null;
    S.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(message || t('login.expired'));
  }

  async function call(path, opts) {
    try {
      return await SV.api(path, Object.assign({ token: S.token }, opts || {}));
    } catch (e) {
      if (e.status === 401) expired();
      throw e;
    }
  }

  // ------------------------------------------------------------ start
  function start() {
    $('#login-view').hidden = true;
    $('#room').hidden = false;
    $('#logout').hidden = false;
    $('#who').textContent = S.user;
    if (!S.map) {
      S.map = SV.makeMap($('#map'));
    }
    setTimeout(() => S.map.invalidateSize(), 0);
    S.known = null;
    S.stream = SV.stream('/v1/operator/events', S.token, {
      event: onEvent,
      open: () => {
        refreshList();
        refreshUnits();
        refreshForwards();
        if (S.selected) loadDetail(S.selected);
      },
      state: setConn,
      unauthorized: () => expired(),
    });
    $('#incident-list').focus();
  }

  function setConn(state) {
    const c = $('#conn');
    c.className = 'conn ' + (state === 'live' ? 'conn-on' : 'conn-off');
    c.dataset.i18n = state === 'live' ? 'conn.live' : 'conn.reconnecting';
    c.textContent = t(c.dataset.i18n);
  }

  // ------------------------------------------------------------ data
  let listTimer = null;
  function refreshListSoon() {
    if (listTimer) return;
    listTimer = setTimeout(() => {
      listTimer = null;
      refreshList();
    }, 120);
  }

  async function refreshList() {
    let list;
    try {
      list = await call('/v1/operator/incidents?limit=200');
    } catch (_) {
      return;
    }
    const firstLoad = S.known === null;
    if (firstLoad) S.known = new Set(list.map((i) => i.id));
    for (const inc of list) {
      const had = S.incidents.has(inc.id);
      S.incidents.set(inc.id, inc);
      if (!had && !firstLoad && !S.known.has(inc.id)) newIncident(inc);
      if (inc.location && !S.trails.has(inc.id)) S.trails.set(inc.id, [[inc.location.lat, inc.location.lon]]);
    }
    S.order = list.map((i) => i.id);
    renderList();
    renderMarkers();
    if (S.selected && S.detail) renderDetailHeader();
  }

  let unitsTimer = null;
  function refreshUnitsSoon() {
    if (unitsTimer) return;
    unitsTimer = setTimeout(() => {
      unitsTimer = null;
      refreshUnits();
    }, 200);
  }

  // Stops, cancels and commits a trustee has not confirmed for too long.
  async function refreshForwards() {
    try {
      S.forwards = await call('/v1/operator/forwards');
    } catch (_) {
      return;
    }
    renderForwards();
  }

  function renderForwards() {
    const box = $('#forwards-banner');
    const stuck = ((S.forwards && S.forwards.groups) || []).filter((g) => g.stuck > 0);
    box.hidden = stuck.length === 0;
    box.replaceChildren();
    if (!stuck.length) return;
    box.append(el('strong', {}, t('forwards.heading')));
    for (const g of stuck) {
      const minutes = Math.max(1, Math.round((Date.now() - g.oldest_since_ms) / 60000));
      const line = el('p', { class: 'forward-' + g.kind, 'data-trustee': g.trustee },
        t('forwards.' + g.kind, { trustee: g.trustee, count: g.stuck, minutes }));
      if (g.last_error) line.append(' ', t('forwards.last', { error: g.last_error }));
      box.append(line);
    }
  }

  async function refreshUnits() {
    let units;
    try {
      units = await call('/v1/operator/units');
    } catch (_) {
      return;
    }
    S.units = new Map(units.map((u) => [u.id, u]));
    renderUnits();
  }

  function newIncident(inc) {
    S.known.add(inc.id);
    S.fresh.add(inc.id);
    SV.alertTone();
    if (isDuressStop(inc)) {
      SV.announce(t('announce.duress_stop'), true);
      return;
    }
    const flags = inc.flags.includes('duress') ? ' ' + t('flag.duress') + '.' : '';
    SV.announce(t('announce.new', { category: t(SV.categoryKey(inc.category)) }) + flags, true);
  }

  function onEvent(ev) {
    const id = ev.incident;
    switch (ev.kind) {
      case 'incident_created':
        if (S.known && !S.known.has(id)) {
          // Show it at once, from the event, before the list round trip.
          const inc = {
            id,
            category: ev.detail.category,
            status: 'open',
            created_at_ms: ev.at_ms,
            location: null,
            unit: null,
            release: { have: 0, need: 0, profile: 'sealed' },
            flags: ev.detail.flags || [],
          };
          S.incidents.set(id, inc);
          S.order.unshift(id);
          newIncident(inc);
          renderList();
        }
        refreshList();
        break;
      case 'location': {
        const inc = S.incidents.get(id);
        const p = { lat: ev.detail.lat, lon: ev.detail.lon };
        if (inc) inc.location = p;
        const trail = S.trails.get(id) || [];
        trail.push([p.lat, p.lon]);
        S.trails.set(id, trail);
        renderMarkers();
        if (S.selected === id && S.map && !S.map.getBounds().pad(-0.1).contains([p.lat, p.lon])) {
          // Keep the selected student (and their team) in view.
          frameSelected();
        }
        if (S.selected === id && S.detail) {
          S.detail.location = p;
          S.detail.trail = (S.detail.trail || []).concat([p]);
          renderTrail();
          renderFacts();
        }
        break;
      }
      case 'unit_position': {
        const u = S.units.get(ev.unit);
        if (u) {
          u.position = { lat: ev.detail.lat, lon: ev.detail.lon };
          renderUnits();
        } else refreshUnitsSoon();
        break;
      }
      case 'timeline':
        if (S.selected === id && S.detail) {
          S.detail.timeline.push({ at_ms: ev.at_ms, kind: ev.detail.step, detail: ev.detail.detail });
          renderTimeline();
        }
        refreshListSoon();
        break;
      case 'profile_available':
      case 'profile_forgotten':
      case 'closed':
      case 'cancelled':
      case 'escalated':
      case 'false_alarm':
        refreshListSoon();
        if (ev.kind === 'escalated') {
          SV.alertTone();
          // A duress stop's alert escalates as it opens: same tone, its own words.
          const stopAlert = (ev.detail && ev.detail.reason === 'duress_stop') || isDuressStop(S.incidents.get(id));
          SV.announce(stopAlert ? t('announce.duress_stop') : t('announce.escalated'), true);
        }
        if (S.selected === id) loadDetail(id);
        refreshUnitsSoon();
        break;
      case 'assigned':
      case 'acknowledged':
      case 'assignment_withdrawn':
        refreshListSoon();
        refreshUnitsSoon();
        if (ev.kind === 'acknowledged') {
          SV.announce(t('announce.ack', { team: (ev.detail && ev.detail.name) || '' }));
        }
        break;
      case 'release_progress':
        refreshListSoon();
        break;
      case 'shred_receipt':
        SV.toast(t('toast.shred', { trustee: ev.detail.trustee }));
        break;
      case 'student_stopped':
        SV.toast(t('toast.stopped'));
        break;
      case 'forwards':
        S.forwards = ev.detail;
        renderForwards();
        break;
      default:
        if (id) refreshListSoon();
    }
  }

  // ------------------------------------------------------------ list
  function visibleIds() {
    return S.order.filter((id) => {
      const inc = S.incidents.get(id);
      return inc && (S.filter === 'all' || inc.status === 'open');
    });
  }

  function flagChips(flags) {
    return flags
      .filter((f) => ['duress_stop', 'duress', 'false_alarm', 'stopped', 'rate_limited', 'repeat_offender'].includes(f))
      // The duress-stop chip looks like the DURESS one (red, blinking).
      .map((f) => el('span', { class: 'chip chip-' + f.replace('_', '-') + (f === 'duress_stop' ? ' chip-duress' : '') }, t('flag.' + f)));
  }

  function teamLine(inc) {
    if (!inc.unit) {
      if (inc.status === 'open' && isDuressStop(inc)) return el('span', { class: 'team team-none' }, t('unit.duress_stop'));
      return el('span', { class: 'team team-none' }, inc.status === 'open' ? t('unit.searching') : t('unit.none'));
    }
    const ack = inc.unit.acknowledged;
    return el(
      'span',
      { class: 'team ' + (ack ? 'team-ack' : 'team-pending') },
      el('span', { class: 'team-name' }, inc.unit.name || inc.unit.id),
      ' · ',
      el('span', { class: 'ack-state', dataset: { ack: String(ack) } }, ack ? t('unit.acked') : t('unit.waiting_ack')),
    );
  }

  function releaseLine(inc) {
    const r = inc.release;
    const key = 'release.' + r.profile;
    return el(
      'span',
      { class: 'release release-' + r.profile, dataset: { have: r.have, need: r.need } },
      t('release.count', { have: r.have, need: r.need }),
      ' · ',
      t(key),
    );
  }

  function renderList() {
    const ul = $('#incident-list');
    const ids = visibleIds();
    const focusedId = document.activeElement && document.activeElement.dataset && document.activeElement.dataset.incident;
    ul.replaceChildren(
      ...ids.map((id) => {
        const inc = S.incidents.get(id);
        const classes = ['incident', 'cat-' + inc.category, 'status-' + inc.status];
        if (S.fresh.has(id)) classes.push('is-new');
        if (inc.flags.includes('duress')) classes.push('is-duress');
        if (S.selected === id) classes.push('is-selected');
        return el(
          'li',
          { class: classes.join(' ') },
          el(
            'button',
            {
              type: 'button',
              class: 'incident-btn',
              dataset: { incident: id },
              'aria-current': S.selected === id ? 'true' : null,
              onclick: () => select(id),
            },
            el(
              'span',
              { class: 'incident-top' },
              el('span', { class: 'cat-badge' }, t(SV.categoryKey(inc.category))),
              S.fresh.has(id) ? el('span', { class: 'chip chip-new' }, t('list.new')) : null,
              el('span', { class: 'since', dataset: { since: inc.created_at_ms } }, SV.since(inc.created_at_ms)),
            ),
            el('span', { class: 'incident-mid' }, teamLine(inc)),
            el('span', { class: 'incident-bottom' }, releaseLine(inc), ...flagChips(inc.flags)),
            inc.status !== 'open' ? el('span', { class: 'status-tag' }, t('status.' + inc.status)) : null,
          ),
        );
      }),
    );
    $('#list-empty').hidden = ids.length > 0;
    const open = S.order.filter((id) => (S.incidents.get(id) || {}).status === 'open').length;
    $('#open-count').textContent = t('list.open_count', { n: open });
    // A tab in the background still shows how many incidents are open.
    document.title = (open ? '(' + open + ') ' : '') + t('control.title') + ' · sosvault';
    if (focusedId) {
      const b = ul.querySelector('[data-incident="' + focusedId + '"]');
      if (b) b.focus();
    }
  }

  // ------------------------------------------------------------ map
  function renderMarkers() {
    if (!S.map) return;
    const seen = new Set();
    for (const [id, inc] of S.incidents) {
      if (inc.status !== 'open' || !inc.location) continue;
      seen.add(id);
      const ll = [inc.location.lat, inc.location.lon];
      let m = S.markers.get(id);
      const cls = 'mk-incident mk-' + inc.category + (inc.flags.includes('duress') ? ' mk-duress' : '') + (S.selected === id ? ' mk-selected' : '');
      if (!m) {
        m = L.marker(ll, { icon: SV.dotIcon(cls, true), keyboard: false, title: t(SV.categoryKey(inc.category)), zIndexOffset: 1000 })
          .addTo(S.map)
          .on('click', () => select(id));
        S.markers.set(id, m);
      } else {
        m.setLatLng(ll);
        const e = m.getElement();
        if (e) e.className = e.className.replace(/\bmk-(selected|duress)\b/g, '').trim() + (S.selected === id ? ' mk-selected' : '') + (inc.flags.includes('duress') ? ' mk-duress' : '');
      }
      SV.tagMarker(m, '!', { incident: id });
    }
    for (const [id, m] of S.markers) {
      if (!seen.has(id)) {
        m.remove();
        S.markers.delete(id);
      }
    }
    renderTrail();
  }

  function renderTrail() {
    if (!S.map) return;
    const id = S.selected;
    let pts = [];
    if (id) {
      if (S.detail && S.detail.id === id && S.detail.trail && S.detail.trail.length) {
        pts = S.detail.trail.map((p) => [p.lat, p.lon]);
      } else pts = S.trails.get(id) || [];
    }
    if (!S.trailLine) S.trailLine = L.polyline([], { className: 'trail', weight: 4, interactive: false }).addTo(S.map);
    S.trailLine.setLatLngs(pts);
  }

  function renderUnits() {
    if (!S.map) return;
    const seen = new Set();
    for (const [id, u] of S.units) {
      if (!u.position) continue;
      seen.add(id);
      const ll = [u.position.lat, u.position.lon];
      const cls = 'mk-team mk-team-' + u.kind + (u.incident ? ' mk-busy' : '') + (u.connected ? '' : ' mk-offline');
      let m = S.unitMarkers.get(id);
      if (!m) {
        m = L.marker(ll, { icon: SV.dotIcon(cls, true), keyboard: false, title: u.name }).addTo(S.map);
        S.unitMarkers.set(id, m);
      } else {
        m.setLatLng(ll);
        m.setIcon(SV.dotIcon(cls, true));
      }
      // A team on a call is drawn above free ones.
      m.setZIndexOffset(u.incident ? 500 : 0);
      SV.tagMarker(m, u.kind === 'police' ? 'P' : u.kind === 'medical' ? '+' : 'C', { unit: id });
    }
    for (const [id, m] of S.unitMarkers) {
      if (!seen.has(id)) {
        m.remove();
        S.unitMarkers.delete(id);
      }
    }
  }

  // ------------------------------------------------------------ incident view
  async function select(id) {
    S.fresh.delete(id);
    S.selected = id;
    renderList();
    renderMarkers();
    await loadDetail(id, true);
    frameSelected();
  }

  /** Frames the selected student's trail and the team on the way. */
  function frameSelected() {
    const inc = S.incidents.get(S.selected);
    if (!inc || !inc.location || !S.map) return;
    const pts = (S.trails.get(inc.id) || []).slice();
    if (S.detail && S.detail.id === inc.id) for (const p of S.detail.trail || []) pts.push([p.lat, p.lon]);
    pts.push([inc.location.lat, inc.location.lon]);
    const u = inc.unit && S.units.get(inc.unit.id);
    if (u && u.position) pts.push([u.position.lat, u.position.lon]);
    S.map.fitBounds(pts, { padding: [70, 70], maxZoom: 16 });
  }

  async function loadDetail(id, focus) {
    let d;
    try {
      d = await call('/v1/operator/incidents/' + id);
    } catch (e) {
      if (e.status !== 401) SV.toast(t('error.load'), 'error');
      return;
    }
    if (S.selected !== id) return;
    S.detail = d;
    S.incidents.set(id, Object.assign({}, S.incidents.get(id) || {}, summaryOf(d)));
    renderDetail();
    renderTrail();
    loadAccessLog(id);
    if (focus) $('#detail-heading').focus();
  }

  function summaryOf(d) {
    const { id, category, status, created_at_ms, location, unit, release, flags } = d;
    return { id, category, status, created_at_ms, location, unit, release, flags };
  }

  function renderDetail() {
    const d = S.detail;
    const pane = $('#detail');
    pane.replaceChildren(
      el('div', { class: 'detail-head', id: 'detail-head' }),
      el('dl', { class: 'facts', id: 'facts' }),
      el('div', { class: 'actions', id: 'actions' }),
      el('section', { class: 'profile-box', id: 'profile', 'aria-labelledby': 'profile-heading' }),
      el('section', { class: 'access-box', id: 'access-log', 'aria-labelledby': 'access-heading' }),
      el(
        'section',
        { class: 'timeline-box', 'aria-labelledby': 'timeline-heading' },
        el('h3', { id: 'timeline-heading' }, t('detail.timeline')),
        el('ol', { class: 'timeline', id: 'timeline' }),
      ),
    );
    renderDetailHeader();
    renderProfile(d);
    renderTimeline();
  }

  function renderDetailHeader() {
    const d = S.detail;
    if (!d || !$('#detail-head')) return;
    const inc = S.incidents.get(d.id) || d;
    $('#detail-head').replaceChildren(
      el(
        'h2',
        { id: 'detail-heading', tabindex: '-1', class: 'cat-' + inc.category },
        t(SV.categoryKey(inc.category)),
        el('span', { class: 'incident-id' }, ' #' + d.id.slice(0, 8)),
      ),
      el('div', { class: 'head-chips' }, el('span', { class: 'chip chip-status-' + inc.status }, t('status.' + inc.status)), ...flagChips(inc.flags)),
    );
    renderFacts();
    renderActions();
  }

  function renderFacts() {
    const d = S.detail;
    if (!d || !$('#facts')) return;
    const inc = S.incidents.get(d.id) || d;
    const loc = inc.location || d.location;
    let dist = null;
    if (inc.unit && loc) {
      const u = S.units.get(inc.unit.id);
      if (u && u.position) dist = SV.haversine(u.position, loc);
    }
    const row = (k, v, attrs) => [el('dt', {}, t(k)), el('dd', attrs || {}, v)];
    $('#facts').replaceChildren(
      ...row('detail.since', SV.since(inc.created_at_ms), { dataset: { since: inc.created_at_ms } }),
      ...row('detail.started', SV.clock(inc.created_at_ms)),
      ...row('detail.team', teamLine(inc), { id: 'detail-team' }),
      ...row('detail.team_distance', dist === null ? t('unknown') : SV.distance(dist)),
      ...row('detail.release', releaseLine(inc), { id: 'detail-release' }),
      ...row('detail.location', SV.coords(loc), { id: 'detail-location' }),
    );
  }

  function renderActions() {
    const d = S.detail;
    const inc = S.incidents.get(d.id) || d;
    const open = inc.status === 'open';
    const marked = inc.flags.includes('false_alarm');
    $('#actions').replaceChildren(
      el(
        'button',
        {
          type: 'button',
          class: 'btn btn-secondary',
          id: 'act-reassign',
          // Before the acknowledgement the service reassigns by itself on timeout.
          disabled: !(open && inc.unit && inc.unit.acknowledged),
          title: t('action.reassign_hint'),
          onclick: () => act('reassign'),
        },
        t('action.reassign'),
      ),
      el('button', { type: 'button', class: 'btn btn-warn', id: 'act-false-alarm', disabled: marked, onclick: () => act('false-alarm') }, marked ? t('action.false_alarm_done') : t('action.false_alarm')),
      el('button', { type: 'button', class: 'btn btn-danger', id: 'act-close', disabled: !open, onclick: () => act('close') }, t('action.close')),
    );
  }

  function confirmDialog(title, text, okLabel) {
    const dlg = $('#confirm');
    $('#confirm-title').textContent = title;
    $('#confirm-text').textContent = text;
    $('#confirm-ok').textContent = okLabel;
    dlg.showModal();
    $('#confirm-ok').focus();
    return new Promise((resolve) => {
      dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true });
    });
  }

  async function act(action) {
    const id = S.selected;
    if (!id) return;
    const ok = await confirmDialog(t('confirm.' + action + '.title'), t('confirm.' + action + '.text'), t('action.' + action.replace('-', '_')));
    if (!ok) {
      const b = $('#act-' + action);
      if (b) b.focus();
      return;
    }
    try {
      await call('/v1/operator/incidents/' + id + '/' + action, { method: 'POST', body: {} });
      SV.toast(t('done.' + action));
    } catch (e) {
      SV.toast(t('error.action', { code: e.code }), 'error');
    }
    await loadDetail(id);
    refreshList();
    const b = $('#act-' + action);
    if (b && !b.disabled) b.focus();
    else if ($('#detail-heading')) $('#detail-heading').focus();
  }

  function renderProfile(d) {
    const box = $('#profile');
    const p = d.profile;
    const state = d.release.profile;
    if (p) {
      const photo = SV.safePhoto(p.photo);
      const field = (k, v) => (v ? [el('dt', {}, t(k)), el('dd', {}, v)] : []);
      box.className = 'profile-box profile-open';
      box.replaceChildren(
        el('h3', { id: 'profile-heading' }, t('profile.heading')),
        el('p', { class: 'logged-banner', role: 'note' }, el('strong', {}, t('profile.logged_title')), ' ', t('profile.logged_text', { user: S.user })),
        el(
          'div',
          { class: 'profile-body' },
          photo ? el('img', { class: 'photo', src: photo, alt: t('profile.photo_alt', { name: p.name }) }) : el('div', { class: 'photo photo-none', 'aria-hidden': 'true' }),
          el(
            'dl',
            { class: 'profile-fields', id: 'profile-fields' },
            ...field('profile.name', p.name),
            ...field('profile.phone', p.phone),
            ...field('profile.hostel', p.hostel),
            ...field('profile.institute', p.institute),
            ...field('profile.address', p.address),
            ...field('profile.guardian', [p.guardian_name, p.guardian_phone].filter(Boolean).join(' · ')),
            ...field('profile.blood', p.blood_group),
            ...field('profile.medical', p.medical_notes),
          ),
        ),
      );
    } else {
      box.className = 'profile-box profile-closed';
      const why = isDuressStop(d) ? 'profile.duress_stop' : d.flags.includes('stopped') ? 'profile.stopped' : state === 'sealed' ? 'profile.sealed' : state === 'expired' ? 'profile.expired' : 'profile.forgotten';
      box.replaceChildren(
        el('h3', { id: 'profile-heading' }, t('profile.heading')),
        el('p', { class: 'profile-hidden', id: 'profile-hidden' }, t(why, { have: d.release.have, need: d.release.need })),
      );
    }
  }

  /** Who has viewed this incident's profile (the service's transparency log). */
  async function loadAccessLog(id) {
    let entries;
    try {
      entries = await call('/v1/operator/incidents/' + id + '/access-log');
    } catch (_) {
      return;
    }
    const box = $('#access-log');
    if (S.selected !== id || !box) return;
    const who = (actor) => {
      const [kind, name] = actor.split(/:(.*)/s);
      if (kind === 'unit') {
        const u = S.units.get(name);
        return t('access.unit', { name: u ? u.name : name });
      }
      return t('access.operator', { name: name || actor });
    };
    box.replaceChildren(
      el('h3', { id: 'access-heading' }, t('access.heading', { n: entries.length })),
      entries.length
        ? el(
            'ol',
            { class: 'access-list' },
            ...entries
              .slice(-8)
              .reverse()
              .map((e) => el('li', {}, el('time', { datetime: new Date(e.at_ms).toISOString() }, SV.clock(e.at_ms)), ' ', who(e.actor), el('span', { class: 'muted' }, ' · #' + e.index))),
          )
        : el('p', { class: 'muted' }, t('access.none')),
    );
  }

  function renderTimeline() {
    const d = S.detail;
    const ol = $('#timeline');
    if (!d || !ol) return;
    ol.replaceChildren(
      ...d.timeline
        .slice()
        .reverse()
        .map((e) =>
          el(
            'li',
            { class: 'tl tl-' + e.kind },
            el('time', { datetime: new Date(e.at_ms).toISOString() }, SV.clock(e.at_ms)),
            el('span', { class: 'tl-kind' }, t('step.' + e.kind) === 'step.' + e.kind ? e.kind : t('step.' + e.kind)),
            el('span', { class: 'tl-detail', lang: 'en' }, e.detail),
          ),
        ),
    );
  }

  // ------------------------------------------------------------ ticks and wiring
  function tick() {
    $('#clock').textContent = SV.clock(Date.now());
    document.querySelectorAll('[data-since]').forEach((e) => {
      e.textContent = SV.since(Number(e.dataset.since));
    });
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('#login-form').addEventListener('submit', login);
    $('#logout').addEventListener('click', logout);
    document.querySelectorAll('[data-filter]').forEach((b) =>
      b.addEventListener('click', () => {
        S.filter = b.dataset.filter;
        document.querySelectorAll('[data-filter]').forEach((x) => x.setAttribute('aria-pressed', String(x === b)));
        renderList();
      }),
    );
    document.addEventListener('sv-lang', () => {
      renderList();
      renderForwards();
      if (S.detail) renderDetail();
      renderMarkers();
      setConn($('#conn').classList.contains('conn-on') ? 'live' : 'reconnecting');
    });
    // Any key or click unlocks sound after a reload (browsers need a gesture).
    document.addEventListener('pointerdown', SV.unlockSound);
    document.addEventListener('keydown', SV.unlockSound);
    setInterval(tick, 1000);
    // Until every new incident has been opened, remind every 20 s.
    setInterval(() => {
      if (S.token && S.fresh.size > 0) SV.alertTone();
    }, 20000);
    tick();
    if (S.token) start();
    else showLogin();
  });
})();
