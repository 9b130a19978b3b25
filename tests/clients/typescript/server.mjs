// Starts the real `python -m server` (built-in local model on) for the
// TypeScript client's tests, as tests/support/processes.py does for pytest:
// a free port, one worker, metrics off, its output captured to a temp file.
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";

import { AigcClient } from "@aigc/client";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

export async function freePort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** A running server: `address`, `log()` (its output so far), `stop()`; `apiKey` for a server with keys on. */
export async function startServer({ env = {}, timeoutMs = 90_000, apiKey = "" } = {}) {
  const port = await freePort();
  const address = `127.0.0.1:${port}`;
  const logPath = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "aigc-ts-")), "server.log");
  const logFd = fs.openSync(logPath, "w");
  const python = process.env.AIGC_TEST_PYTHON ?? path.join(ROOT, ".venv", "bin", "python");
  const child = spawn(python, ["-m", "server"], {
    cwd: ROOT,
    stdio: ["ignore", logFd, logFd],
    env: {
      ...process.env,
      PYTHONPATH: `${ROOT}${path.delimiter}${path.join(ROOT, "gen", "python")}`,
      PYTHONUNBUFFERED: "1",
      AIGC_GRPC_ADDRESS: address,
      AIGC_WORKERS: "1",
      AIGC_METRICS_ADDRESS: "off",
      AIGC_PRESETS: "none",
      AIGC_SHUTDOWN_GRACE_SECONDS: "3",
      ...env,
    },
  });
  fs.closeSync(logFd);
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve(code ?? signal)));
  const log = () => fs.readFileSync(logPath, "utf8");
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const done = await Promise.race([exited, sleep(15_000, "timeout", { ref: false })]);
      if (done === "timeout") {
        child.kill("SIGKILL");
        await exited;
      }
    }
  };

  // Ready when ListModels answers with the local model ready.
  const probe = new AigcClient({ address, apiKey });
  const deadline = Date.now() + timeoutMs;
  try {
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`server exited early:\n${log()}`);
      }
      try {
        const { models } = await probe.listModels({}, { timeoutMs: 1000 });
        if (models.some((model) => model.ready)) {
          break;
        }
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        throw new Error(`server not serving after ${timeoutMs} ms:\n${log()}`);
      }
      await sleep(200);
    }
  } catch (error) {
    await stop();
    throw error;
  } finally {
    probe.close();
  }
  return { address, log, stop };
}
