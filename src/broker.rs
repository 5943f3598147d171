//! Finding a broker for the quick start: use the one at `mqtt.url` when it
//! answers; otherwise, on a local address, embed rumqttd there.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use estatemon_domain::config::MqttConfig;

use crate::BrokerUnreachable;

/// Where the demo's broker came from.
pub enum BrokerSource {
    Existing,
    #[cfg(feature = "embedded-broker")]
    Embedded,
}

pub async fn reachable(addr: SocketAddr) -> bool {
    tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
        .await
        .is_ok_and(|r| r.is_ok())
}

pub async fn ensure(mqtt: &MqttConfig) -> Result<BrokerSource, BrokerUnreachable> {
    let endpoint = mqtt.endpoint().map_err(BrokerUnreachable)?;
    let addr = (endpoint.host.as_str(), endpoint.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            BrokerUnreachable(format!("cannot resolve MQTT host `{}`", endpoint.host))
        })?;
    if reachable(addr).await {
        return Ok(BrokerSource::Existing);
    }
    if !addr.ip().is_loopback() {
        return Err(BrokerUnreachable(format!(
            "no MQTT broker answers at {addr} (mqtt.url); start it, or point ESTATEMON_MQTT_URL at one"
        )));
    }
    embed(addr).await
}

#[cfg(feature = "embedded-broker")]
async fn embed(addr: SocketAddr) -> Result<BrokerSource, BrokerUnreachable> {
    let config = format!(
        r#"
id = 0
[router]
max_connections = 1000
max_outgoing_packet_count = 1000
max_segment_size = 104857600
max_segment_count = 10

[v5.1]
name = "estatemon-embedded"
listen = "{addr}"
next_connection_delay_ms = 1
  [v5.1.connections]
  connection_timeout_ms = 60000
  max_payload_size = 1048576
  max_inflight_count = 1000
  dynamic_filters = true
"#
    );
    let config: rumqttd::Config = toml::from_str(&config)
        .map_err(|e| BrokerUnreachable(format!("embedded broker configuration: {e}")))?;
    std::thread::Builder::new()
        .name("embedded-mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(|e| BrokerUnreachable(format!("cannot start embedded broker: {e}")))?;
    for _ in 0..50 {
        if reachable(addr).await {
            tracing::info!(%addr, "no broker was running: started the embedded MQTT broker (rumqttd)");
            return Ok(BrokerSource::Embedded);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(BrokerUnreachable(format!(
        "the embedded MQTT broker did not start on {addr}"
    )))
}

#[cfg(not(feature = "embedded-broker"))]
async fn embed(addr: SocketAddr) -> Result<BrokerSource, BrokerUnreachable> {
    Err(BrokerUnreachable(format!(
        "no MQTT broker answers at {addr} and this build has no embedded broker \
         (feature `embedded-broker`); start Mosquitto or set ESTATEMON_MQTT_URL"
    )))
}
