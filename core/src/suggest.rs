//! The closest known name to a misspelt one, for "did you mean" in error lines: a field
//! of the configuration, of a `WasmPlugin`, a subcommand.

/// The known name closest to `name`, compared case-insensitively, if it is close enough
/// to be the one meant: at most two edits (insertions, deletions, substitutions or
/// swaps of neighbours) away, and fewer edits than the name has characters.
pub fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let name = name.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edits(&name, &k.to_ascii_lowercase()), *k))
        .filter(|&(d, _)| d <= 2 && d < name.chars().count())
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

/// Optimal string alignment distance between `a` and `b`, row by row.
fn edits(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let at = |row: &[usize], k: usize| row.get(k).copied().unwrap_or(usize::MAX / 2);
    // Edits between a[..i] and every b[..j]: the rows for i - 1 and i.
    let mut before: Vec<usize> = Vec::new();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, &cb) in b.iter().enumerate() {
            let mut best = (at(&previous, j) + usize::from(ca != cb))
                .min(at(&previous, j + 1) + 1)
                .min(at(&current, j) + 1);
            let swapped = i > 0 && j > 0 && a.get(i - 1) == Some(&cb) && b.get(j - 1) == Some(&ca);
            if swapped {
                best = best.min(at(&before, j - 1) + 1);
            }
            current.push(best);
        }
        before = std::mem::replace(&mut previous, current);
    }
    previous.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    const TARGET: &[&str] = &["name", "cluster", "percent", "sample_by", "max_in_flight"];

    #[wasm_bindgen_test(unsupported = test)]
    fn a_misspelt_name_finds_the_one_meant() {
        assert_eq!(closest("precent", TARGET), Some("percent"));
        assert_eq!(closest("clustre", TARGET), Some("cluster"));
        assert_eq!(closest("Percent", TARGET), Some("percent"));
        assert_eq!(closest("sample-by", TARGET), Some("sample_by"));
        assert_eq!(closest("max_inflight", TARGET), Some("max_in_flight"));
        assert_eq!(closest("targts", &["targets", "lanes"]), Some("targets"));
        assert_eq!(
            closest("pluginconfig", &["pluginConfig", "pluginName"]),
            Some("pluginConfig")
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_name_far_from_every_known_one_finds_none() {
        assert_eq!(closest("colour", TARGET), None);
        assert_eq!(closest("", TARGET), None);
        assert_eq!(closest("x", &["y"]), None);
        assert_eq!(closest("services", &["targets", "lanes"]), None);
        assert_eq!(edits("abc", "abc"), 0);
        assert_eq!(edits("ab", "ba"), 1);
        assert_eq!(edits("kitten", "sitting"), 3);
    }
}
