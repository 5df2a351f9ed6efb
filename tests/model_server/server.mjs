// A test-only stand-in for Ollama and for an OpenAI-compatible server, backed by a REAL GGUF model through
// llama.cpp (node-llama-cpp, prebuilt from npm). The tests marked `real_model` start it (tests/real_model.py).
//
// Routes (the part of each API harmonia uses):
//   GET  /api/version, GET /api/tags                     Ollama: version, the one model it "has pulled"
//   POST /api/chat   (stream false, format = JSON schema,  Ollama structured outputs; done_reason "length"
//                     options.num_predict/temperature/      when num_predict cut the reply
//                     repeat_penalty)
//   POST /api/embed                                        Ollama: the model's own embeddings
//   GET  /v1/models, POST /v1/chat/completions             OpenAI: response_format json_schema | json_object,
//                                                          max_tokens; finish_reason "length" at the cap
// An unknown model is a 404 in each API's own shape. One generation runs at a time (as Ollama with
// OLLAMA_NUM_PARALLEL=1); a client that disconnects aborts its generation, as Ollama does.
// With --no-json-schema the OpenAI route answers 400 to response_format json_schema, as servers without
// structured outputs do, so the client's validate-and-repair path is exercised.
//
// Usage: node server.mjs --gguf FILE [--port 0] [--name smollm2:135m] [--threads 1] [--no-json-schema]
// Prints one line "listening http://127.0.0.1:PORT" on stdout once the model is loaded; logs go to stderr.

import http from "node:http";
import { parseArgs } from "node:util";
import { getLlama, LlamaChatSession, LlamaLogLevel } from "node-llama-cpp";

const { values: args } = parseArgs({
  options: {
    gguf: { type: "string" },
    port: { type: "string", default: "0" },
    name: { type: "string", default: "smollm2:135m" },
    threads: { type: "string", default: "1" },
    context: { type: "string", default: "4096" },
    "no-json-schema": { type: "boolean", default: false },
  },
});
if (!args.gguf) {
  console.error("usage: node server.mjs --gguf FILE [--port N] [--name NAME] [--threads N]");
  process.exit(2);
}
const NAME = args.name;
const threads = Number(args.threads);

const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: args.gguf });
const context = await model.createContext({ contextSize: Number(args.context), threads, sequences: 1 });
const sequence = context.getSequence();
let embeddings = null; // created on first use

const grammars = new Map(); // JSON text of a schema -> grammar (building one costs a few ms)
async function grammarFor(schema) {
  if (schema === "json") {
    if (!grammars.has("json")) grammars.set("json", await llama.getGrammarFor("json"));
    return grammars.get("json");
  }
  const key = JSON.stringify(schema);
  if (!grammars.has(key)) grammars.set(key, await llama.createGrammarForJsonSchema(schema));
  return grammars.get(key);
}

// One generation at a time: each waits for the previous one to finish (or be aborted).
let tail = Promise.resolve();
function serially(work) {
  const run = tail.then(work, work);
  tail = run.catch(() => {});
  return run;
}

async function generate(messages, { schema, maxTokens, temperature, repeatPenalty, signal }) {
  return serially(async () => {
    if (signal.aborted) return { text: "", stop: "abort", promptTokens: 0, outputTokens: 0 };
    const system = messages.filter((m) => m.role === "system").map((m) => m.content).join("\n\n");
    const turns = messages.filter((m) => m.role !== "system");
    const last = turns.pop();
    // No clearHistory(): the sequence keeps the evaluated tokens, so a prompt that starts like the last one
    // (the same system prompt and few-shot turns) only evaluates what differs.
    const session = new LlamaChatSession({ contextSequence: sequence, systemPrompt: system, autoDisposeSequence: false });
    try {
      const history = system ? [{ type: "system", text: system }] : [];
      for (const turn of turns) {
        history.push(turn.role === "assistant" ? { type: "model", response: [turn.content] } : { type: "user", text: turn.content });
      }
      session.setChatHistory(history);
      const grammar = schema ? await grammarFor(schema) : undefined;
      const meta = await session.promptWithMeta(last ? last.content : "", {
        grammar,
        maxTokens,
        temperature,
        repeatPenalty: repeatPenalty > 1 ? { penalty: repeatPenalty } : false,
        signal,
        stopOnAbortSignal: true,
      });
      const outputTokens = model.tokenize(meta.responseText).length;
      return { text: meta.responseText, stop: meta.stopReason, promptTokens: 0, outputTokens };
    } finally {
      session.dispose({ disposeSequence: false });
    }
  });
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (chunk) => chunks.push(chunk));
    req.on("end", () => {
      const raw = Buffer.concat(chunks).toString("utf8");
      try {
        resolve(raw ? JSON.parse(raw) : {});
      } catch (error) {
        reject(error);
      }
    });
    req.on("error", reject);
  });
}

