// Webhooks through the client, against a real server (see batch.test.ts for
// the environment). The shared server refuses private targets, so the
// webhooks there name a public address literal (unreachable here: attempts
// to it fail and are logged); the tests of the delivery log and redelivery
// use a tenant of their own, whose feed nothing else writes to. The
// delivery test starts a server of its own (own-server.ts) with
// CRM_WEBHOOKS_ALLOW_PRIVATE=true and fast retries, and a receiver on
// 127.0.0.1.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHmac } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";

import { createClient, CrmError, type CrmClient } from "../src/index.js";
import { crmBin, dropDatabase, ownServer } from "./own-server.js";

const grpc = process.env.CRM_GRPC;
const token = process.env.CRM_TOKEN;
if (!grpc || !token) throw new Error("CRM_GRPC and CRM_TOKEN must be set (run under scripts/with-server.sh)");
const run = `whk${Date.now().toString(36)}${process.pid}`;

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
  return execFileSync(crmBin, ["token", "--tenant", tenant, "--sub", "webhook-tester"], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  }).trim();
}

/** A client for a tenant of its own (nothing else writes to its feed), on `baseUrl`. */
function tenant(name: string, baseUrl = `http://${grpc}`): CrmClient {
  const c = createClient({ baseUrl, token: mint(`${name}-${run}`), timeoutMs: 15_000 });
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

describe("webhooks", () => {
  test("create shows the secret once; get, list, update, delete", async () => {
    const made = await client.webhooks.create({
      url: "https://93.184.216.34/hook",
      resourceTypes: ["deal"],
      description: "ts client",
    });
    assert.match(made.secret, /^whsec_[A-Za-z0-9+/]{43}=$/);
    assert.ok(made.id.startsWith("whk_"));
    const got = await client.webhooks.get(made.id);
    assert.equal(got.secret, "");
    assert.deepEqual(got.resourceTypes, ["deal"]);
    const { items } = await client.webhooks.list({ pageSize: 100 });
    assert.ok(items.some((w) => w.id === made.id));
    const updated = await client.webhooks.update({ id: made.id, enabled: false, version: got.version }, ["enabled"]);
    assert.equal(updated.enabled, false);
    assert.equal(updated.version, got.version + 1);
    await client.webhooks.delete(made.id);
    await assert.rejects(client.webhooks.get(made.id), (e: unknown) => e instanceof CrmError && e.codeName === "NOT_FOUND");
  });

  test("a loopback URL is refused, naming the field", async () => {
    const err = await client.webhooks.create({ url: "http://127.0.0.1:8080/hook" }).then(
      () => assert.fail("accepted a loopback URL"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof CrmError);
    assert.equal(err.codeName, "INVALID_ARGUMENT");
    assert.deepEqual(
      err.fieldViolations.map((v) => v.field),
      ["webhook.url"],
    );
  });
});

describe("webhooks: delivery log and redelivery", () => {
  test("a fresh webhook has an empty log; bad paging is INVALID_ARGUMENT", async () => {
    const own = tenant("log");
    const hook = await own.webhooks.create({ url: "https://93.184.216.34/log" });
    const page = await own.webhooks.listDeliveries(hook.id);
    assert.deepEqual(page.items, []);
    assert.equal(page.nextPageToken, "");
    const sized = await own.webhooks.listDeliveries(hook.id, { pageSize: 10 });
    assert.deepEqual(sized, { items: [], nextPageToken: "" });

    const badToken = await crmError(own.webhooks.listDeliveries(hook.id, { pageToken: "not-a-token" }));
    assert.equal(badToken.codeName, "INVALID_ARGUMENT");
    assert.deepEqual(
      badToken.fieldViolations.map((v) => v.field),
      ["page_token"],
    );
    const badSize = await crmError(own.webhooks.listDeliveries(hook.id, { pageSize: -1 }));
    assert.equal(badSize.codeName, "INVALID_ARGUMENT");
    assert.deepEqual(
      badSize.fieldViolations.map((v) => v.field),
      ["page_size"],
    );
  });

  test("redeliver: from 0, and past the latest sequence is INVALID_ARGUMENT on after_sequence", async () => {
    const own = tenant("redeliver");
    const hook = await own.webhooks.create({ url: "https://93.184.216.34/redeliver" });
    const res = await own.webhooks.redeliver(hook.id, 0n);
    assert.equal(res.afterSequence, 0n);
    assert.equal(typeof res.latestSequence, "bigint");
    assert.ok(res.latestSequence >= 0n);
    // A number is accepted too.
    assert.deepEqual(await own.webhooks.redeliver(hook.id, 0), res);

    const ahead = await crmError(own.webhooks.redeliver(hook.id, res.latestSequence + 1_000_000n));
    assert.equal(ahead.codeName, "INVALID_ARGUMENT");
    assert.deepEqual(
      ahead.fieldViolations.map((v) => v.field),
      ["after_sequence"],
    );
    const negative = await crmError(own.webhooks.redeliver(hook.id, -1n));
    assert.equal(negative.codeName, "INVALID_ARGUMENT");
    assert.deepEqual(
      negative.fieldViolations.map((v) => v.field),
      ["after_sequence"],
    );
  });

  test("another tenant's webhook, or an unknown one, is NOT_FOUND", async () => {
    const owner = tenant("owner");
    const other = tenant("other");
    const hook = await owner.webhooks.create({ url: "https://93.184.216.34/mine" });
    const unknown = "whk_01ARZ3NDEKTSV4RRFFQ69G5FAV";
    for (const [what, call] of [
      ["another tenant's listDeliveries", () => other.webhooks.listDeliveries(hook.id)],
      ["another tenant's redeliver", () => other.webhooks.redeliver(hook.id, 0n)],
      ["listDeliveries of an unknown id", () => owner.webhooks.listDeliveries(unknown)],
      ["redeliver of an unknown id", () => owner.webhooks.redeliver(unknown, 0n)],
    ] as const) {
      assert.equal((await crmError(call())).codeName, "NOT_FOUND", what);
    }
    // The owner still sees it.
    assert.equal((await owner.webhooks.listDeliveries(hook.id)).nextPageToken, "");
  });
});

/** One request the receiver got. */
interface Received {
  headers: http.IncomingHttpHeaders;
  body: string;
  status: number;
}

/**
 * An HTTP receiver on 127.0.0.1: answers each POST with the next status of
 * `statuses` (the last one repeating) and records it.
 */
async function receiver(statuses: number[]): Promise<{ url: string; got: Received[]; close(): void }> {
  const got: Received[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const status = statuses[Math.min(got.length, statuses.length - 1)]!;
      got.push({ headers: req.headers, body: Buffer.concat(chunks).toString("utf8"), status });
      res.writeHead(status, { "content-type": "text/plain" }).end("ok");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    got,
    close: () => server.close(),
  };
}

/** Waits (up to 20 s) until `check` returns a value other than undefined. */
async function eventually<T>(what: string, check: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Checks a request's Standard Webhooks headers and signature, and returns its body. */
function verified(r: Received, secret: string): Record<string, unknown> {
  const header = (name: string) => {
    const v = r.headers[name];
    assert.equal(typeof v, "string", `header ${name}`);
    return v as string;
  };
  assert.equal(header("content-type"), "application/json");
  const id = header("webhook-id");
  const timestamp = header("webhook-timestamp");
  assert.match(timestamp, /^[0-9]+$/);
  assert.ok(Math.abs(Number(timestamp) - Date.now() / 1000) < 300, "webhook-timestamp is now");
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  const expected = createHmac("sha256", key).update(`${id}.${timestamp}.${r.body}`).digest("base64");
  assert.deepEqual(header("webhook-signature").split(" "), [`v1,${expected}`]);
  const body = JSON.parse(r.body) as Record<string, unknown>;
  assert.equal(body["id"], id, "webhook-id is the event id");
  return body;
}

describe("webhooks: delivery to a receiver (a server of its own, private targets allowed)", () => {
  test("a signed POST per event; a failure is retried and logged; redeliver sends it again", { timeout: 120_000 }, async () => {
    const db = `crm_scratch_ts_hook_${process.pid}`;
    const rx = await receiver([500, 200]);
    closers.push(() => rx.close());
    const server = await ownServer(db, { CRM_WEBHOOKS_ALLOW_PRIVATE: "true", CRM_WEBHOOKS_RETRY_SCHEDULE: "200ms" });
    try {
      const own = tenant("deliver", `http://${server.grpc}`);
      const hook = await own.webhooks.create({ url: rx.url, resourceTypes: ["account"] });
      const account = await own.customer.accounts.create({ name: `Hooked ${run}` });

      // The first attempt gets a 500, the retry (200 ms later) a 200.
      await eventually("two attempts", () => (rx.got.length >= 2 ? true : undefined));
      const [first, second] = rx.got.map((r) => verified(r, hook.secret));
      assert.deepEqual(second, first, "the same event, the same body");
      assert.equal(rx.got[1]!.headers["webhook-id"], rx.got[0]!.headers["webhook-id"]);
      assert.equal(first!["resource_type"], "account");
      assert.equal(first!["operation"], "created");
      assert.equal(first!["record_id"], account.id);
      assert.equal(first!["sequence"], "1", "int64 as a JSON string");
      assert.equal((first!["record"] as Record<string, unknown>)["name"], `Hooked ${run}`);
      const eventId = rx.got[0]!.headers["webhook-id"] as string;

      // The log, newest first: the success, then the failure (with its retry time).
      const log = await eventually("two log entries", async () => {
        const { items } = await own.webhooks.listDeliveries(hook.id);
        return items.length >= 2 ? items : undefined;
      });
      assert.equal(log.length, 2);
      const [ok, failed] = log;
      assert.deepEqual(
        log.map((d) => [d.eventId, d.sequence, d.attempt, d.statusCode]),
        [
          [eventId, 1n, 2, 200],
          [eventId, 1n, 1, 500],
        ],
      );
      assert.equal(ok!.error, "");
      assert.equal(ok!.nextAttemptAt, undefined, "delivered: not tried again");
      assert.notEqual(failed!.error, "");
      assert.ok(failed!.nextAttemptAt, "a failure says when it is tried again");
      assert.ok(failed!.attemptedAt && ok!.attemptedAt && failed!.attemptedAt.seconds <= ok!.attemptedAt.seconds);
      assert.equal(typeof ok!.durationMs, "bigint");

      // Paging through the log one entry at a time.
      const p1 = await own.webhooks.listDeliveries(hook.id, { pageSize: 1 });
      assert.equal(p1.items.length, 1);
      assert.notEqual(p1.nextPageToken, "");
      const p2 = await own.webhooks.listDeliveries(hook.id, { pageSize: 1, pageToken: p1.nextPageToken });
      assert.deepEqual(
        [...p1.items, ...p2.items].map((d) => d.attempt),
        [2, 1],
      );
      assert.equal(p2.nextPageToken, "");

      // Redelivery from 0: the same event again, signed afresh.
      const again = await own.webhooks.redeliver(hook.id, 0n);
      assert.deepEqual(again, { afterSequence: 0n, latestSequence: 1n });
      await eventually("the redelivery", () => (rx.got.length >= 3 ? true : undefined));
      const third = verified(rx.got[2]!, hook.secret);
      assert.equal(rx.got[2]!.headers["webhook-id"], eventId);
      assert.deepEqual(third, first);
      const after = await eventually("three log entries", async () => {
        const { items } = await own.webhooks.listDeliveries(hook.id);
        return items.length >= 3 ? items : undefined;
      });
      assert.deepEqual(
        after.map((d) => d.statusCode),
        [200, 200, 500],
      );
      assert.equal(after[0]!.attempt, 1, "a redelivery starts counting attempts again");
    } finally {
      await server.stop();
      dropDatabase(db);
    }
  });
});
