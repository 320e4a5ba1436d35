//! Events of the topic probe: the heartbeat topic found, created, or created again after it
//! disappeared.

use tracing::{info, warn};

/// The heartbeat topic exists (logged once per run).
pub struct TopicFound<'a> {
    pub topic: &'a str,
    pub partitions: usize,
}

impl TopicFound<'_> {
    pub fn emit(self) {
        info!(
            name: "topic.topic_found",
            topic = %self.topic,
            partitions = self.partitions,
            "Heartbeat topic found."
        );
    }
}

/// The agent created the heartbeat topic.
pub struct TopicCreated<'a> {
    pub topic: &'a str,
    /// The settings, in words.
    pub plan: &'a str,
    /// It had existed before in this run and disappeared.
    pub again: bool,
}

impl TopicCreated<'_> {
    pub fn emit(self) {
        if self.again {
            warn!(
                name: "topic.topic_created",
                topic = %self.topic,
                "The heartbeat topic had disappeared; it was created again: {}.", self.plan
            );
        } else {
            info!(name: "topic.topic_created", topic = %self.topic, "Created heartbeat topic {}.", self.plan);
        }
    }
}
