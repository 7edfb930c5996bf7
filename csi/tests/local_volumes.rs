//! Local volumes on real filesystems through the real binary: capacity enforced by btrfs qgroups
//! and loop images, honest usage where nothing enforces it, read-only mounts, raw block, snapshots
//! and clones, online expansion, capacity reporting. Needs root (mounts, loop devices).

mod support;

use berth_csi::proto::volume_capability::access_mode::Mode;
use berth_csi::proto::*;
use support::*;
use tonic::Code;

const MIB: i64 = 1 << 20;

struct Local {
    scratch: Scratch,
    /// Kept alive for the test; killed on drop.
    _plugin: Plugin,
    c: Clients,
}

async fn local_on(fs: &str, tag: &str) -> Local {
    let scratch = Scratch::new(tag);
    let root = match fs {
        "btrfs" => scratch.btrfs("fs", "4G"),
        "ext4" => scratch.ext4("fs", "1G"),
        _ => unreachable!(),
    };
    let pool = root.join("pool");
    let plugin = Plugin::start(
        &scratch.path("csi.sock"),
        &[
            "--driver",
            "local",
            "--node-id",
            "node-a",
            "--pool",
            pool.to_str().unwrap(),
        ],
        &[],
    );
    let c = plugin.clients().await;
    Local {
        scratch,
        _plugin: plugin,
        c,
    }
}

impl Local {
    /// Creates, stages and publishes a volume; returns its ID and the target path.
    async fn mounted(
        &mut self,
        name: &str,
        bytes: i64,
        p: &[(&str, &str)],
        cap: VolumeCapability,
    ) -> (String, std::path::PathBuf) {
        let vol = self
            .c
            .ctl
            .create_volume(create_req(name, bytes, params(p), cap.clone()))
            .await
            .unwrap()
            .into_inner();
        let id = vol.volume.unwrap().volume_id;
        let staging = self.scratch.path(&format!("staging-{name}"));
        let target = self.scratch.path(&format!("target-{name}"));
        self.c
            .node
            .node_stage_volume(stage_req(&id, &staging, cap.clone()))
            .await
            .unwrap();
        self.c
            .node
            .node_publish_volume(publish_req(&id, &staging, &target, cap, false))
            .await
            .unwrap();
        (id, target)
    }

