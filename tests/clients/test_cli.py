"""The `aigc` CLI driven as a user would: in a pseudo-terminal (pexpect), with
the console script `pip install ./clients/python` made, against a real server
whose local model has one slot (tests/clients/conftest.py)."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import time
from collections.abc import Iterator

import pexpect
import pytest

from tests.clients.access_log import access_lines, wait_for_lines
from tests.clients.conftest import ClientVenv
from tests.fakes.demo_vendor import DemoReply
from tests.fakes.http import FakeServer
from tests.proxies.env import write_config
from tests.proxies.relays import LoopThread
from tests.support.processes import VENV_BIN, ServerProcess, free_port, running_server

# A prompt the 135M model answers at length ("1, 2, 3, 4, ..."), so a stream
# is still going when the test looks at it.
COUNTING = "List the numbers from 1 to 1000, separated by commas."


def spawn(client_venv: ClientVenv, server: ServerProcess, *args: str) -> pexpect.spawn:
    env = client_venv.env() | {"TERM": "dumb"}  # no readline escape sequences in the output
    return pexpect.spawn(
        str(client_venv.aigc),
        ["--server", server.address, *args],
        cwd=str(client_venv.workdir),
        env=env,
        encoding="utf-8",
        timeout=120,
        dimensions=(40, 200),
    )


def run(
    client_venv: ClientVenv, server_address: str, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess:
    return client_venv.run(client_venv.aigc, "--server", server_address, *args, input=stdin, timeout=180)


def finish(child: pexpect.spawn) -> int:
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus if child.exitstatus is not None else 128 + child.signalstatus


def test_make_deps_installs_the_cli_into_the_repo_venv():
    aigc = VENV_BIN / "aigc"
    assert aigc.is_file(), "no .venv/bin/aigc: run `make deps`"
    version = subprocess.run([aigc, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("aigc "), version


def test_models(client_venv: ClientVenv, cli_server: ServerProcess):
    listing = run(client_venv, cli_server.address, "models")
    assert listing.returncode == 0, listing.stderr
    header, *rows = listing.stdout.splitlines()
    assert header.split() == ["MODEL", "PROVIDER", "STATUS", "CAPABILITIES"]
    assert re.match(r"smollm2 \*\s+local\s+ready\s+tools, json_output, json_schema", rows[0])
    as_json = json.loads(run(client_venv, cli_server.address, "models", "--json").stdout)
    assert as_json[0]["id"] == "smollm2" and as_json[0]["is_default"] is True


def test_chat_prints_tokens_as_they_arrive(client_venv: ClientVenv, cli_server: ServerProcess):
    before = len(access_lines(cli_server, "StreamChat"))
    child = spawn(client_venv, cli_server, "chat", COUNTING, "--max-tokens", "600", "--temperature", "0")
    child.expect(r"1, 2, 3, ")
    # The start of the answer is on the screen while the rest is still being
    # generated: the process runs, and the end of the count has not come yet.
    assert child.isalive()
    assert "100, " not in child.before + child.after + child.buffer
    assert finish(child) == 0
    assert "100, " in child.before, "the rest of the answer followed"
    line = wait_for_lines(cli_server, "StreamChat", before + 1)[-1]
    assert (line["code"], line["completion_tokens"]) == ("OK", 600)


def test_ctrl_c_cancels_the_stream_and_frees_the_model(client_venv: ClientVenv, cli_server: ServerProcess):
    # How fast the model generates right now (this machine may be busy): the
    # yardstick for "freed", from the server's own timing of a probe answer.
    probe = run(
        client_venv, cli_server.address, "chat", COUNTING, "--max-tokens", "100", "--temperature", "0"
    )
    assert probe.returncode == 0, probe.stderr
    timing = access_lines(cli_server, "StreamChat")[-1]
    tokens_per_second = timing["completion_tokens"] / ((timing["latency_ms"] - timing["ttft_ms"]) / 1000)

    before = len(access_lines(cli_server, "StreamChat"))
    child = spawn(client_venv, cli_server, "chat", COUNTING, "--max-tokens", "1000", "--temperature", "0")
    started = time.monotonic()
    child.expect(r"1, 2, 3, ")
    child.sendintr()  # Ctrl-C, through the terminal
    assert finish(child) == 130
    generating = time.monotonic() - started
    assert "interrupted" in child.before

    lines = wait_for_lines(cli_server, "StreamChat", before + 1)
    assert len(lines) == before + 1, "no access log line for the cancelled stream"
    cancelled = lines[-1]
    assert (cancelled["code"], cancelled["cancelled"]) == ("CANCELLED", True)

    # The only slot is free at once. Had llama.cpp gone on generating the
    # 1000 tokens, the next answer would wait for the rest of them first
    # (counted generously: as if it had generated all along since the spawn).
    busy_for = (1000 - tokens_per_second * generating) / tokens_per_second
    started = time.monotonic()
    after = run(client_venv, cli_server.address, "chat", "Say hi.", "--max-tokens", "4")
    waited = time.monotonic() - started
    assert after.returncode == 0, after.stderr
    assert waited < 0.8 * busy_for, (
        f"the next answer took {waited:.1f}s; the slot was busy {busy_for:.1f}s more"
    )


@pytest.mark.parametrize(
    ("args", "stdin", "code", "message"),
    [
        (["chat", "Say hi.", "--max-tokens", "4"], "", 0, None),
        (
            ["chat", "hi", "--model", "no-such-model"],
            "",
            4,
            r"^aigc: NOT_FOUND MODEL_NOT_FOUND: .*no-such-model",
        ),
        (
            ["chat", "hi", "--temperature", "5"],
            "",
            3,
            r"^aigc: INVALID_ARGUMENT INVALID_REQUEST: .*temperature",
        ),
        # Greedy: the count runs to 1000 tokens (~16 s); sampled, it once ended in 0.3 s.
        (
            ["chat", COUNTING, "--max-tokens", "1000", "--temperature", "0", "--timeout", "0.5"],
            "",
            6,
            r"^aigc: DEADLINE_EXCEEDED",
        ),
        (["chat"], "", 2, r"no prompt"),
        (["chat", "--max-tokens", "0", "hi"], "", 2, r"--max-tokens: expected a positive integer"),
    ],
    ids=["ok", "not-found", "invalid", "deadline", "no-prompt", "bad-flag"],
)
def test_exit_codes(client_venv: ClientVenv, cli_server: ServerProcess, args, stdin, code, message):
    result = run(client_venv, cli_server.address, *args, stdin=stdin)
    assert result.returncode == code, result.stderr
    if message is None:
        assert result.stdout.strip() and not result.stderr
    else:
        assert re.search(message, result.stderr, re.MULTILINE), result.stderr
    if code not in (0, 2):
        (line,) = result.stderr.strip().splitlines()  # one line, with the request id
        assert "(request_id " in line or code == 6


def test_unreachable_server_is_exit_code_5(client_venv: ClientVenv):
    result = run(client_venv, f"127.0.0.1:{free_port()}", "chat", "hi")
    assert result.returncode == 5
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("aigc: UNAVAILABLE: ") and "is the server running at 127.0.0.1:" in line


def test_prompt_from_stdin_and_machine_output(client_venv: ClientVenv, cli_server: ServerProcess):
    whole = run(client_venv, cli_server.address, "chat", "--json", "--max-tokens", "8", stdin="Say hi.\n")
    assert whole.returncode == 0, whole.stderr
    (answer,) = [json.loads(line) for line in whole.stdout.splitlines()]
    assert answer["model"] == "smollm2" and answer["message"]["role"] == "ROLE_ASSISTANT"
    assert answer["message"]["parts"][0]["text"] and answer["usage"]["completion_tokens"] > 0

    each = run(client_venv, cli_server.address, "chat", "Say hi.", "--jsonl", "--max-tokens", "8")
    assert each.returncode == 0, each.stderr
    *deltas, last = [json.loads(line) for line in each.stdout.splitlines()]
    assert deltas and all(d["message"]["parts"] for d in deltas)
    assert last["finish_reason"] != "FINISH_REASON_UNSPECIFIED" and last["usage"]["completion_tokens"] > 0


def test_interactive_conversation_keeps_the_previous_turns(
    client_venv: ClientVenv, cli_server: ServerProcess
):
    before = len(access_lines(cli_server, "StreamChat"))
    child = spawn(client_venv, cli_server, "chat", "--max-tokens", "40", "--temperature", "0")
    child.expect("aigc chat with the default model")
    child.expect("> ")
    child.sendline("My name is Zorblax.")
    child.expect("\r\n> ")
    child.sendline("What is my name?")
    child.expect("\r\n> ")
    child.sendline("/reset")
    child.expect(r"\(conversation forgotten\)")
    child.expect("> ")
    child.sendline("What is my name?")
    child.expect("\r\n> ")
    child.sendeof()  # Ctrl-D
    assert finish(child) == 0

    first, second, after_reset = wait_for_lines(cli_server, "StreamChat", before + 3)[before:]
    assert [t["code"] for t in (first, second, after_reset)] == ["OK", "OK", "OK"]
    # The second turn sent the first question and its answer along.
    assert second["prompt_tokens"] >= first["prompt_tokens"] + first["completion_tokens"]
    # After /reset only the new question is sent.
    assert after_reset["prompt_tokens"] < second["prompt_tokens"]


def test_ctrl_c_in_a_conversation_stops_the_answer_not_the_conversation(
    client_venv: ClientVenv, cli_server: ServerProcess
):
    before = len(access_lines(cli_server, "StreamChat"))
    child = spawn(client_venv, cli_server, "chat", "-i", "--max-tokens", "1000", "--temperature", "0")
    child.expect("> ")
    child.sendline(COUNTING)
    child.expect(r"1, 2, 3, ")
    child.sendintr()
    child.expect(r"\(answer cancelled\)")
    child.expect("> ")
    child.sendintr()  # at the prompt: the line is dropped, the conversation goes on
    child.expect(r"\(Ctrl-D or /exit quits\)")
    child.expect("> ")
    child.sendline("Say hi.")
    child.expect("\r\n> ")
    child.sendline("/exit")
    assert finish(child) == 0
    cancelled, answered = wait_for_lines(cli_server, "StreamChat", before + 2)[before:]
    assert (cancelled["code"], cancelled["cancelled"]) == ("CANCELLED", True)
    assert answered["code"] == "OK"
    # The cancelled turn is not part of the conversation.
    assert answered["prompt_tokens"] < 60


# A reasoning model the local one is not: the demo vendor (tests/fakes/demo_vendor.py, OpenAI's
# wire format) streams `reasoning_content`, then the answer, for model `demo-reasoner`.
THOUGHTS = "The user asks about the sea; keep it to one sentence."
ANSWER = "The sea covers most of the Earth."


@pytest.fixture(scope="module")
def reasoner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, FakeServer]]:
    """A server whose only model is the demo vendor's reasoner; the fake keeps what it was sent."""
    with LoopThread() as loop:
        vendor = FakeServer()
        vendor.script(DemoReply())
        loop.run(vendor.__aenter__())
        try:
            config = write_config(
                pathlib.Path(tmp_path_factory.mktemp("reasoner")),
                f"""
                default_model = "demo-reasoner"
                [upstreams.demo]
                kind = "openai"
                base_url = "{vendor.base_url}/v1"
                requires_key = false
                max_retries = 0
                [[models]]
                id = "demo-reasoner"
                upstream = "demo"
                capabilities = ["reasoning"]
                """,
            )
            env = {"AIGC_CONFIG": config, "AIGC_PRESETS": "none", "AIGC_LOCAL_ENABLED": "false"}
            with running_server(env) as server:
                yield server, vendor
        finally:
            loop.run(vendor.__aexit__(None, None, None))


