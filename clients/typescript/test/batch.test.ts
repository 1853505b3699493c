// Batch, upsert and external_id through the client, against a real server:
// scripts/with-server.sh sets CRM_GRPC (host:port, plaintext gRPC) and
// CRM_TOKEN (a JWT for a scratch tenant).
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";

import { createClient, CrmError, type CrmClient } from "../src/index.js";

const grpc = process.env.CRM_GRPC;
const token = process.env.CRM_TOKEN;
if (!grpc || !token) throw new Error("CRM_GRPC and CRM_TOKEN must be set (run under scripts/with-server.sh)");
const run = `tsb${Date.now().toString(36)}${process.pid}`;

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

before(() => {
  client = createClient({ baseUrl: `http://${grpc}`, token, timeoutMs: 15_000 });
});

after(() => client?.close());

describe("accounts batch", () => {
  test("batchCreate then batchGet, in order (an id twice is returned twice)", async () => {
    const accounts = client.customer.accounts;
    const created = await accounts.batchCreate(
      [{ name: `B1 ${run}`, tags: [run] }, { name: `B2 ${run}`, tags: [run] }, { name: `B3 ${run}`, tags: [run] }],
      { requestId: randomUUID() },
    );
    assert.deepEqual(
      created.map((a) => a.name),
      [`B1 ${run}`, `B2 ${run}`, `B3 ${run}`],
    );
    assert.ok(created.every((a) => /^acc_[0-9A-Z]{26}$/.test(a.id) && a.version === 1));

    const ids = [created[2]!.id, created[0]!.id, created[1]!.id, created[2]!.id];
    const got = await accounts.batchGet(ids);
    assert.deepEqual(
      got.map((a) => a.id),
      ids,
    );
    assert.equal(got[1]!.name, `B1 ${run}`);

    const missing = await crmError(accounts.batchGet([created[0]!.id, "acc_00000000000000000000000000"]));
    assert.equal(missing.codeName, "NOT_FOUND");
  });

  test("batchCreate retried with the same requestId returns the first result", async () => {
    const requestId = randomUUID();
    const first = await client.customer.accounts.batchCreate([{ name: `Idem ${run}` }], { requestId });
    const again = await client.customer.accounts.batchCreate([{ name: `Idem ${run}` }], { requestId });
    assert.deepEqual(
      again.map((a) => a.id),
      first.map((a) => a.id),
    );
  });

  test("upsert creates, then updates (created true, then false)", async () => {
    const accounts = client.customer.accounts;
    const externalId = `erp-${run}-1`;
    const first = await accounts.upsert({ externalId, name: `Up ${run}`, industry: "saas" });
    assert.equal(first.created, true);
    assert.equal(first.record.externalId, externalId);
    assert.equal(first.record.version, 1);

    const second = await accounts.upsert(
      { externalId, name: `Up2 ${run}`, phone: "ignored" },
      { updateMask: ["name"], requestId: randomUUID() },
    );
    assert.equal(second.created, false);
    assert.equal(second.record.id, first.record.id);
    assert.equal(second.record.name, `Up2 ${run}`);
    assert.equal(second.record.phone, "", "only the masked field is written");
    assert.equal(second.record.industry, "saas");
    assert.equal(second.record.version, 2);

    const stale = await crmError(accounts.upsert({ externalId, name: "x", version: 1 }));
    assert.equal(stale.codeName, "ABORTED");
  });

  test("batchUpsert returns the parallel created list", async () => {
    const accounts = client.customer.accounts;
    const existing = await accounts.upsert({ externalId: `erp-${run}-a`, name: `A ${run}` });
    assert.equal(existing.created, true);
    const res = await accounts.batchUpsert(
      [
        { record: { externalId: `erp-${run}-a`, name: `A2 ${run}` } },
        { record: { externalId: `erp-${run}-b`, name: `B ${run}` } },
        { record: { externalId: `erp-${run}-c`, name: `C ${run}`, industry: "x" }, updateMask: ["industry"] },
      ],
      { requestId: randomUUID() },
    );
    assert.deepEqual(res.created, [false, true, true]);
    assert.deepEqual(
      res.items.map((a) => a.name),
      [`A2 ${run}`, `B ${run}`, `C ${run}`],
    );
    assert.equal(res.items[0]!.id, existing.record.id);
    assert.equal(res.items[0]!.version, 2);
  });

  test("an invalid item fails the whole batch, naming requests[1]", async () => {
    const accounts = client.customer.accounts;
    const tag = `${run}atomic`;
    const err = await crmError(
      accounts.batchCreate([
        { name: `Ok ${run}`, tags: [tag] },
        { name: `Bad ${run}`, website: "not a url", tags: [tag] },
        { name: `Ok2 ${run}`, tags: [tag] },
      ]),
    );
    assert.equal(err.codeName, "INVALID_ARGUMENT");
    const fields = err.fieldViolations.map((v) => v.field);
    assert.ok(fields.includes("requests[1].account.website"), fields.join(", "));
    assert.ok(
      fields.every((f) => f.startsWith("requests[1].")),
      fields.join(", "),
    );
    const page = await accounts.list({ filter: `tags:"${tag}"`, showDeleted: true });
    assert.equal(page.items.length, 0, "nothing written");

    const upsertErr = await crmError(
      accounts.batchUpsert([
        { record: { externalId: `erp-${run}-ok`, name: "ok" } },
        { record: { externalId: `erp-${run}-bad`, name: "bad", website: "not a url" } },
      ]),
    );
    assert.equal(upsertErr.codeName, "INVALID_ARGUMENT");
    assert.ok(upsertErr.fieldViolations.some((v) => v.field === "requests[1].account.website"));
    const none = await accounts.list({ filter: `external_id = "erp-${run}-ok"` });
    assert.equal(none.items.length, 0, "nothing upserted");
  });

  test("batchUpdate (stale version: ABORTED, nothing written) and batchDelete", async () => {
    const accounts = client.customer.accounts;
    const [a, b] = await accounts.batchCreate([{ name: `U1 ${run}` }, { name: `U2 ${run}` }]);
    assert.ok(a && b);

    const updated = await accounts.batchUpdate(
      [
        { id: a.id, patch: { industry: "saas" }, version: 1 },
        { id: b.id, patch: { industry: "retail", phone: "ignored" }, updateMask: ["industry"] },
      ],
      { requestId: randomUUID() },
    );
    assert.deepEqual(
      updated.map((x) => [x.id, x.industry, x.version]),
      [
        [a.id, "saas", 2],
        [b.id, "retail", 2],
      ],
    );
    assert.equal(updated[1]!.phone, "");

    const stale = await crmError(
      accounts.batchUpdate([
        { id: a.id, patch: { industry: "new" }, version: 2 },
        { id: b.id, patch: { industry: "new" }, version: 1 },
      ]),
    );
    assert.equal(stale.codeName, "ABORTED");
    const after = await accounts.batchGet([a.id, b.id]);
    assert.deepEqual(
      after.map((x) => [x.industry, x.version]),
      [
        ["saas", 2],
        ["retail", 2],
      ],
      "nothing written",
    );

    const deleted = await accounts.batchDelete([b.id, a.id], { requestId: randomUUID() });
    assert.deepEqual(
      deleted.map((x) => [x.id, x.isDeleted]),
      [
        [b.id, true],
        [a.id, true],
      ],
    );
    await crmError(accounts.batchDelete([a.id])); // already deleted: the batch fails
    assert.ok((await accounts.get(a.id)).isDeleted);
  });
});

