// A Sparkplug B edge node for tests/sparkplug.rs, built from Eclipse Tahu's
// own JavaScript client (`sparkplug-client` 3.2.4 on npm) and payload codec
// (`sparkplug-payload` 1.0.3). Nothing here encodes protobuf by hand: the
// births, data, the death and the malformed frames go out as Tahu makes
// them. The host under test is estatemon's ingest.
//
//   node edge.js <mqtt url> <group> <node>
//
// The node: NBIRTH, DBIRTH of "meter1" (energy in Wh by its engUnit
// property, power in kW, a fan speed estatemon has no metric for), five
// DDATA by alias only, one historical value an hour old, then a sequence
// gap. When the host asks for a rebirth (NCMD Node Control/Rebirth) it
// births again, as Tahu's examples do. Then, on the raw MQTT connection: a
// frame that is not protobuf, a DDATA with an alias no birth defined, a
// DDATA from a node that never was born; a DDEATH of "meter1" stamped a
// millisecond after its last birth, which reaches the host most of a second
// later; last, NDEATH with the birth's bdSeq. Prints one JSON line: what it
// sent (with the DDEATH's timestamp) and what it was asked.

const { edgeNode, run, sleep } = require("./tahu-node");
const payloads = require("sparkplug-payload").get("spBv1.0");

const [url, group, node] = process.argv.slice(2);
const summary = { data: 0, ddeath_ms: null };
const t0 = Date.now();

const edge = edgeNode({
  url,
  group,
  node,
  nodeMetrics: [{ name: "Cabinet/temperature_c", alias: 1, type: "Float", value: 31.5 }],
  deviceMetrics: () => [
    {
      name: "Meter/energy",
      alias: 10,
      type: "Double",
      value: 1000.0,
      properties: { engUnit: { type: "String", value: "Wh" } },
    },
    { name: "power_kw", alias: 11, type: "Float", value: 1.5 },
    { name: "Fan speed", alias: 12, type: "Int16", value: -3 },
  ],
  summary,
});

run(async () => {
  await edge.ready();
  const client = edge.client;
  for (let i = 1; i <= 5; i++) {
    client.publishDeviceData("meter1", {
      timestamp: t0 + i * 1000,
      metrics: [
        { alias: 10, type: "Double", value: 1000.0 + 100 * i },
        { alias: 11, type: "Float", value: 1.5 + i / 10 },
      ],
    });
    summary.data += 1;
  }
  // Store-and-forward: a value from an hour ago, marked historical.
  client.publishDeviceData("meter1", {
    timestamp: Date.now(),
    metrics: [
      {
        alias: 11,
        type: "Float",
        value: 0.75,
        isHistorical: true,
        timestamp: t0 - 3600 * 1000,
      },
    ],
  });
  summary.data += 1;
  // A sequence gap: two numbers never sent.
  client.seq = (client.seq + 2) % 256;
  client.publishDeviceData("meter1", {
    timestamp: Date.now(),
    metrics: [{ alias: 10, type: "Double", value: 1600.0 }],
  });
  summary.data += 1;
  // The host waits out its reorder window, then asks for a rebirth.
  for (let i = 0; i < 100 && summary.rebirths_asked === 0; i++) await sleep(100);
  await sleep(300);

  const raw = client.client;
  const topic = (kind, n, d) => `spBv1.0/${group}/${kind}/${n}${d ? "/" + d : ""}`;
  raw.publish(topic("DDATA", node, "meter1"), Buffer.from("\xff\xff\xff not protobuf", "latin1"));
  const unknownAlias = payloads.encodePayload({
    timestamp: Date.now(),
    seq: client.seq,
    metrics: [{ alias: 99, type: "Double", value: 5 }],
  });
  client.seq = (client.seq + 1) % 256;
  raw.publish(topic("DDATA", node, "meter1"), Buffer.from(unknownAlias));
  const unborn = payloads.encodePayload({
    timestamp: Date.now(),
    seq: 5,
    metrics: [{ alias: 10, type: "Double", value: 5 }],
  });
  raw.publish(topic("DDATA", `${node}-unborn`, "meter9"), Buffer.from(unborn));
  await sleep(500);
  // The device dies: its DDEATH says when, long before it is sent.
  summary.ddeath_ms = edge.lastBirth + 1;
  client.publishDeviceDeath("meter1", { timestamp: summary.ddeath_ms, metrics: [] });
  await sleep(100);
  // NDEATH with the birth's bdSeq, then the connection closes.
  await edge.finish();
});
