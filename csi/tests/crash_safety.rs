//! Kill the driver (SIGKILL, at injected failpoints) in the middle of CreateVolume, DeleteVolume,
//! NodeStage, NodePublish and expansion; restart it; retry; and check that it converges with no
//! orphan directories, image files, subvolumes, loop devices or mounts. Needs `--features failpoints`.

mod support;

use std::path::{Path, PathBuf};

use berth_csi::proto::volume_capability::access_mode::Mode;
use berth_csi::proto::*;
use support::*;

const MIB: i64 = 1 << 20;

struct Rig {
    scratch: Scratch,
    pool: PathBuf,
    plugin: Plugin,
}

impl Rig {
    async fn new(tag: &str, failpoint: &str) -> Rig {
        let scratch = Scratch::new(tag);
        let pool = scratch.btrfs("fs", "2G").join("pool");
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
            &[("BERTH_FAILPOINT", failpoint)],
        );
        Rig {
            scratch,
            pool,
            plugin,
        }
    }

    /// Runs a call that must kill the plugin, then restarts it without the failpoint.
    async fn crash_then_restart<F, Fut, T>(&mut self, call: F)
    where
        F: FnOnce(Clients) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let c = self.plugin.clients().await;
        let r = call(c).await;
        assert!(r.is_err(), "the call should have died with the plugin");
        assert!(
            self.plugin.wait_killed(),
            "the plugin died at the failpoint by SIGKILL"
        );
        self.plugin.restart(&[]);
    }

    fn entries(&self, sub: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.pool.join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Nothing left behind: tmp empty, only `volumes` listed, no loop device or mount beyond those listed.
    fn assert_converged(&self, volumes: &[&str], loops: usize, mounts: &[&Path]) {
        assert_eq!(
            self.entries("tmp"),
            Vec::<String>::new(),
            "debris left in tmp/"
        );
        assert_eq!(
            self.entries("volumes"),
            volumes.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        );
        assert_eq!(
            loops_under(&self.pool).len(),
            loops,
            "loop devices over pool images"
        );
        let mut got = mounts_under(&self.scratch.dir);
        got.retain(|m| m != &self.scratch.path("fs"));
        let want: Vec<PathBuf> = mounts.iter().map(|m| m.to_path_buf()).collect();
        assert_eq!(got, want, "mounts");
        // No subvolume outside volumes/ (a half-made one in tmp would be listed here).
        let subvols = run(
            "btrfs",
            &[
                "subvolume",
                "list",
                "-o",
                self.scratch.path("fs").to_str().unwrap(),
            ],
        );
        for line in subvols.lines() {
            assert!(line.contains("pool/volumes/"), "orphan subvolume: {line}");
        }
    }
}

fn loop_params() -> std::collections::HashMap<String, String> {
    params(&[("backend", "loop")])
}

#[tokio::test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs `cargo test --features failpoints`"
)]
async fn crash_inside_create_volume_before_commit() {
    for backend in ["dir", "loop"] {
        let mut rig = Rig::new(
            &format!("crash-create-{backend}"),
            "create-volume-before-commit",
        )
        .await;
        let p = if backend == "loop" {
            loop_params()
        } else {
            params(&[])
        };
        let req = create_req("v", 32 * MIB, p, mount_cap(Mode::SingleNodeWriter));
        let r2 = req.clone();
        rig.crash_then_restart(|mut c| async move { c.ctl.create_volume(r2).await })
            .await;
        rig.assert_converged(&[], 0, &[]);
        let mut c = rig.plugin.clients().await;
        c.ctl.create_volume(req).await.unwrap();
        rig.assert_converged(&["v"], 0, &[]);
    }
}

#[tokio::test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs `cargo test --features failpoints`"
)]
async fn crash_inside_create_volume_after_commit_returns_the_same_volume() {
    let mut rig = Rig::new("crash-create-after", "create-volume-after-commit").await;
    let req = create_req(
        "v",
        32 * MIB,
        loop_params(),
        mount_cap(Mode::SingleNodeWriter),
    );
    let r2 = req.clone();
    rig.crash_then_restart(|mut c| async move { c.ctl.create_volume(r2).await })
        .await;
    let mut c = rig.plugin.clients().await;
    let v = c
        .ctl
        .create_volume(req)
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!((v.volume_id.as_str(), v.capacity_bytes), ("v", 32 * MIB));
    rig.assert_converged(&["v"], 0, &[]);
}

#[tokio::test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs `cargo test --features failpoints`"
)]
async fn crash_inside_delete_volume() {
    for backend in ["dir", "loop"] {
        let mut rig = Rig::new(
            &format!("crash-delete-{backend}"),
            "delete-volume-after-unlink",
        )
        .await;
        let p = if backend == "loop" {
            loop_params()
        } else {
            params(&[])
        };
        let mut c = rig.plugin.clients().await;
        c.ctl
            .create_volume(create_req(
                "v",
                32 * MIB,
                p,
                mount_cap(Mode::SingleNodeWriter),
            ))
            .await
            .unwrap();
        rig.crash_then_restart(|mut c| async move {
            c.ctl
                .delete_volume(DeleteVolumeRequest {
                    volume_id: "v".into(),
                    secrets: Default::default(),
                })
                .await
        })
        .await;
        let mut c = rig.plugin.clients().await;
        c.ctl
            .delete_volume(DeleteVolumeRequest {
                volume_id: "v".into(),
                secrets: Default::default(),
            })
            .await
            .unwrap();
        rig.assert_converged(&[], 0, &[]);
    }
}

