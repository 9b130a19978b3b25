// The TypeScript client against a server with caller keys on (AIGC_API_KEYS): the key from
// `apiKey` or AIGC_API_KEY goes out as `authorization: Bearer <key>`; without one, the
// error's reason is API_KEY_MISSING.
//
//   node --test tests/clients/typescript/
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";

import { AigcClient, AigcError, Role } from "@aigc/client";

import { startServer } from "./server.mjs";

const TIMEOUT = { timeout: 120_000 };
const KEY = `aigc-${randomBytes(32).toString("base64url")}`;
const HI = { messages: [{ role: Role.USER, content: "hi" }], generationConfig: { maxOutputTokens: 2 } };

describe("caller keys", () => {
  let server;
  before(async () => {
    const digest = createHash("sha256").update(KEY).digest("hex");
    server = await startServer({ env: { AIGC_API_KEYS: `ts-test:${digest}` }, apiKey: KEY });
  }, TIMEOUT);
  after(async () => server?.stop());

  test("apiKey is sent as a bearer token", TIMEOUT, async () => {
    const client = new AigcClient({ address: server.address, apiKey: KEY });
    try {
      const reply = await client.chat(HI);
      assert.ok(reply.usage.completionTokens >= 1);
    } finally {
      client.close();
    }
  });

  test("without a key: UNAUTHENTICATED, API_KEY_MISSING", TIMEOUT, async () => {
    const client = new AigcClient({ address: server.address, apiKey: "" });
    try {
      await assert.rejects(client.chat(HI), (error) => {
        assert.ok(error instanceof AigcError);
        assert.equal(error.codeName, "UNAUTHENTICATED");
        assert.equal(error.reason, "API_KEY_MISSING");
        return true;
      });
    } finally {
      client.close();
    }
  });

  test("AIGC_API_KEY is the default", TIMEOUT, async () => {
    process.env.AIGC_API_KEY = KEY;
    const client = new AigcClient({ address: server.address });
    try {
      assert.ok((await client.listModels({})).models.length >= 1);
    } finally {
      delete process.env.AIGC_API_KEY;
      client.close();
    }
  });
});