def test_reasoning_is_asked_for_and_shown_apart_from_the_answer(client_venv: ClientVenv, reasoner):
    server, vendor = reasoner
    piped = run(client_venv, server.address, "chat", "--reasoning-effort", "low", "--show-reasoning", "Sea?")
    assert piped.returncode == 0, piped.stderr
    # The effort reached the vendor as OpenAI's `reasoning_effort`.
    assert vendor.requests[-1].json()["reasoning_effort"] == "low"
    # stdout is the answer alone; the reasoning went to stderr under its own line.
    assert piped.stdout == ANSWER + "\n"
    assert piped.stderr == f"[reasoning]\n{THOUGHTS}\n"

    # Not asked for: the server drops the reasoning, nothing but the answer prints.
    plain = run(client_venv, server.address, "chat", "Sea?")
    assert (plain.returncode, plain.stdout, plain.stderr) == (0, ANSWER + "\n", "")
    assert "reasoning_effort" not in vendor.requests[-1].json()

    # On a terminal, both streams share the screen: the reasoning first, dimmed, then the answer.
    child = spawn(client_venv, server, "chat", "--show-reasoning", "Sea?")
    child.expect(re.escape(f"[reasoning]\r\n\x1b[2m{THOUGHTS}\x1b[0m\r\n{ANSWER}\r\n"))
    assert finish(child) == 0


