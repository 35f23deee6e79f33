// Takes the README's pictures: docs/widget.png (the widget on a company's page, a
// conversation with the agent and a person) and docs/demo.png (`serve --demo`).
//
//   cargo build && node widget/e2e/screenshots.mjs
//
// Against the debug binary on a fresh SQLite file, in Debian's chromium.

import { spawnSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const bin = process.env.PERFORMCHAT_BIN || join(repo, "target", "debug", "performchat");
const url = `sqlite://${join(mkdtempSync(join(tmpdir(), "performchat-shots-")), "shots.db")}`;
const run = (...args) => {
  const out = spawnSync(bin, ["--json", ...args], { env: { ...process.env, PERFORMCHAT_DATABASE_URL: url }, encoding: "utf8" });
  if (out.status !== 0) throw new Error(out.stderr);
  return JSON.parse(out.stdout);
};
run("company", "create", "--name", "Default company", "--id", "company_default");
run("agent", "create", "--company", "company_default", "--name", "Acme Support");
const key = run("key", "create", "--company", "company_default");
Object.assign(process.env, {
  PERFORMCHAT_BIN: bin,
  PERFORMCHAT_DATABASE_URL: url,
  PERFORMCHAT_TEST_KEY_ID: key.keyId,
  PERFORMCHAT_TEST_KEY_SECRET: key.keySecret,
  PERFORMCHAT_TEST_AGENT_NAME: "Acme Support",
});
const { CompanySite, Server, browser, freePort, pageConversation, sleep } = await import("./harness.mjs");

const server = await new Server(await freePort(), ["--demo"]).start();
const site = await new CompanySite(server).start();
const chromium = await browser();
try {
  const context = await chromium.newContext({ viewport: { width: 520, height: 640 }, deviceScaleFactor: 2 });
  const page = await context.newPage();
  await page.goto(site.page({ user: "ada" }));
  const conversation = await pageConversation(page);
  const say = (body) => server.agent("POST", `/rest/v1/agent/conversations/${conversation}/messages`, body);
  await page.evaluate(() => window.chat.send("Hi! Where is my order #1042?"));
  await say({ text: "It left our warehouse this morning. Track it here: https://track.example.com/1042" });
  await page.evaluate(() => window.chat.send("Can I still change the address?"));
  await say({ text: "Let me check with the shipping team, one moment." });
  await say({ text: "Done: it goes to 12 Rue des Lilas. Anything else?", senderKind: "operator", senderName: "Grace" });
  await sleep(500);
  await page.getByRole("textbox", { name: "Message" }).fill("That's all, thank you!");
  await page.locator("#chat").screenshot({ path: join(repo, "docs", "widget.png") });
  await context.close();

  const demo = await chromium.newContext({ viewport: { width: 1180, height: 780 } });
  const d = await demo.newPage();
  await d.goto(`${server.base}/demo`);
  await d.getByRole("textbox", { name: "Message" }).fill("Hello! Is this the chat my users will see?");
  await d.keyboard.press("Enter");
  await d.getByRole("log", { name: "The conversation, as the agent sees it" }).getByText("Hello!").waitFor();
  await d.getByRole("textbox", { name: "Reply as agent" }).fill("It is: the widget on the left, you on the right.");
  await d.getByRole("button", { name: "Send reply" }).click();
  await d.getByRole("log", { name: "Messages" }).getByText("It is: the widget").waitFor();
  await sleep(300);
  await d.screenshot({ path: join(repo, "docs", "demo.png") });
  await demo.close();
} finally {
  await chromium.close();
  site.stop();
  await server.kill();
}
console.log("docs/widget.png, docs/demo.png");
