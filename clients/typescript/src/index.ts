// The Node entry of @crm/client: the client of src/core.ts over Connect's gRPC
// transport for Node (HTTP/2, also plaintext h2c). Browsers use "@crm/client/web"
// (src/web.ts, gRPC-Web), which does not load node:http2.
//
//   const client = createClient({ baseUrl: "http://127.0.0.1:50051", token: process.env.CRM_TOKEN });
//   const { items, nextPageToken } = await client.customer.accounts.list({ filter: "tags:vip", pageSize: 20 });
//   for await (const a of client.customer.accounts.listAll({ filter: "tags:vip" })) console.log(a.name);
//   for await (const e of client.changes.watch({ afterSequence: 0n })) console.log(e.sequence, e.operation);
//   const [a, b] = await client.customer.accounts.batchCreate([{ name: "A" }, { name: "B" }]);
//   const { record, created } = await client.customer.accounts.upsert({ externalId: "erp-1", name: "A" });
//   const { items } = await client.history.list("deals", deal.id, { fields: ["stage"] });
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

import { authInterceptor, clientOf, type ClientOptions, type CrmClient } from "./core.js";

// Everything transport-independent: CrmError, the options and resource types,
// isTransient, toProtoPath, and the generated record types and services.
export * from "./core.js";

export function createClient(options: ClientOptions): CrmClient {
  if (options.transport) return clientOf(options.transport);
  const session = new Http2SessionManager(options.baseUrl);
  const transport = createGrpcTransport({
    baseUrl: options.baseUrl,
    sessionManager: session,
    interceptors: [authInterceptor(options.token), ...(options.interceptors ?? [])],
    ...(options.timeoutMs !== undefined ? { defaultTimeoutMs: options.timeoutMs } : {}),
  });
  return clientOf(transport, () => session.abort());
}
