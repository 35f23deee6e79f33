// The widget in a real browser, on a company's page of another origin: sending and
// receiving, a streamed reply, markup shown as text, a hostile stylesheet, keyboard only, the
// server killed and restarted mid-conversation, and the demo page.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { AGENT_NAME, listed, openPage, pageConversation, sleep, until, world } from "./harness.mjs";

const w = world(before, after, ["--demo"]);

async function open(opts) {
  const opened = await openPage(w, opts);
  await until("the widget connected", () => opened.page.evaluate(() => window.chat.state === "connected"));
  return opened;
}

const log = (page) => page.getByRole("log", { name: "Messages" });

test("a user sends and receives; the agent's name and messages are apart from the user's", async () => {
  const { page, context, sockets } = await open({ user: "ada" });
  await assert.doesNotReject(page.getByRole("heading", { name: AGENT_NAME }).waitFor());
  const box = page.getByRole("textbox", { name: "Message" });
  await box.fill("Where is my order?");
  await box.press("Enter");
  await until("the message stored", async () => (await listed(page)).some((m) => m.text === "Where is my order?" && !m.note));
  const conversation = await pageConversation(page);
  const stored = await w.server.agent("GET", `/rest/v1/agent/conversations/${conversation}/messages`);
  assert.deepEqual(stored.messages.map((m) => [m.sender.kind, m.text]), [["user", "Where is my order?"]]);

  await w.server.agent("POST", `/rest/v1/agent/conversations/${conversation}/messages`, { text: "It ships today." });
  await log(page).getByText("It ships today.").waitFor();
  await w.server.agent("POST", `/rest/v1/agent/conversations/${conversation}/messages`, {
    text: "Grace here, from the warehouse.", senderKind: "operator", senderName: "Grace",
  });
  await log(page).getByText("Grace here, from the warehouse.").waitFor();
  const items = await listed(page);
  assert.deepEqual(items.map((m) => [m.cls, m.who, m.text]), [
    ["msg user", "You", "Where is my order?"],
    ["msg agent", AGENT_NAME, "It ships today."],
    ["msg operator", "Grace", "Grace here, from the warehouse."],
  ]);
  // Shift+Enter is a new line, Enter sends; the Send button sends too.
  await box.fill("line one");
  await box.press("Shift+Enter");
  await box.pressSequentially("line two");
  await page.getByRole("button", { name: "Send" }).click();
  await until("the two-line message", async () => (await listed(page)).some((m) => m.text === "line one\nline two" && !m.note));
  assert.equal(sockets.length, 1, "one socket all along");
  await context.close();
});

test("a streamed reply grows in place as its deltas come, then completes", async () => {
  const { page, context } = await open({ user: "bob" });
  const conversation = await pageConversation(page);
  const path = `/rest/v1/agent/conversations/${conversation}/messages`;
  const { message } = await w.server.agent("POST", path, { status: "streaming", text: "" });
  await w.server.agent("PATCH", `${path}/${message.id}`, { append: "Your order " });
  await until("the first chunk shown", async () => (await listed(page)).some((m) => m.text === "Your order "));
  const growing = (await listed(page)).find((m) => m.text === "Your order ");
  assert.match(growing.cls, /streaming/);
  await w.server.agent("PATCH", `${path}/${message.id}`, { append: "ships " });
  await until("the second chunk shown", async () => (await listed(page)).some((m) => m.text === "Your order ships "));
  await w.server.agent("PATCH", `${path}/${message.id}`, { append: "today.", status: "complete" });
  await until("the reply complete", async () =>
    (await listed(page)).some((m) => m.text === "Your order ships today." && !m.cls.includes("streaming")));
  const agentItems = (await listed(page)).filter((m) => m.cls.includes("agent"));
  assert.equal(agentItems.length, 1, "one message, grown in place");
  await context.close();
});

test("a reply that fails says so, before its first words or after them", async () => {
  const { page, context } = await open({ user: "fay" });
  const conversation = await pageConversation(page);
  const path = `/rest/v1/agent/conversations/${conversation}/messages`;
  const { message: empty } = await w.server.agent("POST", path, { status: "streaming", text: "" });
  await w.server.agent("PATCH", `${path}/${empty.id}`, { status: "failed" });
  const { message: cut } = await w.server.agent("POST", path, { status: "streaming", text: "Let me check" });
  await w.server.agent("PATCH", `${path}/${cut.id}`, { status: "failed" });
  await until("both failed replies shown", async () =>
    (await listed(page)).filter((m) => m.cls.includes("failed")).length === 2);
  const [first, second] = (await listed(page)).filter((m) => m.cls.includes("failed"));
  assert.deepEqual([first.text, first.note], ["", "The reply failed."]);
  assert.deepEqual([second.text, second.note], ["Let me check", "The reply failed."]);
  // No empty bubble: the failed reply without words shows its note only.
  const bubbles = await page.evaluate(() => Array.from(document.querySelector("performchat-chat").shadowRoot
    .querySelectorAll("li.failed .body")).map((b) => b.getBoundingClientRect().height));
  assert.equal(bubbles[0], 0, "the empty reply's bubble is not shown");
  assert.ok(bubbles[1] > 0, "the cut reply's words are shown");
  await context.close();
});

