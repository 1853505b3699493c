// The transport-independent part of the client: the wrapper over the generated
// crm.v1 code (src/gen, protobuf-es v2) that sends the token, follows pages,
// decodes errors into CrmError and resumes the change feed, over any Connect
// transport. No Node built-ins here: the entries add the transport,
//   src/index.ts  createClient    Connect's gRPC transport for Node (HTTP/2, also h2c)
//   src/web.ts    createWebClient Connect's gRPC-Web transport (fetch), for browsers
//
//   const { items, nextPageToken } = await client.customer.accounts.list({ filter: "tags:vip", pageSize: 20 });
//   for await (const a of client.customer.accounts.listAll({ filter: "tags:vip" })) console.log(a.name);
//   for await (const e of client.changes.watch({ afterSequence: 0n })) console.log(e.sequence, e.operation);
//   const [a, b] = await client.customer.accounts.batchCreate([{ name: "A" }, { name: "B" }]);
//   const { record, created } = await client.customer.accounts.upsert({ externalId: "erp-1", name: "A" });
//   const { items } = await client.history.list("deals", deal.id, { fields: ["stage"] });
import { toJson, type DescService, type JsonObject, type JsonValue, type MessageInitShape } from "@bufbuild/protobuf";
import { StructSchema, timestampFromDate, ValueSchema, type Timestamp, type Value } from "@bufbuild/protobuf/wkt";
import {
  Code as ConnectCode,
  ConnectError,
  createClient as createConnectClient,
  type CallOptions,
  type Interceptor,
  type Transport,
} from "@connectrpc/connect";

import { AccountService, type Account, type AccountSchema } from "./gen/crm/v1/account_pb.js";
import { ActivityService, type Activity, type ActivitySchema } from "./gen/crm/v1/activity_pb.js";
import { ChangeService, type ChangeEvent, type Heartbeat } from "./gen/crm/v1/change_pb.js";
import { ContactService, type Contact, type ContactSchema } from "./gen/crm/v1/contact_pb.js";
import { DealService, type Deal, type DealSchema } from "./gen/crm/v1/deal_pb.js";
import {
  FieldDefinitionService,
  type FieldDefinition,
  type FieldDefinitionSchema,
} from "./gen/crm/v1/field_definition_pb.js";
import { ErasureService, HistoryService, type HistoryEntry } from "./gen/crm/v1/history_pb.js";
import { LineItemService, type LineItem, type LineItemSchema } from "./gen/crm/v1/line_item_pb.js";
import { QuoteService, type Quote, type QuoteSchema } from "./gen/crm/v1/quote_pb.js";
import {
  WebhookService,
  type Webhook,
  type WebhookDelivery,
  type WebhookSchema,
} from "./gen/crm/v1/webhook_pb.js";
import { Code as RpcCode } from "./gen/google/rpc/code_pb.js";
import { BadRequestSchema, ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";

// The generated record types (typed records) and their schemas/services.
export * from "./gen/crm/v1/account_pb.js";
export * from "./gen/crm/v1/activity_pb.js";
export * from "./gen/crm/v1/change_pb.js";
export * from "./gen/crm/v1/common_pb.js";
export * from "./gen/crm/v1/contact_pb.js";
export * from "./gen/crm/v1/deal_pb.js";
export * from "./gen/crm/v1/field_definition_pb.js";
export * from "./gen/crm/v1/history_pb.js";
export * from "./gen/crm/v1/line_item_pb.js";
export * from "./gen/crm/v1/quote_pb.js";
export * from "./gen/crm/v1/webhook_pb.js";
export type { CallOptions, Transport } from "@connectrpc/connect";

/** What create/update accept: a partial, plain-object record (camelCase fields). */
export type AccountInput = MessageInitShape<typeof AccountSchema>;
export type ContactInput = MessageInitShape<typeof ContactSchema>;
export type DealInput = MessageInitShape<typeof DealSchema>;
export type ActivityInput = MessageInitShape<typeof ActivitySchema>;
export type QuoteInput = MessageInitShape<typeof QuoteSchema>;
export type LineItemInput = MessageInitShape<typeof LineItemSchema>;
export type WebhookInput = MessageInitShape<typeof WebhookSchema>;
export type FieldDefinitionInput = MessageInitShape<typeof FieldDefinitionSchema>;

// ---------------------------------------------------------------- errors

/** One google.rpc.BadRequest field violation. */
export interface FieldViolation {
  field: string;
  description: string;
  reason: string;
}

/**
 * Every failed call rejects with a CrmError: the gRPC status code (number and
 * canonical name, e.g. 10 / "ABORTED"), the message, and the details decoded
 * from grpc-status-details-bin (google.rpc.ErrorInfo, google.rpc.BadRequest).
 */
export class CrmError extends Error {
  override readonly name = "CrmError";
  /** gRPC status code, e.g. 10. */
  readonly code: number;
  /** Canonical gRPC code name, e.g. "ABORTED", "INVALID_ARGUMENT", "NOT_FOUND". */
  readonly codeName: string;
  /** google.rpc.ErrorInfo.reason, e.g. "VERSION_MISMATCH" ("" if absent). */
  readonly reason: string;
  /** google.rpc.ErrorInfo.domain ("crm.v1"). */
  readonly domain: string;
  /** google.rpc.ErrorInfo.metadata, e.g. { expected_version, current_version }. */
  readonly metadata: Record<string, string>;
  /** google.rpc.BadRequest.field_violations (INVALID_ARGUMENT). */
  readonly fieldViolations: FieldViolation[];

  constructor(init: {
    code: number;
    message: string;
    reason?: string;
    domain?: string;
    metadata?: Record<string, string>;
    fieldViolations?: FieldViolation[];
    cause?: unknown;
  }) {
    super(init.message, { cause: init.cause });
    this.code = init.code;
    this.codeName = RpcCode[init.code] ?? "UNKNOWN";
    this.reason = init.reason ?? "";
    this.domain = init.domain ?? "";
    this.metadata = init.metadata ?? {};
    this.fieldViolations = init.fieldViolations ?? [];
  }

  /** Converts a ConnectError (or anything thrown by a call) into a CrmError. */
  static from(err: unknown): CrmError {
    if (err instanceof CrmError) return err;
    const ce = ConnectError.from(err, ConnectCode.Unknown);
    const info = ce.findDetails(ErrorInfoSchema)[0];
    const fieldViolations = ce
      .findDetails(BadRequestSchema)
      .flatMap((b) => b.fieldViolations)
      .map((v) => ({ field: v.field, description: v.description, reason: v.reason }));
    return new CrmError({
      code: ce.code,
      message: ce.rawMessage,
      reason: info?.reason ?? "",
      domain: info?.domain ?? "",
      metadata: info ? { ...info.metadata } : {},
      fieldViolations,
      cause: err,
    });
  }
}

async function call<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw CrmError.from(err);
  }
}

