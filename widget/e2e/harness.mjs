// What the widget's browser tests stand on: the real performchat binary on a real database,
// a company's site on another origin (its page embeds the widget with one script tag, its
// backend mints tokens through POST /rest/v1/auth/token), and Debian's chromium driven by
// playwright-core. Run by tests/widget.rs, which makes the database and its key pair and
// passes them in the environment.

import { spawn, spawnSync } from "node:child_process";
import http from "node:http";
import net from "node:net";
import { chromium } from "playwright-core";

const need = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run these tests through cargo test --test widget`);
  return v;
};

export const BIN = need("PERFORMCHAT_BIN");
export const DATABASE_URL = need("PERFORMCHAT_DATABASE_URL");
export const KEY_ID = need("PERFORMCHAT_TEST_KEY_ID");
export const KEY_SECRET = need("PERFORMCHAT_TEST_KEY_SECRET");
export const AGENT_NAME = need("PERFORMCHAT_TEST_AGENT_NAME");
export const CHROMIUM = process.env.PERFORMCHAT_CHROMIUM || "/usr/bin/chromium";

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

/** The CLI, to completion: its JSON output. */
export function cli(...args) {
  const out = spawnSync(BIN, ["--json", ...args], {
    env: { ...process.env, PERFORMCHAT_DATABASE_URL: DATABASE_URL },
    encoding: "utf8",
  });
  if (out.status !== 0) throw new Error(`performchat ${args.join(" ")} failed: ${out.stderr}`);
  return JSON.parse(out.stdout);
}

/** The real server on `port` (the same one across a restart). */
export class Server {
  constructor(port, extra = []) {
    this.port = port;
    this.extra = extra;
    this.base = `http://127.0.0.1:${port}`;
  }

  async start() {
    this.logs = "";
    this.child = spawn(BIN, ["serve", "--listen", `127.0.0.1:${this.port}`, ...this.extra], {
      env: { ...process.env, PERFORMCHAT_DATABASE_URL: DATABASE_URL, PERFORMCHAT_LOG_FORMAT: "text" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child.stdout.resume();
    const child = this.child;
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the server did not start:\n${this.logs}`)), 30000);
      child.stderr.on("data", (d) => {
        this.logs += d;
        if (this.logs.includes("listening on")) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.on("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`the server exited (${code}):\n${this.logs}`));
      });
    });
    child.removeAllListeners("exit");
    return this;
  }

  /** kill -9: no shutdown, no goodbye to the sockets. */
  async kill() {
    if (!this.child || this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.once("exit", r));
    this.child.kill("SIGKILL");
    await exited;
  }

  /** The company's side: the agent API with the key pair as HTTP Basic credentials. */
  async agent(method, path, body) {
    const res = await fetch(this.base + path, {
      method,
      headers: {
        authorization: "Basic " + Buffer.from(`${KEY_ID}:${KEY_SECRET}`).toString("base64"),
        "content-type": "application/json",
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return text ? JSON.parse(text) : null;
  }

  async key(path, body) {
    const res = await fetch(this.base + path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ keyId: KEY_ID, keySecret: KEY_SECRET, ...body }),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`POST ${path}: ${res.status} ${text}`);
    return JSON.parse(text);
  }
}

/**
 * The company's site, on its own origin (localhost, not 127.0.0.1, and its own port): a page
 * that embeds the widget exactly as the README says, and the backend route it calls for
 * tokens, which mints with the key pair through POST /rest/v1/auth/token as the docs'
 * examples do. `tokenCalls[user]` counts the mints per user; `failTokens` makes them fail.
 */
export class CompanySite {
  constructor(server) {
    this.server = server;
    this.tokenCalls = {};
    this.failTokens = false;
    this.keys = {};
    this.users = {};
  }

  async start() {
    this.port = await freePort();
    this.origin = `http://localhost:${this.port}`;
    this.http = http.createServer((req, res) => this.handle(req, res).catch((e) => {
      res.writeHead(500, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: String(e) }));
    }));
    await new Promise((r) => this.http.listen(this.port, "127.0.0.1", r));
    return this;
  }

  stop() {
    this.http.closeAllConnections();
    this.http.close();
  }

  /** The page's URL: `user` chats; `expiresIn` is asked of the token endpoint; `key` picks a
   * key pair registered with `useKey`; `hostile` adds a stylesheet that attacks the widget;
   * `floating` mounts it behind the launcher button. */
  page(opts = {}) {
    const q = new URLSearchParams({ user: "ada", ...opts });
    return `${this.origin}/?${q}`;
  }

  useKey(name, keyId, keySecret) {
    this.keys[name] = { keyId, keySecret };
  }

  async handle(req, res) {
    const url = new URL(req.url, this.origin);
    if (req.method === "POST" && url.pathname === "/api/chat/token") {
      const user = url.searchParams.get("user");
      this.tokenCalls[user] = (this.tokenCalls[user] || 0) + 1;
      if (this.failTokens) {
        res.writeHead(503, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: "backend down" }));
        return;
      }
      const key = this.keys[url.searchParams.get("key")] || { keyId: KEY_ID, keySecret: KEY_SECRET };
      const body = { ...key, userId: user };
      if (url.searchParams.get("expiresIn")) body.expiresIn = url.searchParams.get("expiresIn");
      const minted = await fetch(this.server.base + "/rest/v1/auth/token", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      const json = await minted.json();
      // The backend keeps the internal user id, to invalidate the user's tokens later.
      if (minted.ok) this.users[user] = json.user.id;
      res.writeHead(minted.status, { "content-type": "application/json" });
      res.end(JSON.stringify(minted.ok ? { token: json.token } : json));
      return;
    }
    if (req.method === "GET" && url.pathname === "/") {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      res.end(this.html(url.searchParams));
      return;
    }
    res.writeHead(404);
    res.end();
  }

  html(params) {
    const tokenUrl = "/api/chat/token?" + new URLSearchParams({
      user: params.get("user"),
      ...(params.get("expiresIn") ? { expiresIn: params.get("expiresIn") } : {}),
      ...(params.get("key") ? { key: params.get("key") } : {}),
    });
    const hostile = params.get("hostile")
      ? `<style>
          div, button, textarea, section, header, form, ol, li, span, h2 { all: unset !important; font-size: 48px !important;
            color: #ff00ff !important; background: lime !important; display: inline !important; padding: 30px !important;
            border: 9px dotted red !important; font-family: "Comic Sans MS", cursive !important; }
          * { line-height: 3 !important; letter-spacing: 4px !important; }
          #chat { font-size: 64px; color: #f0f; font-weight: 900; text-transform: uppercase; font-style: italic; }
        </style>`
      : "";
    const theme = params.get("accent")
      ? `<style>body { --performchat-accent: ${params.get("accent")}; --performchat-font-size: 17px; }</style>`
      : "";
    const target = params.get("floating") ? "null" : 'document.getElementById("chat")';
    return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Acme</title>${hostile}${theme}
<script src="${this.server.base}/widget.js"></script></head>
<body>
<h1>Acme</h1>
<p><a href="#top" id="first-link">Acme home</a></p>
<div id="chat" style="height: 480px; width: 380px"></div>
<script>
  window.events = [];
  window.chat = PerformChat.mount(${target}, {
    getToken: async () => (await (await fetch(${JSON.stringify(tokenUrl)}, {method: "POST"})).json()).token,
  });
  for (const name of ["ready", "message", "state", "error"]) {
    window.chat.on(name, (value) => window.events.push({ name, value }));
  }
</script>
</body></html>`;
  }
}

/** The world of one browser test file: the server (with `serverArgs`), the company's site
 * and Debian's chromium, started before the tests and stopped after them. */
export function world(before, after, serverArgs = []) {
  const w = {};
  before(async () => {
    w.server = await new Server(await freePort(), serverArgs).start();
    w.site = await new CompanySite(w.server).start();
    w.chromium = await browser();
  });
  after(async () => {
    await w.chromium?.close();
    w.site?.stop();
    await w.server?.kill();
  });
  return w;
}

/** The company's page in a new browser context, and the sockets it opens. */
export async function openPage(w, opts) {
  const context = await w.chromium.newContext({ viewport: { width: 900, height: 700 } });
  const page = await context.newPage();
  const sockets = [];
  page.on("websocket", (ws) => sockets.push(ws));
  page.on("pageerror", (e) => { throw e; });
  await page.goto(w.site.page(opts));
  return { page, context, sockets };
}

/** Debian's chromium, headless (no browser is downloaded). */
export async function browser() {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
}

/** Waits until `check()` is truthy (polling), or fails saying what was awaited. */
export async function until(what, check, within = 10000) {
  const deadline = Date.now() + within;
  let last;
  while (Date.now() < deadline) {
    last = await check();
    if (last) return last;
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
}

/** The texts of the widget's list, in order, with each item's class. */
export async function listed(page) {
  return page.evaluate(() => {
    const root = document.querySelector("performchat-chat").shadowRoot;
    return Array.from(root.querySelectorAll("[role=log] > li")).map((li) => ({
      cls: li.className,
      who: li.children[0] ? li.children[0].textContent : "",
      text: li.children[1] ? li.children[1].textContent : li.textContent,
      note: li.children[2] ? li.children[2].textContent : "",
    }));
  });
}

/** The conversation id the page's widget opened. */
export async function pageConversation(page) {
  return page.evaluate(async () => {
    for (;;) {
      const ready = window.events.find((e) => e.name === "ready");
      if (ready) return ready.value.conversation.id;
      await new Promise((r) => setTimeout(r, 50));
    }
  });
}
