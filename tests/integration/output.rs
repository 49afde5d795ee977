//! Job output streams through byte-exact with flat memory.

use std::io::{BufRead, BufReader};

use crate::harness::*;

#[test]
fn two_hundred_megabytes_arrive_byte_exact() {
    // seq 1..23_500_000 prints ~200 MB; every line is checked, so loss, duplication or
    // reordering anywhere fails the test.
    const LINES: u64 = 23_500_000;
    let job = Job::new(BUSYBOX);
    job.prepare_ok();
    let out = job.run("build_script", &format!("seq 1 {LINES}"));
    out.assert_ok();

    let file = std::fs::File::open(&out.stdout_path).unwrap();
    let size = file.metadata().unwrap().len();
    assert!(size > 200_000_000, "only {size} bytes");
    let mut expected = 1u64;
    let mut line = String::new();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    while reader.read_line(&mut line).unwrap() > 0 {
        assert_eq!(line, format!("{expected}\n"), "at line {expected}");
        expected += 1;
        line.clear();
    }
    assert_eq!(expected - 1, LINES);
    assert!(
        out.peak_rss_kib > 0 && out.peak_rss_kib < 64 * 1024,
        "driver peak RSS {} KiB while streaming (0: never sampled)",
        out.peak_rss_kib
    );
}

#[test]
fn stdout_and_stderr_stay_apart() {
    let job = Job::new(BUSYBOX);
    job.prepare_ok();
    let out = job.run("build_script", "echo to-out\necho to-err >&2");
    out.assert_ok();
    assert_eq!(out.stdout(), "to-out\n");
    assert_eq!(out.stderr, "to-err\n");
}
