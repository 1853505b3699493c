// Runs against a real server: scripts/with-server.sh sets CRM_GRPC (host:port,
// plaintext gRPC) and CRM_TOKEN (a JWT for a scratch tenant). Tenant B's token
// is minted with `$CRM_BIN token` (default: <repo>/target/debug/crm).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { dirname, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { createClient, CrmError, toProtoPath, type CrmClient } from "../src/index.js";

const grpc = process.env.CRM_GRPC;
const tokenA = process.env.CRM_TOKEN;
if (!grpc || !tokenA) throw new Error("CRM_GRPC and CRM_TOKEN must be set (run under scripts/with-server.sh)");
const baseUrl = `http://${grpc}`;

// dist/test/client.test.js -> repo root is four levels up.
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");
const crmBin = process.env.CRM_BIN || resolve(repoRoot, "target/debug/crm");
const run = `ts${Date.now().toString(36)}${process.pid}`;

/** Awaits a promise that must reject with a CrmError, and returns it. */
async function crmError(p: Promise<unknown>): Promise<CrmError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof CrmError, `expected CrmError, got ${String(err)}`);
    return err;
  }
  assert.fail("expected the call to fail");
}

let client: CrmClient;
let clientB: CrmClient;

before(() => {
  const tokenB = execFileSync(crmBin, ["token", "--tenant", `other-${run}`, "--sub", "tester-b"], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  }).trim();
  assert.ok(tokenB.split(".").length === 3, "minted token B is a JWT");
  client = createClient({ baseUrl, token: tokenA, timeoutMs: 15_000 });
  clientB = createClient({ baseUrl, token: () => tokenB, timeoutMs: 15_000 });
});

after(() => {
  client?.close();
  clientB?.close();
});

test("seed: await client.customer.accounts.list()", async () => {
  const created = await client.customer.accounts.create({ name: `Seed ${run}` });
  const page = await client.customer.accounts.list();
  assert.ok(Array.isArray(page.items));
  assert.ok(page.items.some((a) => a.id === created.id && a.name === `Seed ${run}`));
  assert.equal(typeof page.nextPageToken, "string");
});

