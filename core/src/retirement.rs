//! A configuration's retirement. Envoy replaces a plugin's root context when its
//! configuration changes (an xDS or ECDS update; in Istio, every edit of a
//! `WasmPlugin`): it starts a new root in the running VM and, once no request uses the
//! old one, asks the old one whether it is done (`proxy_on_done`). A root that says no
//! is kept, and still gets its calls' answers, until it calls `proxy_done`; one that says
//! yes is deleted at once and its calls are cancelled. So a root with copies in flight
//! says no, counts their answers as they come, and says done after the last one.

/// Where a root context is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Retirement {
    /// Serving requests.
    #[default]
    Serving,
    /// Replaced; waiting for its copies in flight to end.
    Draining,
    /// Replaced, and nothing left in flight: the host has been (or is being) told.
    Done,
}

impl Retirement {
    /// Envoy asks whether the root may go now (`proxy_on_done`): yes when no copy is in
    /// flight; otherwise it drains.
    pub fn on_done(&mut self, in_flight: usize) -> bool {
        if in_flight == 0 {
            *self = Retirement::Done;
            true
        } else {
            *self = Retirement::Draining;
            false
        }
    }

    /// A copy ended and `in_flight` are left: whether the root has just drained, so
    /// that it must tell the host it is done (once).
    pub fn on_call_ended(&mut self, in_flight: usize) -> bool {
        if *self == Retirement::Draining && in_flight == 0 {
            *self = Retirement::Done;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn root_with_nothing_in_flight_goes_at_once() {
        let mut root = Retirement::default();
        assert!(root.on_done(0));
        assert_eq!(root, Retirement::Done);
        assert!(!root.on_call_ended(0), "done is said once");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn root_with_copies_in_flight_drains_then_says_done_once() {
        let mut root = Retirement::default();
        assert!(!root.on_call_ended(0), "a serving root never says done");
        assert!(!root.on_done(3));
        assert_eq!(root, Retirement::Draining);
        assert!(!root.on_call_ended(2));
        assert!(!root.on_call_ended(1));
        assert!(root.on_call_ended(0));
        assert_eq!(root, Retirement::Done);
        assert!(!root.on_call_ended(0));
    }
}
