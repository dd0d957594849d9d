// The meeting page in a real Chromium (Debian's package, driven through
// playwright-core): two pages join one room, the host admits the guest
// from the lobby, chat goes both ways, a raised hand shows in the host's
// queue, a screen share is requested, granted and stopped, the server is
// restarted and both pages reconnect with the chat complete (no gap, no
// duplicate, a message typed during the outage delivered once), and a
// WebRTC call connects with fake media devices; in jwt mode the page joins
// with a pasted token. Screenshots of every step
// go to $ROOMCAST_ARTIFACTS (tests/browser.rs: target/browser-artifacts).
//
// Without a browser the test is skipped with the reason, never passed.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { Server, serverBinary, hs256 } from "../../clients/js/test/server.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const artifacts = process.env.ROOMCAST_ARTIFACTS || join(here, "..", "..", "target", "browser-artifacts");

let playwright = null;
try {
  playwright = await import("playwright-core");
} catch {
  /* reported below */
}
const skip = !existsSync(chromiumPath)
  ? `no Chromium at ${chromiumPath}`
  : playwright === null
    ? "playwright-core is not installed (npm ci in tests/browser)"
    : serverBinary() === null
      ? "no roomcast binary (cargo build, or set ROOMCAST_BIN)"
      : false;
if (skip) console.log(`SKIPPED browser test: ${skip}`);

let server;
let browser;
let profile;
const pages = {};

before(async () => {
  if (skip) return;
  mkdirSync(artifacts, { recursive: true });
  server = await Server.start({ extra: ["--lobby"] });
  profile = mkdtempSync(join(tmpdir(), "roomcast-chromium-"));
  browser = await playwright.chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      // Without these Chromium's own background connections are refused by
      // a closed network and can stall it.
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--use-fake-device-for-media-stream",
      "--use-fake-ui-for-media-stream",
    ],
  });
});