describe("accounts", () => {
  test("create (idempotent request_id), get, update, update mask, delete", async () => {
    const accounts = client.customer.accounts;
    const requestId = randomUUID();
    const a = await accounts.create(
      { name: `Acme ${run}`, tags: [run, "vip"], customFields: { tier: "gold" }, employeeCount: 42 },
      { requestId },
    );
    assert.match(a.id, /^acc_[0-9A-Z]{26}$/);
    assert.equal(a.version, 1);
    assert.equal(a.name, `Acme ${run}`);
    assert.deepEqual(a.tags, [run, "vip"]);
    assert.equal(a.employeeCount, 42);
    assert.deepEqual(a.customFields, { tier: "gold" });
    assert.equal(a.sourceType, "api");
    assert.ok(a.createdAt && a.createdAt.seconds > 0n);

    const retry = await accounts.create(
      { name: `Acme ${run}`, tags: [run, "vip"], customFields: { tier: "gold" }, employeeCount: 42 },
      { requestId },
    );
    assert.equal(retry.id, a.id, "same request_id returns the first result");
    const reused = await crmError(accounts.create({ name: "something else" }, { requestId }));
    assert.equal(reused.codeName, "ALREADY_EXISTS");
    assert.equal(reused.reason, "REQUEST_ID_REUSED");

    const got = await accounts.get(a.id);
    assert.equal(got.id, a.id);
    assert.equal(got.name, a.name);

    const u1 = await accounts.update(a.id, { legalName: "Acme LLC" }, { version: 1 });
    assert.equal(u1.version, 2);
    assert.equal(u1.legalName, "Acme LLC");
    assert.equal(u1.name, `Acme ${run}`, "fields not in the patch are kept");

    // Only the masked field is written (camelCase path converted to industry/phone).
    const u2 = await accounts.update(
      a.id,
      { industry: "saas", phone: "+1 555 0100" },
      { version: 2, updateMask: ["industry"] },
    );
    assert.equal(u2.version, 3);
    assert.equal(u2.industry, "saas");
    assert.equal(u2.phone, "");
    const u3 = await accounts.update(a.id, { subIndustry: "crm" }, { updateMask: ["subIndustry"] });
    assert.equal(u3.subIndustry, "crm");
    assert.equal(u3.version, 4);

    const d = await accounts.delete(a.id, { version: 4 });
    assert.equal(d.isDeleted, true);
    assert.equal(d.version, 5);
    const live = await accounts.list({ filter: `tags:"${run}" AND name = "Acme ${run}"` });
    assert.equal(live.items.length, 0, "soft-deleted account left out of list");
    const all = await accounts.list({ filter: `name = "Acme ${run}"`, showDeleted: true });
    assert.deepEqual(
      all.items.map((x) => x.id),
      [a.id],
    );
    assert.equal((await accounts.get(a.id)).isDeleted, true);
    const restored = await accounts.undelete(a.id);
    assert.equal(restored.isDeleted, false);
  });

  test("update with a stale version is ABORTED (10)", async () => {
    const a = await client.customer.accounts.create({ name: `Stale ${run}` });
    await client.customer.accounts.update(a.id, { industry: "retail" }, { version: 1 });
    const err = await crmError(client.customer.accounts.update(a.id, { industry: "x" }, { version: 1 }));
    assert.equal(err.code, 10);
    assert.equal(err.codeName, "ABORTED");
    assert.equal(err.reason, "VERSION_MISMATCH");
    assert.equal(err.domain, "crm.v1");
    assert.equal(err.metadata["expected_version"], "1");
    assert.equal(err.metadata["current_version"], "2");
    assert.equal((await client.customer.accounts.get(a.id)).industry, "retail");
    const del = await crmError(client.customer.accounts.delete(a.id, { version: 1 }));
    assert.equal(del.codeName, "ABORTED");
  });

  test("validation error is INVALID_ARGUMENT with field violations", async () => {
    const err = await crmError(client.customer.accounts.create({ name: "", website: "not a url" }));
    assert.equal(err.code, 3);
    assert.equal(err.codeName, "INVALID_ARGUMENT");
    assert.equal(err.reason, "VALIDATION_FAILED");
    const fields = err.fieldViolations.map((v) => v.field);
    assert.ok(fields.includes("account.name"), `violations name 'name': ${fields.join(", ")}`);
    assert.ok(fields.includes("account.website"), `violations name 'website': ${fields.join(", ")}`);
    assert.ok(err.fieldViolations.every((v) => v.description.length > 0));

    const neg = await crmError(client.customer.accounts.list({ pageSize: -1 }));
    assert.equal(neg.codeName, "INVALID_ARGUMENT");
    assert.ok(neg.fieldViolations.some((v) => v.field === "page_size"), "page_size named");

    const mask = await crmError(
      client.customer.accounts.update((await client.customer.accounts.create({ name: `M ${run}` })).id, {}, {
        updateMask: ["no_such_field"],
      }),
    );
    assert.equal(mask.codeName, "INVALID_ARGUMENT");
  });

  test("paging: listAll walks every page", async () => {
    const tag = `page-${run}`;
    const ids = new Set<string>();
    for (let i = 0; i < 5; i++) {
      ids.add((await client.customer.accounts.create({ name: `Page ${i} ${run}`, tags: [tag] })).id);
    }
    const first = await client.customer.accounts.list({ filter: `tags:"${tag}"`, pageSize: 2 });
    assert.equal(first.items.length, 2);
    assert.notEqual(first.nextPageToken, "");
    const second = await client.customer.accounts.list({
      filter: `tags:"${tag}"`,
      pageSize: 2,
      pageToken: first.nextPageToken,
    });
    assert.equal(second.items.length, 2);
    assert.ok(second.items.every((x) => !first.items.some((y) => y.id === x.id)), "pages are disjoint");

    const seen: string[] = [];
    for await (const a of client.customer.accounts.listAll({ filter: `tags:"${tag}"`, pageSize: 2 })) {
      seen.push(a.id);
    }
    assert.equal(seen.length, 5);
    assert.deepEqual(new Set(seen), ids);
    // order_by is passed through: ascending by name.
    const names: string[] = [];
    for await (const a of client.customer.accounts.listAll({ filter: `tags:"${tag}"`, orderBy: "name", pageSize: 2 })) {
      names.push(a.name);
    }
    assert.deepEqual(names, [0, 1, 2, 3, 4].map((i) => `Page ${i} ${run}`));
  });

  test("cross-tenant: tenant B gets NOT_FOUND for tenant A's record", async () => {
    const a = await client.customer.accounts.create({ name: `Private ${run}` });
    const err = await crmError(clientB.customer.accounts.get(a.id));
    assert.equal(err.code, 5);
    assert.equal(err.codeName, "NOT_FOUND");
    assert.equal(err.reason, "RESOURCE_NOT_FOUND");
    const upd = await crmError(clientB.customer.accounts.update(a.id, { name: "pwned" }));
    assert.equal(upd.codeName, "NOT_FOUND");
    const del = await crmError(clientB.customer.accounts.delete(a.id));
    assert.equal(del.codeName, "NOT_FOUND");
    const listB = await clientB.customer.accounts.list({ filter: `name = "Private ${run}"` });
    assert.equal(listB.items.length, 0);
    assert.equal((await client.customer.accounts.get(a.id)).name, `Private ${run}`, "unchanged for A");
  });

  test("no token is UNAUTHENTICATED", async () => {
    const anon = createClient({ baseUrl });
    try {
      const err = await crmError(anon.customer.accounts.list());
      assert.equal(err.code, 16);
      assert.equal(err.codeName, "UNAUTHENTICATED");
      assert.equal(err.reason, "MISSING_CREDENTIALS");
    } finally {
      anon.close();
    }
  });
});

