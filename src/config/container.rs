//! Settings of the job's containers, named as in the Docker executor's `[runners.docker]`,
//! parsed into types when the config loads: sizes, volumes, devices and hosts are checked once
//! and never parsed again.
//!
//! [`Resources`] is what build and service containers share (limits, devices, tmpfs, GPUs):
//! top-level keys for the build container, `[services]` keys for services.
//! [`ContainerSettings`] holds the build container's other settings (top-level keys),
//! [`ServiceSettings`] the services' (`[services]`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;

use super::units::{self, GpuRequest, Ulimit};

/// Limits and devices that build and service containers share. Sizes accept `512m`, `2g` or a
/// number of bytes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Resources {
    #[serde(deserialize_with = "units::cpus")]
    pub cpus: Option<i64>,
    #[serde(deserialize_with = "units::bytes")]
    pub memory: Option<i64>,
    #[serde(deserialize_with = "units::bytes")]
    pub memory_swap: Option<i64>,
    #[serde(deserialize_with = "units::bytes")]
    pub memory_reservation: Option<i64>,
    #[serde(deserialize_with = "units::bytes")]
    pub shm_size: Option<i64>,
    /// Mount point → tmpfs options.
    pub tmpfs: BTreeMap<String, String>,
    pub cpuset_cpus: Option<String>,
    pub cgroup_parent: Option<String>,
    pub security_opt: Vec<String>,
    pub devices: Vec<Device>,
    /// GPUs, as the Docker CLI's `--gpus` (see [`GpuRequest`]).
    #[serde(deserialize_with = "units::gpus")]
    pub gpus: Option<GpuRequest>,
}

/// Settings of the build container besides its [`Resources`] (and, for volumes and DNS, the
/// helper's).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ContainerSettings {
    pub volumes: Vec<Volume>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub extra_hosts: Vec<ExtraHost>,
    /// Docker network mode when the job has no network of its own (e.g. `host`).
    pub network_mode: Option<String>,
    /// MTU of the per-job network.
    pub network_mtu: Option<u32>,
    pub cpuset_mems: Option<String>,
    pub cpu_shares: Option<i64>,
    pub oom_kill_disable: Option<bool>,
    pub oom_score_adjust: Option<i64>,
    /// Resource limits by name (`nofile`, `nproc`, ...): `"soft[:hard]"` or a number.
    #[serde(deserialize_with = "units::ulimits")]
    pub ulimit: Vec<Ulimit>,
    /// OCI runtime (e.g. `runsc`), as configured in the engine.
    pub runtime: Option<String>,
    pub sysctls: BTreeMap<String, String>,
    pub userns_mode: Option<String>,
    pub ipcmode: Option<String>,
    /// Extra groups for the build container's user.
    pub group_add: Vec<String>,
    pub device_cgroup_rules: Vec<String>,
}

/// `[services]`: settings of service containers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ServiceSettings {
    #[serde(flatten)]
    pub resources: Resources,
    /// Default: the top-level `privileged`.
    pub privileged: Option<bool>,
    /// Most services one job may start (the Docker executor's `services_limit`). None: any.
    pub limit: Option<usize>,
}

/// One entry of `volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(crate) enum Volume {
    /// `/path`: an anonymous volume, removed with the container.
    Anonymous { target: String },
    /// `source:/path[:mode]`: a named volume (`source` is a name) or a host directory
    /// (`source` is an absolute path), in Docker's bind syntax.
    Bind {
        source: String,
        target: String,
        mode: Option<String>,
    },
}

/// Mount options Docker's bind syntax accepts after the target.
const VOLUME_MODES: &[&str] = &[
    "ro",
    "rw",
    "z",
    "Z",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "private",
    "rprivate",
    "nocopy",
    "consistent",
    "cached",
    "delegated",
];

impl TryFrom<String> for Volume {
    type Error = String;

