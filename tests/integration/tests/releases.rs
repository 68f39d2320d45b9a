//! Released SQL scripts are frozen: an install script or upgrade script that shipped must never
//! change, or databases that ran it and databases that run it now would differ.
//! `sql/released/SHA256SUMS` records each one; a release adds its scripts there
//! (scripts/freeze-release.sh).  Needs no cluster.

use pg_jobqueue_integration::current_version;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn sql_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sql")
}

fn recorded() -> BTreeMap<String, String> {
    fs::read_to_string(sql_dir().join("released/SHA256SUMS"))
        .expect("sql/released/SHA256SUMS")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (sum, path) = l.split_once("  ").expect("sha256sum format: SUM  PATH");
            (path.to_owned(), sum.to_owned())
        })
        .collect()
}

#[test]
fn released_scripts_are_unchanged() {
    let sums = recorded();
    assert!(!sums.is_empty());
    for (path, sum) in &sums {
        let bytes = fs::read(sql_dir().join(path))
            .unwrap_or_else(|e| panic!("released script sql/{path} is missing: {e}"));
        let actual = format!("{:x}", Sha256::digest(&bytes));
        assert_eq!(
            &actual, sum,
            "sql/{path} changed after its release: released scripts are never edited; \
             put the change in the next version's upgrade script"
        );
    }
}

#[test]
fn every_script_of_a_past_release_is_frozen() {
    let sums = recorded();
    let current = current_version();
    let mut scripts: Vec<String> = Vec::new();
    for entry in fs::read_dir(sql_dir()).unwrap().flatten() {
        scripts.push(entry.file_name().into_string().unwrap());
    }
    for entry in fs::read_dir(sql_dir().join("released")).unwrap().flatten() {
        scripts.push(format!(
            "released/{}",
            entry.file_name().into_string().unwrap()
        ));
    }
    for script in scripts
        .iter()
        .filter(|s| s.ends_with(".sql") && s.contains("pg_jobqueue--"))
    {
        // pg_jobqueue--A--B.sql upgrades to B; released/pg_jobqueue--A.sql installs A.
        let stem = script.trim_end_matches(".sql");
        let target = stem.rsplit("--").next().unwrap();
        if target == current && !script.starts_with("released/") {
            continue; // the upgrade script of the version in development
        }
        assert!(
            sums.contains_key(script),
            "sql/{script} belongs to released version {target} but is not recorded in \
             sql/released/SHA256SUMS"
        );
    }
}