    async fn unmount(&mut self, id: &str, name: &str) {
        let staging = self.scratch.path(&format!("staging-{name}"));
        let target = self.scratch.path(&format!("target-{name}"));
        self.c
            .node
            .node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: id.into(),
                target_path: target.to_string_lossy().into(),
            })
            .await
            .unwrap();
        self.c
            .node
            .node_unstage_volume(NodeUnstageVolumeRequest {
                volume_id: id.into(),
                staging_target_path: staging.to_string_lossy().into(),
            })
            .await
            .unwrap();
    }

    async fn stats(&mut self, id: &str, path: &std::path::Path) -> NodeGetVolumeStatsResponse {
        self.c
            .node
            .node_get_volume_stats(NodeGetVolumeStatsRequest {
                volume_id: id.into(),
                volume_path: path.to_string_lossy().into(),
                staging_target_path: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
    }
}

#[tokio::test]
async fn btrfs_qgroup_stops_writes_at_capacity() {
    let mut t = local_on("btrfs", "qgroup").await;
    let (id, target) = t
        .mounted("q", 20 * MIB, &[], mount_cap(Mode::SingleNodeWriter))
        .await;
    write_bytes(&target.join("fits"), 8 << 20).expect("8 MiB fits in 20 MiB");
    let err = write_bytes(&target.join("too-much"), 40 << 20).expect_err("40 MiB must not fit");
    assert_eq!(err.raw_os_error(), Some(libc::EDQUOT), "{err}");
    // Usage is reported against the limit.
    run("btrfs", &["filesystem", "sync", target.to_str().unwrap()]);
    let s = t.stats(&id, &target).await;
    let bytes = &s.usage[0];
    assert_eq!(bytes.total, 20 * MIB);
    assert!(bytes.used >= 8 * MIB, "used {}", bytes.used);
    assert!(!s.volume_condition.unwrap().abnormal);
    t.unmount(&id, "q").await;
    t.c.ctl
        .delete_volume(DeleteVolumeRequest {
            volume_id: id,
            secrets: Default::default(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn loop_volume_is_hard_capped_and_read_only_publish_refuses_writes() {
    let mut t = local_on("btrfs", "loop").await;
    let cap = mount_cap(Mode::SingleNodeWriter);
    let (id, target) = t
        .mounted("l", 64 * MIB, &[("backend", "loop")], cap.clone())
        .await;
    let err =
        write_bytes(&target.join("big"), 100 << 20).expect_err("100 MiB must not fit in 64 MiB");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    std::fs::write(target.join("hello"), b"hi").unwrap();
    // A second, read-only publication of the same staged volume.
    let ro = t.scratch.path("ro-target");
    let staging = t.scratch.path("staging-l");
    t.c.node
        .node_publish_volume(publish_req(&id, &staging, &ro, cap, true))
        .await
        .unwrap();
    assert_eq!(std::fs::read(ro.join("hello")).unwrap(), b"hi");
    let err = std::fs::write(ro.join("nope"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    t.c.node
        .node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: id.clone(),
            target_path: ro.to_string_lossy().into(),
        })
        .await
        .unwrap();
    assert!(!ro.exists(), "unpublish removes the target");
    t.unmount(&id, "l").await;
    assert!(
        loops_under(&t.scratch.dir.join("fs")).is_empty(),
        "unstage detaches the loop device"
    );
    t.c.ctl
        .delete_volume(DeleteVolumeRequest {
            volume_id: id,
            secrets: Default::default(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn unenforced_pool_reports_usage_above_capacity() {
    let mut t = local_on("ext4", "plain").await;
    let (id, target) = t
        .mounted("p", 4 * MIB, &[], mount_cap(Mode::SingleNodeWriter))
        .await;
    // Nothing stops this on ext4 without project quotas: the driver must say so, not hide it.
    write_bytes(&target.join("over"), 6 << 20).unwrap();
    let s = t.stats(&id, &target).await;
    assert!(s.usage[0].used > 4 * MIB);
    let cond = s.volume_condition.unwrap();
    assert!(cond.abnormal, "usage above capacity is abnormal");
    assert!(
        cond.message.contains("exceeds the capacity"),
        "{}",
        cond.message
    );
    let got =
        t.c.ctl
            .controller_get_volume(ControllerGetVolumeRequest {
                volume_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
    let msg = got.status.unwrap().volume_condition.unwrap().message;
    assert!(msg.contains("not enforced"), "{msg}");
    t.unmount(&id, "p").await;
}

#[tokio::test]
async fn condition_is_abnormal_when_the_data_is_gone() {
    let mut t = local_on("ext4", "gone").await;
    let (id, target) = t
        .mounted("g", 4 * MIB, &[], mount_cap(Mode::SingleNodeWriter))
        .await;
    t.unmount(&id, "g").await;
    let data = t.scratch.path("fs/pool/volumes/g/data");
    assert!(data.is_dir());
    std::fs::remove_dir_all(&data).unwrap();
    let got =
        t.c.ctl
            .controller_get_volume(ControllerGetVolumeRequest {
                volume_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
    assert!(got.status.unwrap().volume_condition.unwrap().abnormal);
    std::fs::create_dir_all(&target).unwrap();
    let s = t.stats(&id, &target).await;
    assert!(s.volume_condition.unwrap().abnormal);
}

#[tokio::test]
async fn raw_block_volume_is_a_device_of_the_requested_size() {
    let mut t = local_on("btrfs", "block").await;
    let (id, target) = t
        .mounted("b", 32 * MIB, &[("backend", "loop")], block_cap())
        .await;
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::metadata(&target)
            .unwrap()
            .file_type()
            .is_block_device()
    );
    let out = run("blockdev", &["--getsize64", target.to_str().unwrap()]);
    assert_eq!(out.trim(), (32 * MIB).to_string());
    // Expansion reaches the device after NodeExpandVolume.
    t.c.ctl
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: id.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: 48 * MIB,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    t.c.node
        .node_expand_volume(NodeExpandVolumeRequest {
            volume_id: id.clone(),
            volume_path: target.to_string_lossy().into(),
            volume_capability: Some(block_cap()),
            ..Default::default()
        })
        .await
        .unwrap();
    let out = run("blockdev", &["--getsize64", target.to_str().unwrap()]);
    assert_eq!(out.trim(), (48 * MIB).to_string());
    t.unmount(&id, "b").await;
}

/// Grows a mounted XFS loop volume from 300 to 600 MiB. `controller_first`: ControllerExpandVolume
/// then NodeExpandVolume (csi-resizer against a plugin that expands); otherwise NodeExpandVolume
/// alone with the new size, which is what kubelet sends after csi-resizer's node-only resize (the
/// `--mode resizer` front).
async fn xfs_loop_volume_grows_online(tag: &str, controller_first: bool) {
    let mut t = local_on("btrfs", tag).await;
    let (id, target) = t
        .mounted(
            "x",
            300 * MIB,
            &[("backend", "loop"), ("fsType", "xfs")],
            mount_cap(Mode::SingleNodeWriter),
        )
        .await;
    let before = t.stats(&id, &target).await.usage[0].total;
    let grown = Some(CapacityRange {
        required_bytes: 600 * MIB,
        limit_bytes: 0,
    });
    if controller_first {
        let r =
            t.c.ctl
                .controller_expand_volume(ControllerExpandVolumeRequest {
                    volume_id: id.clone(),
                    capacity_range: grown,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
        assert!(r.node_expansion_required);
    }
    let r =
        t.c.node
            .node_expand_volume(NodeExpandVolumeRequest {
                volume_id: id.clone(),
                volume_path: target.to_string_lossy().into(),
                staging_target_path: t.scratch.path("staging-x").to_string_lossy().into(),
                capacity_range: grown,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
    assert_eq!(r.capacity_bytes, 600 * MIB);
    let after = t.stats(&id, &target).await.usage[0].total;
    assert!(
        after > before + 250 * MIB,
        "filesystem grew from {before} to {after}"
    );
    t.unmount(&id, "x").await;
}

#[tokio::test]
async fn xfs_loop_volume_grows_online_controller_then_node() {
    xfs_loop_volume_grows_online("xfsgrow", true).await;
}

#[tokio::test]
async fn xfs_loop_volume_grows_online_on_node_expand_alone() {
    xfs_loop_volume_grows_online("xfsnode", false).await;
}

/// What kubelet does after csi-resizer's node-only resize: NodeExpandVolume with the new size is
/// the only call, and it raises the btrfs qgroup limit; a size the pool cannot hold is OUT_OF_RANGE
/// and changes nothing.
#[tokio::test]
async fn dir_volume_limit_rises_on_node_expand_alone() {
    let mut t = local_on("btrfs", "dirnode").await;
    let (id, target) = t
        .mounted("d", 20 * MIB, &[], mount_cap(Mode::SingleNodeWriter))
        .await;
    write_bytes(&target.join("first"), 12 << 20).expect("12 MiB fits in 20 MiB");
    let expand = |required_bytes: i64| NodeExpandVolumeRequest {
        volume_id: id.clone(),
        volume_path: target.to_string_lossy().into(),
        capacity_range: Some(CapacityRange {
            required_bytes,
            limit_bytes: 0,
        }),
        ..Default::default()
    };
    let r = t.c.node.node_expand_volume(expand(60 * MIB)).await.unwrap();
    assert_eq!(r.into_inner().capacity_bytes, 60 * MIB);
    write_bytes(&target.join("second"), 30 << 20).expect("42 MiB fits in the raised 60 MiB");
    let err = write_bytes(&target.join("third"), 40 << 20).expect_err("82 MiB must not fit");
    assert_eq!(err.raw_os_error(), Some(libc::EDQUOT), "{err}");
    let err =
        t.c.node
            .node_expand_volume(expand(1 << 40))
            .await
            .expect_err("a TiB does not fit a 4 GiB pool");
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert_eq!(t.stats(&id, &target).await.usage[0].total, 60 * MIB);
    t.unmount(&id, "d").await;
}

/// `--mode resizer`: what a central csi-resizer sees (a controller service that cannot expand and
/// a node service that can, so it picks its node-only path), and no volume RPCs. It refuses a pool
/// and the shared driver.
#[tokio::test]
async fn resizer_front_answers_node_only_expansion_and_serves_no_volumes() {
    use berth_csi::proto::plugin_capability::{Type as PluginType, service, volume_expansion};
    let scratch = Scratch::new("resizer");
    let plugin = Plugin::start(
        &scratch.path("csi.sock"),
        &[
            "--driver",
            "local",
            "--mode",
            "resizer",
            "--node-id",
            "controller",
        ],
        &[],
    );
    let mut c = plugin.clients().await;
    let caps =
        c.id.get_plugin_capabilities(GetPluginCapabilitiesRequest {})
            .await
            .unwrap()
            .into_inner()
            .capabilities;
    let kinds: Vec<_> = caps.into_iter().filter_map(|c| c.r#type).collect();
    assert!(
        kinds.contains(&PluginType::Service(plugin_capability::Service {
            r#type: service::Type::ControllerService as i32
        }))
    );
    assert!(kinds.contains(&PluginType::VolumeExpansion(
        plugin_capability::VolumeExpansion {
            r#type: volume_expansion::Type::Online as i32
        }
    )));
    let ctl = c
        .ctl
        .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(ctl.capabilities.is_empty(), "{ctl:?}");
    let node = c
        .node
        .node_get_capabilities(NodeGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    let expand = NodeServiceCapability {
        r#type: Some(node_service_capability::Type::Rpc(
            node_service_capability::Rpc {
                r#type: node_service_capability::rpc::Type::ExpandVolume as i32,
            },
        )),
    };
    assert_eq!(node.capabilities, [expand]);
    let err = c
        .ctl
        .create_volume(create_req(
            "v",
            MIB,
            params(&[]),
            mount_cap(Mode::SingleNodeWriter),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    let err = c
        .node
        .node_expand_volume(NodeExpandVolumeRequest {
            volume_id: "v".into(),
            volume_path: "/tmp".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    drop(plugin);

    for (args, says) in [
        (&["--driver", "local", "--pool", "/tmp"][..], "--pool"),
        (
            &["--driver", "shared", "--shared-pool", "a=/tmp"][..],
            "--driver local",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth-csi"))
            .args(args)
            .args(["--mode", "resizer", "--node-id", "c"])
            .arg(format!(
                "--endpoint=unix://{}",
                scratch.path("bad.sock").display()
            ))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(says),
            "{args:?}: {stderr}"
        );
    }
}

#[tokio::test]
async fn ext4_loop_volume_grows_when_next_staged() {
    let mut t = local_on("btrfs", "ext4grow").await;
    let cap = mount_cap(Mode::SingleNodeWriter);
    let (id, target) = t
        .mounted("e", 64 * MIB, &[("backend", "loop")], cap.clone())
        .await;
    std::fs::write(target.join("keep"), b"data").unwrap();
    t.unmount(&id, "e").await;
    t.c.ctl
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: id.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: 128 * MIB,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let staging = t.scratch.path("staging-e");
    t.c.node
        .node_stage_volume(stage_req(&id, &staging, cap.clone()))
        .await
        .unwrap();
    t.c.node
        .node_publish_volume(publish_req(&id, &staging, &target, cap, false))
        .await
        .unwrap();
    let total = t.stats(&id, &target).await.usage[0].total;
    assert!(total > 100 * MIB, "ext4 was grown to {total}");
    assert_eq!(std::fs::read(target.join("keep")).unwrap(), b"data");
    t.unmount(&id, "e").await;
}

async fn snapshot_round_trip(backend: &str, tag: &str) {
    let mut t = local_on("btrfs", tag).await;
    let p: Vec<(&str, &str)> = match backend {
        "loop" => vec![("backend", "loop")],
        "loop-xfs" => vec![("backend", "loop"), ("fsType", "xfs")],
        _ => vec![],
    };
    let size = if backend == "loop-xfs" {
        300 * MIB
    } else {
        64 * MIB
    };
    let cap = mount_cap(Mode::SingleNodeWriter);
    let (id, target) = t.mounted("src", size, &p, cap.clone()).await;
    std::fs::write(target.join("v1"), b"first").unwrap();
    let snap =
        t.c.ctl
            .create_snapshot(CreateSnapshotRequest {
                source_volume_id: id.clone(),
                name: "snap-1".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .snapshot
            .unwrap();
    assert!(snap.ready_to_use);
    std::fs::write(target.join("v2"), b"after the snapshot").unwrap();

    let mut restore = create_req("restored", size, params(&p), cap.clone());
    restore.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Snapshot(
            volume_content_source::SnapshotSource {
                snapshot_id: snap.snapshot_id.clone(),
            },
        )),
    });
    let rid =
        t.c.ctl
            .create_volume(restore)
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap()
            .volume_id;
    let mut clone = create_req("cloned", size, params(&p), cap.clone());
    clone.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Volume(
            volume_content_source::VolumeSource {
                volume_id: id.clone(),
            },
        )),
    });
    let cid =
        t.c.ctl
            .create_volume(clone)
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap()
            .volume_id;

    for (vid, name, has_v2) in [(&rid, "restored", false), (&cid, "cloned", true)] {
        let staging = t.scratch.path(&format!("staging-{name}"));
        let tgt = t.scratch.path(&format!("target-{name}"));
        t.c.node
            .node_stage_volume(stage_req(vid, &staging, cap.clone()))
            .await
            .unwrap();
        t.c.node
            .node_publish_volume(publish_req(vid, &staging, &tgt, cap.clone(), false))
            .await
            .unwrap();
        assert_eq!(std::fs::read(tgt.join("v1")).unwrap(), b"first", "{name}");
        assert_eq!(tgt.join("v2").exists(), has_v2, "{name}");
        t.unmount(vid, name).await;
    }
    // A restore smaller than the snapshot is refused with OUT_OF_RANGE.
    let mut small = create_req("too-small", MIB, params(&p), cap.clone());
    small.capacity_range = Some(CapacityRange {
        required_bytes: MIB,
        limit_bytes: 2 * MIB,
    });
    small.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Snapshot(
            volume_content_source::SnapshotSource {
                snapshot_id: snap.snapshot_id.clone(),
            },
        )),
    });
    assert_eq!(
        t.c.ctl.create_volume(small).await.unwrap_err().code(),
        Code::OutOfRange
    );
    t.unmount(&id, "src").await;
}

#[tokio::test]
async fn dir_snapshot_restore_and_clone_keep_data() {
    snapshot_round_trip("dir", "snapdir").await;
}

#[tokio::test]
async fn xfs_snapshot_restore_and_clone_mount_beside_their_source() {
    snapshot_round_trip("loop-xfs", "snapxfs").await;
}

#[tokio::test]
async fn loop_snapshot_restore_and_clone_keep_data() {
    snapshot_round_trip("loop", "snaploop").await;
}

#[tokio::test]
async fn capacity_shrinks_as_volumes_are_created_and_overflow_is_resource_exhausted() {
    let mut t = local_on("btrfs", "cap").await;
    let cap_before =
        t.c.ctl
            .get_capacity(GetCapacityRequest::default())
            .await
            .unwrap()
            .into_inner()
            .available_capacity;
    assert!(
        cap_before > 2 * 1024 * MIB && cap_before <= 4 * 1024 * MIB,
        "{cap_before}"
    );
    t.c.ctl
        .create_volume(create_req(
            "a",
            1024 * MIB,
            params(&[]),
            mount_cap(Mode::SingleNodeWriter),
        ))
        .await
        .unwrap();
    let cap_after =
        t.c.ctl
            .get_capacity(GetCapacityRequest::default())
            .await
            .unwrap()
            .into_inner()
            .available_capacity;
    // Thick accounting: what a volume may grow to is never offered again (4 GiB pool - 1 GiB).
    assert!(
        cap_after < cap_before && cap_after <= 3 * 1024 * MIB,
        "{cap_before} -> {cap_after}"
    );
    // More than the node has: another node could take it, so RESOURCE_EXHAUSTED.
    let err =
        t.c.ctl
            .create_volume(create_req(
                "b",
                8 * 1024 * MIB,
                params(&[]),
                mount_cap(Mode::SingleNodeWriter),
            ))
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    // Another node's topology: also RESOURCE_EXHAUSTED, and GetCapacity there is zero.
    let mut elsewhere = create_req("c", MIB, params(&[]), mount_cap(Mode::SingleNodeWriter));
    let other = Topology {
        segments: [("topology.berth.dev/node".to_string(), "node-b".to_string())].into(),
    };
    elsewhere.accessibility_requirements = Some(TopologyRequirement {
        requisite: vec![other.clone()],
        preferred: vec![],
    });
    assert_eq!(
        t.c.ctl.create_volume(elsewhere).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    let there =
        t.c.ctl
            .get_capacity(GetCapacityRequest {
                accessible_topology: Some(other),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
    assert_eq!(there.available_capacity, 0);
    // Volumes carry the node's topology.
    let v =
        t.c.ctl
            .create_volume(create_req(
                "d",
                MIB,
                params(&[]),
                mount_cap(Mode::SingleNodeWriter),
            ))
            .await
            .unwrap()
            .into_inner();
    assert_eq!(
        v.volume.unwrap().accessible_topology[0].segments["topology.berth.dev/node"],
        "node-a"
    );
}

#[tokio::test]
async fn bad_parameters_are_refused_by_name_and_create_nothing() {
    let mut t = local_on("ext4", "badparams").await;
    let table: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("backend", "zfs")], "parameters.backend"),
        (
            vec![("backend", "loop"), ("fsType", "ntfs")],
            "parameters.fsType",
        ),
        (vec![("colour", "blue")], "parameters.colour"),
    ];
    for (p, field) in table {
        let err =
            t.c.ctl
                .create_volume(create_req(
                    "bad",
                    MIB,
                    params(&p),
                    mount_cap(Mode::SingleNodeWriter),
                ))
                .await
                .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().contains(field),
            "{} should name {field}",
            err.message()
        );
    }
    let err =
        t.c.ctl
            .create_volume(create_req(
                "multi",
                MIB,
                params(&[]),
                mount_cap(Mode::MultiNodeMultiWriter),
            ))
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("access_mode"), "{}", err.message());
    let volumes = std::fs::read_dir(t.scratch.path("fs/pool/volumes"))
        .unwrap()
        .count();
    assert_eq!(volumes, 0);
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly_and_a_stale_socket_is_replaced() {
    let scratch = Scratch::new("sigterm");
    let sock = scratch.path("csi.sock");
    std::fs::write(&sock, b"stale").unwrap();
    let pool = scratch.path("pool");
    let mut p = Plugin::start(
        &sock,
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
    let mut c = p.clients().await;
    let info =
        c.id.get_plugin_info(GetPluginInfoRequest {})
            .await
            .unwrap()
            .into_inner();
    assert_eq!(info.name, "local.csi.berth.dev");
    assert_eq!(info.vendor_version, env!("CARGO_PKG_VERSION"));
    p.signal(libc::SIGTERM);
    let status = p.wait();
    assert!(status.success(), "{status}");
    assert!(!sock.exists(), "the socket is removed at shutdown");
}

#[tokio::test]
async fn concurrent_creates_of_one_name_make_one_volume() {
    let t = local_on("btrfs", "concurrent").await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut c = t.c.clone();
        tasks.push(tokio::spawn(async move {
            c.ctl
                .create_volume(create_req(
                    "same",
                    64 * MIB,
                    params(&[("backend", "loop")]),
                    mount_cap(Mode::SingleNodeWriter),
                ))
                .await
                .map(|r| r.into_inner().volume.unwrap().volume_id)
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), "same");
    }
    let entries: Vec<_> = std::fs::read_dir(t.scratch.path("fs/pool/volumes"))
        .unwrap()
        .collect();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        std::fs::read_dir(t.scratch.path("fs/pool/tmp"))
            .unwrap()
            .count(),
        0
    );
}
