// Node.js client for the agent's end-to-end tests: makes the calls listed in a JSON file with the
// built-in fetch (undici: one keep-alive pool; for https, Node's own statically linked OpenSSL
// with memory BIOs) and prints one JSON result per call.
//
// usage: node native_client.mjs CALLS_JSON
// CALLS_JSON holds [{"url": ..., "headers": {...}, "body": {...}}, ...]. Prints "ready" and waits
// for one line on stdin before the first call, so that the capture can attach to this process's
// OpenSSL first. With NODE_EXTRA_CA_CERTS pointing at the test certificate for https.

import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";

const calls = JSON.parse(readFileSync(process.argv[2], "utf8"));

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
for (const call of calls) {
  const resp = await fetch(call.url, {
    method: "POST",
    headers: { "content-type": "application/json", ...call.headers },
    body: JSON.stringify(call.body),
  });
  // Read to the end, as SDKs do: the whole stream, then the connection goes back to the pool.
  const text = await resp.text();
  results.push({ status: resp.status, bytes: text.length, text });
}
console.log(JSON.stringify(results));
