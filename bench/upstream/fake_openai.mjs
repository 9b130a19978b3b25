// A fake OpenAI-protocol upstream that is never the bottleneck of `make bench`.
//
//   node bench/upstream/fake_openai.mjs [--port 0] [--chunks 20] [--first-token-ms 0]
//                                       [--chunk-gap-ms 0]
//
// POST /v1/chat/completions answers like OpenAI: one JSON body, or, with
// `"stream": true`, SSE: a role chunk, `chunks` content chunks, a finish chunk,
// the usage chunk with empty `choices` when `stream_options.include_usage`,
// then `data: [DONE]`. The first content arrives after first-token-ms, each
// next one chunk-gap-ms later. A request can override those three defaults in
// its `model`: "fake@chunks=5,first_ms=0,gap_ms=2000" (the bench's AIGC_CONFIG
// maps one gateway model to such a name, so one upstream serves every profile).
// GET /stats gives {open, max_open, unary, streams, connections}; `?reset=1`
// restarts max_open. It prints `listening PORT` once it listens.
//
// Why Node: its http module is a whole HTTP/1.1 server (keep-alive, chunked,
// backpressure) with nothing to install, answers ~17k unary / ~10k streamed
// requests per second on one core, and holds thousands of slow streams on
// timers for almost no CPU (bench/README.md has the comparison with asyncio).
import http from "node:http";
import { parseArgs } from "node:util";

const { values: opts } = parseArgs({
  options: {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "0" },
    chunks: { type: "string", default: "20" },
    "first-token-ms": { type: "string", default: "0" },
    "chunk-gap-ms": { type: "string", default: "0" },
  },
});
const DEFAULTS = {
  chunks: Number(opts.chunks),
  first_ms: Number(opts["first-token-ms"]),
  gap_ms: Number(opts["chunk-gap-ms"]),
};
const CREATED = 1764000000;
const FINGERPRINT = "fp_bench";
const stats = { open: 0, max_open: 0, unary: 0, streams: 0, connections: 0 };
let counter = 0;

// "name@chunks=5,gap_ms=10" -> the defaults with those keys replaced.
const profiles = new Map();
function profile(model) {
  let found = profiles.get(model);
  if (found) return found;
  found = { ...DEFAULTS };
  const at = model.indexOf("@");
  if (at >= 0) {
    for (const pair of model.slice(at + 1).split(",")) {
      const [key, value] = pair.split("=");
      if (key in found && Number.isFinite(Number(value))) found[key] = Number(value);
    }
  }
  profiles.set(model, found);
  return found;
}

// The same short word per chunk: the gateway's work per chunk is what we
// measure, not the size of the text.
const piece = (i) => (i === 0 ? "Hello" : ` w${i}`);
const usageOf = (chunks) => ({ prompt_tokens: 9, completion_tokens: chunks, total_tokens: 9 + chunks });

function chunk(id, model, delta, finish, withUsage) {
  const body = {
    id,
    object: "chat.completion.chunk",
    created: CREATED,
    model,
    system_fingerprint: FINGERPRINT,
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
  };
  if (withUsage) body.usage = null; // OpenAI sends usage: null on every chunk but the last
  return `data: ${JSON.stringify(body)}\n\n`;
}

function unary(res, id, model, p) {
  let text = "";
  for (let i = 0; i < p.chunks; i++) text += piece(i);
  const body = JSON.stringify({
    id,
    object: "chat.completion",
    created: CREATED,
    model,
    system_fingerprint: FINGERPRINT,
    choices: [
      { index: 0, message: { role: "assistant", content: text, refusal: null }, logprobs: null, finish_reason: "stop" },
    ],
    usage: usageOf(p.chunks),
  });
  const send = () => {
    stats.unary++;
    res.writeHead(200, { "content-type": "application/json", "x-request-id": `req_${id}` });
    res.end(body);
  };
  const wait = p.first_ms + Math.max(0, p.chunks - 1) * p.gap_ms;
  if (wait > 0) setTimeout(send, wait);
  else send();
}

function stream(res, id, model, p, withUsage) {
  // Events are made as they are sent: a held stream may be thousands of chunks long.
  const role = () => chunk(id, model, { role: "assistant", content: "", refusal: null }, null, withUsage);
  const content = (i) => chunk(id, model, { content: piece(i) }, null, withUsage);
  const tail = () => {
    let out = chunk(id, model, {}, "stop", withUsage);
    if (withUsage) {
      const last = { id, object: "chat.completion.chunk", created: CREATED, model, system_fingerprint: FINGERPRINT };
      out += `data: ${JSON.stringify({ ...last, choices: [], usage: usageOf(p.chunks) })}\n\n`;
    }
    return `${out}data: [DONE]\n\n`;
  };

  stats.streams++;
  stats.open++;
  stats.max_open = Math.max(stats.max_open, stats.open);
  let timer = null;
  let closed = false;
  res.on("close", () => {
    // Finished, or the caller went away (a cancelled gateway stream): stop the timers.
    closed = true;
    stats.open--;
    clearTimeout(timer);
  });
  res.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-request-id": `req_${id}`,
  });
  if (p.first_ms === 0 && p.gap_ms === 0) {
    // Zero delay: one write, the cheapest way to say it all.
    let all = role();
    for (let i = 0; i < p.chunks; i++) all += content(i);
    res.end(all + tail());
    return;
  }
  // The role chunk goes with the first content chunk at first_ms, each later
  // content chunk gap_ms after the one before, the tail (finish, usage, DONE)
  // with the last.
  let next = 0;
  const step = () => {
    if (closed) return;
    let out = next === 0 ? role() : "";
    out += content(next++);
    if (next >= p.chunks) res.end(out + tail());
    else {
      res.write(out);
      timer = setTimeout(step, p.gap_ms);
    }
  };
  timer = setTimeout(step, p.first_ms);
}

const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url.startsWith("/stats")) {
    const body = JSON.stringify(stats);
    if (req.url.includes("reset=1")) stats.max_open = stats.open;
    res.writeHead(200, { "content-type": "application/json" });
    res.end(body);
    return;
  }
  if (req.method === "GET" && req.url === "/health") {
    // vllm-router (a peer in the bench) checks its workers here before it serves.
    res.writeHead(200, { "content-type": "application/json" });
    res.end("{}");
    return;
  }
  if (req.method !== "POST" || req.url !== "/v1/chat/completions") {
    res.writeHead(404, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: { message: `no route ${req.method} ${req.url}`, type: "invalid_request_error" } }));
    return;
  }
  const parts = [];
  req.on("data", (part) => parts.push(part));
  req.on("end", () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(parts).toString("utf8"));
    } catch {
      res.writeHead(400, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { message: "body is not JSON", type: "invalid_request_error" } }));
      return;
    }
    const model = String(body.model ?? "fake");
    const id = `chatcmpl-${(++counter).toString(36)}`;
    const p = profile(model);
    if (body.stream === true) stream(res, id, model, p, body.stream_options?.include_usage === true);
    else unary(res, id, model, p);
  });
});
// Long keep-alive: the gateway's connection pool reuses connections across
// scenarios; Node's 5 s default would close them between two runs and cost
// the first requests a reconnect (or a stale-connection retry).
server.keepAliveTimeout = 300_000;
server.on("connection", () => stats.connections++);
server.headersTimeout = 0;
server.requestTimeout = 0;
server.maxHeadersCount = 0;
server.listen(Number(opts.port), opts.host, () => {
  console.log(`listening ${server.address().port}`);
});
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