// ---------------------------------------------------------------- resources

export interface ListParams {
  /** AIP-160 filter, e.g. `tags:vip AND industry = "saas"`. */
  filter?: string;
  /** e.g. "name, created_at desc". Default "created_at desc". */
  orderBy?: string;
  /** Free-text search. */
  search?: string;
  /** 0/absent: server default (50); max 1000. */
  pageSize?: number;
  /** next_page_token of the previous page. */
  pageToken?: string;
  /** Include soft-deleted records. */
  showDeleted?: boolean;
}

export interface Page<T> {
  items: T[];
  /** "" on the last page. */
  nextPageToken: string;
}

export interface CreateOptions extends CallOptions {
  /** UUID making the create idempotent: a retry with the same id returns the first result. */
  requestId?: string;
}

export interface UpdateOptions extends CallOptions {
  /** Non-zero: must equal the stored version, else CrmError ABORTED (VERSION_MISMATCH). */
  version?: number;
  /**
   * Field paths to write (proto snake_case or camelCase: "legal_name" / "legalName",
   * "custom_fields.<key>", "*"). Absent: the fields populated in the patch.
   */
  updateMask?: string[];
  requestId?: string;
}

export interface DeleteOptions extends CallOptions {
  /** Non-zero: must equal the stored version, else CrmError ABORTED. */
  version?: number;
  requestId?: string;
}

/**
 * Options of the batch writes. A batch is one transaction (all or none) of at
 * most 1000 items; `requestId` makes the whole batch idempotent (the items
 * carry none of their own).
 */
export interface BatchOptions extends CallOptions {
  requestId?: string;
}

/** One item of `batchUpdate`: the arguments of `update(id, patch, { version, updateMask })`. */
export interface BatchUpdateItem<I> {
  id: string;
  patch: I;
  /** Non-zero: must equal the stored version, else the batch fails with ABORTED. */
  version?: number;
  /** As in UpdateOptions (absent: the fields populated in the patch). */
  updateMask?: string[];
}

export interface UpsertOptions extends CallOptions {
  /** Fields to write when the record exists (as in UpdateOptions); a create uses the whole record. */
  updateMask?: string[];
  requestId?: string;
}

/** One item of `batchUpsert`: the arguments of `upsert(record, { updateMask })`. */
export interface BatchUpsertItem<I> {
  /** Must carry `externalId`. */
  record: I;
  updateMask?: string[];
}

/** What `upsert` returns. */
export interface UpsertResult<T> {
  /** The record as stored. */
  record: T;
  /** True when the call created it, false when it updated (or left unchanged) an existing one. */
  created: boolean;
}

/** What `batchUpsert` returns. */
export interface BatchUpsertResult<T> {
  /** The records as stored, in the order of the items. */
  items: T[];
  /** Parallel to `items`: true where the item created its record. */
  created: boolean[];
}

/** List/get/create and their batch forms: what every entity supports (activities stop here). */
export interface ReadCreateResource<T, I> {
  /** One page. `await resource.list()` returns the first page with defaults. */
  list(params?: ListParams, opts?: CallOptions): Promise<Page<T>>;
  /** Every record across all pages, fetched page by page. */
  listAll(params?: Omit<ListParams, "pageToken">, opts?: CallOptions): AsyncIterable<T>;
  get(id: string, opts?: CallOptions): Promise<T>;
  create(record: I, opts?: CreateOptions): Promise<T>;
  /**
   * Up to 1000 records by id, in the order asked (an id twice is returned
   * twice; soft-deleted records too). Any unknown id: CrmError NOT_FOUND.
   */
  batchGet(ids: string[], opts?: CallOptions): Promise<T[]>;
  /**
   * Creates up to 1000 records in one transaction (all or none) and returns
   * them in order. A rejected batch lists every violation of every item, each
   * field prefixed with its item: "requests[3].account.website".
   */
  batchCreate(records: I[], opts?: BatchOptions): Promise<T[]>;
}

