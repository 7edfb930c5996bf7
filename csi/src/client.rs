//! A tonic channel to a CSI plugin's Unix socket, for tests, the benchmark and the e2e harness.

use std::path::Path;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// Opens one HTTP/2 channel to the plugin at `socket` (requests multiplex over it).
pub async fn connect(socket: &Path, timeout: Duration) -> Result<Channel, tonic::transport::Error> {
    let path = socket.to_path_buf();
    // tonic needs a URI, but the connector below always dials the socket.
    Endpoint::from_static("http://csi.invalid")
        .timeout(timeout)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
}
