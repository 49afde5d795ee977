//! The physical floor of an output shape: the job's shell (busybox, as in the test image)
//! runs the script on the host and writes into one plain pipe, sized and read as the driver
//! sizes and reads its FIFOs (1 MiB buffer, 256 KiB reads), and this process copies what it
//! reads to its stdout. No container, no engine, no driver. Usage: pipe_floor SCRIPT

// Measurement tooling, not the product: a failed unwrap aborts the run.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::process::{Command, ExitCode, Stdio};

fn main() -> ExitCode {
    let script = std::env::args().nth(1).expect("usage: pipe_floor SCRIPT");
    let (reader, writer) = rustix::pipe::pipe().unwrap();
    rustix::pipe::fcntl_setpipe_size(&writer, 1 << 20).unwrap();
    let stderr = writer.try_clone().unwrap();
    let mut child = Command::new("busybox")
        .args(["sh", &script])
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut reader = std::fs::File::from(reader);
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0_u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).unwrap();
    }
    out.flush().unwrap();
    if child.wait().unwrap().success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