export interface Resource<T, I> extends ReadCreateResource<T, I> {
  update(id: string, patch: I, opts?: UpdateOptions): Promise<T>;
  /** Soft delete; returns the record with isDeleted set. */
  delete(id: string, opts?: DeleteOptions): Promise<T>;
  undelete(id: string, opts?: { version?: number } & CallOptions): Promise<T>;
  /**
   * Updates up to 1000 records (each a different id) in one transaction, each
   * as `update` does: all or none. A stale version is CrmError ABORTED and
   * changes nothing. Returns the records as stored, in order.
   */
  batchUpdate(items: BatchUpdateItem<I>[], opts?: BatchOptions): Promise<T[]>;
  /**
   * Soft-deletes up to 1000 records in one transaction (all or none: an id
   * missing or already deleted fails the batch); returns them in order.
   */
  batchDelete(ids: string[], opts?: BatchOptions): Promise<T[]>;
  /**
   * Creates the record with `record.externalId` (required), or updates the
   * live one that has it (the `updateMask` fields, or the populated ones).
   * `record.version`, when non-zero, is checked on update.
   */
  upsert(record: I, opts?: UpsertOptions): Promise<UpsertResult<T>>;
  /** Upserts up to 1000 records (each a different externalId) in one transaction: all or none. */
  batchUpsert(items: BatchUpsertItem<I>[], opts?: BatchOptions): Promise<BatchUpsertResult<T>>;
}

/** Turns "legalName.x" into "legal_name.x" (only the first segment: map keys stay as given). */
export function toProtoPath(path: string): string {
  const dot = path.indexOf(".");
  const head = dot < 0 ? path : path.slice(0, dot);
  const rest = dot < 0 ? "" : path.slice(dot);
  return head.replace(/[A-Z]/g, (c) => "_" + c.toLowerCase()) + rest;
}

interface ReadCreateOps<T, I> {
  list(req: ListParams, o?: CallOptions): Promise<Page<T>>;
  get(id: string, o?: CallOptions): Promise<T>;
  create(record: I, requestId: string, o?: CallOptions): Promise<T>;
  batchGet(ids: string[], o?: CallOptions): Promise<T[]>;
  batchCreate(records: I[], requestId: string, o?: CallOptions): Promise<T[]>;
}

/** A record with the field paths to write (undefined: no mask). */
interface Masked<I> {
  record: I;
  paths: string[] | undefined;
}

interface WriteOps<T, I> {
  update(record: I, paths: string[] | undefined, requestId: string, o?: CallOptions): Promise<T>;
  delete(id: string, version: number, requestId: string, o?: CallOptions): Promise<T>;
  undelete(id: string, version: number, o?: CallOptions): Promise<T>;
  batchUpdate(items: Masked<I>[], requestId: string, o?: CallOptions): Promise<T[]>;
  batchDelete(ids: string[], requestId: string, o?: CallOptions): Promise<T[]>;
  upsert(record: I, paths: string[] | undefined, requestId: string, o?: CallOptions): Promise<UpsertResult<T>>;
  batchUpsert(items: Masked<I>[], requestId: string, o?: CallOptions): Promise<BatchUpsertResult<T>>;
}

function readCreate<T, I>(ops: ReadCreateOps<T, I>): ReadCreateResource<T, I> {
  return {
    list: (params = {}, o) => call(() => ops.list(params, o)),
    async *listAll(params = {}, o) {
      let pageToken = "";
      do {
        const page = await call(() => ops.list({ ...params, pageToken }, o));
        yield* page.items;
        pageToken = page.nextPageToken;
      } while (pageToken !== "");
    },
    get: (id, o) => call(() => ops.get(id, o)),
    create: (record, o = {}) => call(() => ops.create(record, o.requestId ?? "", o)),
    batchGet: (ids, o) => call(() => ops.batchGet(ids, o)),
    batchCreate: (records, o = {}) => call(() => ops.batchCreate(records, o.requestId ?? "", o)),
  };
}

function resource<T, I extends { id?: string; version?: number }>(
  ops: ReadCreateOps<T, I> & WriteOps<T, I>,
): Resource<T, I> {
  return {
    ...readCreate(ops),
    update: (id, patch, o = {}) =>
      call(() =>
        ops.update(
          { ...patch, id, version: o.version ?? patch.version ?? 0 },
          o.updateMask?.map(toProtoPath),
          o.requestId ?? "",
          o,
        ),
      ),
    delete: (id, o = {}) => call(() => ops.delete(id, o.version ?? 0, o.requestId ?? "", o)),
    undelete: (id, o = {}) => call(() => ops.undelete(id, o.version ?? 0, o)),
    batchUpdate: (items, o = {}) =>
      call(() =>
        ops.batchUpdate(
          items.map((u) => ({
            record: { ...u.patch, id: u.id, version: u.version ?? u.patch.version ?? 0 },
            paths: u.updateMask?.map(toProtoPath),
          })),
          o.requestId ?? "",
          o,
        ),
      ),
    batchDelete: (ids, o = {}) => call(() => ops.batchDelete(ids, o.requestId ?? "", o)),
    upsert: (record, o = {}) =>
      call(() => ops.upsert(record, o.updateMask?.map(toProtoPath), o.requestId ?? "", o)),
    batchUpsert: (items, o = {}) =>
      call(() =>
        ops.batchUpsert(
          items.map((u) => ({ record: u.record, paths: u.updateMask?.map(toProtoPath) })),
          o.requestId ?? "",
          o,
        ),
      ),
  };
}

const mask = (paths: string[] | undefined) => (paths ? { paths } : undefined);

type Rpc = (request: object, o?: CallOptions) => Promise<Record<string, unknown>>;

/**
 * The operations of one crm.v1 service, read from its descriptor, so that the
 * six entities share this one adapter: the methods by verb (`ListAccounts`,
 * `GetAccount`, `BatchGetAccounts`, ...), the request field that carries the
 * record (the one of the record's type) and the response field that lists
 * records (its one list; the batch responses use the same name). A method the
 * service lacks (activities: no update, delete, upsert) throws when called.
 */