describe("other entities", () => {
  test("contacts, deals, quotes, line items: batchCreate/batchGet/upsert; activities: batchGet/batchCreate", async () => {
    const c = client.customer;
    const [acc] = await c.accounts.batchCreate([{ name: `Ent ${run}` }]);
    assert.ok(acc);

    const contacts = await c.contacts.batchCreate([
      { firstName: "Ada", lastName: run, accountId: acc.id },
      { firstName: "Bob", lastName: run, accountId: acc.id },
    ]);
    assert.deepEqual(
      (await c.contacts.batchGet(contacts.map((x) => x.id))).map((x) => x.firstName),
      ["Ada", "Bob"],
    );
    const up = await c.contacts.upsert({ externalId: `crm-${run}`, firstName: "Cy", lastName: run });
    assert.equal(up.created, true);

    const deals = await c.deals.batchCreate([{ name: `D ${run}`, accountId: acc.id }]);
    assert.equal((await c.deals.batchGet([deals[0]!.id]))[0]!.name, `D ${run}`);

    const [quote] = await c.quotes.batchCreate([{ accountId: acc.id, currency: "USD" }]);
    assert.ok(quote);
    const items = await c.lineItems.batchCreate([
      { quoteId: quote.id, quantity: 1, unitPrice: 10 },
      { quoteId: quote.id, quantity: 2, unitPrice: 5 },
    ]);
    assert.equal(items.length, 2);
    const liUp = await c.lineItems.batchUpsert([{ record: { externalId: `li-${run}`, quoteId: quote.id, quantity: 3, unitPrice: 1 } }]);
    assert.deepEqual(liUp.created, [true]);

    const acts = await c.activities.batchCreate([
      { type: "note", subject: `N1 ${run}`, accountId: acc.id },
      { type: "note", subject: `N2 ${run}`, accountId: acc.id },
    ]);
    assert.deepEqual(
      (await c.activities.batchGet(acts.map((x) => x.id).reverse())).map((x) => x.subject),
      [`N2 ${run}`, `N1 ${run}`],
    );
    assert.equal("upsert" in c.activities, false);
    assert.equal("batchUpdate" in c.activities, false);
  });
});
