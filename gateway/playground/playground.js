// The playground: pick a model, chat, watch the answer stream in, see usage and errors.
//
// It speaks the service's own HTTP API through Envoy, as any browser code would:
// GET /v1/models, and POST /v1/chat:streamGenerate read as Server-Sent Events with
// fetch() and a stream reader (EventSource cannot POST). Each event is a ChatResponse
// whose parts are deltas by part index (aigc_service.proto); the last one carries
// finish_reason and usage, or, if the stream failed after it started, the `error`
// (a google.rpc.Status). An error before the stream is an HTTP status with the Status
// as JSON. Stop aborts the request, which cancels the RPC and the model's work.

const $ = (id) => document.getElementById(id);
const els = {
  model: $("model"),
  modelInfo: $("model-info"),
  system: $("system"),
  maxTokens: $("max-tokens"),
  temperature: $("temperature"),
  reasoning: $("reasoning"),
  showReasoning: $("show-reasoning"),
  apiKey: $("api-key"),
  transcript: $("transcript"),
  composer: $("composer"),
  prompt: $("prompt"),
  send: $("send"),
  stop: $("stop"),
  status: $("status"),
  reset: $("reset"),
};

/** The conversation so far, as aigc.v1 messages (assistant turns as their parts). */
let history = [];
let running = null; // the AbortController of the answer being streamed
let models = [];

els.apiKey.value = sessionStorage.getItem("aigc-api-key") ?? "";
els.apiKey.addEventListener("change", () => {
  sessionStorage.setItem("aigc-api-key", els.apiKey.value.trim());
  loadModels();
});

function headers() {
  const out = { "content-type": "application/json" };
  const key = els.apiKey.value.trim();
  if (key) out.authorization = `Bearer ${key}`;
  return out;
}

/** "NOT_FOUND MODEL_NOT_FOUND: model 'x' is not served here (request 1c38...)" from a google.rpc.Status. */
function describeStatus(status, fallback) {
  if (!status || typeof status !== "object") return fallback;
  const info = (status.details ?? []).find((d) => String(d["@type"]).endsWith("google.rpc.ErrorInfo"));
  const reason = info?.reason ? ` ${info.reason}` : "";
  const rid = info?.metadata?.request_id ? ` (request ${info.metadata.request_id})` : "";
  return `${CODES[status.code] ?? `code ${status.code}`}${reason}: ${status.message}${rid}`;
}

const CODES = {
  1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
  7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION", 13: "INTERNAL",
  14: "UNAVAILABLE", 16: "UNAUTHENTICATED",
};

async function loadModels() {
  els.status.textContent = "loading models...";
  try {
    const response = await fetch("/v1/models?page_size=1000", { headers: headers() });
    const body = await response.json();
    if (!response.ok) throw new Error(describeStatus(body, `HTTP ${response.status}`));
    models = body.models ?? [];
    const previous = els.model.value;
    els.model.replaceChildren(
      ...models.map((m) => {
        const option = new Option(`${m.id}${m.ready ? "" : " (not ready)"}`, m.id);
        option.disabled = !m.ready;
        return option;
      }),
    );
    const preferred = models.find((m) => m.id === previous && m.ready) ?? models.find((m) => m.is_default);
    if (preferred) els.model.value = preferred.id;
    showModelInfo();
    els.status.textContent = "";
  } catch (error) {
    els.status.textContent = "";
    addEntry("error", "error", `could not list models: ${error.message}`);
  }
}

function showModelInfo() {
  const m = models.find((x) => x.id === els.model.value);
  if (!m) {
    els.modelInfo.textContent = "";
    return;
  }
  const caps = (m.capabilities ?? []).map((c) => c.replace("CAPABILITY_", "").toLowerCase());
  els.modelInfo.textContent = `${m.provider} - ${m.upstream_model}${caps.length ? ` - ${caps.join(", ")}` : ""}`;
}
els.model.addEventListener("change", showModelInfo);

