//! What the Docker executor gives a job, driven by the payload: services, image options,
//! operator policies and container settings.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;

fn inspect(container: &str, format: &str) -> String {
    docker(&["inspect", "--format", format, container]).join("\n")
}

const PONG_SERVICE: &str = "nc -ll -p 6379 -e echo PONG";

#[test]
fn services_are_reachable_by_alias_and_derived_names() {
    let job = Job::builder(BUSYBOX)
        .var("PUBLIC_VAR", "visible")
        .secret_var("SECRET_VAR", "hidden-secret-value")
        .services(json!([{
            "name": BUSYBOX,
            "alias": "cache-svc,kv",
            "entrypoint": ["sh", "-c"],
            "command": [PONG_SERVICE],
            "variables": [{"key": "HEALTHCHECK_TCP_PORT", "value": "6379"}, {"key": "SVC_ONLY", "value": "1"}]
        }]))
        .build();
    let prepare = job.prepare();
    prepare.assert_ok();
    assert!(
        !prepare.stderr.contains("did not open"),
        "{}",
        prepare.stderr
    );

    let out = job.run(
        "build_script",
        "for h in cache-svc kv ecr-executor-test__busybox ecr-executor-test-busybox; do \
         printf '%s=' $h; nc -w 2 $h 6379 </dev/null; done",
    );
    out.assert_ok();
    for host in [
        "cache-svc",
        "kv",
        "ecr-executor-test__busybox",
        "ecr-executor-test-busybox",
    ] {
        assert!(
            out.stdout().contains(&format!("{host}=PONG")),
            "{host}: {}",
            out.all()
        );
    }
    let env = inspect(&format!("{}-svc0", job.key()), "{{json .Config.Env}}");
    assert!(
        env.contains("PUBLIC_VAR=visible") && env.contains("SVC_ONLY=1"),
        "{env}"
    );
    assert!(
        !env.contains("hidden-secret-value"),
        "secret job variables stay out of services: {env}"
    );
    job.cleanup().assert_ok();
    assert_no_leftovers(&job);
}

#[test]
fn a_service_that_never_opens_its_port_is_a_warning_with_its_logs() {
    let job = Job::builder(BUSYBOX)
        .config("wait_for_services_timeout = 2")
        .services(silent_service("echo service-says-hello; sleep 600"))
        .build();
    let start = Instant::now();
    let prepare = job.prepare();
    prepare.assert_ok();
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        prepare
            .stderr
            .contains("did not open port(s) [7777] within 2s"),
        "{}",
        prepare.stderr
    );
    assert!(
        prepare.stderr.contains("service-says-hello"),
        "{}",
        prepare.stderr
    );
    job.run("build_script", "echo job-still-runs").assert_ok();
}

#[test]
fn a_service_on_ecr_is_pulled_with_ecr_credentials() {
    let fake = crate::fake_aws::FakeAws::start();
    let service = world().ecr_image(RUNNER_ACCOUNT);
    let job = Job::builder(BUSYBOX)
        .aws(&fake.url)
        .config("[ecr]\ncache = false")
        .services(json!([{
            "name": service, "alias": "from-ecr", "pull_policy": ["always"],
            "entrypoint": ["sh", "-c"], "command": ["sleep 600"]
        }]))
        .build();
    let prepare = job.prepare();
    prepare.assert_ok();
    assert_eq!(fake.calls("GetAuthorizationToken"), 1);
    assert!(
        prepare.stdout().contains(&format!(
            "Pulling image {service} with the runner's AWS identity"
        )),
        "{}",
        prepare.stdout()
    );
}

