// The page side of grpc-web.test.mjs, bundled by esbuild for the browser: the
// TypeScript client's browser entry (clients/typescript/src/web.ts, gRPC-Web
// over fetch), exposed to the page as window.crm.
import { createWebClient, CrmError } from "../../clients/typescript/src/web.ts";

window.crm = { createWebClient, CrmError };
