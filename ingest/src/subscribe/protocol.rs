//! The two MQTT versions the session speaks, behind one client and one
//! event loop, so that [`super::run`] is written once:
//!
//! - **MQTT 5** to a broker such as Mosquitto (the default): the receive
//!   maximum, subscription identifiers, a session expiry.
//! - **MQTT 3.1.1** to a NATS node's MQTT gateway, which speaks nothing
//!   else (`ingest.source = "nats"`, for Sparkplug and Home Assistant
//!   discovery): a persistent session (`clean_session = false`, kept by
//!   the server until a clean connect), QoS 1, manual acknowledgements.
//!   The server bounds what it sends unacknowledged (NATS: the `mqtt`
//!   block's `max_ack_pending`, 1,024 by default); no subscription
//!   identifiers, so retained messages come again with every subscribe.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5;

/// Which MQTT the session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V5,
    V311,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V5 => "5",
            Version::V311 => "3.1.1",
        }
    }
}

/// The session's client: publishes, subscribes, acknowledges.
#[derive(Clone)]
pub enum Client {
    V5(v5::AsyncClient),
    V311(rumqttc::AsyncClient),
}

/// What an acknowledgement needs of a PUBLISH (topic, payload and
/// properties emptied).
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum Slim {
    V5(v5::mqttbytes::v5::Publish),
    V311(rumqttc::Publish),
}

impl Slim {
    pub fn pkid(&self) -> u16 {
        match self {
            Slim::V5(p) => p.pkid,
            Slim::V311(p) => p.pkid,
        }
    }

    /// QoS 1 or 2: the broker redelivers it until acknowledged.
    pub fn acknowledged(&self) -> bool {
        match self {
            Slim::V5(p) => p.qos != v5::mqttbytes::QoS::AtMostOnce,
            Slim::V311(p) => p.qos != rumqttc::QoS::AtMostOnce,
        }
    }
}

/// A PUBLISH received.
pub struct Incoming {
    pub topic: String,
    pub payload: Bytes,
    pub retain: bool,
    /// The subscription identifiers it came for (MQTT 5 only).
    pub subscription_ids: Vec<usize>,
    pub slim: Slim,
}

/// What the event loop reports, in either version. (A PUBLISH, the
/// common case, is kept inline: no allocation per message.)
#[allow(clippy::large_enum_variant)]
pub enum Ev {
    ConnAck {
        session_present: bool,
        /// The broker takes subscription identifiers (MQTT 5, unless its
        /// CONNACK says otherwise).
        ids_available: bool,
    },
    SubAck {
        granted: usize,
        refused: Vec<String>,
    },
    Publish(Incoming),
    /// A PUBACK for one of our QoS 1 publishes; `Some(reason)` when the
    /// broker refused it (MQTT 5 reason codes).
    PubAck {
        pkid: u16,
        refused: Option<String>,
    },
    /// One of our PUBLISHes left, with its packet id (0 for QoS 0).
    SentPublish(u16),
    Disconnect(String),
    Other,
}

/// The event loop of either version.
#[allow(clippy::large_enum_variant)]
pub enum EventLoop {
    V5(v5::EventLoop),
    V311(rumqttc::EventLoop),
}

/// A retained QoS 1 Last Will (Sparkplug's offline `STATE`).
#[derive(Clone)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
}

impl EventLoop {
    pub async fn poll(&mut self) -> Result<Ev, String> {
        match self {
            EventLoop::V5(el) => el.poll().await.map(from_v5).map_err(|e| e.to_string()),
            EventLoop::V311(el) => el.poll().await.map(from_v311).map_err(|e| e.to_string()),
        }
    }

    /// The broker of the next CONNECT (`o` with another host, port and
    /// credentials; the session's other settings are the same). The
    /// request queue, the pending requests and the session state stay.
    pub fn move_to(&mut self, o: &Options) {
        match self {
            EventLoop::V5(el) => el.options = options_v5(o),
            EventLoop::V311(el) => el.mqtt_options = options_v311(o),
        }
    }

    /// The Will of the next CONNECT.
    pub fn set_last_will(&mut self, will: Will) {
        match self {
            EventLoop::V5(el) => {
                el.options.set_last_will(will_v5(will));
            }
            EventLoop::V311(el) => {
                el.mqtt_options.set_last_will(will_v311(will));
            }
        }
    }
}

fn will_v5(w: Will) -> v5::mqttbytes::v5::LastWill {
    v5::mqttbytes::v5::LastWill::new(
        w.topic,
        w.payload,
        v5::mqttbytes::QoS::AtLeastOnce,
        true,
        None,
    )
}

