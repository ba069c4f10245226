// End-to-end test of the web client (web/) in a real headless Chromium against
// a running messenger server with auth on. tests/web/run.sh starts the server and
// passes its address in MESSENGER_URL; run by hand:
//   MESSENGER_URL=http://127.0.0.1:8000 node --test e2e.test.mjs
//
// The tests run in order and share two browser contexts (alice and bob).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawn } from 'node:child_process';
import net from 'node:net';
import os from 'node:os';
import { chromium } from 'playwright-core';

const BASE = (process.env.MESSENGER_URL || 'http://127.0.0.1:8000').replace(/\/$/, '');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const HERE = path.dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = path.join(HERE, 'artifacts');
const TIMEOUT = 10_000;          // for any single UI expectation
const BIN = process.env.MESSENGER_BIN || path.join(HERE, '..', '..', 'build', 'messenger');
const WEB_DIR = process.env.MESSENGER_WEB_DIR || path.join(HERE, '..', '..', 'web');

const run = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e4).toString(36)}`;
const alice = { username: `alice_${run}`, password: 'correct horse battery' };
const bob = { username: `Bob_${run}`, password: 'staple-staple-42' };
const FIRST = 'Hi Bob, this is the first message.';
const REPLY = 'Hello <b>Alice</b> & "friends" <img src=x onerror=alert(1)>';

let browser;
let ctxA, ctxB;
let pageA, pageB;
const pageErrors = [];

fs.mkdirSync(ARTIFACTS, { recursive: true });

async function shot(page, name) {
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`) });
}

// Polls fn until it returns a truthy value (expect-like, without fixed sleeps).
async function waitFor(fn, { timeout = TIMEOUT, interval = 50, message = 'condition' } = {}) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for ${message} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

async function newPage(ctx, label) {
  const page = await ctx.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('pageerror', (err) => pageErrors.push(`${label}: ${err.message}`));
  await page.goto(`${BASE}/`);
  return page;
}

const tid = (page, id) => page.getByTestId(id);

async function fillAuth(page, user, password) {
  await tid(page, 'auth-username').fill(user.username);
  await tid(page, 'auth-password').fill(password ?? user.password);
}

async function expectSignedIn(page, user) {
  await tid(page, 'app-view').waitFor({ state: 'visible' });
  await waitFor(async () => (await tid(page, 'me-name').textContent()) === user.username, { message: 'own name in the top bar' });
  await waitFor(async () => (await tid(page, 'connection-status').getAttribute('data-state')) === 'connected',
    { message: 'live connection indicator' });
}