describe("contacts, deals, activities", () => {
  test("contacts CRUD", async () => {
    const acc = await client.customer.accounts.create({ name: `ContactCo ${run}` });
    const contacts = client.customer.contacts;
    const c = await contacts.create({ accountId: acc.id, firstName: "Ada", lastName: "Lovelace", email: `ada+${run}@example.com` });
    assert.match(c.id, /^con_/);
    assert.equal(c.accountId, acc.id);
    assert.equal(c.firstName, "Ada");
    assert.equal((await contacts.get(c.id)).email, `ada+${run}@example.com`);
    const u = await contacts.update(c.id, { jobTitle: "CTO" }, { version: c.version });
    assert.equal(u.jobTitle, "CTO");
    assert.equal(u.version, c.version + 1);
    const listed = await contacts.list({ filter: `account_id = "${acc.id}"` });
    assert.deepEqual(listed.items.map((x) => x.id), [c.id]);
    const d = await contacts.delete(c.id, { version: u.version });
    assert.equal(d.isDeleted, true);
    assert.equal((await contacts.list({ filter: `account_id = "${acc.id}"` })).items.length, 0);
  });

  test("deals CRUD", async () => {
    const acc = await client.customer.accounts.create({ name: `DealCo ${run}` });
    const deals = client.customer.deals;
    const d = await deals.create({ accountId: acc.id, name: `Big deal ${run}`, value: 1000.5, currency: "USD", stage: "qualification" });
    assert.match(d.id, /^deal_/);
    assert.equal(d.value, 1000.5);
    assert.equal(d.stage, "qualification");
    assert.equal((await deals.get(d.id)).name, `Big deal ${run}`);
    const u = await deals.update(d.id, { stage: "proposal", value: 2000 }, { version: d.version, updateMask: ["stage", "value"] });
    assert.equal(u.stage, "proposal");
    assert.equal(u.value, 2000);
    const listed = await deals.list({ filter: `account_id = "${acc.id}"` });
    assert.deepEqual(listed.items.map((x) => x.id), [d.id]);
    const del = await deals.delete(d.id, { version: u.version });
    assert.equal(del.isDeleted, true);
    const stale = await crmError(deals.update(d.id, { name: "x" }));
    assert.equal(stale.codeName, "NOT_FOUND");
    assert.equal(stale.reason, "RESOURCE_DELETED");
  });

  test("activities: list/get/create only", async () => {
    const acc = await client.customer.accounts.create({ name: `ActCo ${run}` });
    const act = await client.customer.activities.create({ type: "call", accountId: acc.id, subject: "Intro call" });
    assert.match(act.id, /^act_/);
    assert.equal(act.type, "call");
    assert.equal(act.subject, "Intro call");
    assert.equal((await client.customer.activities.get(act.id)).accountId, acc.id);
    const listed = await client.customer.activities.list({ filter: `account_id = "${acc.id}"` });
    assert.deepEqual(listed.items.map((x) => x.id), [act.id]);
    assert.equal("update" in client.customer.activities, false);
    assert.equal("delete" in client.customer.activities, false);
    const bad = await crmError(client.customer.activities.create({ type: "fax", accountId: acc.id }));
    assert.equal(bad.codeName, "INVALID_ARGUMENT");
    assert.ok(bad.fieldViolations.some((v) => v.field === "activity.type"), JSON.stringify(bad.fieldViolations));
  });
});

