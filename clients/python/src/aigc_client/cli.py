"""`aigc`: aigc-service from the terminal.

    aigc models                          the models this deployment serves
    aigc chat "prompt"                   streams the answer as it is generated
    echo "prompt" | aigc chat            the prompt from stdin
    aigc chat                            on a terminal: a multi-turn conversation (also -i)

Options of `chat`: --model, --system, --max-tokens, --temperature, --timeout
(a deadline in seconds), --json (the whole answer as one JSON object, the
shape of POST /v1/chat:generate), --jsonl (every stream message as one JSON
line, the shape of the SSE events). Reasoning (the request's `reasoning`
field): --reasoning-effort low|medium|high or --reasoning-budget TOKENS asks
a reasoning model to think; --show-reasoning asks for its reasoning parts
(`include_reasoning`) and streams them to stderr, apart from the answer on
stdout - after a "[reasoning]" line, dimmed on a terminal - so a pipe or a
redirect of stdout keeps only the answer. --json and --jsonl carry them as
`reasoning` parts. `--server host:port` (or AIGC_SERVER)
picks the server, default localhost:9000. With keys on at the server, the
key comes from AIGC_API_KEY (never a flag: command lines end up in shell
histories and `ps`).

Ctrl-C cancels the stream: the server sees CANCELLED and stops generating.
On failure one line goes to stderr - the status code, the ErrorInfo reason,
the message and the request id - and the exit code says what kind of
failure it was (EXIT_* below; `aigc --help` lists them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from importlib import metadata

import grpc
from google.protobuf import json_format

from aigc.v1 import content_pb2, generation_pb2, model_pb2
from aigc_client._client import DEFAULT_ADDRESS, Client, chat_request
from aigc_client._errors import AigcError
from aigc_client._fold import ChatFolder

# Exit codes (documented in `aigc --help` and clients/README.md).
EXIT_OK = 0
EXIT_ERROR = 1  # any other failure (INTERNAL, UNKNOWN, ...)
EXIT_USAGE = 2  # bad command line (argparse's own code too)
EXIT_INVALID = 3  # INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE: the request cannot succeed as is
EXIT_NOT_FOUND = 4  # NOT_FOUND: e.g. MODEL_NOT_FOUND
EXIT_UNAVAILABLE = 5  # UNAVAILABLE: server not running or unreachable, upstream down
EXIT_DEADLINE = 6  # DEADLINE_EXCEEDED: --timeout passed, or the upstream was too slow
EXIT_RATE_LIMITED = 7  # RESOURCE_EXHAUSTED: rate limit or quota
EXIT_DENIED = 8  # UNAUTHENTICATED, PERMISSION_DENIED
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)

EXIT_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: EXIT_INVALID,
    grpc.StatusCode.FAILED_PRECONDITION: EXIT_INVALID,
    grpc.StatusCode.OUT_OF_RANGE: EXIT_INVALID,
    grpc.StatusCode.NOT_FOUND: EXIT_NOT_FOUND,
    grpc.StatusCode.UNAVAILABLE: EXIT_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: EXIT_DEADLINE,
    grpc.StatusCode.RESOURCE_EXHAUSTED: EXIT_RATE_LIMITED,
    grpc.StatusCode.UNAUTHENTICATED: EXIT_DENIED,
    grpc.StatusCode.PERMISSION_DENIED: EXIT_DENIED,
    grpc.StatusCode.CANCELLED: EXIT_INTERRUPTED,
}

_EXIT_HELP = """exit codes:
  0    ok
  1    other error (INTERNAL, UNKNOWN, ...)
  2    usage: bad command line, no prompt
  3    invalid request: INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE
  4    not found: NOT_FOUND (e.g. MODEL_NOT_FOUND)
  5    unavailable: server not running or unreachable, upstream down
  6    deadline exceeded: --timeout passed, or the upstream gave up
  7    rate limited: RESOURCE_EXHAUSTED
  8    denied: UNAUTHENTICATED, PERMISSION_DENIED
  130  interrupted: Ctrl-C (in a conversation Ctrl-C only stops the answer)"""

_INTERACTIVE_HELP = "/reset forgets the conversation, /exit or Ctrl-D quits, Ctrl-C stops an answer"


class Usage(Exception):
    """A command-line mistake argparse cannot see (e.g. no prompt at all)."""


def main(argv: Sequence[str] | None = None) -> int:
    parser, commands = _parser()
    args = parser.parse_args(argv)
    server = args.server or os.environ.get("AIGC_SERVER") or DEFAULT_ADDRESS
    try:
        with Client(server, timeout=getattr(args, "timeout", None)) as client:
            if args.command == "models":
                return _models(client, args)
            return _chat(client, args)
    except Usage as problem:
        commands[args.command].error(str(problem))
    except AigcError as error:
        _error_line(error, server)
        return EXIT_CODES.get(error.code, EXIT_ERROR)
    except KeyboardInterrupt:
        print("\naigc: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `aigc chat ... | head -1`: stop quietly
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    return EXIT_OK


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    server_help = f"gRPC address of the service (default: $AIGC_SERVER or {DEFAULT_ADDRESS})"
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--server", metavar="HOST:PORT", default=argparse.SUPPRESS, help=server_help)
    parser = argparse.ArgumentParser(
        prog="aigc",
        description="aigc-service from the terminal: list models, chat with streamed answers.",
        epilog=_EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--server", metavar="HOST:PORT", default=None, help=server_help)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = commands.add_parser("models", parents=[common], help="list the models this deployment serves")
    models.add_argument("--json", action="store_true", help="print the models as a JSON array")

    chat = commands.add_parser(
        "chat",
        parents=[common],
        help="chat with a model; the answer streams as it is generated",
        description="Chat with a model. The prompt comes from PROMPT, else from stdin; with no prompt on a "
        f"terminal (or with -i) it is a multi-turn conversation: {_INTERACTIVE_HELP}.",
        epilog=_EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    chat.add_argument("prompt", nargs="?", metavar="PROMPT", help="the message (default: read stdin)")
    chat.add_argument(
        "-m", "--model", default="", help="model id or alias (default: the deployment's default)"
    )
    chat.add_argument("-s", "--system", default=None, help="a system prompt")
    chat.add_argument(
        "--max-tokens", type=_positive_int, default=None, help="upper bound on generated tokens"
    )
    chat.add_argument("--temperature", type=float, default=None, help="sampling temperature, 0-2")
    chat.add_argument(
        "--timeout", type=float, default=None, metavar="SECONDS", help="deadline of each answer"
    )
    # The proto: "Set `effort` or `budget_tokens`, not both."
    thinking = chat.add_mutually_exclusive_group()
    thinking.add_argument(
        "--reasoning-effort",
        choices=list(_EFFORTS),
        default=None,
        help="how hard a reasoning model thinks (reasoning.effort)",
    )
    thinking.add_argument(
        "--reasoning-budget",
        type=_non_negative_int,
        default=None,
        metavar="TOKENS",
        help="tokens a reasoning model may spend thinking; 0 turns it off where allowed "
        "(reasoning.budget_tokens; providers that take an effort refuse it)",
    )
    chat.add_argument(
        "--show-reasoning",
        action="store_true",
        help="ask for the model's reasoning (reasoning.include_reasoning) and print it to stderr",
    )
    output = chat.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the whole answer as one JSON object")
    output.add_argument("--jsonl", action="store_true", help="print every stream message as a JSON line")
    chat.add_argument("-i", "--interactive", action="store_true", help="a multi-turn conversation")
    return parser, {"models": models, "chat": chat}


def _models(client: Client, args: argparse.Namespace) -> int:
    models = client.list_models()
    if args.json:
        print(json.dumps([_json(model) for model in models], ensure_ascii=False))
        return EXIT_OK
    rows = [
        (
            model.id + (" *" if model.is_default else ""),
            model.provider,
            "ready" if model.ready else "not ready",
            ", ".join(_capability(c) for c in model.capabilities) or "-",
        )
        for model in models
    ]
    widths = [max(len(row[i]) for row in [("MODEL", "PROVIDER", "STATUS", ""), *rows]) for i in range(3)]
    print(f"{'MODEL':<{widths[0]}}  {'PROVIDER':<{widths[1]}}  {'STATUS':<{widths[2]}}  CAPABILITIES")
    for row in rows:
        print(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}")
    return EXIT_OK


def _chat(client: Client, args: argparse.Namespace) -> int:
    interactive = args.interactive or (args.prompt is None and sys.stdin.isatty())
    if interactive:
        if args.json or args.jsonl:
            raise Usage("--json and --jsonl print one answer: give a PROMPT instead of -i")
        return _conversation(client, args)
    prompt = args.prompt if args.prompt is not None else sys.stdin.read()
    if not prompt.strip():
        raise Usage("no prompt: give PROMPT or pipe it on stdin")
    _answer(client, args, [content_pb2.Message(role=content_pb2.ROLE_USER, content=prompt)])
    return EXIT_OK


def _conversation(client: Client, args: argparse.Namespace) -> int:
    """The multi-turn mode: every answer is kept, as returned, for the next turn."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401 - line editing and history for input()
    model = args.model or "the default model"
    print(f"aigc chat with {model} at {client.address} - {_INTERACTIVE_HELP}", file=sys.stderr)
    history: list[content_pb2.Message] = []
    first = args.prompt
    while True:
        if first is not None:
            prompt, first = first, None
            print(f"> {prompt}")
        else:
            try:
                prompt = input("> ")
            except EOFError:
                print(file=sys.stderr)
                return EXIT_OK
            except KeyboardInterrupt:  # at the prompt: drop the line, keep the conversation
                print("\n(Ctrl-D or /exit quits)", file=sys.stderr)
                continue
        if not prompt.strip():
            continue
        if prompt.strip() in ("/exit", "/quit"):
            return EXIT_OK
        if prompt.strip() == "/reset":
            history.clear()
            print("(conversation forgotten)", file=sys.stderr)
            continue
        turn = content_pb2.Message(role=content_pb2.ROLE_USER, content=prompt)
        try:
            answer = _answer(client, args, [*history, turn])
        except KeyboardInterrupt:
            print("\n(answer cancelled)", file=sys.stderr)
            continue
        except AigcError as error:
            _error_line(error, client.address)
            continue
        history += [turn, answer]


