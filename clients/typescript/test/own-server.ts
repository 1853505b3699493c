// A crm server of a test's own (`$CRM_BIN serve --dev` on a scratch database
// in CRM_TEST_PG's cluster, dropped afterwards as with-server.sh does), for
// tests that need to stop a server or to run one with other settings.
import { execFileSync, spawn } from "node:child_process";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

// dist/test/own-server.js -> repo root is four levels up.
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");
export const crmBin = process.env.CRM_BIN || resolve(repoRoot, "target/debug/crm");
const pgBase = process.env.CRM_TEST_PG || "postgres://postgres@127.0.0.1:5432";

/**
 * A crm server of the test's own on database `db` (created by the server if
 * missing), on free ports, with `env` added to its environment; `stop()`
 * sends SIGTERM and waits for the exit.
 */
export async function ownServer(
  db: string,
  env: Record<string, string> = {},
): Promise<{ grpc: string; stop(): Promise<void> }> {
  const child = spawn(crmBin, ["serve", "--dev"], {
    env: {
      ...process.env,
      DATABASE_URL: `${pgBase}/${db}`,
      CRM_GRPC_ADDR: "127.0.0.1:0",
      CRM_HTTP_ADDR: "127.0.0.1:0",
      CRM_LOG_FORMAT: "json",
      CRM_CHANGES_HEARTBEAT_SECS: "1",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  let log = "";
  const addr = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`crm serve did not start within 60 s:\n${log}`)), 60_000);
    const read = (chunk: Buffer) => {
      if (log.length > 1_000_000) return; // keep draining the pipes, stop keeping the text
      log += chunk;
      const m = /"grpc":"([0-9.]+:[0-9]+)"/.exec(log);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    };
    child.stdout!.on("data", read);
    child.stderr!.on("data", read);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`crm serve exited (${code}):\n${log}`));
    });
  });
  return {
    grpc: addr,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      await exited;
    },
  };
}

/** Drops a scratch database and its (cluster-wide) roles, as with-server.sh does. */
export function dropDatabase(db: string): void {
  const psql = (url: string, sql: string) =>
    execFileSync("psql", [url, "-tAc", sql], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  let roles = "";
  try {
    roles = psql(`${pgBase}/${db}`, "SELECT array_to_string(crm_roles(), ',')");
  } catch {
    // no database (the server never got that far)
  }
  psql(`${pgBase}/postgres`, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  if (/^[a-z0-9_]+(,[a-z0-9_]+)*$/.test(roles)) psql(`${pgBase}/postgres`, `DROP ROLE IF EXISTS ${roles}`);
}
