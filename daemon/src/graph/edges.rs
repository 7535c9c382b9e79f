//! The graph: every input resolved, ids unique, no cycles, forward edges
//! between equal parallelisms, and a warning for output nobody reads.

use std::collections::HashMap;

use super::builder::{Builder, Pending};
use crate::config::Partition;

impl<'a> Builder<'a> {
    /// Maps ids to components; an id used in two sections is an error.
    pub(super) fn index_ids(&mut self, pending: &[Pending<'a>]) -> HashMap<&'a str, usize> {
        let mut by_id: HashMap<&'a str, usize> = HashMap::new();
        for (i, p) in pending.iter().enumerate() {
            if let Some(&first) = by_id.get(p.key.get_ref().as_str()) {
                let message = format!(
                    "id `{}` is already used by {}",
                    p.key.get_ref(),
                    pending[first].label()
                );
                self.errors.push(self.at(p.key, &p.label(), message));
            } else {
                by_id.insert(p.key.get_ref().as_str(), i);
            }
        }
        by_id
    }

    pub(super) fn check_inputs(
        &mut self,
        pending: &[Pending<'a>],
        by_id: &HashMap<&'a str, usize>,
    ) {
        for p in pending {
            let mut seen = Vec::new();
            for input in p.inputs {
                let name = input.get_ref().as_str();
                match by_id.get(name) {
                    None => {
                        let mut message = format!("input `{name}` does not exist");
                        if let Some(close) = closest(name, by_id.keys().copied()) {
                            message.push_str(&format!(" (did you mean `{close}`?)"));
                        }
                        self.errors.push(self.at(input, &p.label(), message));
                    }
                    Some(&j) if pending[j].section == "sinks" => {
                        let message = format!("input `{name}` is a sink, which has no output");
                        self.errors.push(self.at(input, &p.label(), message));
                    }
                    Some(_) if seen.contains(&name) => {
                        self.errors.push(self.at(
                            input,
                            &p.label(),
                            format!("input `{name}` is listed twice"),
                        ));
                    }
                    Some(_) => {}
                }
                seen.push(name);
            }
        }
    }

    /// A topological order (Kahn); components on a cycle are reported.
    pub(super) fn order(
        &mut self,
        pending: &[Pending<'a>],
        by_id: &HashMap<&'a str, usize>,
    ) -> Vec<usize> {
        let edges: Vec<Vec<usize>> = pending
            .iter()
            .map(|p| {
                p.inputs
                    .iter()
                    .filter_map(|i| by_id.get(i.get_ref().as_str()).copied())
                    .collect()
            })
            .collect();
        let mut indegree: Vec<usize> = edges.iter().map(Vec::len).collect();
        let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); pending.len()];
        for (to, froms) in edges.iter().enumerate() {
            for &from in froms {
                consumers[from].push(to);
            }
        }
        let mut ready: Vec<usize> = (0..pending.len()).filter(|&i| indegree[i] == 0).collect();
        let mut order = Vec::with_capacity(pending.len());
        while let Some(i) = ready.pop() {
            order.push(i);
            for &c in &consumers[i] {
                indegree[c] -= 1;
                if indegree[c] == 0 {
                    ready.push(c);
                }
            }
        }
        if order.len() < pending.len()
            && let Some(cycle) = find_cycle(&edges, &indegree)
        {
            let names: Vec<String> = cycle.iter().map(|&i| pending[i].label()).collect();
            let first = &pending[cycle[0]];
            let message = format!(
                "the graph has a cycle: {} -> {}",
                names.join(" -> "),
                names[0]
            );
            self.errors
                .push(self.at(first.key, &first.label(), message));
        }
        order
    }

    pub(super) fn check_forward(
        &mut self,
        pending: &[Pending<'a>],
        by_id: &HashMap<&'a str, usize>,
    ) {
        for p in pending.iter().filter(|p| p.partition == Partition::Forward) {
            for input in p.inputs {
                if let Some(&j) = by_id.get(input.get_ref().as_str())
                    && pending[j].parallelism != p.parallelism
                {
                    let message = format!(
                        "`partition = \"forward\"` needs the same parallelism as input `{}` ({} here, {} there)",
                        input.get_ref(),
                        p.parallelism,
                        pending[j].parallelism
                    );
                    self.errors.push(self.at(input, &p.label(), message));
                }
            }
        }
    }

    pub(super) fn warn_unconsumed(&mut self, pending: &[Pending<'a>]) {
        let consumed: Vec<&str> = pending
            .iter()
            .flat_map(|p| p.inputs.iter().map(|i| i.get_ref().as_str()))
            .collect();
        for p in pending.iter().filter(|p| p.section != "sinks") {
            if !consumed.contains(&p.key.get_ref().as_str()) {
                self.warnings.push(self.at(
                    p.key,
                    &p.label(),
                    "nothing reads this component's output; it is dropped",
                ));
            }
        }
    }
}

/// One cycle among the nodes Kahn's algorithm could not order.
fn find_cycle(edges: &[Vec<usize>], indegree: &[usize]) -> Option<Vec<usize>> {
    let start = (0..edges.len()).find(|&i| indegree[i] > 0)?;
    // Walk backwards along inputs that are also stuck; a walk in a finite set repeats.
    let mut path = vec![start];
    let mut at = start;
    loop {
        let next = *edges[at].iter().find(|&&j| indegree[j] > 0)?;
        if let Some(pos) = path.iter().position(|&n| n == next) {
            let mut cycle = path.split_off(pos);
            cycle.reverse();
            return Some(cycle);
        }
        path.push(next);
        at = next;
    }
}

/// The known id closest to a misspelt one, if any is close.
fn closest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