test("what the agent's side does is shown: typing, a handoff until a person answers, a refused send with Retry", async () => {
  const { page, context } = await open({ user: "ivy" });
  const conversation = await pageConversation(page);
  const path = `/rest/v1/agent/conversations/${conversation}`;
  const activity = () => page.evaluate(() => {
    const el = document.querySelector("performchat-chat").shadowRoot.querySelector(".activity");
    return el.hidden ? "" : el.textContent;
  });
  const banner = () => page.evaluate(() => {
    const el = document.querySelector("performchat-chat").shadowRoot.querySelector(".banner");
    return el.hidden ? "" : el.textContent;
  });
  await page.evaluate(() => window.chat.send("Hello?"));
  await w.server.agent("POST", `${path}/typing`, { state: "start" });
  await until("typing shown", async () => (await activity()) === `${AGENT_NAME} is typing…`);
  await w.server.agent("POST", `${path}/typing`, { state: "stop" });
  await until("typing gone", async () => (await activity()) === "");

  await w.server.agent("POST", `${path}/handoff`, {});
  await until("waiting for a person", async () => (await banner()) === "Waiting for a person…");
  await w.server.agent("POST", `${path}/messages`, { text: "Grace here.", senderKind: "operator", senderName: "Grace" });
  await until("a person answered", async () => (await banner()) === "");

  const refused = await page.evaluate(() => window.chat.send("x".repeat(4001)).then(() => "stored", (e) => e.code));
  assert.equal(refused, "invalid_request");
  const failed = (await listed(page)).at(-1);
  assert.match(failed.cls, /failed/);
  assert.match(failed.note, /^Not sent\..*4000.*Retry$/);
  await page.getByRole("button", { name: "Retry" }).waitFor();
  await context.close();
});

test("more than a page missed while away is caught up from the last seq: no gap, no repeat", async () => {
  const { page, context, sockets } = await open({ user: "jude" });
  const conversation = await pageConversation(page);
  await page.evaluate(() => window.chat.send("before"));
  // The user's tokens die and the backend cannot give a new one for a while: the page is away.
  w.site.failTokens = true;
  await w.server.key("/rest/v1/auth/invalidate", { userId: w.site.users.jude });
  await until("away", () => page.evaluate(() => window.chat.state === "reconnecting"));
  const missed = Array.from({ length: 75 }, (_, i) => `missed ${i + 1}`);
  for (const text of missed) {
    await w.server.agent("POST", `/rest/v1/agent/conversations/${conversation}/messages`, { text });
  }
  w.site.failTokens = false;
  await until("back", () => page.evaluate(() => window.chat.state === "connected"), 40000);
  await until("caught up", async () => (await listed(page)).length === 76);
  assert.deepEqual((await listed(page)).map((m) => m.text), ["before", ...missed]);
  assert.ok(sockets.length >= 2);
  await context.close();
});

test("markup in a message is shown as text, and only http(s) links become links", async () => {
  const { page, context } = await open({ user: "carol" });
  const conversation = await pageConversation(page);
  const evil = `<img src=x onerror="window.pwned=1"> see https://example.com/a?b=1, javascript:alert(1)`;
  await page.getByRole("textbox", { name: "Message" }).fill(evil);
  await page.keyboard.press("Enter");
  // Acked first, so that the reply takes the next seq and is listed after it.
  await until("sent", async () => (await listed(page)).some((m) => m.text === evil && !m.note));
  await w.server.agent("POST", `/rest/v1/agent/conversations/${conversation}/messages`, {
    text: `<b>bold</b><script>window.pwned=2</script> http://example.org/x.`,
  });
  await until("both shown", async () => (await listed(page)).filter((m) => !m.note).length === 2);
  const items = await listed(page);
  assert.equal(items[0].text, evil);
  assert.equal(items[1].text, `<b>bold</b><script>window.pwned=2</script> http://example.org/x.`);
  const inside = await page.evaluate(() => {
    const root = document.querySelector("performchat-chat").shadowRoot;
    return {
      imgs: root.querySelectorAll("img, script, b").length,
      links: Array.from(root.querySelectorAll("a")).map((a) => [a.getAttribute("href"), a.rel, a.target]),
      pwned: window.pwned ?? null,
    };
  });
  assert.deepEqual(inside, {
    imgs: 0,
    links: [
      ["https://example.com/a?b=1", "noopener noreferrer", "_blank"],
      ["http://example.org/x", "noopener noreferrer", "_blank"],
    ],
    pwned: null,
  });
  await context.close();
});

