// Stream client for `make bench`: time to first byte of every stream, which
// wrk and h2load do not report, and bursts of N streams held open at once.
//
//   node bench/streams.mjs --kind grpc|sse --url URL --body FILE --concurrency C
//        [--duration S]            closed loop: C streams in flight for S seconds
//        [--headers JSON]          extra request headers (sse), e.g. a peer's routing
//        [--burst --hold S]        open C streams at once; once every one has its
//                                  first byte print ALL_OPEN, hold S seconds, cancel all
//
// grpc: URL is http://HOST:PORT/aigc.v1.AigcService/StreamChat, BODY a framed
// request; ceil(C/100) HTTP/2 connections carry the streams (a gRPC channel
// multiplexes; Node's client allows 100 streams per connection by default).
// sse: URL is any POST that answers text/event-stream (the gateway through
// Envoy, or the fake upstream directly), one HTTP/1.1 connection per stream.
// Prints one JSON line (RESULT {...}). Node, not Python: this client runs on
// the load core next to the upstream and must stay cheap at 1,000 streams.
import fs from "node:fs";
import http from "node:http";
import http2 from "node:http2";
import { parseArgs } from "node:util";

const { values: opts } = parseArgs({
  options: {
    kind: { type: "string" },
    url: { type: "string" },
    body: { type: "string" },
    concurrency: { type: "string", default: "10" },
    duration: { type: "string", default: "5" },
    burst: { type: "boolean", default: false },
    hold: { type: "string", default: "2" },
    timeout: { type: "string", default: "60" },
    headers: { type: "string", default: "{}" },
  },
});
const url = new URL(opts.url);
const body = fs.readFileSync(opts.body);
const sseHeaders = { "content-type": "application/json", ...JSON.parse(opts.headers) };
const concurrency = Number(opts.concurrency);
const now = () => Number(process.hrtime.bigint()) / 1e6; // ms

// --- one stream per protocol: calls back onFirst() once, then onEnd(error|null, messages)

const sessions = [];
function session(index) {
  const wanted = Math.ceil(concurrency / 100);
  const slot = index % wanted;
  if (!sessions[slot] || sessions[slot].destroyed || sessions[slot].closed) {
    sessions[slot] = http2.connect(url.origin, { maxSessionMemory: 64 });
    sessions[slot].on("error", () => {}); // reported per stream
  }
  return sessions[slot];
}

function grpcStream(index, onFirst, onEnd) {
  const s = session(index).request({
    ":method": "POST",
    ":path": url.pathname,
    "content-type": "application/grpc",
    te: "trailers",
  });
  let first = true;
  let messages = 0;
  let pending = 0; // bytes left of the message being read
  let header = Buffer.alloc(0);
  let status = null;
  let finished = false;
  const finish = (error) => {
    if (!finished) {
      finished = true;
      onEnd(error, messages);
    }
  };
  s.on("response", (headers) => {
    if (headers["grpc-status"] !== undefined) status = headers["grpc-status"]; // trailers-only reply
  });
  s.on("trailers", (trailers) => {
    status = trailers["grpc-status"];
  });
  s.on("data", (data) => {
    // Count length-prefixed gRPC messages; the first byte is the first message.
    if (first && data.length) {
      first = false;
      onFirst();
    }
    let offset = 0;
    while (offset < data.length) {
      if (pending > 0) {
        const take = Math.min(pending, data.length - offset);
        pending -= take;
        offset += take;
        continue;
      }
      const need = 5 - header.length;
      header = Buffer.concat([header, data.subarray(offset, offset + need)]);
      offset += Math.min(need, data.length - offset);
      if (header.length === 5) {
        messages++;
        pending = header.readUInt32BE(1);
        header = Buffer.alloc(0);
      }
    }
  });
  s.on("end", () => finish(status === "0" ? null : `grpc-status ${status}`));
  s.on("error", (e) => finish(String(e.code ?? e)));
  s.on("close", () => finish(status === "0" ? null : `closed, grpc-status ${status}`));
  s.end(body);
  return () => s.close(http2.constants.NGHTTP2_CANCEL);
}

