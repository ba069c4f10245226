// Messenger web client: a dependency-free single-page app (ES2020 module).
//
// Everything the server sends is rendered with textContent / createElement;
// no user data ever goes through innerHTML.
//
// Live updates come from GET /api/events. EventSource cannot send an
// Authorization header, so the stream is read with fetch() and a small SSE
// parser (SseParser below), with reconnection, back-off and Last-Event-ID.

const TOKEN_KEY = 'messenger.token';
const USER_KEY = 'messenger.user';
const PAGE_SIZE = 20;            // messages per history page
const LIST_PAGE_SIZE = 20;       // conversations per list page
const LOAD_OLDER_THRESHOLD = 120; // px from the top that triggers the next older page
const STICK_TO_BOTTOM_PX = 80;   // "near the bottom": follow new messages
const STALL_TIMEOUT_MS = 45000;  // no byte (event or heartbeat) for this long: reconnect
const BACKOFF_MAX_MS = 30000;

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- state

const state = {
  token: null,
  me: null,                     // {user_id, username}
  conversations: new Map(),     // conversation_id -> {conversation_id, other_id, last_message_at, last_message_content}
  listCursor: null,             // next_cursor of the conversation list (null: all loaded)
  listLoaded: false,
  usernames: new Map(),         // user_id -> username | Promise
  thread: null,                 // see openThread()
  events: null,                 // see EventStream
};

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
    this.detail = detail;
  }
}

function detailText(body, status) {
  if (body && typeof body.detail === 'string') return body.detail;
  if (body && Array.isArray(body.detail)) {           // FastAPI-style validation list
    return body.detail.map((d) => (d && d.msg) || JSON.stringify(d)).join('; ');
  }
  return `Request failed (HTTP ${status})`;
}

async function api(method, path, body, { auth = true } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (auth && state.token) headers.Authorization = `Bearer ${state.token}`;
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (err) {
    throw new ApiError(0, 'Cannot reach the server. Check your connection and try again.');
  }
  if (res.status === 204) return null;
  let data = null;
  const text = await res.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!res.ok) {
    const e = new ApiError(res.status, detailText(data, res.status));
    if (res.status === 401 && auth && state.token) sessionExpired(e.detail);
    throw e;
  }
  return data;
}

const q = (params) => {
  const s = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined) s.set(k, String(v));
  return s.toString();
};

// ---------------------------------------------------------------- helpers

function uuid4() {
  if (globalThis.crypto && typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));     // insecure contexts lack randomUUID
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// Sort key of a v1 timeuuid: its 60-bit timestamp, then the id itself.
function timeuuidKey(id) {
  const h = String(id).toLowerCase();
  const ts = h.slice(15, 18) + h.slice(9, 13) + h.slice(0, 8); // time_hi (without version), time_mid, time_low
  return ts.padStart(15, '0') + h;
}

function compareMessages(a, b) {
  const ka = a._key, kb = b._key;
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('data-') || k.startsWith('aria-') || k === 'role' || k === 'type' || k === 'title' || k === 'datetime') e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

function shortTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const now = new Date();
  return d.toDateString() === now.toDateString() ? timeFmt.format(d) : dayFmt.format(d);
}

function fullTime(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '' : fullFmt.format(d);
}

