// Browser tests of the control room, the team screen and the student simulator.
//
// Starts the real demo (`target/debug/sosvault demo`: three trustees and the
// dispatch service on loopback), drives Debian's Chromium with playwright-core,
// and checks what an operator, a team and a student would see. Run from the
// repository root after `cargo build --workspace` and `npm ci --prefix tests/ui`:
//
//     node --test tests/ui/
//
// Knobs: SOSVAULT_BIN (default target/debug/sosvault), CHROMIUM (default
// /usr/bin/chromium), SCREENSHOTS (default docs/screenshots; "0" to skip).

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
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.SCREENSHOTS === '0' ? null : resolve(ROOT, process.env.SCREENSHOTS || 'docs/screenshots');
const AXE = readFileSync(join(HERE, 'node_modules/axe-core/axe.min.js'), 'utf8');
const T = 15_000; // the longest any single condition may take

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);
const offLoopback = []; // every request a page tried to send elsewhere
const pageErrors = []; // uncaught errors in the pages

let demo; // the demo process
let browser;
let urls; // {control, sim, password}
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
      if ((m = /^Control room: (https?:\/\/\S+)/.exec(line))) found.control = m[1].replace(/\/$/, '');
      if ((m = /^Student simulator: (http:\/\/\S+)/.exec(line))) found.sim = m[1].replace(/\/$/, '');
      if ((m = /^Login: (\S+) \/ (\S+)/.exec(line))) {
        found.user = m[1];
        found.password = m[2];
      }
      if (found.control && found.sim && found.password && !done) {
        done = true;
        clearTimeout(timer);
        resolveStart({ proc, urls: found });
      }
    });
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
    ({ proc: demo, urls } = await startDemo());
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
  });

  it('the profile is hidden before the trustees release it and shown after, on both screens', async () => {
    await control.click(item(incident));
    await control.waitForSelector('#profile-hidden', { timeout: T });
    assert.match(await control.textContent('#profile-hidden'), /Sealed/);
    assert.equal(await control.$('#profile-fields'), null, 'no profile fields before release');
    assert.equal(await team.$('#profile-fields'), null);
    assert.match(await team.textContent('#profile-hidden'), /sealed/i);
    const release = await control.getAttribute('#detail-release .release', 'data-have');
    assert.ok(Number(release) < 2, 'fewer than t shares are in');

    for (const pid of trustees.slice(0, 2)) process.kill(pid, 'SIGCONT');
    await control.waitForSelector('#profile-fields', { timeout: 30_000 });
    assert.match(await control.textContent('#profile-fields'), /Ananya Sharma/);
    assert.match(await control.textContent('#profile-fields'), /Asthma/);
    assert.match(await control.textContent('.logged-banner'), /This view is logged/);
    // And the view is in the log, under the operator's name.
    await control.waitForFunction(() => /operator operator/.test(document.querySelector('#access-log').textContent), null, { timeout: T });
    assert.ok(await control.isVisible('#profile img.photo'), 'the photo is shown');
    await team.waitForSelector('#profile-fields', { timeout: T });
    assert.match(await team.textContent('#profile-fields'), /Ananya Sharma/);
    assert.match(await team.textContent('#profile-fields'), /B\+/);
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

  it('the Hindi switch relabels the control room and the team screen', async () => {
    await control.click('[data-lang-switch="hi"]');
    assert.equal(await control.textContent('#list-heading'), 'घटनाएँ');
    assert.equal(await control.textContent('#act-close'), 'घटना बंद करें');
    assert.equal(await control.getAttribute('html', 'lang'), 'hi');
    assert.match(await control.textContent(item(incident)), /पुलिस/);
    await team.tap('[data-lang-switch="hi"]');
    try {
      assert.equal((await team.textContent('#job-heading')).trim(), 'पुलिस');
      assert.equal(await team.textContent('#ack-done span[data-i18n]'), 'पुष्टि हो गई। नियंत्रण कक्ष देख सकता है कि आप रास्ते में हैं।');
      await shot(control, 'control-room-hi.png');
      await axeCheck(control, 'control room in Hindi');
      await axeCheck(team, 'team screen in Hindi');
    } finally {
      await control.click('[data-lang-switch="en"]');
      await team.tap('[data-lang-switch="en"]');
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
    await control.keyboard.press('Enter');
    await control.waitForSelector('#detail .chip-false-alarm', { timeout: T });
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
  });

  it('reassign releases the team (its screen says so) and the next nearest team takes over', async () => {
    const name = () => control.$eval(`${item(incident)} .team-name`, (e) => e.textContent).catch(() => '');
    assert.equal(await name(), 'PCR Talwandi 2');
    await control.click('#act-reassign');
    await control.waitForSelector('#confirm[open]', { timeout: T });
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
  });

  it('closing from the keyboard closes the incident', async () => {
    await control.focus('#act-close');
    await control.keyboard.press('Enter');
    await control.waitForSelector('#confirm[open]', { timeout: T });
    await control.keyboard.press('Enter');
    await control.waitForSelector('#detail .chip-status-closed', { timeout: T });
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
