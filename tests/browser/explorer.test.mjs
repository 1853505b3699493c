// Loads the API explorer in headless Chromium, creates an account through its
// form with a bearer token, and checks the 200 response it shows; then lists
// the accounts and finds the new one, and watches the change feed stream in.
// Then: the request fields and their rules as /openapi.json states them, the
// example bodies made from the schema (an update's carries the version),
// "Copy as curl" (the command run by bash must succeed), and the dev-token
// control (`serve --dev` mints a token that then creates an account; a server
// without the endpoint gets the explanation instead).
// Needs CRM_HTTP (base URL) and CRM_TOKEN, against a `crm serve --dev` server.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";

const base = process.env.CRM_HTTP ?? "http://127.0.0.1:8080";
const token = process.env.CRM_TOKEN;
assert.ok(token, "CRM_TOKEN is required");

// Runs a curl command the explorer made, as a user pasting it would (bash),
// with the HTTP status written after the body.
function runCurl(command) {
  const out = execFileSync("bash", ["-c", command + " -w '\\n%{http_code}'"], { encoding: "utf8", timeout: 20000 });
  const i = out.lastIndexOf("\n");
  return { status: Number(out.slice(i + 1)), body: out.slice(0, i) };
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const failures = [];
try {
  const context = await browser.newContext({ permissions: ["clipboard-read", "clipboard-write"] });
  const page = await context.newPage();
  const external = [];
  page.on("request", (r) => { if (!r.url().startsWith(base)) external.push(r.url()); });
  page.on("pageerror", (e) => failures.push("page error: " + e.message));

  await page.goto(base + "/explorer");
  await page.waitForSelector('nav button[data-op="CreateAccount"]');
  await page.fill("#token", token);

  await page.click('nav button[data-op="CreateAccount"]');

  // The request fields show what the OpenAPI document says of each, whatever
  // it says: required, enumerations, lengths, patterns, bounds; output-only
  // fields are set apart.
  const spec = await (await fetch(base + "/openapi.json")).json();
  const account = spec.components.schemas.Account;
  const nameRow = page.locator('#fields tr[data-field="name"]');
  assert.equal(await nameRow.getAttribute("data-required"), "true", "name is required");
  assert.match(await nameRow.textContent(), /required/);
  const sourceType = await page.locator('#fields tr[data-field="source_type"]').textContent();
  for (const v of ["frontend", "backend", "server", "system", "api"]) {
    assert.ok(sourceType.includes(JSON.stringify(v)), `source_type shows its value ${v}: ${sourceType}`);
  }
  for (const [field, prop] of Object.entries(account.properties)) {
    if (prop.readOnly) {
      assert.equal(await page.locator(`#fields tr[data-field="${field}"]`).count(), 0, `${field} is output only`);
      assert.equal(await page.locator(`#output-only [data-field="${field}"]`).count(), 1, `${field} listed as output only`);
      continue;
    }
    const row = await page.locator(`#fields tr[data-field="${field}"]`).textContent();
    if (prop.description) assert.ok(row.includes(prop.description.split("\n")[0]), `${field} shows its description`);
    for (const key of ["maxLength", "minLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "maxItems", "pattern"]) {
      if (typeof prop[key] === "number" || typeof prop[key] === "string") {
        assert.ok(row.includes(String(prop[key])), `${field} shows ${key} ${prop[key]}: ${row}`);
      }
    }
    for (const v of prop.enum ?? []) assert.ok(row.includes(JSON.stringify(v)), `${field} shows ${v}`);
    if ((account.required ?? []).includes(field)) {
      assert.equal(await page.locator(`#fields tr[data-field="${field}"] .badge.req`).count(), 1, `${field} required`);
    }
  }
  // The example body is made from the schema: the required fields, nothing
  // output-only, enumerated values from their enumeration.
  const created = JSON.parse(await page.inputValue("#body"));
  for (const field of account.required ?? []) assert.ok(field in created, `the example has ${field}`);
  for (const [field, value] of Object.entries(created)) {
    const prop = account.properties[field];
    assert.ok(prop && !prop.readOnly, `the example sets only writable fields (${field})`);
    if (prop.enum) assert.ok(prop.enum.includes(value), `${field} from its enum`);
    if (typeof value === "string" && prop.maxLength !== undefined) assert.ok(value.length <= prop.maxLength);
  }

  const name = "Explorer Co " + Date.now();
  await page.fill("#body", JSON.stringify({ name, domain: "explorer.example", tags: ["browser"] }, null, 2));
  await page.click("#send");
  await page.waitForSelector("#status");
  const status = await page.textContent("#status");
  const body = JSON.parse(await page.textContent("#response"));
  assert.equal(status, "200", "create through the explorer: " + JSON.stringify(body));
  assert.equal(body.name, name);
  assert.match(body.id, /^acc_[0-9A-Z]{26}$/);
  // The response's links, when the document has them, lead on with their
  // parameters taken from the response.
  const links = spec.paths["/api/v1/crm/accounts"].post.responses["200"].links ?? {};
  assert.equal(await page.locator("button[data-link]").count(), Object.keys(links).length, "a button per link");

  const [linkName, link] = Object.entries(links).find(([, l]) => l.operationId === "GetAccount") ?? [];
  if (link) {
    await page.click(`button[data-link="${linkName}"]`);
    assert.equal(await page.getAttribute('nav button[aria-current="true"]', "data-op"), "GetAccount");
    for (const [param, expr] of Object.entries(link.parameters ?? {})) {
      const m = /^\$response\.body#\/(\w+)$/.exec(expr);
      if (m) assert.equal(await page.inputValue(`[data-in][name="${param.replace(/^\w+\./, "")}"]`), String(body[m[1]]));
    }
    await page.click("#send");
    await page.waitForFunction(() => document.querySelector("#status")?.textContent === "200");
    assert.equal(JSON.parse(await page.textContent("#response")).id, body.id, "the link's GetAccount");
  }

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

  // An update's example carries the version (optimistic concurrency); the
  // path's id is the record the service last answered with.
  await page.click('nav button[data-op="UpdateAccount"]');
  assert.equal(await page.inputValue('input[name="id"]'), body.id, "the id of the last account");
  const patch = JSON.parse(await page.inputValue("#body"));
  assert.ok("version" in patch, "the update example has version: " + JSON.stringify(patch));
  assert.equal(patch.version, body.version);
  await page.click("#send");
  await page.waitForFunction(() => ["200", "400", "409"].includes(document.querySelector("#status")?.textContent));
  const updated = JSON.parse(await page.textContent("#response"));
  assert.equal(await page.textContent("#status"), "200", "the example update: " + JSON.stringify(updated));
  const changes = Object.entries(patch).some(([k, v]) => k !== "version" && JSON.stringify(body[k]) !== JSON.stringify(v));
  assert.equal(updated.version, body.version + (changes ? 1 : 0), "a checked update: " + JSON.stringify(patch));

  // Copy as curl: the exact request, runnable in a POSIX shell.
  await page.click('nav button[data-op="CreateAccount"]');
  const tricky = `O'Brien & "Sons" $HOME \`id\` ${Date.now()}`;
  await page.fill("#body", JSON.stringify({ name: tricky, tags: ["it's"] }));
  await page.click("#copy-curl");
  await page.waitForFunction(() => (document.querySelector("#copy-status")?.textContent ?? "") !== "");
  const curl = await page.textContent("#curl");
  assert.ok(curl.startsWith("curl "), curl);
  assert.ok(curl.includes("-X POST '" + base + "/api/v1/crm/accounts'"), curl);
  assert.ok(curl.includes("'authorization: Bearer " + token + "'"), curl);
  assert.ok(curl.includes("'content-type: application/json'"), curl);
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), curl, "the clipboard has the command");
  let ran = runCurl(curl);
  assert.equal(ran.status, 200, "curl: " + ran.body);
  const viaCurl = JSON.parse(ran.body);
  assert.equal(viaCurl.name, tricky, "the body arrives exactly");
  assert.deepEqual(viaCurl.tags, ["it's"]);
  // A GET with a query string, as shown.
  await page.click('nav button[data-op="ListAccounts"]');
  await page.fill('input[name="page_size"]', "2");
  await page.fill('input[name="search"]', "Brien");
  const listCurl = await page.textContent("#curl");
  assert.ok(listCurl.includes("page_size=2") && listCurl.includes("search=Brien"), listCurl);
  ran = runCurl(listCurl);
  assert.equal(ran.status, 200, "curl: " + ran.body);
  assert.ok(JSON.parse(ran.body).accounts.some((a) => a.id === viaCurl.id), "curl's list finds the account");

  // Without a token the explorer shows the API's 401.
  await page.fill("#token", "");
  await page.click('nav button[data-op="ListAccounts"]');
  await page.click("#send");
  await page.waitForFunction(() => document.querySelector("#status")?.textContent === "401");
  assert.ok(!(await page.textContent("#curl")).includes("authorization"), "no token, no header");

  // A development server mints a token; with it, creating an account works.
  const tenant = "explorer-" + Date.now();
  await page.fill("#dev-tenant", tenant);
  await page.fill("#dev-sub", "dev-user");
  await page.click("#dev-token");
  await page.waitForFunction(() => document.querySelector("#token").value !== "");
  assert.match(await page.textContent("#dev-token-status"), new RegExp(tenant));
  await page.click('nav button[data-op="CreateAccount"]');
  assert.ok((await page.textContent("#curl")).includes("authorization: Bearer ey"), "the minted token is used");
  await page.click("#send");
  await page.waitForFunction(() => ["200", "400", "401"].includes(document.querySelector("#status")?.textContent));
  const minted = JSON.parse(await page.textContent("#response"));
  assert.equal(await page.textContent("#status"), "200", "create with a dev token: " + JSON.stringify(minted));
  assert.equal(minted.tenant_id, tenant);
  assert.equal(minted.created_by, "dev-user");
  // Bad input: the server's message names the field.
  await page.fill("#dev-tenant", "no spaces allowed");
  await page.click("#dev-token");
  await page.waitForFunction(() => /^400/.test(document.querySelector("#dev-token-status").textContent));
  assert.match(await page.textContent("#dev-token-status"), /tenant/);
  // Where the endpoint does not exist (not --dev), the control says where
  // tokens come from.
  await page.route(base + "/explorer/token", (route) => route.fulfill({
    status: 404, contentType: "application/json",
    body: JSON.stringify({ code: 5, message: "no route for POST /explorer/token", details: [] }),
  }));
  await page.fill("#dev-tenant", "acme-inc");
  await page.click("#dev-token");
  await page.waitForFunction(() => document.querySelector("#dev-token-status").textContent.includes("cargo run -q -- token"));
  assert.match(await page.textContent("#dev-token-status"), /identity provider/);
  await page.unroute(base + "/explorer/token");

  assert.deepEqual(external, [], "the explorer must not load anything from elsewhere");
  console.log("explorer: created", body.id, "and listed it; field rules, examples, curl and dev tokens work; no external requests");
} catch (e) {
  failures.push(e.stack ?? String(e));
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
