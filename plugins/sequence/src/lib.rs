//! Numbers the records each instance sees: the value `v` becomes `<n>:v`, where
//! `n` counts from 1 and goes on across checkpoints and restores. The count is
//! operator (non-keyed) state, saved through [`Operator::snapshot`], so after a
//! crash the numbering continues exactly where the restored checkpoint left it.
//! When instances are merged by a restore at lower parallelism, their counts add up.

use weir_guest_sdk::{Context, Error, InitContext, Operator, Record, RestoredState, SavedState};

/// Version of the saved count's format.
const STATE_VERSION: u32 = 1;

/// The operator.
pub struct Sequence {
    seen: u64,
    out: Vec<u8>,
}

impl Operator for Sequence {
    fn init(_ctx: &InitContext) -> Result<Self, Error> {
        Ok(Self {
            seen: 0,
            out: Vec::new(),
        })
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        self.seen += 1;
        self.out.clear();
        self.out
            .extend_from_slice(itoa::Buffer::new().format(self.seen).as_bytes());
        self.out.push(b':');
        self.out.extend_from_slice(record.value);
        ctx.emit(record.key, &self.out);
        Ok(())
    }

    fn snapshot(&mut self) -> Result<Option<SavedState>, Error> {
        SavedState::encode(STATE_VERSION, &self.seen).map(Some)
    }

    fn restore(&mut self, restored: RestoredState) -> Result<(), Error> {
        if restored.version() != STATE_VERSION {
            return Err(Error::new(format!(
                "saved with unknown version {}",
                restored.version()
            )));
        }
        self.seen = restored.decode::<u64>()?.iter().sum();
        Ok(())
    }
}

weir_guest_sdk::export_operator!(Sequence);

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    use weir_guest_sdk::testing::Harness;

    use super::*;

    #[test]
    fn numbering_goes_on_after_a_restore_and_merges_add_up() {
        let mut a = Harness::<Sequence>::new("{}").unwrap();
        assert_eq!(a.process_values(&["x", "y"]).unwrap(), ["1:x", "2:y"]);
        let saved_a = a.snapshot().unwrap().unwrap();
        let mut b = Harness::<Sequence>::new("{}").unwrap();
        b.process_values(&["z"]).unwrap();
        let saved_b = b.snapshot().unwrap().unwrap();

        let mut restored = Harness::<Sequence>::new("{}").unwrap();
        restored.restore(vec![saved_a.clone()]).unwrap();
        assert_eq!(restored.process_values(&["w"]).unwrap(), ["3:w"]);

        let mut merged = Harness::<Sequence>::new("{}").unwrap();
        merged.restore(vec![saved_a, saved_b]).unwrap();
        assert_eq!(merged.process_values(&["w"]).unwrap(), ["4:w"]);

        let mut wrong = Harness::<Sequence>::new("{}").unwrap();
        let err = wrong
            .restore(vec![SavedState::encode(9, &1u64).unwrap()])
            .unwrap_err();
        assert!(err.to_string().contains("unknown version 9"), "{err}");
    }
}
