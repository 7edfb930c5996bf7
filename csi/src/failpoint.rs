//! Crash injection for the crash-safety tests: with the `failpoints` feature, the process kills itself
//! with SIGKILL at the point named by `BERTH_FAILPOINT`. Without the feature this compiles to nothing.

/// Dies here, as abruptly as `kill -9`, when `BERTH_FAILPOINT` names this point.
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    if std::env::var("BERTH_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: killing the process");
        // SAFETY: sending SIGKILL to ourselves has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}