    fn try_from(spec: String) -> Result<Volume, String> {
        let bad = || {
            format!("volume {spec:?} is not `/path`, `name:/path[:mode]` or `/host:/path[:mode]`")
        };
        let absolute = |p: &str| p.starts_with('/') && !p.split('/').any(|c| c == "..");
        match spec.split(':').collect::<Vec<_>>()[..] {
            [target] if absolute(target) => Ok(Volume::Anonymous {
                target: target.to_owned(),
            }),
            [source, target, ref mode @ ..] if absolute(target) && mode.len() <= 1 => {
                let named = !source.is_empty()
                    && source.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && source
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
                if !named && !absolute(source) {
                    return Err(bad());
                }
                let mode = mode.first().map(|m| (*m).to_owned());
                if let Some(m) = &mode
                    && !m.split(',').all(|o| VOLUME_MODES.contains(&o))
                {
                    return Err(format!(
                        "volume {spec:?}: unknown mode {m:?} (use {})",
                        VOLUME_MODES.join(", ")
                    ));
                }
                Ok(Volume::Bind {
                    source: source.to_owned(),
                    target: target.to_owned(),
                    mode,
                })
            }
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Volume {
    /// Docker's bind syntax (`source:target[:mode]`), or the target of an anonymous volume.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Volume::Anonymous { target } => f.write_str(target),
            Volume::Bind {
                source,
                target,
                mode,
            } => match mode {
                Some(mode) => write!(f, "{source}:{target}:{mode}"),
                None => write!(f, "{source}:{target}"),
            },
        }
    }
}

/// One entry of `devices`: `/dev/host[:/dev/container[:permissions]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(crate) struct Device {
    pub host: String,
    pub container: String,
    /// Some of `r`, `w`, `m` (default `rwm`).
    pub permissions: String,
}

impl TryFrom<String> for Device {
    type Error = String;

    fn try_from(spec: String) -> Result<Device, String> {
        let mut parts = spec.splitn(3, ':');
        let host = parts.next().unwrap_or_default().to_owned();
        let container = parts.next().map_or_else(|| host.clone(), str::to_owned);
        let permissions = parts.next().unwrap_or("rwm").to_owned();
        let permissions_ok =
            !permissions.is_empty() && permissions.chars().all(|c| "rwm".contains(c));
        if !host.starts_with('/') || !container.starts_with('/') || !permissions_ok {
            return Err(format!(
                "device {spec:?} is not `/dev/host[:/dev/container[:rwm]]`"
            ));
        }
        Ok(Device {
            host,
            container,
            permissions,
        })
    }
}

/// One entry of `extra_hosts`: `name:address`, the address an IP or Docker's `host-gateway`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(crate) struct ExtraHost {
    pub name: String,
    pub address: String,
}

impl TryFrom<String> for ExtraHost {
    type Error = String;

    fn try_from(spec: String) -> Result<ExtraHost, String> {
        let parsed = spec.split_once(':').filter(|(name, address)| {
            !name.is_empty()
                && !name.contains(char::is_whitespace)
                && (*address == "host-gateway" || address.parse::<IpAddr>().is_ok())
        });
        match parsed {
            Some((name, address)) => Ok(ExtraHost {
                name: name.to_owned(),
                address: address.to_owned(),
            }),
            None => Err(format!(
                "extra host {spec:?} is not `name:address` (an IP address or host-gateway)"
            )),
        }
    }
}

impl fmt::Display for ExtraHost {
    /// As Docker's `ExtraHosts` takes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(s: &str) -> Result<Volume, String> {
        Volume::try_from(s.to_owned())
    }

    #[test]
    fn volumes_are_typed_once() {
        assert_eq!(
            volume("/cache2"),
            Ok(Volume::Anonymous {
                target: "/cache2".into()
            })
        );
        let named = volume("shared:/shared:ro").unwrap();
        assert_eq!(named.to_string(), "shared:/shared:ro");
        assert_eq!(
            volume("/srv/data:/data").unwrap().to_string(),
            "/srv/data:/data"
        );
        assert_eq!(
            volume("/srv:/srv:ro,rshared").unwrap().to_string(),
            "/srv:/srv:ro,rshared"
        );
        for bad in [
            "relative",
            "a:b",
            "/a:/b:rw:extra",
            "/a:/b:sometimes",
            "../x:/x",
            "/x:/../etc",
            ":/x",
        ] {
            assert!(volume(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn devices_and_hosts_are_checked() {
        let d = Device::try_from("/dev/fuse".to_owned()).unwrap();
        assert_eq!(
            (d.container.as_str(), d.permissions.as_str()),
            ("/dev/fuse", "rwm")
        );
        let d = Device::try_from("/dev/null:/dev/mynull:r".to_owned()).unwrap();
        assert_eq!(d.container, "/dev/mynull");
        for bad in ["fuse", "/dev/a:b", "/dev/a:/dev/b:x"] {
            assert!(Device::try_from(bad.to_owned()).is_err(), "{bad:?}");
        }
        let h = ExtraHost::try_from("db.local:10.0.0.5".to_owned()).unwrap();
        assert_eq!(h.to_string(), "db.local:10.0.0.5");
        assert!(ExtraHost::try_from("v6:::1".to_owned()).is_ok());
        assert!(ExtraHost::try_from("gw:host-gateway".to_owned()).is_ok());
        for bad in ["nocolon", "db:not-an-ip", ":10.0.0.1"] {
            assert!(ExtraHost::try_from(bad.to_owned()).is_err(), "{bad:?}");
        }
    }
}