#[test]
fn policies_are_decided_from_the_payload() {
    // (config, payload image, CI_JOB_IMAGE, expected failure setting or None).
    // Privileged containers run as `nobody`: this sandbox cannot grant root every capability.
    let busybox = "ecr-executor-test/busybox:*";
    let cases: Vec<(String, serde_json::Value, &str, Option<&str>)> = vec![
        (
            format!("allowed_images = [\"{busybox}\"]"),
            json!({"name": BUSYBOX}),
            "evil/image:1",
            None,
        ),
        (
            format!("allowed_images = [\"{busybox}\"]"),
            json!({"name": ENTRYPOINT}),
            BUSYBOX,
            Some("allowed_images"),
        ),
        (
            "allowed_users = [\"nobody\"]".into(),
            json!({"name": BUSYBOX, "executor_opts": {"docker": {"user": "nobody"}}}),
            BUSYBOX,
            None,
        ),
        (
            "allowed_users = [\"nobody\"]".into(),
            json!({"name": BUSYBOX, "executor_opts": {"docker": {"user": "root"}}}),
            BUSYBOX,
            Some("allowed_users"),
        ),
        (
            format!(
                "privileged = true\nuser = \"nobody\"\nallowed_privileged_images = [\"{busybox}\"]\n\
                 [security]\ninstance_metadata = \"warn\""
            ),
            json!({"name": BUSYBOX}),
            ENTRYPOINT,
            None,
        ),
        (
            "disable_entrypoint_overwrite = true".into(),
            json!({"name": BUSYBOX, "entrypoint": [""]}),
            BUSYBOX,
            Some("disable_entrypoint_overwrite"),
        ),
    ];
    for (config, image, variable, refused) in cases {
        let job = Job::builder(variable)
            .payload_image(image.clone())
            .config(&config)
            .build();
        let out = job.prepare();
        match refused {
            None => out.assert_ok(),
            Some(setting) => {
                out.assert_code(BUILD_FAILURE);
                assert!(
                    out.stderr.contains(setting),
                    "{config} / {image}: {}",
                    out.stderr
                );
                &out
            }
        };
    }
}

#[test]
fn allowed_services_are_checked() {
    let svc =
        |name: &str| json!([{"name": name, "entrypoint": ["sh", "-c"], "command": ["sleep 600"]}]);
    let config = "allowed_services = [\"ecr-executor-test/busybox:*\"]";
    Job::builder(BUSYBOX)
        .config(config)
        .services(svc(BUSYBOX))
        .build()
        .prepare_ok();
    let out = Job::builder(BUSYBOX)
        .config(config)
        .services(svc(HELPER))
        .build()
        .prepare();
    out.assert_code(BUILD_FAILURE);
    assert!(out.stderr.contains("allowed_services"), "{}", out.stderr);
}

/// As the Docker executor: an image not on `allowed_privileged_images` runs, unprivileged,
/// and the job log says why; the services' list is their own.
#[test]
fn images_off_the_privileged_lists_run_unprivileged() {
    let job = Job::builder(ENTRYPOINT)
        .payload_image(json!({"name": ENTRYPOINT, "executor_opts": {"docker": {"user": "nobody"}}}))
        .config(&format!(
            "privileged = true\nallowed_privileged_images = [\"{BUSYBOX}\"]\nallowed_privileged_services = [\"{ENTRYPOINT}\"]"
        ))
        .services(json!([{"name": BUSYBOX, "alias": "svc", "entrypoint": ["sh", "-c"], "command": ["sleep 600"]}]))
        .build();
    let out = job.prepare();
    out.assert_ok();
    let said = out.stdout();
    assert!(
        said.contains(&format!("{ENTRYPOINT} runs without privileged mode"))
            && said.contains(&format!("{BUSYBOX} runs without privileged mode")),
        "{said}"
    );
    assert_eq!(
        inspect(&job.build_container(), "{{.HostConfig.Privileged}}"),
        "false"
    );
    assert_eq!(
        inspect(&format!("{}-svc0", job.key()), "{{.HostConfig.Privileged}}"),
        "false"
    );
}

#[test]
fn user_and_privileged_reach_the_container() {
    // As `nobody`: this sandbox's Docker cannot give a privileged root every capability.
    let job = Job::builder(BUSYBOX)
        .payload_image(json!({"name": BUSYBOX, "executor_opts": {"docker": {"user": "nobody", "platform": "linux/amd64"}}}))
        .config("privileged = true\n[security]\ninstance_metadata = \"warn\"")
        .build();
    job.prepare_ok();
    let out = job.run("build_script", "id -u");
    out.assert_ok();
    assert_eq!(out.stdout().trim(), "65534");
    assert_eq!(
        inspect(&job.build_container(), "{{.HostConfig.Privileged}}"),
        "true"
    );
    assert_eq!(
        inspect(
            &format!("{}-helper", job.key()),
            "{{.HostConfig.Privileged}}"
        ),
        "false"
    );
}