#[tokio::test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs `cargo test --features failpoints`"
)]
async fn crash_inside_node_stage_reuses_the_loop_device() {
    let mut rig = Rig::new("crash-stage", "node-stage-after-attach").await;
    let cap = mount_cap(Mode::SingleNodeWriter);
    let mut c = rig.plugin.clients().await;
    c.ctl
        .create_volume(create_req("v", 32 * MIB, loop_params(), cap.clone()))
        .await
        .unwrap();
    let staging = rig.scratch.path("staging");
    let req = stage_req("v", &staging, cap.clone());
    let r2 = req.clone();
    rig.crash_then_restart(|mut c| async move { c.node.node_stage_volume(r2).await })
        .await;
    assert_eq!(
        loops_under(&rig.pool).len(),
        1,
        "the crash left the device attached"
    );
    let mut c = rig.plugin.clients().await;
    c.node.node_stage_volume(req.clone()).await.unwrap();
    c.node.node_stage_volume(req).await.unwrap();
    rig.assert_converged(&["v"], 1, &[&staging]);
    c.node
        .node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: "v".into(),
            staging_target_path: staging.to_string_lossy().into(),
        })
        .await
        .unwrap();
    rig.assert_converged(&["v"], 0, &[]);
}

#[tokio::test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs `cargo test --features failpoints`"
)]
async fn crash_inside_node_publish_is_completed_by_the_retry() {
    let mut rig = Rig::new("crash-publish", "node-publish-after-mount").await;
    let cap = mount_cap(Mode::SingleNodeWriter);
    let mut c = rig.plugin.clients().await;
    c.ctl
        .create_volume(create_req("v", 32 * MIB, params(&[]), cap.clone()))
        .await
        .unwrap();
    let (staging, target) = (rig.scratch.path("staging"), rig.scratch.path("target"));
    c.node
        .node_stage_volume(stage_req("v", &staging, cap.clone()))
        .await
        .unwrap();
    let req = publish_req("v", &staging, &target, cap, false);
    let r2 = req.clone();
    rig.crash_then_restart(|mut c| async move { c.node.node_publish_volume(r2).await })
        .await;
    let mut c = rig.plugin.clients().await;
    c.node.node_publish_volume(req).await.unwrap();
    rig.assert_converged(&["v"], 0, &[&staging, &target]);
    c.node
        .node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: "v".into(),
            target_path: target.to_string_lossy().into(),
        })
        .await
        .unwrap();
    c.node
        .node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: "v".into(),
            staging_target_path: staging.to_string_lossy().into(),
        })
        .await
        .unwrap();
    rig.assert_converged(&["v"], 0, &[]);
}

#[tokio::test]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs `cargo test --features failpoints`"
)]
async fn crash_inside_expansion_converges_on_retry() {
    let mut rig = Rig::new("crash-expand", "expand-volume-after-grow").await;
    let mut c = rig.plugin.clients().await;
    c.ctl
        .create_volume(create_req(
            "v",
            32 * MIB,
            loop_params(),
            mount_cap(Mode::SingleNodeWriter),
        ))
        .await
        .unwrap();
    let req = ControllerExpandVolumeRequest {
        volume_id: "v".into(),
        capacity_range: Some(CapacityRange {
            required_bytes: 64 * MIB,
            limit_bytes: 0,
        }),
        ..Default::default()
    };
    let r2 = req.clone();
    rig.crash_then_restart(|mut c| async move { c.ctl.controller_expand_volume(r2).await })
        .await;
    let mut c = rig.plugin.clients().await;
    let r = c
        .ctl
        .controller_expand_volume(req)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.capacity_bytes, 64 * MIB);
    let v = c
        .ctl
        .controller_get_volume(ControllerGetVolumeRequest {
            volume_id: "v".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.volume.unwrap().capacity_bytes, 64 * MIB);
    assert_eq!(
        std::fs::metadata(rig.pool.join("volumes/v/disk.img"))
            .unwrap()
            .len(),
        64 << 20
    );
    // The filesystem follows when staged.
    let (staging, target) = (rig.scratch.path("staging"), rig.scratch.path("target"));
    let cap = mount_cap(Mode::SingleNodeWriter);
    c.node
        .node_stage_volume(stage_req("v", &staging, cap.clone()))
        .await
        .unwrap();
    c.node
        .node_publish_volume(publish_req("v", &staging, &target, cap, false))
        .await
        .unwrap();
    let s = c
        .node
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: "v".into(),
            volume_path: target.to_string_lossy().into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        s.usage[0].total > 48 * MIB,
        "filesystem is {} bytes",
        s.usage[0].total
    );
    rig.assert_converged(&["v"], 1, &[&staging, &target]);
}
