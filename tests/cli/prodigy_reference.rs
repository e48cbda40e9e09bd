//! Prodigy against prodigyopt itself: `tests/conformance/prodigy_reference.py` runs the installed
//! prodigyopt (pinned in tests/pyref-requirements.lock.txt) on its known cases, and our
//! `train::prodigy::Prodigy` replays each one step for step (d within 1e-5 relative, every
//! value's displacement within 1e-5 of its tensor's). The same cases are committed in
//! tests/fixtures/prodigy-reference.json for the unit test that runs without Python; this test
//! also checks that file is what the pinned prodigyopt writes today.
//! Needs `HFSKY_PYREF_PYTHON` (scripts/test.sh makes one with scripts/pyref-venv.sh).

use crate::common::*;
use hfsky::train::prodigy::reference::{compare, run_case, Case};
use std::process::Command;

#[test]
#[ignore = "needs the Python reference stack (HFSKY_PYREF_PYTHON, made by scripts/test.sh)"]
fn prodigy_matches_prodigyopt() {
    let python = pyref_python();
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("prodigy.json");
    let out =
        Command::new(&python).arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/conformance/prodigy_reference.py")).arg(&out_path).output().unwrap();
    assert!(out.status.success(), "prodigy_reference.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let fresh: Vec<Case> = serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
    assert!(fresh.len() >= 5, "{} cases", fresh.len());
    for case in &fresh {
        let (params, ds) = run_case(case);
        compare(case, &params, &ds);
    }
    let committed: Vec<Case> =
        serde_json::from_str(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/prodigy-reference.json"))).unwrap();
    let names = |c: &[Case]| c.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&committed), names(&fresh), "regenerate tests/fixtures/prodigy-reference.json with the script");
    // torch's CPU reductions are not bitwise the same on every CPU (its kernels pick their vector
    // width at run time): the committed values must agree to 1e-6 relative, not to the last bit.
    for (a, b) in committed.iter().zip(&fresh) {
        assert_eq!(a.d.len(), b.d.len(), "{}: steps", a.name);
        for (x, y) in a.d.iter().zip(&b.d) {
            assert!((x - y).abs() <= 1e-6 * y.abs(), "{}: committed d {x} is not what the pinned prodigyopt computes ({y})", a.name);
        }
    }
}
