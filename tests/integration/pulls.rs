//! Faults while the engine pulls a job's image: a layer whose bytes do not match its digest,
//! the engine's disk filling up, and the engine restarting mid-pull. The images are real
//! (committed layers pushed to a `docker-registry` of the test's own); the faults come from
//! [`BlobProxy`], which stands between the engine and that registry, and from a private
//! dockerd ([`PrivateDockerd`]) whose data root is a small tmpfs or which gets SIGKILLed.
//! Each: one sentence and a system failure, nothing left, and the next job runs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cached::Registry;
use crate::harness::*;
use crate::restart::PrivateDockerd;

/// What [`BlobProxy`] does to layer downloads (`GET .../blobs/sha256:...`).
#[derive(Default)]
struct Faults {
    /// Flip one byte of every blob it passes on.
    corrupt: AtomicBool,
    /// Send blobs at this many bytes per second per connection (0: as fast as they come).
    rate: AtomicU64,
    /// Blob bytes passed on so far.
    sent: AtomicU64,
}

/// An HTTP proxy in front of a registry on this host's loopback that passes every request
/// on (one per connection) and injects [`Faults`] into blob bodies. It listens on
/// 127.0.0.1 of this host or, for a private dockerd, of that engine's network namespace
/// (the listening socket is made there; nothing is added to the machine's network).
pub struct BlobProxy {
    pub port: u16,
    faults: Arc<Faults>,
    _serving: Serving,
}

impl BlobProxy {
    /// A proxy to `upstream` listening on this host's loopback.
    pub fn start(upstream: u16) -> BlobProxy {
        BlobProxy::serve(TcpListener::bind("127.0.0.1:0").unwrap(), upstream)
    }

    /// A proxy to `upstream` listening on 127.0.0.1:5000 inside `engine`'s network namespace
    /// (that engine treats loopback registries as plain HTTP, as every dockerd does).
    pub fn start_in(engine: &PrivateDockerd, upstream: u16) -> BlobProxy {
        let netns = format!("/run/netns/{}", engine.name);
        // A thread of its own enters the namespace, so only the socket it makes lives there.
        let listener = std::thread::spawn(move || {
            let ns = std::fs::File::open(&netns).unwrap();
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap();
            TcpListener::bind("127.0.0.1:5000").unwrap()
        })
        .join()
        .unwrap();
        BlobProxy::serve(listener, upstream)
    }

    fn serve(listener: TcpListener, upstream: u16) -> BlobProxy {
        let port = listener.local_addr().unwrap().port();
        let faults = Arc::new(Faults::default());
        let shared = faults.clone();
        let serving = serve(listener, move |client| {
            let _ = relay(client, upstream, &shared);
        });
        BlobProxy {
            port,
            faults,
            _serving: serving,
        }
    }

    pub fn corrupt(&self, on: bool) {
        self.faults.corrupt.store(on, Ordering::Relaxed);
    }

    pub fn throttle(&self, bytes_per_second: u64) {
        self.faults.rate.store(bytes_per_second, Ordering::Relaxed);
    }

