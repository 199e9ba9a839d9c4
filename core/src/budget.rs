//! A worker's two byte budgets, each shared by every target, request and configuration
//! of its VM (during a configuration update the old and the new one draw on them
//! together):
//!
//! - `max_buffered_bytes`: the bytes the filter itself holds for copies. A request
//!   reserves before it allocates, and gives the bytes back when its copies are handed
//!   to Envoy, abandoned, or the request ends; a reservation that does not fit is
//!   refused, so the VM's memory (which never shrinks) stays within the budget plus a
//!   small constant. What counts: the body being captured (a declared `content-length`
//!   at once, a body of unknown length as it arrives), the headers of the copies
//!   waiting for it, and, for the moment it takes, joining a body that arrived in
//!   several chunks into one buffer.
//! - `max_in_flight_bytes`: the bytes the filter makes Envoy hold, from the moment a
//!   copy is handed over until it ends: its headers, its body and `max_answer_bytes`
//!   of room for its answer (see [`crate::outbox`]).

/// The byte budgets of one worker's VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Budgets {
    /// `max_buffered_bytes`: held by the filter for copies being captured and built.
    pub buffered: Budget,
    /// `max_in_flight_bytes`: copies handed to Envoy and not yet ended.
    pub in_flight: Budget,
}

/// Bytes held against a limit. The limit comes with each reservation, from the
/// configuration that makes it: during a configuration update two of them share one VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Budget {
    held: usize,
    peak: usize,
}

impl Budget {
    pub fn new() -> Self {
        Budget::default()
    }

    /// Reserves `bytes` if the total held stays within `limit`.
    pub fn try_reserve(&mut self, limit: usize, bytes: usize) -> bool {
        match self.held.checked_add(bytes) {
            Some(total) if total <= limit => {
                self.held = total;
                self.peak = self.peak.max(total);
                true
            }
            _ => false,
        }
    }

    /// Gives back bytes reserved earlier.
    pub fn release(&mut self, bytes: usize) {
        debug_assert!(bytes <= self.held, "released {bytes} of {} held", self.held);
        self.held = self.held.saturating_sub(bytes);
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held
    }

    /// The most bytes ever held at once.
    pub fn peak(&self) -> usize {
        self.peak
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn reserves_up_to_the_limit_and_no_further() {
        let mut budget = Budget::new();
        assert!(budget.try_reserve(10, 6));
        assert!(!budget.try_reserve(10, 5));
        assert!(budget.try_reserve(10, 4));
        assert_eq!(budget.held(), 10);
        assert!(!budget.try_reserve(10, 1));
        assert!(budget.try_reserve(10, 0));
        budget.release(6);
        assert_eq!(budget.held(), 4);
        assert!(budget.try_reserve(10, 6));
        assert_eq!(budget.peak(), 10);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn each_reservation_is_held_to_its_own_limit() {
        // A retiring configuration with a large budget and a new one with a small one
        // share the VM: the new one cannot reserve past its own limit.
        let mut budget = Budget::new();
        assert!(budget.try_reserve(100, 80));
        assert!(!budget.try_reserve(50, 1));
        assert!(budget.try_reserve(100, 20));
        assert!(!budget.try_reserve(usize::MAX, usize::MAX));
        budget.release(100);
        assert!(budget.try_reserve(50, 50));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn zero_limit_holds_nothing() {
        let mut budget = Budget::new();
        assert!(budget.try_reserve(0, 0));
        assert!(!budget.try_reserve(0, 1));
        assert_eq!(budget.peak(), 0);
    }
}
