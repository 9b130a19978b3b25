/**
 * A runnable tour of the TypeScript client, against a server on :9000
 * (`make run` or `make server`):
 *
 *     make ts-client                        # npm ci + tsc: clients/typescript/dist
 *     node clients/typescript/dist/example.js [host:port] ["prompt"]
 *
 * It lists the models, streams a chat to the terminal as it is generated,
 * prints the folded answer's finish reason and usage, then shows what an
 * error looks like (an unknown model) and what a deadline does.
 */

import { AigcClient, AigcError, ChatFolder, FinishReason, Role, textOf } from "./index.js";

const address = process.argv[2] ?? "localhost:9000";
const prompt = process.argv[3] ?? "Write one sentence about the sea.";
const client = new AigcClient({ address });

try {
  const models = await client.allModels();
  console.log(`models: ${models.map((model) => `${model.id} (${model.provider})`).join(", ")}`);

  // Streaming: print each text delta as it arrives, fold the rest.
  const folder = new ChatFolder();
  const request = {
    messages: [{ role: Role.USER, content: prompt }],
    generationConfig: { maxOutputTokens: 64 },
  };
  for await (const message of client.streamChat(request)) {
    process.stdout.write(textOf(folder.add(message)));
  }
  const answer = folder.response();
  const usage = answer.usage;
  console.log(
    `\n[${FinishReason[answer.finishReason]}] ${usage?.promptTokens} prompt + ${usage?.completionTokens} completion tokens`,
  );

  // Errors carry the service's ErrorInfo reason.
  try {
    await client.chat({ model: "no-such-model", messages: [{ role: Role.USER, content: "hi" }] });
  } catch (error) {
    if (!(error instanceof AigcError)) throw error;
    console.log(`error: ${error.codeName} reason=${error.reason} request_id=${error.requestId}`);
  }

  // A deadline: the call ends with DEADLINE_EXCEEDED after ~200 ms.
  try {
    await client.chat(
      {
        messages: [{ role: Role.USER, content: "List the numbers from 1 to 1000." }],
        generationConfig: { maxOutputTokens: 1000 },
      },
      { timeoutMs: 200 },
    );
  } catch (error) {
    if (!(error instanceof AigcError)) throw error;
    console.log(`deadline: ${error.codeName} reason=${error.reason || "(client-side)"}`);
  }
} catch (error) {
  console.error(error instanceof AigcError ? error.message : error);
  process.exitCode = 1;
} finally {
  client.close();
}
