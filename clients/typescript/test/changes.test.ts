// The change feed (client.changes) against a real server: scripts/with-server.sh
// sets CRM_GRPC and CRM_TOKEN; each test mints its own tenant's token with
// `$CRM_BIN token` so that its feed starts at sequence 1. scripts/ts-client.sh
// starts the server with CRM_CHANGES_HEARTBEAT_SECS=1 (heartbeats after 1 s
// idle instead of 15 s); without it the heartbeat test just takes longer.
// The shutdown test starts servers of its own (own-server.ts: `$CRM_BIN
// serve --dev` on a scratch database in CRM_TEST_PG's cluster, dropped
// afterwards, as with-server.sh does) so that it can stop one.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import net from "node:net";
import { dirname, resolve } from "node:path";
import { after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import type { Interceptor } from "@connectrpc/connect";

import {
  createClient,
  CrmError,
  isTransient,
  type ChangeEvent,
  type CrmClient,
  type Heartbeat,
  type ReconnectInfo,
  type WatchChangesRequest,
} from "../src/index.js";
import { dropDatabase, ownServer } from "./own-server.js";

const grpc = process.env.CRM_GRPC;
if (!grpc || !process.env.CRM_TOKEN) throw new Error("CRM_GRPC and CRM_TOKEN must be set (run under scripts/with-server.sh)");
const baseUrl = `http://${grpc}`;
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");
const crmBin = process.env.CRM_BIN || resolve(repoRoot, "target/debug/crm");
const run = `chg${Date.now().toString(36)}${process.pid}`;

const closers: Array<() => void> = [];
after(() => closers.forEach((c) => c()));

/** A client for a tenant of its own (a feed starting at sequence 1), optionally through `url`. */
function tenant(name: string, url = baseUrl): { client: CrmClient; token: string } {
  const token = execFileSync(crmBin, ["token", "--tenant", `${name}-${run}`, "--sub", "feed-tester"], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  }).trim();
  const client = createClient({ baseUrl: url, token, timeoutMs: 15_000 });
  closers.push(() => client.close());
  return { client, token };
}

/** Waits until the tenant's feed has sequenced `n` events (sequencing follows the commit by milliseconds). */
async function waitForHead(client: CrmClient, n: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const { lastSequence } = await client.changes.list({ pageSize: 1 });
    if (lastSequence >= BigInt(n)) {
      assert.equal(lastSequence, BigInt(n), "no more events than the writes made");
      return;
    }
    if (Date.now() > deadline) assert.fail(`head stayed at ${lastSequence}, expected ${n}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function crmError(p: Promise<unknown>): Promise<CrmError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof CrmError, `expected CrmError, got ${String(err)}`);
    return err;
  }
  assert.fail("expected the call to fail");
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => BigInt(from + i));
const seqs = (items: Array<ChangeEvent | Heartbeat>) => items.map((e) => e.sequence);

/** Iterates a watch in the background, collecting what it yields. */
class Tail<T> {
  readonly items: T[] = [];
  error: unknown;
  ended = false;
  private wake: () => void = () => {};
  readonly done: Promise<void>;

  constructor(iterable: AsyncIterable<T>, onItem?: (item: T, index: number) => void) {
    this.done = (async () => {
      try {
        for await (const item of iterable) {
          this.items.push(item);
          onItem?.(item, this.items.length);
          this.wake();
        }
      } catch (err) {
        this.error = err;
      } finally {
        this.ended = true;
        this.wake();
      }
    })();
  }

  /** Resolves once `n` items have arrived; fails if the watch ends or errs first, or after `ms`. */
  async until(n: number, ms = 10_000): Promise<T[]> {
    const deadline = Date.now() + ms;
    while (this.items.length < n) {
      if (this.error !== undefined) throw this.error;
      if (this.ended) assert.fail(`the watch ended after ${this.items.length} of ${n} items`);
      const left = deadline - Date.now();
      if (left <= 0) assert.fail(`only ${this.items.length} of ${n} items within ${ms} ms`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.wake = () => {
          clearTimeout(t);
          r();
        };
      });
    }
    return this.items.slice(0, n);
  }
}

/** An interceptor recording the after_sequence of every WatchChanges request sent. */
function watchSpy(): { sent: bigint[]; interceptor: Interceptor } {
  const sent: bigint[] = [];
  const interceptor: Interceptor = (next) => async (req) => {
    if (!req.stream || req.method.name !== "WatchChanges") return next(req);
    const input = req.message;
    return next({
      ...req,
      message: (async function* () {
        for await (const m of input) {
          sent.push((m as WatchChangesRequest).afterSequence);
          yield m;
        }
      })(),
    });
  };
  return { sent, interceptor };
}

/**
 * A TCP proxy in front of the gRPC port: `drop()` resets every connection
 * through it (RST, as a crashed peer or a load balancer would), `refuse`
 * makes it reset new connections at once (the server looks unreachable).
 * `received` counts the bytes passed from the server to the client;
 * `upstream` (host:port) is where new connections go.
 */
async function proxy(upstream = grpc!): Promise<{
  url: string;
  drop(): void;
  refuse: boolean;
  upstream: string;
  readonly received: number;
  close(): void;
}> {
  const sockets = new Set<net.Socket>();
  const state = { refuse: false, received: 0, upstream };
  const server = net.createServer((down) => {
    if (state.refuse) return void down.resetAndDestroy();
    const [host, port] = state.upstream.split(":");
    const up = net.connect(Number(port), host);
    sockets.add(down).add(up);
    down.pipe(up);
    up.on("data", (chunk: Buffer) => (state.received += chunk.length)).pipe(down);
    const end = () => {
      down.destroy();
      up.destroy();
      sockets.delete(down);
      sockets.delete(up);
    };
    for (const s of [down, up]) s.on("error", end).on("close", end);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port: local } = server.address() as net.AddressInfo;
  const p = {
    url: `http://127.0.0.1:${local}`,
    drop() {
      for (const s of sockets) s.resetAndDestroy();
      sockets.clear();
    },
    get refuse() {
      return state.refuse;
    },
    set refuse(v: boolean) {
      state.refuse = v;
    },
    get received() {
      return state.received;
    },
    get upstream() {
      return state.upstream;
    },
    set upstream(v: string) {
      state.upstream = v;
    },
    close() {
      p.drop();
      server.close();
    },
  };
  closers.push(() => p.close());
  return p;
}

