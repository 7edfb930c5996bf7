//! The container runtime, as the node agent sees it: a CRI client (`runtime.v1` ImageService and
//! RuntimeService, generated from the vendored k8s.io/cri-api proto) over the runtime's Unix socket, plus
//! containerd's own container list for containers created outside CRI.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::node_agent::gc_plan::ImageInfo;

/// Code generated from `proto/cri/api.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("runtime.v1");
}

/// Code generated from `proto/containerd/containers.proto`.
#[allow(clippy::all, missing_docs)]
pub mod containerd_pb {
    tonic::include_proto!("containerd.services.containers.v1");
}

/// The containerd namespace the CRI plugin keeps Kubernetes' images and containers in.
pub const K8S_NAMESPACE: &str = "k8s.io";

/// containerd's default CRI socket.
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";

/// Why a runtime call failed.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("connecting to the runtime at {socket}: {source}")]
    Connect {
        socket: PathBuf,
        source: tonic::transport::Error,
    },
    #[error("CRI {call} on {socket}: {status}")]
    Call {
        call: &'static str,
        socket: PathBuf,
        status: Box<tonic::Status>,
    },
    #[error("the runtime at {socket} answered {call} without {what}")]
    Incomplete {
        call: &'static str,
        socket: PathBuf,
        what: &'static str,
    },
}

/// A container as CRI (or containerd) lists it: what matters for image garbage collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    pub id: String,
    /// The image reference the container was created with (a name, or an image ID).
    pub image: String,
    /// The image ID the runtime resolved it to (CRI `image_ref`), when known.
    pub image_ref: String,
}

/// One image filesystem and how much of it is used (CRI ImageFsInfo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFs {
    pub mountpoint: String,
    pub used_bytes: u64,
}

/// What the runtime says about its own configuration (CRI Status, verbose).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuntimeInfo {
    pub runtime_name: String,
    pub runtime_version: String,
    /// The sandbox (pause) image, when the runtime reports it (containerd does).
    pub sandbox_image: Option<String>,
    /// containerd's registry `config_path`: `Some("")` when containerd reports it unset.
    pub registry_config_path: Option<String>,
}

/// A CRI connection.
#[derive(Clone)]
pub struct CriClient {
    socket: PathBuf,
    channel: Channel,
}

impl CriClient {
    /// Connects to the runtime's socket (lazily: the first call dials, and a restarted runtime is
    /// re-dialled by the channel).
    pub async fn connect(socket: impl AsRef<Path>) -> Result<Self, CriError> {
        let socket = socket.as_ref().to_path_buf();
        let path = socket.clone();
        // The URI is required by tonic but unused: every connection goes to the Unix socket.
        let channel = Endpoint::from_static("http://[::1]:1")
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .map_err(|source| CriError::Connect {
                socket: socket.clone(),
                source,
            })?;
        Ok(Self { socket, channel })
    }

