// Calls crm from headless Chromium with the TypeScript client's browser entry
// (createWebClient, gRPC-Web over fetch): bundles grpc-web.entry.mjs with
// esbuild (platform browser: a Node built-in such as node:http2 in the bundle
// fails the build), injects it into the API explorer's page (same origin as
// the gRPC-Web endpoint; the server sends no CORS headers), then creates an
// account, gets it, lists the accounts and finds it, watches the change feed
// up to its creation, and checks the NOT_FOUND CrmError of an unknown id.
// Needs CRM_HTTP (base URL), CRM_TOKEN, and clients/typescript/node_modules
// (`npm ci` there: esbuild compiles the client's TypeScript sources).
import { build } from "esbuild";
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const base = process.env.CRM_HTTP ?? "http://127.0.0.1:8080";
const token = process.env.CRM_TOKEN;
assert.ok(token, "CRM_TOKEN is required");

const bundled = await build({
  entryPoints: [fileURLToPath(new URL("./grpc-web.entry.mjs", import.meta.url))],
  bundle: true,
  format: "iife",
  platform: "browser",
  target: "es2022",
  write: false,
  metafile: true,
  logLevel: "error",
});
const inputs = Object.keys(bundled.metafile.inputs);
assert.ok(inputs.some((p) => p.endsWith("clients/typescript/src/web.ts")), "the bundle holds the web entry");
assert.ok(inputs.some((p) => p.includes("@connectrpc/connect-web/")), "the bundle holds connect-web");
assert.deepEqual(inputs.filter((p) => /connect-node|src\/index\.ts$/.test(p)), [], "no Node transport in the bundle");
const script = bundled.outputFiles[0].text;

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
  const rpcs = [];
  page.on("request", (r) => {
    if (!r.url().startsWith(base)) external.push(r.url());
    const path = new URL(r.url()).pathname;
    if (path.startsWith("/crm.v1.")) rpcs.push({ path, method: r.method(), contentType: r.headers()["content-type"] });
  });
  page.on("pageerror", (e) => failures.push("page error: " + e.message));
  // Console errors too (a CSP violation is one), but the browser's own favicon request (a 404).
  page.on("console", (m) => {
    if (m.type() === "error" && !m.location().url.endsWith("/favicon.ico")) {
      failures.push(`console error: ${m.text()} (${m.location().url})`);
    }
  });

  await page.goto(base + "/explorer");
  // An inline script: the explorer's CSP allows those (script-src 'unsafe-inline').
  await page.addScriptTag({ content: script });
  assert.equal(await page.evaluate(() => typeof window.crm?.createWebClient), "function");

  const name = "gRPC-Web Co " + Date.now();
  const got = await page.evaluate(async ({ token, name }) => {
    const { createWebClient, CrmError } = window.crm;
    const client = createWebClient({ baseUrl: location.origin, token, timeoutMs: 10000 });
    const accounts = client.customer.accounts;
    const brief = (a) => ({ id: a.id, name: a.name, domain: a.domain, tags: [...a.tags], version: a.version });

    const created = await accounts.create(
      { name, domain: "grpc-web.example", tags: ["browser"] },
      { requestId: crypto.randomUUID() },
    );
    const fetched = await accounts.get(created.id);
    const page = await accounts.list({ pageSize: 100 });
    const listedAll = [];
    for await (const a of accounts.listAll({ pageSize: 1 })) listedAll.push(a.id);

    // Server streaming: the change feed from the start, up to the account's creation.
    let watched = null;
    const signal = AbortSignal.timeout(10000);
    for await (const e of client.changes.watch({ afterSequence: 0, resourceTypes: ["account"] }, { signal })) {
      if (e.recordId === created.id) {
        watched = { operation: e.operation, sequence: String(e.sequence) };
        break;
      }
    }

    let notFound = null;
    try {
      await accounts.get("acc_01ARZ3NDEKTSV4RRFFQ69G5FAV");
    } catch (e) {
      notFound = {
        isCrmError: e instanceof CrmError,
        name: e.name,
        code: e.code,
        codeName: e.codeName,
        domain: e.domain,
        message: e.message,
      };
    }
    client.close(); // a no-op in the browser
    return {
      created: brief(created),
      fetched: brief(fetched),
      listed: page.items.map((a) => a.id),
      listedAll,
      watched,
      notFound,
    };
  }, { token, name });

  assert.match(got.created.id, /^acc_[0-9A-Z]{26}$/);
  assert.deepEqual(got.created, { id: got.created.id, name, domain: "grpc-web.example", tags: ["browser"], version: got.created.version });
  assert.deepEqual(got.fetched, got.created, "get returns the created account");
  assert.ok(got.listed.includes(got.created.id), "list finds the new account");
  assert.ok(got.listedAll.includes(got.created.id), "listAll (one account per page) finds it too");
  assert.deepEqual(got.watched?.operation, "created", "the watch streams the account's creation");
  assert.ok(got.notFound, "get of an unknown id must fail");
  assert.equal(got.notFound.isCrmError, true, "the error is a CrmError: " + JSON.stringify(got.notFound));
  assert.equal(got.notFound.name, "CrmError");
  assert.equal(got.notFound.codeName, "NOT_FOUND");
  assert.equal(got.notFound.code, 5);
  assert.equal(got.notFound.domain, "crm.v1", "ErrorInfo decoded from the gRPC-Web trailers");

  assert.ok(rpcs.length > 0, "the calls went to the gRPC-Web endpoint");
  for (const r of rpcs) {
    assert.equal(r.method, "POST", r.path);
    assert.equal(r.contentType, "application/grpc-web+proto", r.path);
  }
  assert.ok(rpcs.some((r) => r.path === "/crm.v1.AccountService/CreateAccount"), JSON.stringify(rpcs));
  assert.deepEqual(external, [], "every request stays on the page's origin");
  console.log(
    `grpc-web: created ${got.created.id}, got it, listed it, watched its creation (sequence ${got.watched.sequence}),`,
    `NOT_FOUND for an unknown id; ${rpcs.length} gRPC-Web calls, a ${Math.round(script.length / 1024)} KiB bundle`,
  );
} catch (e) {
  failures.push(e.stack ?? String(e));
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
