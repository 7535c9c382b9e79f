//! Event time and keyed timers (Flink's timer service).
//!
//! A record may carry an event timestamp; the host tells each call its
//! watermark (how far event time has got on every input) and processing
//! time ([`crate::Context`]). An operator registers timers for the current
//! key through [`Timers`]: an event-time timer fires once the watermark
//! reaches its time, a processing-time one once the clock does, each exactly
//! once, in time order, with its key as the current key, through
//! [`crate::Operator::on_timer`]. Timers are keyed state: the host keeps them
//! in every checkpoint and moves them with their key group on a rescale.
//!
//! ```
//! use weir_guest_sdk::{Context, Error, InitContext, Operator, Record, Timer, Timers, ValueState};
//!
//! /// Says `timeout` for a key that sees no record for 10 s of event time.
//! pub struct Timeout {
//!     last: ValueState<i64>,
//!     timers: Timers,
//! }
//!
//! impl Operator for Timeout {
//!     fn init(ctx: &InitContext) -> Result<Self, Error> {
//!         Ok(Self { last: ctx.state("last").value()?, timers: ctx.timers() })
//!     }
//!
//!     fn process(&mut self, record: Record<'_>, _ctx: &mut Context) -> Result<(), Error> {
//!         let at = record.timestamp.unwrap_or(0);
//!         if let Some(before) = self.last.get()? {
//!             self.timers.delete_event_time(before + 10_000)?;
//!         }
//!         self.last.set(&at)?;
//!         self.timers.register_event_time(at + 10_000)
//!     }
//!
//!     fn on_timer(&mut self, timer: Timer<'_>, ctx: &mut Context) -> Result<(), Error> {
//!         self.last.clear()?;
//!         ctx.emit_at(timer.key, b"timeout", timer.time);
//!         Ok(())
//!     }
//! }
//!
//! let mut op = weir_guest_sdk::testing::Harness::<Timeout>::new("{}")?;
//! op.process_timed(&[("a", "", 1_000), ("b", "", 2_000), ("a", "", 5_000)])?;
//! assert!(op.advance_watermark(11_999)?.is_empty());
//! assert_eq!(op.advance_watermark(14_999)?, ["timeout"]); // b, at 12 000
//! assert_eq!(op.advance_watermark(i64::MAX)?, ["timeout"]); // a, at 15 000
//! # Ok::<(), Error>(())
//! ```

use crate::Error;
use crate::state::timer_op;

pub use weir_codec::state::TimeDomain;

/// A timer that fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer<'a> {
    /// The key it was registered for (also the current key).
    pub key: &'a [u8],
    /// Its time, ms since the Unix epoch.
    pub time: i64,
    /// Which clock it followed.
    pub domain: TimeDomain,
}

/// Registers and deletes timers for the current key; from
/// [`crate::InitContext::timers`]. One timer exists per key, domain and
/// time: registering it again does nothing.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    _declared: (),
}

impl Timers {
    pub(crate) fn declare() -> Self {
        crate::state::note_timers();
        Self { _declared: () }
    }

    /// A timer that fires once the watermark reaches `time`.
    pub fn register_event_time(&self, time: i64) -> Result<(), Error> {
        timer_op(TimeDomain::EventTime, time, true)
    }

    /// Deletes the current key's event-time timer at `time`, if there is one.
    pub fn delete_event_time(&self, time: i64) -> Result<(), Error> {
        timer_op(TimeDomain::EventTime, time, false)
    }

    /// A timer that fires once the host's clock reaches `time`, whether
    /// records arrive or not.
    pub fn register_processing_time(&self, time: i64) -> Result<(), Error> {
        timer_op(TimeDomain::ProcessingTime, time, true)
    }

    /// Deletes the current key's processing-time timer at `time`, if any.
    pub fn delete_processing_time(&self, time: i64) -> Result<(), Error> {
        timer_op(TimeDomain::ProcessingTime, time, false)
    }
}
