//! The heartbeat message: small JSON that names the agent and run, the partition, the
//! per-partition sequence number and the wall-clock send time.
//!
//! JSON so an operator reading the topic with any tool sees what it is. The send time is
//! for people; latencies are measured on this process's monotonic clock, never from it.

use serde::{Deserialize, Serialize};

/// Format version; bumped only for incompatible changes.
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Marks the message as a cc-heartbeat payload, and its format version.
    pub cc_heartbeat: u32,
    /// `service.instance.id` of the sending agent.
    pub instance: String,
    /// Random per process start, so a restarted agent never mistakes old messages for new.
    pub run: String,
    pub partition: i32,
    pub seq: u64,
    /// Wall-clock send time, milliseconds since the Unix epoch.
    pub sent_at_ms: u64,
}

/// Who this agent run is, for telling own heartbeats from others'.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub instance: String,
    pub run: String,
}

impl Origin {
    pub fn new(instance: &str) -> Self {
        Self {
            instance: instance.to_owned(),
            run: format!("{:016x}", uuid::Uuid::new_v4().as_u64_pair().0),
        }
    }

    pub fn encode(&self, partition: i32, seq: u64) -> Vec<u8> {
        let sent_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let heartbeat = Heartbeat {
            cc_heartbeat: VERSION,
            instance: self.instance.clone(),
            run: self.run.clone(),
            partition,
            seq,
            sent_at_ms,
        };
        serde_json::to_vec(&heartbeat).unwrap_or_default()
    }

    /// Classifies a payload consumed from `partition`.
    pub fn decode(&self, partition: i32, payload: Option<&[u8]>) -> Decoded {
        let Some(bytes) = payload else {
            return Decoded::Undecodable;
        };
        // The version first, read leniently: a later version may carry other fields.
        let version = serde_json::from_slice::<Version>(bytes).map(|v| v.cc_heartbeat);
        match version {
            Ok(v) if v > VERSION => return Decoded::NewerVersion,
            Ok(VERSION) => {}
            _ => return Decoded::Undecodable,
        }
        match serde_json::from_slice::<Heartbeat>(bytes) {
            Ok(h) if h.instance != self.instance || h.run != self.run => Decoded::Foreign,
            // One of ours, copied into another partition: its sequence belongs elsewhere.
            Ok(h) if h.partition != partition => Decoded::Misplaced,
            Ok(h) => Decoded::Own { seq: h.seq },
            Err(_) => Decoded::Undecodable,
        }
    }
}

/// Just the version of a payload, whatever else it holds.
#[derive(Deserialize)]
struct Version {
    cc_heartbeat: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A heartbeat this run sent, found in the partition it was sent to.
    Own { seq: u64 },
    /// A well-formed heartbeat of another agent or an earlier run.
    Foreign,
    /// A heartbeat of this run found in a partition other than the one it names.
    Misplaced,
    /// A heartbeat of a later format version (an agent being upgraded shares the topic).
    NewerVersion,
    /// Not a heartbeat.
    Undecodable,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_foreign_and_garbage_are_told_apart() {
        let me = Origin::new("agent-a");
        let restarted = Origin::new("agent-a");
        let other = Origin::new("agent-b");
        assert_ne!(me.run, restarted.run);
        let mine = me.encode(3, 42);
        assert_eq!(me.decode(3, Some(&mine)), Decoded::Own { seq: 42 });
        assert_eq!(me.decode(4, Some(&mine)), Decoded::Misplaced);
        assert_eq!(
            me.decode(3, Some(&restarted.encode(3, 42))),
            Decoded::Foreign
        );
        assert_eq!(me.decode(3, Some(&other.encode(3, 42))), Decoded::Foreign);
        assert_eq!(me.decode(3, Some(b"hello")), Decoded::Undecodable);
        assert_eq!(me.decode(3, Some(b"")), Decoded::Undecodable);
        assert_eq!(me.decode(3, None), Decoded::Undecodable);
        assert_eq!(
            me.decode(3, Some(br#"{"cc_heartbeat":1}"#)),
            Decoded::Undecodable
        );
        // A later version, with fields this one does not know, is told apart from garbage.
        let future = br#"{"cc_heartbeat":2,"instance":"x","run":"y","partition":0,"seq":1,"sent_at_ms":1,"zone":"a"}"#;
        assert_eq!(me.decode(0, Some(future)), Decoded::NewerVersion);
        assert_eq!(
            me.decode(0, Some(br#"{"cc_heartbeat":0}"#)),
            Decoded::Undecodable
        );
    }

    #[test]
    fn payload_is_readable_json() {
        let me = Origin::new("agent-a");
        let text = String::from_utf8(me.encode(1, 7)).unwrap();
        assert!(
            text.starts_with(r#"{"cc_heartbeat":1,"instance":"agent-a","run":""#),
            "{text}"
        );
        assert!(
            text.contains(r#""partition":1,"seq":7,"sent_at_ms":"#),
            "{text}"
        );
    }
}
