// A steady Sparkplug B edge node for tests/sparkplug.rs, built from Eclipse
// Tahu's own JavaScript client (`sparkplug-client` 3.2.4 on npm), as
// edge.js is. It runs while the test kills the NATS node the host's session
// is on, so the host must move its session to another node.
//
//   node steady.js <mqtt url> <group> <node> <seconds>
//
// NBIRTH, DBIRTH of "meter1" (energy in Wh by its engUnit property), then a
// DDATA every 100 ms, the energy one Wh higher each time, answering every
// rebirth request (NCMD Node Control/Rebirth) with its births, as Tahu's
// examples do. DDATA are QoS 0, as Sparkplug has them: those sent while
// the host has no session are lost to it, and the host's answer is to ask
// for a rebirth when the sequence jumps. Prints one JSON line: the last
// energy sent, how many DDATA and rebirth requests.

const sparkplug = require("sparkplug-client");

const [url, group, node, seconds] = process.argv.slice(2);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const summary = { rebirths_asked: 0, births: 0, data: 0, last_wh: 1000 };

const client = sparkplug.newClient({
  serverUrl: url,
  username: null,
  password: null,
  groupId: group,
  edgeNode: node,
  clientId: `${group}-${node}`,
  publishDeath: true,
  version: "spBv1.0",
});

function births() {
  client.publishNodeBirth({
    timestamp: Date.now(),
    metrics: [{ name: "Node Control/Rebirth", type: "Boolean", value: false }],
  });
  client.publishDeviceBirth("meter1", {
    timestamp: Date.now(),
    metrics: [
      {
        name: "Meter/energy",
        alias: 10,
        type: "Double",
        value: summary.last_wh,
        properties: { engUnit: { type: "String", value: "Wh" } },
      },
    ],
  });
  summary.births += 1;
}

client.on("birth", births);

client.on("ncmd", (payload) => {
  const rebirth = (payload.metrics || []).find(
    (m) => m.name === "Node Control/Rebirth" && m.value === true,
  );
  if (rebirth) {
    summary.rebirths_asked += 1;
    births();
  }
});

client.on("error", (e) => {
  console.error(`edge: ${e}`);
  process.exit(3);
});

async function main() {
  while (!client.connected) await sleep(20);
  await sleep(300);
  const end = Date.now() + Number(seconds) * 1000;
  while (Date.now() < end) {
    summary.last_wh += 1;
    client.publishDeviceData("meter1", {
      timestamp: Date.now(),
      metrics: [{ alias: 10, type: "Double", value: summary.last_wh }],
    });
    summary.data += 1;
    await sleep(100);
  }
  // Time for a last rebirth request to be answered.
  await sleep(1500);
  client.stop();
  await sleep(200);
  console.log(JSON.stringify(summary));
  process.exit(0);
}

main().catch((e) => {
  console.error(e);
  process.exit(2);
});
