//! "Did you mean": the closest candidates to a misspelt name.

/// The candidate closest to `word`, when it is close enough to be a plausible typo.
pub fn closest<'a, I>(word: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    closest_n(word, candidates, 1).into_iter().next()
}

/// Up to `n` candidates close to `word`, best first (ties broken alphabetically).
pub fn closest_n<'a, I>(word: &str, candidates: I, n: usize) -> Vec<String>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut scored: Vec<(f64, &str)> = candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(s, _)| *s >= 0.8)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    scored.dedup_by(|a, b| a.1 == b.1);
    scored
        .into_iter()
        .take(n)
        .map(|(_, c)| c.to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_typos_only() {
        assert_eq!(
            closest("srcz", ["srcs", "deps", "outs"]),
            Some("srcs".into())
        );
        assert_eq!(closest("zzz", ["srcs", "deps"]), None);
    }
}