async function apiJson(method, urlPath, body, token) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(`${BASE}${urlPath}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function messageTexts(page) {
  return tid(page, 'message-list').getByTestId('message-content').allTextContents();
}

before(async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  ctxA = await browser.newContext({ viewport: { width: 1200, height: 760 } });
  ctxB = await browser.newContext({ viewport: { width: 1200, height: 760 } });
  pageA = await newPage(ctxA, 'alice');
  pageB = await newPage(ctxB, 'bob');
});

after(async () => {
  if (browser) await browser.close();
});

test('the page and its assets are served', async () => {
  for (const [p, type] of [['/static/app.js', 'javascript'], ['/static/style.css', 'text/css'], ['/static/favicon.svg', 'image/svg+xml']]) {
    const res = await fetch(`${BASE}${p}`);
    const body = await res.text();        // an unread body would hold its connection (and node) open
    assert.equal(res.status, 200, p);
    assert.ok(body.length > 0, p);
    assert.ok((res.headers.get('content-type') || '').includes(type), `${p}: ${res.headers.get('content-type')}`);
  }
  await tid(pageA, 'auth-view').waitFor({ state: 'visible' });
  assert.equal(await pageA.title(), 'Messenger');
  await shot(pageA, '01-sign-in');
});

test('the SSE parser handles split chunks, CRLF, comments, retry and multi-line data', async () => {
  const out = await pageA.evaluate(async () => {
    const { SseParser } = await import('/static/app.js');
    const stream = '\ufeffretry: 2000\r\n\r\n: keep-alive\n\nid: 1\nevent: message\ndata: {"a":\ndata:  1}\n\n'
      + 'data: no type\r\rid: 2\r\nevent: reset\r\ndata: {"detail":"x"}\r\n\r\n'
      + 'event: ignored-without-data\n\nid: 3\ndata: héllo 🎉\n\ndata: unterminated';
    const results = [];
    // Every way of cutting the stream into two pieces, and one character at a time.
    const cuts = [];
    for (let i = 0; i <= stream.length; i++) cuts.push([stream.slice(0, i), stream.slice(i)]);
    cuts.push([...stream]);
    for (const pieces of cuts) {
      const events = [], retries = [], comments = [];
      const p = new SseParser((e) => events.push(e), { onRetry: (r) => retries.push(r), onComment: (c) => comments.push(c) });
      for (const piece of pieces) p.push(piece);
      p.end();
      results.push(JSON.stringify({ events, retries, comments }));
    }
    return { distinct: [...new Set(results)], first: JSON.parse(results[0]) };
  });
  assert.equal(out.distinct.length, 1, 'the result does not depend on how the stream is cut');
  assert.deepEqual(out.first.retries, [2000]);
  assert.deepEqual(out.first.comments, ['keep-alive']);
  assert.deepEqual(out.first.events, [
    { type: 'message', data: '{"a":\n 1}', lastEventId: '1' },
    { type: 'message', data: 'no type', lastEventId: '1' },
    { type: 'reset', data: '{"detail":"x"}', lastEventId: '2' },
    { type: 'message', data: 'héllo 🎉', lastEventId: '3' },
  ]);
});

test('alice and bob register and log in through the UI', async () => {
  for (const [page, user] of [[pageA, alice], [pageB, bob]]) {
    await fillAuth(page, user);
    await tid(page, 'register-button').click();
    await expectSignedIn(page, user);
    const token = await page.evaluate(() => localStorage.getItem('messenger.token'));
    assert.match(token || '', /^[A-Za-z0-9_-]{43}$/, 'a bearer token is kept in localStorage');
  }
  await tid(pageA, 'conversation-empty').waitFor({ state: 'visible' });
  await shot(pageA, '02-registered-empty-list');

  // Bob logs out and in again with the login button.
  await tid(pageB, 'logout-button').click();
  await tid(pageB, 'auth-view').waitFor({ state: 'visible' });
  assert.equal(await pageB.evaluate(() => localStorage.getItem('messenger.token')), null);
  await fillAuth(pageB, bob);
  await tid(pageB, 'login-button').click();
  await expectSignedIn(pageB, bob);
  // From now on bob's page must never reload: live messages come from the event stream.
  await pageB.evaluate(() => { window.__notReloaded = true; });
});

test('a wrong password shows the API error text', async () => {
  const ctx = await browser.newContext({ viewport: { width: 1200, height: 760 } });
  try {
    const page = await newPage(ctx, 'intruder');
    await fillAuth(page, alice, 'not the password');
    await tid(page, 'login-button').click();
    const err = tid(page, 'auth-error');
    await err.waitFor({ state: 'visible' });
    assert.equal((await err.textContent()).trim(), 'Incorrect username or password');
    assert.equal(await tid(page, 'app-view').isVisible(), false);
    await shot(page, '03-wrong-password');
  } finally {
    await ctx.close();
  }
});

test('alice starts a conversation; bob sees it live and replies; alice sees the reply live', async () => {
  // An unknown user is an error shown from the API.
  await tid(pageA, 'new-conversation-input').fill(`nobody_${run}`);
  await tid(pageA, 'new-conversation-button').click();
  await tid(pageA, 'new-conversation-error').waitFor({ state: 'visible' });
  assert.match(await tid(pageA, 'new-conversation-error').textContent(), /nobody_/);

  // Looked up case-insensitively; the thread opens empty.
  await tid(pageA, 'new-conversation-input').fill(bob.username.toLowerCase());
  await tid(pageA, 'new-conversation-button').click();
  await tid(pageA, 'thread').waitFor({ state: 'visible' });
  await waitFor(async () => (await tid(pageA, 'thread-title').textContent()) === bob.username, { message: "bob's name as the thread title" });
  assert.equal(await tid(pageA, 'new-conversation-error').isVisible(), false);
  assert.equal(await tid(pageA, 'message').count(), 0);

  await tid(pageA, 'message-input').fill(FIRST);
  await tid(pageA, 'message-input').press('Enter');
  await waitFor(async () => (await messageTexts(pageA)).includes(FIRST), { message: "alice's message in her thread" });
  assert.equal(await tid(pageA, 'message-input').inputValue(), '', 'the composer is cleared');
  const item = tid(pageA, 'conversation-item').first();
  await waitFor(async () => (await item.getAttribute('data-username')) === bob.username, { message: 'the conversation in alice\'s list' });
  await shot(pageA, '04-alice-sent');

  // Bob: the conversation appears in the list without a reload.
  const bobItem = tid(pageB, 'conversation-item').filter({ hasText: alice.username });
  await bobItem.waitFor({ state: 'visible' });
  assert.equal(await bobItem.getByTestId('conversation-preview').textContent(), FIRST);
  await bobItem.click();
  await waitFor(async () => (await messageTexts(pageB)).includes(FIRST), { message: "alice's message in bob's thread" });

  // Bob replies (content that must be shown as text, never as markup).
  await tid(pageB, 'message-input').fill(REPLY);
  await tid(pageB, 'send-button').click();
  await waitFor(async () => (await messageTexts(pageB)).includes(REPLY), { message: "bob's reply in his thread" });

  // Alice sees the reply live in the open thread and at the top of her list.
  await waitFor(async () => (await messageTexts(pageA)).includes(REPLY), { message: "bob's reply in alice's open thread" });
  assert.deepEqual(await messageTexts(pageA), [FIRST, REPLY]);
  assert.equal(await tid(pageA, 'message-list').locator('b, img').count(), 0, 'message content is not parsed as HTML');
  await waitFor(async () => (await tid(pageA, 'conversation-preview').first().textContent()) === REPLY, { message: 'the list preview updated live' });
  const mine = await tid(pageA, 'message').evaluateAll((els) => els.map((e) => e.dataset.mine));
  assert.deepEqual(mine, ['true', 'false']);
  assert.equal(await pageB.evaluate(() => window.__notReloaded), true, "bob's page was not reloaded");
  await shot(pageA, '05-alice-live-reply');
  await shot(pageB, '06-bob-thread');
});

test('older messages load when scrolling up, keeping the scroll position', async () => {
  // Tokens from the REST API (a login is a new token; the pages keep theirs).
  const la = await apiJson('POST', '/api/auth/login', { username: alice.username, password: alice.password });
  const lb = await apiJson('POST', '/api/auth/login', { username: bob.username, password: bob.password });
  assert.equal(la.status, 200);
  assert.equal(lb.status, 200);
  const a = la.body, b = lb.body;
  const seeded = [];
  for (let i = 1; i <= 45; i++) {
    const [from, to] = i % 3 === 0 ? [b, a] : [a, b];
    const r = await apiJson('POST', '/api/messages/', {
      receiver_id: to.user.user_id, content: `seed ${i}`, client_message_id: `seed-${run}-${i}`,
    }, from.access_token);
    assert.equal(r.status, 201, JSON.stringify(r.body));
    seeded.push(r.body);
  }
  const total = 47;

  // Bob's open thread received all of them live, each once.
  await waitFor(async () => (await tid(pageB, 'message').count()) === total, { message: `bob's live thread to reach ${total}` });
  const ids = await tid(pageB, 'message').evaluateAll((els) => els.map((e) => e.dataset.messageId));
  assert.equal(new Set(ids).size, total, 'no duplicate message');
  assert.equal(ids[ids.length - 1], seeded[seeded.length - 1].message_id);

  // Alice reloads (the session is restored from localStorage) and opens the thread.
  await pageA.reload();
  await expectSignedIn(pageA, alice);
  await tid(pageA, 'conversation-item').filter({ hasText: bob.username }).click();
  await waitFor(async () => (await messageTexts(pageA)).includes('seed 45'), { message: 'the newest page' });
  const firstPage = await tid(pageA, 'message').count();
  assert.ok(firstPage >= 20 && firstPage < total, `first page renders ${firstPage}`);
  const scroller = tid(pageA, 'message-scroller');
  assert.ok(await scroller.evaluate((s) => s.scrollHeight - s.scrollTop - s.clientHeight < 5), 'opens at the bottom');
  await shot(pageA, '07-thread-newest-page');

  // Scroll up page by page until the first message is there.
  let count = firstPage;
  for (let round = 0; round < 6 && !(await messageTexts(pageA)).includes(FIRST); round++) {
    // Scroll to the top and note where the topmost message is on screen then.
    const anchor = await scroller.evaluate((s) => {
      s.scrollTop = 0;
      const m = s.querySelector('[data-testid="message"]');
      return { id: m.dataset.messageId, top: m.getBoundingClientRect().top };
    });
    const prev = count;
    count = await waitFor(async () => {
      const n = await tid(pageA, 'message').count();
      const status = await tid(pageA, 'history-status').getAttribute('data-state');
      return n > prev && status !== 'loading' ? n : 0;
    }, { message: `an older page (round ${round + 1})` });
    // Prepending does not move what the reader was looking at.
    const top = await pageA.locator(`[data-message-id="${anchor.id}"]`).evaluate((m) => m.getBoundingClientRect().top);
    assert.ok(Math.abs(top - anchor.top) < 2, `the view stays put when older messages are prepended (${anchor.top} -> ${top})`);
  }
  assert.ok(count > 20, `rendered ${count} messages, more than one page`);
  assert.equal(count, total);
  const texts = await messageTexts(pageA);
  assert.equal(texts[0], FIRST);
  assert.equal(texts[1], REPLY);
  assert.equal(texts[texts.length - 1], 'seed 45');
  assert.deepEqual(texts.slice(2), seeded.map((m) => m.content), 'in order, each once');
  await waitFor(async () => (await tid(pageA, 'history-status').getAttribute('data-state')) === 'complete', { message: 'the beginning of the conversation' });
  await scroller.evaluate((s) => { s.scrollTop = 0; });
  const first = tid(pageA, 'message').first();
  assert.ok(await first.isVisible());
  assert.ok(await first.evaluate((m) => {
    const s = document.querySelector('[data-testid="message-scroller"]').getBoundingClientRect();
    const r = m.getBoundingClientRect();
    return r.bottom > s.top && r.top < s.bottom;
  }), 'the first message is scrolled into view');
  await shot(pageA, '08-thread-scrolled-to-first');
});

