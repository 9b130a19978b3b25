// The TypeScript client (clients/typescript, built to dist/ by `make test-ts`)
// against the real server with the built-in local model, over real gRPC.
//
//   node --test tests/clients/typescript/
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  AigcClient,
  AigcError,
  Capability,
  ChatFolder,
  Code,
  ConnectError,
  DOMAIN,
  ErrorInfoSchema,
  FinishReason,
  ResponseFormat_Type,
  Role,
  textOf,
  ToolChoice_Mode,
} from "@aigc/client";

import { startServer } from "./server.mjs";

const TIMEOUT = { timeout: 120_000 };
const PNG = Buffer.from(
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==",
  "base64",
);

function ask(text, extra = {}) {
  return {
    messages: [{ role: Role.USER, content: text }],
    generationConfig: { maxOutputTokens: 24, temperature: 0, seed: 7n },
    ...extra,
  };
}

/** Runs `call`, which must fail; returns the AigcError. */
async function failure(call) {
  try {
    await call();
  } catch (error) {
    assert.ok(error instanceof AigcError, `expected an AigcError, got ${error}`);
    assert.ok(error instanceof ConnectError, "an AigcError is a ConnectError");
    return error;
  }
  assert.fail("the call succeeded");
}

describe("TypeScript client against the real server", () => {
  let server;
  let client;

  before(async () => {
    server = await startServer();
    client = new AigcClient({ address: server.address, defaultTimeoutMs: 60_000 });
  }, TIMEOUT);

  after(async () => {
    client?.close();
    await server?.stop();
  });

  test("listModels shows the local model and its capabilities", TIMEOUT, async () => {
    const models = await client.allModels();
    const local = models.find((model) => model.id === "smollm2");
    assert.ok(local, `no smollm2 in ${models.map((m) => m.id)}`);
    assert.equal(local.provider, "local");
    assert.ok(local.isDefault && local.ready);
    assert.ok(local.capabilities.includes(Capability.JSON_SCHEMA));
    assert.ok(!local.capabilities.includes(Capability.VISION));
  });

  test("unary chat", TIMEOUT, async () => {
    const answer = await client.chat(ask("Say hello in French."));
    assert.equal(answer.model, "smollm2");
    assert.equal(answer.provider, "local");
    assert.ok(answer.id);
    assert.equal(answer.message?.role, Role.ASSISTANT);
    assert.ok(textOf(answer).length > 0, "the answer has text");
    assert.ok([FinishReason.STOP, FinishReason.MAX_TOKENS].includes(answer.finishReason));
    const usage = answer.usage;
    assert.ok(usage && usage.completionTokens > 0 && usage.promptTokens > 0);
    assert.equal(usage.totalTokens, usage.promptTokens + usage.completionTokens);
  });

  test("a stream folded: deltas in part order, finish and usage on the last message only", TIMEOUT, async () => {
    const request = ask("Tell me about the sea.");
    const messages = [];
    const folder = new ChatFolder();
    for await (const message of client.streamChat(request)) {
      messages.push(message);
      folder.add(message);
    }
    assert.ok(messages.length >= 3, `only ${messages.length} stream messages`);
    const last = messages.at(-1);
    const deltas = messages.slice(0, -1);
    for (const message of deltas) {
      assert.equal(message.finishReason, FinishReason.UNSPECIFIED);
      assert.equal(message.usage, undefined);
      assert.ok(message.message.parts.length > 0);
    }
    // Parts start in index order: the first delta of part i comes after part i-1's.
    let seen = -1;
    for (const part of deltas.flatMap((message) => message.message.parts)) {
      assert.ok(part.index <= seen + 1, `part ${part.index} started before part ${seen + 1}`);
      seen = Math.max(seen, part.index);
    }
    assert.equal(last.message, undefined, "the last message has no parts");
    assert.notEqual(last.finishReason, FinishReason.UNSPECIFIED);
    assert.ok(last.usage && last.usage.completionTokens > 0);
    assert.equal(new Set(messages.map((message) => message.id)).size, 1, "one id for the whole stream");

    const folded = folder.response();
    assert.equal(folded.finishReason, last.finishReason);
    assert.deepEqual(folded.usage, last.usage);
    assert.equal(textOf(folded), deltas.map((message) => textOf(message)).join(""));
    // Folding gives the unary answer (temperature 0 and a seed: the same tokens).
    const unary = await client.chat(request);
    assert.equal(textOf(folded), textOf(unary));
    assert.equal(folded.usage.completionTokens, unary.usage.completionTokens);
  });

  test("a streamed tool call folds into one call with JSON arguments", TIMEOUT, async () => {
    const request = ask("What is the weather in Paris?", {
      tools: [
        {
          kind: {
            case: "function",
            value: {
              name: "get_weather",
              description: "Current weather in a city",
              parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
            },
          },
        },
      ],
      toolChoice: { mode: ToolChoice_Mode.REQUIRED },
      generationConfig: { maxOutputTokens: 60, temperature: 0 },
    });
    const answer = await client.streamChatFolded(request);
    assert.equal(answer.finishReason, FinishReason.TOOL_CALLS);
    const calls = answer.message.parts.filter((part) => part.data.case === "toolCall");
    assert.ok(calls.length >= 1);
    const call = calls[0].data.value;
    assert.equal(call.name, "get_weather");
    assert.ok(call.id);
    assert.equal(typeof JSON.parse(call.arguments), "object");
  });

  test("an unknown model is NOT_FOUND with reason MODEL_NOT_FOUND", TIMEOUT, async () => {
    const error = await failure(() => client.chat(ask("hi", { model: "no-such-model" })));
    assert.equal(error.code, Code.NotFound);
    assert.equal(error.codeName, "NOT_FOUND");
    assert.equal(error.reason, "MODEL_NOT_FOUND");
    assert.equal(error.domain, DOMAIN);
    assert.match(error.requestId, /\S/);
    assert.match(error.rawMessage, /no-such-model/);
    assert.match(error.message, /^NOT_FOUND MODEL_NOT_FOUND: /);
    // The same detail, read the plain Connect way.
    const [info] = error.findDetails(ErrorInfoSchema);
    assert.equal(info.reason, "MODEL_NOT_FOUND");
  });

  test("a stream that fails before it starts throws the reason from the iterator", TIMEOUT, async () => {
    const error = await failure(async () => {
      for await (const _ of client.streamChat(ask("hi", { model: "no-such-model" }))) {
        assert.fail("no message expected");
      }
    });
    assert.equal(error.reason, "MODEL_NOT_FOUND");
  });

  test("an image to the local model is INVALID_ARGUMENT, CAPABILITY_NOT_SUPPORTED", TIMEOUT, async () => {
    const request = {
      messages: [
        {
          role: Role.USER,
          parts: [
            { data: { case: "text", value: "What is in this picture?" } },
            { data: { case: "image", value: { mimeType: "image/png", source: { case: "data", value: PNG } } } },
          ],
        },
      ],
    };
    const error = await failure(() => client.chat(request));
    assert.equal(error.code, Code.InvalidArgument);
    assert.equal(error.reason, "CAPABILITY_NOT_SUPPORTED");
    assert.equal(error.errorMetadata.capability, "CAPABILITY_VISION");
    assert.equal(error.errorMetadata.model, "smollm2");
    assert.deepEqual(
      error.fieldViolations.map((violation) => violation.field),
      ["messages[0].parts[1].image"],
    );
  });

  test("a deadline (timeoutMs) ends the call with DEADLINE_EXCEEDED", TIMEOUT, async () => {
    const long = ask("Count from one to five hundred, in words.", {
      generationConfig: { maxOutputTokens: 1000, temperature: 0 },
    });
    for (const call of [
      () => client.chat(long, { timeoutMs: 400 }),
      async () => {
        for await (const _ of client.streamChat(long, { timeoutMs: 400 })) {
          // tokens arrive until the deadline
        }
      },
    ]) {
      const started = performance.now();
      const error = await failure(call);
      const elapsed = performance.now() - started;
      assert.equal(error.code, Code.DeadlineExceeded);
      assert.equal(error.codeName, "DEADLINE_EXCEEDED");
      // The server gives up just before the deadline and says why; if the
      // client's own timer fires first there is no ErrorInfo.
      assert.ok(["UPSTREAM_TIMEOUT", ""].includes(error.reason), error.reason);
      assert.ok(elapsed < 5000, `the call took ${elapsed} ms, not ~400`);
    }
  });

  test("a JSON-schema request answers JSON matching the schema", TIMEOUT, async () => {
    const schema = {
      type: "object",
      properties: {
        name: { type: "string" },
        age: { type: "integer", minimum: 0 },
      },
      required: ["name", "age"],
      additionalProperties: false,
    };
    const answer = await client.chat(
      ask("Describe a made-up person.", {
        responseFormat: { type: ResponseFormat_Type.JSON_SCHEMA, schema },
        generationConfig: { maxOutputTokens: 80, temperature: 0 },
      }),
    );
    assert.equal(answer.finishReason, FinishReason.STOP);
    const person = JSON.parse(textOf(answer));
    assert.deepEqual(Object.keys(person).sort(), ["age", "name"]);
    assert.equal(typeof person.name, "string");
    assert.ok(Number.isInteger(person.age) && person.age >= 0);
  });

  test("complete and streamComplete", TIMEOUT, async () => {
    const request = { prompt: "The capital of France is", generationConfig: { maxOutputTokens: 8, temperature: 0 } };
    const unary = await client.complete(request);
    assert.ok(unary.text.length > 0);
    let text = "";
    let last;
    for await (const message of client.streamComplete(request)) {
      text += message.text;
      last = message;
    }
    assert.equal(text, unary.text);
    assert.notEqual(last.finishReason, FinishReason.UNSPECIFIED);
    assert.ok(last.usage);
  });

  test("leaving a stream early cancels it: the server logs CANCELLED", TIMEOUT, async () => {
    const request = ask("Count from one to five hundred, in words.", {
      generationConfig: { maxOutputTokens: 1000, temperature: 0 },
    });
    const headers = { "x-request-id": `ts-cancel-${Date.now()}` };
    let received = 0;
    for await (const message of client.streamChat(request, { headers })) {
      received += message.message?.parts.length ?? 0;
      if (received >= 3) {
        break;
      }
    }
    assert.equal(received, 3);
    const deadline = Date.now() + 10_000;
    let line;
    while (!line && Date.now() < deadline) {
      line = server
        .log()
        .split("\n")
        .find((entry) => entry.includes(headers["x-request-id"]) && entry.includes('"aigc.access"'));
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.ok(line, "no access log line for the cancelled stream");
    assert.equal(JSON.parse(line).code, "CANCELLED");
    // And the model is free for the next request.
    assert.ok(textOf(await client.chat(ask("Say hi."), { timeoutMs: 30_000 })).length > 0);
  });
});
