// Node.js client for the capture tests: the same calls as tests/capture/traffic.py's clients,
// made with the built-in fetch (undici) over one keep-alive pool. Node carries its own OpenSSL,
// linked into the executable, with memory BIOs: the hardest case for tying TLS to a socket.
//
// usage: node node_client.mjs BASE_URL COUNT [START_AT]
// With NODE_EXTRA_CA_CERTS pointing at the test certificate for https. Waits for one line on
// stdin before the first call (after printing "ready"), so that the capture can attach first.

import { createInterface } from "node:readline";

const KINDS = ["plain", "gzip", "chunked", "sse"];
const [base, countText, startText] = process.argv.slice(2);
const count = Number(countText);
const startAt = Number(startText || "0");

function requestFor(seq) {
  const kind = KINDS[seq % KINDS.length];
  if (kind === "gzip") return { method: "GET", path: `/v1/models?seq=${seq}`, body: null };
  const body = JSON.stringify({
    model: "test-model",
    seq,
    stream: kind === "sse",
    messages: [{ role: "user", content: `question ${seq}` }],
  });
  const path = kind === "chunked" ? "/v1/chunked" : "/v1/chat/completions";
  return { method: "POST", path, body };
}

async function waitForGo() {
  console.log("ready");
  const rl = createInterface({ input: process.stdin });
  for await (const _line of rl) {
    rl.close();
    return;
  }
}

await waitForGo();
const results = [];
for (let seq = startAt; seq < startAt + count; seq++) {
  const { method, path, body } = requestFor(seq);
  const headers = { "x-test-seq": String(seq) };
  if (body !== null) headers["content-type"] = "application/json";
  const resp = await fetch(base + path, { method, headers, body });
  const text = await resp.text();
  results.push({ seq, status: resp.status, body: text });
}
console.log(JSON.stringify(results));