describe("quotes and line items", () => {
  test("line items update the quote totals; quotes CRUD", async () => {
    const acc = await client.customer.accounts.create({ name: `QuoteCo ${run}` });
    const { quotes, lineItems } = client.customer;
    const q = await quotes.create({ accountId: acc.id, name: `Q ${run}`, currency: "USD" });
    assert.match(q.id, /^qte_/);
    assert.equal(q.status, "draft");
    assert.equal(q.lineItems.length, 0);

    const li1 = await lineItems.create({ quoteId: q.id, description: "Seats", quantity: 2, unitPrice: 10, discount: 5 });
    assert.match(li1.id, /^li_/);
    assert.equal(li1.quoteId, q.id);
    assert.equal(li1.total, 15);
    assert.equal(li1.currency, "USD");
    let qq = await quotes.get(q.id);
    assert.equal(qq.total, 15);
    assert.equal(qq.value, 15);
    assert.deepEqual(qq.lineItems.map((s) => [s.id, s.total]), [[li1.id, 15]]);

    const li2 = await lineItems.create({ quoteId: q.id, description: "Support", quantity: 1, unitPrice: 7.5 });
    assert.equal(li2.total, 7.5);
    assert.equal((await quotes.get(q.id)).total, 22.5);

    const li1b = await lineItems.update(li1.id, { quantity: 3 }, { version: li1.version });
    assert.equal(li1b.total, 25);
    assert.equal((await quotes.get(q.id)).total, 32.5);

    const pct = await lineItems.update(li2.id, { discount: 20, discountType: "percent" }, { version: li2.version });
    assert.equal(pct.total, 6);
    assert.equal((await quotes.get(q.id)).total, 31);

    await lineItems.delete(li2.id, { version: pct.version });
    qq = await quotes.get(q.id);
    assert.equal(qq.total, 25);
    assert.deepEqual(qq.lineItems.map((s) => s.id), [li1.id]);
    const listed = await lineItems.list({ filter: `quote_id = "${q.id}"` });
    assert.deepEqual(listed.items.map((x) => x.id), [li1.id]);
    assert.equal((await lineItems.get(li1.id)).quantity, 3);

    const badQty = await crmError(lineItems.create({ quoteId: q.id, quantity: 0, unitPrice: 1 }));
    assert.equal(badQty.codeName, "INVALID_ARGUMENT");
    assert.ok(badQty.fieldViolations.some((v) => v.field === "line_item.quantity"), JSON.stringify(badQty.fieldViolations));

    const qu = await quotes.update(q.id, { status: "sent" }, { version: qq.version });
    assert.equal(qu.status, "sent");
    assert.equal(qu.total, 25, "quote update keeps the totals");
    const qd = await quotes.delete(q.id, { version: qu.version });
    assert.equal(qd.isDeleted, true);
    assert.equal((await quotes.list({ filter: `account_id = "${acc.id}"` })).items.length, 0);
  });
});

test("toProtoPath", () => {
  assert.equal(toProtoPath("legalName"), "legal_name");
  assert.equal(toProtoPath("custom_fields.someKey"), "custom_fields.someKey");
  assert.equal(toProtoPath("customFields.someKey"), "custom_fields.someKey");
  assert.equal(toProtoPath("*"), "*");
});
