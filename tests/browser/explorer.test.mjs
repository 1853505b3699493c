// Loads the API explorer in headless Chromium, creates an account through its
// form with a bearer token, and checks the 200 response it shows; then lists
// the accounts and finds the new one, and watches the change feed stream in.
// Needs CRM_HTTP (base URL) and CRM_TOKEN.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";

const base = process.env.CRM_HTTP ?? "http://127.0.0.1:8080";
const token = process.env.CRM_TOKEN;
assert.ok(token, "CRM_TOKEN is required");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const failures = [];
try {
  const page = await browser.newPage();
  const external = [];
  page.on("request", (r) => { if (!r.url().startsWith(base)) external.push(r.url()); });
  page.on("pageerror", (e) => failures.push("page error: " + e.message));

  await page.goto(base + "/explorer");
  await page.waitForSelector('nav button[data-op="CreateAccount"]');
  await page.fill("#token", token);

  await page.click('nav button[data-op="CreateAccount"]');
  const name = "Explorer Co " + Date.now();
  await page.fill("#body", JSON.stringify({ name, domain: "explorer.example", tags: ["browser"] }, null, 2));
  await page.click("#send");
  await page.waitForSelector("#status");
  const status = await page.textContent("#status");
  const body = JSON.parse(await page.textContent("#response"));
  assert.equal(status, "200", "create through the explorer: " + JSON.stringify(body));
  assert.equal(body.name, name);
  assert.match(body.id, /^acc_[0-9A-Z]{26}$/);

  await page.click('nav button[data-op="ListAccounts"]');
  await page.fill('input[name="page_size"]', "5");
  await page.click("#send");
  await page.waitForFunction(() => document.querySelector("#status")?.textContent === "200");
  const list = JSON.parse(await page.textContent("#response"));
  assert.ok(list.accounts.some((a) => a.id === body.id), "the new account is listed");

  // The change feed's watch streams into the page, line by line, until Stop.
  await page.click('nav button[data-op="WatchChanges"]');
  await page.fill('input[name="after_sequence"]', "0");
  await page.click("#send");
  await page.waitForFunction(
    (id) => (document.querySelector("#response")?.textContent ?? "").includes(id),
    body.id,
    { timeout: 10000 },
  );
  const first = JSON.parse((await page.textContent("#response")).split("\n")[0]);
  assert.equal(first.result.change.record_id, body.id, "the watch starts with the account's creation");
  await page.click("#stop");
  await page.waitForFunction(() => (document.querySelector("#response")?.textContent ?? "").includes("(stopped)"));

  // Without a token the explorer shows the API's 401.
  await page.fill("#token", "");
  await page.click('nav button[data-op="ListAccounts"]');
  await page.click("#send");
  await page.waitForFunction(() => document.querySelector("#status")?.textContent === "401");

  assert.deepEqual(external, [], "the explorer must not load anything from elsewhere");
  console.log("explorer: created", body.id, "and listed it; no external requests");
} catch (e) {
  failures.push(e.stack ?? String(e));
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
