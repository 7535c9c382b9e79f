//! Operator chaining (Flink's): which components run in one thread, the
//! first calling the next, instead of one thread each joined by a channel.
//!
//! Component `d` is chained after `u` when `u`'s main output is its only
//! input and `d` is `u`'s only consumer, both have the same parallelism, the edge between
//! them keeps every record on its instance (`forward`, or any partitioning
//! when both have one instance), and neither they nor `[daemon] chaining`
//! say `chain = false`. Instance `i` of `u` then calls instance `i` of `d`
//! with every batch and barrier, so a chain of a source, a stateless
//! operator and a sink is one thread, and a keyed operator at parallelism 1
//! joins it too.
//!
//! A reload that changes one member of a chain replaces it and the members
//! after it at its barrier ([`expand`]); the members before it, and the rest
//! of the pipeline, keep running.

use std::collections::{BTreeSet, HashMap};

use crate::config::Partition;
use crate::graph::{Component, ComponentId, ComponentKind, Topology};

use super::reconfigure::Plan;

/// Pairs `(u, d)` where `d` is chained after `u`.
pub fn links(topology: &Topology) -> Vec<(ComponentId, ComponentId)> {
    if !topology.chaining {
        return Vec::new();
    }
    let mut consumers: HashMap<&ComponentId, usize> = HashMap::new();
    for c in &topology.components {
        for input in &c.inputs {
            *consumers.entry(input).or_default() += 1;
        }
    }
    topology
        .components
        .iter()
        .filter_map(|d| {
            let [input] = d.inputs.as_slice() else {
                return None;
            };
            // A side output (or dead letters) goes through a channel.
            if d.input_outputs
                .first()
                .is_some_and(|(output, _)| *output != 0)
            {
                return None;
            }
            let u = topology.get(input)?;
            chainable(u, d, consumers.get(input).copied().unwrap_or(0))
                .then(|| (u.id.clone(), d.id.clone()))
        })
        .collect()
}

fn chainable(u: &Component, d: &Component, consumers_of_u: usize) -> bool {
    let kinds = matches!(
        (&u.kind, &d.kind),
        (
            ComponentKind::Source(_) | ComponentKind::Operator(_),
            ComponentKind::Operator(_) | ComponentKind::Sink(_)
        )
    );
    let keeps_instance = d.partition == Partition::Forward || d.parallelism == 1;
    kinds
        && u.chain
        && d.chain
        && consumers_of_u == 1
        && u.parallelism == d.parallelism
        && keeps_instance
}

/// The chains of `topology` with more than one member, each head first.
pub fn chains(topology: &Topology) -> Vec<Vec<ComponentId>> {
    let links = links(topology);
    let next: HashMap<&ComponentId, &ComponentId> = links.iter().map(|(u, d)| (u, d)).collect();
    let chained_after: BTreeSet<&ComponentId> = links.iter().map(|(_, d)| d).collect();
    links
        .iter()
        .map(|(u, _)| u)
        .filter(|u| !chained_after.contains(u))
        .map(|head| {
            let mut chain = vec![head.clone()];
            let mut at = head;
            while let Some(d) = next.get(at) {
                chain.push((*d).clone());
                at = d;
            }
            chain
        })
        .collect()
}

/// `plan` grown so no chained stage outlives the component it is chained
/// after: every member after a replaced one in its chain (in the old
/// topology, where it runs inside that one's thread, or in the new one,
/// where it will) is replaced too, from the reload's checkpoint with its
/// state. Members before it keep running; at the barrier their output
/// hands over to a channel to the replacement, which runs on its own thread
/// until the next start.
pub fn expand(plan: &Plan, old: &Topology, new: &Topology) -> Plan {
    let next =
        |t: &Topology| -> HashMap<ComponentId, ComponentId> { links(t).into_iter().collect() };
    let (old_next, new_next) = (next(old), next(new));
    let mut plan = plan.clone();
    loop {
        let touched: Vec<ComponentId> = plan.retire.union(&plan.start).cloned().collect();
        let mut grew = false;
        for id in &touched {
            for next in [&old_next, &new_next] {
                let mut at = id;
                while let Some(d) = next.get(at) {
                    if old.get(d).is_some() {
                        grew |= plan.retire.insert(d.clone());
                    }
                    if new.get(d).is_some() {
                        grew |= plan.start.insert(d.clone());
                    }
                    at = d;
                }
            }
        }
        if !grew {
            return plan;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(text: &str) -> Topology {
        let file = crate::config::parse_str(std::path::Path::new("t.toml"), text.to_owned())
            .expect("parses");
        crate::graph::build(&file).expect("a valid topology")
    }

    const WORD_COUNT: &str = "[sources.lines]\ntype = \"generator\"\n\
        [operators.split]\ntype = \"passthrough\"\ninputs = [\"lines\"]\n\
        [operators.count]\ntype = \"passthrough\"\ninputs = [\"split\"]\nPARALLELISM\n\
        [sinks.out]\ntype = \"blackhole\"\ninputs = [\"count\"]\n";

    fn ids(chain: &[&str]) -> Vec<ComponentId> {
        chain.iter().map(|s| ComponentId::from(*s)).collect()
    }

    #[test]
    fn forward_and_single_instance_edges_chain_and_hash_edges_between_many_do_not() {
        let one = topology(&WORD_COUNT.replace("PARALLELISM", ""));
        assert_eq!(chains(&one), [ids(&["lines", "split", "count", "out"])]);
        let two = topology(&WORD_COUNT.replace("PARALLELISM", "parallelism = 2"));
        assert_eq!(chains(&two), [ids(&["lines", "split"])]);
        let off = topology(&format!(
            "[daemon]\nchaining = false\n{}",
            WORD_COUNT.replace("PARALLELISM", "")
        ));
        assert!(chains(&off).is_empty());
        let split_off = topology(&WORD_COUNT.replace("PARALLELISM", "chain = false"));
        assert_eq!(chains(&split_off), [ids(&["lines", "split"])]);
    }

    fn set(ids: &[&str]) -> BTreeSet<ComponentId> {
        ids.iter().map(|s| ComponentId::from(*s)).collect()
    }

    #[test]
    fn a_reload_replaces_a_changed_member_and_what_is_chained_after_it() {
        let old = topology(&WORD_COUNT.replace("PARALLELISM", ""));
        let plan = Plan {
            retire: set(&["split"]),
            start: set(&["split"]),
        };
        let grown = expand(&plan, &old, &old);
        assert_eq!(grown.retire, set(&["split", "count", "out"]));
        assert_eq!(grown.start, grown.retire, "the source keeps running");
        // Rescaling `count` ends its chain after `split`; the sink after it
        // goes with it.
        let new = topology(&WORD_COUNT.replace("PARALLELISM", "parallelism = 2"));
        let plan = Plan {
            retire: set(&["count"]),
            start: set(&["count"]),
        };
        let grown = expand(&plan, &old, &new);
        assert_eq!(grown.start, set(&["count", "out"]), "{grown:?}");
    }
}