def test_reasoning_in_the_json_outputs(client_venv: ClientVenv, reasoner):
    server, _ = reasoner
    whole = run(client_venv, server.address, "chat", "--json", "--show-reasoning", "Sea?")
    assert whole.returncode == 0, whole.stderr
    parts = json.loads(whole.stdout)["message"]["parts"]
    assert parts == [{"reasoning": {"text": THOUGHTS}}, {"text": ANSWER}]

    each = run(client_venv, server.address, "chat", "--jsonl", "--show-reasoning", "Sea?")
    assert each.returncode == 0, each.stderr
    deltas = [
        p for line in each.stdout.splitlines() for p in json.loads(line).get("message", {}).get("parts", [])
    ]
    assert "".join(p["reasoning"]["text"] for p in deltas if "reasoning" in p) == THOUGHTS


def test_a_reasoning_budget_reaches_the_server(client_venv: ClientVenv, reasoner):
    server, _ = reasoner
    # The OpenAI protocol takes an effort, not a budget: the server refuses it by name.
    refused = run(client_venv, server.address, "chat", "--reasoning-budget", "1024", "Sea?")
    assert refused.returncode == 3, refused.stderr
    assert "INVALID_ARGUMENT" in refused.stderr and "reasoning.budget_tokens" in refused.stderr
    both = run(
        client_venv, server.address, "chat", "--reasoning-budget", "1", "--reasoning-effort", "low", "x"
    )
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
