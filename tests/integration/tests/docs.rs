//! The docs run as pasted: every ```sql block of the README and of the libraries' READMEs,
//! in order, through psql (so `\gset` works as it does for a reader) on a fresh database,
//! stopping at the first error.  Each document gets a private cluster: the roles the README
//! creates are the cluster's, and would otherwise be left behind in the shared test cluster.

use pg_jobqueue_integration::cluster::*;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The ```sql blocks of `doc` (a path from the repository's root), each with the line its
/// first statement is on.
fn sql_blocks(doc: &str) -> Vec<(usize, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(doc);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{doc}: {e}"));
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match open.as_mut() {
            None if line.trim_end() == "```sql" => open = Some((i + 2, String::new())),
            None => {}
            Some(_) if line.trim_end() == "```" => blocks.push(open.take().unwrap()),
            Some((_, block)) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    assert!(open.is_none(), "{doc}: a ```sql block is not closed");
    blocks
}

/// Runs every SQL block of `doc`, in order and in one psql session, on a new database of its
/// own cluster; panics naming the block that failed, with psql's error.
fn run_sql_of(doc: &str, cluster_name: &str) {
    let blocks = sql_blocks(doc);
    assert!(!blocks.is_empty(), "{doc} has no ```sql block");
    let cluster = Cluster::start_new(cluster_name, &[]);
    cluster.create_database("docs");
    let mut script = String::new();
    for (line, block) in &blocks {
        script.push_str(&format!("\\echo '### {doc}:{line}'\n{block}\n"));
    }
    let mut psql = Command::new(pg_bin().join("psql"))
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &cluster.url("docs"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run psql");
    psql.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = psql.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last_block = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .next_back()
        .unwrap_or("before the first block");
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "the ```sql block at {last_block} fails as pasted:\n{stderr}\n--- server log (tail) ---\n{}",
        cluster.log_tail(10)
    );
    let ran = stdout.lines().filter(|l| l.starts_with("### ")).count();
    assert_eq!(ran, blocks.len(), "psql stopped early:\n{stdout}");
}

#[test]
fn the_readmes_sql_runs_in_order_as_pasted() {
    run_sql_of("README.md", "docs-readme");
}

#[test]
fn the_node_librarys_readme_sql_runs_as_pasted() {
    run_sql_of("clients/node/README.md", "docs-node");
}

#[test]
fn the_python_librarys_readme_sql_runs_as_pasted() {
    run_sql_of("clients/python/README.md", "docs-python");
}