    /// The gRPC channel, for callers that need an RPC this client does not wrap (the tests create pod
    /// sandboxes and containers through it, as kubelet would).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn err(&self, call: &'static str) -> impl FnOnce(tonic::Status) -> CriError + '_ {
        move |status| CriError::Call {
            call,
            socket: self.socket.clone(),
            status: Box::new(status),
        }
    }

    fn images(&self) -> pb::image_service_client::ImageServiceClient<Channel> {
        pb::image_service_client::ImageServiceClient::new(self.channel.clone())
            .max_decoding_message_size(64 << 20)
    }

    fn runtime(&self) -> pb::runtime_service_client::RuntimeServiceClient<Channel> {
        pb::runtime_service_client::RuntimeServiceClient::new(self.channel.clone())
            .max_decoding_message_size(64 << 20)
    }

    /// Every image the runtime holds.
    pub async fn list_images(&self) -> Result<Vec<ImageInfo>, CriError> {
        let resp = self
            .images()
            .list_images(pb::ListImagesRequest { filter: None })
            .await
            .map_err(self.err("ListImages"))?;
        Ok(resp
            .into_inner()
            .images
            .into_iter()
            .map(|i| ImageInfo {
                id: i.id,
                repo_tags: i.repo_tags,
                repo_digests: i.repo_digests,
                size: i.size,
                pinned: i.pinned,
            })
            .collect())
    }

    /// Every container the CRI knows, in any state.
    pub async fn list_containers(&self) -> Result<Vec<ContainerRef>, CriError> {
        let resp = self
            .runtime()
            .list_containers(pb::ListContainersRequest { filter: None })
            .await
            .map_err(self.err("ListContainers"))?;
        Ok(resp
            .into_inner()
            .containers
            .into_iter()
            .map(|c| ContainerRef {
                id: c.id,
                image: c.image.map(|s| s.image).unwrap_or_default(),
                image_ref: c.image_ref,
            })
            .collect())
    }

    /// Every container in containerd's `k8s.io` namespace, including those created outside CRI (ctr,
    /// nerdctl). Fails with `Unimplemented` on a runtime that is not containerd.
    pub async fn list_containerd_containers(&self) -> Result<Vec<ContainerRef>, CriError> {
        let mut client =
            containerd_pb::containers_client::ContainersClient::new(self.channel.clone())
                .max_decoding_message_size(64 << 20);
        let mut req = tonic::Request::new(containerd_pb::ListContainersRequest { filters: vec![] });
        req.metadata_mut().insert(
            "containerd-namespace",
            tonic::metadata::MetadataValue::from_static(K8S_NAMESPACE),
        );
        let resp = client
            .list(req)
            .await
            .map_err(self.err("containerd Containers.List"))?;
        Ok(resp
            .into_inner()
            .containers
            .into_iter()
            .map(|c| ContainerRef {
                id: c.id,
                image: c.image,
                image_ref: String::new(),
            })
            .collect())
    }

    /// Removes an image (all its tags) by ID or reference. Removing an image that is already gone succeeds.
    pub async fn remove_image(&self, image: &str) -> Result<(), CriError> {
        let spec = pb::ImageSpec {
            image: image.to_owned(),
            ..Default::default()
        };
        self.images()
            .remove_image(pb::RemoveImageRequest { image: Some(spec) })
            .await
            .map_err(self.err("RemoveImage"))?;
        Ok(())
    }

    /// Pulls an image; returns the image ID the runtime stored it under.
    pub async fn pull_image(&self, image: &str) -> Result<String, CriError> {
        let spec = pb::ImageSpec {
            image: image.to_owned(),
            ..Default::default()
        };
        let resp = self
            .images()
            .pull_image(pb::PullImageRequest {
                image: Some(spec),
                auth: None,
                sandbox_config: None,
            })
            .await
            .map_err(self.err("PullImage"))?;
        Ok(resp.into_inner().image_ref)
    }

    /// The image filesystems and their usage.
    pub async fn image_fs_info(&self) -> Result<Vec<ImageFs>, CriError> {
        let resp = self
            .images()
            .image_fs_info(pb::ImageFsInfoRequest {})
            .await
            .map_err(self.err("ImageFsInfo"))?;
        Ok(resp
            .into_inner()
            .image_filesystems
            .into_iter()
            .map(|f| ImageFs {
                mountpoint: f.fs_id.map(|i| i.mountpoint).unwrap_or_default(),
                used_bytes: f.used_bytes.map(|u| u.value).unwrap_or(0),
            })
            .collect())
    }

    /// The runtime's name and version and, from the verbose status, its sandbox image and registry
    /// `config_path` (containerd reports its CRI configuration as JSON under `info["config"]`).
    pub async fn runtime_info(&self) -> Result<RuntimeInfo, CriError> {
        let version = self
            .runtime()
            .version(pb::VersionRequest {
                version: "v1".into(),
            })
            .await
            .map_err(self.err("Version"))?
            .into_inner();
        let status = self
            .runtime()
            .status(pb::StatusRequest { verbose: true })
            .await
            .map_err(self.err("Status"))?
            .into_inner();
        let mut info = RuntimeInfo {
            runtime_name: version.runtime_name,
            runtime_version: version.runtime_version,
            ..Default::default()
        };
        if let Some(config) = status
            .info
            .get("config")
            .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
        {
            info.sandbox_image = config
                .get("sandboxImage")
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            info.registry_config_path = config
                .get("registry")
                .and_then(|r| r.get("configPath"))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
                .or(Some(String::new()));
        }
        Ok(info)
    }
}

/// The capacity of the filesystem holding `path` and how much of it is used (statvfs: everything not
/// available to unprivileged writers counts as used, as kubelet's image GC counts it), in bytes.
pub fn fs_stats(path: &Path) -> std::io::Result<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let frsize = st.fragment_size() as u64;
    let capacity = st.blocks() as u64 * frsize;
    let available = st.blocks_available() as u64 * frsize;
    Ok((capacity, capacity.saturating_sub(available)))
}
