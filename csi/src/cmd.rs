//! Runs the external tools the driver relies on (losetup, mkfs, resize2fs, xfs_growfs, btrfs, cp),
//! turning a failure into an error that carries the command line and its stderr.

use std::process::Command;

use crate::error::{CsiError, Result};

/// Runs `program args...` and returns its stdout; a non-zero exit is an error with stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let command_line = || format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| CsiError::Command {
            command: command_line(),
            status: "not started".into(),
            stderr: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(CsiError::Command {
            command: command_line(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_carry_the_command_and_stderr() {
        assert_eq!(run("echo", &["hi"]).unwrap(), "hi\n");
        let err = run("ls", &["/definitely/not/here"]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("ls /definitely/not/here") && msg.contains("No such file"),
            "{msg}"
        );
        assert!(run("no-such-program-berth", &[]).is_err());
    }
}
