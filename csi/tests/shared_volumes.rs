//! Shared volumes through the real binary: ownership from StorageClass parameters, many writers on
//! one directory, delete/archive/retain, pool selection, and refusing a pool whose filesystem lacks
//! a required capability — shown on a real FUSE filesystem (nolinkfs) that refuses hard links.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use berth_csi::proto::volume_capability::access_mode::Mode;
use berth_csi::proto::*;
use support::*;
use tonic::Code;

const MIB: i64 = 1 << 20;

async fn shared(scratch: &Scratch, pools: &[(&str, &Path)]) -> (Plugin, Clients) {
    let mut args = vec![
        "--driver".to_string(),
        "shared".into(),
        "--node-id".into(),
        "node-a".into(),
    ];
    for (name, path) in pools {
        args.push("--shared-pool".into());
        args.push(format!("{name}={}", path.display()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let plugin = Plugin::start(&scratch.path("csi.sock"), &args, &[]);
    let c = plugin.clients().await;
    (plugin, c)
}

fn publish(id: &str, target: &Path, mode: Mode) -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_id: id.into(),
        target_path: target.to_string_lossy().into(),
        volume_capability: Some(mount_cap(mode)),
        ..Default::default()
    }
}

#[tokio::test]
async fn ownership_from_parameters_and_many_writers_see_the_same_files() {
    let scratch = Scratch::new("shared-own");
    let pool = scratch.path("pool");
    let (_p, mut c) = shared(&scratch, &[("main", &pool)]).await;
    let req = create_req(
        "cache",
        10 * MIB,
        params(&[("uid", "999"), ("gid", "999"), ("mode", "0770")]),
        mount_cap(Mode::MultiNodeMultiWriter),
    );
    let vol = c
        .ctl
        .create_volume(req)
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(
        vol.accessible_topology[0].segments["shared.berth.dev/main"],
        "true"
    );
    let data = pool.join("volumes/cache/data");
    let meta = std::fs::metadata(&data).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.permissions().mode() & 0o7777),
        (999, 999, 0o770)
    );

    // Two "Pods" (targets) publish the same volume and see each other's writes.
    let (a, b) = (scratch.path("pod-a"), scratch.path("pod-b"));
    c.node
        .node_publish_volume(publish(&vol.volume_id, &a, Mode::MultiNodeMultiWriter))
        .await
        .unwrap();
    c.node
        .node_publish_volume(publish(&vol.volume_id, &b, Mode::MultiNodeMultiWriter))
        .await
        .unwrap();
    std::fs::write(a.join("from-a"), b"a").unwrap();
    std::fs::write(b.join("from-b"), b"b").unwrap();
    assert_eq!(std::fs::read(b.join("from-a")).unwrap(), b"a");
    assert_eq!(std::fs::read(a.join("from-b")).unwrap(), b"b");
    // The database user (999) can write without an init container.
    let status = Command::new("setpriv")
        .args(["--reuid=999", "--regid=999", "--clear-groups", "sh", "-c"])
        .arg(format!("echo ok > {}/as-999", a.display()))
        .status()
        .unwrap();
    assert!(status.success());
    // A read-only publication refuses writes.
    let ro = scratch.path("pod-ro");
    let mut req = publish(&vol.volume_id, &ro, Mode::MultiNodeReaderOnly);
    req.readonly = true;
    c.node.node_publish_volume(req).await.unwrap();
    assert_eq!(
        std::fs::write(ro.join("x"), b"x")
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EROFS)
    );
    for t in [&a, &b, &ro] {
        c.node
            .node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: vol.volume_id.clone(),
                target_path: t.to_string_lossy().into(),
            })
            .await
            .unwrap();
    }
    assert!(mounts_under(&scratch.dir).is_empty());
}

#[tokio::test]
async fn on_delete_policy_deletes_archives_or_retains() {
    let scratch = Scratch::new("shared-ondelete");
    let pool = scratch.path("pool");
    let (_p, mut c) = shared(&scratch, &[("main", &pool)]).await;
    for policy in ["delete", "archive", "retain"] {
        let name = format!("vol-{policy}");
        let req = create_req(
            &name,
            MIB,
            params(&[("onDelete", policy)]),
            mount_cap(Mode::MultiNodeMultiWriter),
        );
        let id = c
            .ctl
            .create_volume(req)
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap()
            .volume_id;
        std::fs::write(pool.join(format!("volumes/{id}/data/file")), policy).unwrap();
        c.ctl
            .delete_volume(DeleteVolumeRequest {
                volume_id: id.clone(),
                secrets: Default::default(),
            })
            .await
            .unwrap();
        // Deleting again is fine (idempotent).
        c.ctl
            .delete_volume(DeleteVolumeRequest {
                volume_id: id.clone(),
                secrets: Default::default(),
            })
            .await
            .unwrap();
        assert!(!pool.join(format!("volumes/{id}")).exists());
        let kept: Vec<PathBuf> = ["archive", "retained"]
            .iter()
            .flat_map(|d| {
                std::fs::read_dir(pool.join(d))
                    .unwrap()
                    .flatten()
                    .map(|e| e.path())
            })
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&name))
            .collect();
        match policy {
            "delete" => assert!(kept.is_empty()),
            _ => {
                assert_eq!(kept.len(), 1, "{policy}");
                assert!(kept[0].starts_with(pool.join(if policy == "archive" {
                    "archive"
                } else {
                    "retained"
                })));
                assert_eq!(
                    std::fs::read(kept[0].join("data/file")).unwrap(),
                    policy.as_bytes()
                );
            }
        }
    }
    assert_eq!(std::fs::read_dir(pool.join("tmp")).unwrap().count(), 0);
}