after(async () => {
  for (const page of Object.values(pages)) await page.context().close().catch(() => {});
  await browser?.close();
  await server?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

let shot = 0;
async function screenshot(name) {
  shot++;
  for (const [who, page] of Object.entries(pages)) {
    await page.screenshot({ path: join(artifacts, `${String(shot).padStart(2, "0")}-${name}-${who}.png`), fullPage: true });
  }
}

async function openPage(who, width) {
  const context = await browser.newContext({ viewport: { width, height: 900 }, permissions: ["camera", "microphone"] });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(`${who}: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`${who} console: ${m.text()}`);
  });
  page.problems = problems;
  pages[who] = page;
  await page.goto(`${server.http}/?room=meet`);
  return page;
}

async function joinAs(page, user) {
  await page.getByLabel("Display name (dev mode)").fill(user);
  await page.getByRole("button", { name: "Join" }).click();
}

/** The chat as a page shows it: the text of each message, in order. */
async function chatTexts(page) {
  return page.locator("#chat-log li[data-id] .text").allTextContents();
}

async function chatIds(page) {
  return page.locator("#chat-log li[data-id]").evaluateAll((items) => items.map((li) => li.dataset.id));
}

async function waitForChat(page, texts) {
  await page.waitForFunction(
    (want) => {
      const got = [...document.querySelectorAll("#chat-log li[data-id] .text")].map((n) => n.textContent);
      return JSON.stringify(got) === JSON.stringify(want);
    },
    texts,
    { timeout: 10000 },
  ).catch(async () => assert.deepEqual(await chatTexts(page), texts));
}

async function send(page, text) {
  const input = page.getByRole("textbox", { name: "Message", exact: true });
  await input.fill(text);
  await input.press("Enter");
}

test("the meeting page in Chromium", { skip, timeout: 120000 }, async (t) => {
  const host = await openPage("host", 1024);
  const guest = await openPage("guest", 390); // a narrow (phone) screen

  await t.test("the page is served with its policy and no outside resources", async () => {
    const response = await fetch(`${server.http}/`);
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type"), /^text\/html/);
    assert.match(response.headers.get("content-security-policy"), /default-src 'self'/);
    const js = await fetch(`${server.http}/demo/roomcast.js`);
    assert.match(js.headers.get("content-type"), /^text\/javascript/);
  });

  await t.test("host joins; guest waits in the lobby and is admitted", async () => {
    await joinAs(host, "hana");
    await host.waitForSelector("body[data-role=host]");
    // The guest joins with the keyboard only.
    await guest.getByLabel("Display name (dev mode)").fill("gus");
    await guest.getByLabel("Display name (dev mode)").press("Enter");
    await guest.waitForSelector("body[data-role=waiting]");
    await guest.getByText("Waiting in the lobby").waitFor();
    const waiting = host.locator("#lobby li[data-user=gus]");
    await waiting.waitFor();
    await screenshot("lobby");
    await host.getByRole("button", { name: "Admit gus" }).click();
    await guest.waitForSelector("body[data-role=participant]");
    await host.locator("#members li[data-user=gus]").waitFor();
    await guest.locator("#members li[data-user=hana][data-role=host]").waitFor();
    await host.locator("#lobby li[data-user=gus]").waitFor({ state: "detached" });
    // The narrow page does not scroll sideways.
    const overflow = await guest.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the 390 px page is ${overflow} px too wide`);
  });

  await t.test("chat both ways, and a deletion", async () => {
    await send(host, "hello gus");
    await waitForChat(guest, ["hello gus"]);
    await send(guest, "hi hana");
    await waitForChat(host, ["hello gus", "hi hana"]);
    await send(guest, "typo");
    await waitForChat(host, ["hello gus", "hi hana", "typo"]);
    await guest.getByRole("button", { name: "Delete message: typo" }).click();
    await waitForChat(host, ["hello gus", "hi hana"]);
    await waitForChat(guest, ["hello gus", "hi hana"]);
    await screenshot("chat");
  });

  await t.test("a raised hand shows in the host's queue", async () => {
    await guest.getByRole("button", { name: "Raise hand" }).click();
    await host.locator("#hands li[data-user=gus]").waitFor();
    await guest.getByRole("button", { name: "Lower hand" }).waitFor();
    await screenshot("hand");
  });

  await t.test("screen share: request, grant, stop", async () => {
    await guest.getByRole("button", { name: "Request to share" }).click();
    await host.getByRole("button", { name: "Grant gus" }).click();
    await guest.waitForSelector("body[data-role=screenshare]");
    await host.locator("#sharers", { hasText: "gus" }).waitFor();
    await screenshot("share");
    await guest.getByRole("button", { name: "Stop sharing" }).click();
    await guest.waitForSelector("body[data-role=participant]");
    await host.locator("#sharers", { hasText: "nobody" }).waitFor();
  });

  await t.test("server restart: both pages reconnect, chat complete with no duplicate", async () => {
    // Restarted without --lobby, so that whichever page comes back first
    // does not leave the other in a lobby (hosts are not kept over a restart).
    server.extra = [];
    await server.stop();
    await host.waitForSelector("body[data-connection=reconnecting]");
    await guest.waitForSelector("body[data-connection=reconnecting]");
    // Typed while the server is down: queued by the client, sent once on reconnect.
    await send(guest, "sent during the outage");
    await screenshot("outage");
    await server.spawn(server.addr);
    await host.waitForSelector("body[data-connection=open]", { timeout: 15000 });
    await guest.waitForSelector("body[data-connection=open]", { timeout: 15000 });
    const expected = ["hello gus", "hi hana", "sent during the outage"];
    await waitForChat(host, expected);
    await waitForChat(guest, expected);
    await send(host, "after the restart");
    expected.push("after the restart");
    await waitForChat(guest, expected);
    await waitForChat(host, expected);
    for (const page of [host, guest]) {
      const ids = await chatIds(page);
      assert.equal(new Set(ids).size, ids.length, `duplicate chat ids: ${ids}`);
    }
    await screenshot("restarted");
  });

  await t.test("a WebRTC call connects through signal with fake media", async () => {
    await host.getByLabel("Call member").selectOption("gus");
    await host.getByRole("button", { name: "Call", exact: true }).click();
    const states = async () => `host: ${await host.textContent("#call-state")}, guest: ${await guest.textContent("#call-state")}`;
    for (const page of [host, guest]) {
      await page
        .locator("#call-state", { hasText: /^connected$/ })
        .waitFor({ timeout: 20000 })
        .catch(async () => assert.fail(`the call did not connect: ${await states()}`));
    }
    // Media flows: the remote video has frames.
    await guest.waitForFunction(() => document.getElementById("remote-video").videoWidth > 0, null, { timeout: 15000 });
    await screenshot("call");
    await host.getByRole("button", { name: "Hang up" }).click();
    await guest.locator("#call-state", { hasText: "ended" }).waitFor();
  });

  const problems = [...host.problems, ...guest.problems].filter(
    // The restart refuses connections for a moment; the client retries.
    (p) => !/WebSocket connection to .* failed|ERR_CONNECTION_REFUSED/.test(p),
  );
  assert.deepEqual(problems, [], "errors on the pages");
});

test("jwt mode: the page joins with a pasted token", { skip, timeout: 60000 }, async () => {
  const secret = "browser-test-secret-of-at-least-32-bytes";
  const jwt = await Server.start({ jwtSecret: secret, extra: ["--set", "http.demo_page=true"] });
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    await page.goto(`${jwt.http}/?room=tok`);
    const exp = Math.floor(Date.now() / 1000) + 600;
    await page.getByLabel("or token (JWT)").fill(hs256({ sub: "tina", name: "Tina", role: "host", room: "tok", exp }, secret));
    await page.getByRole("button", { name: "Join" }).click();
    await page.waitForSelector("body[data-role=host]");
    await page.locator("#me", { hasText: "tina" }).waitFor();
    await page.screenshot({ path: join(artifacts, "08-jwt-token.png") });
    // Without the key the page is not served in jwt mode.
    const off = await Server.start({ jwtSecret: secret });
    try {
      assert.equal((await fetch(`${off.http}/`)).status, 404);
    } finally {
      await off.close();
    }
  } finally {
    await context.close();
    await jwt.close();
  }
});
