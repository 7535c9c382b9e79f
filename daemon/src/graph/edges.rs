//! The graph: every input resolved, ids unique, no cycles, forward edges
//! between equal parallelisms, and a warning for output nobody reads.

use std::collections::HashMap;
use std::sync::Arc;

use super::builder::{Builder, Pending};
use super::split_input;
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

    /// Checks that every input names a component with output, and a side
    /// output its module declares; returns, per component, which output of
    /// its producer each input reads.
    pub(super) fn check_inputs(
        &mut self,
        pending: &[Pending<'a>],
        by_id: &HashMap<&'a str, usize>,
    ) -> Vec<Vec<(u32, Arc<str>)>> {
        let mut resolved = Vec::with_capacity(pending.len());
        for p in pending {
            let mut seen = Vec::new();
            let mut outputs = Vec::with_capacity(p.inputs.len());
            for input in p.inputs {
                let written = input.get_ref().as_str();
                let (name, side) = split_input(written);
                let mut output = 0;
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
                    Some(_) if seen.contains(&written) => {
                        self.errors.push(self.at(
                            input,
                            &p.label(),
                            format!("input `{written}` is listed twice"),
                        ));
                    }
                    Some(&j) => {
                        if let Some(side) = side {
                            match self.side_output(&pending[j], side) {
                                Ok(index) => output = index,
                                Err(message) => {
                                    self.errors.push(self.at(input, &p.label(), message));
                                }
                            }
                        }
                    }
                }
                seen.push(written);
                outputs.push((output, Arc::from(written)));
            }
            resolved.push(outputs);
        }
        resolved
    }

    /// The index of side output `side` of `producer`, or why it has none.
    fn side_output(&self, producer: &Pending<'a>, side: &str) -> Result<u32, String> {
        let id = producer.key.get_ref();
        if side == crate::operator_host::ERRORS_OUTPUT && producer.section == "operators" {
            return match &producer.kind {
                Some(super::ComponentKind::Operator(spec))
                    if spec.on_error != crate::config::OnError::DeadLetter =>
                {
                    Err(format!(
                        "input `{id}.{side}`: operator `{id}` has no dead letters to read: give \
                         it `on_error = \"dead_letter\"`"
                    ))
                }
                _ => Ok(super::ERRORS_OUTPUT_INDEX),
            };
        }
        if producer.section != "operators" {
            return Err(format!(
                "input `{id}.{side}`: {} has one output; read it as `{id}`",
                producer.label()
            ));
        }
        let Some(declared) = (self.outputs)(id) else {
            // Its module did not load (that is reported) or is not known yet.
            return Ok(1);
        };
        match declared.iter().position(|d| d == side) {
            Some(i) => Ok(i as u32 + 1),
            None if declared.is_empty() => Err(format!(
                "input `{id}.{side}`: operator `{id}` declares no side outputs (its module's \
                 `describe`); read its main output as `{id}`"
            )),
            None => Err(format!(
                "input `{id}.{side}`: operator `{id}` declares no output `{side}` (it declares: {})",
                declared
                    .iter()
                    .map(|d| format!("`{d}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
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
                    .filter_map(|i| by_id.get(split_input(i.get_ref()).0).copied())
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
                if let Some(&j) = by_id.get(split_input(input.get_ref()).0)
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
            .flat_map(|p| p.inputs.iter().map(|i| split_input(i.get_ref()).0))
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
