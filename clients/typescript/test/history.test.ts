// Field history and erasure through the client, against a real server (see
// batch.test.ts for the environment). Each test uses a tenant of its own, so
// that its records' histories and purges touch nothing another test reads;
// purging needs a token whose scope claim holds crm:purge, minted with
// `crm token --scope`.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import { after, before, describe, test } from "node:test";

import { fromJson, toJson } from "@bufbuild/protobuf";

import { ContactSchema, createClient, CrmError, type CrmClient, type FieldChange, type RecordCollection } from "../src/index.js";
import { crmBin } from "./own-server.js";

const grpc = process.env.CRM_GRPC;
const token = process.env.CRM_TOKEN;
if (!grpc || !token) throw new Error("CRM_GRPC and CRM_TOKEN must be set (run under scripts/with-server.sh)");
const run = `his${Date.now().toString(36)}${process.pid}`;
const UNKNOWN = "acc_01ARZ3NDEKTSV4RRFFQ69G5FAV";

let client: CrmClient;
const closers: Array<() => void> = [];

before(() => {
  client = createClient({ baseUrl: `http://${grpc}`, token, timeoutMs: 15_000 });
});

after(() => {
  client?.close();
  closers.forEach((c) => c());
});

function mint(tenant: string, scope?: string): string {
  const args = ["token", "--tenant", tenant, "--sub", "history-tester"];
  if (scope !== undefined) args.push("--scope", scope);
  return execFileSync(crmBin, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
}

/** A client for a tenant of its own; with `scope`, its token carries that scope claim. */
function tenant(name: string, scope?: string): CrmClient {
  const c = createClient({ baseUrl: `http://${grpc}`, token: mint(`${name}-${run}`, scope), timeoutMs: 15_000 });
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
const brief = (c: FieldChange) => [c.recordVersion, c.field, c.oldValue, c.newValue];

describe("history", () => {
  test("list after a create and an update: newest first, values as JSON, who and which request", async () => {
    const own = tenant("list");
    const requestId = randomUUID();
    const made = await own.customer.accounts.create(
      { name: "Before", customFields: { tier: "gold" }, employeeCount: 5 },
      { requestId },
    );
    const changed = await own.customer.accounts.update(
      made.id,
      { name: "After", customFields: { tier: "platinum" } },
      { updateMask: ["name", "customFields.tier"] },
    );
    assert.equal(changed.version, 2);

    const names = await own.history.list("accounts", made.id, { fields: ["name"] });
    assert.deepEqual(names.items.map(brief), [
      [2, "name", "Before", "After"],
      [1, "name", null, "Before"],
    ]);
    assert.equal(names.nextPageToken, "");
    const [update, create] = names.items;
    assert.equal(update!.changedBy, "history-tester");
    assert.equal(update!.requestId, "");
    assert.equal(create!.requestId, requestId);
    assert.equal(update!.appId, "");
    assert.deepEqual(update!.changedAt, changed.updatedAt);
    assert.deepEqual(create!.changedAt, made.updatedAt);

    // Everything: by version descending, then by field name; the server's
    // own fields and each custom field key are entries too.
    const all = await own.history.list("accounts", made.id);
    const order = all.items.map((c) => [c.recordVersion, c.field] as const);
    const sorted = [...order].sort(([v1, f1], [v2, f2]) => v2 - v1 || (f1 < f2 ? -1 : f1 > f2 ? 1 : 0));
    assert.deepEqual(order, sorted);
    const v2 = all.items.filter((c) => c.recordVersion === 2).map((c) => c.field);
    for (const f of ["custom_fields.tier", "name", "updated_at", "version"]) assert.ok(v2.includes(f), `${f} in ${v2}`);
    assert.ok(!v2.includes("employee_count"), "an unchanged field has no entry");
    const tier = all.items.find((c) => c.recordVersion === 2 && c.field === "custom_fields.tier")!;
    assert.deepEqual([tier.oldValue, tier.newValue], ["gold", "platinum"]);
    const employees = all.items.find((c) => c.field === "employee_count")!;
    assert.deepEqual([employees.recordVersion, employees.oldValue, employees.newValue], [1, null, 5]);

    // camelCase field names, as in update masks.
    const custom = await own.history.list("accounts", made.id, { fields: ["customFields.tier", "employeeCount"] });
    assert.deepEqual(
      custom.items.map((c) => [c.recordVersion, c.field]),
      [
        [2, "custom_fields.tier"],
        [1, "custom_fields.tier"],
        [1, "employee_count"],
      ],
    );
  });

  test("pages, and listAll across them", async () => {
    const own = tenant("pages");
    const acc = await own.customer.accounts.create({ name: "A" });
    const deal = await own.customer.deals.create({ accountId: acc.id, name: "D", stage: "qualification" });
    let version = deal.version;
    for (const stage of ["proposal", "negotiation", "closed_won"]) {
      version = (await own.customer.deals.update(deal.id, { stage }, { version, updateMask: ["stage"] })).version;
    }
    const p1 = await own.history.list("deals", deal.id, { fields: ["stage"], pageSize: 3 });
    assert.deepEqual(
      p1.items.map((c) => c.newValue),
      ["closed_won", "negotiation", "proposal"],
    );
    assert.notEqual(p1.nextPageToken, "");
    const p2 = await own.history.list("deals", deal.id, { fields: ["stage"], pageSize: 3, pageToken: p1.nextPageToken });
    assert.deepEqual(
      p2.items.map(brief),
      [[1, "stage", null, "qualification"]],
    );
    assert.equal(p2.nextPageToken, "");

    const every: FieldChange[] = [];
    for await (const c of own.history.listAll("deals", deal.id, { pageSize: 2 })) every.push(c);
    assert.deepEqual(every, (await own.history.list("deals", deal.id, { pageSize: 1000 })).items);
    // A token is bound to its list: other fields are INVALID_ARGUMENT.
    const other = await crmError(own.history.list("deals", deal.id, { fields: ["name"], pageToken: p1.nextPageToken }));
    assert.equal(other.codeName, "INVALID_ARGUMENT");
  });

  test("at: the record as it was (a Date, or a change's exact changedAt); NOT_FOUND before its creation", async () => {
    const own = tenant("at");
    const made = await own.customer.contacts.create({ firstName: "Ada", lastName: "Before" });
    await delay(50);
    const between = new Date();
    await delay(50);
    const changed = await own.customer.contacts.update(made.id, { lastName: "After" }, { updateMask: ["lastName"] });

    // get's JSON is the REST one: proto field names, every field.
    const then = await own.history.at("contacts", made.id, between);
    assert.equal(then["last_name"], "Before");
    assert.equal(then["id"], made.id);
    assert.equal(then["version"], 1);
    const exact = await own.history.at("contacts", made.id, made.updatedAt!);
    assert.equal(exact["last_name"], "Before");
    const now = await own.history.at("contacts", made.id, changed.updatedAt!);
    assert.equal(now["last_name"], "After");
    assert.equal(now["version"], 2);
    const current = await own.customer.contacts.get(made.id);
    assert.deepEqual(now, toJson(ContactSchema, current, { useProtoFieldName: true, alwaysEmitImplicit: true }));
    // ... so it parses into a typed record.
    const typed = fromJson(ContactSchema, then);
    assert.deepEqual([typed.id, typed.lastName, typed.version], [made.id, "Before", 1]);
    assert.deepEqual(typed, made);

    const before = await crmError(own.history.at("contacts", made.id, new Date(Date.now() - 3_600_000)));
    assert.equal(before.codeName, "NOT_FOUND");
  });

  test("bad arguments are INVALID_ARGUMENT; another tenant's or an unknown record is NOT_FOUND", async () => {
    const owner = tenant("owner");
    const other = tenant("other");
    const acc = await owner.customer.accounts.create({ name: "Mine" });

    const field = await crmError(owner.history.list("accounts", acc.id, { fields: ["name", "nope"] }));
    assert.equal(field.codeName, "INVALID_ARGUMENT");
    assert.deepEqual(fields(field), ["fields[1]"]);
    const size = await crmError(owner.history.list("accounts", acc.id, { pageSize: -1 }));
    assert.deepEqual([size.codeName, fields(size)], ["INVALID_ARGUMENT", ["page_size"]]);
    const collection = await crmError(owner.history.list("webhooks" as RecordCollection, acc.id));
    assert.deepEqual([collection.codeName, fields(collection)], ["INVALID_ARGUMENT", ["collection"]]);
    const token = await crmError(owner.history.list("accounts", acc.id, { pageToken: "not-a-token" }));
    assert.equal(token.codeName, "INVALID_ARGUMENT");

    for (const [what, call] of [
      ["another tenant's list", () => other.history.list("accounts", acc.id)],
      ["another tenant's at", () => other.history.at("accounts", acc.id, new Date())],
      ["list of an unknown id", () => owner.history.list("accounts", UNKNOWN)],
      ["at of an unknown id", () => owner.history.at("accounts", UNKNOWN, new Date())],
    ] as const) {
      assert.equal((await crmError(call())).codeName, "NOT_FOUND", what);
    }
    // Soft-deleted records keep and show their history.
    await owner.customer.accounts.delete(acc.id);
    const deleted = await owner.history.list("accounts", acc.id, { fields: ["is_deleted"] });
    assert.deepEqual(
      deleted.items.map((c) => [c.recordVersion, c.field, c.newValue]),
      [[2, "is_deleted", true]],
    );
  });
});

describe("erasure", () => {
  test("purge is refused without the crm:purge scope (PERMISSION_DENIED, MISSING_SCOPE)", async () => {
    const name = "refused";
    const plain = tenant(name);
    const otherScope = tenant(name, "crm:read crm:write");
    const acc = await plain.customer.accounts.create({ name: "Keep" });
    for (const c of [plain, otherScope, client]) {
      const err = await crmError(c.erasure.purge("accounts", acc.id));
      assert.equal(err.codeName, "PERMISSION_DENIED");
      assert.equal(err.reason, "MISSING_SCOPE");
      assert.equal(err.metadata["required_scope"], "crm:purge");
    }
    assert.equal((await plain.customer.accounts.get(acc.id)).name, "Keep");
  });

  test("purge with the scope erases the record and its history; then get is NOT_FOUND", async () => {
    const name = "purge";
    const own = tenant(name);
    const purger = tenant(name, "crm:purge");
    const acc = await own.customer.accounts.create({ name: "Erase me" }, { requestId: randomUUID() });
    await own.customer.accounts.update(acc.id, { name: "Erase me too" }, { updateMask: ["name"] });

    const erased = await purger.erasure.purge("accounts", acc.id);
    assert.equal(erased["records"], 1n);
    assert.equal(typeof erased["history"], "bigint");
    assert.ok(erased["history"]! > 0n, `history: ${erased["history"]}`);
    assert.equal(erased["idempotent_responses"], 1n);

    for (const [what, call] of [
      ["get", () => own.customer.accounts.get(acc.id)],
      ["history", () => own.history.list("accounts", acc.id)],
      ["a second purge", () => purger.erasure.purge("accounts", acc.id)],
    ] as const) {
      assert.equal((await crmError(call())).codeName, "NOT_FOUND", what);
    }
  });

  test("live children are HAS_CHILDREN unless cascade", async () => {
    const name = "cascade";
    const own = tenant(name, "crm:purge crm:write");
    const acc = await own.customer.accounts.create({ name: "Parent" });
    const contact = await own.customer.contacts.create({ accountId: acc.id, firstName: "Child", lastName: "One" });

    const refused = await crmError(own.erasure.purge("accounts", acc.id));
    assert.equal(refused.codeName, "FAILED_PRECONDITION");
    assert.equal(refused.reason, "HAS_CHILDREN");
    assert.equal((await own.customer.contacts.get(contact.id)).firstName, "Child");

    const erased = await own.erasure.purge("accounts", acc.id, { cascade: true });
    assert.equal(erased["records"], 2n);
    assert.equal((await crmError(own.customer.contacts.get(contact.id))).codeName, "NOT_FOUND");
    assert.equal((await crmError(own.customer.accounts.get(acc.id))).codeName, "NOT_FOUND");
  });
});