fn will_v311(w: Will) -> rumqttc::LastWill {
    rumqttc::LastWill::new(w.topic, w.payload, rumqttc::QoS::AtLeastOnce, true)
}

fn from_v5(event: v5::Event) -> Ev {
    use v5::mqttbytes::v5::{Packet, PubAckReason, Publish, SubscribeReasonCode};
    match event {
        v5::Event::Incoming(Packet::ConnAck(ack)) => Ev::ConnAck {
            session_present: ack.session_present,
            // A broker that does not take them says so in CONNACK.
            ids_available: ack
                .properties
                .as_ref()
                .and_then(|p| p.subscription_identifiers_available)
                != Some(0),
        },
        v5::Event::Incoming(Packet::SubAck(ack)) => {
            let refused: Vec<String> = ack
                .return_codes
                .iter()
                .filter(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                .map(|c| format!("{c:?}"))
                .collect();
            Ev::SubAck {
                granted: ack.return_codes.len() - refused.len(),
                refused,
            }
        }
        v5::Event::Incoming(Packet::Publish(publish)) => {
            let topic = String::from_utf8_lossy(&publish.topic).into_owned();
            let payload = publish.payload.clone();
            let retain = publish.retain;
            let subscription_ids = publish
                .properties
                .as_ref()
                .map(|p| p.subscription_identifiers.clone())
                .unwrap_or_default();
            Ev::Publish(Incoming {
                topic,
                payload,
                retain,
                subscription_ids,
                slim: Slim::V5(Publish {
                    topic: Bytes::new(),
                    payload: Bytes::new(),
                    properties: None,
                    ..publish
                }),
            })
        }
        v5::Event::Incoming(Packet::PubAck(ack)) => Ev::PubAck {
            pkid: ack.pkid,
            refused: (!matches!(
                ack.reason,
                PubAckReason::Success | PubAckReason::NoMatchingSubscribers
            ))
            .then(|| format!("{:?}", ack.reason)),
        },
        v5::Event::Incoming(Packet::Disconnect(d)) => {
            Ev::Disconnect(format!("{:?}", d.reason_code))
        }
        v5::Event::Outgoing(rumqttc::Outgoing::Publish(pkid)) => Ev::SentPublish(pkid),
        _ => Ev::Other,
    }
}

fn from_v311(event: rumqttc::Event) -> Ev {
    use rumqttc::{Packet, SubscribeReasonCode};
    match event {
        rumqttc::Event::Incoming(Packet::ConnAck(ack)) => Ev::ConnAck {
            session_present: ack.session_present,
            ids_available: false,
        },
        rumqttc::Event::Incoming(Packet::SubAck(ack)) => {
            let granted = ack
                .return_codes
                .iter()
                .filter(|c| matches!(c, SubscribeReasonCode::Success(_)))
                .count();
            Ev::SubAck {
                granted,
                refused: vec!["Failure".to_owned(); ack.return_codes.len() - granted],
            }
        }
        rumqttc::Event::Incoming(Packet::Publish(publish)) => Ev::Publish(Incoming {
            topic: publish.topic.clone(),
            payload: publish.payload.clone(),
            retain: publish.retain,
            subscription_ids: Vec::new(),
            slim: Slim::V311(rumqttc::Publish {
                topic: String::new(),
                payload: Bytes::new(),
                ..publish
            }),
        }),
        // 3.1.1 has no reason codes: a PUBACK is a success.
        rumqttc::Event::Incoming(Packet::PubAck(ack)) => Ev::PubAck {
            pkid: ack.pkid,
            refused: None,
        },
        rumqttc::Event::Incoming(Packet::Disconnect) => Ev::Disconnect("DISCONNECT".into()),
        rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(pkid)) => Ev::SentPublish(pkid),
        _ => Ev::Other,
    }
}

/// What the session's CONNECT says.
#[derive(Clone)]
pub struct Options {
    pub version: Version,
    pub client_id: String,
    pub host: String,
    pub port: u16,
    pub keep_alive: Duration,
    /// MQTT 5 only (a 3.1.1 server keeps the session until a clean connect).
    pub session_expiry_s: u32,
    /// MQTT 5 only (a 3.1.1 server decides).
    pub receive_maximum: u16,
    pub max_packet: usize,
    pub credentials: Option<(String, String)>,
    pub will: Option<Will>,
    /// The request queue's bound (our acknowledgements go through it).
    pub capacity: usize,
}

