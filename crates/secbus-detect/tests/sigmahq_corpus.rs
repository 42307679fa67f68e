//! The whole SigmaHQ corpus loads: at least 99% of its documents parse and
//! compile, and each one that does not is listed with its reason.

use std::path::PathBuf;

use secbus_detect::RuleSet;

/// Where the corpus sits on the development machines.
const CORPUS: &str = "/work/shared/data/sigma";

#[test]
fn at_least_99_percent_of_the_sigmahq_corpus_loads() {
    let dir = PathBuf::from(CORPUS);
    if !dir.is_dir() {
        println!("skipped: no SigmaHQ corpus at {CORPUS}");
        return;
    }
    let set = RuleSet::load(&[dir]).unwrap();
    let total = set.loaded + set.failures.len();
    println!(
        "SigmaHQ corpus: {} of {total} documents load ({:.2}%)",
        set.loaded,
        set.loaded_share() * 100.0
    );
    for f in &set.failures {
        println!("does not load: {}: {}", f.path.display(), f.reason);
    }
    assert!(total > 3000, "the corpus has {total} documents");
    assert!(set.loaded_share() >= 0.99, "{} of {total} load", set.loaded);
}
