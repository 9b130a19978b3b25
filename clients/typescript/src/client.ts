/**
 * AigcClient: the generated AigcService client (Connect for ES over real
 * gRPC, HTTP/2) with the service's errors turned into AigcError and the
 * stream folding at hand.
 */

import type { MessageInitShape } from "@bufbuild/protobuf";
import { createClient, type CallOptions, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager, type GrpcTransportOptions } from "@connectrpc/connect-node";
import {
  AigcService,
  type ChatRequestSchema,
  type ChatResponse,
  type CompleteRequestSchema,
  type CompleteResponse,
  type ListModelsRequestSchema,
  type ListModelsResponse,
} from "../gen/aigc/v1/aigc_service_pb.js";
import type { EmbedRequestSchema, EmbedResponse } from "../gen/aigc/v1/embedding_pb.js";
import type { Model } from "../gen/aigc/v1/model_pb.js";
import { toAigcError } from "./errors.js";
import { foldChat } from "./fold.js";

/** A ChatRequest as a plain object: `{ messages: [{ role: Role.USER, content: "Hi" }] }`. */
export type ChatRequestInit = MessageInitShape<typeof ChatRequestSchema>;
/** A CompleteRequest as a plain object: `{ prompt: "Once upon a time" }`. */
export type CompleteRequestInit = MessageInitShape<typeof CompleteRequestSchema>;
/** An EmbedRequest as a plain object: `{ inputs: ["a text", "another"] }`. */
export type EmbedRequestInit = MessageInitShape<typeof EmbedRequestSchema>;
/** A ListModelsRequest as a plain object. */
export type ListModelsRequestInit = MessageInitShape<typeof ListModelsRequestSchema>;

export interface AigcClientOptions {
  /**
   * Where the gRPC server listens: `host:port` (plaintext, the default
   * `localhost:9000`) or a URL (`http://host:port`, `https://host:port`).
   */
  address?: string;
  /** The deadline of every call that sets no `timeoutMs` of its own, in milliseconds. */
  defaultTimeoutMs?: number;
  /**
   * The caller key for a deployment with keys on, sent as `authorization: Bearer <key>`
   * on every call; default: the AIGC_API_KEY environment variable.
   */
  apiKey?: string;
  /** Connect interceptors, e.g. to add headers such as `x-request-id` to every call. */
  interceptors?: Interceptor[];
  /** Anything else createGrpcTransport accepts (TLS via nodeOptions, pings, limits ...). */
  transport?: Partial<Omit<GrpcTransportOptions, "baseUrl" | "sessionManager">>;
}

/** The default address of the service's gRPC port. */
export const DEFAULT_ADDRESS = "localhost:9000";

/** `host:port` or a URL, as the base URL of the transport. */
export function baseUrlOf(address: string): string {
  return /^https?:\/\//.test(address) ? address : `http://${address}`;
}

/**
 * A client of aigc-service. Every method takes the request as a plain object
 * (or a generated message) and Connect's CallOptions: `timeoutMs` for a
 * deadline, `signal` to cancel, `headers` (e.g. `x-request-id`). Every
 * failure is thrown as an AigcError carrying the ErrorInfo reason.
 */
export class AigcClient {
  /** The generated Connect client, for anything this class does not wrap. */
  readonly raw: Client<typeof AigcService>;
  readonly baseUrl: string;
  readonly #sessions: Http2SessionManager;

