//! Test plugin: forwards records, but panics (a trap) at input record `panic_at`
//! or returns an error at input record `fail_at`, counted from 0 across batches.
//! With `fail_restore = true` its `restore` fails (it starts, but cannot take
//! over saved state). With `log_lines = N` its `init` writes N log lines.

use weir_guest_sdk::{Context, Error, InitContext, Operator, Record, RestoredState, SavedState};

/// The hostile operator.
pub struct Trap {
    seen: i64,
    panic_at: Option<i64>,
    fail_at: Option<i64>,
    /// `once = true`: a transient fault. Record `panic_at` arms it; the next
    /// checkpoint saves "already failed"; once the checkpoint after that
    /// begins (so the first one is complete: one runs at a time), the next
    /// record panics. Restored from that checkpoint, it never fires again.
    once: bool,
    phase: u8,
    trap_next: bool,
    fail_restore: bool,
}

const ARMED: u8 = 1;
const SAVED: u8 = 2;
const FIRED: u8 = 3;

impl Operator for Trap {
    fn init(ctx: &InitContext) -> Result<Self, Error> {
        let config = ctx.config();
        for i in 0..config.get_i64("log_lines")?.unwrap_or(0) {
            weir_guest_sdk::log(weir_guest_sdk::Level::Info, &format!("flood line {i}"));
        }
        Ok(Self {
            seen: 0,
            panic_at: config.get_i64("panic_at")?,
            fail_at: config.get_i64("fail_at")?,
            once: config
                .get("once")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            phase: 0,
            trap_next: false,
            fail_restore: config
                .get("fail_restore")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
        })
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let n = self.seen;
        self.seen += 1;
        if self.trap_next {
            panic!("deliberate panic once, after the checkpoint that remembers it");
        }
        if Some(n) == self.panic_at {
            if !self.once {
                panic!("deliberate panic at input record {n}");
            }
            if self.phase == 0 {
                self.phase = ARMED;
            }
        }
        if Some(n) == self.fail_at {
            return Err(Error::new(format!("deliberate error at input record {n}")));
        }
        ctx.forward(&record);
        Ok(())
    }

    fn snapshot(&mut self) -> Result<Option<SavedState>, Error> {
        if !self.once {
            return Ok(None);
        }
        match self.phase {
            ARMED => self.phase = SAVED,
            SAVED => self.trap_next = true,
            _ => {}
        }
        let saved = if self.phase == 0 { 0 } else { FIRED };
        SavedState::encode(1, &saved).map(Some)
    }

    fn restore(&mut self, restored: RestoredState) -> Result<(), Error> {
        if self.fail_restore {
            return Err(Error::new("deliberately refusing the saved state"));
        }
        self.phase = restored.decode::<u8>()?.into_iter().max().unwrap_or(0);
        Ok(())
    }
}

weir_guest_sdk::export_operator!(Trap);
