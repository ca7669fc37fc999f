//! Which container images the development node knows how to "run", and with which local
//! binary.
//!
//! There is no container runtime here: a known image is mapped to a program already built on
//! this machine (the worker image to `target/release/autoglm-worker`). An image that matches
//! no rule is never run; the pod fails with [`UNKNOWN_IMAGE_REASON`].

use std::path::{Path, PathBuf};

use crate::error::Error;

/// Container `waiting.reason` (and pod `status.reason`) for an image with no local mapping.
/// The kubelet's own reason for "image not present and pull policy Never" is
/// `ErrImageNeverPull`; this is the closest analogue and tools that know it treat it as a
/// permanent error.
pub const UNKNOWN_IMAGE_REASON: &str = "ErrImageNeverPull";

/// One `PATTERN=PROGRAM` rule: images matching `pattern` (a glob where `*` matches any run
/// of characters, including `/` and `:`) run `program`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRule {
    /// Glob over the full image reference, e.g. `*open-autoglm/*worker*`.
    pub pattern: String,
    /// Local executable that stands in for the image's entrypoint.
    pub program: PathBuf,
}

impl ImageRule {
    /// Parses `PATTERN=PROGRAM`.
    ///
    /// # Errors
    /// [`Error::InvalidImageRule`] when there is no `=`, or either side is empty.
    pub fn parse(rule: &str) -> Result<Self, Error> {
        match rule.split_once('=') {
            Some((pattern, program)) if !pattern.is_empty() && !program.is_empty() => Ok(Self {
                pattern: pattern.to_owned(),
                program: PathBuf::from(program),
            }),
            _ => Err(Error::InvalidImageRule {
                rule: rule.to_owned(),
            }),
        }
    }
}

/// Ordered list of [`ImageRule`]s; the first match wins.
#[derive(Debug, Clone, Default)]
pub struct ImageMap {
    rules: Vec<ImageRule>,
}

impl ImageMap {
    /// A map with the given rules, tried in order.
    #[must_use]
    pub fn new(rules: Vec<ImageRule>) -> Self {
        Self { rules }
    }

    /// The rules, in the order they are tried.
    #[must_use]
    pub fn rules(&self) -> &[ImageRule] {
        &self.rules
    }

    /// The local program for `image`, or `None` when no rule matches.
    #[must_use]
    pub fn resolve(&self, image: &str) -> Option<&Path> {
        self.rules
            .iter()
            .find(|r| glob_match(&r.pattern, image))
            .map(|r| r.program.as_path())
    }
}

/// Whether `text` matches `pattern`, where `*` matches any (possibly empty) run of characters
/// and every other character matches itself. Iterative with one backtrack point, so linear
/// in practice and never exponential.
#[must_use]
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    // Position of the last `*` in the pattern and the text position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            // Let the last `*` swallow one more character and retry.
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_worker_images() {
        let pat = "*open-autoglm/*worker*";
        assert!(glob_match(pat, "open-autoglm/autoglm-worker:0.1.0"));
        assert!(glob_match(pat, "ghcr.io/acme/open-autoglm/worker:latest"));
        assert!(!glob_match(pat, "open-autoglm/controller:0.1.0"));
        assert!(!glob_match(pat, "busybox:1.36"));
    }

    #[test]
    fn glob_edge_cases() {
        assert!(glob_match("", ""));
        assert!(!glob_match("", "a"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(glob_match("**a", "bba"));
    }

    #[test]
    fn first_rule_wins_and_unknown_is_none() {
        let map = ImageMap::new(vec![
            ImageRule::parse("*worker*=/bin/one").unwrap(),
            ImageRule::parse("*=/bin/two").unwrap(),
        ]);
        assert_eq!(map.resolve("x/worker:1"), Some(Path::new("/bin/one")));
        assert_eq!(map.resolve("busybox"), Some(Path::new("/bin/two")));
        let only = ImageMap::new(vec![ImageRule::parse("*worker*=/bin/one").unwrap()]);
        assert_eq!(only.resolve("busybox"), None);
    }

    #[test]
    fn rule_parse_rejects_missing_parts() {
        assert!(ImageRule::parse("noequals").is_err());
        assert!(ImageRule::parse("=/bin/x").is_err());
        assert!(ImageRule::parse("pat=").is_err());
    }
}
