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

/// Every C symbol a released script declares (`'<function>_wrapper'`) is still exported by the
/// installed library: installing an older version, which the upgrade path does, must find
/// them all.  (Reads the library `make install-private` put in place.)
#[test]
fn the_library_still_exports_every_symbol_released_scripts_name() {
    let library = format!(
        "{}/pg_jobqueue.so",
        pg_jobqueue_integration::cluster::pg_config_value("--pkglibdir")
    );
    let out = std::process::Command::new("nm")
        .args(["-D", "--defined-only", &library])
        .output()
        .expect("cannot run nm");
    assert!(
        out.status.success(),
        "nm {library} failed: is the extension installed?"
    );
    let exported: std::collections::HashSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_owned))
        .collect();
    let mut checked = 0;
    for path in recorded().keys() {
        let script = fs::read_to_string(sql_dir().join(path)).unwrap();
        for piece in script.split('\'').skip(1).step_by(2) {
            if piece.ends_with("_wrapper") && !piece.contains(' ') {
                checked += 1;
                assert!(
                    exported.contains(piece),
                    "sql/{path} names {piece}, which the library no longer exports"
                );
            }
        }
    }
    assert!(
        checked > 19,
        "found only {checked} symbols in the released scripts"
    );
}
