//! "Did you mean": the closest candidates to a misspelt name.
//!
//! A candidate is suggested when either measure calls it a plausible typo:
//! 1. Jaro-Winkler similarity at least [`MIN_SIMILARITY`]: good at long names and shared
//!    prefixes (`srcz` → `srcs`, `//lib:tset` → `//lib:test`);
//! 2. one edit in the optimal-string-alignment sense (insert, delete, replace, or swap two
//!    neighbours), for names of at least [`MIN_EDIT_LEN`] characters. Jaro only matches letters
//!    within `max(len) / 2 - 1` places of each other, which is none for three letters, so a swap
//!    in a short name (`lbi` for `lib`) scores 0.56 there and was never suggested.
//!
//! Candidates are ranked by edit distance, then by similarity, then alphabetically, so a
//! one-letter slip beats a name that only shares a prefix.

/// The least Jaro-Winkler similarity that makes a candidate a suggestion.
pub const MIN_SIMILARITY: f64 = 0.8;

/// Names shorter than this get no suggestion from the edit distance alone (`x` is one edit from
/// every one-letter name).
pub const MIN_EDIT_LEN: usize = 3;

/// The candidate closest to `word`, when it is close enough to be a plausible typo.
pub fn closest<'a, I>(word: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    closest_n(word, candidates, 1).into_iter().next()
}

/// Up to `n` candidates close to `word`, best first (see the module docs for the order).
pub fn closest_n<'a, I>(word: &str, candidates: I, n: usize) -> Vec<String>
where
    I: IntoIterator<Item = &'a str>,
{
    let one_edit_counts = word.chars().count() >= MIN_EDIT_LEN;
    let mut scored: Vec<(usize, f64, &str)> = candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| {
            // The same but for case (`A` for `a`) is the closest of all, however short.
            let edits = match c.to_lowercase() == word.to_lowercase() {
                true => 0,
                false => strsim::osa_distance(word, c),
            };
            (edits, strsim::jaro_winkler(word, c), c)
        })
        .filter(|&(edits, similarity, _)| {
            edits == 0 || similarity >= MIN_SIMILARITY || (one_edit_counts && edits == 1)
        })
        .collect();
    scored.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(b.2)));
    scored.dedup_by(|a, b| a.2 == b.2);
    scored
        .into_iter()
        .take(n)
        .map(|(_, _, c)| c.to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_difference_of_case_alone_is_suggested_even_for_a_short_name() {
        assert_eq!(closest("A", ["a", "b"]), Some("a".to_owned()));
        assert_eq!(
            closest("Util.py", ["util.py", "utils.py"]),
            Some("util.py".to_owned())
        );
    }

    #[test]
    fn suggests_typos_only() {
        assert_eq!(
            closest("srcz", ["srcs", "deps", "outs"]),
            Some("srcs".into())
        );
        assert_eq!(closest("zzz", ["srcs", "deps"]), None);
    }

    #[test]
    fn two_swapped_letters_in_a_short_name() {
        assert_eq!(closest("lbi", ["lib", "test"]), Some("lib".into()));
        assert_eq!(closest("tset", ["lib", "test"]), Some("test".into()));
        assert_eq!(closest("ilb", ["lib"]), Some("lib".into()));
    }

    #[test]
    fn one_edit_is_not_enough_below_three_letters() {
        assert_eq!(closest("x", ["y"]), None);
        assert_eq!(closest("ab", ["ba"]), None);
    }

    #[test]
    fn fewer_edits_rank_first() {
        // `tsetse` scores higher on Jaro-Winkler (0.93 against 0.92) but is two edits away.
        assert_eq!(
            closest_n("tset", ["tsetse", "test"], 3),
            ["test", "tsetse"].map(String::from)
        );
    }
}
