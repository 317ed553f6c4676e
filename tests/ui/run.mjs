// Browser tests of the control room, the team screen and the student simulator.
//
// Starts the real demo (`target/debug/sosvault demo`: three trustees and the
// dispatch service on loopback), drives Debian's Chromium with playwright-core,
// and checks what an operator, a team and a student would see. Run from the
// repository root after `cargo build --workspace` and `npm ci --prefix tests/ui`:
//
//     node --test tests/ui/
//
// The demo's operator is a supervisor; the role tests add a dispatcher and an
// auditor with `sosvault-server operator add`, as an administrator would.
//
// Knobs: SOSVAULT_BIN (default target/debug/sosvault), SOSVAULT_SERVER_BIN
// (default: sosvault-server beside it), CHROMIUM (default /usr/bin/chromium),
// SCREENSHOTS (default docs/screenshots; "0" to skip).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { createInterface } from 'node:readline';
import { readFileSync, readdirSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../..');
const BIN = process.env.SOSVAULT_BIN || join(ROOT, 'target/debug/sosvault');
const SERVER_BIN = process.env.SOSVAULT_SERVER_BIN || join(dirname(BIN), 'sosvault-server');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.SCREENSHOTS === '0' ? null : resolve(ROOT, process.env.SCREENSHOTS || 'docs/screenshots');
const AXE = readFileSync(join(HERE, 'node_modules/axe-core/axe.min.js'), 'utf8');
const T = 15_000; // the longest any single condition may take

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);
const offLoopback = []; // every request a page tried to send elsewhere
const pageErrors = []; // uncaught errors in the pages

let demo; // the demo process
let browser;
let urls; // {control, sim, user, password, root}
let control, team, sim; // pages
let incident; // id of the incident under test
let trustees = []; // pids of the demo's trustee processes

/** Starts the demo; resolves with {proc, urls} once it has printed its addresses and login. */
function startDemo(env) {
  return new Promise((resolveStart, reject) => {
    const proc = spawn(BIN, ['demo', '--listen', '127.0.0.1:0', '--students', '12', '--seconds', '900'], {
      cwd: ROOT,
      env: Object.assign({}, process.env, env || {}),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let done = false;
    const found = {};
    const timer = setTimeout(() => reject(new Error('the demo did not print its addresses:\n' + out)), 60_000);
    proc.on('exit', (code) => {
      if (!done) reject(new Error('the demo exited (' + code + '):\n' + out));
    });
    proc.stderr.on('data', (d) => (out += d));
    createInterface({ input: proc.stdout }).on('line', (line) => {
      out += line + '\n';
      let m;
      if (!found.root && (m = /data in (.+)$/.exec(line))) found.root = m[1];
      if ((m = /^Control room: (https?:\/\/\S+)/.exec(line))) found.control = m[1].replace(/\/$/, '');
      if ((m = /^Student simulator: (http:\/\/\S+)/.exec(line))) found.sim = m[1].replace(/\/$/, '');
      if ((m = /^Login: (\S+) \/ (\S+)/.exec(line))) {
        found.user = m[1];
        found.password = m[2];
      }
      if (found.control && found.sim && found.password && found.root && !done) {
        done = true;
        clearTimeout(timer);
        resolveStart({ proc, urls: found });
      }
    });
  });
}

/**
 * Adds an operator account to the demo's dispatch service, as an administrator
 * does: `sosvault-server operator --config <server.toml> add NAME --role ROLE`,
 * the password on stdin. The running service takes it at the next login.
 */
function addOperator(root, name, role, password) {
  return new Promise((resolveAdd, reject) => {
    const proc = spawn(SERVER_BIN, ['operator', '--config', join(root, 'dispatch', 'server.toml'), 'add', name, '--role', role], {
      cwd: ROOT,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    proc.stdout.on('data', (d) => (out += d));
    proc.stderr.on('data', (d) => (out += d));
    proc.on('error', reject);
    proc.on('exit', (code) => (code === 0 ? resolveAdd(out) : reject(new Error(`operator add ${name} (${role}) exited ${code}:\n${out}`))));
    proc.stdin.end(password + '\n');
  });
}

/** Ends a demo started by `startDemo` (Ctrl-C) and waits for it. */
async function stopDemo(proc) {
  if (proc && proc.exitCode === null && proc.signalCode === null) {
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGINT');
    await exited;
  }
}

async function signIn(page, u) {
  await page.goto(u.control + '/');
  await page.fill('#login-user', u.user);
  await page.fill('#login-pass', u.password);
  await page.press('#login-pass', 'Enter');
  await page.waitForSelector('#conn.conn-on', { timeout: T });
}

/** The demo's trustee processes (children whose command line names the trustee binary). */
function trusteePids() {
  const out = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid !== demo.pid) continue;
      const cmd = readFileSync(`/proc/${d}/cmdline`, 'utf8');
      if (cmd.includes('sosvault-trustee') && cmd.includes('serve')) out.push(Number(d));
    } catch (_) {
      /* the process ended meanwhile */
    }
  }
  return out;
}

async function newPage(options) {
  // The demo serves TLS with a CA it made at start: the browser is told to
  // accept it, as a person would after the one warning.
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, ...options });
  // Every request from every page: loopback only. Anything else is recorded and refused.
  await ctx.route('**/*', (route) => {
    const u = new URL(route.request().url());
    if (u.protocol === 'http:' || u.protocol === 'https:' || u.protocol === 'ws:' || u.protocol === 'wss:') {
      if (!LOOPBACK.has(u.hostname)) {
        offLoopback.push(u.href);
        return route.abort();
      }
    }
    return route.continue();
  });
  ctx.on('request', (r) => {
    const u = new URL(r.url());
    if (!['data:', 'blob:', 'about:'].includes(u.protocol) && !LOOPBACK.has(u.hostname)) offLoopback.push(u.href);
  });
  const page = await ctx.newPage();
  page.on('pageerror', (e) => pageErrors.push(page.url() + ': ' + e.message));
  return page;
}

async function shot(page, name, opts) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot(Object.assign({ path: join(SHOTS, name), animations: 'disabled' }, opts || {}));
}

