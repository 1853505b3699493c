// Custom-field definitions through the client, against a real server (see
// batch.test.ts for the environment). A definition applies to every write of
// its tenant, and the other test files run at the same time on the shared
// tenant: there, only definitions of keys unique to this run that nothing
// requires; the tests that write records, or that need to know every
// definition and record of a tenant, use a tenant of their own.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { after, before, describe, test } from "node:test";

import { createClient, CrmError, type CrmClient } from "../src/index.js";
import { crmBin } from "./own-server.js";

const grpc = process.env.CRM_GRPC;
const token = process.env.CRM_TOKEN;
if (!grpc || !token) throw new Error("CRM_GRPC and CRM_TOKEN must be set (run under scripts/with-server.sh)");
const run = `fld${Date.now().toString(36)}${process.pid}`;
const UNKNOWN = "fld_01ARZ3NDEKTSV4RRFFQ69G5FAV";

let client: CrmClient;
const closers: Array<() => void> = [];

before(() => {
  client = createClient({ baseUrl: `http://${grpc}`, token, timeoutMs: 15_000 });
});

after(() => {
  client?.close();
  closers.forEach((c) => c());
});

function mint(tenant: string): string {
  return execFileSync(crmBin, ["token", "--tenant", tenant, "--sub", "field-tester"], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  }).trim();
}

/** A client for a tenant of its own (no other test defines fields or writes records there). */
function tenant(name: string): CrmClient {
  const c = createClient({ baseUrl: `http://${grpc}`, token: mint(`${name}-${run}`), timeoutMs: 15_000 });
  closers.push(() => c.close());
  return c;
}

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

const fields = (e: CrmError) => e.fieldViolations.map((v) => v.field);

describe("field definitions", () => {
  test("create, get, list, update (camelCase mask paths too), delete", async () => {
    const key = `fd_${run}`;
    const made = await client.fieldDefinitions.create({
      resourceType: "deal",
      key,
      label: "Code",
      type: "string",
      maxLength: 20,
    });
    assert.match(made.id, /^fld_[0-9A-Z]{26}$/);
    assert.equal(made.version, 1);
    assert.equal(made.maxLength, 20);
    assert.equal(made.minimum, undefined, "an unset bound stays unset");
    assert.ok(["building", "ready"].includes(made.indexState), made.indexState);
    assert.ok(made.createdAt && made.updatedAt);
    assert.notEqual(made.createdBy, "");
    assert.equal(made.updatedBy, made.createdBy);

    const got = await client.fieldDefinitions.get(made.id);
    assert.deepEqual(
      [got.id, got.resourceType, got.key, got.type, got.label, got.version],
      [made.id, "deal", key, "string", "Code", 1],
    );
    const deals = await client.fieldDefinitions.list({ resourceType: "deal", pageSize: 1000 });
    assert.ok(deals.items.some((d) => d.id === made.id));
    const quotes = await client.fieldDefinitions.list({ resourceType: "quote", pageSize: 1000 });
    assert.ok(!quotes.items.some((d) => d.id === made.id));

    const relabeled = await client.fieldDefinitions.update({ id: made.id, label: "Deal code", version: got.version }, ["label"]);
    assert.equal(relabeled.label, "Deal code");
    assert.equal(relabeled.maxLength, 20, "outside the mask: unchanged");
    assert.equal(relabeled.version, got.version + 1);
    // A mask path naming a field the definition leaves unset clears it.
    const unbounded = await client.fieldDefinitions.update({ id: made.id }, ["maxLength"]);
    assert.equal(unbounded.maxLength, undefined);
    assert.equal(unbounded.version, relabeled.version + 1);
    const stale = await crmError(client.fieldDefinitions.update({ id: made.id, label: "x", version: got.version }));
    assert.equal(stale.codeName, "ABORTED");

    await client.fieldDefinitions.delete(made.id);
    assert.equal((await crmError(client.fieldDefinitions.get(made.id))).codeName, "NOT_FOUND");
    assert.equal((await crmError(client.fieldDefinitions.delete(made.id))).codeName, "NOT_FOUND");
  });

  test("invalid definitions name the field; a key twice is ALREADY_EXISTS; bad paging is INVALID_ARGUMENT", async () => {
    const lineItem = await crmError(
      client.fieldDefinitions.create({ resourceType: "line_item", key: `li_${run}`, type: "string" }),
    );
    assert.equal(lineItem.codeName, "INVALID_ARGUMENT");
    assert.deepEqual(fields(lineItem), ["field_definition.resource_type"]);
    const noOptions = await crmError(client.fieldDefinitions.create({ resourceType: "deal", key: `en_${run}`, type: "enum" }));
    assert.equal(noOptions.codeName, "INVALID_ARGUMENT");
    assert.deepEqual(fields(noOptions), ["field_definition.options"]);

    const key = `twice_${run}`;
    const first = await client.fieldDefinitions.create({ resourceType: "contact", key, type: "boolean" });
    try {
      const again = await crmError(client.fieldDefinitions.create({ resourceType: "contact", key, type: "string" }));
      assert.equal(again.codeName, "ALREADY_EXISTS");
    } finally {
      await client.fieldDefinitions.delete(first.id);
    }

    const badSize = await crmError(client.fieldDefinitions.list({ pageSize: -1 }));
    assert.equal(badSize.codeName, "INVALID_ARGUMENT");
    assert.deepEqual(fields(badSize), ["page_size"]);
    const badType = await crmError(client.fieldDefinitions.list({ resourceType: "line_item" }));
    assert.equal(badType.codeName, "INVALID_ARGUMENT");
    assert.deepEqual(fields(badType), ["resource_type"]);
    const badToken = await crmError(client.fieldDefinitions.list({ pageToken: "not-a-token" }));
    assert.equal(badToken.codeName, "INVALID_ARGUMENT");
  });
});

