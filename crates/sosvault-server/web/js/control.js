// The control room: sign-in, the live incident list, the map, the incident view.
(function () {
  'use strict';
  const SV = window.SV;
  const L = window.L;
  const { el, t, $ } = SV;

  const isDuressStop = (inc) => !!inc && Array.isArray(inc.flags) && inc.flags.includes('duress_stop');

  const TOKEN_KEY = 'sosvault.operator';
  // What each role may do is the service's rule (src/access.rs); the page only
  // spares the operator buttons that would be refused.
  const ROLES = ['dispatcher', 'supervisor', 'auditor'];
  const S = {
    token: sessionStorage.getItem(TOKEN_KEY),
    user: sessionStorage.getItem(TOKEN_KEY + '.user') || '',
    role: sessionStorage.getItem(TOKEN_KEY + '.role'),
    conn: null, // 'live', 'reconnecting' or 'static' (no live stream: an auditor)
    claiming: null, // the incident this page is claiming (its own `claimed` event is no news)
    refreshedAt: null, // when the list was last fetched, without a live stream
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
    chat: null, // the selected incident's silent chat: {id, view} (GET .../chat), or {id, forbidden}
    chatError: null, // {id, text}: why the last text to that incident was not sent
    chatSending: null, // the incident a text is on its way to
    unread: new Set(), // ids of incidents whose student wrote since the operator last opened them
  };
  window.SV_CONTROL = S; // for debugging and the browser tests

  // Loads overlap (a live event's refresh, an action's own): an answer older
  // than one already shown is dropped, or a list fetched before an operator's
  // action could land after the one fetched after it and undo what it shows.
  const loads = { list: 0, listShown: 0, detail: 0, detailShown: 0, chat: 0, chatShown: 0 };

  const isAuditor = () => S.role === 'auditor';
  const isSupervisor = () => S.role === 'supervisor';
  /** Whether the role watches the live stream and the map (it carries locations). */
  const watches = () => S.role === 'dispatcher' || S.role === 'supervisor';

  /** Whether this operator may mark, close or reassign `inc`. */
  function mayAct(inc) {
    if (isSupervisor()) return true;
    return S.role === 'dispatcher' && inc.handler === S.user;
  }

  /** Whether this operator may take `inc`: a dispatcher one nobody handles, a supervisor one they do not handle. */
  function mayClaim(inc) {
    if (inc.status !== 'open') return false;
    if (isSupervisor()) return inc.handler !== S.user;
    return S.role === 'dispatcher' && !inc.handler;
  }

  // ------------------------------------------------------------ sign-in
  function showLogin(message) {
    $('#room').hidden = true;
    $('#logout').hidden = true;
    $('#login-view').hidden = false;
    renderWho();
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
      // A role this page does not know gets the least: the auditor's view.
      S.role = ROLES.includes(r.role) ? r.role : 'auditor';
      sessionStorage.setItem(TOKEN_KEY, r.token);
      sessionStorage.setItem(TOKEN_KEY + '.user', username);
      sessionStorage.setItem(TOKEN_KEY + '.role', S.role);
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
    S.role = null;
    S.conn = null;
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(TOKEN_KEY + '.role');
    clearRoom();
    showLogin(message || t('login.expired'));
  }

  /** Forgets what the last session saw: the next operator in this tab may have another role. */
  function clearRoom() {
    S.incidents.clear();
    S.order = [];
    S.units.clear();
    S.fresh.clear();
    S.trails.clear();
    S.known = null;
    S.selected = null;
    S.detail = null;
    S.forwards = null;
    S.chat = null;
    S.chatError = null;
    S.unread.clear();
    S.refreshedAt = null;
    for (const m of S.markers.values()) m.remove();
    S.markers.clear();
    for (const m of S.unitMarkers.values()) m.remove();
    S.unitMarkers.clear();
    if (S.trailLine) S.trailLine.setLatLngs([]);
    renderList();
    renderForwards();
    $('#detail').replaceChildren(
      el(
        'div',
        { class: 'detail-empty' },
        el('h2', { id: 'detail-heading', 'data-i18n': 'detail.none_heading' }, t('detail.none_heading')),
        el('p', { class: 'muted', 'data-i18n': 'detail.none' }, t('detail.none')),
      ),
    );
    delete $('#detail').dataset.incident;
  }

  async function call(path, opts) {
    const token = S.token;
    let r;
    try {
      r = await SV.api(path, Object.assign({ token }, opts || {}));
    } catch (e) {
      if (e.status === 401 && token && token === S.token) expired();
      throw e;
    }
    // Signed out (or in as someone else) meanwhile: the answer is not for this session.
    if (token !== S.token) throw new SV.ApiError(0, 'signed_out');
    return r;
  }

  /** The words for a refused request: the service's own for a refusal (403, 409, 400), else its code. */
  function refusal(e) {
    const own = e.message && e.message !== e.code ? e.message : null;
    if (e.status === 403 && own) return t('error.forbidden', { message: own });
    if ((e.status === 409 || e.status === 400) && own) return t('error.refused', { message: own });
    return t('error.action', { code: e.code });
  }

  const quiet = (e) => e.status === 401 || e.code === 'signed_out';

  /** The user's name and role, beside the clock. */
  function renderWho() {
    const who = $('#who');
    if (!S.token || !S.role) {
      who.replaceChildren();
      return;
    }
    who.replaceChildren(
      el('span', { class: 'who-name' }, S.user),
      ' ',
      el('span', { class: 'role-chip role-' + S.role, id: 'who-role', dataset: { role: S.role } }, t('role.' + S.role)),
    );
  }

  // ------------------------------------------------------------ start
  function start() {
    if (!ROLES.includes(S.role)) {
      // A session from before roles (or a tampered one): its role is unknown here.
      SV.api('/v1/operator/logout', { method: 'POST', token: S.token }).catch(() => {});
      expired(t('login.again'));
      return;
    }
    $('#login-view').hidden = true;
    $('#room').hidden = false;
    $('#logout').hidden = false;
    renderWho();
    const watch = watches();
    // An auditor sees no location: no map, no teams, no live stream.
    $('#room').classList.toggle('room-nomap', !watch);
    $('#map-pane').hidden = !watch;
    $('#static-bar').hidden = watch;
    if (watch) {
      if (!S.map) S.map = SV.makeMap($('#map'));
      setTimeout(() => S.map.invalidateSize(), 0);
    }
    S.known = null;
    if (watch) {
      S.stream = SV.stream('/v1/operator/events', S.token, {
        event: onEvent,
        open: resync,
        state: setConn,
        unauthorized: () => expired(),
        forbidden: startStatic,
      });
    } else startStatic();
    $('#incident-list').focus();
  }

  /** Everything again from the service (after a (re)connection, or the refresh button). */
  function resync() {
    refreshList();
    if (watches()) refreshUnits();
    refreshForwards();
    if (S.selected) loadDetail(S.selected);
  }

  /** No live stream: the list is as of the last refresh. */
  function startStatic() {
    S.stream = null;
    setConn('static');
    resync();
  }

  function setConn(state) {
    const c = $('#conn');
    S.conn = state;
    c.className = 'conn ' + (state === 'live' ? 'conn-on' : state === 'static' ? 'conn-static' : 'conn-off');
    c.dataset.i18n = 'conn.' + state;
    c.textContent = t(c.dataset.i18n);
  }

  function renderStaticNote() {
    const note = $('#static-note');
    note.textContent = S.refreshedAt ? t('control.static_note', { time: SV.clock(S.refreshedAt) }) : t('control.static_note_none');
  }

  // ------------------------------------------------------------ data
  // `run`, once, `ms` after the first of a burst of calls: a burst of
  // events costs one reload.
  function soon(run, ms) {
    let timer = null;
    return () => {
      if (timer) return;
      timer = setTimeout(() => {
        timer = null;
        run();
      }, ms);
    };
  }
  const refreshListSoon = soon(() => refreshList(), 120);
  const refreshUnitsSoon = soon(() => refreshUnits(), 200);

  /** How the incidents of the last 24 hours ended, as the operators who
   *  closed them said. */
  async function refreshOutcomes() {
    let r;
    try {
      r = await call('/v1/operator/outcomes');
    } catch (_) {
      return;
    }
    const parts = OUTCOMES.filter((o) => r.counts[o]).map((o) => t('outcome.count', { n: r.counts[o], what: t('outcome.' + o) }));
    $('#outcome-counts').textContent = parts.length ? t('outcome.counts', { list: parts.join(' · ') }) : '';
  }

  async function refreshList() {
    refreshOutcomes();
    const seq = ++loads.list;
    let list;
    try {
      list = await call('/v1/operator/incidents?limit=200');
    } catch (_) {
      return;
    }
    if (seq < loads.listShown) return;
    loads.listShown = seq;
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
    if (S.conn === 'static') {
      S.refreshedAt = Date.now();
      renderStaticNote();
    }
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
    if (!watches()) return; // positions are locations: not for an auditor
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
            handler: null,
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
          // The phone has asked for the chat: the control room may write now.
          if (ev.detail.step === 'chat_open') loadChat(id);
        }
        refreshListSoon();
        break;
      case 'chat': {
        // Who wrote, never what: the text is fetched.
        if (S.selected === id) loadChat(id);
        if (ev.detail && ev.detail.from === 'student') {
          const inc = S.incidents.get(id);
          if (S.selected !== id) {
            S.unread.add(id);
            renderList();
          }
          SV.announce(t('announce.chat', { category: inc ? t(SV.categoryKey(inc.category)) : '' }), true);
        }
        break;
      }
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
      case 'overdue':
        // No team has acknowledged long after the panic: the alarm.
        refreshListSoon();
        SV.alertTone();
        SV.announce(t('announce.overdue'), true);
        if (S.selected === id) loadDetail(id);
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
      case 'claimed': {
        const inc = S.incidents.get(id);
        const handler = (ev.detail && ev.detail.handler) || null;
        const before = inc ? inc.handler : undefined;
        if (inc) inc.handler = handler;
        renderList();
        if (handler === S.user && before !== S.user && S.claiming !== id) {
          // A supervisor handed it over: say so, as for a new incident (without the tone).
          SV.toast(t('toast.handed_you', { category: inc ? t(SV.categoryKey(inc.category)) : '' }));
        }
        // Who may read the profile and act has changed (unless this page's own claim reloads it).
        if (S.selected === id && S.claiming !== id && S.detail && S.detail.id === id && (S.detail.handler || null) !== handler) loadDetail(id);
        refreshListSoon();
        break;
      }
      case 'unit_revoked':
        refreshUnitsSoon();
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
      .filter((f) => ['duress_stop', 'duress_check_in', 'duress', 'timer', 'sms', 'overdue', 'false_alarm', 'stopped', 'rate_limited', 'repeat_offender'].includes(f))
      // The duress-stop and duress-check-in chips look like the DURESS one (red, blinking).
      .map((f) => el('span', { class: 'chip chip-' + f.replace('_', '-') + (f === 'duress_stop' || f === 'duress_check_in' ? ' chip-duress' : '') }, t('flag.' + f)));
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

  /** Who handles the incident: "Unclaimed", "Handled by you", "Handled by {name}". */
  function handlerLine(inc) {
    const h = inc.handler || null;
    const cls = h ? (h === S.user ? 'handler-me' : 'handler-other') : 'handler-none';
    return el(
      'span',
      { class: 'handler ' + cls, dataset: { handler: h || '' } },
      h ? (h === S.user ? t('handler.you') : t('handler.by', { name: h })) : t('handler.unclaimed'),
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
              S.unread.has(id) ? el('span', { class: 'chip chip-chat' }, t('list.chat_new')) : null,
              el('span', { class: 'since', dataset: { since: inc.created_at_ms } }, SV.since(inc.created_at_ms)),
            ),
            el('span', { class: 'incident-mid' }, teamLine(inc)),
            el('span', { class: 'incident-handler' }, handlerLine(inc)),
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
    // Where the student walked before the panic: sealed to their own vault,
    // readable only since the release, beside the profile.
    if (!S.sealedLine) S.sealedLine = L.polyline([], { className: 'sealed-trail', weight: 4, interactive: false }).addTo(S.map);
    S.sealedLine.setLatLngs(sealedPoints(id));
  }

  /** The opened points of the selected incident's sealed trail, as [lat, lon]. */
  function sealedPoints(id) {
    const d = S.detail;
    if (!id || !d || d.id !== id || !d.sealed_trail) return [];
    return d.sealed_trail.points.map((p) => [p.lat, p.lon]);
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
    S.unread.delete(id);
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
    pts.push(...sealedPoints(inc.id));
    pts.push([inc.location.lat, inc.location.lon]);
    const u = inc.unit && S.units.get(inc.unit.id);
    if (u && u.position) pts.push([u.position.lat, u.position.lon]);
    S.map.fitBounds(pts, { padding: [70, 70], maxZoom: 16 });
  }

  async function loadDetail(id, focus) {
    const seq = ++loads.detail;
    let d;
    try {
      d = await call('/v1/operator/incidents/' + id);
    } catch (e) {
      if (!quiet(e)) SV.toast(t('error.load'), 'error');
      return;
    }
    if (S.selected !== id) return;
    // A newer answer already shown stays; the focus asked for still moves.
    if (seq > loads.detailShown) {
      loads.detailShown = seq;
      showDetail(d);
    }
    if (focus) $('#detail-heading').focus();
  }

  function showDetail(d) {
    const prev = S.detail;
    // A profile a supervisor opened with a reason stays on screen while it is
    // released and the incident open: a refetch, without the reason (which is
    // not kept), would otherwise take it away at the next live event.
    if (
      !d.profile &&
      d.profile_access === 'reason_required' &&
      prev &&
      prev.id === d.id &&
      prev.profile &&
      prev.profile_access === 'shown_with_reason' &&
      d.status === 'open' &&
      d.release.profile === 'released' &&
      !d.flags.includes('stopped')
    ) {
      d.profile = prev.profile;
      d.sealed_trail = prev.sealed_trail;
      d.profile_access = 'shown_with_reason';
    }
    S.detail = d;
    S.incidents.set(d.id, Object.assign({}, S.incidents.get(d.id) || {}, summaryOf(d)));
    renderDetail();
    renderTrail();
    loadAccessLog(d.id);
    loadChat(d.id);
  }

  function summaryOf(d) {
    const { id, category, status, created_at_ms, location, unit, release, flags, handler } = d;
    return { id, category, status, created_at_ms, location, unit, release, flags, handler: handler || null };
  }

  /** What the operator was typing in this incident's view, and where the focus was. */
  function captureTyping(id) {
    const pane = $('#detail');
    if (pane.dataset.incident !== id) return null;
    const a = document.activeElement;
    return {
      reason: $('#reason-input') ? $('#reason-input').value : '',
      handover: $('#handover-name') ? $('#handover-name').value : '',
      handoverOpen: !!($('#handover') && $('#handover').open),
      chat: $('#chat-input') ? $('#chat-input').value : '',
      focus: a && a !== pane && pane.contains(a) && a.id ? a.id : null,
    };
  }

  /** Puts it back after the view of the same incident was drawn again. */
  function restoreTyping(k) {
    if (!k) return;
    if (k.reason && $('#reason-input')) $('#reason-input').value = k.reason;
    if (k.handover && $('#handover-name')) $('#handover-name').value = k.handover;
    if (k.handoverOpen && $('#handover')) $('#handover').open = true;
    if (k.chat && $('#chat-input')) {
      $('#chat-input').value = k.chat;
      chatCount();
    }
    const f = k.focus && document.getElementById(k.focus);
    if (f && !f.disabled) f.focus();
  }

  function renderDetail() {
    const d = S.detail;
    const pane = $('#detail');
    const typing = captureTyping(d.id);
    pane.dataset.incident = d.id;
    pane.replaceChildren(
      el('div', { class: 'detail-head', id: 'detail-head' }),
      el('dl', { class: 'facts', id: 'facts' }),
      el('div', { class: 'claim-box', id: 'claim' }),
      el('div', { class: 'actions', id: 'actions' }),
      el('p', { class: 'actions-note', id: 'actions-note', hidden: true }),
      ...chatSection(d.id),
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
    restoreTyping(typing);
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
    renderClaim();
    renderActions();
    renderChat();
  }

  function renderFacts() {
    const d = S.detail;
    if (!d || !$('#facts')) return;
    const inc = S.incidents.get(d.id) || d;
    const loc = inc.location || d.location;
    let dist = null;
    const hidden = !watches() ? t('detail.not_for_role') : null;
    if (inc.unit && loc) {
      const u = S.units.get(inc.unit.id);
      if (u && u.position) dist = SV.haversine(u.position, loc);
    }
    const row = (k, v, attrs) => [el('dt', {}, t(k)), el('dd', attrs || {}, v)];
    $('#facts').replaceChildren(
      ...row('detail.since', SV.since(inc.created_at_ms), { dataset: { since: inc.created_at_ms } }),
      ...row('detail.started', SV.clock(inc.created_at_ms)),
      ...row('detail.team', teamLine(inc), { id: 'detail-team' }),
      ...row('detail.team_distance', hidden || (dist === null ? t('unknown') : SV.distance(dist))),
      ...row('detail.release', releaseLine(inc), { id: 'detail-release' }),
      ...row('detail.location', hidden || SV.coords(loc), { id: 'detail-location' }),
    );
  }

  /** Who handles the incident, and (by role) "Take this incident" and "Hand over to…". */
  function renderClaim() {
    const d = S.detail;
    const box = $('#claim');
    if (!d || !box) return;
    const inc = S.incidents.get(d.id) || d;
    const h = inc.handler || null;
    // Drawn again only when something it shows changed: a list refresh must not wipe a name being typed.
    const key = [d.id, h, inc.status, S.role, SV.lang].join('|');
    if (box.dataset.key === key) return;
    const typing = captureTyping(d.id);
    box.dataset.key = key;
    const parts = [
      el(
        'p',
        { class: 'claim-status', id: 'claim-status', tabindex: '-1', dataset: { handler: h || '' } },
        h ? (h === S.user ? t('claim.you') : t('claim.by', { name: h })) : t('claim.nobody'),
      ),
    ];
    if (mayClaim(inc)) {
      parts.push(el('button', { type: 'button', class: 'btn btn-primary', id: 'act-claim', onclick: () => claim() }, t('claim.take')));
    }
    if (isSupervisor() && inc.status === 'open') {
      const input = el('input', { id: 'handover-name', name: 'to', autocomplete: 'off', spellcheck: 'false', maxlength: '64', 'aria-describedby': 'handover-error' });
      parts.push(
        el(
          'details',
          { class: 'handover', id: 'handover' },
          el('summary', {}, t('claim.handover')),
          el(
            'form',
            {
              class: 'handover-form',
              novalidate: true,
              onsubmit: (e) => {
                e.preventDefault();
                claim(input.value.trim());
              },
            },
            el('label', { for: 'handover-name' }, t('claim.handover_label')),
            el('div', { class: 'handover-row' }, input, el('button', { type: 'submit', class: 'btn btn-secondary', id: 'act-handover' }, t('claim.handover_submit'))),
            el('p', { class: 'form-error', id: 'handover-error', role: 'alert' }),
          ),
        ),
      );
    }
    box.replaceChildren(...parts);
    restoreTyping(typing);
  }

  /** Takes the selected incident, or (a supervisor, `to` given) hands it to `to`. */
  async function claim(to) {
    const id = S.selected;
    if (!id) return;
    if (to !== undefined && !to) {
      $('#handover-error').textContent = t('claim.handover_empty');
      $('#handover-name').focus();
      return;
    }
    // Until the view is reloaded below, the live `claimed` event of this claim is no news
    // (and a second reload would log a second profile view).
    S.claiming = id;
    try {
      try {
        const r = await call('/v1/operator/incidents/' + id + '/claim' + (to ? '?to=' + encodeURIComponent(to) : ''), { method: 'POST' });
        const inc = S.incidents.get(id);
        if (inc) inc.handler = r.handler;
        SV.toast(r.handler === S.user ? t('done.claim') : t('done.handover', { name: r.handler }));
      } catch (e) {
        if (quiet(e)) return;
        if (to && e.status === 400 && $('#handover-error')) {
          // No such dispatcher or supervisor: said beside the name, which stays to be corrected.
          $('#handover-error').textContent = e.code === 'bad_operator' ? t('claim.handover_unknown', { name: to }) : refusal(e);
          $('#handover-name').focus();
          return;
        }
        // Someone else took it meanwhile (409), or the role may not (403): the service's words.
        SV.toast(refusal(e), 'error');
      }
      if (S.selected !== id) return;
      await loadDetail(id);
      refreshList();
      if (S.selected === id && $('#claim-status')) $('#claim-status').focus();
    } finally {
      S.claiming = null;
    }
  }

  function renderActions() {
    const d = S.detail;
    const box = $('#actions');
    if (!d || !box) return;
    const inc = S.incidents.get(d.id) || d;
    const note = $('#actions-note');
    if (isAuditor()) {
      // An auditor never acts: no buttons at all.
      box.hidden = true;
      box.replaceChildren();
      note.hidden = true;
      return;
    }
    const open = inc.status === 'open';
    const marked = inc.flags.includes('false_alarm');
    const allowed = mayAct(inc);
    const why = allowed
      ? null
      : inc.handler
        ? t('action.not_yours', { name: inc.handler })
        : open
          ? t('action.claim_first')
          : t('action.only_supervisor');
    const focused = document.activeElement && box.contains(document.activeElement) ? document.activeElement.id : null;
    const deny = why ? { title: why, 'aria-describedby': 'actions-note' } : {};
    box.replaceChildren(
      el(
        'button',
        Object.assign(
          {
            type: 'button',
            class: 'btn btn-secondary',
            id: 'act-reassign',
            // Before the acknowledgement the service reassigns by itself on timeout.
            disabled: !allowed || !(open && inc.unit && inc.unit.acknowledged),
            title: t('action.reassign_hint'),
            onclick: () => act('reassign'),
          },
          deny,
        ),
        t('action.reassign'),
      ),
      assignControl(inc, open && allowed, deny),
      el('button', Object.assign({ type: 'button', class: 'btn btn-warn', id: 'act-false-alarm', disabled: !allowed || marked, onclick: () => act('false-alarm') }, deny), marked ? t('action.false_alarm_done') : t('action.false_alarm')),
      el('button', Object.assign({ type: 'button', class: 'btn btn-danger', id: 'act-close', disabled: !allowed || !open, onclick: () => act('close') }, deny), t('action.close')),
    );
    box.hidden = false;
    // Disabled buttons take no focus and show no tooltip to a keyboard: the reason is written out too.
    note.textContent = why || '';
    note.hidden = !why;
    const f = focused && document.getElementById(focused);
    if (f && !f.disabled) f.focus();
  }

  /** A picker of free teams (any kind, nearest first) and a button that sends the chosen one by hand. */
  function assignControl(inc, enabled, deny) {
    const here = inc.location;
    const dist = (u) => (here && u.position ? SV.haversine(here, u.position) : Infinity);
    const free = [...S.units.values()].filter((u) => !u.incident).sort((a, b) => dist(a) - dist(b));
    const select = el(
      'select',
      { id: 'assign-unit', 'aria-label': t('action.assign_pick'), disabled: !enabled || free.length === 0 },
      free.length
        ? free.map((u) => {
            const d = dist(u);
            const away = Number.isFinite(d) ? ', ' + SV.distance(d) : '';
            const off = u.connected ? '' : ', ' + t('unit.offline');
            return el('option', { value: u.id }, u.name + ' (' + t('kind.' + u.kind) + away + off + ')');
          })
        : [el('option', { value: '' }, t('action.assign_none'))],
    );
    const button = el(
      'button',
      Object.assign(
        { type: 'button', class: 'btn btn-secondary', id: 'act-assign', disabled: !enabled || free.length === 0, title: t('action.assign_hint'), onclick: () => assign(select.value) },
        deny,
      ),
      t('action.assign'),
    );
    return el('span', { class: 'assign-by-hand' }, select, button);
  }

  async function assign(unit) {
    const id = S.selected;
    if (!id || !unit) return;
    try {
      await call('/v1/operator/incidents/' + id + '/assign', { method: 'POST', body: { unit } });
      SV.toast(t('done.assign'));
    } catch (e) {
      if (quiet(e)) return;
      SV.toast(refusal(e), 'error');
    }
    await loadDetail(id);
    refreshList();
    refreshUnitsSoon();
  }

  // The question the confirm dialog is asking: its promise's resolve, or null.
  //
  // The browser closes a dialog at once but delivers its `close` event later
  // (Chromium: at the next animation frame). A keyboard user who cancels with
  // Escape and presses Enter on an action again at once opens the next
  // question before the last one's `close` event arrives: that late event
  // must not answer the new question (it would answer "no" while the dialog
  // stays open, and the "OK" that follows would do nothing). So one listener
  // answers the question pending, and only once the dialog is closed; a
  // question still pending when the next is asked was closed already, and
  // takes the answer it was closed with.
  let asking = null;
  function answer() {
    const resolve = asking;
    asking = null;
    if (resolve) resolve($('#confirm').returnValue === 'ok');
  }

  /** Asks `title`/`text`; `extra`, if given, is a labelled `<select>` the
   *  operator must choose from first (OK waits for a choice). */
  function confirmDialog(title, text, okLabel, extra) {
    const dlg = $('#confirm');
    answer();
    $('#confirm-title').textContent = title;
    $('#confirm-text').textContent = text;
    $('#confirm-ok').textContent = okLabel;
    $('#confirm-extra').replaceChildren(...(extra ? [extra] : []));
    const pick = extra && extra.querySelector('select');
    $('#confirm-ok').disabled = !!pick && !pick.value;
    if (pick) pick.addEventListener('change', () => { $('#confirm-ok').disabled = !pick.value; });
    // Unanswered until a button closes it (`close()` without a value keeps the last question's).
    dlg.returnValue = '';
    dlg.showModal();
    (pick || $('#confirm-ok')).focus();
    return new Promise((resolve) => {
      asking = resolve;
    });
  }

  /** How an incident ended: the operator closing it chooses (no default). */
  const OUTCOMES = ['helped_on_spot', 'taken_to_hospital', 'false_alarm', 'not_found', 'other'];
  function outcomePicker() {
    const sel = el('select', { id: 'close-outcome' },
      el('option', { value: '' }, t('outcome.choose')),
      ...OUTCOMES.map((o) => el('option', { value: o }, t('outcome.' + o))));
    return el('div', { class: 'field' }, el('label', { for: 'close-outcome' }, t('outcome.label')), sel);
  }

  async function act(action) {
    const id = S.selected;
    if (!id) return;
    const extra = action === 'close' ? outcomePicker() : null;
    const ok = await confirmDialog(t('confirm.' + action + '.title'), t('confirm.' + action + '.text'), t('action.' + action.replace('-', '_')), extra);
    if (!ok) {
      const b = $('#act-' + action);
      if (b) b.focus();
      return;
    }
    const body = extra ? { outcome: extra.querySelector('select').value } : {};
    try {
      await call('/v1/operator/incidents/' + id + '/' + action, { method: 'POST', body });
      SV.toast(t('done.' + action));
    } catch (e) {
      if (quiet(e)) return;
      // A 403 says why in the service's words (say, another operator took the incident meanwhile).
      SV.toast(refusal(e), 'error');
    }
    await loadDetail(id);
    refreshList();
    const b = $('#act-' + action);
    if (b && !b.disabled) b.focus();
    else if ($('#detail-heading')) $('#detail-heading').focus();
  }

  // ------------------------------------------------------------ silent chat
  // Texts with the student of the incident, end to end: the service opens
  // them for the page. Everything in a text is shown as text, never markup.

  /** The chat's frame for incident `id` (in a list: none for an auditor), drawn with the view, filled by `renderChat`. */
  function chatSection(id) {
    if (isAuditor()) return [];
    const input = el('textarea', {
      id: 'chat-input',
      name: 'text',
      rows: 3,
      dir: 'auto',
      disabled: true,
      'aria-describedby': 'chat-note chat-help chat-count chat-error',
      oninput: () => {
        chatCount();
        if (S.chatError && S.chatError.id === id) setChatError(null);
      },
      onkeydown: (e) => {
        if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
          e.preventDefault();
          sendChat(id);
        }
      },
    });
    const section = el(
      'section',
      { class: 'chat-box', id: 'chat', 'aria-labelledby': 'chat-heading', hidden: true },
      el('h3', { id: 'chat-heading' }, t('chat.heading')),
      el('p', { class: 'small muted chat-hint' }, t('chat.hint')),
      // Scrolls when long: it takes the focus, so a keyboard scrolls it too.
      el('ol', { class: 'chat-log', id: 'chat-log', tabindex: '0', 'aria-labelledby': 'chat-heading' }),
      el('p', { class: 'muted chat-empty', id: 'chat-empty', hidden: true }, t('chat.none')),
      el('p', { class: 'chat-note', id: 'chat-note', tabindex: '-1', hidden: true }),
      el(
        'form',
        {
          class: 'chat-form',
          id: 'chat-form',
          novalidate: true,
          dataset: { incident: id },
          onsubmit: (e) => {
            e.preventDefault();
            sendChat(id);
          },
        },
        el('label', { for: 'chat-input' }, t('chat.label')),
        input,
        el(
          'div',
          { class: 'chat-form-foot' },
          el('p', { class: 'small muted', id: 'chat-help' }, t('chat.help')),
          el('p', { class: 'small muted chat-count', id: 'chat-count' }, t('chat.count', { n: 0 })),
        ),
        el('p', { class: 'form-error', id: 'chat-error', role: 'alert' }),
        el('button', { type: 'submit', class: 'btn btn-primary', id: 'chat-send', disabled: true }, t('chat.send')),
      ),
    );
    return [section];
  }

  /** The incident's chat, again from the service. */
  async function loadChat(id) {
    if (isAuditor()) return;
    const seq = ++loads.chat;
    let view;
    try {
      view = await call('/v1/operator/incidents/' + id + '/chat');
    } catch (e) {
      if (quiet(e) || S.selected !== id) return;
      // A role that may not read it: no chat at all.
      if (e.status === 403 && e.code === 'forbidden_for_role') {
        S.chat = { id, forbidden: true };
        renderChat();
      }
      return;
    }
    if (S.selected !== id || seq < loads.chatShown) return;
    loads.chatShown = seq;
    S.chat = { id, view };
    renderChat();
  }

  /** Why this operator cannot write to the student of `inc` now (`{state, text}`), or null. */
  function chatBlocked(inc, view) {
    if (inc.status !== 'open') return { state: 'closed', text: t('chat.closed') };
    if (!view.open) return { state: 'not_open', text: t('chat.not_open') };
    if (!view.student_reads) return { state: 'silenced', text: t('chat.silenced') };
    if (!mayAct(inc)) {
      return inc.handler
        ? { state: 'not_yours', text: t('chat.not_yours', { name: inc.handler }) }
        : { state: 'claim_first', text: t('chat.claim_first') };
    }
    return null;
  }

  const chatLine = SV.chatLine;

  /** Fills the chat's frame from `S.chat`: the texts, and whether (and why not) this operator may write. */
  function renderChat() {
    const d = S.detail;
    const box = $('#chat');
    if (!d || !box) return;
    const chat = S.chat && S.chat.id === d.id ? S.chat : null;
    if (!chat || chat.forbidden) {
      // Not loaded yet (the frame stays hidden until it is), or not for this role.
      box.hidden = true;
      return;
    }
    box.hidden = false;
    const view = chat.view;
    const inc = S.incidents.get(d.id) || d;
    const log = $('#chat-log');
    const drawn = JSON.stringify([view.texts, SV.lang]);
    if (log.dataset.drawn !== drawn) {
      const more = view.texts.length > Number(log.dataset.count || 0);
      log.replaceChildren(...view.texts.map(chatLine));
      log.dataset.drawn = drawn;
      log.dataset.count = view.texts.length;
      // The newest text in view.
      if (more) log.scrollTop = log.scrollHeight;
    }
    log.hidden = view.texts.length === 0;
    $('#chat-empty').hidden = !(view.open && inc.status === 'open' && view.texts.length === 0);
    const blocked = chatBlocked(inc, view);
    const note = $('#chat-note');
    note.textContent = blocked ? blocked.text : '';
    note.dataset.state = blocked ? blocked.state : '';
    note.hidden = !blocked;
    $('#chat-form').hidden = !!blocked && blocked.state === 'closed';
    const input = $('#chat-input');
    const focused = document.activeElement === input;
    input.disabled = !!blocked;
    $('#chat-send').disabled = !!blocked || S.chatSending === d.id;
    // Written into a chat that has just closed to this operator: the focus goes to the reason.
    if (focused && input.disabled) note.focus();
    renderChatError();
  }

  function renderChatError() {
    const box = $('#chat-error');
    if (!box || !S.detail) return;
    box.textContent = S.chatError && S.chatError.id === S.detail.id ? S.chatError.text : '';
  }

  function setChatError(text) {
    S.chatError = text ? { id: S.detail && S.detail.id, text } : null;
    renderChatError();
  }

  /** The size of the text being written, in the bytes the service counts. */
  function chatCount() {
    const input = $('#chat-input');
    const count = $('#chat-count');
    if (!input || !count) return;
    const n = new TextEncoder().encode(input.value).length;
    count.textContent = t('chat.count', { n });
    count.classList.toggle('chat-count-over', n > 500);
  }

  /** What is wrong with a text, as the service checks it (1 to 500 bytes, not blank, no control characters but line breaks and tabs). */
  function chatProblem(text) {
    if (!text.trim()) return 'chat.empty_text';
    if (new TextEncoder().encode(text).length > 500) return 'chat.too_long';
    if (/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/.test(text)) return 'chat.control_chars';
    return null;
  }

  /** Sends the text being written to the student of incident `id` (the one whose view holds the form). */
  async function sendChat(id) {
    const input = $('#chat-input');
    const form = $('#chat-form');
    // The view on screen must still be this incident's: a text never goes to another student.
    if (!input || !form || form.dataset.incident !== id || S.selected !== id || input.disabled || S.chatSending === id) return;
    const text = input.value;
    const problem = chatProblem(text);
    if (problem) {
      setChatError(t(problem));
      input.focus();
      return;
    }
    setChatError(null);
    S.chatSending = id;
    $('#chat-send').disabled = true;
    let refused = false;
    try {
      await call('/v1/operator/incidents/' + id + '/chat', { method: 'POST', body: { text } });
      const now = $('#chat-input');
      if (now && $('#chat-form').dataset.incident === id && now.value === text) {
        now.value = '';
        chatCount();
      }
      SV.announce(t('chat.sent'));
    } catch (e) {
      if (quiet(e)) return;
      refused = true;
      // The service's own words (not open yet, silenced, closed, not this operator's).
      if (S.selected === id) setChatError(refusal(e));
    } finally {
      if (S.chatSending === id) S.chatSending = null;
    }
    if (S.selected !== id) return;
    // A refusal means the view was stale: all of it again.
    if (refused) await loadDetail(id);
    await loadChat(id);
    const again = $('#chat-input');
    if (again && !again.disabled) again.focus();
  }

  function renderProfile(d) {
    const box = $('#profile');
    const p = d.profile;
    const state = d.release.profile;
    const access = d.profile_access;
    if (p) {
      const photo = SV.safePhoto(p.photo);
      const field = (k, v) => (v ? [el('dt', {}, t(k)), el('dd', {}, v)] : []);
      const logged = access === 'shown_with_reason' ? 'profile.logged_reason_text' : 'profile.logged_text';
      box.className = 'profile-box profile-open';
      box.replaceChildren(
        el('h3', { id: 'profile-heading', tabindex: '-1' }, t('profile.heading')),
        el('p', { class: 'logged-banner', role: 'note', dataset: { access } }, el('strong', {}, t('profile.logged_title')), ' ', t(logged, { user: S.user })),
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
        sealedTrailNote(d.sealed_trail),
      );
    } else {
      box.className = 'profile-box profile-closed';
      const heading = el('h3', { id: 'profile-heading', tabindex: '-1' }, t('profile.heading'));
      const hidden = (text) => el('p', { class: 'profile-hidden', id: 'profile-hidden', dataset: { access } }, text);
      // Readable now by someone: whether this operator may is the service's answer.
      const readable = state === 'released' && d.status === 'open' && !d.flags.includes('stopped');
      if (access === 'not_for_role') {
        box.replaceChildren(heading, hidden(t('profile.not_for_role')));
      } else if (readable && access === 'reason_required') {
        box.replaceChildren(heading, ...reasonForm(d.id));
      } else if (readable && access === 'not_handler') {
        const other = d.handler && d.handler !== S.user;
        box.replaceChildren(heading, hidden(other ? t('profile.not_handler_other', { name: d.handler }) : t('profile.not_handler')));
      } else {
        const why = isDuressStop(d) ? 'profile.duress_stop' : d.flags.includes('stopped') ? 'profile.stopped' : state === 'sealed' ? 'profile.sealed' : state === 'expired' ? 'profile.expired' : 'profile.forgotten';
        const text = [t(why, { have: d.release.have, need: d.release.need })];
        if (state === 'sealed' && access === 'not_handler' && !d.handler) text.push(t('profile.sealed_claim'));
        box.replaceChildren(heading, hidden(text.join(' ')));
      }
    }
  }

  /** What the released vault opened of the sealed trail: how many points, drawn on the map. */
  function sealedTrailNote(trail) {
    if (!trail) return '';
    const n = trail.points.length;
    const text = [n ? t('profile.sealed_trail', { count: n, minutes: trailMinutes(trail.points) }) : t('profile.sealed_trail_none')];
    if (trail.unopened) text.push(t('profile.sealed_trail_unopened', { count: trail.unopened }));
    return el('p', { class: 'sealed-trail-note', id: 'sealed-trail-note', dataset: { points: n } }, text.join(' '));
  }

  /** The minutes the trail's fixes span (at least 1). */
  function trailMinutes(points) {
    const times = points.map((p) => p.fix_time);
    return Math.max(1, Math.round((Math.max(...times) - Math.min(...times)) / 60));
  }

  /** A supervisor's reason to open the profile of an incident they do not handle. */
  function reasonForm(id) {
    const input = el('input', {
      id: 'reason-input',
      name: 'reason',
      autocomplete: 'off',
      required: true,
      'aria-describedby': 'reason-help reason-error',
    });
    return [
      el('p', { class: 'profile-hidden', id: 'profile-hidden', dataset: { access: 'reason_required' } }, t('profile.reason_required')),
      el(
        'form',
        {
          class: 'reason-form',
          id: 'reason-form',
          novalidate: true,
          onsubmit: (e) => {
            e.preventDefault();
            readWithReason(id);
          },
        },
        el('label', { for: 'reason-input' }, t('profile.reason_label')),
        input,
        el('p', { class: 'small muted', id: 'reason-help' }, t('profile.reason_help')),
        el('p', { class: 'form-error', id: 'reason-error', role: 'alert' }),
        el('button', { type: 'submit', class: 'btn btn-warn', id: 'reason-submit' }, t('profile.reason_submit')),
      ),
    ];
  }

  /** What is wrong with a reason, as the service checks it (8 to 200 bytes, trimmed, no control characters). */
  function reasonProblem(reason) {
    const bytes = new TextEncoder().encode(reason).length;
    if (bytes < 8) return 'profile.reason_short';
    if (bytes > 200) return 'profile.reason_long';
    if (/[\u0000-\u001f\u007f-\u009f]/.test(reason)) return 'profile.reason_control';
    return null;
  }

  /** Fetches the incident again with the reason: the view is logged with it. The reason goes with this one request only. */
  async function readWithReason(id) {
    const input = $('#reason-input');
    const error = $('#reason-error');
    if (!input || S.selected !== id) return;
    const problem = reasonProblem(input.value.trim());
    if (problem) {
      error.textContent = t(problem);
      input.setAttribute('aria-invalid', 'true');
      input.focus();
      return;
    }
    error.textContent = '';
    input.removeAttribute('aria-invalid');
    $('#reason-submit').disabled = true;
    let d;
    try {
      d = await call('/v1/operator/incidents/' + id + '?reason=' + encodeURIComponent(input.value.trim()));
    } catch (e) {
      if (quiet(e) || S.selected !== id || !$('#reason-form')) return;
      $('#reason-submit').disabled = false;
      $('#reason-error').textContent = e.status === 400 ? refusal(e) : t('error.load');
      $('#reason-input').focus();
      return;
    }
    if (S.selected !== id) return;
    showDetail(d);
    const target = d.profile ? $('#profile-heading') : $('#reason-input') || $('#profile-heading');
    if (target) target.focus();
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
      if (actor === 'control-room:sms') return t('access.guardian_sms');
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
              .map((e) =>
                el(
                  'li',
                  {},
                  el('time', { datetime: new Date(e.at_ms).toISOString() }, SV.clock(e.at_ms)),
                  ' ',
                  who(e.actor),
                  el('span', { class: 'muted' }, ' · #' + e.index),
                  e.reason ? el('span', { class: 'access-reason' }, ' · ', t('access.reason'), ' ', el('q', {}, e.reason)) : null,
                ),
              ),
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
    $('#refresh').addEventListener('click', resync);
    // A `close` event that arrives when the dialog is open again is the last question's, answered already.
    $('#confirm').addEventListener('close', () => {
      if (!$('#confirm').open) answer();
    });
    document.addEventListener('sv-lang', () => {
      renderWho();
      renderList();
      renderForwards();
      if (S.detail) {
        renderDetail();
        loadAccessLog(S.detail.id);
      }
      renderMarkers();
      if (S.conn) setConn(S.conn);
      if (S.conn === 'static') renderStaticNote();
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