/// A client and its event loop: persistent session, manual acknowledgements.
pub fn new(o: Options) -> (Client, EventLoop) {
    match o.version {
        Version::V5 => {
            let (client, el) = v5::AsyncClient::new(options_v5(&o), o.capacity);
            (Client::V5(client), EventLoop::V5(el))
        }
        Version::V311 => {
            let (client, el) = rumqttc::AsyncClient::new(options_v311(&o), o.capacity);
            (Client::V311(client), EventLoop::V311(el))
        }
    }
}

fn options_v5(o: &Options) -> v5::MqttOptions {
    let mut opts = v5::MqttOptions::new(o.client_id.clone(), o.host.clone(), o.port);
    opts.set_keep_alive(o.keep_alive);
    opts.set_clean_start(false);
    opts.set_session_expiry_interval(Some(o.session_expiry_s));
    opts.set_receive_maximum(Some(o.receive_maximum));
    opts.set_manual_acks(true);
    opts.set_max_packet_size(Some(o.max_packet.min(256 << 20) as u32));
    if let Some((user, pass)) = o.credentials.clone() {
        opts.set_credentials(user, pass);
    }
    if let Some(w) = o.will.clone() {
        opts.set_last_will(will_v5(w));
    }
    opts
}

fn options_v311(o: &Options) -> rumqttc::MqttOptions {
    let mut opts = rumqttc::MqttOptions::new(o.client_id.clone(), o.host.clone(), o.port);
    opts.set_keep_alive(o.keep_alive);
    opts.set_clean_session(false);
    opts.set_manual_acks(true);
    // rumqttc's 3.1.1 default takes 10 KiB at most.
    let max = o.max_packet.min(256 << 20);
    opts.set_max_packet_size(max, max);
    if let Some((user, pass)) = o.credentials.clone() {
        opts.set_credentials(user, pass);
    }
    if let Some(w) = o.will.clone() {
        opts.set_last_will(will_v311(w));
    }
    opts
}

impl Client {
    /// Queues a PUBLISH without waiting (QoS 1 when `qos1`, else 0).
    pub fn try_publish(
        &self,
        topic: String,
        qos1: bool,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), String> {
        match self {
            Client::V5(c) => {
                let qos = if qos1 {
                    v5::mqttbytes::QoS::AtLeastOnce
                } else {
                    v5::mqttbytes::QoS::AtMostOnce
                };
                c.try_publish(topic, qos, retain, payload)
                    .map_err(|e| e.to_string())
            }
            Client::V311(c) => {
                let qos = if qos1 {
                    rumqttc::QoS::AtLeastOnce
                } else {
                    rumqttc::QoS::AtMostOnce
                };
                c.try_publish(topic, qos, retain, payload)
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Subscribes one filter at QoS 1. MQTT 5: under the identifier `id`
    /// (when the broker takes them), with retained messages only for a new
    /// subscription unless `replay_retained` (Home Assistant's discovery
    /// configs, which every new process must read again). 3.1.1 sends
    /// retained messages with every subscribe and has no identifiers.
    pub async fn subscribe(
        &self,
        filter: String,
        id: Option<usize>,
        replay_retained: bool,
    ) -> Result<(), String> {
        match self {
            Client::V5(c) => {
                use v5::mqttbytes::v5::{Filter, RetainForwardRule, SubscribeProperties};
                let f = Filter {
                    retain_forward_rule: if replay_retained {
                        RetainForwardRule::OnEverySubscribe
                    } else {
                        RetainForwardRule::OnNewSubscribe
                    },
                    ..Filter::new(filter, v5::mqttbytes::QoS::AtLeastOnce)
                };
                let props = SubscribeProperties {
                    id,
                    user_properties: Vec::new(),
                };
                c.subscribe_many_with_properties(vec![f], props)
                    .await
                    .map_err(|e| e.to_string())
            }
            Client::V311(c) => c
                .subscribe(filter, rumqttc::QoS::AtLeastOnce)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Queues the acknowledgement of a received PUBLISH (nothing for QoS 0).
    pub fn try_ack(&self, slim: &Slim) -> Result<(), String> {
        match (self, slim) {
            (Client::V5(c), Slim::V5(p)) => c.try_ack(p).map_err(|e| e.to_string()),
            (Client::V311(c), Slim::V311(p)) => c.try_ack(p).map_err(|e| e.to_string()),
            _ => Err("acknowledgement of another MQTT version's message".into()),
        }
    }

    pub fn try_disconnect(&self) -> Result<(), String> {
        match self {
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V311(c) => c.try_disconnect().map_err(|e| e.to_string()),
        }
    }
}
