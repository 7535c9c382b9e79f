//! Test plugin: every record's value is a command on the keyed state of the
//! record's key, and the plugin emits `<key>:<result>` for commands that read.
//!
//! | command | state |
//! |---|---|
//! | `set N` / `get` / `unset` | value state `value` (u64) |
//! | `append S` / `list` / `replace S,S` | list state `list` (String) |
//! | `put K V` / `remove K` / `has K` / `lookup K` / `map` | map state `map` (String -> i64) |
//! | `sum N` | reducing state `sum` (i64, +) |
//! | `avg N` | aggregating state `avg` (mean of i64) |
//! | `clear` | clears every state of the key |
//! | `fail` | returns an error: the batch's state changes must be dropped |

use serde::{Deserialize, Serialize};
use weir_guest_sdk::{
    AggregatingState, Aggregator, Context, Error, InitContext, ListState, MapState, Operator,
    Record, ReducingState, ValueState,
};

/// Mean of the inputs.
pub struct Mean;

/// Running sum and count.
#[derive(Serialize, Deserialize)]
pub struct MeanAcc {
    sum: i64,
    count: u64,
}

impl Aggregator for Mean {
    type In = i64;
    type Acc = MeanAcc;
    type Out = f64;
    fn create(&self) -> MeanAcc {
        MeanAcc { sum: 0, count: 0 }
    }
    fn add(&self, acc: MeanAcc, input: i64) -> MeanAcc {
        MeanAcc {
            sum: acc.sum + input,
            count: acc.count + 1,
        }
    }
    fn result(&self, acc: &MeanAcc) -> f64 {
        acc.sum as f64 / acc.count as f64
    }
}

/// The test operator.
pub struct StateKinds {
    value: ValueState<u64>,
    list: ListState<String>,
    map: MapState<String, i64>,
    sum: ReducingState<i64>,
    avg: AggregatingState<Mean>,
}

impl Operator for StateKinds {
    fn init(ctx: &InitContext) -> Result<Self, Error> {
        Ok(Self {
            value: ctx.state("value").value()?,
            list: ctx.state("list").list()?,
            map: ctx.state("map").map()?,
            sum: ctx.state("sum").reducing(|a, b| a + b)?,
            avg: ctx.state("avg").aggregating(Mean)?,
        })
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let command = std::str::from_utf8(record.value)?;
        let mut words = command.split(' ');
        let verb = words.next().unwrap_or_default();
        let mut arg = || {
            words
                .next()
                .ok_or_else(|| Error::new(format!("`{command}` needs an argument")))
        };
        let int = |s: &str| {
            s.parse::<i64>()
                .map_err(|e| Error::new(format!("`{s}`: {e}")))
        };
        let out = match verb {
            "set" => {
                self.value.set(&arg()?.parse()?)?;
                None
            }
            "get" => Some(
                self.value
                    .get()?
                    .map_or("none".to_owned(), |v| v.to_string()),
            ),
            "unset" => {
                self.value.clear()?;
                None
            }
            "append" => {
                self.list.append(&arg()?.to_owned())?;
                None
            }
            "list" => Some(self.list.get()?.join(",")),
            "replace" => {
                let items: Vec<String> = arg()?.split(',').map(str::to_owned).collect();
                self.list.replace(&items)?;
                None
            }
            "put" => {
                let k = arg()?.to_owned();
                self.map.put(&k, &int(arg()?)?)?;
                None
            }
            "remove" => {
                self.map.remove(&arg()?.to_owned())?;
                None
            }
            "has" => Some(self.map.contains(&arg()?.to_owned())?.to_string()),
            "lookup" => Some(
                self.map
                    .get(&arg()?.to_owned())?
                    .map_or("none".to_owned(), |v| v.to_string()),
            ),
            "map" => Some(
                self.map
                    .entries()?
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            "sum" => Some(self.sum.add(int(arg()?)?)?.to_string()),
            "avg" => {
                self.avg.add(int(arg()?)?)?;
                Some(self.avg.get()?.map_or("none".to_owned(), |v| v.to_string()))
            }
            "clear" => {
                self.value.clear()?;
                self.list.clear()?;
                self.map.clear()?;
                self.sum.clear()?;
                self.avg.clear()?;
                None
            }
            "fail" => return Err(Error::new("deliberate failure")),
            other => return Err(Error::new(format!("unknown command `{other}`"))),
        };
        if let Some(out) = out {
            let key = String::from_utf8_lossy(record.key);
            ctx.emit(record.key, format!("{key}:{verb}={out}").as_bytes());
        }
        Ok(())
    }
}

weir_guest_sdk::export_operator!(StateKinds);

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    use weir_guest_sdk::testing::Harness;

