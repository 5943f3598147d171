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
    /// A step of a rescue from a lift (EN 81-28's alarm, acknowledgement
    /// and end of alarm; the estate's own rescuer-on-site and release).
    RescueStep {
        Acknowledged => "acknowledged",
        RescuerOnSite => "rescuer_on_site",
        Released => "released",
        FalseAlarm => "false_alarm",
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
        AlarmTest => "alarm_test",
        Rescue => "rescue",
        Inspection => "inspection",
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
        /// The credential presented with the change (a technician's card
        /// at the maintenance switch), pseudonymised: a maintenance-mode
        /// visit counts as the lift's inspection only with one.
        credential: Option<Pseudonym>,
    },
    /// The lift's periodic alarm-line test call (EN 81-28: at least every
    /// three days), passed or failed.
    AlarmTest {
        passed: bool,
    },
    /// A step of freeing a trapped passenger, from the lift's remote alarm
    /// unit, the rescue service or a technician's app.
    Rescue {
        step: RescueStep,
    },
    /// A technician's inspection from a patrol app, stored in
    /// `inspections` (not `events`) with the work items it opens.
    Inspection(Box<crate::inspection::Report>),
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
            EventDetail::AlarmTest { .. } => EventType::AlarmTest,
            EventDetail::Rescue { .. } => EventType::Rescue,
            EventDetail::Inspection(_) => EventType::Inspection,
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
            EventDetail::State { state, .. } => state.as_str().to_owned(),
            EventDetail::Inspection(r) => r.by.clone(),
            EventDetail::Rescue { step } => step.as_str().to_owned(),
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
