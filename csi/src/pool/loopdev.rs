//! Loop devices for image-file volumes through the kernel's ioctls (no `losetup` process): attach
//! (reusing an existing attachment of the same file), find by backing file through sysfs, refresh
//! the size after growth, detach.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{CsiError, Result};

const LOOP_CTL_GET_FREE: u64 = 0x4C82;
const LOOP_CONFIGURE: u64 = 0x4C0A;
const LOOP_CLR_FD: u64 = 0x4C01;
const LOOP_SET_CAPACITY: u64 = 0x4C07;

#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Runs an ioctl whose argument is a plain integer or pointer, mapping failure to an io::Error.
fn ioctl(fd: &File, request: u64, arg: libc::c_ulong) -> std::io::Result<i32> {
    // SAFETY: every request used here takes an integer or a pointer to a live struct of the
    // kernel's layout (LoopConfig), passed by the caller for the duration of the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Loop devices whose backing file is `image`.
pub fn find(image: &Path) -> Result<Vec<PathBuf>> {
    let image = std::fs::canonicalize(image).map_err(CsiError::io("resolve", image))?;
    let mut found = Vec::new();
    let entries = std::fs::read_dir("/sys/block").map_err(CsiError::io("read", "/sys/block"))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file")) else {
            continue;
        };
        if Path::new(backing.trim_end()) == image {
            found.push(PathBuf::from("/dev").join(&*name));
        }
    }
    found.sort();
    Ok(found)
}

/// The loop device backing `image`, attaching one when there is none.
pub fn attach(image: &Path) -> Result<PathBuf> {
    if let Some(dev) = find(image)?.into_iter().next() {
        return Ok(dev);
    }
    let backing = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(CsiError::io("open", image))?;
    let control =
        File::open("/dev/loop-control").map_err(CsiError::io("open", "/dev/loop-control"))?;
    // Another process may take the free device between the two calls: then try the next one.
    for _ in 0..16 {
        let n = ioctl(&control, LOOP_CTL_GET_FREE, 0)
            .map_err(CsiError::io("find a free loop device", "/dev/loop-control"))?;
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(CsiError::io("open", &path))?;
        let config = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size: 0,
            // SAFETY: LoopInfo64 is plain integers and byte arrays, for which zero is valid.
            info: unsafe { std::mem::zeroed() },
            reserved: [0; 8],
        };
        match ioctl(
            &dev,
            LOOP_CONFIGURE,
            &config as *const LoopConfig as libc::c_ulong,
        ) {
            Ok(_) => return Ok(path),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
            Err(e) => return Err(CsiError::io("attach to", &path)(e)),
        }
    }
    Err(CsiError::FailedPrecondition(format!(
        "no free loop device could be claimed for {}",
        image.display()
    )))
}

/// Detaches every loop device backing `image`. Callers unmount first, so the device is unused and
/// the kernel detaches it at once.
pub fn detach(image: &Path) -> Result<()> {
    if !image.exists() {
        return Ok(());
    }
    for dev in find(image)? {
        let f = File::open(&dev).map_err(CsiError::io("open", &dev))?;
        match ioctl(&f, LOOP_CLR_FD, 0) {
            Ok(_) => {}
            // Already detached by someone else in the meantime.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
            Err(e) => return Err(CsiError::io("detach", &dev)(e)),
        }
    }
    Ok(())
}

/// Makes the loop device see its backing file's new size.
pub fn refresh(dev: &Path) -> Result<()> {
    let f = File::open(dev).map_err(CsiError::io("open", dev))?;
    ioctl(&f, LOOP_SET_CAPACITY, 0).map_err(CsiError::io("refresh the size of", dev))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_struct_layouts() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }

    #[test]
    fn attach_find_refresh_detach_a_real_image() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        let f = File::create(&img).unwrap();
        f.set_len(8 << 20).unwrap();
        let dev = attach(&img).unwrap();
        assert_eq!(
            attach(&img).unwrap(),
            dev,
            "a second attach reuses the device"
        );
        assert_eq!(find(&img).unwrap(), vec![dev.clone()]);
        let size = |d: &Path| {
            let name = d.file_name().unwrap().to_string_lossy().to_string();
            std::fs::read_to_string(format!("/sys/class/block/{name}/size"))
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap()
                * 512
        };
        assert_eq!(size(&dev), 8 << 20);
        f.set_len(16 << 20).unwrap();
        refresh(&dev).unwrap();
        assert_eq!(size(&dev), 16 << 20);
        detach(&img).unwrap();
        assert!(find(&img).unwrap().is_empty());
    }
}
