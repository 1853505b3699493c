// The `prepare` script: compiles dist/ with tsc, so that `npm pack` (and
// `npm ci` / `npm install` here) leave a package whose consumers need no build.
//
// npm also runs `prepare` in this directory, without its devDependencies, when
// another project installs it by path (`npm install /path/to/clients/typescript`,
// linked, or with --install-links, packed): then typescript is missing, so the
// exact locked dependencies are installed here first (`npm ci`, scripts off),
// which is also what a linked install needs at run time.
import { spawnSync } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const npm = process.platform === "win32" ? "npm.cmd" : "npm";
const tsc = join(here, "node_modules", "typescript", "bin", "tsc");

function run(cmd, args, env = process.env) {
  const r = spawnSync(cmd, args, { cwd: here, stdio: "inherit", env, shell: process.platform === "win32" });
  if (r.error) throw r.error;
  if (r.status !== 0) process.exit(r.status ?? 1);
}

if (!existsSync(tsc)) {
  // Not the caller's npm settings (global, omit=dev, save..., install-links):
  // only those about where and how to fetch.
  const keep = /^npm_config_(registry|cache|userconfig|globalconfig|cafile|ca|cert|key|strict_ssl|proxy|https_proxy|noproxy|offline|prefer_offline|prefer_online|fetch_.*|loglevel|@.*:registry|\/\/.*)$/i;
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !/^npm_config_/i.test(k) || keep.test(k)),
  );
  env.NODE_ENV = "development";
  console.error("@crm/client prepare: installing its locked dependencies (npm ci) to compile dist/");
  run(npm, ["ci", "--ignore-scripts", "--include=dev", "--no-audit", "--no-fund"], env);
}

rmSync(join(here, "dist"), { recursive: true, force: true });
run(process.execPath, [tsc, "-p", "tsconfig.json"]);