#[test]
fn container_settings_are_applied() {
    let host_dir = tempfile::tempdir().unwrap();
    std::fs::write(host_dir.path().join("file"), "from-the-host").unwrap();
    // Declared before the job, so dropped after it: the job's cleanup frees the volume first.
    let named = NamedVolume(format!("ecr-executor-test-named-{}", std::process::id()));
    let job = Job::builder(BUSYBOX)
        .config(&format!(
            r#"cpus = 0.5
memory = "64m"
memory_swap = "128m"
shm_size = "32m"
cap_drop = ["NET_RAW"]
security_opt = ["no-new-privileges"]
dns_search = ["example.test"]
extra_hosts = ["db.test:10.1.2.3"]
tmpfs = {{ "/scratch" = "rw,size=16m" }}
volumes = ["/anon", "{}:/named", "{}:/bound:ro"]
[services]
memory = "48m"
cpus = "0.25""#,
            named.0,
            host_dir.path().display()
        ))
        .services(json!([{"name": BUSYBOX, "entrypoint": ["sh", "-c"], "command": ["sleep 600"]}]))
        .build();
    job.prepare_ok();
    let build = job.build_container();
    let helper = format!("{}-helper", job.key());
    let host = inspect(
        &build,
        "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.ShmSize}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}} {{.HostConfig.Tmpfs}} {{.HostConfig.NetworkMode}}",
    );
    assert_eq!(
        host,
        format!(
            "500000000 67108864 134217728 33554432 [NET_RAW] [no-new-privileges] map[/scratch:rw,size=16m] container:{}",
            inspect(&helper, "{{.Id}}")
        )
    );
    // DNS settings belong to the owner of the job's network namespace, the helper; the
    // build container sees them (its /etc/hosts is checked below).
    let dns = inspect(
        &helper,
        "{{.HostConfig.DnsSearch}} {{.HostConfig.ExtraHosts}} {{.HostConfig.NanoCpus}}",
    );
    assert_eq!(dns, "[example.test] [db.test:10.1.2.3] 0");
    // A service's limits are its own; its DNS settings belong to the owner of its network
    // namespace, which the metadata guard blocks before the service starts.
    let service = inspect(
        &format!("{}-svc0", job.key()),
        "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}} {{.HostConfig.NetworkMode}}",
    );
    let owner = format!("{}-svc0-net", job.key());
    assert_eq!(
        service,
        format!(
            "250000000 50331648 container:{}",
            inspect(&owner, "{{.Id}}")
        )
    );
    assert_eq!(
        inspect(
            &owner,
            "{{.HostConfig.ExtraHosts}} {{.HostConfig.NanoCpus}}"
        ),
        "[db.test:10.1.2.3] 0"
    );

    let out = job.run(
        "build_script",
        "grep db.test /etc/hosts && cat /bound/file && echo && touch /named/x && touch /anon/x && \
         grep ' /scratch ' /proc/mounts && ! touch /bound/y 2>/dev/null && echo all-good",
    );
    out.assert_ok();
    let text = out.stdout();
    assert!(
        text.contains("10.1.2.3") && text.contains("from-the-host") && text.contains("tmpfs"),
        "{text}"
    );
    assert!(text.contains("all-good"), "{}", out.all());
    job.cleanup().assert_ok();
    assert_no_leftovers(&job);
}

/// A named volume a test has the job use (not the driver's, so cleanup keeps it); removed
/// however the test ends.
struct NamedVolume(String);

impl Drop for NamedVolume {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["volume", "rm", "-f", &self.0])
            .output();
    }
}

