//! Job output streams through byte-exact with flat memory, on both paths: direct (FIFOs in a
//! bind-mounted directory, the default with a local engine) and over the attach.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;

use crate::harness::*;

/// The same job twice: with direct output (the default here) and over the attach.
fn on_both_paths() -> [Job; 2] {
    [
        Job::new(BUSYBOX),
        Job::builder(BUSYBOX)
            .config("[docker]\ndirect_output = false")
            .build(),
    ]
}

/// A job whose build container runs as `nobody` (the job's `image: docker: user`).
fn as_nobody() -> Job {
    Job::builder(BUSYBOX)
        .payload_image(serde_json::json!({
            "name": BUSYBOX,
            "executor_opts": {"docker": {"user": "nobody"}}
        }))
        .build()
}

#[test]
fn direct_output_bypasses_the_engine_unless_turned_off() {
    let [direct, attach] = on_both_paths();
    // Any user of the container can write the FIFOs.
    let nobody = as_nobody();
    for (job, expected) in [
        (&direct, "/.ecr-executor/"),
        (&nobody, "/.ecr-executor/"),
        (&attach, "pipe:"),
    ] {
        job.prepare_ok();
        let out = job.run(
            "build_script",
            "readlink /proc/self/fd/1; readlink /proc/self/fd/2 >&2",
        );
        out.assert_ok();
        assert!(out.stdout().starts_with(expected), "{}", out.all());
        assert!(out.stderr.starts_with(expected), "{}", out.all());
    }
    // The stage's FIFOs are gone after it; the directory is the runner user's alone on the
    // host, and cleanup removes it.
    let dir = direct.direct_dir();
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir.parent().unwrap()), 0o700);
    // With direct output off the job's directory is made too (it tells cleanup the job got
    // as far as the engine) but never mounted.
    let mounts = docker(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{.Destination}} {{end}}",
        &attach.build_container(),
    ]);
    assert!(!mounts.concat().contains("/.ecr-executor"), "{mounts:?}");
    for job in [&direct, &attach] {
        job.cleanup().assert_ok();
        assert_no_leftovers(job);
    }
}

#[test]
fn two_hundred_megabytes_arrive_byte_exact() {
    // Both paths at once: two jobs, two streams, each checked on its own.
    let jobs = on_both_paths();
    std::thread::scope(|s| {
        for job in &jobs {
            s.spawn(move || two_hundred_megabytes(job));
        }
    });
}

/// Turns `"129\n"` into `"130\n"`.
fn increment_decimal_line(line: &mut Vec<u8>) {
    let digits = line.len() - 1;
    for i in (0..digits).rev() {
        if line[i] == b'9' {
            line[i] = b'0';
        } else {
            line[i] += 1;
            return;
        }
    }
    line.insert(0, b'1');
}

fn two_hundred_megabytes(job: &Job) {
    // 2.4 million distinct lines of about 86 bytes: a number, then a fixed ruler (busybox
    // `seq -s` puts it between the numbers, so the last line is the bare number). Every line is
    // checked, so loss, duplication or reordering anywhere fails the test. Lines of this length
    // cost `seq` a fifth of the time that short ones would for the same bytes.
    const LINES: u64 = 2_400_000;
    const RULER: &str =
        " ....+....1....+....2....+....3....+....4....+....5....+....6....+....7....+...";
    job.prepare_ok();
    let out = job.run("build_script", &format!("seq -s '{RULER}\n' 1 {LINES}"));
    out.assert_ok();

    let file = std::fs::File::open(&out.stdout_path).unwrap();
    let size = file.metadata().unwrap().len();
    assert!(size > 200_000_000, "only {size} bytes");
    // The expected number as decimal text, counted up in place: the check must not take
    // longer than the stream in a debug build.
    let mut number = b"1\n".to_vec(); // (as a line, for increment_decimal_line)
    let mut count = 0u64;
    let mut line = Vec::new();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    while reader.read_until(b'\n', &mut line).unwrap() > 0 {
        count += 1;
        let digits = &number[..number.len() - 1];
        let ruler: &[u8] = if count == LINES {
            b""
        } else {
            RULER.as_bytes()
        };
        let (head, tail) = line.split_at(digits.len().min(line.len()));
        assert!(
            head == digits && tail.strip_suffix(b"\n") == Some(ruler),
            "line {count}: {:?}",
            String::from_utf8_lossy(&line)
        );
        increment_decimal_line(&mut number);
        line.clear();
    }
    assert_eq!(count, LINES);
    assert!(
        out.peak_rss_kib > 0 && out.peak_rss_kib < 64 * 1024,
        "driver peak RSS {} KiB while streaming (0: never sampled)",
        out.peak_rss_kib
    );
}

#[test]
fn stdout_and_stderr_stay_apart() {
    for job in on_both_paths() {
        job.prepare_ok();
        // Also by path, as tools with a `--log-file` option do (`>` opens with O_CREAT and
        // O_TRUNC).
        let out = job.run(
            "build_script",
            "echo to-out\necho to-err >&2\necho path-out > /dev/stdout\n\
             echo path-err > /dev/stderr",
        );
        out.assert_ok();
        assert_eq!(out.stdout(), "to-out\npath-out\n");
        assert_eq!(out.stderr, "to-err\npath-err\n");
    }
}

