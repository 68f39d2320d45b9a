use pgrx::prelude::*;

#[pg_test]
fn smoke() {
    Spi::run("SELECT job.create_queue('q')").unwrap();
}
