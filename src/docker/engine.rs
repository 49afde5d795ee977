//! What the engine is, asked once: Docker or Podman, its version and API version, the kernel
//! it runs, whether it runs rootless, and where it is. Prepare and doctor read this one
//! description (from one `GET /version`, and the socket's owner or `GET /info` for rootless,
//! asked together) for what follows from it: how stages reach containers, whether job output
//! can skip the engine, where services are probed from.

use bollard::Docker;

use super::shell::Access;

/// Which engine answers on the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Docker,
    Podman,
    /// It did not say (its `/version` failed or was unreadable).
    Unknown,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Docker => "Docker",
            Kind::Podman => "Podman",
            Kind::Unknown => "an unknown engine",
        })
    }
}

/// The engine, as the driver needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Engine {
    /// `unix://...` or `tcp://...`, as configured.
    pub host: String,
    pub kind: Kind,
    /// The engine's own version (`20.10.24`, `4.3.1`).
    pub version: Option<String>,
    /// The newest Engine API version it speaks (`1.41`).
    pub api: Option<String>,
    /// The kernel it runs on, as it reports it.
    pub kernel: Option<String>,
    /// Whether it runs rootless: its container addresses are then inside its own network
    /// namespace.
    pub rootless: bool,
}

impl Engine {
    /// Asks the engine at `host` what it is. Fails only when `/version` does.
    pub(crate) async fn ask(docker: &Docker, host: &str) -> Result<Engine, bollard::errors::Error> {
        let (version, rootless) = tokio::join!(docker.version(), rootless(docker, host));
        let version = version?;
        let podman = version
            .components
            .iter()
            .flatten()
            .any(|c| c.name.to_ascii_lowercase().contains("podman"));
        Ok(Engine {
            host: host.to_owned(),
            kind: if podman { Kind::Podman } else { Kind::Docker },
            version: version.version,
            api: version.api_version,
            kernel: version.kernel_version,
            rootless,
        })
    }

    /// An engine that did not say what it is: stages use execs, which every engine has, and
    /// nothing assumes it shares this host.
    pub(crate) fn unknown(host: &str) -> Engine {
        Engine {
            host: host.to_owned(),
            kind: Kind::Unknown,
            version: None,
            api: None,
            kernel: None,
            rootless: false,
        }
    }

    /// How stages reach the build and helper containers: Podman's Docker API closes a
    /// container's stdin when an attach ends, so Podman (or an engine that does not say) gets
    /// one exec per stage.
    pub(crate) fn access(&self) -> Access {
        match self.kind {
            Kind::Docker => Access::Attach,
            Kind::Podman | Kind::Unknown => Access::Exec,
        }
    }

    /// Whether the engine runs on this host: a `unix://` socket and this kernel (an engine in
    /// a VM, as Docker Desktop's or a Podman machine's, reports its own). What job output
    /// skipping the engine needs first ([`super::direct`]).
    pub(crate) fn on_this_host(&self) -> bool {
        self.host.starts_with("unix://")
            && self
                .kernel
                .as_deref()
                .is_some_and(|k| Some(k) == local_kernel().as_deref())
    }

    /// Whether it speaks the Engine API the driver requests ([`super::client::API_VERSION`]);
    /// Podman accepts it whatever version it reports.
    pub(crate) fn api_supported(&self) -> bool {
        let minimum = (
            super::client::API_VERSION.major_version,
            super::client::API_VERSION.minor_version,
        );
        self.kind == Kind::Podman
            || self
                .api
                .as_deref()
                .and_then(|api| api.split_once('.'))
                .and_then(|(major, minor)| Some((major.parse().ok()?, minor.parse().ok()?)))
                .is_some_and(|v: (usize, usize)| v >= minimum)
    }
}

/// This host's kernel release, as an engine on it reports it.
pub(crate) fn local_kernel() -> Option<String> {
    Some(
        rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned(),
    )
}

/// Whether the engine at `host` runs rootless. A rootless engine's socket belongs to its user
/// (a rootful one's to root), and Docker says so in `SecurityOptions` too (rootless Podman
/// does not).
async fn rootless(docker: &Docker, host: &str) -> bool {
    let socket_owner = host
        .strip_prefix("unix://")
        .and_then(|path| std::fs::metadata(path).ok())
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    if socket_owner.is_some_and(|uid| uid != 0) {
        return true;
    }
    docker.info().await.ok().is_some_and(|info| {
        info.security_options
            .unwrap_or_default()
            .iter()
            .any(|o| o.contains("rootless"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(host: &str, kind: Kind, api: &str, kernel: Option<String>) -> Engine {
        Engine {
            host: host.into(),
            kind,
            version: None,
            api: Some(api.into()),
            kernel,
            rootless: false,
        }
    }

    #[test]
    fn only_a_local_socket_with_this_kernel_is_on_this_host() {
        let kernel = local_kernel();
        let local = "unix:///var/run/docker.sock";
        assert!(engine(local, Kind::Docker, "1.41", kernel.clone()).on_this_host());
        assert!(!engine("tcp://127.0.0.1:2375", Kind::Docker, "1.41", kernel).on_this_host());
        let vm = Some("6.10.14-linuxkit".to_owned());
        assert!(!engine(local, Kind::Docker, "1.41", vm).on_this_host());
        assert!(!Engine::unknown(local).on_this_host());
    }

    #[test]
    fn podman_and_unknown_engines_get_execs_and_old_apis_are_refused() {
        let host = "unix:///run/podman/podman.sock";
        assert_eq!(
            engine(host, Kind::Docker, "1.41", None).access(),
            Access::Attach
        );
        assert_eq!(
            engine(host, Kind::Podman, "1.41", None).access(),
            Access::Exec
        );
        assert_eq!(Engine::unknown(host).access(), Access::Exec);
        assert!(engine(host, Kind::Docker, "1.43", None).api_supported());
        assert!(!engine(host, Kind::Docker, "1.40", None).api_supported());
        assert!(engine(host, Kind::Podman, "1.40", None).api_supported());
        assert!(!Engine::unknown(host).api_supported());
    }
}
