//! Parsing of what the command line and /proc hand csi-bench: endpoints, sizes, `k=v` parameters,
//! access modes, and `VmRSS` lines. Pure, so every rule sits in a table test.

use std::path::PathBuf;

use berth_csi::proto::volume_capability::access_mode::Mode;

/// A command-line value csi-bench cannot use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("endpoint `{0}`: expected unix:///path/to.sock or a socket path")]
    Endpoint(String),
    #[error("size `{0}`: expected bytes with an optional suffix (k, M, G, Ki, Mi, Gi), e.g. 64Mi")]
    Size(String),
    #[error("parameter `{0}`: expected KEY=VALUE with a non-empty KEY")]
    Parameter(String),
    #[error(
        "access mode `{0}`: expected single-node-writer, single-node-single-writer, \
         single-node-multi-writer, single-node-reader-only, multi-node-reader-only, \
         multi-node-single-writer or multi-node-multi-writer"
    )]
    AccessMode(String),
    #[error("no VmRSS line in /proc/PID/status")]
    NoRss,
    #[error("/proc/PID/stat has no CPU time fields")]
    NoCpu,
}

/// The socket path of a CSI endpoint: `unix:///x.sock`, `unix:/x.sock` or a bare path.
pub fn endpoint_path(endpoint: &str) -> Result<PathBuf, ParseError> {
    let path = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .unwrap_or(endpoint);
    if path.is_empty() || endpoint.contains("://") && !endpoint.starts_with("unix://") {
        return Err(ParseError::Endpoint(endpoint.to_string()));
    }
    Ok(PathBuf::from(path))
}

/// Bytes from `1073741824`, `64Mi`, `1G`, `512k`...
pub fn size(s: &str) -> Result<i64, ParseError> {
    let err = || ParseError::Size(s.to_string());
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, suffix) = s.split_at(split);
    let n: i64 = digits.parse().map_err(|_| err())?;
    let mult: i64 = match suffix {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return Err(err()),
    };
    n.checked_mul(mult).ok_or_else(err)
}

/// One StorageClass parameter `KEY=VALUE` (the value may contain `=`).
pub fn parameter(s: &str) -> Result<(String, String), ParseError> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(ParseError::Parameter(s.to_string())),
    }
}

/// A CSI access mode from its kebab-case name.
pub fn access_mode(s: &str) -> Result<Mode, ParseError> {
    Mode::from_str_name(&s.to_ascii_uppercase().replace('-', "_"))
        .filter(|m| *m != Mode::Unknown)
        .ok_or_else(|| ParseError::AccessMode(s.to_string()))
}

/// The `VmRSS` (resident set) of a `/proc/PID/status` text, in KiB.
pub fn vm_field_kib(status: &str, field: &str) -> Result<u64, ParseError> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or(ParseError::NoRss)
}

/// CPU time of a process from its `/proc/PID/stat` line, in clock ticks: its own (user + system)
/// plus that of the children it has waited for (the `mkfs`, `mount`... it runs).
pub fn cpu_ticks(stat: &str) -> Result<u64, ParseError> {
    // The command name (field 2) may contain spaces and parentheses: fields restart after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or(ParseError::NoCpu)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime, cutime, cstime are fields 14-17, i.e. 11-14 counted from the state (field 3).
    let mut total = 0u64;
    for i in 11..=14 {
        let v: u64 = fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or(ParseError::NoCpu)?;
        total += v;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let cases = [
            ("unix:///run/csi.sock", Ok(PathBuf::from("/run/csi.sock"))),
            ("unix:/run/csi.sock", Ok(PathBuf::from("/run/csi.sock"))),
            ("/run/csi.sock", Ok(PathBuf::from("/run/csi.sock"))),
            ("rel.sock", Ok(PathBuf::from("rel.sock"))),
            ("unix://", Err(ParseError::Endpoint("unix://".into()))),
            (
                "tcp://1.2.3.4:5",
                Err(ParseError::Endpoint("tcp://1.2.3.4:5".into())),
            ),
            ("", Err(ParseError::Endpoint(String::new()))),
        ];
        for (input, want) in cases {
            assert_eq!(endpoint_path(input), want, "{input}");
        }
    }

    #[test]
    fn sizes() {
        let cases = [
            ("0", Ok(0)),
            ("1048576", Ok(1 << 20)),
            ("64Mi", Ok(64 << 20)),
            ("1Gi", Ok(1 << 30)),
            ("2G", Ok(2_000_000_000)),
            ("512k", Ok(512_000)),
            ("10MB", Err(ParseError::Size("10MB".into()))),
            ("Mi", Err(ParseError::Size("Mi".into()))),
            ("-1", Err(ParseError::Size("-1".into()))),
            (
                "99999999999Ti",
                Err(ParseError::Size("99999999999Ti".into())),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(size(input), want, "{input}");
        }
    }

    #[test]
    fn parameters() {
        let ok = |k: &str, v: &str| Ok((k.to_string(), v.to_string()));
        let cases = [
            ("backend=dir", ok("backend", "dir")),
            ("mountOptions=a=b", ok("mountOptions", "a=b")),
            ("empty=", ok("empty", "")),
            ("=x", Err(ParseError::Parameter("=x".into()))),
            ("novalue", Err(ParseError::Parameter("novalue".into()))),
        ];
        for (input, want) in cases {
            assert_eq!(parameter(input), want, "{input}");
        }
    }

    #[test]
    fn access_modes() {
        let cases = [
            ("single-node-writer", Ok(Mode::SingleNodeWriter)),
            ("multi-node-multi-writer", Ok(Mode::MultiNodeMultiWriter)),
            (
                "SINGLE_NODE_SINGLE_WRITER",
                Ok(Mode::SingleNodeSingleWriter),
            ),
            ("unknown", Err(ParseError::AccessMode("unknown".into()))),
            ("rwx", Err(ParseError::AccessMode("rwx".into()))),
        ];
        for (input, want) in cases {
            assert_eq!(access_mode(input), want, "{input}");
        }
    }

    #[test]
    fn cpu_time_from_proc_stat() {
        let cases = [
            (
                "4242 (berth-csi) S 1 4242 4242 0 -1 4194560 900 0 0 0 17 5 3 2 20 0 4 0 1 2 3",
                Ok(17 + 5 + 3 + 2),
            ),
            (
                "7 (odd) name) R 1 7 7 0 -1 0 0 0 0 0 100 50 0 0 20 0 1 0",
                Ok(150),
            ),
            ("7 (short) S 1 2 3", Err(ParseError::NoCpu)),
            ("no parenthesis", Err(ParseError::NoCpu)),
        ];
        for (input, want) in cases {
            assert_eq!(cpu_ticks(input), want, "{input}");
        }
    }

    #[test]
    fn rss_from_proc_status() {
        let status = "Name:\tberth-csi\nVmHWM:\t    9000 kB\nVmRSS:\t    7424 kB\nThreads:\t3\n";
        assert_eq!(vm_field_kib(status, "VmRSS"), Ok(7424));
        assert_eq!(vm_field_kib(status, "VmHWM"), Ok(9000));
        assert_eq!(
            vm_field_kib("Name:\tzombie\n", "VmRSS"),
            Err(ParseError::NoRss)
        );
        assert_eq!(
            vm_field_kib("VmRSS:\tlots\n", "VmRSS"),
            Err(ParseError::NoRss)
        );
    }
}