#[test]
fn an_engine_that_cannot_see_the_directory_gets_the_output_over_the_attach() {
    // The driver's TMPDIR is a tmpfs in a mount namespace of its own, as for a runner in a
    // container talking to the host's engine: the bind mount is refused, prepare drops it.
    let job = Job::builder(BUSYBOX).private_tmpdir().build();
    let prepared = job.prepare();
    prepared.assert_ok();
    assert!(
        prepared.all().contains("the Docker engine cannot see "),
        "{}",
        prepared.all()
    );
    let out = job.run(
        "build_script",
        "readlink /proc/self/fd/1; [ -e /.ecr-executor ] || echo no-mount",
    );
    out.assert_ok();
    assert_eq!(
        out.stdout().lines().collect::<Vec<_>>()[1..],
        ["no-mount"],
        "{}",
        out.all()
    );
    assert!(out.stdout().starts_with("pipe:"), "{}", out.all());
    job.cleanup().assert_ok();
    assert_no_leftovers(&job);
}

/// A runner under systemd's `PrivateTmp=yes` has a TMPDIR the engine cannot see: with
/// `[docker] direct_output_dir` on a shared directory, output still skips the engine.
#[test]
fn a_direct_output_dir_the_engine_sees_serves_a_runner_with_a_private_tmp() {
    let shared = tempfile::tempdir().unwrap();
    let job = Job::builder(BUSYBOX)
        .private_tmpdir()
        .config(&format!(
            "[docker]\ndirect_output_dir = {:?}",
            shared.path()
        ))
        .build();
    let prepared = job.prepare();
    prepared.assert_ok();
    assert!(!prepared.all().contains("cannot see"), "{}", prepared.all());
    let uid = rustix::process::geteuid().as_raw();
    let dir = shared
        .path()
        .join(format!("ecr-executor-{uid}"))
        .join(job.key());
    assert!(dir.is_dir(), "{}", dir.display());
    let out = job.run("build_script", "readlink /proc/self/fd/1");
    out.assert_ok();
    assert!(out.stdout().starts_with("/.ecr-executor/"), "{}", out.all());
    job.cleanup().assert_ok();
    assert!(!dir.exists(), "cleanup removes it");
}

#[test]
fn fifos_the_container_cannot_open_mean_the_attach_and_one_warning() {
    // As SELinux labels would: the job's user cannot reach the directory.
    let job = as_nobody();
    job.prepare_ok();
    let dir = job.direct_dir();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    for (stage, warned) in [("build_script", true), ("after_script", false)] {
        let out = job.run(stage, "echo still-here");
        out.assert_ok();
        assert_eq!(out.stdout(), "still-here\n");
        assert_eq!(
            out.stderr.contains("cannot open the FIFOs"),
            warned,
            "{stage}: {}",
            out.stderr
        );
    }
    job.cleanup().assert_ok();
    assert_no_leftovers(&job);
}

#[test]
fn with_direct_output_a_background_writer_ends_after_its_stage() {
    // Nobody reads a stage's FIFOs once it ended, so a process it left behind gets SIGPIPE
    // on its next write; the Docker executor, whose container stops after each stage, ends
    // such processes too. A silent one keeps running, as over the attach.
    let job = Job::new(BUSYBOX);
    job.prepare_ok();
    job.run(
        "build_script",
        "(sleep 1; echo late; touch /tmp/wrote) &\n(sleep 1; touch /tmp/silent) &\necho first",
    )
    .assert_ok();
    // Both wake after a second; give the writer half a second more once the silent one did.
    let out = job.run(
        "after_script",
        "i=0; while [ ! -e /tmp/silent ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done\n\
         sleep 0.5; ls /tmp/silent /tmp/wrote 2>/dev/null || true",
    );
    out.assert_ok();
    assert_eq!(out.stdout(), "/tmp/silent\n");
}

#[test]
fn a_finished_line_shows_at_once() {
    // The runner merges stdout and stderr into one log: a newline held back until the next
    // write on its stream would glue the next stderr line to this one.
    for job in on_both_paths() {
        job.prepare_ok();
        let running = job.spawn_run("build_script", "echo first; sleep 2; echo second");
        running.wait_for_output("first");
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(running.stdout_so_far(), "first\n");
        let out = running.wait(std::time::Duration::from_secs(30));
        out.assert_ok();
        assert_eq!(out.stdout(), "first\nsecond\n");
    }
}

#[test]
fn stage_output_is_exact_at_both_ends() {
    // The stage shell frames each stage with marker lines; none of them may show.
    for job in on_both_paths() {
        job.prepare_ok();
        for _ in 0..2 {
            let out = job.run("build_script", "printf no-newline; printf 'err\\n\\n' >&2");
            out.assert_ok();
            assert_eq!(out.stdout(), "no-newline");
            assert_eq!(out.stderr, "err\n\n");
        }
    }
}

#[test]
fn output_left_behind_by_an_earlier_stage_stays_out_of_the_next() {
    for job in on_both_paths() {
        job.prepare_ok();
        let first = job.run(
            "build_script",
            "(sleep 1; echo late-out; echo late-err >&2) &\necho first",
        );
        first.assert_ok();
        assert_eq!(first.stdout(), "first\n");
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let second = job.run("after_script", "echo second");
        second.assert_ok();
        assert_eq!(second.stdout(), "second\n");
        assert_eq!(second.stderr, "");
    }
}

#[test]
fn scripts_with_control_bytes_here_documents_and_megabytes_run_whole() {
    for job in on_both_paths() {
        job.prepare_ok();
        let mut script = b"cat <<'EOF'\nEOF is not the end\nEOF\n".to_vec();
        // Docker's default detach keys (ctrl-p ctrl-q) must not end anything.
        script.extend_from_slice(b"printf 'keys \x10\x11 kept\\n'\n");
        script.extend_from_slice("# padding\n".repeat(200_000).as_bytes());
        script.extend_from_slice(b"echo last line without newline");
        let out = job.run_raw("build_script", &script);
        out.assert_ok();
        assert_eq!(
            out.stdout(),
            "EOF is not the end\nkeys \u{10}\u{11} kept\nlast line without newline\n"
        );
    }
}