#[tokio::test]
async fn several_pools_need_a_pool_parameter() {
    let scratch = Scratch::new("shared-pools");
    let (fast, slow) = (scratch.path("fast"), scratch.path("slow"));
    let (_p, mut c) = shared(&scratch, &[("fast", &fast), ("slow", &slow)]).await;
    let err = c
        .ctl
        .create_volume(create_req(
            "v",
            MIB,
            params(&[]),
            mount_cap(Mode::MultiNodeMultiWriter),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("parameters.pool") && err.message().contains("fast, slow"),
        "{}",
        err.message()
    );
    let err = c
        .ctl
        .create_volume(create_req(
            "v",
            MIB,
            params(&[("pool", "tape")]),
            mount_cap(Mode::MultiNodeMultiWriter),
        ))
        .await
        .unwrap_err();
    assert!(err.message().contains("tape"), "{}", err.message());
    c.ctl
        .create_volume(create_req(
            "v",
            MIB,
            params(&[("pool", "slow")]),
            mount_cap(Mode::MultiNodeMultiWriter),
        ))
        .await
        .unwrap();
    assert!(slow.join("volumes/v/data").is_dir() && !fast.join("volumes/v").exists());
    // The same name in another pool is a different volume: refused.
    let err = c
        .ctl
        .create_volume(create_req(
            "v",
            MIB,
            params(&[("pool", "fast")]),
            mount_cap(Mode::MultiNodeMultiWriter),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let info = c
        .node
        .node_get_info(NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let seg = info.accessible_topology.unwrap().segments;
    assert_eq!(seg.len(), 2);
    assert_eq!(seg["shared.berth.dev/fast"], "true");
}

/// A running nolinkfs (FUSE, refuses link()) mounted over a directory; unmounted on drop.
struct NoLinkFs {
    child: Child,
    mnt: PathBuf,
}

impl NoLinkFs {
    fn mount(source: &Path, mnt: &Path) -> NoLinkFs {
        // The tool is a binary of this workspace, next to this test's own directory in target/.
        let exe = std::env::current_exe().unwrap();
        let bin = exe.parent().unwrap().parent().unwrap().join("nolinkfs");
        assert!(
            bin.exists(),
            "{} is missing: build it with `cargo build -p nolinkfs`",
            bin.display()
        );
        std::fs::create_dir_all(source).unwrap();
        std::fs::create_dir_all(mnt).unwrap();
        let child = Command::new(bin)
            .arg(source)
            .arg(mnt)
            .args(["-o", "allow_other"])
            .spawn()
            .unwrap();
        let fs = NoLinkFs {
            child,
            mnt: mnt.to_path_buf(),
        };
        for _ in 0..200 {
            if mounts_under(mnt).iter().any(|m| m == mnt) {
                return fs;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("nolinkfs did not mount");
    }
}

impl Drop for NoLinkFs {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by PID.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}

#[tokio::test]
async fn a_pool_without_hard_links_refuses_a_class_that_requires_them() {
    let scratch = Scratch::new("shared-nolink");
    let smb_like = NoLinkFs::mount(&scratch.path("backing"), &scratch.path("smb"));
    // `berth-csi probe` tells an operator what the filesystem can do.
    let out = Command::new(env!("CARGO_BIN_EXE_berth-csi"))
        .args(["probe", "--path"])
        .arg(&smb_like.mnt)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.lines()
            .any(|l| l.starts_with("hardlinks") && l.contains(" no ")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("fsync") && l.contains("yes")),
        "{text}"
    );

    let (_p, mut c) = shared(&scratch, &[("smb", &smb_like.mnt)]).await;
    let req = create_req(
        "pgdata",
        MIB,
        params(&[("requiredCapabilities", "fsync,hardlinks")]),
        mount_cap(Mode::SingleNodeWriter),
    );
    let err = c.ctl.create_volume(req).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let msg = err.message();
    assert!(
        msg.contains("\"hardlinks\"") && msg.contains("link"),
        "the reason names the capability and why: {msg}"
    );
    assert!(
        !smb_like.mnt.join("volumes/pgdata").exists(),
        "nothing was provisioned"
    );
    // A class that only needs what the pool has still works there.
    let ok = create_req(
        "cache",
        MIB,
        params(&[("requiredCapabilities", "fsync,symlinks")]),
        mount_cap(Mode::SingleNodeWriter),
    );
    c.ctl.create_volume(ok).await.unwrap();
    assert!(smb_like.mnt.join("volumes/cache/data").is_dir());
}
