// A steady Sparkplug B edge node for tests/sparkplug.rs, built from Eclipse
// Tahu's own JavaScript client (`sparkplug-client` 3.2.4 on npm), as
// edge.js is (their shared part: tahu-node.js). It runs while the test kills the NATS node the host's session
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

const { edgeNode, run, sleep } = require("./tahu-node");

const [url, group, node, seconds] = process.argv.slice(2);
const summary = { data: 0, last_wh: 1000 };

const edge = edgeNode({
  url,
  group,
  node,
  nodeMetrics: [],
  deviceMetrics: () => [
    {
      name: "Meter/energy",
      alias: 10,
      type: "Double",
      value: summary.last_wh,
      properties: { engUnit: { type: "String", value: "Wh" } },
    },
  ],
  summary,
});

run(async () => {
  await edge.ready();
  const end = Date.now() + Number(seconds) * 1000;
  while (Date.now() < end) {
    summary.last_wh += 1;
    edge.client.publishDeviceData("meter1", {
      timestamp: Date.now(),
      metrics: [{ alias: 10, type: "Double", value: summary.last_wh }],
    });
    summary.data += 1;
    await sleep(100);
  }
  // Time for a last rebirth request to be answered.
  await sleep(1500);
  await edge.finish();
});