def _answer(
    client: Client, args: argparse.Namespace, messages: list[content_pb2.Message]
) -> content_pb2.Message:
    """Streams one answer to stdout and returns it (the folded assistant message)."""
    request = chat_request(
        messages,
        model=args.model,
        system_prompt=args.system,
        max_output_tokens=args.max_tokens,
        temperature=args.temperature,
    )
    reasoning = _reasoning_config(args)
    if reasoning is not None:
        request.reasoning.CopyFrom(reasoning)
    folder = ChatFolder()
    out = sys.stdout
    shown = _ReasoningPrinter(out, sys.stderr)
    try:
        for response in client.stream_chat(request):
            deltas = folder.add(response)
            if args.jsonl:
                out.write(json.dumps(_json(response), ensure_ascii=False) + "\n")
            elif not args.json:
                for delta in deltas:
                    shown.write(delta)
            out.flush()
    except (AigcError, KeyboardInterrupt):
        shown.end()
        if folder.text and not (args.json or args.jsonl):
            out.write("\n")  # end the partial answer's line before the error or "cancelled"
            out.flush()
        raise
    shown.end()
    answer = folder.response()
    if args.json:
        out.write(json.dumps(_json(answer), ensure_ascii=False) + "\n")
    elif not args.jsonl:
        out.write("\n")
        if answer.finish_reason == generation_pb2.FINISH_REASON_MAX_TOKENS and sys.stderr.isatty():
            print("(stopped at the token limit: --max-tokens)", file=sys.stderr)
    out.flush()
    return answer.message