test('phone-sized screen: list and thread are separate views', async () => {
  const ctx = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  try {
    const page = await newPage(ctx, 'phone');
    const noHorizontalOverflow = () => page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth
      && document.body.scrollWidth <= window.innerWidth);
    await tid(page, 'auth-view').waitFor({ state: 'visible' });
    assert.ok(await noHorizontalOverflow(), 'sign-in fits the width');
    await shot(page, '09-phone-sign-in');

    await fillAuth(page, bob);
    await tid(page, 'login-button').click();
    await expectSignedIn(page, bob);
    const item = tid(page, 'conversation-item').filter({ hasText: alice.username });
    await item.waitFor({ state: 'visible' });
    assert.equal(await tid(page, 'list-pane').isVisible(), true);
    assert.equal(await tid(page, 'thread-pane').isVisible(), false, 'the thread is hidden while the list shows');
    assert.ok(await noHorizontalOverflow(), 'list fits the width');
    await shot(page, '10-phone-list');

    await item.click();
    await waitFor(async () => (await messageTexts(page)).includes('seed 45'), { message: 'the thread on the phone' });
    assert.equal(await tid(page, 'thread-pane').isVisible(), true);
    assert.equal(await tid(page, 'list-pane').isVisible(), false, 'the list is hidden while the thread shows');
    assert.equal(await tid(page, 'back-button').isVisible(), true);
    assert.equal(await tid(page, 'message-input').isVisible(), true);
    assert.ok(await noHorizontalOverflow(), 'thread fits the width');
    const box = await tid(page, 'composer').boundingBox();
    assert.ok(box && box.y + box.height <= 844 + 1 && box.x >= 0 && box.x + box.width <= 390 + 1, 'the composer is on screen');
    // A long unbroken word wraps instead of widening the page.
    await tid(page, 'message-input').fill('x'.repeat(300));
    await tid(page, 'send-button').click();
    await waitFor(async () => (await messageTexts(page)).includes('x'.repeat(300)), { message: 'the long message' });
    assert.ok(await noHorizontalOverflow(), 'a long word wraps');
    assert.ok(await tid(page, 'message-scroller').evaluate((s) => s.scrollWidth <= s.clientWidth), 'no sideways scrolling in the thread');
    await shot(page, '11-phone-thread');

    await tid(page, 'back-button').click();
    await tid(page, 'list-pane').waitFor({ state: 'visible' });
    assert.equal(await tid(page, 'thread-pane').isVisible(), false);

    // The browser's back gesture also returns from a thread to the list, without leaving the app.
    await item.click();
    await tid(page, 'thread-pane').waitFor({ state: 'visible' });
    await page.goBack();
    await tid(page, 'list-pane').waitFor({ state: 'visible' });
    assert.equal(await tid(page, 'thread-pane').isVisible(), false);
    assert.equal(await tid(page, 'app-view').isVisible(), true);
  } finally {
    await ctx.close();
  }
});

