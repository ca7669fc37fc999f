//! `dependsOn` across jobs: cycle detection and gating.

use std::collections::{BTreeMap, BTreeSet};

/// Finds a `dependsOn` cycle through `start`, following edges `graph[job] = dependsOn`.
/// Returns the cycle as names from `start` back to `start` (e.g. `[a, b, c, a]`), or `None`.
///
/// Depth-first, each job visited once: O(jobs + edges).
#[must_use]
pub fn cycle_through(start: &str, graph: &BTreeMap<String, Vec<String>>) -> Option<Vec<String>> {
    fn dfs<'a>(
        node: &'a str,
        start: &str,
        graph: &'a BTreeMap<String, Vec<String>>,
        seen: &mut BTreeSet<&'a str>,
        path: &mut Vec<&'a str>,
    ) -> bool {
        for next in graph.get(node).into_iter().flatten() {
            if next == start {
                path.push(next);
                return true;
            }
            if seen.insert(next) {
                path.push(next);
                if dfs(next, start, graph, seen, path) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut seen = BTreeSet::new();
    let mut path = vec![start];
    dfs(start, start, graph, &mut seen, &mut path)
        .then(|| path.into_iter().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(edges: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        edges
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.iter().map(|s| (*s).to_owned()).collect()))
            .collect()
    }

    #[test]
    fn finds_the_cycle_by_name() {
        let graph = g(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &["a"])]);
        assert_eq!(
            cycle_through("a", &graph),
            Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
        );
        // d depends on the cycle but is not on it.
        assert_eq!(cycle_through("d", &graph), None);
    }

    #[test]
    fn chain_has_no_cycle() {
        let graph = g(&[("c", &["b"]), ("b", &["a"]), ("a", &[])]);
        assert_eq!(cycle_through("c", &graph), None);
    }
}
