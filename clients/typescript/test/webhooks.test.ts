// Webhook definitions through the client, against a real server (see
// batch.test.ts for the environment). The server refuses private targets,
// so these webhooks name a public address literal.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { createClient, CrmError, type CrmClient } from "../src/index.js";

const grpc = process.env.CRM_GRPC;
const token = process.env.CRM_TOKEN;
if (!grpc || !token) throw new Error("CRM_GRPC and CRM_TOKEN must be set (run under scripts/with-server.sh)");

let client: CrmClient;

before(() => {
  client = createClient({ baseUrl: `http://${grpc}`, token, timeoutMs: 15_000 });
});

after(() => client?.close());

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
