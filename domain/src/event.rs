//! Discrete events from access gates and lifts.
//!
//! Access credentials never appear here in clear: decoding replaces them with
//! a [`crate::pseudonym::Pseudonym`] before an [`Event`] exists.

use serde::{Deserialize, Serialize};

use crate::pseudonym::Pseudonym;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant,)* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)* _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// Outcome of an access attempt.
    AccessResult { Granted => "granted", Denied => "denied" }
);
string_enum!(
    /// How a person identified at a gate.
    AccessMethod {
        Card => "card",
        Face => "face",
        Fingerprint => "fingerprint",
        Bluetooth => "bluetooth",
        Visitor => "visitor",
        Remote => "remote",
    }
);
string_enum!(
    /// Direction through a gate.
    Direction { In => "in", Out => "out" }
);
string_enum!(
    /// Operating state of a lift.
    LiftState {
        Idle => "idle",
        Moving => "moving",
        DoorOpen => "door_open",
        Fault => "fault",
        Maintenance => "maintenance",
        Inspection => "inspection",
        FireService => "fire_service",
        OutOfService => "out_of_service",
    }
);
string_enum!(
    /// The kind of an event, as stored in `events.event_type`.
    EventType {
        Access => "access",
        DoorForced => "door_forced",
        DoorHeldOpen => "door_held_open",
        Tamper => "tamper",
        Fault => "fault",
        State => "state",
    }
);

/// A decoded, validated event.
#[derive(Debug, Clone, PartialEq)]
pub enum EventDetail {
    Access {
        result: AccessResult,
        method: AccessMethod,
        credential: Option<Pseudonym>,
        direction: Option<Direction>,
        /// Set by gateways for temporary cards and visitor passes.
        credential_expired: bool,
    },
    DoorForced,
    DoorHeldOpen {
        seconds: f64,
    },
    Tamper,
    /// A lift (or other equipment) fault. Codes are kept as sent, lower-case;
    /// `entrapment` (困人) is the one that pages immediately.
    Fault {
        code: String,
    },
    State {
        state: LiftState,
    },
}

impl EventDetail {
    pub fn event_type(&self) -> EventType {
        match self {
            EventDetail::Access { .. } => EventType::Access,
            EventDetail::DoorForced => EventType::DoorForced,
            EventDetail::DoorHeldOpen { .. } => EventType::DoorHeldOpen,
            EventDetail::Tamper => EventType::Tamper,
            EventDetail::Fault { .. } => EventType::Fault,
            EventDetail::State { .. } => EventType::State,
        }
    }

    /// Distinguishes two events of one type at one instant on one device
    /// (two credentials at a double gate); part of the event's identity so a
    /// redelivered event is stored once.
    pub fn discriminator(&self) -> String {
        match self {
            EventDetail::Access { credential, .. } => credential
                .as_ref()
                .map(|c| c.as_str().to_owned())
                .unwrap_or_default(),
            EventDetail::Fault { code } => code.clone(),
            EventDetail::State { state } => state.as_str().to_owned(),
            _ => String::new(),
        }
    }
}

/// An event from one device at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub device_id: String,
    pub ts: chrono::DateTime<chrono::Utc>,
    pub detail: EventDetail,
}