function opsOf<T, I>(service: DescService, transport: Transport): ReadCreateOps<T, I> & WriteOps<T, I> {
  const client = createConnectClient(service, transport) as unknown as Record<string, Rpc>;
  const method = (verb: string) => {
    const m = service.methods.find((m) => m.name.startsWith(verb));
    if (!m) throw new Error(`${service.typeName} has no ${verb} method`);
    return m;
  };
  const rpc = (verb: string): Rpc => client[method(verb).localName]!;
  const create = method("Create");
  const record = create.input.fields.find(
    (f) => f.fieldKind === "message" && f.message.typeName === create.output.typeName,
  )!.localName;
  const items = method("List").output.fields.find((f) => f.fieldKind === "list")!.localName;
  const one = async (p: Promise<Record<string, unknown>>) => (await p) as T;
  const many = async (p: Promise<Record<string, unknown>>) => (await p)[items] as T[];
  const masked = (m: Masked<I>) => ({ [record]: m.record, updateMask: mask(m.paths) });
  return {
    list: async (r, o) => {
      const res = await rpc("List")(r, o);
      return { items: res[items] as T[], nextPageToken: res["nextPageToken"] as string };
    },
    get: (id, o) => one(rpc("Get")({ id }, o)),
    create: (rec, requestId, o) => one(rpc("Create")({ [record]: rec, requestId }, o)),
    update: (rec, paths, requestId, o) =>
      one(rpc("Update")({ [record]: rec, updateMask: mask(paths), requestId }, o)),
    delete: (id, version, requestId, o) => one(rpc("Delete")({ id, version, requestId }, o)),
    undelete: (id, version, o) => one(rpc("Undelete")({ id, version }, o)),
    batchGet: (ids, o) => many(rpc("BatchGet")({ ids }, o)),
    batchCreate: (recs, requestId, o) =>
      many(rpc("BatchCreate")({ requests: recs.map((r) => ({ [record]: r })), requestId }, o)),
    batchUpdate: (ms, requestId, o) => many(rpc("BatchUpdate")({ requests: ms.map(masked), requestId }, o)),
    batchDelete: (ids, requestId, o) => many(rpc("BatchDelete")({ ids, requestId }, o)),
    upsert: async (rec, paths, requestId, o) => {
      const res = await rpc("Upsert")({ ...masked({ record: rec, paths }), requestId }, o);
      return { record: res[record] as T, created: res["created"] as boolean };
    },
    batchUpsert: async (ms, requestId, o) => {
      const res = await rpc("BatchUpsert")({ requests: ms.map(masked), requestId }, o);
      return { items: res[items] as T[], created: res["created"] as boolean[] };
    },
  };
}

// ---------------------------------------------------------------- change feed

/** A position in the tenant's feed: a sequence (`0` = before the first event). */
export type ChangeSequence = bigint | number;

export interface ChangesListParams {
  /** Events with a greater sequence are returned; 0/absent: from the oldest retained. */
  afterSequence?: ChangeSequence;
  /** 0/absent: server default (100); above 1000 is taken as 1000. */
  pageSize?: number;
  /** Only these resource types (account, contact, deal, activity, quote, line_item); empty: all. */
  resourceTypes?: string[];
  /** Only these operations (created, updated, deleted, undeleted, purged); empty: all. */
  operations?: string[];
}

export interface ChangesPage {
  /** The events, ascending by sequence. */
  changes: ChangeEvent[];
  /**
   * The tenant's latest sequence when the page was read. A page shorter than
   * pageSize means everything up to it has been seen: poll again after the
   * last event's sequence, or after this value when the page is empty.
   */
  lastSequence: bigint;
}

export type WatchParams = Omit<ChangesListParams, "pageSize">;

/** Passed to `onReconnect` before each reconnection of a watch. */
export interface ReconnectInfo {
  /** 1 for the first reconnection after a stream that delivered messages, then 2, 3, ... */
  attempt: number;
  /** The position the watch resumes from (the last sequence seen, heartbeats included). */
  afterSequence: bigint;
  /** How long the watch waits before reconnecting. */
  delayMs: number;
  /** Why the stream ended (undefined: it ended cleanly, as when the server shuts down). */
  error: CrmError | undefined;
}

/** Options of `changes.watch`. A watch has no deadline: stop it with `signal` or by leaving the loop. */
export interface WatchOptions extends Omit<CallOptions, "timeoutMs" | "onHeader" | "onTrailer"> {
  /** Also yield the heartbeats (sent after 15 s without an event). Default false. */
  heartbeats?: boolean;
  /** First reconnection delay (default 100 ms), doubled per failed attempt... */
  initialBackoffMs?: number;
  /** ...up to this (default 5000 ms). Each delay is randomized to 50-100 % of it. */
  maxBackoffMs?: number;
  /** Called before each reconnection (for logging/metrics). */
  onReconnect?: (info: ReconnectInfo) => void;
}

export interface Changes {
  /** One page of events after `afterSequence`, oldest first. */
  list(params?: ChangesListParams, opts?: CallOptions): Promise<ChangesPage>;
  /**
   * Every event after `afterSequence`, then each new one as it commits, in
   * sequence order, for as long as the caller iterates. When the stream drops
   * (UNAVAILABLE, a reset connection, the server shutting down) the watch
   * reconnects with a bounded backoff and resumes after the last sequence it
   * has seen: no event is yielded twice and none is skipped. Other errors
   * (CHANGES_EXPIRED, INVALID_ARGUMENT, UNAUTHENTICATED, ...) are thrown as
   * CrmError. Aborting `signal`, or leaving the loop, cancels the stream and
   * ends the iteration without an error.
   */
  watch(params?: WatchParams, opts?: WatchOptions & { heartbeats?: false }): AsyncIterable<ChangeEvent>;
  /** With `heartbeats: true`, the heartbeats too (tell them apart by `$typeName`). */
  watch(params: WatchParams | undefined, opts: WatchOptions & { heartbeats: true }): AsyncIterable<ChangeEvent | Heartbeat>;
}