function addEntry(kind, who, text) {
  const li = document.createElement("li");
  li.className = kind;
  const label = document.createElement("div");
  label.className = "who";
  label.textContent = who;
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text ?? "";
  li.append(label, body);
  els.transcript.append(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

/** Renders the folded parts of the answer so far into its transcript entry. Each part
 * keeps its node across deltas, so a reasoning block the user closed stays closed. */
function renderAnswer(li, parts) {
  const body = li.querySelector(".text");
  li.partNodes ??= new Map();
  const nodes = [];
  for (const part of [...parts.values()].sort((a, b) => a.index - b.index)) {
    let node = li.partNodes.get(part.index);
    if (part.kind === "reasoning") {
      if (!node) {
        // A collapsible "Reasoning" block, open while it streams in.
        node = document.createElement("details");
        node.className = "reasoning";
        node.open = true;
        const summary = document.createElement("summary");
        summary.textContent = "Reasoning";
        const thoughts = document.createElement("div");
        thoughts.className = "thoughts";
        node.append(summary, thoughts);
      }
      node.querySelector(".thoughts").textContent = part.text;
    } else {
      node ??= document.createElement("div");
      if (part.kind === "tool_call") {
        node.className = "tool";
        node.textContent = `tool call ${part.name}(${part.arguments})`;
      } else {
        node.className = "answer";
        node.textContent = part.text;
      }
    }
    li.partNodes.set(part.index, node);
    nodes.push(node);
  }
  body.replaceChildren(...nodes);
  li.scrollIntoView({ block: "end" });
}

/** Folds one message's part deltas into `parts` (a Map by part index). */
function fold(parts, delta) {
  for (const p of delta ?? []) {
    const index = p.index ?? 0;
    const kind = "text" in p ? "text" : "reasoning" in p ? "reasoning" : "tool_call" in p ? "tool_call" : null;
    if (!kind) continue;
    const seen = parts.get(index) ?? { index, kind, text: "", name: "", id: "", arguments: "", signature: "" };
    if (kind === "text") seen.text += p.text;
    if (kind === "reasoning") seen.text += p.reasoning.text ?? "";
    if (kind === "tool_call") {
      seen.id = p.tool_call.id || seen.id;
      seen.name = p.tool_call.name || seen.name;
      seen.arguments += p.tool_call.arguments ?? "";
    }
    if (p.signature) seen.signature = p.signature;
    parts.set(index, seen);
  }
}

/** The `data:` events of an SSE body, parsed, as they arrive. */
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value ?? new Uint8Array(), { stream: !done });
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      const data = block
        .split(/\r?\n/)
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (data) yield JSON.parse(data);
    }
    if (done) return;
  }
}

async function send(text) {
  const model = els.model.value;
  history.push({ role: "ROLE_USER", content: text });
  addEntry("user", "you", text);
  const li = addEntry("assistant", model || "assistant", "");
  const meta = document.createElement("div");
  meta.className = "meta";
  li.append(meta);

  const request = { model, messages: [...history], generation_config: {} };
  const system = els.system.value.trim();
  if (system) request.messages.unshift({ role: "ROLE_SYSTEM", content: system });
  const maxTokens = parseInt(els.maxTokens.value, 10);
  if (maxTokens > 0) request.generation_config.max_output_tokens = maxTokens;
  const temperature = parseFloat(els.temperature.value);
  if (!Number.isNaN(temperature)) request.generation_config.temperature = temperature;
  // The request's ReasoningConfig, only when an effort is picked: models without
  // CAPABILITY_REASONING refuse the field. "Show the reasoning" is include_reasoning.
  if (els.reasoning.value) {
    request.reasoning = { effort: els.reasoning.value, include_reasoning: els.showReasoning.checked };
  }

  running = new AbortController();
  setBusy(true);
  const started = performance.now();
  let firstAt = null;
  const parts = new Map();
  let last = null;
  try {
    const response = await fetch("/v1/chat:streamGenerate", {
      method: "POST",
      headers: headers(),
      body: JSON.stringify(request),
      signal: running.signal,
    });
    if (!response.ok) {
      const body = await response.json().catch(() => null);
      throw new Error(describeStatus(body, `HTTP ${response.status}`));
    }
    for await (const message of events(response)) {
      last = message;
      if (message.message?.parts?.length) {
        firstAt ??= performance.now();
        fold(parts, message.message.parts);
        renderAnswer(li, parts);
      }
      if (message.error) throw new Error(describeStatus(message.error, "the stream failed"));
    }
    if (!last?.finish_reason) throw new Error("the stream ended without a finish reason");
    const u = last.usage;
    const ttft = firstAt === null ? "-" : `${Math.round(firstAt - started)} ms to first token`;
    meta.textContent =
      `${last.finish_reason.replace("FINISH_REASON_", "").toLowerCase()} - ` +
      (u ? `${u.prompt_tokens ?? 0} prompt + ${u.completion_tokens ?? 0} completion tokens - ` : "") +
      `${ttft}, ${Math.round(performance.now() - started)} ms in all - ${last.provider}`;
    history.push({ role: "ROLE_ASSISTANT", parts: [...parts.values()].map(toPart) });
  } catch (error) {
    history.pop(); // the question was not answered: it is not part of the conversation
    li.classList.add("error");
    if (error.name === "AbortError") {
      meta.textContent = "stopped";
    } else {
      meta.textContent = error.message;
    }
  } finally {
    running = null;
    setBusy(false);
  }
}

/** A folded part back into an aigc.v1 Part for the next turn (signatures go back unchanged). */
function toPart(p) {
  const out = p.kind === "text" ? { text: p.text }
    : p.kind === "reasoning" ? { reasoning: { text: p.text } }
    : { tool_call: { id: p.id, name: p.name, arguments: p.arguments } };
  if (p.signature) out.signature = p.signature;
  return out;
}

function setBusy(busy) {
  els.send.disabled = busy;
  els.stop.disabled = !busy;
  els.status.textContent = busy ? "generating..." : "";
}

els.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = els.prompt.value.trim();
  if (!text || running) return;
  els.prompt.value = "";
  send(text);
});
els.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) els.composer.requestSubmit();
});
els.stop.addEventListener("click", () => running?.abort());
els.reset.addEventListener("click", () => {
  running?.abort();
  history = [];
  els.transcript.replaceChildren();
});

loadModels();