async function axeCheck(page, what) {
  await page.evaluate(AXE);
  const result = await page.evaluate(() =>
    window.axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] } }),
  );
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  for (const v of result.violations.filter((x) => !bad.includes(x))) {
    console.log(`# axe (${what}): ${v.impact} ${v.id}: ${v.help} (${v.nodes.length})`);
  }
  assert.deepEqual(
    bad.map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`),
    [],
    `serious or critical accessibility violations on the ${what}`,
  );
  return result;
}

/** The control room's list item for the incident. */
const item = (id) => `#incident-list button[data-incident="${id}"]`;

describe('control room, team screen and simulator against the real demo', { concurrency: false }, () => {
  before(async () => {
    // The overdue alarm after 12 s instead of 30, and teams given 20 s to
    // acknowledge (so that a team that does not answer makes an incident
    // overdue before the service sends another): the alarm test takes
    // seconds, and no other test waits that long for a tap.
    // A forward a trustee has not confirmed counts as stuck after 1 s
    // instead of 60 (the banner test).
    ({ proc: demo, urls } = await startDemo({
      SOSVAULT_SERVER_OVERDUE_AFTER_MS: '12000',
      SOSVAULT_SERVER_ACK_TIMEOUT_MS: '20000',
      SOSVAULT_SERVER_FORWARD_STUCK_AFTER_SECS: '1',
    }));
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
        '--autoplay-policy=no-user-gesture-required',
      ],
    });
  });

  after(async () => {
    if (browser) await browser.close();
    browser = null;
    for (const pid of trustees) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch (_) {
        /* gone */
      }
    }
    await stopDemo(demo);
  });

  it('an operator signs in and the live stream connects', async () => {
    control = await newPage({ viewport: { width: 1440, height: 900 } });
    await control.goto(urls.control + '/');
    await axeCheck(control, 'sign-in page');
    await control.fill('#login-user', urls.user);
    await control.fill('#login-pass', 'wrong password');
    await control.click('#login-form button[type=submit]');
    await control.waitForFunction(() => document.querySelector('#login-error').textContent.length > 0, null, { timeout: T });
    assert.ok(await control.isHidden('#room'), 'a wrong password does not open the room');
    await control.fill('#login-pass', urls.password);
    await control.press('#login-pass', 'Enter');
    await control.waitForSelector('#conn.conn-on', { timeout: T });
    assert.ok(await control.isVisible('#room'));
    // No tile URL configured: the map works offline, drawing no tiles at all.
    assert.ok(await control.$('#map.map-offline'), 'the offline map');
    assert.ok((await control.$$('#map .place-label')).length >= 5, 'place labels for orientation');
    assert.equal(await control.$('#map img.leaflet-tile'), null, 'no tiles');
    await axeCheck(control, 'control room (empty)');
  });

  it('the team screen connects with the token from the simulator', async () => {
    sim = await newPage({ viewport: { width: 1280, height: 820 } });
    await sim.goto(urls.sim + '/');
    await sim.waitForSelector('#students button[data-student="0"]', { timeout: T });
    await axeCheck(sim, 'student simulator');
    const police = await sim.getAttribute('#teams a[data-team^="PCR"]', 'href');
    assert.match(police, /^https?:\/\/127\.0\.0\.1:\d+\/team#token=[0-9a-f]+$/);
    team = await newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
    await team.goto(police);
    await team.waitForSelector('#conn.conn-on', { timeout: T });
    assert.ok(await team.isVisible('#idle'), 'no assignment yet');
    assert.equal(new URL(team.url()).hash, '', 'the token is taken out of the address bar');
    await axeCheck(team, 'team screen (idle)');
  });

  it('a panic from the simulator appears live in the control room, with sound and an announcement', async () => {
    // Hold two of the three trustees (2 are needed), so the profile stays sealed until we let them go.
    trustees = trusteePids();
    assert.equal(trustees.length, 3, 'three trustee processes under the demo');
    for (const pid of trustees.slice(0, 2)) process.kill(pid, 'SIGSTOP');

    await sim.click('#students button[data-student="0"]');
    // The sealed trail on, and a few steps: points sealed to the student's own vault.
    await sim.check('#trail-on');
    await sim.waitForSelector('#phone-trail[data-sent="1"]', { timeout: T });
    // A step of about 60 m north, as a click on the map makes it (the map is still panning to the student).
    await sim.evaluate(() => {
      const s = window.SV_SIM.state.students[0];
      window.SV_SIM.map.fire('click', { latlng: window.L.latLng(s.lat + 0.0005, s.lon) });
    });
    await sim.waitForSelector('#phone-trail[data-sent="2"]', { timeout: T });
    assert.match(await sim.textContent('#phone-trail'), /^On: 2 points sent, sealed to your own vault/);
    await sim.selectOption('#category', 'police');
    const t0 = Date.now();
    await sim.click('#panic');
    const newItem = await control.waitForSelector('#incident-list li.is-new button', { timeout: T });
    const appeared = Date.now() - t0;
    incident = await newItem.getAttribute('data-incident');
    assert.match(incident, /^[0-9a-f]{32}$/);
    assert.ok(appeared < 1000, `the incident appeared ${appeared} ms after the panic (limit 1 s)`);
    console.log(`# incident appeared in the control room ${appeared} ms after the panic button`);
    await sim.waitForSelector('#phone-status.status-panic', { timeout: T });
    // The phone says what is true: a team is asked, not yet coming.
    await sim.waitForSelector('#phone-follow[data-stage="team_sent"]', { timeout: T });
    const asked = await sim.textContent('#phone-follow');
    assert.match(asked, /Police team .* has been asked to come/);
    assert.doesNotMatch(await sim.textContent('#phone'), /Help is coming/);
    assert.equal(await sim.$('#phone-opened'), null, 'the trustees are held: the profile is not opened');
    const simIncident = await sim.evaluate(() => window.SV_SIM.state.students[0].incident);
    assert.equal(simIncident, incident, 'the simulator and the control room see the same incident');
    assert.match(await control.textContent(item(incident)), /Police/);
    await control.waitForFunction(() => /New incident: Police/.test(document.querySelector('#sv-alert').textContent), null, { timeout: T });
    assert.ok((await control.evaluate(() => window.SV.tonesPlayed || 0)) >= 1, 'an alert tone was played');
  });

  it('the team screen receives the assignment; its acknowledgement shows in the control room', async () => {
    await team.waitForSelector('#job:not([hidden])', { timeout: T });
    assert.equal((await team.textContent('#job-heading')).trim(), 'Police');
    assert.match(await team.textContent('#job-distance'), /^\d+ m$|^\d+\.\d km$/);
    assert.ok(await team.isVisible('#ack'));
    const box = await team.locator('#ack').boundingBox();
    assert.ok(box.height >= 64 && box.width >= 300, 'the acknowledge button is a large touch target');
    await control.waitForSelector(`${item(incident)} .ack-state[data-ack="false"]`, { timeout: T });
    await shot(team, 'team-assignment.png');
    await team.tap('#ack');
    await team.waitForSelector('#ack-done:not([hidden])', { timeout: T });
    await control.waitForSelector(`${item(incident)} .ack-state[data-ack="true"]`, { timeout: T });
    assert.match(await control.textContent(item(incident)), /PCR Talwandi 2/);
    // Now, and only now, the phone says help is coming (from the control
    // room's signed report, which the simulated phone verified).
    await sim.waitForSelector('#phone-follow[data-stage="on_the_way"]', { timeout: T });
    assert.match(await sim.textContent('#phone-follow'), /^Help is coming: a Police team, (\d+ m|\d+\.\d km) away, about \d+ min\.$/);
    await shot(sim, 'simulator-following.png');
    // The team says it is there, and the phone says so.
    assert.ok(await team.isVisible('#arrived'));
    await team.tap('#arrived');
    await team.waitForSelector('#arrived-done:not([hidden])', { timeout: T });
    await sim.waitForSelector('#phone-follow[data-stage="arrived"]', { timeout: T });
    assert.equal(await sim.textContent('#phone-follow'), 'The Police team says it is there.');
  });

  it('the profile is hidden before the trustees release it and shown after, on both screens', async () => {
    // Nobody handles a new incident; the operator (a supervisor) takes it, and so reads its profile.
    assert.equal(await control.textContent(`${item(incident)} .handler`), 'Unclaimed');
    await control.click(item(incident));
    await control.waitForSelector('#profile-hidden', { timeout: T });
    assert.match(await control.textContent('#profile-hidden'), /Sealed/);
    assert.equal(await control.textContent('#claim-status'), 'Nobody handles this incident yet.');
    await control.click('#act-claim');
    await control.waitForSelector('#claim-status[data-handler="operator"]', { timeout: T });
    assert.equal(await control.textContent('#claim-status'), 'You handle this incident.');
    assert.equal(await control.$('#act-claim'), null, 'nothing left to take');
    await control.waitForSelector(`${item(incident)} .handler-me`, { timeout: T });
    await control.waitForFunction(() => /Taken or handed over/.test(document.querySelector('#timeline').textContent), null, { timeout: T });
    assert.equal(await control.$('#profile-fields'), null, 'no profile fields before release');
    assert.equal(await control.$('#sealed-trail-note'), null, 'no sealed trail before release');
    assert.doesNotMatch(await control.$eval('.sealed-trail', (e) => e.getAttribute('d') || ''), /L/, 'nothing of it drawn');
    assert.equal(await team.$('#profile-fields'), null);
    assert.match(await team.textContent('#profile-hidden'), /sealed/i);
    const release = await control.getAttribute('#detail-release .release', 'data-have');
    assert.ok(Number(release) < 2, 'fewer than t shares are in');

    for (const pid of trustees.slice(0, 2)) process.kill(pid, 'SIGCONT');
    await control.waitForSelector('#profile-fields', { timeout: 30_000 });
    assert.match(await control.textContent('#profile-fields'), /Ananya Sharma/);
    assert.match(await control.textContent('#profile-fields'), /Asthma/);
    assert.match(await control.textContent('.logged-banner'), /This view is logged/);
    // The walk before the panic, opened with the released vault key: beside the profile, and dotted on the map.
    await control.waitForSelector('#sealed-trail-note', { timeout: T });
    assert.ok(Number(await control.getAttribute('#sealed-trail-note', 'data-points')) >= 2);
    assert.match(await control.textContent('#sealed-trail-note'), /^Sealed trail: \d+ points over \d+ min/);
    assert.match(await control.$eval('.sealed-trail', (e) => e.getAttribute('d') || ''), /L/, 'the sealed trail is drawn');
    // And the view is in the log, under the operator's name.
    await control.waitForFunction(() => /operator operator/.test(document.querySelector('#access-log').textContent), null, { timeout: T });
    assert.ok(await control.isVisible('#profile img.photo'), 'the photo is shown');
    await team.waitForSelector('#profile-fields', { timeout: T });
    assert.match(await team.textContent('#profile-fields'), /Ananya Sharma/);
    assert.match(await team.$eval('.sealed-trail', (e) => e.getAttribute('d') || ''), /L/, 'the team sees the walk too');
    // The phone sees when its profile was opened, and by how many trustees.
    await sim.waitForSelector('#phone-opened', { timeout: T });
    assert.match(await sim.textContent('#phone-opened'), /opened for the control room at .* \([23] trustees released their share; 2 were needed\)/);
    assert.match(await team.textContent('#profile-fields'), /B\+/);
    // And who read it: the phone's own log entries, proven under the pinned log key.
    await sim.waitForSelector('#phone-reads li[data-viewer="operator:operator"]', { timeout: T });
    await sim.waitForSelector('#phone-reads li[data-viewer^="unit:"]', { timeout: T });
    // The guardian was told by SMS, after the release: on the phone, on the control room's log and timeline.
    await sim.waitForSelector('#phone-reads li[data-viewer="guardian:sms"]', { timeout: T });
    assert.match(await sim.textContent('#phone-reads li[data-viewer="guardian:sms"]'), /^\d\d:\d\d(:\d\d)?: your guardian was told by SMS that you pressed panic$/);
    await control.waitForFunction(() => /the guardian, told by SMS/.test(document.querySelector('#access-log').textContent), null, { timeout: T });
    // The timeline's step comes once the gateway answered (after the log entry).
    await control.waitForFunction(() => /Guardian told/.test(document.querySelector('#timeline').textContent), null, { timeout: T });
    const reads = await sim.textContent('#phone-reads');
    assert.match(reads, /^Who has read your profile/);
    assert.match(reads, /\d\d:\d\d: operator operator/);
    assert.match(reads, /\d\d:\d\d: the team sent to you/);
    await control.waitForSelector(`${item(incident)} .release-released`, { timeout: T });
  });

  it('a location update moves the marker on the control room and the team screen', async () => {
    const marker = `.mk-incident[data-incident="${incident}"]`;
    await control.waitForSelector(marker, { timeout: T });
    const before = await control.$eval(marker, (e) => ({ lat: e.dataset.lat, lon: e.dataset.lon }));
    // Leaflet places a marker with a translate3d in map-layer pixels, which panning does not change.
    const layerPoint = () =>
      control.$eval(marker, (e) => {
        const m = /translate3d\((-?[\d.]+)px, (-?[\d.]+)px/.exec(e.style.transform);
        return { x: Number(m[1]), y: Number(m[2]) };
      });
    const pointBefore = await layerPoint();
    const teamBefore = await team.getAttribute('#job-location', 'data-lat');
    // Move the student on the simulator's map: a click 140 px right and 90 px down of the marker.
    const simMarker = await sim.locator('.mk-student[data-student="0"]').boundingBox();
    await sim.mouse.click(simMarker.x + simMarker.width / 2 + 140, simMarker.y + simMarker.height / 2 + 90);
    await control.waitForFunction(
      ([sel, lat]) => document.querySelector(sel) && document.querySelector(sel).dataset.lat !== lat,
      [marker, before.lat],
      { timeout: T },
    );
    const afterPos = await control.$eval(marker, (e) => ({ lat: Number(e.dataset.lat), lon: Number(e.dataset.lon) }));
    assert.ok(afterPos.lat < Number(before.lat), 'moved south');
    assert.ok(afterPos.lon > Number(before.lon), 'moved east');
    const pointAfter = await layerPoint();
    assert.ok(pointAfter.x > pointBefore.x && pointAfter.y > pointBefore.y, 'the marker is drawn further east and south');
    assert.ok(await control.locator(marker).isVisible(), 'and stays in view');
    assert.ok((await control.$eval('.trail', (e) => e.getAttribute('d') || '')).length > 0, 'the trail is drawn');
    await team.waitForFunction((lat) => document.querySelector('#job-location').dataset.lat !== lat, teamBefore, { timeout: T });

    await axeCheck(control, 'control room (incident with profile)');
    await axeCheck(team, 'team screen (assignment with profile)');
    await shot(control, 'control-room.png');
    // The incident view whole: a taller window for this one picture.
    await control.setViewportSize({ width: 1440, height: 1500 });
    await shot(control, 'incident-view.png', { clip: await control.locator('#detail').boundingBox() });
    await control.setViewportSize({ width: 1440, height: 900 });
    await shot(team, 'team-screen.png', { fullPage: true });
    await shot(sim, 'simulator.png');
  });

  it('the Hindi switch relabels the control room, the team screen and the phone', async () => {
    await control.click('[data-lang-switch="hi"]');
    assert.equal(await control.textContent('#list-heading'), 'घटनाएँ');
    assert.equal(await control.textContent('#act-close'), 'घटना बंद करें');
    assert.equal(await control.textContent('#who-role'), 'पर्यवेक्षक');
    assert.equal(await control.textContent('#claim-status'), 'यह घटना आपके पास है।');
    assert.equal(await control.textContent(`${item(incident)} .handler`), 'आपके पास');
    assert.equal(await control.getAttribute('html', 'lang'), 'hi');
    assert.match(await control.textContent(item(incident)), /पुलिस/);
    await team.tap('[data-lang-switch="hi"]');
    await sim.click('[data-lang-switch="hi"]');
    try {
      // The phone says, in Hindi, where its incident stands and who read its profile.
      assert.equal(await sim.textContent('#phone-follow'), 'पुलिस टीम ने बताया है कि वह पहुँच गई है।');
      assert.equal(await sim.textContent('#phone-reads h4'), 'आपकी प्रोफ़ाइल किसने पढ़ी');
      assert.match(await sim.textContent('#phone-reads'), /ऑपरेटर operator/);
      assert.equal((await team.textContent('#job-heading')).trim(), 'पुलिस');
      assert.equal(await team.textContent('#ack-done span[data-i18n]'), 'पुष्टि हो गई। नियंत्रण कक्ष देख सकता है कि आप रास्ते में हैं।');
      await shot(control, 'control-room-hi.png');
      await axeCheck(control, 'control room in Hindi');
      await axeCheck(team, 'team screen in Hindi');
    } finally {
      await control.click('[data-lang-switch="en"]');
      await team.tap('[data-lang-switch="en"]');
      await sim.click('[data-lang-switch="en"]');
    }
    assert.equal(await control.textContent('#list-heading'), 'Incidents');
  });

  it('the main control-room actions work from the keyboard alone', async () => {
    // Start from the top of the page, as a keyboard user does.
    await control.evaluate(() => document.activeElement && document.activeElement.blur());
    await control.focus('body');
    const focused = () => control.evaluate(() => document.activeElement && (document.activeElement.dataset.incident || document.activeElement.id));
    let steps = 0;
    while ((await focused()) !== incident) {
      await control.keyboard.press('Tab');
      assert.ok(++steps < 40, 'the incident is reachable with Tab');
    }
    await control.keyboard.press('Enter');
    await control.waitForFunction(() => document.activeElement && document.activeElement.id === 'detail-heading', null, { timeout: T });
    steps = 0;
    while ((await focused()) !== 'act-false-alarm') {
      await control.keyboard.press('Tab');
      assert.ok(++steps < 20, 'the false-alarm action is reachable with Tab');
    }
    await control.keyboard.press('Enter');
    await control.waitForSelector('#confirm[open]', { timeout: T });
    assert.equal(await focused(), 'confirm-ok', 'the dialog takes the focus');
    await control.keyboard.press('Escape');
    await control.waitForFunction(() => !document.querySelector('#confirm').open, null, { timeout: T });
    assert.equal(await control.$('#detail .chip-false-alarm'), null, 'Escape cancels');
    assert.equal(await focused(), 'act-false-alarm', 'the focus returns to the action');
    await control.keyboard.press('Enter');
    await control.waitForSelector('#confirm[open]', { timeout: T });
    // The dialog has the focus before Enter confirms (as a user sees it does).
    await control.waitForFunction(() => document.activeElement && document.activeElement.id === 'confirm-ok', null, { timeout: T });
    // What the service answers the mark, kept to say why if the chip never shows.
    const answered = control
      .waitForResponse((r) => r.url().endsWith('/false-alarm'), { timeout: T })
      .then((r) => r.status(), (e) => `no request (${e.message.split('\n')[0]})`);
    await control.keyboard.press('Enter');
    await control.waitForFunction(() => !document.querySelector('#confirm').open, null, { timeout: T });
    await control.waitForSelector('#detail .chip-false-alarm', { timeout: T }).catch(async (e) => {
      const toasts = await control.$$eval('.toast', (ts) => ts.map((t) => t.textContent));
      const returned = await control.evaluate(() => document.querySelector('#confirm').returnValue);
      throw new Error(`${e.message}; the mark was answered ${await answered}; the dialog returned ${JSON.stringify(returned)}; toasts: ${JSON.stringify(toasts)}`);
    });
    await control.waitForSelector(`${item(incident)} .chip-false-alarm`, { timeout: T });
  });

  it('stop removes the profile from both screens; the team still has the last location', async () => {
    await sim.fill('#pin', '2468');
    await sim.click('#stop');
    await sim.waitForSelector('#phone-status.status-stopped', { timeout: T });
    await control.waitForSelector('#profile-hidden', { timeout: T });
    assert.equal(await control.$('#profile-fields'), null);
    assert.match(await control.textContent('#profile-hidden'), /stop/);
    await control.waitForSelector('#detail .chip-stopped', { timeout: T });
    await team.waitForSelector('#profile-hidden', { timeout: T });
    assert.equal(await team.$('#profile-fields'), null);
    assert.match(await team.textContent('#profile-hidden'), /stop/);
    assert.match(await team.textContent('#job-location'), /^\d+\.\d+, \d+\.\d+$/);
    // The walk before the panic went with the profile, on both maps.
    assert.doesNotMatch(await team.$eval('.sealed-trail', (e) => e.getAttribute('d') || ''), /L/);
    assert.doesNotMatch(await control.$eval('.sealed-trail', (e) => e.getAttribute('d') || ''), /L/);
  });

  it('reassign releases the team (its screen says so) and the next nearest team takes over', async () => {
    const name = () => control.$eval(`${item(incident)} .team-name`, (e) => e.textContent).catch(() => '');
    assert.equal(await name(), 'PCR Talwandi 2');
    // Asked to close, cancelled, and asked to reassign before the browser
    // delivers the first dialog's `close` event (it does at the next frame).
    // A quick keyboard user gets there now and then (Escape, Enter); done in
    // one task here, so that it happens every run: the late event must answer
    // neither question, and the OK goes to the reassign alone.
    const posted = []; // the actions the page sends from here on
    const onRequest = (r) => r.method() === 'POST' && posted.push(new URL(r.url()).pathname.split('/').pop());
    control.on('request', onRequest);
    await control.click('#act-close');
    await control.waitForSelector('#confirm[open]', { timeout: T });
    await control.evaluate(() => {
      document.querySelector('#confirm').close('cancel');
      document.querySelector('#act-reassign').click();
    });
    assert.ok(await control.$('#confirm[open]'), 'the second question is asked');
    assert.equal(await control.textContent('#confirm-title'), 'Reassign this incident?');
    await control.click('#confirm-ok');
    await team.waitForSelector('#job-ended:not([hidden])', { timeout: T });
    assert.match(await team.textContent('#job-ended'), /another team/);
    assert.ok(await team.isHidden('#ack'), 'nothing left to acknowledge');
    // A demo team (simulated by the demo) is sent and acknowledges.
    await control.waitForFunction(
      (sel) => {
        const b = document.querySelector(sel);
        const n = b && b.querySelector('.team-name');
        return n && n.textContent.startsWith('PCR ') && n.textContent !== 'PCR Talwandi 2' && b.querySelector('.ack-state[data-ack="true"]');
      },
      item(incident),
      { timeout: T },
    );
    await control.waitForFunction(() => /Reassigned/.test(document.querySelector('#timeline').textContent), null, { timeout: T });
    control.off('request', onRequest);
    assert.deepEqual(posted, ['reassign'], 'the reassign is sent, the cancelled close is not');
  });

  it('closing from the keyboard closes the incident, with how it ended', async () => {
    await control.focus('#act-close');
    await control.keyboard.press('Enter');
    await control.waitForSelector('#confirm[open]', { timeout: T });
    // The outcome first: nothing is chosen for the operator, and OK waits.
    assert.equal(await control.evaluate(() => document.activeElement.id), 'close-outcome');
    assert.ok(await control.isDisabled('#confirm-ok'));
    await control.keyboard.press('ArrowDown');
    assert.equal(await control.inputValue('#close-outcome'), 'helped_on_spot');
    await control.keyboard.press('Tab');
    await control.keyboard.press('Tab');
    assert.equal(await control.evaluate(() => document.activeElement.id), 'confirm-ok');
    await control.keyboard.press('Enter');
    await control.waitForSelector('#detail .chip-status-closed', { timeout: T });
    await control.waitForFunction(() => /helped on spot/.test(document.querySelector('#timeline').textContent), null, { timeout: T });
    await control.waitForFunction(() => /Closed in the last 24 h: 1 Helped on the spot/.test(document.querySelector('#outcome-counts').textContent), null, { timeout: T });
    assert.ok(await control.isDisabled('#act-close'));
    // The open list no longer shows it; "All" does.
    await control.waitForSelector(item(incident), { state: 'detached', timeout: T });
    await control.click('[data-filter="all"]');
    await control.waitForSelector(item(incident), { timeout: T });
  });

  it('a cancel with the duress PIN looks normal on the phone but escalates on both screens', async () => {
    await sim.click('#students button[data-student="1"]');
    await sim.selectOption('#category', 'police');
    await sim.click('#panic');
    await sim.waitForSelector('#phone-status.status-panic', { timeout: T });
    const id2 = await sim.evaluate(() => window.SV_SIM.state.students[1].incident);
    await control.waitForSelector(item(id2), { timeout: T });
    // The released team is free again and nearest: its screen gets the new assignment.
    await team.waitForFunction((id) => window.SV_TEAM.job && window.SV_TEAM.job.id === id && !window.SV_TEAM.job.ended, id2, { timeout: T });
    await team.waitForSelector('#ack:not([hidden])', { timeout: T });
    await team.tap('#ack');
    await control.waitForSelector(`${item(id2)} .ack-state[data-ack="true"]`, { timeout: T });
    assert.equal(await control.$(`${item(id2)} .chip-duress`), null);
    await sim.fill('#pin', '1357');
    await sim.click('#cancel');
    // The phone shows what a normal cancel shows.
    await sim.waitForSelector('#phone-status.status-idle', { timeout: T });
    await control.waitForSelector(`${item(id2)} .chip-duress`, { timeout: T });
    await control.waitForFunction(() => /escalated/.test(document.querySelector('#sv-alert').textContent), null, { timeout: T });
    assert.match(await control.textContent(item(id2)), /DURESS/);
    await team.waitForSelector('#job-flags .chip-duress', { timeout: T });
    assert.ok(await team.isHidden('#job-ended'), 'the team keeps going');
  });

  it('an incident no team acknowledges sounds the overdue alarm; a team sent by hand ends it', async () => {
    // Free the simulator's police team (still on the duress incident), from the keyboard-less path.
    const open = await sim.evaluate(() => window.SV_SIM.state.students[1].incident);
    await control.click(item(open));
    await control.click('#act-close');
    await control.waitForSelector('#confirm[open]', { timeout: T });
    await control.selectOption('#close-outcome', 'other');
    await control.click('#confirm-ok');
    await team.waitForSelector('#job-ended:not([hidden])', { timeout: T });

    // A panic the nearest team (this screen) does not acknowledge.
    const before = await control.evaluate(() => window.SV.tonesPlayed || 0);
    await sim.click('#students button[data-student="3"]');
    await sim.selectOption('#category', 'police');
    await sim.click('#panic');
    const id3 = await (await sim.waitForFunction(() => window.SV_SIM.state.students[3].incident, null, { timeout: T })).jsonValue();
    await team.waitForFunction((id) => window.SV_TEAM.job && window.SV_TEAM.job.id === id && !window.SV_TEAM.job.ended, id3, { timeout: T });
    await control.waitForSelector(`${item(id3)} .chip-overdue`, { timeout: 30_000 });
    await control.waitForFunction(() => /Overdue/.test(document.querySelector('#sv-alert').textContent), null, { timeout: T });
    assert.ok((await control.evaluate(() => window.SV.tonesPlayed || 0)) > before, 'the alarm tone was played');
    assert.match(await control.textContent(item(id3)), /NO TEAM YET/);

    // The operator picks a free team (nearest first, any kind) and sends it.
    await control.click(item(id3));
    await control.waitForSelector('#assign-unit:not([disabled])', { timeout: T });
    const options = await control.$$eval('#assign-unit option', (os) => os.map((o) => ({ value: o.value, text: o.textContent })));
    assert.ok(options.length >= 2, 'free teams are offered');
    assert.ok(!options.some((o) => o.text.startsWith('PCR Talwandi 2')), 'the busy team is not offered');
    const pick = options.find((o) => o.text.startsWith('PCR '));
    assert.ok(pick, 'a free police team: ' + JSON.stringify(options));
    await control.selectOption('#assign-unit', pick.value);
    await control.click('#act-assign');
    // The team that did not answer is told it is off; the one sent (a demo team) acknowledges; the alarm ends.
    await team.waitForSelector('#job-ended:not([hidden])', { timeout: T });
    await control.waitForSelector(`${item(id3)} .ack-state[data-ack="true"]`, { timeout: T });
    await control.waitForSelector(`${item(id3)} .chip-overdue`, { state: 'detached', timeout: T });
    assert.match(await control.textContent('#timeline'), /OVERDUE: no team has acknowledged/);
    assert.match(await control.textContent('#timeline'), /by supervisor operator, replacing PCR Talwandi 2/);
    await axeCheck(control, 'control room (team sent by hand)');
    // The student cancels (the right PIN): the phone is free for the tests that follow.
    await sim.fill('#pin', '2468');
    await sim.click('#cancel');
    await sim.waitForSelector('#phone-status.status-idle', { timeout: T });
  });

  it('walk me home: a check-in ends the timer; one under duress looks the same on the phone and escalates', async () => {
    await sim.click('#students button[data-student="3"]');
    await sim.waitForSelector('#start-timer', { timeout: T });
    await sim.selectOption('#timer-length', '60');
    await sim.click('#start-timer');
    await sim.waitForSelector('#phone-timer.timer-running', { timeout: T });
    assert.match(await sim.textContent('#timer-status'), /check in by/);
    assert.equal(await sim.textContent('#phone-status'), await sim.evaluate(() => window.SV.t('sim.status.idle')));
    await axeCheck(sim, 'student simulator (timer running)');
    await shot(sim, 'simulator-timer.png');
    const before = await control.$$eval('#incident-list button[data-incident]', (bs) => bs.length);
    // In safety: the timer ends; nothing reaches the control room.
    await sim.fill('#timer-pin', '2468');
    await sim.click('#check-in');
    await sim.waitForSelector('#start-timer', { timeout: T });
    assert.equal(await sim.evaluate(() => window.SV_SIM.state.students[3].timer), null);
    // (Each timer sent a trail point at its start: the count differs.)
    const phone = async () => (await sim.innerHTML('#phone')).replace(/data-sent="\d+"/, '');
    const calm = await phone();
    // Under duress: the phone shows exactly the same...
    await sim.click('#start-timer');
    await sim.waitForSelector('#phone-timer.timer-running', { timeout: T });
    await sim.fill('#timer-pin', '1357');
    await sim.click('#check-in');
    await sim.waitForSelector('#start-timer', { timeout: T });
    assert.equal(await phone(), calm, 'the phone shows what a check-in in safety shows');
    // ...and the control room gets an escalated incident at once, marked.
    await control.waitForFunction(() => /DURESS CHECK-IN/.test(document.querySelector('#incident-list').textContent), null, { timeout: 30_000 });
    const forced = await control.$$eval('#incident-list button[data-incident]', (bs) =>
      bs.filter((b) => /DURESS CHECK-IN/.test(b.textContent)).map((b) => b.dataset.incident));
    assert.equal(forced.length, 1);
    assert.equal(await control.$$eval('#incident-list button[data-incident]', (bs) => bs.length), before + 1, 'one incident: the duress one');
    await control.waitForSelector(`${item(forced[0])} .chip-duress`, { timeout: T });
    assert.match(await control.textContent(item(forced[0])), /Check-in timer/);
    await control.waitForFunction(() => /escalated/.test(document.querySelector('#sv-alert').textContent), null, { timeout: T });
    // The operator closes it: the teams are free for what follows.
    await control.click(item(forced[0]));
    await control.waitForFunction(() => /checked in on their check-in timer with the duress PIN/.test(document.querySelector('#timeline').textContent), null, { timeout: T });
    await control.click('#act-close');
    await control.waitForSelector('#confirm[open]', { timeout: T });
    await control.selectOption('#close-outcome', 'other');
    await control.click('#confirm-ok');
    await control.waitForSelector('#detail .chip-status-closed', { timeout: T });
  });

  it('one of a count is said in the singular, in each language that has one', async () => {
    const say = (lang, key, count) => sim.evaluate(([l, k, n]) => {
      const was = window.SV.lang;
      window.SV.lang = l;
      const s = window.SV.t(k, { count: n });
      window.SV.lang = was;
      return s;
    }, [lang, key, count]);
    assert.match(await say('en', 'sim.trail.on', 1), /^On: 1 point sent/);
    assert.match(await say('en', 'sim.trail.on', 2), /^On: 2 points sent/);
    assert.match(await say('en', 'sim.trail.on', 0), /^On: 0 points sent/);
    assert.match(await say('hi', 'sim.trail.on', 1), /1 बिंदु भेजा गया/);
    assert.match(await say('hi', 'sim.trail.on', 3), /3 बिंदु भेजे गए/);
    assert.equal(await say('en', 'profile.sealed_trail_unopened', 1), '1 point did not open.');
  });

  it('no data: a panic by SMS reaches the control room, flagged, and the phone follows it', async () => {
    await sim.click('#students button[data-student="3"]');
    await sim.waitForSelector('#panic-sms', { timeout: T });
    const before = await control.$$eval('#incident-list button[data-incident]', (bs) => bs.length);
    await sim.selectOption('#category', 'police');
    await sim.click('#panic-sms');
    await sim.waitForSelector('#phone-status.status-panic', { timeout: T });
    assert.match(await sim.textContent('#phone-sms'), /Sent by SMS to \+917440000100/);
    // The control room gets it as any panic, marked as sent by SMS.
    await control.waitForFunction((n) => document.querySelectorAll('#incident-list button[data-incident]').length > n, before, { timeout: T });
    const id = await sim.evaluate(() => window.SV_SIM.state.students[3].incident);
    await control.waitForSelector(`${item(id)} .chip-sms`, { timeout: T });
    assert.match(await control.textContent(item(id)), /By SMS \(no live location\)/);
    // The phone follows it (its data is back): a team is sent.
    await sim.waitForSelector('#phone-follow[data-stage]', { timeout: T });
    await axeCheck(sim, 'student simulator (panic sent by SMS)');
    await shot(sim, 'simulator-sms.png');
    // Safe: the student cancels; the phone is free again.
    await sim.fill('#pin', '2468');
    await sim.click('#cancel');
    await sim.waitForSelector('#phone-status.status-idle', { timeout: T });
  });

  // ---------------------------------------------------------------- silent chat
  // Texts between the student and the control room during an incident, for
  // a student who cannot speak: the operator writes, the team reads.
  let chatIncident; // the incident of the chat tests
  // Markup in a text is text: shown as typed, never as HTML.
  const TO_STUDENT = 'Are you able to talk? <b>Reply here</b> & stay where you are.';
  const FROM_STUDENT = 'cannot talk, he is next to me\nsecond floor, room 214';

  it('silent chat: the operator writes once the phone has opened the chat; the phone answers; the team reads both', async () => {
    // No phone follows an incident now (the page reads the state only while one does) ...
    assert.ok(await sim.evaluate(() => window.SV_SIM.state.students.every((s) => s.status !== 'panic' && !s.timer)));
    // ... and this panic goes without the page: the phone has not asked for the chat yet.
    const sent = await fetch(urls.sim + '/demo/api/students/2/panic', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ category: 'police' }),
    });
    assert.equal(sent.status, 200);
    chatIncident = (await sent.json()).incident;
    assert.match(chatIncident, /^[0-9a-f]{32}$/);
    await control.waitForSelector(item(chatIncident), { timeout: T });
    await control.click(item(chatIncident));
    await control.waitForSelector('#chat-note[data-state="not_open"]', { timeout: T });
    assert.equal(await control.textContent('#chat-note'), "The student's phone has not opened the chat yet.");
    assert.ok(await control.isDisabled('#chat-input'), 'nothing to write into yet');
    assert.ok(await control.isDisabled('#chat-send'));
    assert.ok(await control.isHidden('#chat-log'), 'no texts');
    // The operator takes the incident (a dispatcher must, to write; a supervisor may without).
    await control.click('#act-claim');
    await control.waitForSelector('#claim-status[data-handler="operator"]', { timeout: T });
    assert.equal(await control.getAttribute('#chat-note', 'data-state'), 'not_open', 'still nothing to write into');
    // The team sent acknowledges (within the service's 20 s, or another team is sent).
    await team.waitForFunction((id) => window.SV_TEAM.job && window.SV_TEAM.job.id === id && !window.SV_TEAM.job.ended, chatIncident, { timeout: T });
    await team.waitForSelector('#ack:not([hidden])', { timeout: T });
    await team.tap('#ack');
    await team.waitForSelector('#ack-done:not([hidden])', { timeout: T });
    assert.ok(await team.isHidden('#team-chat'), 'no texts: no chat on the team screen');

    // The phone (its page open again) follows its incident, and so asks for its chat: it opens.
    await sim.reload();
    await sim.click('#students button[data-student="2"]');
    await sim.waitForSelector('#phone-chat #phone-chat-none', { timeout: T });
    assert.match(await sim.textContent('#phone-chat-none'), /^No texts yet/);
    await control.waitForSelector('#chat-input:not([disabled])', { timeout: T });
    assert.ok(await control.isHidden('#chat-note'), 'nothing in the way');
    assert.ok(await control.isVisible('#chat-empty'));
    await control.waitForFunction(() => /Silent chat opened/.test(document.querySelector('#timeline').textContent), null, { timeout: T });

    // The operator writes.
    await control.fill('#chat-input', TO_STUDENT);
    assert.equal(await control.textContent('#chat-count'), `${Buffer.byteLength(TO_STUDENT)} of 500 bytes`);
    await control.click('#chat-send');
    const ours = '#chat-log li[data-from="control_room"]';
    await control.waitForSelector(ours, { timeout: T });
    assert.equal(await control.textContent(`${ours} .chat-text`), TO_STUDENT);
    assert.equal(await control.$('#chat-log b'), null, 'the text is shown as text, not markup');
    assert.match(await control.textContent(`${ours} .chat-meta`), /^Control room · operator · \d\d:\d\d:\d\d$/);
    assert.equal(await control.inputValue('#chat-input'), '', 'the field is emptied once the text is stored');
    assert.ok(await control.isHidden('#chat-empty'));

    // The phone reads it (its own query, the control room's signed log, opened with its own key) and answers.
    await sim.waitForSelector('#phone-chat li[data-from="control_room"]', { timeout: T });
    assert.equal(await sim.textContent('#phone-chat li[data-from="control_room"] .chat-text'), TO_STUDENT);
    assert.equal(await sim.$('#phone-chat b'), null);
    await sim.fill('#chat-text', FROM_STUDENT);
    await sim.click('#chat-send');
    await sim.waitForSelector('#phone-chat li[data-from="student"]', { timeout: T });
    assert.equal(await sim.textContent('#phone-chat li[data-from="student"] .chat-text'), FROM_STUDENT);
    assert.equal(await sim.inputValue('#chat-text'), '');
    assert.deepEqual(await sim.$$eval('#phone-chat li', (ls) => ls.map((l) => l.dataset.from)), ['control_room', 'student']);

    // The control room gets it live, said aloud; the timeline says who wrote, never what.
    const theirs = '#chat-log li[data-from="student"]';
    await control.waitForSelector(theirs, { timeout: T });
    assert.equal(await control.textContent(`${theirs} .chat-text`), FROM_STUDENT);
    assert.match(await control.textContent(`${theirs} .chat-meta`), /^Student · \d\d:\d\d:\d\d$/);
    assert.deepEqual(await control.$$eval('#chat-log li', (ls) => ls.map((l) => l.dataset.from)), ['control_room', 'student']);
    const sides = await control.$$eval('#chat-log li', (ls) => ls.map((l) => getComputedStyle(l).alignSelf + ' ' + getComputedStyle(l).backgroundColor));
    assert.notEqual(sides[0], sides[1], "the student's and the control room's texts look different");
    await control.waitForFunction(() => /The student wrote in the silent chat: Police/.test(document.querySelector('#sv-alert').textContent), null, { timeout: T });
    await control.waitForFunction(() => /the student wrote/.test(document.querySelector('#timeline').textContent), null, { timeout: T });
    const timeline = await control.textContent('#timeline');
    assert.match(timeline, /Silent chat text\s*the student wrote.*Silent chat text\s*supervisor operator wrote/s);
    assert.ok(!timeline.includes('Reply here') && !timeline.includes('next to me'), 'no text on the timeline');

    // The team reads both, and writes nothing.
    await team.waitForSelector('#team-chat li[data-from="student"]', { timeout: T });
    assert.equal(await team.textContent('#team-chat li[data-from="student"] .chat-text'), FROM_STUDENT);
    assert.equal(await team.textContent('#team-chat li[data-from="control_room"] .chat-text'), TO_STUDENT);
    assert.equal(await team.$('#team-chat b'), null);
    assert.equal(await team.$('#team-chat textarea, #team-chat input, #team-chat button'), null, 'read only');
    assert.ok(await team.isHidden('#team-chat-note'));

    await axeCheck(control, 'control room (silent chat)');
    await axeCheck(team, 'team screen (silent chat)');
    await axeCheck(sim, 'student simulator (silent chat)');
    await control.setViewportSize({ width: 1440, height: 1500 });
    await control.evaluate(() => {
      document.activeElement.blur();
      document.querySelector('#detail').scrollTop = 0;
      document.querySelectorAll('.toast').forEach((e) => e.remove());
    });
    await shot(control, 'control-room-chat.png', { clip: await control.locator('#detail').boundingBox() });
    await control.setViewportSize({ width: 1440, height: 900 });
    await shot(sim, 'simulator-chat.png');

    // In Hindi: the panel and the timeline's steps; the texts stay as written.
    await control.click('[data-lang-switch="hi"]');
    try {
      assert.equal(await control.textContent('#chat-heading'), 'मौन चैट');
      assert.equal(await control.textContent('#chat-send'), 'भेजें');
      assert.match(await control.textContent('#timeline'), /मौन चैट खुली/);
      assert.match(await control.textContent('#timeline'), /मौन चैट संदेश/);
      assert.equal(await control.textContent(`${theirs} .chat-text`), FROM_STUDENT);
      await axeCheck(control, 'control room in Hindi (silent chat)');
    } finally {
      await control.click('[data-lang-switch="en"]');
    }
  });

  it('silent chat: after a duress cancel the operator cannot write, and a stale view gets the service\'s words', async () => {
    // The control room's view goes stale (its live stream drops), a text half written ...
    await control.evaluate(() => window.SV_CONTROL.stream.close());
    await control.fill('#chat-input', 'Are you safe now?');
    // ... while the student cancels with the duress PIN: on the phone, a cancel like any, and no chat.
    await sim.fill('#pin', '1357');
    await sim.click('#cancel');
    await sim.waitForSelector('#phone-status.status-idle', { timeout: T });
    assert.equal(await sim.$('#phone-chat'), null, 'the phone shows no chat');
    // The service refuses the text: the page shows its words, and then why in its own.
    await control.click('#chat-send');
    await control.waitForFunction(
      () => document.querySelector('#chat-error') && document.querySelector('#chat-error').textContent.startsWith('Not done: the student cancelled under duress or stopped'),
      null,
      { timeout: T },
    );
    await control.waitForSelector('#chat-note[data-state="silenced"]', { timeout: T });
    assert.equal(await control.textContent('#chat-note'), 'The student cancelled or stopped: nothing more reaches the phone.');
    assert.ok(await control.isDisabled('#chat-input'));
    assert.ok(await control.isDisabled('#chat-send'));
    assert.equal(await control.inputValue('#chat-input'), 'Are you safe now?', 'what was written is not lost');
    assert.equal(await control.$$eval('#chat-log li', (ls) => ls.length), 2, 'the texts so far stay');
    await control.waitForSelector('#detail .chip-duress', { timeout: T });
    // The team keeps the texts, and is told nothing more reaches the phone.
    await team.waitForSelector('#team-chat-note:not([hidden])', { timeout: T });
    assert.equal(await team.textContent('#team-chat-note'), 'The student cancelled or stopped: nothing more reaches the phone.');
    assert.equal(await team.$$eval('#team-chat li', (ls) => ls.length), 2);
    await axeCheck(control, 'control room (silent chat, silenced)');

    // Live again; the operator closes the incident: its chat is gone, here and on the team screen.
    await control.reload();
    await control.waitForSelector('#conn.conn-on', { timeout: T });
    await control.click(item(chatIncident));
    await control.waitForSelector('#chat-note[data-state="silenced"]', { timeout: T });
    await control.click('#act-close');
    await control.waitForSelector('#confirm[open]', { timeout: T });
    await control.selectOption('#close-outcome', 'other');
    await control.click('#confirm-ok');
    await control.waitForSelector('#chat-note[data-state="closed"]', { timeout: T });
    assert.equal(await control.textContent('#chat-note'), 'The incident is over: its chat is gone.');
    assert.ok(await control.isHidden('#chat-form'), 'nothing to write into');
    assert.ok(await control.isHidden('#chat-log'));
    await team.waitForSelector('#job-ended:not([hidden])', { timeout: T });
    assert.ok(await team.isHidden('#team-chat'));
  });

  // ---------------------------------------------------------------- roles
  // A dispatcher and an auditor beside the demo's supervisor ("operator").
  const DISPATCHER = 'asha';
  const AUDITOR = 'lekha';
  const ROLE_PASSWORD = 'a long test password';
  const REASON = 'The guardian called the control room about this student';
  let disp; // the dispatcher's control room
  let roleIncident; // the incident the role tests share
  let roleStudent; // its student's name

  /** A panic from the simulator's student `n`; resolves with the (new) incident id. */
  async function panicFrom(n, category) {
    const before = await sim.evaluate((i) => window.SV_SIM.state.students[i].incident || null, n);
    await sim.click(`#students button[data-student="${n}"]`);
    await sim.selectOption('#category', category);
    await sim.click('#panic');
    const id = await sim.waitForFunction(
      ([i, old]) => {
        const now = window.SV_SIM.state.students[i].incident;
        return now && now !== old && now;
      },
      [n, before],
      { timeout: T },
    );
    return id.jsonValue();
  }

  it('a dispatcher sees "take this incident" and no profile, takes it, then reads the profile', async () => {
    await addOperator(urls.root, DISPATCHER, 'dispatcher', ROLE_PASSWORD);
    await addOperator(urls.root, AUDITOR, 'auditor', ROLE_PASSWORD);
    disp = await newPage({ viewport: { width: 1440, height: 900 } });
    await signIn(disp, { control: urls.control, user: DISPATCHER, password: ROLE_PASSWORD });
    assert.equal(await disp.textContent('#who-role'), 'Dispatcher');
    assert.match(await disp.textContent('#who'), new RegExp('^' + DISPATCHER));
    assert.equal(await disp.evaluate(() => sessionStorage.getItem('sosvault.operator.role')), 'dispatcher');
    assert.ok(await disp.isHidden('#static-bar'), 'live: no refresh button');

    roleIncident = await panicFrom(2, 'medical');
    roleStudent = await sim.evaluate(() => window.SV_SIM.state.students[2].name);
    // Once the trustees have released it, the profile is readable by whoever handles the incident: nobody yet.
    await disp.waitForSelector(`${item(roleIncident)} .release-released`, { timeout: 30_000 });
    assert.equal(await disp.textContent(`${item(roleIncident)} .handler`), 'Unclaimed');
    await disp.click(item(roleIncident));
    await disp.waitForSelector('#profile-hidden[data-access="not_handler"]', { timeout: T });
    assert.equal(await disp.textContent('#profile-hidden'), 'Take this incident to read the profile.');
    assert.equal(await disp.$('#profile-fields'), null, 'no profile before taking the incident');
    assert.equal(await disp.$('#handover'), null, 'a dispatcher hands nothing over');
    // What they may not do yet is disabled, and says why (as a tooltip and in words beside it).
    for (const b of ['#act-reassign', '#act-false-alarm', '#act-close']) {
      assert.ok(await disp.isDisabled(b), `${b} is disabled`);
      assert.equal(await disp.getAttribute(b, 'title'), 'Take this incident first to act on it.');
    }
    assert.equal(await disp.textContent('#actions-note'), 'Take this incident first to act on it.');
    // The silent chat too: read, but written only by whoever handles the incident.
    await disp.waitForSelector('#chat-note[data-state="claim_first"]', { timeout: T });
    assert.equal(await disp.textContent('#chat-note'), 'Take this incident first to write to the student.');
    assert.ok(await disp.isDisabled('#chat-input'));
    await axeCheck(disp, 'control room (dispatcher, incident not taken)');

    // Taken from the keyboard.
    await disp.focus('#act-claim');
    await disp.keyboard.press('Enter');
    await disp.waitForSelector('#profile-fields', { timeout: T });
    assert.match(await disp.textContent('#profile-fields'), new RegExp(roleStudent));
    assert.equal(await disp.getAttribute('.logged-banner', 'data-access'), 'shown');
    await disp.waitForFunction(() => document.activeElement && document.activeElement.id === 'claim-status', null, { timeout: T });
    assert.equal(await disp.textContent('#claim-status'), 'You handle this incident.');
    assert.equal(await disp.$('#act-claim'), null, 'nothing left to take');
    assert.ok(!(await disp.isDisabled('#act-close')), 'the handler may act');
    await disp.waitForSelector('#chat-input:not([disabled])', { timeout: T });
    assert.ok(await disp.isHidden('#chat-note'), 'and write to the student');
    assert.ok(await disp.isHidden('#actions-note'));
    await disp.waitForSelector(`${item(roleIncident)} .handler-me`, { timeout: T });
    await disp.waitForFunction((n) => document.querySelector('#access-log').textContent.includes('operator ' + n), DISPATCHER, { timeout: T });
    // The supervisor's room follows the live `claimed` event.
    await control.waitForFunction(
      ([sel, n]) => document.querySelector(sel + ' .handler') && document.querySelector(sel + ' .handler').textContent === 'Handled by ' + n,
      [item(roleIncident), DISPATCHER],
      { timeout: T },
    );
    await axeCheck(disp, 'control room (dispatcher, own incident with profile)');
  });

  it('a supervisor who does not handle the incident gives a reason, then sees the profile', async () => {
    await control.click(item(roleIncident));
    await control.waitForSelector('#reason-form', { timeout: T });
    assert.equal(await control.getAttribute('#profile-hidden', 'data-access'), 'reason_required');
    assert.equal(await control.$('#profile-fields'), null, 'no profile without a reason');
    assert.match(await control.textContent('#reason-help'), /transparency log, where the student sees it/);
    assert.equal(await control.textContent('#claim-status'), `Handled by ${DISPATCHER}.`);
    assert.ok(await control.isVisible('#act-claim'), 'a supervisor may take it from the dispatcher');
    assert.ok(await control.isVisible('#handover summary'), 'or hand it over');
    assert.ok(!(await control.isDisabled('#act-close')), 'and may act on it');
    await axeCheck(control, 'control room (supervisor, reason form)');

    // Too short: said beside the field, and nothing is sent.
    await control.fill('#reason-input', 'because');
    await control.press('#reason-input', 'Enter');
    await control.waitForFunction(() => /at least 8/.test(document.querySelector('#reason-error').textContent), null, { timeout: T });
    assert.equal(await control.getAttribute('#reason-input', 'aria-invalid'), 'true');
    assert.equal(await control.$('#profile-fields'), null);
    // Hindi: the form relabels and what was typed stays.
    await control.click('[data-lang-switch="hi"]');
    try {
      assert.equal(await control.textContent('label[for="reason-input"]'), 'कारण (8 से 200 अक्षर)');
      assert.equal(await control.inputValue('#reason-input'), 'because');
      await axeCheck(control, 'control room in Hindi (supervisor, reason form)');
    } finally {
      await control.click('[data-lang-switch="en"]');
    }

    await control.fill('#reason-input', REASON);
    await control.press('#reason-input', 'Enter');
    await control.waitForSelector('#profile-fields', { timeout: T });
    assert.match(await control.textContent('#profile-fields'), new RegExp(roleStudent));
    assert.equal(await control.getAttribute('.logged-banner', 'data-access'), 'shown_with_reason');
    assert.match(await control.textContent('.logged-banner'), /with your reason; the student sees both/);
    // Logged with the reason, under the supervisor's name ...
    await control.waitForFunction(
      (r) => [...document.querySelectorAll('#access-log li')].some((li) => li.textContent.includes('operator operator') && li.textContent.includes(r)),
      REASON,
      { timeout: T },
    );
    // ... and kept nowhere by the page once that request is done.
    assert.equal(await control.$('#reason-input'), null);
    const kept = await control.evaluate(
      (r) => [JSON.stringify(sessionStorage), JSON.stringify(localStorage), JSON.stringify(window.SV_CONTROL.detail), location.href].filter((x) => x.includes(r)).length,
      REASON,
    );
    assert.equal(kept, 0, 'the reason is in no storage, state or address');
    await axeCheck(control, 'control room (supervisor, profile read with a reason)');
  });

  it('a supervisor takes the incident and hands it back; a dispatcher acting on a stale view is told why not', async () => {
    // The supervisor takes it: the dispatcher's page follows the live event.
    await control.click('#act-claim');
    await control.waitForSelector('#claim-status[data-handler="operator"]', { timeout: T });
    await disp.waitForSelector('#profile-hidden[data-access="not_handler"]', { timeout: T });
    assert.equal(await disp.textContent('#profile-hidden'), 'Handled by operator: only they or a supervisor can read the profile.');
    assert.equal(await disp.$('#profile-fields'), null, 'the profile left the dispatcher\'s screen');
    assert.equal(await disp.$('#act-claim'), null, 'a dispatcher cannot take it from another operator');
    assert.ok(await disp.isDisabled('#act-close'));
    assert.equal(await disp.getAttribute('#act-close', 'title'), 'Handled by operator: only they or a supervisor can act on it.');

    // "Hand over to…", from the keyboard: an unknown name is refused beside the field.
    await control.focus('#handover summary');
    await control.keyboard.press('Enter');
    await control.waitForSelector('#handover[open] #handover-name', { timeout: T });
    await control.fill('#handover-name', 'nobody-by-that-name');
    await control.press('#handover-name', 'Enter');
    await control.waitForFunction(() => document.querySelector('#handover-error').textContent.length > 0, null, { timeout: T });
    assert.equal(await control.textContent('#handover-error'), 'nobody-by-that-name is not an enabled dispatcher or supervisor.');
    await control.fill('#handover-name', DISPATCHER);
    await control.press('#handover-name', 'Enter');
    await control.waitForSelector(`#claim-status[data-handler="${DISPATCHER}"]`, { timeout: T });
    await disp.waitForSelector('#profile-fields', { timeout: T });
    await disp.waitForFunction(() => [...document.querySelectorAll('.toast')].some((e) => /An incident was handed to you: Medical/.test(e.textContent)), null, { timeout: T });
    assert.ok(!(await disp.isDisabled('#act-close')));

    // The dispatcher's view goes stale (its live stream drops) while the supervisor takes the incident back ...
    await disp.evaluate(() => window.SV_CONTROL.stream.close());
    await control.click('#act-claim');
    await control.waitForSelector('#claim-status[data-handler="operator"]', { timeout: T });
    // ... so the service refuses the dispatcher's action, and the page shows its words, not a generic error.
    await disp.click('#act-false-alarm');
    await disp.waitForSelector('#confirm[open]', { timeout: T });
    await disp.click('#confirm-ok');
    await disp.waitForFunction(
      () => [...document.querySelectorAll('.toast-error')].some((e) => e.textContent === 'Not allowed: the incident is handled by operator: only they or a supervisor may act on it'),
      null,
      { timeout: T },
    );
    // The view catches up: nothing was marked, and the actions are off.
    await disp.waitForSelector('#act-false-alarm[disabled]', { timeout: T });
    assert.equal(await disp.$('#detail .chip-false-alarm'), null);
    assert.equal(await disp.textContent('#claim-status'), 'Handled by operator.');
  });

  it('an auditor sees no locations, no profile and no live stream; a refresh brings new incidents', async () => {
    const aud = await newPage({ viewport: { width: 1440, height: 900 } });
    const asked = [];
    aud.on('request', (r) => asked.push(new URL(r.url()).pathname));
    await aud.goto(urls.control + '/');
    await aud.fill('#login-user', AUDITOR);
    await aud.fill('#login-pass', ROLE_PASSWORD);
    await aud.press('#login-pass', 'Enter');
    await aud.waitForSelector(item(roleIncident), { timeout: T });
    assert.equal(await aud.textContent('#who-role'), 'Auditor');
    await aud.waitForSelector('#conn.conn-static', { timeout: T });
    assert.equal(await aud.textContent('#conn'), 'Not live');
    assert.match(await aud.textContent('#static-note'), /auditors get no live stream/);
    // No map, so no incident or team on one; and no location in what the page holds.
    assert.ok(await aud.isHidden('#map-pane'), 'no map');
    assert.equal(await aud.$('.mk-incident'), null);
    assert.equal(await aud.$('.mk-team'), null);
    assert.ok(await aud.evaluate(() => [...window.SV_CONTROL.incidents.values()].every((i) => !i.location)), 'no locations');
    assert.equal(await aud.textContent(`${item(roleIncident)} .handler`), 'Handled by operator');

    await aud.click(item(roleIncident));
    await aud.waitForSelector('#profile-hidden[data-access="not_for_role"]', { timeout: T });
    assert.equal(await aud.textContent('#profile-hidden'), 'Auditors do not see profiles.');
    assert.equal(await aud.$('#profile-fields'), null);
    assert.equal(await aud.textContent('#detail-location'), 'Not shown to auditors');
    assert.equal(await aud.evaluate(() => window.SV_CONTROL.detail.trail.length), 0, 'no trail');
    assert.ok(await aud.isHidden('#actions'), 'no actions');
    assert.equal(await aud.$('#act-claim'), null);
    assert.equal(await aud.$('#handover'), null);
    assert.equal(await aud.textContent('#claim-status'), 'Handled by operator.');
    // The access log is theirs to read, the supervisor's reason included.
    await aud.waitForFunction((r) => document.querySelector('#access-log').textContent.includes(r), REASON, { timeout: T });
    await axeCheck(aud, 'control room (auditor)');

    // Not live: a new panic is in the live rooms at once, in the auditor's after Refresh.
    const next = await panicFrom(3, 'police');
    await control.waitForSelector(item(next), { timeout: T });
    assert.equal(await aud.$(item(next)), null, 'no live update for an auditor');
    await aud.click('#refresh');
    await aud.waitForSelector(item(next), { timeout: T });
    assert.equal(await aud.$('.mk-incident'), null);
    assert.ok(!asked.includes('/v1/operator/events'), 'the live stream was never asked for');
    assert.ok(!asked.includes('/v1/operator/units'), 'nor the teams');
    assert.equal(await aud.$('#chat'), null, 'no silent chat');
    assert.ok(!asked.some((p) => p.endsWith('/chat')), 'nor asks for it');

    await aud.click('[data-lang-switch="hi"]');
    try {
      assert.equal(await aud.textContent('#who-role'), 'ऑडिटर');
      assert.equal(await aud.textContent('#profile-hidden'), 'ऑडिटर प्रोफ़ाइल नहीं देखते।');
      assert.equal(await aud.textContent('#refresh'), 'ताज़ा करें');
      await axeCheck(aud, 'control room in Hindi (auditor)');
    } finally {
      await aud.click('[data-lang-switch="en"]');
    }
  });

  it('a stop a trustee has not confirmed shows in a banner until it does', async () => {
    assert.ok(await control.isHidden('#forwards-banner'), 'no banner while every trustee answers');
    // One trustee frozen: the stop's shred there times out (the client's
    // 10 s), and a failure past the 1 s bound makes the forward stuck.
    const held = trusteePids()[2];
    process.kill(held, 'SIGSTOP');
    try {
      await sim.click('#students button[data-student="1"]'); // its duress cancel is done
      await sim.click('#phone details.wipe summary');
      await sim.fill('#pin', '2468');
      await sim.click('#stop');
      await control.waitForSelector('#forwards-banner:not([hidden]) p.forward-stop', { timeout: 30_000 });
      const banner = await control.textContent('#forwards-banner');
      assert.match(banner, /^Not yet confirmed by a trustee/);
      assert.match(banner, /has not confirmed 1 stop\(s\) for 1 min: the student's share is not shredded there yet\. Last answer: .+\. The service keeps asking\./);
      assert.equal(await control.locator('#forwards-banner p').count(), 1, 'one line: one trustee, one kind');
      await axeCheck(control, 'control room with the forwards banner');
      await sim.waitForSelector('#phone-status.status-stopped', { timeout: 30_000 });
    } finally {
      process.kill(held, 'SIGCONT');
    }
    // The trustee answers the next attempt: the banner goes.
    await control.waitForSelector('#forwards-banner', { state: 'hidden', timeout: 30_000 });
  });

  it('no page sent a request off loopback, and no page threw', () => {
    assert.deepEqual(offLoopback, []);
    assert.deepEqual(pageErrors, []);
  });
});

