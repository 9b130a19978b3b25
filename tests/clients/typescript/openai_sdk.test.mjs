// The official `openai` npm SDK against the OpenAI-compatible door of the real server
// (AIGC_OPENAI_ADDRESS; through Envoy it is :8000/openai/v1), with the local model:
// unary, streaming with usage, a tool call, and errors as the SDK's own classes carrying
// our status, reason and message.
//
//   node --test tests/clients/typescript/
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import OpenAI from "openai";

import { freePort, startServer } from "./server.mjs";

const TIMEOUT = { timeout: 120_000 };
const MODEL = "smollm2";
const WEATHER = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Current weather in a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};

describe("openai npm SDK -> /openai/v1", () => {
  let server;
  let client;

  before(async () => {
    const port = await freePort();
    server = await startServer({ env: { AIGC_OPENAI_ADDRESS: `127.0.0.1:${port}` } });
    // Any key works while authentication is off; the SDK insists on one.
    client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/openai/v1`, apiKey: "unused", maxRetries: 0 });
  }, TIMEOUT);

  after(async () => {
    await server?.stop();
  });

  test("unary chat", TIMEOUT, async () => {
    const reply = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: "user", content: "Say hello." }],
      max_tokens: 12,
      temperature: 0,
    });
    assert.equal(reply.object, "chat.completion");
    assert.equal(reply.model, MODEL);
    assert.ok(reply.choices[0].message.content.length > 0);
    assert.ok(["stop", "length"].includes(reply.choices[0].finish_reason));
    assert.equal(reply.usage.total_tokens, reply.usage.prompt_tokens + reply.usage.completion_tokens);
  });

  test("streaming with usage folds to the unary answer", TIMEOUT, async () => {
    const options = {
      model: MODEL,
      messages: [{ role: "user", content: "Name three colours." }],
      max_tokens: 24,
      temperature: 0,
      seed: 7,
    };
    const unary = await client.chat.completions.create(options);
    const stream = await client.chat.completions.create({
      ...options,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    const text = chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("");
    assert.equal(text, unary.choices[0].message.content);
    assert.ok(chunks.filter((c) => c.choices[0]?.delta?.content).length > 3, "it streamed");
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, []);
    assert.equal(last.usage.completion_tokens, unary.usage.completion_tokens);
  });

  test("a required tool call", TIMEOUT, async () => {
    const reply = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: "user", content: "What is the weather in Paris?" }],
      tools: [WEATHER],
      tool_choice: "required",
      max_tokens: 64,
      temperature: 0,
    });
    const [call] = reply.choices[0].message.tool_calls;
    assert.equal(reply.choices[0].finish_reason, "tool_calls");
    assert.equal(call.function.name, "get_weather");
    assert.equal(typeof JSON.parse(call.function.arguments), "object");
  });

  test("errors are the SDK's classes with our status, reason and message", TIMEOUT, async () => {
    const missing = await client.chat.completions
      .create({ model: "no-such-model", messages: [{ role: "user", content: "hi" }] })
      .catch((error) => error);
    assert.ok(missing instanceof OpenAI.NotFoundError, `got ${missing}`);
    assert.equal(missing.status, 404);
    assert.equal(missing.code, "MODEL_NOT_FOUND");
    assert.match(missing.message, /no-such-model/);
    assert.ok(missing.requestID, "the request id is the x-request-id header");
    assert.equal(missing.error.status.details[0].metadata.request_id, missing.requestID);

    const bad = await client.chat.completions
      .create({ model: MODEL, messages: [{ role: "user", content: "hi" }], temperature: 9 })
      .catch((error) => error);
    assert.ok(bad instanceof OpenAI.BadRequestError, `got ${bad}`);
    assert.equal(bad.code, "INVALID_REQUEST");
    assert.equal(bad.param, "generation_config.temperature");
  });
});
