/**
 * Folding a stream into the whole answer, as the proto's service comment
 * says: every message but the last carries part deltas, each with the
 * `index` of the part of the answer it extends; text and reasoning deltas
 * append text, tool call deltas append `arguments` (and repeat `id` and
 * `name`). The last message has no parts: it holds `finishReason` and
 * `usage` (or `error`). The folded answer equals the unary answer.
 */

import { clone, create } from "@bufbuild/protobuf";
import {
  ChatResponseSchema,
  CompleteResponseSchema,
  type ChatResponse,
  type CompleteResponse,
} from "../gen/aigc/v1/aigc_service_pb.js";
import { PartSchema, Role, type Message, type Part } from "../gen/aigc/v1/content_pb.js";

/** Collects the messages of a StreamChat call; `response()` is the folded answer. */
export class ChatFolder {
  readonly #parts: Part[] = [];
  #first: ChatResponse | undefined;
  #last: ChatResponse | undefined;

  /** Adds one stream message; returns its part deltas (for printing as they come). */
  add(response: ChatResponse): Part[] {
    this.#first ??= response;
    this.#last = response;
    const deltas = response.message?.parts ?? [];
    for (const delta of deltas) {
      this.#apply(delta);
    }
    return deltas;
  }

  /** The answer's parts so far, in order, each whole (index 0, as in unary answers). */
  get parts(): readonly Part[] {
    return this.#parts;
  }

  /** The answer's text parts so far, joined. */
  get text(): string {
    return textOf(this.#parts);
  }

  /** Whether the last message (the one with the finish reason) has arrived. */
  get finished(): boolean {
    return (this.#last?.finishReason ?? 0) !== 0;
  }

  /** The stream as one ChatResponse: the shape Chat returns. */
  response(): ChatResponse {
    const first = this.#first;
    const last = this.#last;
    return create(ChatResponseSchema, {
      id: first?.id ?? "",
      model: first?.model ?? "",
      provider: first?.provider ?? "",
      createTime: first?.createTime,
      message: { role: Role.ASSISTANT, parts: this.#parts.map((part) => clone(PartSchema, part)) },
      finishReason: last?.finishReason ?? 0,
      usage: last?.usage,
      error: last?.error,
    });
  }

  #apply(delta: Part): void {
    if (delta.index === this.#parts.length) {
      const part = clone(PartSchema, delta);
      part.index = 0;
      this.#parts.push(part);
      return;
    }
    const part = this.#parts[delta.index];
    if (part === undefined || part.data.case !== delta.data.case) {
      throw new Error(
        `stream delta for part ${delta.index} (${delta.data.case}) does not extend the ${this.#parts.length} parts so far`,
      );
    }
    if (part.data.case === "text" && delta.data.case === "text") {
      part.data.value += delta.data.value;
    } else if (part.data.case === "reasoning" && delta.data.case === "reasoning") {
      part.data.value.text += delta.data.value.text;
      part.data.value.encryptedContent += delta.data.value.encryptedContent;
    } else if (part.data.case === "toolCall" && delta.data.case === "toolCall") {
      part.data.value.arguments += delta.data.value.arguments;
    }
    if (delta.signature) {
      part.signature = delta.signature;
    }
  }
}

/**
 * Consumes a StreamChat stream and returns the folded answer. `onDelta` sees
 * each message's part deltas as they arrive (e.g. to print the text).
 */
export async function foldChat(
  stream: AsyncIterable<ChatResponse>,
  onDelta?: (deltas: Part[], response: ChatResponse) => void,
): Promise<ChatResponse> {
  const folder = new ChatFolder();
  for await (const response of stream) {
    const deltas = folder.add(response);
    onDelta?.(deltas, response);
  }
  return folder.response();
}

/** Consumes a StreamComplete stream and returns it as one CompleteResponse. */
export async function foldComplete(stream: AsyncIterable<CompleteResponse>): Promise<CompleteResponse> {
  let first: CompleteResponse | undefined;
  let last: CompleteResponse | undefined;
  let text = "";
  for await (const response of stream) {
    first ??= response;
    last = response;
    text += response.text;
  }
  return create(CompleteResponseSchema, {
    id: first?.id ?? "",
    model: first?.model ?? "",
    provider: first?.provider ?? "",
    createTime: first?.createTime,
    text,
    finishReason: last?.finishReason ?? 0,
    usage: last?.usage,
    error: last?.error,
  });
}

/** The text parts of parts (or of a message, or a stream message's deltas), joined. */
export function textOf(source: readonly Part[] | Message | ChatResponse | undefined): string {
  const parts: readonly Part[] =
    source === undefined
      ? []
      : Array.isArray(source)
        ? source
        : "parts" in source
          ? source.parts
          : ((source as ChatResponse).message?.parts ?? []);
  return parts.map((part) => (part.data.case === "text" ? part.data.value : "")).join("");
}