    /// Waits (at most `limit`) until the proxy has passed on `n` blob bytes.
    pub fn wait_for_blob_bytes(&self, n: u64, limit: Duration) {
        let start = Instant::now();
        while self.faults.sent.load(Ordering::Relaxed) < n {
            assert!(start.elapsed() < limit, "no layer download came");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Passes one request on with `Connection: close` (so the response ends at EOF) and its
/// response back, faulting a blob's body as `faults` says.
fn relay(client: TcpStream, upstream: u16, faults: &Faults) -> std::io::Result<()> {
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut request = String::new();
    from_client.read_line(&mut request)?;
    let mut head = request.clone();
    loop {
        let mut line = String::new();
        if from_client.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if !line.to_ascii_lowercase().starts_with("connection:") {
            head.push_str(&line);
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    let blob = request.starts_with("GET ") && request.contains("/blobs/sha256:");
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(head.as_bytes())?; // a pull's requests carry no body
    let mut from_up = BufReader::new(up);
    let mut status = String::new();
    from_up.read_line(&mut status)?;
    let mut client = client;
    client.write_all(status.as_bytes())?;
    loop {
        let mut line = String::new();
        if from_up.read_line(&mut line)? == 0 {
            return Ok(());
        }
        client.write_all(line.as_bytes())?;
        if line.trim().is_empty() {
            break;
        }
    }
    let fault = blob && status.contains(" 200 ");
    let mut first = true;
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = from_up.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        if fault {
            if first && faults.corrupt.load(Ordering::Relaxed) {
                buf[n / 2] ^= 0xff;
            }
            first = false;
            let rate = faults.rate.load(Ordering::Relaxed);
            if rate > 0 {
                std::thread::sleep(Duration::from_secs_f64(n as f64 / rate as f64));
            }
        }
        client.write_all(&buf[..n])?;
        if fault {
            faults.sent.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// Makes `repo:1` in `registry` from the busybox test image and one committed layer per
/// command, through the machine's engine, and removes it there again: a puller finds only
/// the base layer on its host and downloads the others. Returns the reference to pull
/// through a proxy on `port`.
fn push_layers(registry: &Registry, repo: &str, layers: &[&str], port: u16) -> String {
    let pushed = format!("127.0.0.1:{}/{repo}:1", registry.port);
    let mut image = BUSYBOX.to_owned();
    let mut made = Vec::new();
    let unique = format!("{}-{}", repo.replace('/', "-"), std::process::id());
    for (i, command) in layers.iter().enumerate() {
        let container = format!("ecr-executor-test-layer-{unique}-{i}");
        docker(&["run", "--name", &container, &image, "sh", "-c", command]);
        let layer = format!("ecr-executor-test/layers-{unique}:{i}");
        docker(&["commit", &container, &layer]);
        docker(&["rm", &container]);
        made.push(layer.clone());
        image = layer;
    }
    docker(&["tag", &image, &pushed]);
    docker(&["push", "-q", &pushed]);
    made.push(pushed);
    for image in made.iter().rev() {
        docker(&["rmi", image]);
    }
    format!("127.0.0.1:{port}/{repo}:1")
}

/// A job that pulls `image` at every prepare on the engine `config` names.
fn pulling_job(image: &str, config: &str) -> Job {
    Job::builder(image)
        .payload_image(json!({"name": image, "pull_policy": ["always"]}))
        .config(config)
        .build()
}

/// One error line, a system failure, naming the image and containing every one of `words`.
#[track_caller]
fn assert_one_sentence(out: &Output, image: &str, words: &[&str]) {
    out.assert_code(SYSTEM_FAILURE);
    let errors: Vec<&str> = out.stderr.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{}", out.all());
    assert!(
        errors[0].contains(image) && words.iter().all(|w| errors[0].contains(w)),
        "{}",
        out.all()
    );
    assert!(!out.all().contains("Error {"), "{}", out.all());
}

#[test]
fn a_layer_that_does_not_match_its_digest_fails_prepare_and_the_retry_pulls() {
    let registry = Registry::start();
    let proxy = BlobProxy::start(registry.port);
    let image = push_layers(
        &registry,
        "pulls/corrupt",
        &["head -c 1048576 /dev/urandom > /a"],
        proxy.port,
    );
    proxy.corrupt(true);
    let job = pulling_job(&image, "");
    let out = job.prepare();
    assert_one_sentence(&out, &image, &["does not match its digest"]);
    job.cleanup().assert_ok();
    assert_no_leftovers(&job);

    // The runner's retry, once the registry serves the layer whole.
    proxy.corrupt(false);
    job.prepare_ok();
    let run = job.run("build_script", "wc -c < /a");
    run.assert_ok();
    assert!(run.stdout().contains("1048576"), "{}", run.all());
    job.cleanup().assert_ok();
    assert_no_leftovers(&job);
    docker(&["rmi", &image]);
}

#[test]
fn a_full_disk_under_the_engine_fails_the_pull_plainly_and_the_next_job_runs() {
    let engine = PrivateDockerd::start_on_tmpfs("ecrd-full", "96m");
    let registry = Registry::start();
    let proxy = BlobProxy::start_in(&engine, registry.port);
    // 160 MiB of zeros: a small download that cannot be unpacked into what is left.
    let image = push_layers(
        &registry,
        "pulls/big",
        &["head -c 167772160 /dev/zero > /z"],
        proxy.port,
    );
    let job = pulling_job(&image, &engine.config());
    let out = job.prepare();
    assert_one_sentence(&out, &image, &["no space left on device", "data root"]);
    job.cleanup().assert_ok();
    assert_eq!(engine.leftovers(&job), Vec::<String>::new());
    assert_no_leftovers(&job);

    let next = Job::builder(BUSYBOX).config(&engine.config()).build();
    next.prepare_ok();
    next.run("build_script", "echo the-next-job").assert_ok();
    next.cleanup().assert_ok();
    assert_eq!(engine.leftovers(&next), Vec::<String>::new());
    assert_no_leftovers(&next);
}

#[test]
fn a_dockerd_restarted_mid_pull_fails_prepare_plainly_and_the_retry_pulls() {
    let engine = PrivateDockerd::start("ecrd-pull");
    let registry = Registry::start();
    let proxy = BlobProxy::start_in(&engine, registry.port);
    let image = push_layers(
        &registry,
        "pulls/layers",
        &[
            "head -c 3145728 /dev/urandom > /a",
            "head -c 3145728 /dev/urandom > /b",
            "head -c 3145728 /dev/urandom > /c",
        ],
        proxy.port,
    );
    // Slow enough that the engine dies with its downloads under way.
    proxy.throttle(1 << 20);
    let job = pulling_job(&image, &engine.config());
    let prepare = job.spawn_prepare();
    proxy.wait_for_blob_bytes(512 << 10, Duration::from_secs(60));
    engine.kill();
    let out = prepare.wait(Duration::from_secs(30));
    assert_one_sentence(&out, &image, &["cannot reach the Docker daemon to pull"]);

    // As the runner does after a failed prepare: cleanup, then the next attempt.
    job.cleanup().assert_ok();
    engine.script("start");
    proxy.throttle(0);
    job.prepare_ok();
    let run = job.run("build_script", "cat /a /b /c | wc -c");
    run.assert_ok();
    assert!(run.stdout().contains("9437184"), "{}", run.all());
    job.cleanup().assert_ok();
    assert_eq!(engine.leftovers(&job), Vec::<String>::new());
    assert_no_leftovers(&job);
}