describe("field definitions: a tenant of its own", () => {
  test("pages go by resource type, then key", async () => {
    const own = tenant("pages");
    for (const [resourceType, key] of [
      ["contact", "b_key"],
      ["account", "z_key"],
      ["account", "a_key"],
    ] as const) {
      await own.fieldDefinitions.create({ resourceType, key, type: "boolean" });
    }
    const p1 = await own.fieldDefinitions.list({ pageSize: 2 });
    assert.deepEqual(
      p1.items.map((d) => `${d.resourceType}.${d.key}`),
      ["account.a_key", "account.z_key"],
    );
    assert.notEqual(p1.nextPageToken, "");
    const p2 = await own.fieldDefinitions.list({ pageSize: 2, pageToken: p1.nextPageToken });
    assert.deepEqual(
      p2.items.map((d) => `${d.resourceType}.${d.key}`),
      ["contact.b_key"],
    );
    assert.equal(p2.nextPageToken, "");
    assert.deepEqual(
      (await own.fieldDefinitions.list({ resourceType: "account" })).items.map((d) => d.key),
      ["a_key", "z_key"],
    );
    assert.equal(p1.items[0]!.indexState, "none", "boolean needs no index of its own");
  });

  test("writes are checked; check counts the violators; a tightening they violate is FIELD_DEFINITION_CONFLICT", async () => {
    const own = tenant("check");
    const seats = await own.fieldDefinitions.create({ resourceType: "account", key: "seats", type: "integer", minimum: 0 });

    const notInteger = await crmError(own.customer.accounts.create({ name: "Text", customFields: { seats: "7" } }));
    assert.equal(notInteger.codeName, "INVALID_ARGUMENT");
    assert.deepEqual(fields(notInteger), ["account.custom_fields.seats"]);

    const small = await own.customer.accounts.create({ name: "Small", customFields: { seats: 3 } });
    const mid = await own.customer.accounts.create({ name: "Mid", customFields: { seats: 12 } });
    const big = await own.customer.accounts.create({ name: "Big", customFields: { seats: 40 } });

    // A dry run of an update (id and mask) ...
    const capped = await own.fieldDefinitions.check({ id: seats.id, maximum: 10 }, ["maximum"]);
    assert.equal(capped.violatingRecords, 2n);
    assert.deepEqual(capped.sampleRecordIds, [mid.id, big.id].sort());
    assert.deepEqual(await own.fieldDefinitions.check({ id: seats.id, maximum: 50 }, ["maximum"]), {
      violatingRecords: 0n,
      sampleRecordIds: [],
    });
    // ... and of a create (no id): no account has a plan yet.
    const plan = await own.fieldDefinitions.check({ resourceType: "account", key: "plan", type: "string", required: true });
    assert.equal(plan.violatingRecords, 3n);
    assert.deepEqual(plan.sampleRecordIds, [small.id, mid.id, big.id].sort());

    // The tightening itself is refused, and changes nothing.
    const conflict = await crmError(own.fieldDefinitions.update({ id: seats.id, maximum: 10 }, ["maximum"]));
    assert.equal(conflict.codeName, "FAILED_PRECONDITION");
    assert.equal(conflict.reason, "FIELD_DEFINITION_CONFLICT");
    assert.equal(conflict.metadata["violating_records"], "2");
    const unchanged = await own.fieldDefinitions.get(seats.id);
    assert.equal(unchanged.maximum, undefined);
    assert.equal(unchanged.version, seats.version);
    const refused = await crmError(
      own.fieldDefinitions.create({ resourceType: "account", key: "plan", type: "string", required: true }),
    );
    assert.equal(refused.reason, "FIELD_DEFINITION_CONFLICT");
    assert.equal(refused.metadata["violating_records"], "3");

    // Deleting the definition frees the key: the values stay in the records.
    await own.fieldDefinitions.delete(seats.id);
    const free = await own.customer.accounts.create({ name: "Free", customFields: { seats: "many" } });
    assert.deepEqual(free.customFields, { seats: "many" });
    assert.deepEqual((await own.customer.accounts.get(big.id)).customFields, { seats: 40 });
  });

  test("another tenant's definition, or an unknown one, is NOT_FOUND", async () => {
    const owner = tenant("owner");
    const other = tenant("other");
    const def = await owner.fieldDefinitions.create({ resourceType: "deal", key: "region", type: "enum", options: ["emea", "amer"] });
    for (const [what, call] of [
      ["another tenant's get", () => other.fieldDefinitions.get(def.id)],
      ["another tenant's update", () => other.fieldDefinitions.update({ id: def.id, label: "x" })],
      ["another tenant's check", () => other.fieldDefinitions.check({ id: def.id, options: ["emea"] }, ["options"])],
      ["another tenant's delete", () => other.fieldDefinitions.delete(def.id)],
      ["get of an unknown id", () => owner.fieldDefinitions.get(UNKNOWN)],
      ["delete of an unknown id", () => owner.fieldDefinitions.delete(UNKNOWN)],
    ] as const) {
      assert.equal((await crmError(call())).codeName, "NOT_FOUND", what);
    }
    assert.deepEqual((await other.fieldDefinitions.list()).items, []);
    // The owner still has it.
    assert.equal((await owner.fieldDefinitions.get(def.id)).version, 1);
  });
});
