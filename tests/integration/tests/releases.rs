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
    for folder in ["released", "upgrades"] {
        for entry in fs::read_dir(sql_dir().join(folder)).unwrap().flatten() {
            scripts.push(format!(
                "{folder}/{}",
                entry.file_name().into_string().unwrap()
            ));
        }
    }
    // Upgrade scripts live in sql/upgrades/ only: pgrx would ship one in sql/ as it stands.
    for entry in fs::read_dir(sql_dir()).unwrap().flatten() {
        let name = entry.file_name().into_string().unwrap();
        assert!(
            !(name.starts_with("pg_jobqueue--") && name.ends_with(".sql")),
            "sql/{name}: upgrade scripts belong in sql/upgrades/ (see sql/README.md)"
        );
    }
    for script in scripts
        .iter()
        .filter(|s| s.ends_with(".sql") && s.contains("pg_jobqueue--"))
    {
        // pg_jobqueue--A--B.sql upgrades to B; released/pg_jobqueue--A.sql installs A.
        let stem = script.trim_end_matches(".sql");
        let target = stem.rsplit("--").next().unwrap();
        if target == current && script.starts_with("upgrades/") {
            continue; // the hand-written part of the version in development
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

/// The upgrade script of the version under way is only its hand-written part: every
/// definition is generated from the concept files at build time (scripts/upgrade-script.py),
/// which refuses a part that repeats one.
#[test]
fn the_unreleased_upgrade_holds_no_definition() {
    let current = current_version();
    let dir = sql_dir().join("upgrades");
    let part = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(&format!("--{current}.sql")))
        .expect("the upgrade script of the version under way");
    let text = fs::read_to_string(&part).unwrap();
    for line in text.lines().filter(|l| !l.starts_with("--")) {
        let upper = line.to_ascii_uppercase();
        assert!(
            !(upper.starts_with("CREATE OR REPLACE")
                || upper.starts_with("CREATE FUNCTION")
                || upper.starts_with("CREATE VIEW")
                || upper.starts_with("COMMENT ON")),
            "{}: `{line}` is generated from sql/*.sql at build time; keep only the \
             hand-written part here",
            part.display()
        );
    }
    // The generator refuses a part that repeats a definition of the install script it is
    // given, naming it.
    let scratch = std::env::temp_dir().join(format!("pgjq-upgrade-{}", std::process::id()));
    fs::create_dir_all(&scratch).unwrap();
    let install = scratch.join("install.sql");
    let definition =
        "CREATE FUNCTION job.brand_new(a int) RETURNS int LANGUAGE sql AS $$ SELECT a $$;";
    fs::write(&install, format!("{definition}\n")).unwrap();
    let repeated = scratch.join(part.file_name().unwrap());
    fs::write(
        &repeated,
        format!(
            "{text}\n{}\n",
            definition.replace("CREATE", "CREATE OR REPLACE")
        ),
    )
    .unwrap();
    let run = |part: &Path| {
        std::process::Command::new("python3")
            .arg(sql_dir().join("../scripts/upgrade-script.py"))
            .args([part, install.as_path()])
            .output()
            .expect("cannot run python3")
    };
    let refused = run(&repeated);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("job.brand_new"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // Without the repetition it writes the part, then the new function and its revoke.
    let written = run(&part);
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    let out = String::from_utf8(written.stdout).unwrap();
    assert!(out.starts_with(text.trim_end()));
    let created = out
        .find("CREATE OR REPLACE FUNCTION job.brand_new(a int)")
        .expect(&out);
    let revoked = out
        .find("REVOKE EXECUTE ON ROUTINE job.brand_new(a int) FROM PUBLIC;")
        .expect(&out);
    assert!(created < revoked);
    // A table the part renames into being keeps its rows: it is not created again, nor marked
    // for pg_dump again; a table that is new is.
    fs::write(
        &install,
        "CREATE TABLE job.renamed_into (a int);\n\
         SELECT pg_catalog.pg_extension_config_dump('job.renamed_into', '');\n\
         CREATE TABLE job.brand_new_table (a int);\n",
    )
    .unwrap();
    let renaming = scratch.join(part.file_name().unwrap());
    fs::write(
        &renaming,
        format!("{text}\nALTER TABLE job.old_name RENAME TO renamed_into;\n"),
    )
    .unwrap();
    let written = run(&renaming);
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    let out = String::from_utf8(written.stdout).unwrap();
    assert!(out.contains("CREATE TABLE job.brand_new_table"), "{out}");
    assert!(!out.contains("CREATE TABLE job.renamed_into"), "{out}");
    assert!(!out.contains("config_dump('job.renamed_into'"), "{out}");
    fs::remove_dir_all(&scratch).unwrap();
}
