//! The Docker side: the client, container state, images, the job's resources, and the two
//! ways a stage script runs in a container. Nothing here knows about stages or GitLab; the
//! stages compose these operations.
//!
//! - [`client`]: the bollard client and the engine's error classes;
//! - [`engine`]: what the engine is (Docker or Podman, API, kernel, rootless), asked once;
//! - [`container`]: create (replacing a same-named one), start, a one-off exec's output;
//! - [`landing`]: creates that finish even when a cancel drops their caller;
//! - [`guard`]: the host's credential endpoints made unreachable in a job's namespaces;
//! - [`state`]: a container's state, and what the stages conclude from it;
//! - [`pull`]: images under pull policies, with credentials from [`crate::auth`];
//! - [`resources`]: removing a job's containers, network and volumes;
//! - [`shell`]: a stage script through the container's stage shell, over an attach, and
//!   [`exec`], one exec per stage, for engines that close stdin (Podman); both share
//!   [`script`], and find a stage's output between [`markers`];
//! - [`direct`] and [`fifo`]: job output that skips the engine, through FIFOs in the job's
//!   directory ([`crate::jobdir`]).

pub(crate) mod client;
pub(crate) mod container;
pub(crate) mod direct;
pub(crate) mod engine;
pub(crate) mod exec;
pub(crate) mod fifo;
pub(crate) mod guard;
pub(crate) mod landing;
pub(crate) mod markers;
pub(crate) mod pull;
pub(crate) mod resources;
pub(crate) mod script;
pub(crate) mod shell;
pub(crate) mod state;