function showError(node, message) {
  if (message) {
    node.textContent = message;
    node.hidden = false;
  } else {
    node.textContent = '';
    node.hidden = true;
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- usernames

async function usernameOf(userId) {
  const known = state.usernames.get(userId);
  if (typeof known === 'string') return known;
  if (known) return known;                          // a pending look-up
  const p = api('GET', `/api/users/${encodeURIComponent(userId)}`)
    .then((u) => { state.usernames.set(userId, u.username); return u.username; })
    .catch((e) => { state.usernames.delete(userId); if (e.status === 401) throw e; return null; });
  state.usernames.set(userId, p);
  return p;
}

// ---------------------------------------------------------------- auth

function saveSession(token, user) {
  state.token = token;
  state.me = user;
  state.usernames.set(user.user_id, user.username);
  try {
    localStorage.setItem(TOKEN_KEY, token);
    localStorage.setItem(USER_KEY, JSON.stringify(user));
  } catch { /* private mode: the session lasts as long as the page */ }
}

function clearSession() {
  state.token = null;
  state.me = null;
  try {
    localStorage.removeItem(TOKEN_KEY);
    localStorage.removeItem(USER_KEY);
  } catch { /* ignore */ }
}

function readAuthForm() {
  return { username: $('auth-username').value.trim(), password: $('auth-password').value };
}

function setAuthBusy(busy) {
  $('login-button').disabled = busy;
  $('register-button').disabled = busy;
  $('auth-form').setAttribute('aria-busy', busy ? 'true' : 'false');
}

async function login(username, password) {
  const r = await api('POST', '/api/auth/login', { username, password }, { auth: false });
  saveSession(r.access_token, r.user);
}

async function onLogin(ev) {
  ev.preventDefault();
  const { username, password } = readAuthForm();
  if (!username || !password) {
    showError($('auth-error'), 'Enter a username and a password.');
    return;
  }
  setAuthBusy(true);
  showError($('auth-error'), null);
  try {
    await login(username, password);
    $('auth-password').value = '';
    enterApp();
  } catch (e) {
    showError($('auth-error'), e.message);
  } finally {
    setAuthBusy(false);
  }
}

async function onRegister() {
  const { username, password } = readAuthForm();
  if (!username || !password) {
    showError($('auth-error'), 'Choose a username and a password (at least 8 characters).');
    return;
  }
  setAuthBusy(true);
  showError($('auth-error'), null);
  try {
    await api('POST', '/api/users', { username, password }, { auth: false });
    await login(username, password);
    $('auth-password').value = '';
    enterApp();
  } catch (e) {
    showError($('auth-error'), e.message);
  } finally {
    setAuthBusy(false);
  }
}

async function onLogout() {
  const token = state.token;
  leaveApp();
  if (token) {
    try {
      await fetch('/api/auth/logout', { method: 'POST', headers: { Authorization: `Bearer ${token}` } });
    } catch { /* the token is forgotten here either way */ }
  }
}

function sessionExpired(detail) {
  if (!state.token) return;
  leaveApp();
  showError($('auth-error'), `Your session has ended (${detail}). Please log in again.`);
}

function leaveApp() {
  if (state.events) state.events.stop();
  state.events = null;
  clearSession();
  state.conversations.clear();
  state.listCursor = null;
  state.listLoaded = false;
  state.thread = null;
  state.usernames.clear();
  $('conversation-list').replaceChildren();
  $('message-list').replaceChildren();
  closeThreadView();
  showError($('global-error'), null);
  showError($('new-conversation-error'), null);
  setConnection('offline', 'Offline');
  $('app-view').hidden = true;
  $('auth-view').hidden = false;
  showError($('auth-error'), null);
  $('auth-username').focus();
}

function enterApp() {
  $('auth-view').hidden = true;
  $('app-view').hidden = false;
  $('me-name').textContent = state.me.username;
  document.title = `Messenger: ${state.me.username}`;
  setPane('list');
  reloadConversations();
  state.events = new EventStream();
  state.events.start();
}

// ---------------------------------------------------------------- conversation list

function sortedConversations() {
  return [...state.conversations.values()].sort((a, b) => {
    if (a.last_message_at !== b.last_message_at) return a.last_message_at < b.last_message_at ? 1 : -1;
    return a.conversation_id < b.conversation_id ? 1 : -1;
  });
}

function conversationFromApi(c) {
  return {
    conversation_id: c.conversation_id,
    other_id: c.user2_id === state.me.user_id ? c.user1_id : c.user2_id,
    last_message_at: c.last_message_at || '',
    last_message_content: c.last_message_content,
  };
}

let listGeneration = 0;

async function reloadConversations() {
  const gen = ++listGeneration;
  try {
    const page = await api('GET', `/api/conversations/user/${encodeURIComponent(state.me.user_id)}?${q({ limit: LIST_PAGE_SIZE })}`);
    if (gen !== listGeneration || !state.me) return;
    state.conversations.clear();
    for (const c of page.data) {
      const conv = conversationFromApi(c);
      state.conversations.set(conv.conversation_id, conv);
    }
    state.listCursor = page.next_cursor;
    state.listLoaded = true;
    showError($('global-error'), null);
    renderConversations();
  } catch (e) {
    if (gen === listGeneration && state.me) showError($('global-error'), `Could not load conversations: ${e.message}`);
  }
}

async function loadMoreConversations(limit = LIST_PAGE_SIZE) {
  if (!state.listCursor) return false;
  const gen = listGeneration;
  const page = await api('GET', `/api/conversations/user/${encodeURIComponent(state.me.user_id)}?${q({ limit, before_conversation_id: state.listCursor })}`);
  if (gen !== listGeneration || !state.me) return false;
  for (const c of page.data) {
    const conv = conversationFromApi(c);
    if (!state.conversations.has(conv.conversation_id)) state.conversations.set(conv.conversation_id, conv);
  }
  state.listCursor = page.next_cursor;
  renderConversations();
  return true;
}

function renderConversations() {
  const list = $('conversation-list');
  const openId = state.thread && state.thread.conversationId;
  const focused = document.activeElement && list.contains(document.activeElement)
    ? document.activeElement.dataset.conversationId : null;
  const items = sortedConversations().map((c) => {
    const name = state.usernames.get(c.other_id);
    const nameText = typeof name === 'string' ? name : '…';
    if (typeof name !== 'string') {
      usernameOf(c.other_id).then((n) => { if (n) renderConversations(); }).catch(() => {});
    }
    const preview = c.last_message_content === null || c.last_message_content === undefined
      ? 'No messages yet'
      : (c.last_message_content === '' ? '(empty message)' : c.last_message_content);
    const btn = el('button', {
      type: 'button',
      class: 'conversation' + (c.conversation_id === openId ? ' active' : ''),
      'data-testid': 'conversation-item',
      'data-conversation-id': c.conversation_id,
      'data-user-id': c.other_id,
      'data-username': typeof name === 'string' ? name : null,
      'aria-current': c.conversation_id === openId ? 'true' : null,
    },
    el('span', { class: 'conversation-top' },
      el('span', { class: 'conversation-name', 'data-testid': 'conversation-name', text: nameText }),
      el('time', { class: 'conversation-time', datetime: c.last_message_at, title: fullTime(c.last_message_at), text: shortTime(c.last_message_at) })),
    el('span', { class: 'conversation-preview', 'data-testid': 'conversation-preview', text: preview }));
    btn.addEventListener('click', () => openThread(c.other_id, nameText === '…' ? null : nameText, c.conversation_id));
    return el('li', {}, btn);
  });
  list.replaceChildren(...items);
  if (focused) {
    const again = list.querySelector(`[data-conversation-id="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
  $('conversation-empty').hidden = !(state.listLoaded && items.length === 0);
  $('conversations-more').hidden = !state.listCursor;
}

// A message (sent or received) moves its conversation to the top.
function noteMessageInList(m) {
  const other = m.sender_id === state.me.user_id ? m.receiver_id : m.sender_id;
  const existing = state.conversations.get(m.conversation_id);
  if (existing) {
    if (existing.last_message_at && existing.last_message_at > m.created_at) return; // an older one
    existing.last_message_at = m.created_at;
    existing.last_message_content = m.content;
  } else {
    state.conversations.set(m.conversation_id, {
      conversation_id: m.conversation_id,
      other_id: other,
      last_message_at: m.created_at,
      last_message_content: m.content,
    });
  }
  renderConversations();
}

async function onNewConversation(ev) {
  ev.preventDefault();
  const input = $('new-conversation-input');
  const name = input.value.trim();
  const errNode = $('new-conversation-error');
  if (!name) {
    showError(errNode, 'Type a username.');
    return;
  }
  showError(errNode, null);
  $('new-conversation-button').disabled = true;
  try {
    const user = await api('GET', `/api/users?${q({ username: name })}`);
    if (user.user_id === state.me.user_id) {
      showError(errNode, 'That is you. Pick someone else to talk to.');
      return;
    }
    state.usernames.set(user.user_id, user.username);
    input.value = '';
    await openThread(user.user_id, user.username, null);
  } catch (e) {
    showError(errNode, e.status === 404 ? `No user named "${name}". (${e.message})` : e.message);
  } finally {
    $('new-conversation-button').disabled = false;
  }
}

// The conversation with a user, if the list (or its next pages) has it.
async function findConversationWith(userId) {
  for (const c of state.conversations.values()) if (c.other_id === userId) return c.conversation_id;
  for (let i = 0; i < 20 && state.listCursor; i++) {
    if (!(await loadMoreConversations(100))) break;
    for (const c of state.conversations.values()) if (c.other_id === userId) return c.conversation_id;
  }
  return null;
}

// ---------------------------------------------------------------- thread

const narrowScreen = window.matchMedia('(max-width: 720px)');

// On a phone the list and the thread are two views. Opening a thread there adds a
// history entry, so the browser's (or the phone's) back gesture returns to the list.
function setPane(pane) {
  const view = $('app-view');
  if (pane === 'thread' && view.dataset.pane !== 'thread' && narrowScreen.matches
      && !(history.state && history.state.messengerPane === 'thread')) {
    history.pushState({ messengerPane: 'thread' }, '');
  }
  view.dataset.pane = pane;
}

function showList() {
  if (history.state && history.state.messengerPane === 'thread') history.back();   // popstate shows the list
  else setPane('list');
}

function closeThreadView() {
  $('thread').hidden = true;
  $('thread-placeholder').hidden = false;
}

async function openThread(otherId, otherName, conversationId) {
  const thread = {
    otherId,
    otherName: otherName || '…',
    conversationId: conversationId || null,
    messages: new Map(),        // message_id -> message
    order: [],                  // messages, oldest first
    cursor: null,               // next_cursor towards older messages
    complete: false,            // the first message is loaded
    loadingOlder: false,
    generation: 0,
    pendingKey: null,           // client_message_id of the unsent text
    pendingContent: null,
    sending: false,
  };
  state.thread = thread;
  $('thread-placeholder').hidden = true;
  $('thread').hidden = false;
  $('thread').dataset.userId = otherId;
  $('thread-title').textContent = thread.otherName;
  $('message-list').replaceChildren();
  showError($('thread-error'), null);
  setPane('thread');
  renderConversations();
  if (!otherName) {
    usernameOf(otherId).then((n) => {
      if (n && state.thread === thread) { thread.otherName = n; $('thread-title').textContent = n; }
    }).catch(() => {});
  }
  if (!thread.conversationId) {
    setHistoryStatus('Loading…');
    try {
      thread.conversationId = await findConversationWith(otherId);
    } catch (e) {
      if (state.thread === thread) showError($('thread-error'), e.message);
    }
    if (state.thread !== thread) return;
    renderConversations();
  }
  $('thread').dataset.conversationId = thread.conversationId || '';
  if (thread.conversationId) await loadInitialMessages(thread);
  else {
    thread.complete = true;
    setHistoryStatus('No messages yet. Say hello!');
  }
  if (state.thread === thread && window.matchMedia('(min-width: 721px)').matches) $('message-input').focus();
}

function setHistoryStatus(text) {
  $('history-status').textContent = text;
}

function updateHistoryStatus(thread) {
  if (thread.loadingOlder) setHistoryStatus('Loading older messages…');
  else if (thread.complete) setHistoryStatus(thread.order.length ? 'This is the beginning of the conversation.' : 'No messages yet. Say hello!');
  else setHistoryStatus('Scroll up for older messages');
  $('history-status').dataset.state = thread.loadingOlder ? 'loading' : thread.complete ? 'complete' : 'more';
}

async function loadInitialMessages(thread) {
  const gen = ++thread.generation;
  thread.messages.clear();
  thread.order = [];
  thread.cursor = null;
  thread.complete = false;
  thread.loadingOlder = true;
  updateHistoryStatus(thread);
  try {
    const page = await api('GET', `/api/messages/conversation/${encodeURIComponent(thread.conversationId)}?${q({ limit: PAGE_SIZE })}`);
    if (state.thread !== thread || gen !== thread.generation) return;
    thread.loadingOlder = false;
    $('message-list').replaceChildren();
    addMessages(thread, page.data, 'bottom');
    thread.cursor = page.next_cursor;
    thread.complete = !page.next_cursor;
    updateHistoryStatus(thread);
    scrollToBottom();
    await fillViewport(thread);
  } catch (e) {
    if (state.thread !== thread || gen !== thread.generation) return;
    thread.loadingOlder = false;
    updateHistoryStatus(thread);
    if (e.status === 404) {            // not created yet after all: an empty thread
      thread.complete = true;
      updateHistoryStatus(thread);
    } else {
      showError($('thread-error'), `Could not load messages: ${e.message}`);
    }
  }
}

// Load older pages while the messages do not fill the scroller (no scroll bar to scroll up with).
async function fillViewport(thread) {
  const sc = $('message-scroller');
  for (let i = 0; i < 10; i++) {
    if (state.thread !== thread || thread.complete || !thread.cursor) return;
    if (sc.scrollHeight > sc.clientHeight + LOAD_OLDER_THRESHOLD) return;
    if (!(await loadOlder(thread))) return;
  }
}

async function loadOlder(thread) {
  if (thread.loadingOlder || thread.complete || !thread.cursor || !thread.conversationId) return false;
  const gen = thread.generation;
  thread.loadingOlder = true;
  updateHistoryStatus(thread);
  try {
    const page = await api('GET', `/api/messages/conversation/${encodeURIComponent(thread.conversationId)}?${q({ limit: PAGE_SIZE, before_message_id: thread.cursor })}`);
    if (state.thread !== thread || gen !== thread.generation) return false;
    // Keep what is on screen where it is: remember the distance from the bottom.
    const sc = $('message-scroller');
    const fromBottom = sc.scrollHeight - sc.scrollTop;
    addMessages(thread, page.data, 'top');
    thread.cursor = page.next_cursor;
    thread.complete = !page.next_cursor;
    thread.loadingOlder = false;
    updateHistoryStatus(thread);
    sc.scrollTop = sc.scrollHeight - fromBottom;
    return true;
  } catch (e) {
    if (state.thread === thread && gen === thread.generation) {
      thread.loadingOlder = false;
      updateHistoryStatus(thread);
      showError($('thread-error'), `Could not load older messages: ${e.message}`);
    }
    return false;
  }
}

function onScroll() {
  const thread = state.thread;
  if (!thread) return;
  const sc = $('message-scroller');
  if (sc.scrollTop < LOAD_OLDER_THRESHOLD) loadOlder(thread);
}

function isNearBottom() {
  const sc = $('message-scroller');
  return sc.scrollHeight - sc.scrollTop - sc.clientHeight < STICK_TO_BOTTOM_PX;
}

function scrollToBottom() {
  const sc = $('message-scroller');
  sc.scrollTop = sc.scrollHeight;
}

function renderMessage(m) {
  const mine = m.sender_id === state.me.user_id;
  return el('li', {
    class: 'message ' + (mine ? 'mine' : 'theirs'),
    'data-testid': 'message',
    'data-message-id': m.message_id,
    'data-sender-id': m.sender_id,
    'data-mine': mine ? 'true' : 'false',
  },
  el('div', { class: 'bubble' },
    el('span', { class: 'visually-hidden', text: mine ? 'You: ' : `${state.thread ? state.thread.otherName : ''}: ` }),
    el('span', { class: 'content' + (m.content === '' ? ' empty' : ''), 'data-testid': 'message-content', text: m.content === '' ? '(empty message)' : m.content }),
    el('time', { class: 'message-time', datetime: m.created_at, title: fullTime(m.created_at), text: shortTime(m.created_at) })));
}

// Adds messages not shown yet, keeping the list in timeuuid order.
function addMessages(thread, messages, hint) {
  const list = $('message-list');
  const fresh = [];
  for (const m of messages) {
    if (!m || thread.messages.has(m.message_id)) continue;
    m._key = timeuuidKey(m.message_id);
    thread.messages.set(m.message_id, m);
    fresh.push(m);
  }
  if (!fresh.length) return 0;
  fresh.sort(compareMessages);
  const order = thread.order;
  if (hint === 'top' && (!order.length || compareMessages(fresh[fresh.length - 1], order[0]) < 0)) {
    list.prepend(...fresh.map(renderMessage));
    thread.order = fresh.concat(order);
  } else if (!order.length || compareMessages(fresh[0], order[order.length - 1]) > 0) {
    list.append(...fresh.map(renderMessage));
    thread.order = order.concat(fresh);
  } else {
    // Rare: interleaved. Insert each one before the first newer message.
    for (const m of fresh) {
      let i = order.findIndex((o) => compareMessages(o, m) > 0);
      if (i < 0) i = order.length;
      const node = renderMessage(m);
      if (i === order.length) list.append(node);
      else list.insertBefore(node, list.querySelector(`[data-message-id="${CSS.escape(order[i].message_id)}"]`));
      order.splice(i, 0, m);
    }
  }
  $('thread').dataset.count = String(thread.order.length);
  return fresh.length;
}

function messageBelongsToThread(thread, m) {
  if (thread.conversationId) return m.conversation_id === thread.conversationId;
  const me = state.me.user_id;
  return (m.sender_id === me && m.receiver_id === thread.otherId) || (m.sender_id === thread.otherId && m.receiver_id === me);
}

// A message that is now in the store (from the event stream or our own send).
function onMessage(m) {
  if (!state.me || !m || !m.message_id) return;
  noteMessageInList(m);
  const thread = state.thread;
  if (!thread || !messageBelongsToThread(thread, m)) return;
  if (!thread.conversationId) {
    thread.conversationId = m.conversation_id;
    $('thread').dataset.conversationId = m.conversation_id;
    renderConversations();
  }
  const follow = isNearBottom() || m.sender_id === state.me.user_id;
  if (addMessages(thread, [m], 'bottom')) {
    updateHistoryStatus(thread);
    if (follow) scrollToBottom();
  }
}

async function onSend(ev) {
  ev.preventDefault();
  const thread = state.thread;
  if (!thread || thread.sending) return;
  const input = $('message-input');
  const content = input.value;
  if (!content.trim()) return;
  // The same text after a failure keeps its key, so a retry cannot send it twice.
  if (thread.pendingContent !== content || !thread.pendingKey) {
    thread.pendingKey = uuid4();
    thread.pendingContent = content;
  }
  const body = {
    sender_id: state.me.user_id,
    receiver_id: thread.otherId,
    content,
    client_message_id: thread.pendingKey,
  };
  thread.sending = true;
  $('send-button').disabled = true;
  $('composer').setAttribute('aria-busy', 'true');
  showError($('thread-error'), null);
  try {
    let m;
    for (let attempt = 0; ; attempt++) {
      try {
        m = await api('POST', '/api/messages/', body);
        break;
      } catch (e) {
        // Network failures and 5xx are retried with the same key; client errors are not.
        if (attempt >= 2 || (e.status !== 0 && e.status < 500)) throw e;
        await sleep(400 * (attempt + 1));
      }
    }
    if (state.thread === thread) {
      thread.pendingKey = null;
      thread.pendingContent = null;
      if (input.value === content) input.value = '';
      autoGrow();
    }
    onMessage(m);
  } catch (e) {
    if (state.thread === thread) showError($('thread-error'), `Not sent: ${e.message}`);
  } finally {
    thread.sending = false;
    $('send-button').disabled = false;
    $('composer').setAttribute('aria-busy', 'false');
  }
}

function autoGrow() {
  const t = $('message-input');
  t.style.height = 'auto';
  t.style.height = `${Math.min(t.scrollHeight, 160)}px`;
}

// ---------------------------------------------------------------- SSE

// Incremental text/event-stream parser (WHATWG HTML "event stream interpretation").
export class SseParser {
  constructor(onEvent, { onId = () => {}, onRetry = () => {}, onComment = () => {} } = {}) {
    this.onEvent = onEvent;
    this.onId = onId;
    this.onRetry = onRetry;
    this.onComment = onComment;
    this.buf = '';
    this.data = '';
    this.type = '';
    this.lastId = '';
    this.first = true;
  }

  push(chunk) {
    let text = this.buf + chunk;
    if (this.first && text.length) {
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
      this.first = false;
    }
    let start = 0;
    for (;;) {
      let i = start;
      while (i < text.length && text[i] !== '\n' && text[i] !== '\r') i++;
      if (i >= text.length) break;
      // A CR at the very end may be the first half of CRLF: wait for more.
      if (text[i] === '\r' && i + 1 >= text.length) break;
      this.line(text.slice(start, i));
      start = i + (text[i] === '\r' && text[i + 1] === '\n' ? 2 : 1);
    }
    this.buf = text.slice(start);
  }

  end() {
    // An unfinished event at the end of the stream is discarded (as the spec says).
    this.buf = '';
    this.data = '';
    this.type = '';
  }

  line(line) {
    if (line === '') return this.dispatch();
    if (line[0] === ':') return this.onComment(line.slice(1).trim());
    const colon = line.indexOf(':');
    let field = line, value = '';
    if (colon >= 0) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value[0] === ' ') value = value.slice(1);
    }
    switch (field) {
      case 'event': this.type = value; break;
      case 'data': this.data += value + '\n'; break;
      case 'id': if (!value.includes('\0')) { this.lastId = value; this.onId(value); } break;
      case 'retry': if (/^\d+$/.test(value)) this.onRetry(parseInt(value, 10)); break;
      default: break;                                  // unknown fields are ignored
    }
  }

  dispatch() {
    if (this.data === '') { this.type = ''; return; }
    const data = this.data.endsWith('\n') ? this.data.slice(0, -1) : this.data;
    const ev = { type: this.type || 'message', data, lastEventId: this.lastId };
    this.data = '';
    this.type = '';
    this.onEvent(ev);
  }
}

function setConnection(stateName, text) {
  const node = $('connection-status');
  node.dataset.state = stateName;
  node.querySelector('.connection-text').textContent = text;
  node.title = text;
}

class EventStream {
  constructor() {
    this.stopped = false;
    this.abort = null;
    this.lastEventId = null;     // id of the last event received
    this.retryMs = 2000;         // the server's retry: hint
    this.failures = 0;
    this.stallTimer = null;
    this.wake = null;
    this.onOnline = () => { if (this.wake) this.wake(); };
  }

  start() {
    window.addEventListener('online', this.onOnline);
    this.loop();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener('online', this.onOnline);
    clearTimeout(this.stallTimer);
    if (this.abort) this.abort.abort();
    if (this.wake) this.wake();
  }

  armStallTimer() {
    clearTimeout(this.stallTimer);
    this.stallTimer = setTimeout(() => { if (this.abort) this.abort.abort(); }, STALL_TIMEOUT_MS);
  }

  async loop() {
    while (!this.stopped) {
      let reason = '';
      try {
        await this.connectOnce();
        reason = 'The live connection closed';
      } catch (e) {
        if (this.stopped) return;
        if (e instanceof ApiError && e.status === 401) return;      // sessionExpired() has run
        reason = e && e.name === 'AbortError' ? 'The live connection stalled' : (e && e.message) || 'Connection failed';
      }
      clearTimeout(this.stallTimer);
      if (this.stopped) return;
      this.failures++;
      // Exponential back-off from the server's retry hint, with jitter.
      const base = Math.min(BACKOFF_MAX_MS, this.retryMs * 2 ** Math.min(this.failures - 1, 6));
      const wait = Math.round(base / 2 + Math.random() * base / 2);
      setConnection('reconnecting', `Reconnecting in ${Math.ceil(wait / 1000)} s`);
      $('connection-status').dataset.reason = reason;
      await new Promise((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, wait);
      });
      this.wake = null;
    }
  }

  async connectOnce() {
    setConnection('connecting', 'Connecting…');
    const ctrl = new AbortController();
    this.abort = ctrl;
    const headers = { Accept: 'text/event-stream', Authorization: `Bearer ${state.token}` };
    if (this.lastEventId) headers['Last-Event-ID'] = this.lastEventId;
    this.armStallTimer();
    const res = await fetch('/api/events', { headers, signal: ctrl.signal, cache: 'no-store' });
    if (!res.ok) {
      let body = null;
      try { body = await res.json(); } catch { /* not JSON */ }
      const err = new ApiError(res.status, detailText(body, res.status));
      if (res.status === 401) { sessionExpired(err.detail); throw err; }
      if (res.status === 422 && this.lastEventId) {
        // The server does not accept our resume point: start afresh and reload.
        this.lastEventId = null;
      }
      throw err;
    }
    const resumed = !!this.lastEventId;
    let opened = false;
    const parser = new SseParser((ev) => this.onEvent(ev), {
      onRetry: (ms) => { this.retryMs = Math.max(500, Math.min(ms, BACKOFF_MAX_MS)); },
    });
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        this.armStallTimer();
        if (!opened) {
          opened = true;
          this.failures = 0;
          setConnection('connected', 'Live');
          delete $('connection-status').dataset.reason;
          // Without a resume point, anything sent before the stream was subscribed
          // comes from the REST API instead (duplicates are dropped by message_id).
          if (!resumed) resync(false);
        }
        parser.push(value);
      }
    } finally {
      parser.end();
      reader.cancel().catch(() => { /* aborted or already closed */ });
    }
  }

  onEvent(ev) {
    if (ev.type === 'message') {
      let m;
      try { m = JSON.parse(ev.data); } catch { return; }
      if (ev.lastEventId) this.lastEventId = ev.lastEventId;
      else if (m && m.message_id) this.lastEventId = m.message_id;
      onMessage(m);
    } else if (ev.type === 'reset') {
      resync(true);
    }
  }
}

// Reload what is on screen through the REST API after a gap in the live stream.
// full: the server said it could not replay what was missed (event: reset), so the
// open thread is loaded anew; otherwise its newest page is merged in.
function resync(full) {
  if (!state.me) return;
  reloadConversations();
  const t = state.thread;
  if (!t || !t.conversationId) return;
  if (full) loadInitialMessages(t);
  else catchUpThread(t);
}

async function catchUpThread(thread) {
  const gen = thread.generation;
  try {
    const page = await api('GET', `/api/messages/conversation/${encodeURIComponent(thread.conversationId)}?${q({ limit: PAGE_SIZE })}`);
    if (state.thread !== thread || gen !== thread.generation) return;
    const follow = isNearBottom();
    if (addMessages(thread, page.data, 'bottom') && follow) scrollToBottom();
    updateHistoryStatus(thread);
  } catch { /* the next event or reconnection tries again */ }
}

// ---------------------------------------------------------------- start-up

function bind() {
  $('auth-form').addEventListener('submit', onLogin);
  $('register-button').addEventListener('click', onRegister);
  $('logout-button').addEventListener('click', onLogout);
  $('new-conversation-form').addEventListener('submit', onNewConversation);
  $('conversations-more').addEventListener('click', async () => {
    try { await loadMoreConversations(); } catch (e) { showError($('global-error'), e.message); }
  });
  $('back-button').addEventListener('click', showList);
  window.addEventListener('popstate', () => {
    if ($('app-view').dataset.pane !== 'list') {
      setPane('list');
      const active = document.querySelector('.conversation.active');
      if (active) active.focus();
    }
  });
  $('message-scroller').addEventListener('scroll', onScroll, { passive: true });
  $('composer').addEventListener('submit', onSend);
  $('message-input').addEventListener('input', autoGrow);
  $('message-input').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $('composer').requestSubmit();
    }
  });
}

async function boot() {
  bind();
  let token = null, user = null;
  try {
    token = localStorage.getItem(TOKEN_KEY);
    user = JSON.parse(localStorage.getItem(USER_KEY) || 'null');
  } catch { /* no storage */ }
  if (token) {
    state.token = token;
    try {
      const me = await api('GET', '/api/auth/me');
      saveSession(token, me);
      enterApp();
      return;
    } catch (e) {
      if (e.status !== 401 && user && user.user_id) {
        // The server is unreachable right now: keep the session and let the stream retry.
        saveSession(token, user);
        enterApp();
        showError($('global-error'), e.message);
        return;
      }
      clearSession();
    }
  }
  $('auth-view').hidden = false;
  $('auth-username').focus();
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
else boot();