    use super::*;

    fn run(op: &mut Harness<StateKinds>, batch: &[(&str, &str)]) -> Vec<String> {
        op.process_keyed(batch).unwrap()
    }

    #[test]
    fn every_kind_round_trips_within_and_across_batches() {
        let mut op = Harness::<StateKinds>::new("{}").unwrap();
        let out = run(
            &mut op,
            &[
                ("a", "set 5"),
                ("a", "get"),
                ("b", "get"),
                ("a", "append x"),
                ("a", "append y"),
                ("a", "list"),
            ],
        );
        assert_eq!(out, ["a:get=5", "b:get=none", "a:list=x,y"]);
        // Appends before a read in a later batch follow what was stored.
        let out = run(
            &mut op,
            &[
                ("a", "append z"),
                ("a", "list"),
                ("a", "get"),
                ("b", "list"),
            ],
        );
        assert_eq!(out, ["a:list=x,y,z", "a:get=5", "b:list="]);
        let out = run(
            &mut op,
            &[
                ("a", "put k 1"),
                ("a", "put j 2"),
                ("a", "has k"),
                ("a", "remove k"),
                ("a", "has k"),
                ("b", "has j"),
            ],
        );
        assert_eq!(out, ["a:has=true", "a:has=false", "b:has=false"]);
        let out = run(
            &mut op,
            &[
                ("a", "put i 3"),
                ("a", "map"),
                ("a", "lookup j"),
                ("a", "lookup k"),
            ],
        );
        assert_eq!(out, ["a:map=i=3,j=2", "a:lookup=2", "a:lookup=none"]);
        let out = run(
            &mut op,
            &[
                ("a", "sum 2"),
                ("a", "sum 3"),
                ("b", "sum 7"),
                ("a", "avg 1"),
                ("a", "avg 4"),
            ],
        );
        assert_eq!(
            out,
            ["a:sum=2", "a:sum=5", "b:sum=7", "a:avg=1", "a:avg=2.5"]
        );
        let out = run(
            &mut op,
            &[("a", "replace p,q"), ("a", "list"), ("a", "sum 1")],
        );
        assert_eq!(out, ["a:list=p,q", "a:sum=6"]);
        let out = run(
            &mut op,
            &[
                ("a", "clear"),
                ("a", "get"),
                ("a", "list"),
                ("a", "map"),
                ("a", "sum 1"),
            ],
        );
        assert_eq!(out, ["a:get=none", "a:list=", "a:map=", "a:sum=1"]);
        let out = run(&mut op, &[("b", "get"), ("b", "sum 1")]);
        assert_eq!(out, ["b:get=none", "b:sum=8"]);
    }

    #[test]
    fn a_failed_batch_leaves_state_as_it_was() {
        let mut op = Harness::<StateKinds>::new("{}").unwrap();
        run(&mut op, &[("a", "set 1"), ("a", "append x")]);
        assert!(
            op.process_keyed(&[("a", "set 2"), ("a", "append y"), ("a", "fail")])
                .is_err()
        );
        assert_eq!(
            run(&mut op, &[("a", "get"), ("a", "list")]),
            ["a:get=1", "a:list=x"]
        );
    }
}
