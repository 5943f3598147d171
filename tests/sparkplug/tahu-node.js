// What edge.js and steady.js share: an edge node made of Eclipse Tahu's
// own JavaScript client (`sparkplug-client` 3.2.4 on npm) that births with
// the metrics it is given, births again whenever the host asks for a
// rebirth (NCMD Node Control/Rebirth, as Tahu's examples do), exits 3 on a
// client error, and counts into a summary the script prints at the end.

const sparkplug = require("sparkplug-client");

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// `nodeMetrics` and `deviceMetrics()` (called at each birth, so a rebirth
// carries the device's latest values) make the NBIRTH and the DBIRTH of
// device "meter1". `summary` gains `births` and `rebirths_asked`.
function edgeNode({ url, group, node, nodeMetrics, deviceMetrics, summary }) {
  summary.births = 0;
  summary.rebirths_asked = 0;
  const edge = { client: null, lastBirth: 0 };
  const client = sparkplug.newClient({
    serverUrl: url,
    // Anonymous: no user name at all (null passes Tahu's required-property
    // check and leaves the CONNECT without one). An empty one ("") is
    // refused by NATS's MQTT gateway ("empty user name not allowed").
    username: null,
    password: null,
    groupId: group,
    edgeNode: node,
    clientId: `${group}-${node}`,
    publishDeath: true,
    version: "spBv1.0",
  });
  edge.client = client;

  const births = () => {
    client.publishNodeBirth({
      timestamp: Date.now(),
      metrics: [
        { name: "Node Control/Rebirth", type: "Boolean", value: false },
        ...nodeMetrics,
      ],
    });
    client.publishDeviceBirth("meter1", { timestamp: Date.now(), metrics: deviceMetrics() });
    summary.births += 1;
    edge.lastBirth = Date.now();
  };
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

  // Resolves once connected and the births have had time to go out.
  edge.ready = async () => {
    while (!client.connected) await sleep(20);
    await sleep(300);
  };
  // NDEATH with the birth's bdSeq, the connection closed, the summary
  // printed as one JSON line, exit 0.
  edge.finish = async () => {
    client.stop();
    await sleep(200);
    console.log(JSON.stringify(summary));
    process.exit(0);
  };
  return edge;
}

// Runs `main`, exiting 2 with the error if it throws.
function run(main) {
  main().catch((e) => {
    console.error(e);
    process.exit(2);
  });
}

module.exports = { edgeNode, run, sleep };