test("a hostile stylesheet on the host page leaves the widget's look intact", async () => {
  const look = async (opts) => {
    const { page, context } = await open(opts);
    await page.getByRole("textbox", { name: "Message" }).fill("Same look?");
    await page.keyboard.press("Enter");
    await until("sent", async () => (await listed(page)).some((m) => m.text === "Same look?" && !m.note));
    const styles = await page.evaluate(() => {
      const root = document.querySelector("performchat-chat").shadowRoot;
      const pick = (sel) => {
        const s = getComputedStyle(root.querySelector(sel));
        return ["fontSize", "fontFamily", "color", "backgroundColor", "display", "padding", "borderTopStyle",
          "lineHeight", "letterSpacing", "textTransform", "fontStyle", "fontWeight"].map((k) => `${k}=${s[k]}`).join(" ");
      };
      // The widget fills its container, whatever the page made of the container.
      const host = document.querySelector("performchat-chat").getBoundingClientRect();
      const target = document.getElementById("chat");
      const inner = target.getBoundingClientRect();
      const fills = Math.abs(host.width - (inner.width - parseFloat(getComputedStyle(target).paddingLeft)
        - parseFloat(getComputedStyle(target).paddingRight) - parseFloat(getComputedStyle(target).borderLeftWidth)
        - parseFloat(getComputedStyle(target).borderRightWidth))) < 2;
      return {
        panel: pick(".root"), header: pick("header"), log: pick("[role=log]"), bubble: pick(".msg .body"),
        box: pick("textarea"), send: pick("button[type=submit]"), fills,
      };
    });
    await context.close();
    return { styles };
  };
  const plain = await look({ user: "dan" });
  const attacked = await look({ user: "dan", hostile: "1" });
  // (The page's rules may remake the container itself, `display: inline` here: the widget
  // fills whatever it is, so only the plain page's container is measured.)
  assert.equal(plain.styles.fills, true);
  delete plain.styles.fills;
  delete attacked.styles.fills;
  assert.deepEqual(attacked.styles, plain.styles);
  assert.match(plain.styles.box, /fontSize=15px/);
  assert.match(plain.styles.send, /color=rgb\(255, 255, 255\) backgroundColor=rgb\(31, 95, 209\)/);
});

test("the page themes the widget with CSS custom properties, the launcher too", async () => {
  const { page, context } = await open({ user: "hal", accent: "rgb(120, 20, 90)", floating: "1" });
  const launcher = page.getByRole("button", { name: "Open chat" });
  assert.equal(await launcher.evaluate((b) => getComputedStyle(b).backgroundColor), "rgb(120, 20, 90)");
  await launcher.click();
  const look = await page.evaluate(() => {
    const root = document.querySelector("performchat-chat").shadowRoot;
    return [getComputedStyle(root.querySelector("header")).backgroundColor, getComputedStyle(root.querySelector(".root")).fontSize];
  });
  assert.deepEqual(look, ["rgb(120, 20, 90)", "17px"]);
  await context.close();
});

test("text meets WCAG AA contrast (4.5:1) against its background", async () => {
  const { page, context } = await open({ user: "gus" });
  const conversation = await pageConversation(page);
  await page.evaluate(() => window.chat.send("A question"));
  await w.server.agent("POST", `/rest/v1/agent/conversations/${conversation}/messages`, {
    text: "From a person: https://example.com", senderKind: "operator", senderName: "Grace",
  });
  await log(page).getByText("From a person").waitFor();
  const ratios = await page.evaluate(() => {
    const root = document.querySelector("performchat-chat").shadowRoot;
    const rgb = (c) => c.match(/[\d.]+/g).map(Number);
    const lum = ([r, g, b]) => [r, g, b].map((v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    }).reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
    const background = (el) => {
      for (let e = el; e; e = e.parentElement || e.getRootNode().host) {
        const c = rgb(getComputedStyle(e).backgroundColor);
        if (c.length < 4 || c[3] > 0) return c;
      }
      return [255, 255, 255];
    };
    const ratio = (sel) => {
      const el = root.querySelector(sel);
      const [a, b] = [lum(rgb(getComputedStyle(el).color)), lum(background(el))];
      return Math.round(((Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)) * 100) / 100;
    };
    return Object.fromEntries(["h2", ".who", ".msg.user .body", ".msg.operator .body", ".msg.operator a",
      "button[type=submit]", "textarea"].map((sel) => [sel, ratio(sel)]));
  });
  for (const [sel, ratio] of Object.entries(ratios)) assert.ok(ratio >= 4.5, `${sel}: ${ratio}:1`);
  await context.close();
});