function send(res, status, payload) {
  if (res.destroyed) return;
  const data = JSON.stringify(payload);
  res.writeHead(status, { "Content-Type": "application/json; charset=utf-8", "Content-Length": Buffer.byteLength(data) });
  res.end(data);
}

function abortOnDisconnect(res) {
  const controller = new AbortController();
  res.on("close", () => {
    if (!res.writableFinished) {
      console.error("client disconnected: aborting its generation");
      controller.abort();
    }
  });
  return controller.signal;
}

const modelEntry = {
  name: NAME,
  model: NAME,
  modified_at: new Date(0).toISOString(),
  size: 98362432,
  digest: "0".repeat(64),
  details: { format: "gguf", family: "llama", parameter_size: "135M", quantization_level: "Q4_1" },
};

async function ollamaChat(body, res) {
  if (body.model !== NAME) return send(res, 404, { error: `model "${body.model}" not found, try pulling it first` });
  const options = body.options || {};
  const started = process.hrtime.bigint();
  const result = await generate(body.messages || [], {
    schema: body.format === "json" ? "json" : body.format || undefined,
    maxTokens: Number.isInteger(options.num_predict) && options.num_predict > 0 ? options.num_predict : undefined,
    temperature: options.temperature ?? 0.8,
    repeatPenalty: options.repeat_penalty ?? 1.1,
    signal: abortOnDisconnect(res),
  });
  send(res, 200, {
    model: NAME,
    created_at: new Date().toISOString(),
    message: { role: "assistant", content: result.text },
    done: true,
    done_reason: result.stop === "maxTokens" ? "length" : "stop",
    total_duration: Number(process.hrtime.bigint() - started),
    eval_count: result.outputTokens,
  });
}

async function openaiChat(body, res) {
  if (body.model !== NAME) {
    return send(res, 404, {
      error: { message: `The model '${body.model}' does not exist`, type: "invalid_request_error", code: "model_not_found" },
    });
  }
  const format = body.response_format || {};
  let schema;
  if (format.type === "json_schema") {
    if (args["no-json-schema"]) {
      return send(res, 400, { error: { message: "response_format json_schema is not supported", type: "invalid_request_error" } });
    }
    schema = format.json_schema?.schema;
  } else if (format.type === "json_object") {
    schema = "json";
  }
  const maxTokens = body.max_completion_tokens ?? body.max_tokens;
  const result = await generate(body.messages || [], {
    schema,
    maxTokens: Number.isInteger(maxTokens) && maxTokens > 0 ? maxTokens : undefined,
    temperature: body.temperature ?? 1.0,
    repeatPenalty: body.repeat_penalty ?? 1.0,
    signal: abortOnDisconnect(res),
  });
  send(res, 200, {
    id: `chatcmpl-${Date.now()}`,
    object: "chat.completion",
    created: Math.floor(Date.now() / 1000),
    model: NAME,
    choices: [
      {
        index: 0,
        message: { role: "assistant", content: result.text },
        finish_reason: result.stop === "maxTokens" ? "length" : "stop",
      },
    ],
    usage: { prompt_tokens: result.promptTokens, completion_tokens: result.outputTokens, total_tokens: result.outputTokens },
  });
}

async function embed(body, res) {
  if (body.model !== NAME) return send(res, 404, { error: `model "${body.model}" not found, try pulling it first` });
  embeddings ??= await model.createEmbeddingContext({ threads });
  const inputs = typeof body.input === "string" ? [body.input] : body.input || [];
  const vectors = [];
  for (const text of inputs) vectors.push(Array.from((await embeddings.getEmbeddingFor(text)).vector));
  send(res, 200, { model: NAME, embeddings: vectors });
}

const server = http.createServer(async (req, res) => {
  const route = `${req.method} ${req.url.split("?")[0]}`;
  try {
    const body = req.method === "POST" ? await readBody(req) : {};
    if (route === "GET /api/version") return send(res, 200, { version: "0.0.0-harmonia-test-model-server" });
    if (route === "GET /api/tags") return send(res, 200, { models: [modelEntry] });
    if (route === "POST /api/chat") return await ollamaChat(body, res);
    if (route === "POST /api/embed") return await embed(body, res);
    if (route === "GET /v1/models") return send(res, 200, { object: "list", data: [{ id: NAME, object: "model", owned_by: "tests" }] });
    if (route === "POST /v1/chat/completions") return await openaiChat(body, res);
    return send(res, 404, { error: `no route ${route}` });
  } catch (error) {
    console.error(`${route} failed:`, error);
    return send(res, 500, { error: String(error && error.message ? error.message : error) });
  }
});

server.listen(Number(args.port), "127.0.0.1", () => {
  process.stdout.write(`listening http://127.0.0.1:${server.address().port}\n`);
});
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}
