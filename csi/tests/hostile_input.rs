//! Requests crafted to escape the pool — `..`, separators, NUL, absurd lengths, planted symlinks —
//! are refused with INVALID_ARGUMENT or NOT_FOUND and touch nothing outside the pool.

mod support;

use std::path::Path;

use berth_csi::proto::volume_capability::access_mode::Mode;
use berth_csi::proto::*;
use support::*;
use tonic::Code;

/// A directory outside the pool with a file in it: must survive every request.
fn victim(scratch: &Scratch) -> std::path::PathBuf {
    let v = scratch.path("victim");
    std::fs::create_dir_all(v.join("volumes")).unwrap();
    std::fs::write(v.join("precious"), b"keep me").unwrap();
    v
}

fn intact(v: &Path) {
    assert_eq!(std::fs::read(v.join("precious")).unwrap(), b"keep me");
}

#[tokio::test]
async fn escaping_ids_and_paths_are_refused() {
    let scratch = Scratch::new("hostile");
    let v = victim(&scratch);
    let pool = scratch.path("pool");
    let plugin = Plugin::start(
        &scratch.path("csi.sock"),
        &[
            "--driver",
            "local",
            "--node-id",
            "n",
            "--pool",
            pool.to_str().unwrap(),
        ],
        &[],
    );
    let mut c = plugin.clients().await;
    let long = "a".repeat(4000);
    let bad_ids = [
        "../victim",
        "../../victim",
        "..",
        "a/b",
        "/etc",
        "a\u{0}b",
        long.as_str(),
        ".berth",
    ];
    for id in bad_ids {
        let e = c
            .ctl
            .delete_volume(DeleteVolumeRequest {
                volume_id: id.into(),
                secrets: Default::default(),
            })
            .await
            .unwrap_err();
        assert!(
            matches!(e.code(), Code::NotFound | Code::InvalidArgument),
            "{id:?}: {e:?}"
        );
        let e = c
            .node
            .node_publish_volume(publish_req(
                id,
                &scratch.path("s"),
                &scratch.path("t"),
                mount_cap(Mode::SingleNodeWriter),
                false,
            ))
            .await
            .unwrap_err();
        assert!(
            matches!(e.code(), Code::NotFound | Code::InvalidArgument),
            "{id:?}: {e:?}"
        );
        let e = c
            .ctl
            .delete_snapshot(DeleteSnapshotRequest {
                snapshot_id: id.into(),
                secrets: Default::default(),
            })
            .await
            .unwrap_err();
        assert!(
            matches!(e.code(), Code::NotFound | Code::InvalidArgument),
            "{id:?}: {e:?}"
        );
        let mut from = create_req(
            "restore",
            1 << 20,
            params(&[]),
            mount_cap(Mode::SingleNodeWriter),
        );
        from.volume_content_source = Some(VolumeContentSource {
            r#type: Some(volume_content_source::Type::Snapshot(
                volume_content_source::SnapshotSource {
                    snapshot_id: id.into(),
                },
            )),
        });
        let e = c.ctl.create_volume(from).await.unwrap_err();
        assert!(
            matches!(e.code(), Code::NotFound | Code::InvalidArgument),
            "{id:?}: {e:?}"
        );
    }
    // Staging and target paths with '..' are refused before anything is mounted.
    c.ctl
        .create_volume(create_req(
            "ok",
            1 << 20,
            params(&[]),
            mount_cap(Mode::SingleNodeWriter),
        ))
        .await
        .unwrap();
    let sneaky = format!("{}/../victim", scratch.path("stage").display());
    let e = c
        .node
        .node_stage_volume(NodeStageVolumeRequest {
            volume_id: "ok".into(),
            staging_target_path: sneaky,
            volume_capability: Some(mount_cap(Mode::SingleNodeWriter)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("staging_target_path"),
        "{}",
        e.message()
    );
    // A name that looks like a path becomes a hashed ID inside the pool.
    let v2 = c
        .ctl
        .create_volume(create_req(
            "../../victim",
            1 << 20,
            params(&[]),
            mount_cap(Mode::SingleNodeWriter),
        ))
        .await
        .unwrap();
    let id = v2.into_inner().volume.unwrap().volume_id;
    assert!(
        id.starts_with("h-") && pool.join("volumes").join(&id).is_dir(),
        "{id}"
    );
    intact(&v);
    assert!(mounts_under(&scratch.dir).is_empty());
}

#[tokio::test]
async fn a_symlink_planted_in_the_pool_is_not_followed() {
    let scratch = Scratch::new("symlink");
    let v = victim(&scratch);
    let pool = scratch.path("pool");
    let plugin = Plugin::start(
        &scratch.path("csi.sock"),
        &[
            "--driver",
            "local",
            "--node-id",
            "n",
            "--pool",
            pool.to_str().unwrap(),
        ],
        &[],
    );
    let mut c = plugin.clients().await;
    // Someone with access to the node plants volumes/evil -> victim, with a convincing record.
    c.ctl
        .create_volume(create_req(
            "real",
            1 << 20,
            params(&[]),
            mount_cap(Mode::SingleNodeWriter),
        ))
        .await
        .unwrap();
    let record = std::fs::read_to_string(pool.join("volumes/real/volume.json"))
        .unwrap()
        .replace("\"real\"", "\"evil\"");
    std::fs::write(v.join("volume.json"), record).unwrap();
    std::fs::create_dir_all(v.join("data")).unwrap();
    std::os::unix::fs::symlink(&v, pool.join("volumes/evil")).unwrap();
    c.ctl
        .delete_volume(DeleteVolumeRequest {
            volume_id: "evil".into(),
            secrets: Default::default(),
        })
        .await
        .unwrap();
    let e = c
        .node
        .node_stage_volume(stage_req(
            "evil",
            &scratch.path("stage"),
            mount_cap(Mode::SingleNodeWriter),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    intact(&v);
    assert!(v.join("data").is_dir());
    let listed = c
        .ctl
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = listed
        .entries
        .iter()
        .map(|e| e.volume.as_ref().unwrap().volume_id.clone())
        .collect();
    assert_eq!(ids, vec!["real".to_string()]);
}
