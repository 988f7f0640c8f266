//! Golden cases: hand-computed summaries for each corner of the window semantics
//! (see `tests/golden/README.md` for the reasoning), checked against the real aggregate path
//! and against the reference implementation, so that each vouches for the other.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use stampede::aggregate::{aggregate, write_summaries, Input};
use stampede::window::WindowConfig;

use crate::support::reference;

const CASES: &[&str] = &[
    "out_of_order",
    "late_and_too_late",
    "boundaries",
    "spellings_and_unicode",
    "bad_lines",
];

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn expected_rejects(dir: &Path, case: &str) -> BTreeMap<String, u64> {
    let path = dir.join(format!("{case}.rejects"));
    let Ok(text) = std::fs::read_to_string(path) else {
        return BTreeMap::new();
    };
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(reason, n)| (reason.to_owned(), n.trim().parse().unwrap()))
        .collect()
}

#[test]
fn golden_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for case in CASES {
        let input = read(&dir.join(format!("{case}.input.ndjson")));
        let expected_text = read(&dir.join(format!("{case}.expected.ndjson")));
        let expected: Vec<Value> = serde_json::Deserializer::from_slice(&expected_text)
            .into_iter()
            .map(Result::unwrap)
            .collect();

        let mut rejects: BTreeMap<String, u64> = BTreeMap::new();
        let (summaries, _) = aggregate(
            [Input {
                label: (*case).into(),
                reader: Box::new(std::io::Cursor::new(input.clone())),
            }],
            WindowConfig::default(),
            &mut |r| *rejects.entry(r.reject.reason.to_string()).or_default() += 1,
        )
        .unwrap();
        let mut out = Vec::new();
        write_summaries(&mut out, &summaries).unwrap();
        let got: Vec<Value> = serde_json::Deserializer::from_slice(&out)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            got, expected,
            "case {case}: output differs from the hand-computed summaries"
        );
        assert_eq!(
            rejects,
            expected_rejects(&dir, case),
            "case {case}: reject counts"
        );

        // The reference agrees with the hand computation too.
        let reference = reference::run(input.split(|&b| b == b'\n'));
        assert_eq!(
            reference.summaries,
            reference::parse_output(&expected_text),
            "reference on {case}"
        );
        let reference_rejects: BTreeMap<String, u64> = reference
            .rejects
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect();
        assert_eq!(
            reference_rejects,
            expected_rejects(&dir, case),
            "reference rejects on {case}"
        );
    }
}
