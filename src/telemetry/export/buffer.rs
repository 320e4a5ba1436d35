//! The delta buffer: export requests held, encoded, while the collector is away, bounded in
//! count and in bytes, its deque dropped (not kept at its peak) once it is empty, and its
//! memory handed back to the system after an outage that held much.

use std::collections::VecDeque;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message as _;

use super::points_in;

/// Delta requests held for the collector, encoded: a request in protobuf takes several times
/// less memory than the same request decoded, and its size is what the bound counts.
#[derive(Debug, Default)]
pub(super) struct Pending {
    requests: VecDeque<Held>,
    pub(super) bytes: usize,
    /// The most bytes held since the buffer was last empty.
    peak: usize,
    /// The buffer emptied after holding at least [`RELEASE_AFTER`].
    release_due: bool,
}

/// An emptied buffer that held this much has its memory returned to the system; smaller
/// ones are left to the allocator's reuse (a trim walks the heap).
const RELEASE_AFTER: usize = 1024 * 1024;

/// One held request.
#[derive(Debug)]
pub(super) struct Held {
    encoded: Vec<u8>,
    pub(super) points: u64,
}

impl Held {
    pub(super) fn new(request: &ExportMetricsServiceRequest) -> Self {
        Self {
            encoded: request.encode_to_vec(),
            points: points_in(request),
        }
    }

    /// The request again; `None` if its bytes do not decode (they were encoded here).
    pub(super) fn request(&self) -> Option<ExportMetricsServiceRequest> {
        ExportMetricsServiceRequest::decode(self.encoded.as_slice()).ok()
    }
}

impl Pending {
    pub(super) fn len(&self) -> usize {
        self.requests.len()
    }

    pub(super) fn push_back(&mut self, held: Held) {
        self.count_in(&held);
        self.requests.push_back(held);
    }

    pub(super) fn push_front(&mut self, held: Held) {
        self.count_in(&held);
        self.requests.push_front(held);
    }

    fn count_in(&mut self, held: &Held) {
        self.bytes += held.encoded.len();
        self.peak = self.peak.max(self.bytes);
    }

    /// Whether the buffer has emptied after holding much since this was last asked: the
    /// caller then returns the freed memory ([`crate::heap::release_free_memory`]) once the
    /// requests popped from it are gone too.
    pub(super) fn take_release_due(&mut self) -> bool {
        std::mem::take(&mut self.release_due)
    }

    pub(super) fn pop_front(&mut self) -> Option<Held> {
        let held = self.requests.pop_front()?;
        self.bytes -= held.encoded.len();
        if self.requests.is_empty() {
            // The outage is over: drop the deque rather than keep it at its peak.
            self.requests = VecDeque::new();
            self.release_due |= self.peak >= RELEASE_AFTER;
            self.peak = 0;
        }
        Some(held)
    }

    /// Drops the oldest requests until at most `count` and `bytes` remain, always keeping
    /// the newest (the one being sent); returns the points dropped and how many requests.
    pub(super) fn trim(&mut self, count: usize, bytes: usize) -> (u64, u64) {
        let (mut points, mut dropped) = (0, 0);
        while self.requests.len() > count.max(1) || (self.bytes > bytes && self.requests.len() > 1)
        {
            let Some(held) = self.pop_front() else { break };
            points += held.points;
            dropped += 1;
        }
        (points, dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(bytes: usize, points: u64) -> Held {
        Held {
            encoded: vec![0; bytes],
            points,
        }
    }

    #[test]
    fn the_oldest_go_first_past_either_bound_and_the_newest_stays() {
        let mut pending = Pending::default();
        for _ in 0..5 {
            pending.push_back(held(100, 3));
        }
        assert_eq!(pending.trim(10, 350), (6, 2), "over the bytes: two dropped");
        assert_eq!((pending.len(), pending.bytes), (3, 300));
        assert_eq!(
            pending.trim(2, 10_000),
            (3, 1),
            "over the count: one dropped"
        );
        assert_eq!(
            pending.trim(0, 0),
            (3, 1),
            "the newest is kept whatever the bounds"
        );
        assert_eq!((pending.len(), pending.bytes), (1, 100));
    }

    #[test]
    fn an_emptied_buffer_drops_its_deque() {
        let mut pending = Pending::default();
        for _ in 0..1000 {
            pending.push_back(held(10, 1));
        }
        assert!(pending.requests.capacity() >= 1000);
        while pending.pop_front().is_some() {}
        assert_eq!((pending.len(), pending.bytes), (0, 0));
        assert_eq!(pending.requests.capacity(), 0, "not its peak");
        assert!(
            !pending.take_release_due(),
            "10 KB is left to the allocator"
        );
    }

    #[test]
    fn a_release_is_due_once_after_a_large_buffer_empties() {
        let mut pending = Pending::default();
        for _ in 0..3 {
            pending.push_back(held(RELEASE_AFTER / 2, 1));
        }
        pending.pop_front();
        assert!(!pending.take_release_due(), "not empty yet");
        while pending.pop_front().is_some() {}
        assert!(pending.take_release_due());
        assert!(!pending.take_release_due(), "once");
        pending.push_back(held(10, 1));
        pending.pop_front();
        assert!(
            !pending.take_release_due(),
            "the next small outage: no release"
        );
    }

    #[test]
    fn a_held_request_comes_back_as_it_was() {
        let request = ExportMetricsServiceRequest::default();
        let held = Held::new(&request);
        assert_eq!(held.request(), Some(request));
    }
}