async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)); });
  });
}

// A server of this test's own, to stop and start under a connected page.
function startServer(port, dataDir) {
  const proc = spawn(BIN, ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, '--web-dir', WEB_DIR,
    '--argon2-memory-kib', '1024', '--argon2-iterations', '1', '--log-level', 'warn'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  proc.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const ready = waitFor(async () => {
    const r = await fetch(`http://127.0.0.1:${port}/health`);
    await r.text();
    return r.status === 200;
  }, { timeout: 10_000, message: `the second server on port ${port}` });
  return { proc, exited, ready, log: () => log };
}

// Waits for the page's stream to connect again; the 'online' event it would get from
// the browser when a network comes back cuts its back-off wait short.
async function waitForReconnection(page, message) {
  await waitFor(async () => {
    if ((await tid(page, 'connection-status').getAttribute('data-state')) === 'connected') return true;
    await page.evaluate(() => window.dispatchEvent(new Event('online')));
    return false;
  }, { timeout: 20_000, interval: 200, message });
}

async function stopServer(srv) {
  srv.proc.kill('SIGTERM');
  const { code, signal } = await srv.exited;
  assert.equal(code, 0, `the server exits 0 on SIGTERM (signal ${signal}); log: ${srv.log()}`);
}

test('the live stream reconnects with Last-Event-ID and replays what was missed; a long gap resets', { timeout: 90_000 }, async (t) => {
  if (!fs.existsSync(BIN)) {
    t.skip(`no server binary at ${BIN}`);
    return;
  }
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'messenger-web-e2e-'));
  let srv = startServer(port, dataDir);
  const ctx = await browser.newContext({ viewport: { width: 1000, height: 700 } });
  try {
    await srv.ready;
    const api = async (method, p, body, token) => {
      const headers = { 'Content-Type': 'application/json' };
      if (token) headers.Authorization = `Bearer ${token}`;
      const res = await fetch(`${base}${p}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      const text = await res.text();
      return { status: res.status, body: text ? JSON.parse(text) : null };
    };
    const carol = { username: `carol_${run}`, password: 'carol-password' };
    const dave = { username: `dave_${run}`, password: 'dave-password' };
    for (const u of [carol, dave]) assert.equal((await api('POST', '/api/users', u)).status, 201);
    const d = (await api('POST', '/api/auth/login', dave)).body;
    const send = async (content) => {
      const r = await api('POST', '/api/messages/', { receiver_id: carolId, content, client_message_id: `${run}-${content}` }, d.access_token);
      assert.equal(r.status, 201, JSON.stringify(r.body));
      return r.body;
    };

    const page = await ctx.newPage();
    page.setDefaultTimeout(TIMEOUT);
    page.on('pageerror', (err) => pageErrors.push(`carol: ${err.message}`));
    const eventRequests = [];
    page.on('request', (r) => { if (r.url().includes('/api/events')) eventRequests.push(r.headers()['last-event-id'] || null); });
    await page.goto(`${base}/`);
    await fillAuth(page, carol);
    await tid(page, 'login-button').click();
    await expectSignedIn(page, carol);
    const carolId = await page.evaluate(() => JSON.parse(localStorage.getItem('messenger.user')).user_id);
    await page.evaluate(() => { window.__notReloaded = true; });

    const m1 = await send('before the restart');
    const item = tid(page, 'conversation-item').filter({ hasText: dave.username });
    await item.click();
    await waitFor(async () => (await messageTexts(page)).includes(m1.content), { message: 'the first live message' });

    // The server stops: its streams end, and the page says it is reconnecting.
    await page.route('**/api/events', (route) => route.abort('connectionrefused'));
    await stopServer(srv);
    await waitFor(async () => (await tid(page, 'connection-status').getAttribute('data-state')) === 'reconnecting',
      { message: 'the reconnecting indicator' });
    await shot(page, '12-reconnecting');

    // Started again; messages are sent while the page cannot connect yet.
    srv = startServer(port, dataDir);
    await srv.ready;
    const missed = [await send('missed 1'), await send('missed 2'), await send('missed 3')];
    const before = eventRequests.length;
    await page.unroute('**/api/events');
    await waitForReconnection(page, 'the reconnection');
    await waitFor(async () => (await messageTexts(page)).includes('missed 3'), { message: 'the replayed messages' });
    assert.deepEqual(await messageTexts(page), [m1.content, ...missed.map((m) => m.content)], 'replayed once each, in order');
    assert.ok(eventRequests.slice(before).includes(m1.message_id), `reconnected with Last-Event-ID ${m1.message_id} (sent: ${eventRequests.join(', ')})`);
    assert.equal(await tid(page, 'conversation-preview').first().textContent(), 'missed 3');
    await shot(page, '13-reconnected-replayed');

    // A gap of more than 1000 messages: the server sends `event: reset` and the page reloads through the REST API.
    await page.route('**/api/events', (route) => route.abort('connectionrefused'));
    await stopServer(srv);
    srv = startServer(port, dataDir);
    await srv.ready;
    const N = 1005;
    let next = 1;
    const worker = async () => { while (next <= N) { const i = next++; await send(`bulk ${i}`); } };
    await Promise.all(Array.from({ length: 16 }, worker));
    await page.unroute('**/api/events');
    await waitForReconnection(page, 'the reconnection after the long gap');
    const newest = (await api('GET', `/api/messages/conversation/${m1.conversation_id}?limit=1`, undefined, d.access_token)).body.data[0];
    await waitFor(async () => (await messageTexts(page)).at(-1) === newest.content, { message: 'the reloaded thread' });
    await waitFor(async () => (await tid(page, 'message').count()) <= 40, { message: 'the thread reloaded as a fresh page, not 1000 live events' });
    assert.equal(await tid(page, 'conversation-preview').first().textContent(), newest.content);
    assert.equal(await page.evaluate(() => window.__notReloaded), true, 'the page itself was not reloaded');
    await shot(page, '14-after-reset');
  } finally {
    await ctx.close();
    if (srv.proc.exitCode === null && srv.proc.signalCode === null) await stopServer(srv);
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});

test('logging out revokes the token and returns to the sign-in form', async () => {
  const token = await pageA.evaluate(() => localStorage.getItem('messenger.token'));
  await tid(pageA, 'logout-button').click();
  await tid(pageA, 'auth-view').waitFor({ state: 'visible' });
  assert.equal(await pageA.evaluate(() => localStorage.getItem('messenger.token')), null);
  await waitFor(async () => (await apiJson('GET', '/api/auth/me', undefined, token)).status === 401, { message: 'the old token to be rejected' });
  await pageA.reload();
  await tid(pageA, 'auth-view').waitFor({ state: 'visible' });
  assert.deepEqual(pageErrors, [], 'no uncaught errors in the pages');
});
