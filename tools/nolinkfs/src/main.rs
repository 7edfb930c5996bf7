//! `nolinkfs SOURCE MOUNTPOINT [-o OPTS]`: a FUSE pass-through of SOURCE at MOUNTPOINT that refuses
//! hard links (EPERM) and nothing else, like an SMB share without UNIX extensions. A test tool for
//! the shared CSI driver's capability probe. Runs in the foreground; SIGTERM or SIGINT unmounts.
//!
//! Needs no libfuse: the `fuser` crate mounts with mount(2) as root, or through `fusermount3`
//! (Debian's `fuse3` package) otherwise.

mod decide;
mod fs;
mod sys;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fuser::{Config, MountOption, Session, SessionACL};
use nix::sys::signal::{SigSet, Signal};
use tracing::{error, info, warn};

/// Mirror SOURCE at MOUNTPOINT through FUSE; hard links fail with EPERM, everything else passes.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The directory to mirror.
    source: PathBuf,
    /// Where to mount the mirror (an existing directory).
    mountpoint: PathBuf,
    /// Mount options, comma-separated, repeatable: allow_other (default), allow_root,
    /// default_permissions (always on), ro, rw, fsname=NAME.
    #[arg(short = 'o', value_name = "OPTS")]
    options: Vec<String>,
    /// Threads serving FUSE requests.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: u16,
}

/// Why nolinkfs could not run.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Options(#[from] decide::OptionError),
    #[error("source {path}: {source}")]
    Source {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mounting at {path}: {source}")]
    Mount {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("blocking termination signals: {0}")]
    Signals(nix::Error),
    #[error("serving the mount: {0}")]
    Serve(std::io::Error),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn config(opts: &decide::MountOptions, source: &std::path::Path, threads: u16) -> Config {
    let mut config = Config::default();
    let fsname = opts.fsname.clone().unwrap_or_else(|| {
        std::fs::canonicalize(source)
            .unwrap_or_else(|_| source.to_path_buf())
            .display()
            .to_string()
    });
    config.mount_options = vec![
        MountOption::FSName(fsname),
        MountOption::Subtype("nolinkfs".into()),
        MountOption::DefaultPermissions,
        if opts.read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
    ];
    config.acl = if opts.allow_root {
        SessionACL::RootAndOwner
    } else {
        SessionACL::All
    };
    config.n_threads = Some(usize::from(threads));
    config
}

fn run(args: Args) -> Result<(), Error> {
    let opts = decide::parse_mount_options(&args.options)?;
    // Block the termination signals before any thread exists, so all of them inherit the mask and
    // only the waiter below ever sees SIGTERM/SIGINT.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGHUP);
    signals.thread_block().map_err(Error::Signals)?;

    // The caller's umask arrives with each request; ours must not mask a second time.
    sys::set_umask(0);
    let fs = fs::NoLinkFs::new(&args.source, opts.read_only).map_err(|source| Error::Source {
        path: args.source.clone(),
        source,
    })?;
    let mut session = Session::new(
        fs,
        &args.mountpoint,
        &config(&opts, &args.source, args.threads),
    )
    .map_err(|source| Error::Mount {
        path: args.mountpoint.clone(),
        source,
    })?;
    info!(source = %args.source.display(), mountpoint = %args.mountpoint.display(), "mounted; link() will fail with EPERM");

    let mut unmounter = session.unmount_callable();
    let mountpoint = args.mountpoint.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut first = true;
            loop {
                let Ok(sig) = signals.wait() else { continue };
                if !first {
                    warn!(
                        ?sig,
                        "second signal: exiting without waiting for the mount to go"
                    );
                    std::process::exit(1);
                }
                first = false;
                info!(?sig, "unmounting");
                if let Err(e) = unmounter.unmount() {
                    // Busy: detach it lazily, so it disappears once its last user lets go.
                    warn!("unmount failed ({e}); detaching lazily");
                    if let Err(e) =
                        nix::mount::umount2(&mountpoint, nix::mount::MntFlags::MNT_DETACH)
                    {
                        error!("lazy unmount failed: {e}");
                    }
                }
            }
        })
        .map_err(Error::Serve)?;

    match session.run() {
        Ok(()) => info!("unmounted"),
        Err(e) if decide::session_ended_by_kernel(&e) => info!("unmounted ({e})"),
        Err(e) => return Err(Error::Serve(e)),
    }
    Ok(())
}