  constructor(options: AigcClientOptions = {}) {
    this.baseUrl = baseUrlOf(options.address ?? DEFAULT_ADDRESS);
    const { nodeOptions, pingIntervalMs, pingIdleConnection, pingTimeoutMs, idleConnectionTimeoutMs, ...rest } =
      options.transport ?? {};
    this.#sessions = new Http2SessionManager(
      this.baseUrl,
      { pingIntervalMs, pingIdleConnection, pingTimeoutMs, idleConnectionTimeoutMs },
      nodeOptions,
    );
    const transport = createGrpcTransport({
      ...rest,
      baseUrl: this.baseUrl,
      sessionManager: this.#sessions,
      interceptors: [...bearer(options.apiKey ?? process.env.AIGC_API_KEY), ...(options.interceptors ?? [])],
      ...(options.defaultTimeoutMs === undefined ? {} : { defaultTimeoutMs: options.defaultTimeoutMs }),
    });
    this.raw = createClient(AigcService, transport);
  }

  /** Chat: the next assistant message of a conversation. */
  async chat(request: ChatRequestInit, options?: CallOptions): Promise<ChatResponse> {
    return this.#unary(() => this.raw.chat(request, options));
  }

  /** StreamChat: the answer as it is generated; see ChatFolder / foldChat for the whole. */
  streamChat(request: ChatRequestInit, options?: CallOptions): AsyncGenerator<ChatResponse, void, undefined> {
    return this.#stream((call) => this.raw.streamChat(request, call), options);
  }

  /** StreamChat folded into the answer Chat would give; `onDelta` sees each message's deltas. */
  async streamChatFolded(
    request: ChatRequestInit,
    options?: CallOptions,
    onDelta?: Parameters<typeof foldChat>[1],
  ): Promise<ChatResponse> {
    return foldChat(this.streamChat(request, options), onDelta);
  }

  /** Complete: the continuation of one prompt. */
  async complete(request: CompleteRequestInit, options?: CallOptions): Promise<CompleteResponse> {
    return this.#unary(() => this.raw.complete(request, options));
  }

  /** StreamComplete: the continuation as it is generated. */
  streamComplete(
    request: CompleteRequestInit,
    options?: CallOptions,
  ): AsyncGenerator<CompleteResponse, void, undefined> {
    return this.#stream((call) => this.raw.streamComplete(request, call), options);
  }

  /** Embed: one vector per input text, in order (`response.embeddings[i].values`);
   * an empty `model` means the deployment's default embedding model. */
  async embed(request: EmbedRequestInit, options?: CallOptions): Promise<EmbedResponse> {
    return this.#unary(() => this.raw.embed(request, options));
  }

  /** ListModels: one page of the models this deployment serves. */
  async listModels(request: ListModelsRequestInit = {}, options?: CallOptions): Promise<ListModelsResponse> {
    return this.#unary(() => this.raw.listModels(request, options));
  }

  /** Every model, following `nextPageToken` across pages. */
  async allModels(options?: CallOptions): Promise<Model[]> {
    const models: Model[] = [];
    let pageToken = "";
    do {
      const page = await this.listModels({ pageToken, pageSize: 1000 }, options);
      models.push(...page.models);
      pageToken = page.nextPageToken;
    } while (pageToken);
    return models;
  }

  /** Closes the HTTP/2 connection; calls in flight fail with CANCELLED. */
  close(): void {
    this.#sessions.abort();
  }

  async #unary<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      throw toAigcError(error);
    }
  }

  // Connect ends a server stream on the wire only when its signal aborts
  // (leaving its iterator early does not reset the HTTP/2 stream), so every
  // stream gets its own AbortController, aborted when the consumer leaves a
  // `for await` early (break, return, a throw): the server sees the call
  // cancelled and stops generating. The stream is then read once more, so
  // Connect sees its own cancellation and clears the call's deadline timer
  // (which would otherwise keep the process alive until the deadline).
  async *#stream<T>(
    call: (options: CallOptions) => AsyncIterable<T>,
    options: CallOptions | undefined,
  ): AsyncGenerator<T, void, undefined> {
    const controller = new AbortController();
    const signal = options?.signal ? AbortSignal.any([options.signal, controller.signal]) : controller.signal;
    const messages = call({ ...options, signal })[Symbol.asyncIterator]();
    let ended = false;
    try {
      for (;;) {
        const next = await messages.next();
        if (next.done) {
          ended = true;
          return;
        }
        yield next.value;
      }
    } catch (error) {
      ended = true;
      throw toAigcError(error);
    } finally {
      if (!ended) {
        controller.abort();
        await messages.next().catch(() => undefined);
        await messages.return?.();
      }
    }
  }
}


/** An interceptor that sends `key` as `authorization: Bearer <key>`, or none without a key. */
function bearer(key: string | undefined): Interceptor[] {
  if (!key) return [];
  return [
    (next) => async (request) => {
      request.header.set("authorization", `Bearer ${key}`);
      return await next(request);
    },
  ];
}
