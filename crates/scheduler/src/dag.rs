//! Job dependencies as a DAG: topological order, readiness, and cycle detection that names
//! the cycle (`a -> b -> c -> a`) so the controller can say it in a condition message.

use std::collections::{BTreeMap, BTreeSet};

/// Errors of the dependency graph.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    /// A job depends on a job that is not in the graph.
    #[error("failed to resolve dependency of {job}: unknown job {missing}")]
    UnknownDependency {
        /// The job with the dependency.
        job: String,
        /// The missing job.
        missing: String,
    },
    /// The dependencies form a cycle; the names in order, the first repeated at the end.
    #[error("failed to order jobs: dependency cycle {}", .cycle.join(" -> "))]
    Cycle {
        /// The cycle, e.g. `["a", "b", "a"]`.
        cycle: Vec<String>,
    },
}

/// A dependency graph: each job lists the jobs it waits for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dag {
    deps: BTreeMap<String, BTreeSet<String>>,
}

impl Dag {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }
    /// Add `job` waiting for `after` (jobs named in `after` must be added too).
    pub fn add(
        &mut self,
        job: impl Into<String>,
        after: impl IntoIterator<Item = impl Into<String>>,
    ) {
        let entry = self.deps.entry(job.into()).or_default();
        entry.extend(after.into_iter().map(Into::into));
    }

    fn check_known(&self) -> Result<(), DagError> {
        for (job, deps) in &self.deps {
            if let Some(m) = deps.iter().find(|d| !self.deps.contains_key(*d)) {
                return Err(DagError::UnknownDependency {
                    job: job.clone(),
                    missing: m.clone(),
                });
            }
        }
        Ok(())
    }

    /// All jobs, dependencies before dependents; among jobs ready at the same time, by name
    /// (Kahn's algorithm with an ordered ready set, so the order is deterministic).
    ///
    /// # Errors
    /// [`DagError::UnknownDependency`], or [`DagError::Cycle`] naming one cycle.
    pub fn topo_order(&self) -> Result<Vec<String>, DagError> {
        self.check_known()?;
        let mut remaining: BTreeMap<&str, usize> = self
            .deps
            .iter()
            .map(|(j, d)| (j.as_str(), d.len()))
            .collect();
        let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (job, deps) in &self.deps {
            for d in deps {
                dependents.entry(d.as_str()).or_default().push(job.as_str());
            }
        }
        let mut ready: BTreeSet<&str> = remaining
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(j, _)| *j)
            .collect();
        let mut out = Vec::with_capacity(self.deps.len());
        while let Some(j) = ready.pop_first() {
            out.push(j.to_string());
            remaining.remove(j);
            for d in dependents.get(j).into_iter().flatten() {
                if let Some(n) = remaining.get_mut(d) {
                    *n -= 1;
                    if *n == 0 {
                        ready.insert(d);
                    }
                }
            }
        }
        if remaining.is_empty() {
            Ok(out)
        } else {
            Err(DagError::Cycle {
                cycle: self.find_cycle(remaining.keys().copied().collect()),
            })
        }
    }

    /// A cycle among `left` (every job there waits, directly or not, on another job there).
    fn find_cycle(&self, left: BTreeSet<&str>) -> Vec<String> {
        // Walk dependencies from the smallest name, staying inside `left`, until a job
        // repeats: the walk from its first visit is a cycle.
        let Some(&start) = left.iter().next() else {
            return Vec::new();
        };
        let mut path: Vec<&str> = vec![start];
        loop {
            let cur = path[path.len() - 1];
            let next = self.deps[cur]
                .iter()
                .map(String::as_str)
                .find(|d| left.contains(d));
            let Some(next) = next else {
                return path.iter().map(|s| s.to_string()).collect();
            };
            if let Some(pos) = path.iter().position(|p| *p == next) {
                // Dependencies point backwards in time: print the cycle in run order
                // (a job before the job that waits for it), starting from the smallest name.
                let mut cycle: Vec<String> =
                    path[pos..].iter().rev().map(|s| s.to_string()).collect();
                let first = (0..cycle.len()).min_by_key(|&i| &cycle[i]).unwrap_or(0);
                cycle.rotate_left(first);
                cycle.push(cycle[0].clone());
                return cycle;
            }
            path.push(next);
        }
    }

    /// Jobs not in `done` whose dependencies are all in `done`, by name.
    pub fn ready(&self, done: &BTreeSet<String>) -> Vec<String> {
        self.deps
            .iter()
            .filter(|(j, d)| !done.contains(*j) && d.iter().all(|x| done.contains(x)))
            .map(|(j, _)| j.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diamond_order() {
        let mut g = Dag::new();
        g.add("prep", Vec::<String>::new());
        g.add("embed", ["prep"]);
        g.add("classify", ["prep"]);
        g.add("report", ["embed", "classify"]);
        assert_eq!(
            g.topo_order().unwrap(),
            vec!["prep", "classify", "embed", "report"]
        );
        let done: BTreeSet<String> = ["prep".to_string()].into();
        assert_eq!(g.ready(&done), vec!["classify", "embed"]);
    }

    #[test]
    fn cycle_is_named() {
        let mut g = Dag::new();
        g.add("a", ["c"]);
        g.add("b", ["a"]);
        g.add("c", ["b"]);
        g.add("d", Vec::<String>::new());
        g.add("e", ["a"]);
        let err = g.topo_order().unwrap_err();
        assert_eq!(
            err,
            DagError::Cycle {
                cycle: vec!["a".into(), "b".into(), "c".into(), "a".into()]
            }
        );
        assert_eq!(
            err.to_string(),
            "failed to order jobs: dependency cycle a -> b -> c -> a"
        );
    }

    #[test]
    fn self_loop_and_unknown() {
        let mut g = Dag::new();
        g.add("a", ["a"]);
        assert_eq!(
            g.topo_order().unwrap_err().to_string(),
            "failed to order jobs: dependency cycle a -> a"
        );
        let mut h = Dag::new();
        h.add("a", ["ghost"]);
        assert_eq!(
            h.topo_order().unwrap_err(),
            DagError::UnknownDependency {
                job: "a".into(),
                missing: "ghost".into()
            }
        );
    }
}
