//! Per-subchannel counters, readable while the backend runs (the control
//! socket's `stats` command, see `docs/operations.md`).
//!
//! The counters are atomics so that reading them never takes the
//! subchannel's lock: a stats request cannot stall I/O (only the host's
//! `bytes_moved` is read under it). Each value is
//! monotonic from process start; a reader computes rates from differences.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use vhost_user_ccw_protocol::arch::{DeviceStatus, SubchannelStatus};
use vhost_user_ccw_protocol::wire::{Event, RequestType, Response, ResponseStatus};

/// Subchannel-status bits that mean the channel program failed (PCI and
/// incorrect length are normal outcomes of well-formed programs).
const CHECK_STATUS: SubchannelStatus = SubchannelStatus::PROGRAM_CHECK
    .union(SubchannelStatus::PROTECTION_CHECK)
    .union(SubchannelStatus::CHANNEL_DATA_CHECK)
    .union(SubchannelStatus::CHANNEL_CONTROL_CHECK)
    .union(SubchannelStatus::INTERFACE_CONTROL_CHECK)
    .union(SubchannelStatus::CHAINING_CHECK);

/// The counters of one subchannel.
#[derive(Debug, Default)]
pub struct SubchannelStats {
    sessions: AtomicU64,
    starts: AtomicU64,
    halts: AtomicU64,
    clears: AtomicU64,
    stores: AtomicU64,
    interrupts_final: AtomicU64,
    interrupts_intermediate: AtomicU64,
    interrupts_unsolicited: AtomicU64,
    channel_reports: AtomicU64,
    device_gone: AtomicU64,
    bad_requests: AtomicU64,
    unit_exceptions: AtomicU64,
    broken: AtomicU64,
    unsupported: AtomicU64,
    check_status: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl SubchannelStats {
    /// A frontend connected.
    pub fn session(&self) {
        bump(&self.sessions);
    }

    /// A request element could not be decoded.
    pub fn bad_request(&self) {
        bump(&self.bad_requests);
    }

    /// A request was answered with `response`.
    pub fn request(&self, kind: RequestType, response: &Response) {
        bump(match kind {
            RequestType::Start => &self.starts,
            RequestType::Halt => &self.halts,
            RequestType::Clear => &self.clears,
            RequestType::Store => &self.stores,
        });
        self.response(response.status);
    }

    /// A response status, also for requests that never decoded.
    pub fn response(&self, status: ResponseStatus) {
        match status {
            ResponseStatus::Ok => {}
            ResponseStatus::UnitException => bump(&self.unit_exceptions),
            ResponseStatus::BadRequest => bump(&self.bad_requests),
            ResponseStatus::Broken => bump(&self.broken),
            ResponseStatus::Unsupported => bump(&self.unsupported),
        }
    }

    /// An event reached the frontend's eventq.
    pub fn delivered(&self, event: &Event) {
        match event {
            Event::Interrupt { tag, irb } => {
                let scsw = &irb.scsw;
                bump(if *tag == 0 {
                    &self.interrupts_unsolicited
                } else if scsw.is_intermediate_only() {
                    &self.interrupts_intermediate
                } else {
                    &self.interrupts_final
                });
                if scsw.subchannel_status.intersects(CHECK_STATUS)
                    || scsw.device_status.contains(DeviceStatus::UNIT_CHECK)
                {
                    bump(&self.check_status);
                }
            }
            Event::ChannelReport(_) => bump(&self.channel_reports),
            Event::DeviceGone => bump(&self.device_gone),
        }
    }

    /// The counters as JSON, with the data bytes the host moved (`null`
    /// when the host cannot observe them).
    pub fn snapshot(&self, bytes_moved: Option<u64>) -> Value {
        json!({
            "sessions": get(&self.sessions),
            "requests": {
                "start": get(&self.starts),
                "halt": get(&self.halts),
                "clear": get(&self.clears),
                "store": get(&self.stores),
            },
            "interrupts": {
                "final": get(&self.interrupts_final),
                "intermediate": get(&self.interrupts_intermediate),
                "unsolicited": get(&self.interrupts_unsolicited),
            },
            "channel_reports": get(&self.channel_reports),
            "device_gone": get(&self.device_gone),
            "errors": {
                "bad_request": get(&self.bad_requests),
                "unit_exception": get(&self.unit_exceptions),
                "broken": get(&self.broken),
                "unsupported": get(&self.unsupported),
                "check_status": get(&self.check_status),
            },
            "bytes_moved": bytes_moved,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vhost_user_ccw_protocol::arch::{Irb, Scsw, StatusControl};

    fn interrupt(tag: u64, status_control: StatusControl, cstat: SubchannelStatus) -> Event {
        Event::Interrupt {
            tag,
            irb: Irb {
                scsw: Scsw {
                    status_control,
                    subchannel_status: cstat,
                    ..Scsw::default()
                },
                ..Irb::default()
            },
        }
    }

    #[test]
    fn events_and_responses_land_in_their_counters() {
        let stats = SubchannelStats::default();
        stats.request(RequestType::Start, &Response::cc(0));
        stats.request(
            RequestType::Start,
            &Response::status(ResponseStatus::UnitException, 1),
        );
        stats.request(RequestType::Halt, &Response::cc(1));
        stats.bad_request();
        let done =
            StatusControl::PRIMARY | StatusControl::SECONDARY | StatusControl::STATUS_PENDING;
        stats.delivered(&interrupt(1, done, SubchannelStatus::empty()));
        stats.delivered(&interrupt(2, done, SubchannelStatus::PROGRAM_CHECK));
        stats.delivered(&interrupt(
            1,
            StatusControl::INTERMEDIATE | StatusControl::STATUS_PENDING,
            SubchannelStatus::PROGRAM_CONTROLLED_INTERRUPTION,
        ));
        stats.delivered(&interrupt(
            0,
            StatusControl::ALERT | StatusControl::STATUS_PENDING,
            SubchannelStatus::empty(),
        ));
        stats.delivered(&Event::DeviceGone);
        let s = stats.snapshot(Some(42));
        assert_eq!(s["requests"]["start"], 2);
        assert_eq!(s["requests"]["halt"], 1);
        assert_eq!(s["requests"]["clear"], 0);
        assert_eq!(s["interrupts"]["final"], 2);
        assert_eq!(s["interrupts"]["intermediate"], 1);
        assert_eq!(s["interrupts"]["unsolicited"], 1);
        assert_eq!(s["device_gone"], 1);
        assert_eq!(s["errors"]["unit_exception"], 1);
        assert_eq!(s["errors"]["bad_request"], 1);
        assert_eq!(s["errors"]["check_status"], 1);
        assert_eq!(s["bytes_moved"], 42);
        assert!(stats.snapshot(None)["bytes_moved"].is_null());
    }
}
