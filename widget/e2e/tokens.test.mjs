// The widget and its tokens, in a real browser: renewed on `expiring` without a reconnect,
// renewed once after the user is invalidated, ended when the key that minted it is revoked,
// and a failing getToken shown and tried again. Its own server (on the same database as the
// other file's), since these tests take a token's whole minute.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { cli, listed, openPage, sleep, until, world } from "./harness.mjs";

const w = world(before, after);
const open = (opts) => openPage(w, opts);

const stateOf = (page) => page.evaluate(() => window.chat.state);
const banner = (page) => page.evaluate(() =>
  document.querySelector("performchat-chat").shadowRoot.querySelector(".banner").textContent);

async function sendAndSee(page, text) {
  await page.evaluate((text) => window.chat.send(text), text);
  await until(`"${text}" stored`, async () => (await listed(page)).some((m) => m.text === text && !m.note));
}

test("a token is renewed on `expiring` in place: one socket, the chat goes on past the first token's end", async () => {
  // The shortest lifetime there is (60 s): `expiring` comes at 80 % of it.
  const { page, context, sockets } = await open({ user: "gina", expiresIn: "60s" });
  await until("connected", async () => (await stateOf(page)) === "connected");
  await sendAndSee(page, "before the renewal");
  const frames = [];
  sockets[0].on("framereceived", (f) => frames.push(String(f.payload)));
  await until("a second token", () => w.site.tokenCalls.gina === 2, 60000);
  await until("refreshed", () => frames.some((f) => f.includes('"refreshed"')), 5000);
  // Past the first token's exp: the socket lives on the second.
  await sleep(15000);
  await sendAndSee(page, "after the first token's end");
  assert.equal(sockets.length, 1, "no reconnect");
  assert.equal(await stateOf(page), "connected");
  assert.equal(w.site.tokenCalls.gina, 2);
  await context.close();
});

test("invalidating the user closes the socket 4002; the widget gets one new token and goes on", async () => {
  const { page, context, sockets } = await open({ user: "hugo" });
  await until("connected", async () => (await stateOf(page)) === "connected");
  await sendAndSee(page, "before");
  const closed = new Promise((r) => sockets[0].on("close", r));
  await w.server.key("/rest/v1/auth/invalidate", { userId: w.site.users.hugo });
  await closed;
  await until("reconnected", async () => (await stateOf(page)) === "connected" && sockets.length === 2);
  assert.equal(w.site.tokenCalls.hugo, 2, "one new token");
  await sendAndSee(page, "after");
  assert.deepEqual((await listed(page)).map((m) => m.text), ["before", "after"]);
  await context.close();
});

test("revoking the key that minted the token ends the chat: 'Chat is unavailable', no more token calls", async () => {
  const key = cli("key", "create", "--company", process.env.PERFORMCHAT_TEST_COMPANY);
  w.site.useKey("second", key.keyId, key.keySecret);
  // The running server learns of a key made by the CLI from its change feed: wait for it, so
  // that the page's first token is minted at the first try.
  await until("the server knows the new key", async () => (await fetch(`${w.server.base}/rest/v1/auth/token`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ keyId: key.keyId, keySecret: key.keySecret, userId: "probe" }),
  })).ok);
  const { page, context } = await open({ user: "iris", key: "second" });
  await until("connected", async () => (await stateOf(page)) === "connected");
  cli("key", "revoke", key.keyId);
  await until("ended", async () => (await stateOf(page)) === "ended");
  assert.equal(await banner(page), "Chat is unavailable");
  assert.equal(await page.getByRole("textbox", { name: "Message" }).isDisabled(), true);
  const calls = w.site.tokenCalls.iris;
  await sleep(2000);
  assert.equal(w.site.tokenCalls.iris, calls, "it stopped calling getToken");
  assert.equal(calls, 1);
  await context.close();
});

test("a failing getToken is shown and tried again with backoff until it works", async () => {
  w.site.failTokens = true;
  const { page, context } = await open({ user: "jack" });
  await until("the trouble shown", async () => (await banner(page)).includes("Cannot start the chat"));
  await until("tried again", () => w.site.tokenCalls.jack >= 2, 10000);
  w.site.failTokens = false;
  await until("connected", async () => (await stateOf(page)) === "connected", 40000);
  await sendAndSee(page, "it works now");
  await context.close();
});
