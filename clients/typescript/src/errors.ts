/**
 * Errors of aigc-service, as a TypeScript caller sees them.
 *
 * The server answers every failure with a google.rpc.Status in the
 * `grpc-status-details-bin` trailer: a canonical code, a message, and a
 * google.rpc.ErrorInfo whose `reason` is a stable UPPER_SNAKE string
 * (MODEL_NOT_FOUND, CAPABILITY_NOT_SUPPORTED, UPSTREAM_TIMEOUT, ...) and
 * whose metadata holds the request id. Connect decodes the trailer into a
 * ConnectError; AigcError is that ConnectError with the details read out:
 *
 *     ConnectError                 @connectrpc/connect: code, rawMessage, metadata, findDetails()
 *     └── AigcError                + reason, domain, errorMetadata, requestId,
 *                                    fieldViolations (BadRequest), retryDelayMs (RetryInfo)
 *
 * Errors made on the client side (a deadline that passed before the server
 * answered, a refused connection) have no ErrorInfo: their `reason` is "".
 */

import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  RetryInfoSchema,
  type ErrorInfo,
} from "../gen/google/rpc/error_details_pb.js";

/** The `ErrorInfo.domain` of every error this service makes. */
export const DOMAIN = "aigc-service";

/** gRPC's names of the status codes (google/rpc/code.proto), by number. */
const CODE_NAMES: Readonly<Record<number, string>> = {
  [Code.Canceled]: "CANCELLED",
  [Code.Unknown]: "UNKNOWN",
  [Code.InvalidArgument]: "INVALID_ARGUMENT",
  [Code.DeadlineExceeded]: "DEADLINE_EXCEEDED",
  [Code.NotFound]: "NOT_FOUND",
  [Code.AlreadyExists]: "ALREADY_EXISTS",
  [Code.PermissionDenied]: "PERMISSION_DENIED",
  [Code.ResourceExhausted]: "RESOURCE_EXHAUSTED",
  [Code.FailedPrecondition]: "FAILED_PRECONDITION",
  [Code.Aborted]: "ABORTED",
  [Code.OutOfRange]: "OUT_OF_RANGE",
  [Code.Unimplemented]: "UNIMPLEMENTED",
  [Code.Internal]: "INTERNAL",
  [Code.Unavailable]: "UNAVAILABLE",
  [Code.DataLoss]: "DATA_LOSS",
  [Code.Unauthenticated]: "UNAUTHENTICATED",
};

/** One invalid field of a request, from google.rpc.BadRequest. */
export interface FieldViolation {
  field: string;
  description: string;
}

/**
 * A failed call: the ConnectError, with the service's ErrorInfo read out.
 *
 * Its `name` stays "ConnectError", so `instanceof ConnectError`,
 * `ConnectError.from` and `findDetails` treat it as the ConnectError it is.
 */
export class AigcError extends ConnectError {
  /** The status code's gRPC name, e.g. "NOT_FOUND". */
  readonly codeName: string;
  /** ErrorInfo.reason, e.g. "MODEL_NOT_FOUND"; "" when the error has no ErrorInfo. */
  readonly reason: string;
  /** ErrorInfo.domain: "aigc-service" for the service's own errors. */
  readonly domain: string;
  /** ErrorInfo.metadata: request_id, model, field, capability, ... */
  readonly errorMetadata: Readonly<Record<string, string>>;
  /** The server's id of the request (ErrorInfo.metadata.request_id), for its logs. */
  readonly requestId: string;
  /** The fields a google.rpc.BadRequest detail names (INVALID_ARGUMENT). */
  readonly fieldViolations: readonly FieldViolation[];
  /** How long to wait before retrying (google.rpc.RetryInfo), when the server said. */
  readonly retryDelayMs: number | undefined;

  constructor(error: ConnectError) {
    super(error.rawMessage, error.code, error.metadata, undefined, error.cause ?? error);
    this.details = error.details;
    const info: ErrorInfo | undefined = error.findDetails(ErrorInfoSchema)[0];
    this.codeName = CODE_NAMES[error.code] ?? String(error.code);
    this.reason = info?.reason ?? "";
    this.domain = info?.domain ?? "";
    this.errorMetadata = { ...(info?.metadata ?? {}) };
    this.requestId = this.errorMetadata["request_id"] ?? "";
    this.fieldViolations = error
      .findDetails(BadRequestSchema)
      .flatMap((bad) => bad.fieldViolations.map(({ field, description }) => ({ field, description })));
    const delay = error.findDetails(RetryInfoSchema)[0]?.retryDelay;
    this.retryDelayMs =
      delay === undefined ? undefined : Number(delay.seconds) * 1000 + Math.round(delay.nanos / 1e6);
    // "NOT_FOUND MODEL_NOT_FOUND: model 'x' is not served here" - the reason up front.
    this.message = `${this.codeName}${this.reason ? ` ${this.reason}` : ""}: ${error.rawMessage}`;
  }

  // ConnectError's own check accepts any error named "ConnectError"; this one
  // accepts only real AigcErrors.
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === "object" && value !== null && Object.prototype.isPrototypeOf.call(AigcError.prototype, value);
  }
}

/**
 * The AigcError for anything a call threw. Aborts and timeouts of the fetch
 * API become CANCELLED (ConnectError.from's rules); an AigcError is returned
 * as is.
 */
export function toAigcError(reason: unknown): AigcError {
  if (reason instanceof AigcError) {
    return reason;
  }
  return new AigcError(ConnectError.from(reason));
}