#[test]
fn scheduling_runtime_and_label_settings_are_applied() {
    let job = Job::builder(BUSYBOX)
        .config(
            r#"memory_reservation = "32m"
cpu_shares = 512
cpuset_cpus = "0"
oom_score_adjust = 200
ulimit = { nofile = "1000:2000" }
sysctls = { "net.ipv4.ip_unprivileged_port_start" = "80" }
group_add = ["123"]
ipcmode = "private"
container_labels = { "team" = "platform" }
disable_cache = true
[services]
limit = 1
memory_reservation = "16m"
cpuset_cpus = "0"
security_opt = ["no-new-privileges"]
devices = ["/dev/null:/dev/mynull"]"#,
        )
        .services(json!([{"name": BUSYBOX, "entrypoint": ["sh", "-c"], "command": ["sleep 600"]}]))
        .build();
    job.prepare_ok();
    let build = inspect(
        &job.build_container(),
        "{{.HostConfig.MemoryReservation}} {{.HostConfig.CpuShares}} {{.HostConfig.CpusetCpus}} {{.HostConfig.OomScoreAdj}} {{.HostConfig.Ulimits}} {{.HostConfig.Sysctls}} {{.HostConfig.GroupAdd}} {{.HostConfig.IpcMode}} {{index .Config.Labels \"team\"}} {{.Config.StopTimeout}}",
    );
    // StopTimeout 0: PID 1 of the build and helper containers ignores SIGTERM, so an engine
    // restart or shutdown need not wait for it; a service keeps the engine's default.
    assert_eq!(
        build,
        "33554432 512 0 200 [map[Hard:2000 Name:nofile Soft:1000]] map[net.ipv4.ip_unprivileged_port_start:80] [123] private platform 0"
    );
    let helper = inspect(
        &format!("{}-helper", job.key()),
        "{{index .Config.Labels \"team\"}} {{.Config.StopTimeout}}",
    );
    assert_eq!(helper, "platform 0");
    let service = inspect(
        &format!("{}-svc0", job.key()),
        "{{.HostConfig.MemoryReservation}} {{.HostConfig.CpusetCpus}} {{.HostConfig.SecurityOpt}} {{range .HostConfig.Devices}}{{.PathInContainer}}{{end}} {{index .Config.Labels \"team\"}} {{.Config.StopTimeout}}",
    );
    assert_eq!(
        service,
        "16777216 0 [no-new-privileges] /dev/mynull platform <nil>"
    );

    let out = job.run(
        "build_script",
        "ulimit -n; cat /proc/self/oom_score_adj; id -G; \
         cat /proc/sys/net/ipv4/ip_unprivileged_port_start; \
         grep -q ' /cache ' /proc/mounts || echo no-cache-volume",
    );
    out.assert_ok();
    let lines: Vec<String> = out.stdout().lines().map(str::to_owned).collect();
    assert_eq!(lines[0], "1000", "{lines:?}");
    assert_eq!(lines[1], "200", "{lines:?}");
    assert!(lines[2].split(' ').any(|g| g == "123"), "{lines:?}");
    assert_eq!(lines[3], "80", "{lines:?}");
    assert_eq!(lines[4], "no-cache-volume", "{lines:?}");
    job.cleanup().assert_ok();
    assert_no_leftovers(&job);
}

#[test]
fn gpus_reach_the_build_container_and_services_not_the_helper() {
    // This machine has no GPU: the engine refuses to start a container that asks for one,
    // which shows that the request reached it. On a GPU host prepare would succeed; either
    // way inspect shows what was asked.
    let requested = |container: &str| inspect(container, "{{json .HostConfig.DeviceRequests}}");
    let check = |out: &Output| {
        if out.code != Some(0) {
            out.assert_code(SYSTEM_FAILURE);
            assert!(out.all().contains("device driver"), "{}", out.all());
        }
    };
    let build = Job::builder(BUSYBOX)
        .config(r#"gpus = '"device=0,1",driver=nvidia,"capabilities=compute,utility"' "#)
        .build();
    check(&build.prepare());
    assert_eq!(
        requested(&build.build_container()),
        r#"[{"Driver":"nvidia","Count":0,"DeviceIDs":["0","1"],"Capabilities":[["compute","utility"]],"Options":null}]"#
    );
    assert_eq!(requested(&format!("{}-helper", build.key())), "null");
    build.cleanup().assert_ok();
    assert_no_leftovers(&build);

    let service = Job::builder(BUSYBOX)
        .services(silent_service("sleep 600"))
        .config("[services]\ngpus = \"all\"")
        .build();
    check(&service.prepare());
    assert_eq!(
        requested(&format!("{}-svc0", service.key())),
        r#"[{"Driver":"","Count":-1,"DeviceIDs":null,"Capabilities":[["gpu"]],"Options":null}]"#
    );
    service.cleanup().assert_ok();
    assert_no_leftovers(&service);
}