describe("changes.list", () => {
  test("events in ascending sequence 1..N, filters, paging, lastSequence", async () => {
    const { client } = tenant("list");
    const { accounts, deals } = client.customer;
    const a = await accounts.create({ name: `A ${run}` }); // 1 account created
    await accounts.update(a.id, { legalName: "A Ltd" }, { version: a.version }); // 2 account updated
    const d = await deals.create({ accountId: a.id, name: `Deal ${run}` }); // 3 deal created
    const b = await accounts.create({ name: `B ${run}` }); // 4 account created
    await accounts.delete(b.id, { version: b.version }); // 5 account deleted
    await waitForHead(client, 5);

    const page = await client.changes.list({ afterSequence: 0 });
    assert.deepEqual(seqs(page.changes), range(1, 5));
    assert.deepEqual(
      page.changes.map((e) => [e.resourceType, e.operation, e.recordId]),
      [
        ["account", "created", a.id],
        ["account", "updated", a.id],
        ["deal", "created", d.id],
        ["account", "created", b.id],
        ["account", "deleted", b.id],
      ],
    );
    assert.equal(page.lastSequence, 5n);
    const [first] = page.changes;
    assert.match(first!.id, /^evt_[0-9A-Z]{26}$/);
    assert.equal(first!.recordVersion, 1);
    assert.equal(first!.record?.["name"], `A ${run}`, "the record as Get returns it");
    assert.equal(first!.actor, "feed-tester");
    assert.ok(first!.committedAt && first!.committedAt.seconds > 0n);
    assert.ok(page.changes[1]!.changedFields.includes("legal_name"), page.changes[1]!.changedFields.join());
    assert.equal(new Set(page.changes.map((e) => e.id)).size, 5, "distinct event ids");

    const onlyDeals = await client.changes.list({ afterSequence: 0, resourceTypes: ["deal"] });
    assert.deepEqual(seqs(onlyDeals.changes), [3n]);
    assert.equal(onlyDeals.changes[0]!.recordId, d.id);
    assert.equal(onlyDeals.lastSequence, 5n);
    const created = await client.changes.list({ operations: ["created"] });
    assert.deepEqual(seqs(created.changes), [1n, 3n, 4n]);
    const accountsDeleted = await client.changes.list({ resourceTypes: ["account"], operations: ["deleted"] });
    assert.deepEqual(seqs(accountsDeleted.changes), [5n]);

    const p1 = await client.changes.list({ pageSize: 2 });
    assert.deepEqual(seqs(p1.changes), [1n, 2n]);
    const p2 = await client.changes.list({ afterSequence: p1.changes.at(-1)!.sequence, pageSize: 2 });
    assert.deepEqual(seqs(p2.changes), [3n, 4n]);
    const p3 = await client.changes.list({ afterSequence: 4n, pageSize: 2 });
    assert.deepEqual(seqs(p3.changes), [5n]);
    const empty = await client.changes.list({ afterSequence: 5 });
    assert.deepEqual(empty.changes, []);
    assert.equal(empty.lastSequence, 5n);
  });

  test("an invalid position or filter is CrmError INVALID_ARGUMENT", async () => {
    const { client } = tenant("badlist");
    const neg = await crmError(client.changes.list({ afterSequence: -1 }));
    assert.equal(neg.code, 3);
    assert.equal(neg.codeName, "INVALID_ARGUMENT");
    assert.equal(neg.reason, "VALIDATION_FAILED");
    assert.deepEqual(neg.fieldViolations.map((v) => v.field), ["after_sequence"]);
    const bad = await crmError(client.changes.list({ resourceTypes: ["accounts"] }));
    assert.equal(bad.codeName, "INVALID_ARGUMENT");
    assert.deepEqual(bad.fieldViolations.map((v) => v.field), ["resource_types[0]"]);
  });
});

