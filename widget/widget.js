// @ts-check
/*
 * performchat's chat widget: one script tag, then
 *
 *   PerformChat.mount(element | null, { getToken: async () => "<chat token>" })
 *
 * It speaks the public chat protocol (docs/chat-protocol.md) and nothing else, lives in an
 * open Shadow DOM, and has no dependencies.
 */
(() => {
"use strict";

/** @typedef {{id: string, conversationId: string, seq: number, clientMessageId: string,
 *   sender: {kind: string, name?: string}, text: string, status: string}} Message */
/** @typedef {{id: string, status: string, handler?: string, lastSeq: number}} Conversation */
/** @typedef {{clientMessageId: string, text: string, status: "queued" | "sending" | "failed",
 *   error?: string, done: Array<(m: Message | null, e?: any) => void>}} Outgoing */

// Where this script came from: the default server.
const scriptOrigin = (function () {
  const s = document.currentScript;
  try {
    return s && "src" in s && s.src ? new URL(s.src).origin : location.origin;
  } catch (_) {
    return location.origin;
  }
})();

const STRINGS = {
  title: "Chat",
  placeholder: "Write a message…",
  message: "Message",
  send: "Send",
  messages: "Messages",
  connecting: "Connecting…",
  reconnecting: "Reconnecting…",
  unavailable: "Chat is unavailable",
  ended: "This chat has ended. Reload the page to start again.",
  tokenFailed: "Cannot start the chat. Trying again…",
  waitingForPerson: "Waiting for a person…",
  typing: "{name} is typing…",
  thinking: "{name} is thinking…",
  notSent: "Not sent.",
  replyFailed: "The reply failed.",
  retry: "Retry",
  sending: "Sending…",
  you: "You",
  openChat: "Open chat",
  closeChat: "Close chat",
  conversationClosed: "This conversation was closed. Send a message to start a new one.",
};

// Close codes after which the widget stops for good (docs/chat-protocol.md).
const FATAL = { 4003: "unavailable", 4004: "unavailable", 4008: "unavailable" };
const TOKEN_DEATH = [4001, 4002];
const PING_EVERY = 25000;
const PONG_WITHIN = 10000;
const TYPING_AGAIN = 3000;
const TYPING_IDLE = 4000;

const CSS = `
:host { all: initial !important; display: block !important; width: 100% !important; height: 100% !important; }
:host([data-floating]) { position: fixed !important; right: 20px !important; bottom: 20px !important;
  z-index: 2147483000 !important; width: auto !important; height: auto !important; }
* { box-sizing: border-box; }
:host { --accent: var(--performchat-accent, #1f5fd1); --on-accent: var(--performchat-accent-text, #fff);
  --muted: var(--performchat-muted, #57606a); --border: var(--performchat-border, #d0d7de);
  --link: var(--performchat-link, #0b4fb3); }
.root { font-family: var(--performchat-font, system-ui, -apple-system, "Segoe UI", Roboto, sans-serif);
  font-size: var(--performchat-font-size, 15px); line-height: 1.4; color: var(--performchat-text, #1b1f24);
  background: var(--performchat-bg, #fff); display: flex; flex-direction: column; height: 100%; min-height: 320px;
  border: 1px solid var(--border); border-radius: var(--performchat-radius, 12px); overflow: hidden; }
:host([data-floating]) .root { width: min(380px, calc(100vw - 40px)); height: min(560px, calc(100vh - 110px));
  box-shadow: 0 8px 30px #0003; margin-bottom: 12px; }
[hidden] { display: none !important; }
header { display: flex; align-items: center; gap: 8px; padding: 12px 14px; background: var(--accent); color: var(--on-accent); }
h2 { font: inherit; font-weight: 600; margin: 0; flex: 1; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.banner { padding: 6px 14px; font-size: .9em; background: var(--performchat-notice-bg, #fff4ce);
  color: var(--performchat-notice-text, #3d2e00); border-bottom: 1px solid var(--border); }
.log { list-style: none; margin: 0; padding: 12px; flex: 1; overflow-y: auto; display: flex; flex-direction: column; gap: 8px; }
.msg { max-width: 85%; display: flex; flex-direction: column; gap: 2px; }
.who, .activity { font-size: .8em; color: var(--muted); }
.body { padding: 8px 12px; border-radius: 14px; white-space: pre-wrap; overflow-wrap: anywhere;
  background: var(--performchat-agent-bg, #eef1f4); color: var(--performchat-agent-text, #1b1f24); }
.user { align-self: flex-end; align-items: flex-end; }
.user .body { background: var(--accent); color: var(--on-accent); }
.operator .body { background: var(--performchat-operator-bg, #e6f4ea); color: var(--performchat-operator-text, #10361c); }
.system { align-self: center; }
.system .body { background: none; color: var(--muted); font-size: .9em; text-align: center; padding: 2px 8px; }
.streaming .body::after { content: "▍"; opacity: .6; }
.failed .body { opacity: .75; }
.failed .body:empty { display: none; }
.note { font-size: .8em; color: var(--performchat-error, #a40e26); display: flex; gap: 6px; align-items: center; }
.pending { color: var(--muted); }
a { color: var(--link); }
.user a { color: inherit; }
.activity { padding: 0 14px 6px; }
form { display: flex; gap: 8px; padding: 10px; border-top: 1px solid var(--border); margin: 0; }
textarea { flex: 1; font: inherit; color: inherit; background: var(--performchat-input-bg, #fff); resize: none; margin: 0;
  border: 1px solid var(--performchat-input-border, #8c959f); border-radius: 8px; padding: 8px 10px; min-height: 40px; max-height: 120px; }
button { font: inherit; font-weight: 600; cursor: pointer; border: 0; border-radius: 8px; padding: 8px 14px; margin: 0;
  background: var(--accent); color: var(--on-accent); }
button:disabled { opacity: .6; cursor: default; }
.link { background: none; color: var(--link); padding: 0; text-decoration: underline; }
.icon { background: none; color: inherit; padding: 2px 8px; font-size: 1.2em; line-height: 1; }
:focus-visible { outline: 3px solid var(--performchat-focus, #0b4fb3); outline-offset: 2px; }
header :focus-visible { outline-color: var(--on-accent); }
.launcher { display: grid; place-items: center; margin-left: auto; width: 56px; height: 56px; border-radius: 50%; padding: 0;
  box-shadow: 0 4px 14px #0004; }
`;

/** Characters as the protocol counts them (code points). */
const codePoints = (/** @type {string} */ s) => Array.from(s);

/** A clientMessageId: random, within the protocol's alphabet. */
function newClientMessageId() {
  if (typeof crypto !== "undefined" && crypto.randomUUID) return "w-" + crypto.randomUUID();
  return "w-" + Date.now().toString(36) + "-" + Math.random().toString(36).slice(2);
}

/** Appends `text` to `parent` as text, its http(s) links as safe links. */
function renderText(/** @type {Element} */ parent, /** @type {string} */ text) {
  parent.textContent = "";
  const re = /\bhttps?:\/\/[^\s<>"'`]+/gi;
  let last = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    let url = m[0];
    const trail = /[.,;:!?)\]}]+$/.exec(url);
    if (trail) url = url.slice(0, url.length - trail[0].length);
    let href = null;
    try {
      const u = new URL(url);
      if (u.protocol === "http:" || u.protocol === "https:") href = u.href;
    } catch (_) {
      href = null;
    }
    if (!href) continue;
    if (m.index > last) parent.append(text.slice(last, m.index));
    const a = document.createElement("a");
    a.href = href;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    a.textContent = url;
    parent.append(a);
    last = m.index + url.length;
  }
  if (last < text.length) parent.append(text.slice(last));
}

