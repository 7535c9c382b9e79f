//! A new version of `plugins/word-count` whose `count` state holds a struct
//! instead of a plain `u64`: it declares the state at version 1 with a
//! migration from version 0, so a reload to it converts every saved count
//! before the first record. It writes `<word>=<count>` like `word-count-v2`,
//! so the reload tests' exactly-once check applies. With
//! `config = { without_migration = true }` it declares version 1 and no
//! migration: the mistake a reload must roll back.

use serde::{Deserialize, Serialize};
use weir_guest_sdk::{Context, Error, InitContext, Operator, Record, Stored, ValueState};

/// What `count` holds from version 1 on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Records of this word so far.
    pub count: u64,
    /// Of those, how many this version counted (0 for a migrated count).
    pub since_migration: u64,
}

/// Version 0 stored the count alone.
fn migrate(old: Stored<'_>) -> Result<Tally, Error> {
    match old.version() {
        0 => Ok(Tally {
            count: old.decode::<u64>()?,
            since_migration: 0,
        }),
        v => Err(Error::new(format!("no migration from version {v}"))),
    }
}

/// Word count over a migrated state.
pub struct WordCountMigrated {
    count: ValueState<Tally>,
}

impl Operator for WordCountMigrated {
    fn init(ctx: &InitContext) -> Result<Self, Error> {
        let state = ctx.state("count").version(1);
        let without = ctx.config().get_bool("without_migration")?.unwrap_or(false);
        let state = if without {
            state
        } else {
            state.migrate(migrate)
        };
        Ok(Self {
            count: state.value()?,
        })
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let mut tally = self.count.get()?.unwrap_or(Tally {
            count: 0,
            since_migration: 0,
        });
        tally.count += 1;
        tally.since_migration += 1;
        self.count.set(&tally)?;
        let line = format!("{}={}", String::from_utf8_lossy(record.key), tally.count);
        ctx.emit(record.key, line.as_bytes());
        Ok(())
    }
}

weir_guest_sdk::export_operator!(WordCountMigrated);

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    use weir_guest_sdk::testing::{Checkpoint, Harness};

    use super::*;

    /// What `plugins/word-count` (version 0 of `count`) saved.
    fn saved_by_version_0() -> Checkpoint {
        Checkpoint::new()
            .value("count", 0, "a", &41u64)
            .unwrap()
            .value("count", 0, "b", &1u64)
            .unwrap()
    }

    #[test]
    fn counts_saved_by_version_0_go_on() {
        let mut op =
            Harness::<WordCountMigrated>::restore_from("{}", &saved_by_version_0()).unwrap();
        assert_eq!(
            op.process_keyed(&[("a", ""), ("c", ""), ("b", "")])
                .unwrap(),
            ["a=42", "c=1", "b=2"]
        );
        // Its own checkpoint is at version 1 and restores with no migration.
        let saved = op.checkpoint().unwrap();
        let mut again = Harness::<WordCountMigrated>::restore_from("{}", &saved).unwrap();
        assert_eq!(again.process_keyed(&[("a", "")]).unwrap(), ["a=43"]);
    }

    #[test]
    fn without_the_migration_the_start_fails_and_says_what_to_add() {
        let config = r#"{"without_migration": true}"#;
        let e = Harness::<WordCountMigrated>::restore_from(config, &saved_by_version_0())
            .err()
            .unwrap();
        assert_eq!(
            e.message(),
            "cannot migrate state `count` from version 0 to 1: its declaration has no \
             migration: give it `.migrate(|old| ...)`, which turns a value saved by the old \
             version into the new type"
        );
    }

    #[test]
    fn an_unknown_version_is_an_error_naming_it() {
        let saved = Checkpoint::new().value("count", 7, "a", &1u64).unwrap();
        let e = Harness::<WordCountMigrated>::restore_from("{}", &saved)
            .err()
            .unwrap();
        assert_eq!(
            e.message(),
            "cannot migrate state `count` from version 7 to 1: value 0 of the chunk: no \
             migration from version 7"
        );
        assert_eq!(
            migrate(Stored::new(0, &[5])).unwrap(),
            Tally {
                count: 5,
                since_migration: 0
            }
        );
    }
}