/**
 * Whether a watch resumes after this error rather than throwing it. Statuses
 * crm itself sends always carry an ErrorInfo; the transport's own (a reset
 * connection is ABORTED, a stream cut before its trailers INTERNAL) have none.
 */
export function isTransient(err: CrmError): boolean {
  const fromServer = err.reason !== "" || err.domain !== "";
  switch (err.codeName) {
    case "UNAVAILABLE": // connection refused/lost, server draining, database unreachable
    case "CANCELLED": // not by the caller: a reset stream or connection
    case "DEADLINE_EXCEEDED": // a watch has no deadline: the server's, while starting it
      return true;
    case "RESOURCE_EXHAUSTED":
      return err.reason === "SERVER_BUSY"; // "retry with backoff"
    case "ABORTED":
    case "INTERNAL":
    case "UNKNOWN":
      return !fromServer;
    default:
      return false;
  }
}

/** The delay before reconnection `attempt` (1, 2, ...): doubling, capped, 50-100 % jitter. */
function backoffMs(attempt: number, initialMs: number, maxMs: number): number {
  const full = Math.min(maxMs, initialMs * 2 ** Math.min(attempt - 1, 30));
  return Math.round(full * (0.5 + Math.random() / 2));
}

/** Resolves true after `ms`, or false as soon as `signal` aborts. */
function sleep(ms: number, signal: AbortSignal | undefined): Promise<boolean> {
  if (signal?.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

function changesOf(transport: Transport): Changes {
  const rpc = createConnectClient(ChangeService, transport);

  async function* watch(
    params: WatchParams,
    opts: WatchOptions,
  ): AsyncGenerator<ChangeEvent | Heartbeat, void, undefined> {
    const { heartbeats = false, initialBackoffMs = 100, maxBackoffMs = 5000, onReconnect, signal, ...callOpts } = opts;
    const filters = { resourceTypes: params.resourceTypes ?? [], operations: params.operations ?? [] };
    // The last sequence yielded or passed by a heartbeat: each stream resumes after it.
    let position = BigInt(params.afterSequence ?? 0);
    let attempt = 0;
    for (;;) {
      if (signal?.aborted) return;
      // One controller per stream: Connect's iterable does not cancel the
      // HTTP/2 stream when the loop is left, so the finally below does.
      const stream = new AbortController();
      const forward = () => stream.abort(signal?.reason);
      signal?.addEventListener("abort", forward, { once: true });
      let error: CrmError | undefined;
      try {
        const responses = rpc.watchChanges(
          { ...filters, afterSequence: position },
          { ...callOpts, signal: stream.signal, timeoutMs: 0 },
        );
        for await (const { kind } of responses) {
          attempt = 0;
          if (kind.case === "change") {
            if (kind.value.sequence <= position) continue; // never twice
            position = kind.value.sequence;
            yield kind.value;
          } else if (kind.case === "heartbeat") {
            if (kind.value.sequence > position) position = kind.value.sequence;
            if (heartbeats) yield kind.value;
          }
        }
        // Ended without an error: the server is shutting down.
      } catch (err) {
        if (signal?.aborted) return;
        error = CrmError.from(err);
        if (!isTransient(error)) throw error;
      } finally {
        signal?.removeEventListener("abort", forward);
        stream.abort();
      }
      attempt++;
      const delayMs = backoffMs(attempt, initialBackoffMs, maxBackoffMs);
      onReconnect?.({ attempt, afterSequence: position, delayMs, error });
      if (!(await sleep(delayMs, signal))) return;
    }
  }

  return {
    list: (params = {}, o) =>
      call(async () => {
        const res = await rpc.listChanges(
          {
            afterSequence: BigInt(params.afterSequence ?? 0),
            pageSize: params.pageSize ?? 0,
            resourceTypes: params.resourceTypes ?? [],
            operations: params.operations ?? [],
          },
          o,
        );
        return { changes: res.changes, lastSequence: res.lastSequence };
      }),
    watch: ((params: WatchParams = {}, opts: WatchOptions = {}) => watch(params, opts)) as Changes["watch"],
  };
}

// ---------------------------------------------------------------- webhooks

/** What `webhooks.redeliver` returns. */
export interface RedeliverResult {
  /** The webhook's new position: the `afterSequence` asked for. */
  afterSequence: bigint;
  /**
   * The tenant's latest sequence when the request was served: the events up
   * to it (that match the webhook) will be delivered.
   */
  latestSequence: bigint;
}

/** The tenant's webhooks (definitions, delivery logs, redelivery; see WebhookService in the protos). */
export interface Webhooks {
  /** Creates a webhook; the result is the only one carrying `secret` (whsec_…). */
  create(webhook: WebhookInput, opts?: CallOptions): Promise<Webhook>;
  get(id: string, opts?: CallOptions): Promise<Webhook>;
  /** One page, newest first. */
  list(
    params?: { pageSize?: number; pageToken?: string },
    opts?: CallOptions,
  ): Promise<{ items: Webhook[]; nextPageToken: string }>;
  /** Updates the fields of `updateMask` (url, resourceTypes, operations, description, enabled), or those `webhook` sets. */
  update(webhook: WebhookInput & { id: string }, updateMask?: string[], opts?: CallOptions): Promise<Webhook>;
  /** Deletes the webhook for good. */
  delete(id: string, opts?: CallOptions): Promise<void>;
  /**
   * One page of the webhook's delivery log, newest first: one entry per
   * attempt (`sequence`, `attempt`, `statusCode` (0: no response), `error`,
   * `attemptedAt`, `durationMs`, `nextAttemptAt`), kept for 30 days.
   * `pageSize` 0/absent: 50, at most 500. An unknown webhook (or another
   * tenant's) is CrmError NOT_FOUND; a bad `pageToken`, INVALID_ARGUMENT.
   */
  listDeliveries(
    id: string,
    params?: { pageSize?: number; pageToken?: string },
    opts?: CallOptions,
  ): Promise<{ items: WebhookDelivery[]; nextPageToken: string }>;
  /**
   * Delivers the webhook's matching events after `afterSequence` (again), in
   * order: its position moves there and a pending retry is dropped (a
   * position ahead of the current one skips the events between). From 0 (all
   * still kept) up to the tenant's latest sequence: above it is CrmError
   * INVALID_ARGUMENT on `after_sequence`, below the oldest kept event
   * FAILED_PRECONDITION (CHANGES_EXPIRED). A disabled webhook stays disabled.
   */
  redeliver(id: string, afterSequence: ChangeSequence, opts?: CallOptions): Promise<RedeliverResult>;
}

function webhooksOf(transport: Transport): Webhooks {
  const rpc = createConnectClient(WebhookService, transport);
  return {
    create: (webhook, o) => call(() => rpc.createWebhook({ webhook }, o)),
    get: (id, o) => call(() => rpc.getWebhook({ id }, o)),
    list: (params = {}, o) =>
      call(async () => {
        const res = await rpc.listWebhooks({ pageSize: params.pageSize ?? 0, pageToken: params.pageToken ?? "" }, o);
        return { items: res.webhooks, nextPageToken: res.nextPageToken };
      }),
    update: (webhook, updateMask, o) =>
      call(() => rpc.updateWebhook({ webhook, ...(updateMask ? { updateMask: { paths: updateMask } } : {}) }, o)),
    delete: (id, o) =>
      call(async () => {
        await rpc.deleteWebhook({ id }, o);
      }),
    listDeliveries: (id, params = {}, o) =>
      call(async () => {
        const res = await rpc.listWebhookDeliveries(
          { id, pageSize: params.pageSize ?? 0, pageToken: params.pageToken ?? "" },
          o,
        );
        return { items: res.deliveries, nextPageToken: res.nextPageToken };
      }),
    redeliver: (id, afterSequence, o) =>
      call(async () => {
        const res = await rpc.redeliverWebhook({ id, afterSequence: BigInt(afterSequence) }, o);
        return { afterSequence: res.afterSequence, latestSequence: res.latestSequence };
      }),
  };
}

// ---------------------------------------------------------------- field definitions

/** What `fieldDefinitions.check` returns. */
export interface FieldDefinitionCheck {
  /**
   * How many live records violate the definition (wrong type, outside the
   * options or bounds, too long, missing where required, sharing a value
   * where unique); 0: the create or update would succeed.
   */
  violatingRecords: bigint;
  /** Up to 20 of those records' ids. */
  sampleRecordIds: string[];
}

/**
 * The tenant's custom-field definitions (see FieldDefinitionService in the
 * protos): the typed schema of the `customFields` of a resource type
 * (account, contact, deal, activity, quote). Once a key is defined, every
 * write of that type checks `customFields.<key>` against it; a definition
 * that live records would violate is refused (create, or an update that
 * admits less) with CrmError FAILED_PRECONDITION (FIELD_DEFINITION_CONFLICT,
 * `metadata.violating_records`): `check` first to see them.
 */
export interface FieldDefinitions {
  /**
   * Defines a custom field: `resourceType`, `key` and `type` (string,
   * number, integer, boolean, date, datetime, enum, multi_enum) are required
   * and never change. A key already defined for the type is CrmError
   * ALREADY_EXISTS; invalid fields, INVALID_ARGUMENT naming
   * `field_definition.<field>`.
   */
  create(definition: FieldDefinitionInput, opts?: CallOptions): Promise<FieldDefinition>;
  get(id: string, opts?: CallOptions): Promise<FieldDefinition>;
  /** One page, by resource type then key; `resourceType` absent/empty: all. `pageSize` 0/absent: 100, at most 1000. */
  list(
    params?: { pageSize?: number; pageToken?: string; resourceType?: string },
    opts?: CallOptions,
  ): Promise<{ items: FieldDefinition[]; nextPageToken: string }>;
  /**
   * Updates the fields of `updateMask` (label, description, options,
   * required, unique, maxLength, minimum, maximum; snake_case or camelCase),
   * or those `definition` sets; a non-zero `version` that differs is
   * CrmError ABORTED. A mask path naming a field absent from `definition`
   * clears it (e.g. `["maximum"]` removes the bound).
   */
  update(definition: FieldDefinitionInput & { id: string }, updateMask?: string[], opts?: CallOptions): Promise<FieldDefinition>;
  /** Deletes the definition; the records keep their values (free-form again). */
  delete(id: string, opts?: CallOptions): Promise<void>;
  /**
   * A dry run of `create` (no `id` in `definition`) or of `update` (`id` set,
   * with `updateMask` as there): how many live records would violate the
   * definition, and some of them. Nothing changes.
   */
  check(definition: FieldDefinitionInput, updateMask?: string[], opts?: CallOptions): Promise<FieldDefinitionCheck>;
}

function fieldDefinitionsOf(transport: Transport): FieldDefinitions {
  const rpc = createConnectClient(FieldDefinitionService, transport);
  const masked = (updateMask: string[] | undefined) =>
    updateMask ? { updateMask: { paths: updateMask.map(toProtoPath) } } : {};
  return {
    create: (fieldDefinition, o) => call(() => rpc.createFieldDefinition({ fieldDefinition }, o)),
    get: (id, o) => call(() => rpc.getFieldDefinition({ id }, o)),
    list: (params = {}, o) =>
      call(async () => {
        const res = await rpc.listFieldDefinitions(
          {
            pageSize: params.pageSize ?? 0,
            pageToken: params.pageToken ?? "",
            resourceType: params.resourceType ?? "",
          },
          o,
        );
        return { items: res.fieldDefinitions, nextPageToken: res.nextPageToken };
      }),
    update: (fieldDefinition, updateMask, o) =>
      call(() => rpc.updateFieldDefinition({ fieldDefinition, ...masked(updateMask) }, o)),
    delete: (id, o) =>
      call(async () => {
        await rpc.deleteFieldDefinition({ id }, o);
      }),
    check: (fieldDefinition, updateMask, o) =>
      call(async () => {
        const res = await rpc.checkFieldDefinition({ fieldDefinition, ...masked(updateMask) }, o);
        return { violatingRecords: res.violatingRecords, sampleRecordIds: res.sampleRecordIds };
      }),
  };
}

// ---------------------------------------------------------------- history and erasure

/** The REST collection of a record kind: what `history` and `erasure` take to name its type. */
export type RecordCollection = "accounts" | "contacts" | "deals" | "activities" | "quotes" | "line-items";

/**
 * One field's change in one version of a record: a crm.v1.HistoryEntry with
 * its values as JSON, as the REST API's get returns the field (proto3 JSON:
 * timestamps as RFC 3339 strings; a `custom_fields.<key>` as stored).
 */
export interface FieldChange {
  /** The proto field name (`stage`, `value`, `legal_name`), or `custom_fields.<key>`. */
  field: string;
  /** The value before the change; null when the field was unset or empty (and on create). */
  oldValue: JsonValue;
  /** The value after the change; null when the change cleared it. */
  newValue: JsonValue;
  /** The record's version the change produced. */
  recordVersion: number;
  /**
   * When: the record's `updatedAt` of that version (exact; pass it to
   * `history.at` to see the record as that version left it).
   */
  changedAt: Timestamp | undefined;
  /** Who: the `sub` of the token that made the write (for a side effect, the writer whose write caused it). */
  changedBy: string;
  /** The record's app (as on its change events); "" for records a person's token created. */
  appId: string;
  /** The write's request_id ("" when it had none). */
  requestId: string;
}

export interface HistoryListParams {
  /** 0/absent: 100; above 1000 is taken as 1000; negative is CrmError INVALID_ARGUMENT. */
  pageSize?: number;
  /** nextPageToken of the previous page (asked with the same record and `fields`). */
  pageToken?: string;
  /**
   * Only the changes of these fields (snake_case or camelCase: "legal_name" /
   * "legalName", or "custom_fields.<key>"); absent/empty: all. At most 100;
   * a name that is not a field of the type is CrmError INVALID_ARGUMENT
   * (`fields[i]`).
   */
  fields?: string[];
}

/**
 * Field history (see HistoryService in the protos): every change to every
 * field of every record, one entry per field a write changed (the client's
 * fields, the ones the server maintains such as `version`, `updated_at`,
 * rollups, and each `custom_fields.<key>`). A record's history is visible
 * exactly as the record is to `get`: another tenant's record, or an unknown
 * id, is CrmError NOT_FOUND; soft-deleted records keep and show theirs.
 */
export interface RecordHistory {
  /** One page of the record's changes, newest first: by record version descending, then by field name. */
  list(
    collection: RecordCollection,
    id: string,
    params?: HistoryListParams,
    opts?: CallOptions,
  ): Promise<Page<FieldChange>>;
  /** Every change of the record across all pages, newest first, fetched page by page. */
  listAll(
    collection: RecordCollection,
    id: string,
    params?: Omit<HistoryListParams, "pageToken">,
    opts?: CallOptions,
  ): AsyncIterable<FieldChange>;
  /**
   * The record as it was at `time` (a Date, or a Timestamp such as a
   * change's `changedAt`, exact to the microsecond), shaped exactly like
   * `get`'s proto3 JSON (`{ id, name, version, customFields, ... }`).
   * Before the record was created: CrmError NOT_FOUND. Changes made before
   * history was kept are not undone.
   */
  at(collection: RecordCollection, id: string, time: Date | Timestamp, opts?: CallOptions): Promise<JsonObject>;
}

/** The row counts of `erasure.purge`, per kind (int64 as bigint, as elsewhere). */
export type ErasedCounts = Record<string, bigint>;

/**
 * Erasure of records for good (see ErasureService in the protos): a data
 * subject's request (GDPR art. 17, CCPA). Needs a token whose `scope` claim
 * contains `crm:purge` (`crm token --scope crm:purge`); never implied by
 * other scopes or a token without the claim: otherwise CrmError
 * PERMISSION_DENIED, reason MISSING_SCOPE, `metadata.required_scope`.
 */
export interface Erasure {
  /**
   * Erases the record and every copy of its values in one transaction: the
   * row, its history, the stored responses of idempotent writes that
   * returned it, its change events' record (a `purged` event is added), and
   * its copies in other records (reference lists and optional references
   * cleared, a quote's line-item summary recomputed). Live children (an
   * account's contacts, deals, quotes and activities; a deal's quotes and
   * activities; a contact's activities; a quote's line items) make it
   * CrmError FAILED_PRECONDITION (HAS_CHILDREN) unless `cascade` is true,
   * which erases them (and theirs) too. Returns the rows erased or
   * rewritten per kind: `records`, `history`, `history_rewritten`,
   * `change_events`, `idempotent_responses`, `references`,
   * `relayed_messages`.
   */
  purge(
    collection: RecordCollection,
    id: string,
    params?: { cascade?: boolean },
    opts?: CallOptions,
  ): Promise<ErasedCounts>;
}

const jsonOf = (v: Value | undefined): JsonValue => (v ? toJson(ValueSchema, v) : null);

function fieldChange(e: HistoryEntry): FieldChange {
  return {
    field: e.field,
    oldValue: jsonOf(e.oldValue),
    newValue: jsonOf(e.newValue),
    recordVersion: e.recordVersion,
    changedAt: e.changedAt,
    changedBy: e.changedBy,
    appId: e.appId,
    requestId: e.requestId,
  };
}

function historyOf(transport: Transport): RecordHistory {
  const rpc = createConnectClient(HistoryService, transport);
  const list = async (collection: string, id: string, params: HistoryListParams, o?: CallOptions) => {
    const res = await rpc.listRecordHistory(
      {
        collection,
        id,
        pageSize: params.pageSize ?? 0,
        pageToken: params.pageToken ?? "",
        fields: (params.fields ?? []).map(toProtoPath),
      },
      o,
    );
    return { items: res.entries.map(fieldChange), nextPageToken: res.nextPageToken };
  };
  return {
    list: (collection, id, params = {}, o) => call(() => list(collection, id, params, o)),
    async *listAll(collection, id, params = {}, o) {
      let pageToken = "";
      do {
        const page = await call(() => list(collection, id, { ...params, pageToken }, o));
        yield* page.items;
        pageToken = page.nextPageToken;
      } while (pageToken !== "");
    },
    at: (collection, id, time, o) =>
      call(async () => {
        const res = await rpc.getRecordAt(
          { collection, id, time: time instanceof Date ? timestampFromDate(time) : time },
          o,
        );
        return toJson(StructSchema, res) as JsonObject;
      }),
  };
}

function erasureOf(transport: Transport): Erasure {
  const rpc = createConnectClient(ErasureService, transport);
  return {
    purge: (collection, id, params = {}, o) =>
      call(async () => {
        const res = await rpc.purgeRecord({ collection, id, cascade: params.cascade ?? false }, o);
        return { ...res.erased };
      }),
  };
}

// ---------------------------------------------------------------- client

export interface ClientOptions {
  /**
   * Node (createClient): the gRPC endpoint, e.g. "http://127.0.0.1:50051" (h2c)
   * or "https://crm.example.com". Browser (createWebClient): the origin of the
   * HTTP port, which serves gRPC-Web, e.g. `location.origin`.
   */
  baseUrl: string;
  /** Bearer JWT, or a function returning one per call (for refresh). */
  token?: string | (() => string | Promise<string>);
  /** Default deadline per call in ms (none by default). */
  timeoutMs?: number;
  /** Extra Connect interceptors (run after the auth one). */
  interceptors?: Interceptor[];
  /** Use your own transport instead (baseUrl/token/timeoutMs/interceptors are then ignored). */
  transport?: Transport;
}

export interface CrmClient {
  customer: {
    accounts: Resource<Account, AccountInput>;
    contacts: Resource<Contact, ContactInput>;
    deals: Resource<Deal, DealInput>;
    /** Activities are append-only: list, get, create, batchGet, batchCreate. */
    activities: ReadCreateResource<Activity, ActivityInput>;
    quotes: Resource<Quote, QuoteInput>;
    lineItems: Resource<LineItem, LineItemInput>;
  };
  /** The tenant's change feed: every committed change, in one gapless sequence. */
  changes: Changes;
  /** The tenant's webhooks. */
  webhooks: Webhooks;
  /** The tenant's custom-field definitions (the schema of `customFields`). */
  fieldDefinitions: FieldDefinitions;
  /** Field history: each record's changes, newest first, and the record as it was at an instant. */
  history: RecordHistory;
  /** Erasure for good (`purge`; needs a token with the `crm:purge` scope). */
  erasure: Erasure;
  /** The Connect transport (for calling the generated services directly). */
  transport: Transport;
  /** Closes the HTTP/2 connection (a no-op with a custom transport, and in a browser). */
  close(): void;
}


/**
 * The interceptor sending `authorization: Bearer <token>` (nothing when
 * `token` is undefined). Shared by the entries.
 * @internal
 */
export function authInterceptor(token: ClientOptions["token"]): Interceptor {
  return (next) => async (req) => {
    if (token !== undefined) {
      const t = typeof token === "function" ? await token() : token;
      req.header.set("authorization", `Bearer ${t}`);
    }
    return next(req);
  };
}

/**
 * A CrmClient over `transport`; `close` is its close(). Shared by the entries.
 * @internal
 */
export function clientOf(transport: Transport, close: () => void = () => {}): CrmClient {
  const t = transport;
  return {
    customer: {
      accounts: resource(opsOf<Account, AccountInput>(AccountService, t)),
      contacts: resource(opsOf<Contact, ContactInput>(ContactService, t)),
      deals: resource(opsOf<Deal, DealInput>(DealService, t)),
      activities: readCreate(opsOf<Activity, ActivityInput>(ActivityService, t)),
      quotes: resource(opsOf<Quote, QuoteInput>(QuoteService, t)),
      lineItems: resource(opsOf<LineItem, LineItemInput>(LineItemService, t)),
    },
    changes: changesOf(t),
    webhooks: webhooksOf(t),
    fieldDefinitions: fieldDefinitionsOf(t),
    history: historyOf(t),
    erasure: erasureOf(t),
    transport: t,
    close,
  };
}