describe("changes.watch", () => {
  test("an invalid position throws CrmError INVALID_ARGUMENT, not retried", async () => {
    const { client } = tenant("badwatch");
    const reconnects: ReconnectInfo[] = [];
    const started = Date.now();
    const signal = AbortSignal.timeout(5_000); // a regression fails, rather than hangs
    const err = await crmError(
      (async () => {
        for await (const _ of client.changes.watch({ afterSequence: -1 }, { signal, onReconnect: (i) => reconnects.push(i) })) {
          assert.fail("no event expected");
        }
      })(),
    );
    assert.equal(err.codeName, "INVALID_ARGUMENT");
    assert.deepEqual(err.fieldViolations.map((v) => v.field), ["after_sequence"]);
    assert.deepEqual(reconnects, []);
    assert.ok(Date.now() - started < 2_000);
    const filter = await crmError(
      (async () => {
        for await (const _ of client.changes.watch({ operations: ["made"] }, { signal })) assert.fail("no event expected");
      })(),
    );
    assert.deepEqual(filter.fieldViolations.map((v) => v.field), ["operations[0]"]);
  });

  test("live: concurrent writes arrive exactly once, in order; abort ends the loop cleanly", async () => {
    const { client } = tenant("live");
    const ac = new AbortController();
    const reconnects: ReconnectInfo[] = [];
    const tail = new Tail(
      client.changes.watch({ afterSequence: 0n }, { signal: ac.signal, onReconnect: (i) => reconnects.push(i) }),
    );
    // The watch is open before the writes: they arrive as they commit.
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(tail.items.length, 0);
    const n = 12;
    const created = await Promise.all(
      Array.from({ length: n }, (_, i) => client.customer.accounts.create({ name: `Live ${i} ${run}` })),
    );
    const events = await tail.until(n);
    assert.deepEqual(seqs(events), range(1, n), "gapless, ascending, no repeats");
    assert.deepEqual(new Set(events.map((e) => e.recordId)), new Set(created.map((a) => a.id)));
    assert.ok(events.every((e) => e.$typeName === "crm.v1.ChangeEvent" && e.operation === "created"));

    const more = await client.customer.accounts.create({ name: `Later ${run}` });
    const [last] = (await tail.until(n + 1)).slice(n);
    assert.equal(last!.sequence, BigInt(n + 1));
    assert.equal(last!.recordId, more.id);

    ac.abort();
    await tail.done;
    assert.equal(tail.error, undefined, "abort ends the iteration without an error");
    assert.equal(tail.items.length, n + 1);
    assert.deepEqual(reconnects, [], "the caller's abort is not a dropped stream");
  });

  test("resume: stop after k events, a new watch from the last one seen gets exactly the rest", async () => {
    const { client } = tenant("resume");
    const n = 10;
    const k = 4;
    for (let i = 0; i < n; i++) await client.customer.accounts.create({ name: `R ${i} ${run}` });
    await waitForHead(client, n);

    const firstPart: ChangeEvent[] = [];
    for await (const e of client.changes.watch({ afterSequence: 0 }, { signal: AbortSignal.timeout(10_000) })) {
      firstPart.push(e);
      if (firstPart.length === k) break; // leaving the loop cancels the stream
    }
    assert.deepEqual(seqs(firstPart), range(1, k));
    const lastSeen = firstPart.at(-1)!.sequence;

    // Written while nobody watches: delivered by the resumed watch too.
    for (let i = 0; i < 3; i++) await client.customer.accounts.create({ name: `R late ${i} ${run}` });
    const ac = new AbortController();
    const tail = new Tail(client.changes.watch({ afterSequence: lastSeen }, { signal: ac.signal }));
    const rest = await tail.until(n + 3 - k);
    assert.deepEqual(seqs(rest), range(k + 1, n + 3));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(tail.items.length, n + 3 - k, "nothing more");
    ac.abort();
    await tail.done;
    assert.equal(tail.error, undefined);
  });

  test("reconnect: connections reset mid-replay and while live resume with no gap and no repeat", async () => {
    const { client: direct, token } = tenant("reconnect");
    const n = 250; // three server batches of 100: the reset lands while events are in flight
    for (let i = 0; i < n; i += 25) {
      await Promise.all(
        Array.from({ length: 25 }, (_, j) => direct.customer.accounts.create({ name: `Re ${i + j} ${run}` })),
      );
    }
    await waitForHead(direct, n);

    const p = await proxy();
    const spy = watchSpy();
    const viaProxy = createClient({ baseUrl: p.url, token, interceptors: [spy.interceptor] });
    closers.push(() => viaProxy.close());
    const reconnects: Array<ReconnectInfo & { lastYielded: bigint }> = [];
    let lastYielded = 0n;
    const ac = new AbortController();
    const tail = new Tail(
      viaProxy.changes.watch(
        { afterSequence: 0 },
        { signal: ac.signal, onReconnect: (i) => reconnects.push({ ...i, lastYielded }) },
      ),
      (e, count) => {
        lastYielded = e.sequence;
        if (count === 30) {
          // Reset, and keep the "server" unreachable for a moment: the
          // reconnection attempts fail and back off, then succeed.
          p.drop();
          p.refuse = true;
          setTimeout(() => (p.refuse = false), 400);
        }
      },
    );
    const replayed = await tail.until(n, 20_000);
    assert.deepEqual(seqs(replayed), range(1, n), "every event once, in order, across the reset");
    assert.ok(reconnects.length >= 2, `reconnected after failed attempts: ${JSON.stringify(reconnects, (_, v) => (typeof v === "bigint" ? String(v) : v))}`);
    for (const r of reconnects) {
      assert.equal(r.afterSequence, r.lastYielded, "resumes right after the last event yielded");
      assert.ok(r.error && isTransient(r.error), `transient: ${r.error?.codeName} ${r.error?.message}`);
      assert.ok(r.delayMs >= 0 && r.delayMs <= 5_000);
    }
    assert.ok(reconnects.some((r) => r.attempt >= 2), "consecutive failures count up");

    // Live: a reset while following, with writes while the connection is down.
    const before = reconnects.length;
    p.drop();
    p.refuse = true;
    for (let i = 0; i < 3; i++) await direct.customer.accounts.create({ name: `Re live ${i} ${run}` });
    p.refuse = false;
    const live = await tail.until(n + 3, 20_000);
    assert.deepEqual(seqs(live.slice(n)), range(n + 1, n + 3));
    assert.ok(reconnects.length > before, "reconnected after the second reset");
    for (const r of reconnects.slice(before)) assert.equal(r.afterSequence, BigInt(n), "resumed after the last event");
    // What went over the wire (attempts refused before the request was sent
    // are not there): the first request from 0, then each reconnection from
    // the position it reported, never a replay from 0 hidden by the client's
    // de-duplication.
    assert.equal(spy.sent[0], 0n);
    assert.ok(spy.sent.length >= 3, `one request per successful reconnection: ${spy.sent.join()}`);
    assert.deepEqual(new Set(spy.sent.slice(1)), new Set(reconnects.map((r) => r.afterSequence)));

    ac.abort();
    await tail.done;
    assert.equal(tail.error, undefined);
    assert.equal(tail.items.length, n + 3);
  });

  test("heartbeats advance the resume position and are yielded only on request", async () => {
    const { client: direct, token } = tenant("heartbeat");
    const acc = await direct.customer.accounts.create({ name: `H 0 ${run}` });
    for (let i = 1; i < 3; i++) await direct.customer.accounts.create({ name: `H ${i} ${run}` });
    await waitForHead(direct, 3);

    const p = await proxy();
    const spy = watchSpy();
    const viaProxy = createClient({ baseUrl: p.url, token, interceptors: [spy.interceptor] });
    closers.push(() => viaProxy.close());
    const reconnects: ReconnectInfo[] = [];
    const ac = new AbortController();
    // Only deals: the three account events are passed over, and only a
    // heartbeat tells the watch (and the caller) that it is at 3.
    const tail = new Tail(
      viaProxy.changes.watch(
        { afterSequence: 0, resourceTypes: ["deal"] },
        { signal: ac.signal, heartbeats: true, onReconnect: (i) => reconnects.push(i) },
      ),
    );
    const [hb] = await tail.until(1, 20_000);
    assert.equal(hb!.$typeName, "crm.v1.Heartbeat");
    assert.equal(hb!.sequence, 3n);

    p.drop();
    const deal = await direct.customer.deals.create({ accountId: acc.id, name: `HB deal ${run}` }); // 4
    const items = await tail.until(2, 20_000);
    const change = items.find((x): x is ChangeEvent => x.$typeName === "crm.v1.ChangeEvent");
    assert.ok(change, "the deal event arrives");
    assert.equal(change.sequence, 4n);
    assert.equal(change.recordId, deal.id);
    assert.ok(reconnects.length >= 1);
    assert.equal(reconnects[0]!.afterSequence, 3n, "resumed from the heartbeat's sequence, not from 0");
    assert.deepEqual(spy.sent.slice(0, 2), [0n, 3n]);
    ac.abort();
    await tail.done;
    assert.equal(tail.error, undefined);

    // Without the option no heartbeat is yielded: an idle watch yields nothing.
    const quiet = new AbortController();
    const plain = new Tail(direct.changes.watch({ afterSequence: 4 }, { signal: quiet.signal }));
    await new Promise((r) => setTimeout(r, 2_500));
    assert.deepEqual(plain.items, []);
    quiet.abort();
    await plain.done;
    assert.equal(plain.error, undefined);
  });

  test("leaving the loop, or aborting, cancels the stream", async () => {
    const { client: direct, token } = tenant("cancel");
    for (let i = 0; i < 3; i++) await direct.customer.accounts.create({ name: `C ${i} ${run}` });
    await waitForHead(direct, 3);
    const p = await proxy();
    const viaProxy = createClient({ baseUrl: p.url, token });
    closers.push(() => viaProxy.close());
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    /** Bytes the server sends while 5 records are written, and for 1.5 s after. */
    const streamedDuring = async (label: string) => {
      await sleep(300);
      const before = p.received;
      for (let i = 0; i < 5; i++) await direct.customer.accounts.create({ name: `${label} ${i} ${run}` });
      await sleep(1_500); // beyond a heartbeat (1 s idle), had the stream stayed open
      return p.received - before;
    };

    for await (const e of viaProxy.changes.watch({}, { signal: AbortSignal.timeout(10_000) })) {
      if (e.sequence === 2n) break;
    }
    assert.ok((await streamedDuring("after break")) < 100, "nothing streamed after the break");

    const ac = new AbortController();
    const tail = new Tail(viaProxy.changes.watch({ afterSequence: 8 }, { signal: ac.signal }));
    await sleep(300);
    ac.abort();
    await tail.done;
    assert.equal(tail.error, undefined);
    assert.ok((await streamedDuring("after abort")) < 100, "nothing streamed after the abort");
  });

  test("server shutdown ends the stream cleanly; the watch resumes on the restarted server", { timeout: 180_000 }, async () => {
    const db = `crm_scratch_ts_feed_${process.pid}`;
    const servers: Array<{ stop(): Promise<void> }> = [];
    try {
      const first = await ownServer(db);
      servers.push(first);
      const token = execFileSync(crmBin, ["token", "--tenant", `shutdown-${run}`, "--sub", "feed-tester"], {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "pipe"],
      }).trim();
      const direct1 = createClient({ baseUrl: `http://${first.grpc}`, token });
      closers.push(() => direct1.close());
      for (let i = 0; i < 5; i++) await direct1.customer.accounts.create({ name: `S ${i} ${run}` });
      await waitForHead(direct1, 5);
      direct1.close();

      const p = await proxy(first.grpc);
      const spy = watchSpy();
      const viaProxy = createClient({ baseUrl: p.url, token, interceptors: [spy.interceptor] });
      closers.push(() => viaProxy.close());
      const reconnects: Array<ReconnectInfo & { lastYielded: bigint }> = [];
      let lastYielded = 0n;
      let stopping: Promise<void> | undefined;
      const ac = new AbortController();
      const tail = new Tail(
        viaProxy.changes.watch({}, { signal: ac.signal, onReconnect: (i) => reconnects.push({ ...i, lastYielded }) }),
        (e, count) => {
          lastYielded = e.sequence;
          if (count === 2) stopping = first.stop(); // SIGTERM: the server ends its watches, then exits
        },
      );
      await tail.until(2);
      await stopping;
      assert.ok(reconnects.length >= 1, "the stream ended with the server");
      assert.equal(reconnects[0]!.error, undefined, "ended cleanly (OK trailers), not with an error");

      // The same database, a new process, a new port: the proxy points there.
      const second = await ownServer(db);
      servers.push(second);
      p.upstream = second.grpc;
      const direct2 = createClient({ baseUrl: `http://${second.grpc}`, token });
      closers.push(() => direct2.close());
      for (let i = 5; i < 8; i++) await direct2.customer.accounts.create({ name: `S ${i} ${run}` });
      const events = await tail.until(8, 30_000);
      assert.deepEqual(seqs(events), range(1, 8), "no gap, no repeat across the restart");
      for (const r of reconnects) assert.equal(r.afterSequence, r.lastYielded);
      assert.equal(spy.sent[0], 0n);
      assert.deepEqual(new Set(spy.sent.slice(1)), new Set(reconnects.map((r) => r.afterSequence)));
      ac.abort();
      await tail.done;
      assert.equal(tail.error, undefined);
    } finally {
      for (const s of servers) await s.stop();
      dropDatabase(db);
    }
  });

  test("abort while reconnecting ends the loop at once", async () => {
    const { token } = tenant("abort");
    const p = await proxy();
    p.refuse = true;
    const viaProxy = createClient({ baseUrl: p.url, token });
    closers.push(() => viaProxy.close());
    const reconnects: ReconnectInfo[] = [];
    const ac = new AbortController();
    const tail = new Tail(
      viaProxy.changes.watch(
        {},
        { signal: ac.signal, initialBackoffMs: 60_000, maxBackoffMs: 60_000, onReconnect: (i) => reconnects.push(i) },
      ),
    );
    const deadline = Date.now() + 10_000;
    while (reconnects.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(reconnects.length, 1, "the first attempt failed and a 30-60 s backoff began");
    assert.ok(reconnects[0]!.delayMs >= 30_000);
    const t0 = Date.now();
    ac.abort();
    await tail.done;
    assert.ok(Date.now() - t0 < 1_000, "not waiting out the backoff");
    assert.equal(tail.error, undefined);
  });
});

test("isTransient: transport failures and retryable statuses, not crm's own errors", () => {
  const e = (code: number, reason = "") => new CrmError({ code, message: "x", reason, domain: reason ? "crm.v1" : "" });
  assert.ok(isTransient(e(14))); // UNAVAILABLE
  assert.ok(isTransient(e(14, "UNAVAILABLE")));
  assert.ok(isTransient(e(1))); // CANCELLED (not by the caller)
  assert.ok(isTransient(e(10))); // ABORTED by the transport (ECONNRESET)
  assert.ok(isTransient(e(13))); // INTERNAL by the transport (RST_STREAM, no trailers)
  assert.ok(isTransient(e(8, "SERVER_BUSY")));
  assert.ok(!isTransient(e(9, "CHANGES_EXPIRED")));
  assert.ok(!isTransient(e(3, "VALIDATION_FAILED")));
  assert.ok(!isTransient(e(16, "MISSING_CREDENTIALS")));
  assert.ok(!isTransient(e(13, "INTERNAL_ERROR")));
  assert.ok(!isTransient(e(8, "MESSAGE_TOO_LARGE")));
  assert.ok(!isTransient(e(7, "PERMISSION_DENIED")));
});
