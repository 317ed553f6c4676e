// The team screen: a phone in a vehicle. One assignment at a time, a big
// acknowledge button, the student's live location and distance, and the
// profile fields a team needs once the trustees have released them.
(function () {
  'use strict';
  const SV = window.SV;
  const L = window.L;
  const { el, t, $ } = SV;

  const TOKEN_KEY = 'sosvault.unit';
  const S = {
    token: null,
    stream: null,
    job: null, // {id, category, location, distance_m, acked, created_at_ms, flags, profile, ended, updated_ms}
    me: null, // own position from the device, if shared
    map: null,
    studentMarker: null,
    meMarker: null,
    trail: null,
    watch: null,
    chat: null, // the job's silent chat: {id, view} (GET /v1/unit/incidents/{id}/chat)
  };
  window.SV_TEAM = S;

  // A token in the URL fragment (never sent to a server) is moved to this tab's storage.
  (function takeTokenFromFragment() {
    const m = /(?:^#|&)token=([0-9a-fA-F]{16,128})/.exec(location.hash);
    if (m) {
      sessionStorage.setItem(TOKEN_KEY, m[1]);
      history.replaceState(null, '', location.pathname + location.search);
    }
    S.token = sessionStorage.getItem(TOKEN_KEY);
  })();

  function showLogin(msg) {
    $('#team-main').hidden = true;
    $('#team-login').hidden = false;
    $('#token-error').textContent = msg || '';
    $('#token-input').focus();
  }

  function start() {
    $('#team-login').hidden = true;
    $('#team-main').hidden = false;
    S.stream = SV.stream('/v1/unit/events', S.token, {
      event: onEvent,
      state: setConn,
      open: () => {
        if (S.job && !S.job.ended) loadJob(S.job.id);
      },
      unauthorized: () => {
        sessionStorage.removeItem(TOKEN_KEY);
        S.token = null;
        showLogin(t('team.bad_token'));
      },
    });
    render();
  }

  function setConn(state) {
    const c = $('#conn');
    c.className = 'conn ' + (state === 'live' ? 'conn-on' : 'conn-off');
    c.dataset.i18n = state === 'live' ? 'conn.live' : 'conn.reconnecting';
    c.textContent = t(c.dataset.i18n);
  }

  async function call(path, opts) {
    return SV.api(path, Object.assign({ token: S.token }, opts || {}));
  }

  // ------------------------------------------------------------ events
  function onEvent(ev) {
    const job = S.job;
    const mine = job && ev.incident === job.id;
    switch (ev.kind) {
      case 'assigned': {
        const d = ev.detail || {};
        if (d.name) $('#team-name').textContent = d.name;
        if (!job || job.id !== ev.incident || job.ended) {
          S.job = {
            id: ev.incident,
            category: d.category,
            location: d.location || null,
            distance_m: d.distance_m,
            acked: false,
            arrived: false,
            created_at_ms: ev.at_ms,
            flags: d.duress ? ['duress'] : [],
            profile: null,
            ended: null,
            updated_ms: d.location ? ev.at_ms : null,
            trail: d.location ? [[d.location.lat, d.location.lon]] : [],
          };
          SV.unlockSound();
          SV.alertTone();
          SV.announce(t('team.announce_new', { category: t(SV.categoryKey(d.category)), distance: SV.distance(d.distance_m) }), true);
          if (navigator.vibrate) navigator.vibrate([200, 100, 200]);
        }
        loadJob(ev.incident);
        render();
        break;
      }
      case 'acknowledged':
        if (mine) {
          job.acked = true;
          render();
        }
        break;
      case 'location':
        if (mine) {
          job.location = { lat: ev.detail.lat, lon: ev.detail.lon };
          if (ev.detail.distance_m !== null && ev.detail.distance_m !== undefined) job.distance_m = ev.detail.distance_m;
          job.updated_ms = ev.at_ms;
          job.trail.push([job.location.lat, job.location.lon]);
          render();
        }
        break;
      case 'profile_available':
        if (mine) loadJob(job.id);
        break;
      case 'profile_forgotten':
        if (mine) {
          job.profile = null;
          job.profileGone = ev.detail && ev.detail.reason === 'stop' ? 'stop' : 'expired';
          render();
          SV.announce(t(job.profileGone === 'stop' ? 'team.profile_stopped' : 'team.profile_expired'));
        }
        break;
      case 'chat':
        // Who wrote, never what: the texts are fetched.
        if (mine && !job.ended) {
          loadChat(job.id);
          if (ev.detail && ev.detail.from === 'student') SV.announce(t('team.announce_chat'));
        }
        break;
      case 'escalated':
        if (mine) {
          // After a duress cancel nothing more reaches the phone: the chat says so.
          loadChat(job.id);
          if (!job.flags.includes('duress')) job.flags.push('duress');
          SV.alertTone();
          SV.announce(t('team.escalated'), true);
          render();
        }
        break;
      case 'assignment_withdrawn':
        if (mine) {
          job.ended = 'withdrawn';
          job.profile = null;
          render();
          SV.announce(t('team.ended_withdrawn'), true);
        }
        break;
      case 'closed':
      case 'cancelled':
        if (mine) {
          job.ended = ev.kind;
          job.profile = null;
          render();
          SV.announce(t('team.ended_' + ev.kind), true);
        }
        break;
      default:
        break;
    }
  }

  async function loadJob(id) {
    let d;
    try {
      d = await call('/v1/unit/incidents/' + id);
    } catch (e) {
      if (e.status === 404 && S.job && S.job.id === id && !S.job.ended) {
        S.job.ended = 'withdrawn';
        render();
      }
      return;
    }
    const job = S.job;
    if (!job || job.id !== id) return;
    job.category = d.category;
    job.created_at_ms = d.created_at_ms;
    job.flags = d.flags;
    if (d.location) job.location = d.location;
    if (d.trail && d.trail.length) job.trail = d.trail.map((p) => [p.lat, p.lon]);
    if (d.unit && d.unit.acknowledged) job.acked = true;
    if (d.unit && d.unit.name) $('#team-name').textContent = d.unit.name;
    job.release = d.release;
    job.profile = d.profile || null;
    // Where the student walked before the panic, opened with the released
    // key: shown exactly while the profile is.
    job.sealed = d.sealed_trail ? d.sealed_trail.points.map((p) => [p.lat, p.lon]) : [];
    if (d.flags.includes('stopped')) job.profileGone = 'stop';
    if (d.status !== 'open' && !job.ended) job.ended = d.status;
    render();
    if (!job.ended) loadChat(id);
  }

  // Loads overlap (an event's, a reconnection's): an answer older than one shown is dropped.
  const chatLoads = { asked: 0, shown: 0 };

  /** The job's silent chat, read only: the control room writes, the team reads. */
  async function loadChat(id) {
    const seq = ++chatLoads.asked;
    let view;
    try {
      view = await call('/v1/unit/incidents/' + id + '/chat');
    } catch (_) {
      // Not this team's any more, or unreachable: the next event or reconnection asks again.
      return;
    }
    if (!S.job || S.job.id !== id || seq < chatLoads.shown) return;
    chatLoads.shown = seq;
    S.chat = { id, view };
    renderChat(S.job);
  }

  // "We have arrived" takes the acknowledge button's place: it answers only
  // after ARRIVE_GUARD_MS, so a double tap (or a touch screen's late click)
  // on "Acknowledge" never tells the student the team is there.
  const ARRIVE_GUARD_MS = 1500;

  /** The team's `action` (`ack`, `arrived`) on its job, from `button`; `done`
   *  marks the job when the service took it. */
  async function teamAction(action, button, done, said) {
    const job = S.job;
    if (!job) return;
    const b = $(button);
    b.disabled = true;
    try {
      await call('/v1/unit/incidents/' + job.id + '/' + action, { method: 'POST' });
      done(job);
      SV.announce(t(said));
    } catch (e) {
      b.disabled = false;
      SV.toast(t('error.action', { code: e.code }), 'error');
    }
    render();
  }

  const acknowledge = () => teamAction('ack', '#ack', (job) => {
    job.acked = true;
    job.ackedAt = Date.now();
    setTimeout(render, ARRIVE_GUARD_MS);
  }, 'team.acked');

  const arrive = () => teamAction('arrived', '#arrived', (job) => {
    job.acked = true;
    job.arrived = true;
  }, 'team.arrived');

  // ------------------------------------------------------------ render
  function distanceNow(job) {
    if (S.me && job.location) return SV.haversine(S.me, job.location);
    return job.distance_m;
  }

  function render() {
    const job = S.job;
    $('#idle').hidden = !!job;
    $('#job').hidden = !job;
    if (!job) return;
    const heading = $('#job-heading');
    heading.textContent = t(SV.categoryKey(job.category));
    heading.className = 'job-cat cat-' + job.category;
    $('#job-flags').replaceChildren(...job.flags.filter((f) => f !== 'rate_limited').map((f) => el('span', { class: 'chip chip-' + f.replace('_', '-') }, t('flag.' + f))));
    $('#job-distance').textContent = SV.distance(distanceNow(job));
    $('#job-since').dataset.since = job.created_at_ms;
    $('#job-since').textContent = SV.since(job.created_at_ms);
    $('#job-location').textContent = SV.coords(job.location);
    $('#job-location').dataset.lat = job.location ? job.location.lat.toFixed(6) : '';
    $('#job-location').dataset.lon = job.location ? job.location.lon.toFixed(6) : '';
    $('#job-updated').textContent = job.updated_ms ? '(' + t('team.updated', { ago: SV.since(job.updated_ms) }) + ')' : '';
    $('#job-updated').dataset.updated = job.updated_ms || '';
    const ack = $('#ack');
    ack.hidden = job.acked || !!job.ended;
    ack.disabled = false;
    $('#ack-done').hidden = !job.acked || !!job.arrived || !!job.ended;
    const arrived = $('#arrived');
    arrived.hidden = !job.acked || !!job.arrived || !!job.ended;
    arrived.disabled = Date.now() - (job.ackedAt || 0) < ARRIVE_GUARD_MS;
    $('#arrived-done').hidden = !job.arrived || !!job.ended;
    const ended = $('#job-ended');
    ended.hidden = !job.ended;
    ended.textContent = job.ended ? t('team.ended_' + job.ended) : '';
    document.body.classList.toggle('job-pending', !job.acked && !job.ended);
    renderMap(job);
    renderProfile(job);
    renderChat(job);
  }

  /** The texts between the student and the control room, while the job lasts and there are some. */
  function renderChat(job) {
    const box = $('#team-chat');
    // An ended job's texts are not kept (as its profile is not).
    if (job && job.ended) S.chat = null;
    const chat = S.chat && job && S.chat.id === job.id && !job.ended ? S.chat.view : null;
    box.hidden = !chat || chat.texts.length === 0;
    if (box.hidden) return;
    const log = $('#team-chat-log');
    const drawn = JSON.stringify([chat.texts, SV.lang]);
    if (log.dataset.drawn !== drawn) {
      log.dataset.drawn = drawn;
      log.replaceChildren(...chat.texts.map(SV.chatLine));
    }
    const note = $('#team-chat-note');
    note.hidden = chat.student_reads;
    note.textContent = chat.student_reads ? '' : t('chat.silenced');
  }

  function renderMap(job) {
    if (!S.map) {
      S.map = SV.makeMap($('#team-map'), { zoom: 15 });
      S.trail = L.polyline([], { className: 'trail', weight: 4, interactive: false }).addTo(S.map);
      S.sealed = L.polyline([], { className: 'sealed-trail', weight: 4, interactive: false }).addTo(S.map);
    }
    setTimeout(() => S.map.invalidateSize(), 0);
    if (job.location) {
      const ll = [job.location.lat, job.location.lon];
      if (!S.studentMarker) {
        S.studentMarker = L.marker(ll, { icon: SV.dotIcon('mk-incident mk-' + job.category, true), keyboard: false, title: t('team.location') }).addTo(S.map);
        S.map.setView(ll, 15);
      } else S.studentMarker.setLatLng(ll);
      SV.tagMarker(S.studentMarker, '!', { incident: job.id });
      if (!S.map.getBounds().pad(-0.1).contains(ll)) S.map.panTo(ll);
    }
    S.trail.setLatLngs(job.trail || []);
    S.sealed.setLatLngs(job.profile ? job.sealed || [] : []);
    if (S.me) {
      const ll = [S.me.lat, S.me.lon];
      if (!S.meMarker) S.meMarker = L.marker(ll, { icon: SV.dotIcon('mk-team mk-me', true), keyboard: false, title: t('team.you') }).addTo(S.map);
      else S.meMarker.setLatLng(ll);
      SV.tagMarker(S.meMarker, '•');
    }
  }

  function renderProfile(job) {
    const box = $('#team-profile');
    const p = job.profile;
    if (p && !job.ended) {
      const photo = SV.safePhoto(p.photo);
      const field = (k, v, href) => (v ? [el('dt', {}, t(k)), el('dd', {}, href ? el('a', { href, class: 'tel' }, v) : v)] : []);
      box.className = 'card profile-box profile-open';
      box.replaceChildren(
        el('h2', { id: 'team-profile-heading' }, t('profile.heading')),
        el('p', { class: 'logged-banner', role: 'note' }, el('strong', {}, t('profile.logged_title')), ' ', t('team.logged_text')),
        el(
          'div',
          { class: 'profile-body' },
          photo ? el('img', { class: 'photo', src: photo, alt: t('profile.photo_alt', { name: p.name }) }) : null,
          el(
            'dl',
            { class: 'profile-fields', id: 'profile-fields' },
            ...field('profile.name', p.name),
            ...field('profile.phone', p.phone, 'tel:' + p.phone.replace(/[^+0-9]/g, '')),
            ...field('profile.hostel', p.hostel),
            ...field('profile.blood', p.blood_group),
            ...field('profile.medical', p.medical_notes),
            ...field('profile.guardian', [p.guardian_name, p.guardian_phone].filter(Boolean).join(' · ')),
          ),
        ),
      );
    } else {
      box.className = 'card profile-box profile-closed';
      let msg;
      if (job.profileGone === 'stop') msg = t('team.profile_stopped');
      else if (job.ended) msg = t('team.profile_closed');
      else if (job.profileGone === 'expired') msg = t('team.profile_expired');
      else msg = t('team.profile_sealed', job.release || { have: 0, need: '?' });
      box.replaceChildren(el('h2', { id: 'team-profile-heading' }, t('profile.heading')), el('p', { class: 'profile-hidden', id: 'profile-hidden' }, msg));
    }
  }

  // ------------------------------------------------------------ own position
  function sharePosition() {
    if (!navigator.geolocation) {
      SV.toast(t('team.no_gps'), 'error');
      return;
    }
    if (S.watch !== null) return;
    S.watch = navigator.geolocation.watchPosition(
      async (pos) => {
        S.me = { lat: pos.coords.latitude, lon: pos.coords.longitude };
        $('#share-pos').textContent = t('team.sharing');
        try {
          await call('/v1/unit/position', { body: S.me });
        } catch (_) {
          /* the next fix retries */
        }
        if (S.job) render();
      },
      () => SV.toast(t('team.no_gps'), 'error'),
      { enableHighAccuracy: true, maximumAge: 5000 },
    );
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('#token-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const v = $('#token-input').value.trim();
      if (!/^[0-9a-fA-F]{16,128}$/.test(v)) {
        $('#token-error').textContent = t('team.bad_token');
        return;
      }
      sessionStorage.setItem(TOKEN_KEY, v);
      S.token = v;
      SV.unlockSound();
      start();
    });
    $('#ack').addEventListener('click', acknowledge);
    $('#arrived').addEventListener('click', arrive);
    $('#share-pos').addEventListener('click', sharePosition);
    $('#forget').addEventListener('click', () => {
      if (S.stream) S.stream.close();
      sessionStorage.removeItem(TOKEN_KEY);
      S.token = null;
      S.job = null;
      S.chat = null;
      showLogin();
    });
    document.addEventListener('pointerdown', SV.unlockSound);
    document.addEventListener('sv-lang', () => {
      render();
      setConn($('#conn').classList.contains('conn-on') ? 'live' : 'reconnecting');
    });
    setInterval(() => {
      document.querySelectorAll('[data-since]').forEach((e) => {
        e.textContent = SV.since(Number(e.dataset.since));
      });
      const u = $('#job-updated');
      if (u && u.dataset.updated) u.textContent = '(' + t('team.updated', { ago: SV.since(Number(u.dataset.updated)) }) + ')';
    }, 1000);
    if (S.token) start();
    else showLogin();
  });
})();
