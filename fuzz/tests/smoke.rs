//! A few seconds of fuzzing in `just test`: the corpus and generated,
//! mutated inputs through every target; nothing may panic or break a round
//! trip. (`just fuzz` runs ten million.)

use natter_fuzz::Target;

#[test]
fn every_target_survives_its_corpus_and_mutations() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for target in Target::ALL {
        let seeds = natter_fuzz::corpus(&corpus, target);
        assert!(!seeds.is_empty(), "no corpus for {}", target.name());
        // Every seed as it is...
        for seed in &seeds {
            let checked = natter_fuzz::targets::check(target, seed);
            assert!(checked.is_ok(), "{}: {checked:?}", target.name());
        }
        // ... and mutated.
        let report = natter_fuzz::run(target, &seeds, 50_000, 7);
        assert!(
            report.findings.is_empty(),
            "{}: {:?}",
            target.name(),
            report.findings.first()
        );
        assert!(report.decoded > 0, "{}: nothing decoded", target.name());
    }
}