describe('map tiles, only when a tile URL is configured', { concurrency: false }, () => {
  let proc;
  let tilesUrls;
  let tileServer;
  const tileRequests = [];
  const TILE = readFileSync(join(ROOT, 'crates/sosvault-server/web/node_modules/leaflet/dist/images/layers-2x.png'));

  before(async () => {
    // A tile server of our own, on loopback: the map must ask it, and nothing else.
    tileServer = createServer((req, res) => {
      tileRequests.push(req.url);
      res.writeHead(200, { 'Content-Type': 'image/png', 'Access-Control-Allow-Origin': '*' });
      res.end(TILE);
    });
    await new Promise((r) => tileServer.listen(0, '127.0.0.1', r));
    const port = tileServer.address().port;
    ({ proc, urls: tilesUrls } = await startDemo({ SOSVAULT_SERVER_TILE_URL: `http://127.0.0.1:${port}/{z}/{x}/{y}.png` }));
    if (!browser) browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
  });

  after(async () => {
    await stopDemo(proc);
    await new Promise((r) => tileServer.close(r));
    if (browser) await browser.close();
  });

  it('the control room draws the configured tiles, and its CSP allows only that origin', async () => {
    const page = await newPage({ viewport: { width: 1280, height: 800 } });
    const resp = await page.goto(tilesUrls.control + '/');
    const port = tileServer.address().port;
    assert.match(resp.headers()['content-security-policy'], new RegExp(`img-src 'self' data: http://127\\.0\\.0\\.1:${port};`));
    await signIn(page, tilesUrls);
    await page.waitForSelector('#map img.leaflet-tile-loaded', { timeout: T });
    assert.ok(tileRequests.length > 0 && tileRequests.every((u) => /^\/\d+\/\d+\/\d+\.png$/.test(u)), tileRequests.join(' '));
    assert.equal(await page.$('#map.map-offline'), null, 'no offline background when tiles are configured');
    assert.match(await page.textContent('.leaflet-control-attribution'), /OpenStreetMap/);
    assert.deepEqual(offLoopback, []);
  });
});
