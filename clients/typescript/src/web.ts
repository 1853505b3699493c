// The browser entry of @crm/client ("@crm/client/web"): the client of
// src/core.ts over Connect's gRPC-Web transport (fetch). crm serves gRPC-Web
// on its HTTP port, without CORS: call it from a page of the same origin.
//
//   import { createWebClient, CrmError } from "@crm/client/web";
//   const client = createWebClient({ baseUrl: location.origin, token });
//   const { items } = await client.customer.accounts.list({ pageSize: 20 });
import { createGrpcWebTransport } from "@connectrpc/connect-web";

import { authInterceptor, clientOf, type ClientOptions, type CrmClient } from "./core.js";

// Everything transport-independent: CrmError, the options and resource types,
// isTransient, toProtoPath, and the generated record types and services.
export * from "./core.js";

/**
 * The options of createWebClient: those of createClient, with `baseUrl` the
 * origin of crm's HTTP port (e.g. `location.origin`), not the gRPC port.
 */
export type WebClientOptions = ClientOptions;

/**
 * A CrmClient over gRPC-Web (binary protobuf, fetch), with the same API as
 * the Node client's. Its close() is a no-op (fetch holds no connection of
 * its own); abort a call or a watch with its `signal`.
 */
export function createWebClient(options: WebClientOptions): CrmClient {
  if (options.transport) return clientOf(options.transport);
  const transport = createGrpcWebTransport({
    baseUrl: options.baseUrl,
    useBinaryFormat: true,
    interceptors: [authInterceptor(options.token), ...(options.interceptors ?? [])],
    ...(options.timeoutMs !== undefined ? { defaultTimeoutMs: options.timeoutMs } : {}),
  });
  return clientOf(transport);
}