test("keyboard only: Tab to the text box, Enter sends, Tab to Send; the launcher opens and Escape closes", async () => {
  const { page, context } = await open({ user: "erin" });
  // From the top of the page: the page's own link, then the widget's log (scrollable), then the box.
  let focused = "";
  for (let i = 0; i < 6 && focused !== "Message"; i++) {
    await page.keyboard.press("Tab");
    focused = await page.evaluate(() => {
      const inner = document.activeElement?.shadowRoot?.activeElement;
      return inner ? inner.getAttribute("aria-label") || inner.textContent : "";
    });
  }
  assert.equal(focused, "Message", "the text box is reached with Tab");
  await page.keyboard.type("typed, not clicked");
  await page.keyboard.press("Enter");
  await until("sent with Enter", async () => (await listed(page)).some((m) => m.text === "typed, not clicked" && !m.note));
  await page.keyboard.type("by the button");
  await page.keyboard.press("Tab");
  await page.keyboard.press("Enter");
  await until("sent with the button", async () => (await listed(page)).some((m) => m.text === "by the button" && !m.note));
  await context.close();

  const floating = await open({ user: "erin", floating: "1" });
  const launcher = floating.page.getByRole("button", { name: "Open chat" });
  await launcher.focus();
  await floating.page.keyboard.press("Enter");
  const box = floating.page.getByRole("textbox", { name: "Message" });
  await until("focus in the opened panel", () => box.evaluate((el) => el.getRootNode().activeElement === el));
  assert.deepEqual((await listed(floating.page)).map((m) => m.text), ["typed, not clicked", "by the button"],
    "the same conversation, from another page");
  await floating.page.keyboard.press("Escape");
  await floating.page.getByRole("button", { name: "Open chat" }).waitFor();
  assert.equal(await box.isVisible(), false);
  await floating.context.close();
});

test("the server killed and restarted while the user sends: nothing lost, repeated or out of order", async () => {
  const { page, context, sockets } = await open({ user: "frank" });
  const conversation = await pageConversation(page);
  const texts = Array.from({ length: 12 }, (_, i) => `message ${i + 1}`);
  // Sent 150 ms apart through the widget's handle, as a user typing fast would.
  const sending = page.evaluate(async (texts) => {
    const sent = [];
    for (const text of texts) {
      sent.push(window.chat.send(text));
      await new Promise((r) => setTimeout(r, 150));
    }
    return (await Promise.all(sent)).map((m) => m.seq);
  }, texts);
  await sleep(500);
  await w.server.kill();
  await until("the widget saw the drop", () => page.evaluate(() => window.chat.state === "reconnecting"));
  await sleep(800);
  await w.server.start();
  const seqs = await sending;
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), "acknowledged in order");
  await until("all shown as stored", async () => (await listed(page)).filter((m) => !m.note).length === texts.length);
  assert.deepEqual((await listed(page)).map((m) => m.text), texts, "the list: each once, in order");
  const stored = await w.server.agent("GET", `/rest/v1/agent/conversations/${conversation}/messages?limit=200`);
  assert.deepEqual(stored.messages.map((m) => m.text), texts, "the database: each once, in order");
  assert.ok(sockets.length >= 2, "it reconnected");
  // Messages the agent sends while the user's page is away are caught up after the reconnect.
  await w.server.kill();
  await until("dropped again", () => page.evaluate(() => window.chat.state === "reconnecting"));
  await w.server.start();
  for (const text of ["while you were away 1", "while you were away 2"]) {
    await w.server.agent("POST", `/rest/v1/agent/conversations/${conversation}/messages`, { text });
  }
  await until("caught up", async () => (await listed(page)).length === texts.length + 2, 20000);
  assert.deepEqual((await listed(page)).map((m) => m.text).slice(-2), ["while you were away 1", "while you were away 2"]);
  await context.close();
});

test("the demo page: the widget beside the agent's pane, both sides of the chat", async () => {
  const context = await w.chromium.newContext({ viewport: { width: 1200, height: 800 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => { throw e; });
  await page.goto(`${w.server.base}/demo`);
  const box = page.getByRole("textbox", { name: "Message" });
  await box.fill("Hello from the demo");
  await box.press("Enter");
  const agentLog = page.getByRole("log", { name: "The conversation, as the agent sees it" });
  await agentLog.getByText("Hello from the demo").waitFor();
  await page.getByRole("textbox", { name: "Reply as agent" }).fill("Hello, demo user!");
  await page.getByRole("button", { name: "Send reply" }).click();
  await page.getByRole("log", { name: "Messages" }).getByText("Hello, demo user!").waitFor();
  await agentLog.getByText("Hello, demo user!").waitFor();
  await context.close();
});