/**
 * Mounts a chat in `target` (or, with `null`, behind a floating launcher button).
 * @param {HTMLElement | null} target
 * @param {{getToken: () => Promise<string> | string, baseUrl?: string, title?: string,
 *   placeholder?: string, locale?: Partial<typeof STRINGS>}} options
 */
function mount(target, options) {
  if (!options || typeof options.getToken !== "function") {
    throw new TypeError("PerformChat.mount: options.getToken is required");
  }
  const t = Object.assign({}, STRINGS, options.locale || {});
  if (options.title) t.title = options.title;
  if (options.placeholder) t.placeholder = options.placeholder;
  const base = (options.baseUrl || scriptOrigin).replace(/\/+$/, "");
  const wsUrl = base.replace(/^http/i, "ws") + "/rest/v1/chat/ws";

  // The DOM: a shadow root in an element of our own, which no page rule names.
  const host = document.createElement("performchat-chat");
  const floating = !target;
  if (floating) host.setAttribute("data-floating", "");
  const shadow = host.attachShadow({ mode: "open" });
  const style = document.createElement("style");
  style.textContent = CSS;
  shadow.append(style);
  const el = (/** @type {string} */ tag, /** @type {Record<string, string>} */ attrs = {}, text = "") => {
    const e = document.createElement(tag);
    for (const k of Object.keys(attrs)) e.setAttribute(k, attrs[k]);
    if (text) e.textContent = text;
    return e;
  };
  const root = el("section", { class: "root", part: "panel", "aria-label": t.title });
  const header = el("header");
  const titleEl = el("h2", {}, t.title);
  header.append(titleEl);
  const banner = el("div", { class: "banner", role: "status", hidden: "" });
  const log = el("ol", { class: "log", role: "log", "aria-live": "polite", "aria-label": t.messages, tabindex: "0" });
  const activity = el("div", { class: "activity", "aria-live": "polite", hidden: "" });
  const form = el("form");
  const box = /** @type {HTMLTextAreaElement} */ (el("textarea", { "aria-label": t.message, rows: "1", placeholder: t.placeholder }));
  const sendButton = /** @type {HTMLButtonElement} */ (el("button", { type: "submit" }, t.send));
  form.append(box, sendButton);
  root.append(header, banner, log, activity, form);
  /** @type {HTMLButtonElement | null} */
  let launcher = null;
  if (floating) {
    root.hidden = true;
    const closeButton = el("button", { type: "button", class: "icon", "aria-label": t.closeChat }, "×");
    closeButton.addEventListener("click", () => handle.close());
    header.append(closeButton);
    launcher = /** @type {HTMLButtonElement} */ (el("button", { type: "button", class: "launcher", "aria-label": t.openChat, "aria-expanded": "false" }));
    // Drawn: an emoji needs a font.
    launcher.innerHTML = '<svg viewBox="0 0 24 24" width="26" height="26" aria-hidden="true"><path fill="currentColor" d="M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2h-9l-5 4v-4H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z"/></svg>';
    launcher.addEventListener("click", () => (root.hidden ? handle.open() : handle.close()));
    shadow.append(root, launcher);
    document.body.append(host);
  } else {
    shadow.append(root);
    target.append(host);
  }

  /** @type {Record<string, Array<(x: any) => void>>} */
  const listeners = {};
  const emit = (/** @type {string} */ name, /** @type {any} */ value) => {
    for (const cb of (listeners[name] || []).slice()) {
      try {
        cb(value);
      } catch (e) {
        setTimeout(() => { throw e; });
      }
    }
  };
  /** @type {WebSocket | null} */
  let ws = null;
  let state = "connecting";
  let destroyed = false;
  let ended = false;
  /** @type {string | null} */
  let token = null;
  /** @type {Promise<string> | null} */
  let tokenCall = null;
  let attempt = 0;
  /** @type {any} */
  let retryTimer, pingTimer, pongTimer, typingIdle;
  // A 4001/4002 close gets one new token; a second one before `ready` ends the chat.
  let renewedAfterDeath = false;
  let nextId = 1;
  /** @type {Map<string | number, {resolve: (f: any) => void, reject: (e: any) => void}>} */
  const waiting = new Map();
  /** @type {Conversation | null} */
  let conversation = null;
  /** @type {any} */
  let agent = null;
  let announcedReady = false;
  /** Stored messages of the current conversation, by seq. @type {Map<number, Message>} */
  const messages = new Map();
  /** @type {Map<string, HTMLElement>} */
  const nodes = new Map();
  /** Sends not yet acknowledged, in order. @type {Outgoing[]} */
  const outbox = [];
  let flushing = false;
  let handler = "bot";
  let agentActivity = ""; // "", "typing", "thinking"
  let readSeq = 0;
  let typingSentAt = 0;

  const agentName = () => (agent && agent.name) || t.title;

  function setState(/** @type {string} */ next) {
    if (state === next) return;
    state = next;
    emit("state", next);
    render();
  }

  function render() {
    let notice = "";
    if (state === "ended") notice = endedText;
    else if (state === "connecting") notice = t.connecting;
    else if (state === "reconnecting") notice = tokenTrouble ? t.tokenFailed : t.reconnecting;
    else if (handler === "waiting_human") notice = t.waitingForPerson;
    banner.textContent = notice;
    banner.hidden = !notice;
    const busy = agentActivity && state === "connected";
    activity.textContent = busy ? t[agentActivity].replace("{name}", agentName()) : "";
    activity.hidden = !busy;
    box.disabled = state === "ended";
    sendButton.disabled = state === "ended";
  }
  let endedText = t.unavailable;
  let tokenTrouble = false;

  function kindOf(/** @type {Message} */ m) {
    return m.sender && m.sender.kind ? m.sender.kind : "agent";
  }

  function whoLabel(/** @type {Message} */ m) {
    const kind = kindOf(m);
    if (kind === "user") return t.you;
    if (kind === "system") return "";
    return (m.sender && m.sender.name) || agentName();
  }

  /** A message's item (a user's by clientMessageId: its stored form replaces its outgoing one). */
  function itemFor(/** @type {string} */ key) {
    let li = nodes.get(key);
    if (!li) {
      li = el("li", { class: "msg" });
      li.append(el("span", { class: "who" }), el("div", { class: "body" }));
      nodes.set(key, li);
    }
    return li;
  }

  const keyOf = (/** @type {Message} */ m) => (kindOf(m) === "user" ? "c:" + m.clientMessageId : "m:" + m.id);

  function showMessage(/** @type {Message} */ m) {
    const li = itemFor(keyOf(m));
    const kind = kindOf(m);
    li.className = "msg " + kind + (m.status === "streaming" ? " streaming" : "") + (m.status === "failed" ? " failed" : "");
    li.dataset.seq = String(m.seq);
    li.children[0].textContent = whoLabel(m);
    renderText(li.children[1], m.text);
    while (li.children.length > 2) li.lastChild && li.removeChild(li.lastChild);
    if (m.status === "failed" && kind !== "user") li.append(el("div", { class: "note" }, t.replyFailed));
    place(li, m.seq);
  }

  /** Puts a stored message's item in seq order, before the outgoing ones. */
  function place(/** @type {HTMLElement} */ li, /** @type {number} */ seq) {
    let before = null;
    for (const child of Array.from(log.children)) {
      const s = /** @type {HTMLElement} */ (child).dataset.seq;
      if (child === li) continue;
      if (!s || Number(s) > seq) {
        before = child;
        break;
      }
    }
    if (li.parentNode !== log || li.nextSibling !== before) {
      const stick = nearBottom();
      log.insertBefore(li, before);
      if (stick) scrollDown();
    }
  }

  function showOutgoing(/** @type {Outgoing} */ o) {
    const li = itemFor("c:" + o.clientMessageId);
    li.className = "msg user" + (o.status === "failed" ? " failed" : "");
    delete li.dataset.seq;
    li.children[0].textContent = t.you;
    renderText(li.children[1], o.text);
    while (li.children.length > 2) li.lastChild && li.removeChild(li.lastChild);
    const note = el("div", { class: "note" + (o.status === "failed" ? "" : " pending") });
    if (o.status === "failed") {
      note.append(el("span", {}, o.error ? t.notSent + " " + o.error : t.notSent));
      const retry = el("button", { type: "button", class: "link" }, t.retry);
      retry.addEventListener("click", () => {
        o.status = "queued";
        o.error = undefined;
        showOutgoing(o);
        flush();
      });
      note.append(retry);
    } else {
      note.append(el("span", {}, t.sending));
    }
    li.append(note);
    if (li.parentNode !== log) log.append(li);
    scrollDown();
  }

  const nearBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight < 60;
  const scrollDown = () => {
    log.scrollTop = log.scrollHeight;
  };

  /** A stored message: shown once, in seq order; a final form replaces a streaming one. */
  function store(/** @type {Message} */ m, pushed = false) {
    if (!conversation || m.conversationId !== conversation.id) return;
    const had = messages.get(m.seq);
    if (had && !(had.status === "streaming" && m.status !== "streaming")) {
      // Had it; a read may complete a streaming copy.
      if (had.status === "streaming" && m.status === "streaming" && codePoints(m.text).length > codePoints(had.text).length) {
        messages.set(m.seq, m);
        showMessage(m);
      }
      return;
    }
    messages.set(m.seq, m);
    if (conversation.lastSeq < m.seq) conversation.lastSeq = m.seq;
    const kind = kindOf(m);
    if (kind !== "user") {
      if (agentActivity && m.status !== "streaming") agentActivity = "";
      if (kind === "operator" && handler === "waiting_human") handler = "human";
    }
    if (kind === "user") {
      const i = outbox.findIndex((o) => o.clientMessageId === m.clientMessageId);
      if (i >= 0) {
        const [o] = outbox.splice(i, 1);
        o.done.forEach((f) => f(m));
      }
    }
    showMessage(m);
    render();
    if (pushed || !had) emit("message", m);
    markRead();
  }

  function delta(/** @type {any} */ f) {
    if (!conversation || f.conversationId !== conversation.id) return;
    for (const m of messages.values()) {
      if (m.id !== f.messageId) continue;
      if (m.status !== "streaming") return;
      const have = codePoints(m.text).length;
      const offset = Number(f.offset) || 0;
      // Past our copy: a chunk was missed; the final message brings the whole text.
      if (offset > have) return;
      const add = codePoints(String(f.text)).slice(have - offset).join("");
      if (!add) return;
      m.text += add;
      if (agentActivity) agentActivity = "";
      const stick = nearBottom();
      showMessage(m);
      if (stick) scrollDown();
      render();
      return;
    }
  }

  function markRead() {
    if (!conversation || !ws || state !== "connected") return;
    if (floating && root.hidden) return;
    if (document.visibilityState === "hidden") return;
    const seq = conversation.lastSeq;
    if (seq > readSeq) {
      readSeq = seq;
      frame({ type: "read", conversationId: conversation.id, seq });
    }
  }

  function frame(/** @type {any} */ f) {
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify(f));
      return true;
    }
    return false;
  }

  /** Sends a frame with an id and resolves with the frame that answers it. */
  function request(/** @type {any} */ f) {
    return new Promise((resolve, reject) => {
      const id = nextId++;
      if (!frame(Object.assign({}, f, { id }))) {
        reject(new Error("offline"));
        return;
      }
      waiting.set(id, { resolve, reject });
    });
  }

  /** One getToken call shared by everyone who needs a token now. */
  function freshToken() {
    if (!tokenCall) {
      tokenCall = Promise.resolve()
        .then(() => options.getToken())
        .then((tok) => {
          if (typeof tok !== "string" || !tok) throw new Error("getToken returned no token");
          token = tok;
          tokenTrouble = false;
          return tok;
        })
        .finally(() => (tokenCall = null));
    }
    return tokenCall;
  }

  function backoff() {
    const cap = Math.min(30000, 1000 * Math.pow(2, attempt));
    attempt += 1;
    return Math.random() * cap;
  }

  function retryLater(/** @type {number} */ delay) {
    clearTimeout(retryTimer);
    if (destroyed || ended) return;
    retryTimer = setTimeout(connect, delay);
  }

  async function connect() {
    clearTimeout(retryTimer);
    if (destroyed || ended || ws) return;
    setState(announcedReady || attempt > 0 ? "reconnecting" : "connecting");
    let tok = token;
    if (!tok) {
      try {
        tok = await freshToken();
      } catch (e) {
        tokenTrouble = true;
        emit("error", { code: "token_failed", message: String((e && e.message) || e) });
        setState("reconnecting");
        render();
        retryLater(backoff());
        return;
      }
    }
    if (destroyed || ended || ws) return;
    let socket;
    try {
      socket = new WebSocket(wsUrl);
    } catch (e) {
      emit("error", { code: "connect_failed", message: String(e) });
      retryLater(backoff());
      return;
    }
    ws = socket;
    socket.onopen = () => socket.send(JSON.stringify({ type: "auth", token: tok, id: "auth" }));
    socket.onmessage = (ev) => {
      let f;
      try {
        f = JSON.parse(String(ev.data));
      } catch (_) {
        return;
      }
      onFrame(f);
    };
    socket.onclose = (ev) => ws === socket && dropped(ev.code);
  }

  function dropped(/** @type {number} */ code) {
    ws = null;
    clearInterval(pingTimer);
    clearTimeout(pongTimer);
    for (const w of waiting.values()) w.reject(new Error("disconnected"));
    waiting.clear();
    for (const o of outbox) if (o.status === "sending") o.status = "queued";
    flushing = false;
    if (destroyed) return;
    if (code in FATAL) {
      end(t.unavailable, code);
      return;
    }
    if (TOKEN_DEATH.includes(code)) {
      if (renewedAfterDeath) {
        end(t.ended, code);
        return;
      }
      renewedAfterDeath = true;
      token = null;
      setState("reconnecting");
      retryLater(0);
      return;
    }
    setState("reconnecting");
    retryLater(backoff());
  }

  function end(/** @type {string} */ text, /** @type {number} */ code) {
    ended = true;
    endedText = text;
    clearTimeout(retryTimer);
    emit("error", { code: "ended", closeCode: code, message: text });
    for (const o of outbox) {
      o.status = "failed";
      showOutgoing(o);
    }
    setState("ended");
  }

  function onFrame(/** @type {any} */ f) {
    const w = f.id !== undefined && waiting.get(f.id);
    if (w) {
      waiting.delete(f.id);
      return w.resolve(f);
    }
    switch (f.type) {
      case "ready":
        agent = f.agent;
        titleEl.textContent = options.title || (agent && agent.name) || t.title;
        attempt = 0;
        renewedAfterDeath = false;
        startPinging();
        synchronise().catch(() => {});
        break;
      case "message":
        store(f.message, true);
        break;
      case "delta":
        delta(f);
        break;
      case "typing":
        if (conversation && f.conversationId === conversation.id) {
          agentActivity = f.state === "start" ? "typing" : agentActivity === "typing" ? "" : agentActivity;
          render();
        }
        break;
      case "agent_state":
        if (conversation && f.conversationId === conversation.id) onAgentState(f.state);
        break;
      case "conversation_closed":
        if (conversation && f.conversationId === conversation.id) {
          conversation = null;
          const li = el("li", { class: "msg system" });
          li.append(el("span", { class: "who" }), el("div", { class: "body" }, t.conversationClosed));
          log.append(li);
          scrollDown();
        }
        break;
      case "expiring":
        freshToken()
          .then((tok) => request({ type: "refresh", token: tok }))
          .catch(() => {});
        break;
      case "pong":
        clearTimeout(pongTimer);
        break;
      case "error":
        emit("error", { code: f.code, message: f.message });
        break;
    }
  }

  function onAgentState(/** @type {string} */ s) {
    agentActivity = s === "thinking" ? "thinking" : "";
    if (s === "handoff") handler = "waiting_human";
    else if (s === "human" || s === "bot") handler = s;
    render();
  }

  function startPinging() {
    clearInterval(pingTimer);
    pingTimer = setInterval(() => {
      if (!frame({ type: "ping" })) return;
      clearTimeout(pongTimer);
      pongTimer = setTimeout(() => {
        // No answer: the connection is dead without having said so.
        if (ws) ws.close(4000, "no pong");
        if (ws) dropped(1006);
      }, PONG_WITHIN);
    }, PING_EVERY);
  }

  /** The open conversation (made if there is none) and its newest messages. */
  async function openConversation() {
    const had = conversation;
    const opened = await request({ type: "open" });
    if (opened.type !== "conversation") throw new Error(opened.message || "cannot open");
    if (!had || had.id !== opened.conversation.id) {
      // A new conversation: keep what is shown.
      conversation = Object.assign({}, opened.conversation, { lastSeq: 0 });
      messages.clear();
    }
    handler = opened.conversation.handler || "bot";
    return opened.messages || [];
  }

  /** After `ready`: the open conversation, everything missed since the last seq we have
   * (no gap), then the sends that waited. */
  async function synchronise() {
    const newest = await openConversation();
    const conv = /** @type {Conversation} */ (conversation);
    const have = conv.lastSeq;
    if (newest.length && newest[0].seq > have + 1 && have > 0) {
      // More missed than `open` returns: read forward.
      let after = have;
      for (;;) {
        const page = await request({ type: "history", conversationId: conv.id, after, limit: 200 });
        if (page.type !== "history") break;
        for (const m of page.messages) store(m);
        if (!page.hasMore || !page.messages.length) break;
        after = page.messages[page.messages.length - 1].seq;
      }
    }
    for (const m of newest) store(m);
    setState("connected");
    if (!announcedReady) {
      announcedReady = true;
      emit("ready", { agent, conversation: conv });
    }
    markRead();
    flush();
  }

  /** Sends the queued messages one after the other, each once acknowledged. */
  async function flush() {
    if (flushing || state !== "connected") return;
    flushing = true;
    try {
      for (;;) {
        const o = outbox.find((x) => x.status === "queued");
        if (!o || state !== "connected") break;
        if (!conversation) for (const m of await openConversation()) store(m);
        o.status = "sending";
        const answer = await request({
          type: "send",
          conversationId: /** @type {Conversation} */ (conversation).id,
          clientMessageId: o.clientMessageId,
          text: o.text,
        });
        if (answer.type === "ack") {
          store(answer.message);
        } else if (answer.code === "conversation_closed") {
          conversation = null;
          o.status = "queued";
        } else if (answer.code === "unavailable" || answer.code === "rate_limited") {
          o.status = "queued";
          const wait = answer.retryAfter ? answer.retryAfter * 1000 : 1000;
          await new Promise((r) => setTimeout(r, wait));
        } else {
          o.status = "failed";
          o.error = answer.message || "";
          showOutgoing(o);
          o.done.forEach((f) => f(null, answer));
          o.done = [];
        }
      }
    } catch (_) {
      // Disconnected: what was sending is queued again.
    } finally {
      flushing = false;
    }
  }

  function userTyping() {
    if (!conversation || state !== "connected") return;
    const now = Date.now();
    if (now - typingSentAt > TYPING_AGAIN) {
      typingSentAt = now;
      frame({ type: "typing", conversationId: conversation.id, state: "start" });
    }
    clearTimeout(typingIdle);
    typingIdle = setTimeout(stopTyping, TYPING_IDLE);
  }

  function stopTyping() {
    clearTimeout(typingIdle);
    if (typingSentAt && conversation) frame({ type: "typing", conversationId: conversation.id, state: "stop" });
    typingSentAt = 0;
  }

  function submit() {
    const text = box.value;
    if (!text.trim() || ended) return;
    box.value = "";
    stopTyping();
    handle.send(text).catch(() => {});
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    submit();
    box.focus();
  });
  // Enter sends, Shift+Enter is a new line.
  box.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit();
    }
  });
  box.addEventListener("input", userTyping);
  root.addEventListener("keydown", (e) => {
    if (floating && e.key === "Escape") handle.close();
  });
  const toggle = (/** @type {boolean} */ open) => {
    if (!launcher) return false;
    root.hidden = !open;
    launcher.setAttribute("aria-expanded", String(open));
    launcher.setAttribute("aria-label", open ? t.closeChat : t.openChat);
    return true;
  };
  const onVisible = () => markRead();
  const onOnline = () => {
    if (!ws && !ended && !destroyed) {
      attempt = 0;
      retryLater(0);
    }
  };
  document.addEventListener("visibilitychange", onVisible);
  window.addEventListener("online", onOnline);

  const handle = {
    /** Sends `text` as the user; resolves with the stored message. */
    send(/** @type {string} */ text) {
      return new Promise((resolve, reject) => {
        if (ended) {
          reject(new Error(endedText));
          return;
        }
        /** @type {Outgoing} */
        const o = {
          clientMessageId: newClientMessageId(),
          text: String(text),
          status: "queued",
          done: [(m, e) => (m ? resolve(m) : reject(e))],
        };
        outbox.push(o);
        showOutgoing(o);
        flush();
      });
    },
    /** Opens the panel of a floating chat. */
    open() {
      if (!toggle(true)) return;
      box.focus();
      scrollDown();
      markRead();
    },
    close() {
      if (toggle(false)) launcher.focus();
    },
    destroy() {
      destroyed = true;
      clearTimeout(retryTimer);
      clearInterval(pingTimer);
      clearTimeout(pongTimer);
      stopTyping();
      if (ws) ws.close(1000, "destroyed");
      ws = null;
      document.removeEventListener("visibilitychange", onVisible);
      window.removeEventListener("online", onOnline);
      host.remove();
    },
    /** `ready`, `message`, `delta`, `state`, `error`; returns an unsubscribe function. */
    on(/** @type {string} */ name, /** @type {(x: any) => void} */ cb) {
      (listeners[name] = listeners[name] || []).push(cb);
      return () => {
        listeners[name] = (listeners[name] || []).filter((x) => x !== cb);
      };
    },
    /** `connecting`, `connected`, `reconnecting` or `ended`. */
    get state() {
      return state;
    },
    element: host,
  };

  render();
  connect();
  return handle;
}

/** @type {any} */ (window).PerformChat = { mount };
})();