_EFFORTS = {
    "low": generation_pb2.ReasoningConfig.EFFORT_LOW,
    "medium": generation_pb2.ReasoningConfig.EFFORT_MEDIUM,
    "high": generation_pb2.ReasoningConfig.EFFORT_HIGH,
}


def _reasoning_config(args: argparse.Namespace) -> generation_pb2.ReasoningConfig | None:
    """The request's `reasoning` field from the options; None when none was given."""
    if args.reasoning_effort is None and args.reasoning_budget is None and not args.show_reasoning:
        return None
    config = generation_pb2.ReasoningConfig(include_reasoning=args.show_reasoning)
    if args.reasoning_effort is not None:
        config.effort = _EFFORTS[args.reasoning_effort]
    if args.reasoning_budget is not None:
        config.budget_tokens = args.reasoning_budget
    return config


class _ReasoningPrinter:
    """Prints a stream's part deltas: text to `out`, reasoning to `err`.

    Reasoning goes to stderr so that stdout stays the answer alone (pipes,
    redirects); each reasoning part starts on its own "[reasoning]" line and,
    on a terminal, is dimmed, so it reads apart from the answer when both
    streams share the screen.
    """

    _DIM, _RESET = "\x1b[2m", "\x1b[0m"

    def __init__(self, out, err) -> None:
        self._out, self._err = out, err
        self._dim = err.isatty()
        self._in_reasoning = False

    def write(self, delta: content_pb2.Part) -> None:
        kind = delta.WhichOneof("data")
        if kind == "reasoning" and delta.reasoning.text:
            if not self._in_reasoning:
                self._err.write("[reasoning]\n" + (self._DIM if self._dim else ""))
                self._in_reasoning = True
            self._err.write(delta.reasoning.text)
            self._err.flush()
        elif kind == "text" and delta.text:
            self.end()
            self._out.write(delta.text)

    def end(self) -> None:
        """Closes an open reasoning block (its line, the dimming) before anything else prints."""
        if self._in_reasoning:
            self._err.write((self._RESET if self._dim else "") + "\n")
            self._err.flush()
            self._in_reasoning = False


def _error_line(error: AigcError, server: str) -> None:
    line = f"aigc: {error}"
    if error.request_id:
        line += f" (request_id {error.request_id})"
    elif error.code is grpc.StatusCode.UNAVAILABLE:
        line += f" (is the server running at {server}?)"
    print(" ".join(line.split()), file=sys.stderr)


def _json(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _capability(value: int) -> str:
    return model_pb2.Capability.Name(value).removeprefix("CAPABILITY_").lower()


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {raw}")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {raw}")
    return value


def _version() -> str:
    try:
        return metadata.version("aigc-client")
    except metadata.PackageNotFoundError:
        return "(not installed)"


if __name__ == "__main__":
    sys.exit(main())
