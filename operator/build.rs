//! Generates the CRI client (`runtime.v1` RuntimeService and ImageService) from the vendored
//! `proto/cri/api.proto` (k8s.io/cri-api v0.36.3), and the one containerd Containers call the agent
//! makes (`proto/containerd/containers.proto`). protoc comes from `protoc-bin-vendored`, so a fresh
//! machine needs no system package.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let include = protoc_bin_vendored::include_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the environment.
    unsafe {
        std::env::set_var("PROTOC", protoc);
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_protos(
            &[
                std::path::PathBuf::from("proto/cri/api.proto"),
                std::path::PathBuf::from("proto/containerd/containers.proto"),
            ],
            &[
                std::path::PathBuf::from("proto/cri"),
                std::path::PathBuf::from("proto/containerd"),
                include,
            ],
        )?;
    println!("cargo:rerun-if-changed=proto/cri/api.proto");
    println!("cargo:rerun-if-changed=proto/containerd/containers.proto");
    Ok(())
}