const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
function sseStream(_index, onFirst, onEnd) {
  let finished = false;
  const finish = (error, messages) => {
    if (!finished) {
      finished = true;
      onEnd(error, messages);
    }
  };
  const req = http.request(url, { method: "POST", agent, headers: sseHeaders });
  req.on("response", (res) => {
    let first = true;
    let messages = 0;
    let tail = "";
    let failed = res.statusCode !== 200 ? `HTTP ${res.statusCode}` : null;
    res.setEncoding("utf8");
    res.on("data", (text) => {
      if (first && text.length) {
        first = false;
        onFirst();
      }
      const events = (tail + text).split("\n\n");
      tail = events.pop();
      for (const event of events) {
        if (event === "data: [DONE]") continue; // the upstream's end marker, not a message
        messages++;
        // The gateway ends a failed stream in-band (last message, finish_reason ERROR).
        if (event.includes("FINISH_REASON_ERROR")) failed = "in-band FINISH_REASON_ERROR";
      }
    });
    res.on("end", () => finish(failed, messages));
    res.on("error", (e) => finish(String(e.code ?? e), messages));
    res.on("close", () => finish(res.complete ? failed : "response cut", messages));
  });
  req.on("error", (e) => finish(String(e.code ?? e), 0));
  req.end(body);
  return () => req.destroy();
}

const open = opts.kind === "grpc" ? grpcStream : sseStream;

// --- the two modes

const ttfb = [];
const totals = [];
const errors = new Map();
let messages = 0;
let completed = 0;
let inFlight = 0;
let openNow = 0; // streams that had their first byte and have not ended
let maxOpen = 0;
let cancelling = false; // a burst's own cancel ends streams: not an error

const countError = (kind) => errors.set(kind, (errors.get(kind) ?? 0) + 1);

function one(index, { onOpen, onDone } = {}) {
  const start = now();
  let first = false;
  inFlight++;
  return open(
    index,
    () => {
      first = true;
      ttfb.push(now() - start);
      openNow++;
      maxOpen = Math.max(maxOpen, openNow);
      onOpen?.();
    },
    (error, count) => {
      inFlight--;
      if (first) openNow--;
      messages += count;
      if (error && !cancelling) countError(error);
      else if (!error) {
        completed++;
        totals.push(now() - start);
      }
      onDone?.(error);
    },
  );
}

function pct(values, p) {
  if (!values.length) return null;
  const sorted = Float64Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

function report(extra) {
  const cpu = process.cpuUsage();
  const result = {
    streams: ttfb.length,
    completed,
    errors: Object.fromEntries(errors),
    messages,
    max_open: maxOpen,
    ttfb_ms: { p50: pct(ttfb, 50), p90: pct(ttfb, 90), p99: pct(ttfb, 99), max: pct(ttfb, 100) },
    total_ms: { p50: pct(totals, 50), p99: pct(totals, 99) },
    client_cpu_ms: (cpu.user + cpu.system) / 1000,
    wall_s: (now() - began) / 1000,
    ...extra,
  };
  console.log(`RESULT ${JSON.stringify(result)}`);
  for (const s of sessions) s?.destroy();
  agent.destroy();
  process.exit(0);
}

const began = now();
if (opts.burst) {
  // All C at once. Once the last has its first byte: ALL_OPEN (the bench
  // samples memory then), hold, cancel all. A stream that fails, or ends by
  // itself before the cancel, is an error: it was not held.
  const cancels = [];
  let allOpen = false;
  const stop = () => {
    cancelling = true;
    cancels.forEach((cancel) => cancel());
  };
  const onOpen = () => {
    if (openNow === concurrency && !allOpen) {
      allOpen = true;
      console.log(`ALL_OPEN ${(now() - began).toFixed(1)}`);
      setTimeout(stop, Number(opts.hold) * 1000);
    }
  };
  const onDone = (error) => {
    if (!error && !cancelling) countError("ended before the hold");
    if (!allOpen && !cancelling) stop(); // one ended early: they can no longer all be open at once
    if (inFlight === 0) report({ all_open: allOpen });
  };
  for (let i = 0; i < concurrency; i++) cancels.push(one(i, { onOpen, onDone }));
  setTimeout(() => {
    if (!allOpen) {
      countError(`only ${openNow} of ${concurrency} open after ${opts.timeout} s`);
      stop();
    }
  }, Number(opts.timeout) * 1000).unref();
} else {
  const deadline = began + Number(opts.duration) * 1000;
  const loop = (index) =>
    one(index, {
      onDone: () => {
        if (now() < deadline) loop(index);
        else if (inFlight === 0) report({});
      },
    });
  for (let i = 0; i < concurrency; i++) loop(i);
}
