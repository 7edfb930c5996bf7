//! Image reference normalization and `keep` pattern matching, so that `postgres`, `postgres:latest` and
//! `docker.io/library/postgres:latest` are recognised as the same image, the way `docker pull` reads them.

/// The registry host an unqualified reference means.
pub const DEFAULT_DOMAIN: &str = "docker.io";

/// A reference split into its fully qualified repository and its tag / digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `docker.io/library/postgres`, `registry.example.test:5000/team/app`.
    pub repository: String,
    /// The tag, when the reference has one (or `latest` when it has neither tag nor digest).
    pub tag: Option<String>,
    /// The digest (`sha256:...`), when the reference has one.
    pub digest: Option<String>,
}

impl Reference {
    /// The canonical string: `repository[:tag][@digest]`.
    pub fn canonical(&self) -> String {
        let mut s = self.repository.clone();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// The registry host of the repository.
    pub fn domain(&self) -> &str {
        self.repository.split('/').next().unwrap_or(DEFAULT_DOMAIN)
    }
}

/// Splits `name` into domain-qualified repository, tag and digest; an image ID (`sha256:<hex>`) or an
/// empty string is not a reference and yields `None`.
pub fn parse(reference: &str) -> Option<Reference> {
    let reference = reference.trim();
    if reference.is_empty() || reference.starts_with("sha256:") {
        return None;
    }
    let (name, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d.to_owned())),
        None => (reference, None),
    };
    // A tag is a ':' after the last '/', so `host:5000/app` keeps its port.
    let last_slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (repo, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (
            &name[..last_slash + i],
            Some(name[last_slash + i + 1..].to_owned()),
        ),
        None => (name, None),
    };
    if repo.is_empty() {
        return None;
    }
    let tag = match (&tag, &digest) {
        (None, None) => Some("latest".to_owned()),
        _ => tag,
    };
    Some(Reference {
        repository: qualify(repo),
        tag,
        digest,
    })
}

/// Adds the default domain (and `library/` for official images) to a repository name, as Docker does.
fn qualify(repo: &str) -> String {
    match repo.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            repo.to_owned()
        }
        Some(_) => format!("{DEFAULT_DOMAIN}/{repo}"),
        None => format!("{DEFAULT_DOMAIN}/library/{repo}"),
    }
}

/// The canonical form of a reference, or the input unchanged when it is not a reference (an image ID).
pub fn normalize(reference: &str) -> String {
    parse(reference)
        .map(|r| r.canonical())
        .unwrap_or_else(|| reference.to_owned())
}

/// A `keep` pattern, qualified like a reference so `postgres:*` means `docker.io/library/postgres:*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    glob: String,
    /// For a pattern naming no tag or digest: `<glob>:*` and `<glob>@*`, so `app` covers every tag.
    any_tag: Option<(String, String)>,
}

impl Pattern {
    /// Qualifies the pattern's repository part the way [`parse`] qualifies a reference.
    pub fn new(pattern: &str) -> Self {
        let pattern = pattern.trim();
        let first = pattern.split('/').next().unwrap_or("");
        let qualified = if pattern.contains('/') {
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.contains('*')
            {
                pattern.to_owned()
            } else {
                format!("{DEFAULT_DOMAIN}/{pattern}")
            }
        } else if pattern == "*" {
            pattern.to_owned()
        } else {
            format!("{DEFAULT_DOMAIN}/library/{pattern}")
        };
        let has_tag = qualified
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':') || last.contains('@'));
        let any_tag = (!has_tag).then(|| (format!("{qualified}:*"), format!("{qualified}@*")));
        Self {
            glob: qualified,
            any_tag,
        }
    }

    /// Whether `reference` (canonical) matches. A pattern naming no tag (`repo/app`) matches every tag
    /// and digest of that repository.
    pub fn matches(&self, canonical: &str) -> bool {
        if glob(&self.glob, canonical) {
            return true;
        }
        // `app` (qualified to `.../app`) also covers `.../app:tag` and `.../app@digest`.
        let has_tag = self
            .glob
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':') || last.contains('@'));
        !has_tag
            && (glob(&format!("{}:*", self.glob), canonical)
                || glob(&format!("{}@*", self.glob), canonical))
    }

    /// The qualified pattern text.
    pub fn as_str(&self) -> &str {
        &self.glob
    }
}

/// Glob match where `*` is any run of characters (including '/') and `?` one character.
/// Works on bytes: references are ASCII (the CRD pattern allows only ASCII), so no allocation is needed.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    // Iterative matcher with one backtrack point: linear in practice, no recursion blow-up.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_docker() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("team/app:v1", "docker.io/team/app:v1"),
            (
                "registry.example.test/team/app",
                "registry.example.test/team/app:latest",
            ),
            ("localhost:5000/app:2", "localhost:5000/app:2"),
            ("localhost/app", "localhost/app:latest"),
            ("host:5000/app@sha256:abc", "host:5000/app@sha256:abc"),
            ("app:v1@sha256:abc", "docker.io/library/app:v1@sha256:abc"),
            ("sha256:0123", "sha256:0123"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input), want, "normalize({input})");
        }
    }

    #[test]
    fn reference_parts() {
        let r = parse("registry.example.test:5000/a/b:t").expect("parses");
        assert_eq!(r.repository, "registry.example.test:5000/a/b");
        assert_eq!(r.tag.as_deref(), Some("t"));
        assert_eq!(r.domain(), "registry.example.test:5000");
        assert!(parse("").is_none());
        assert!(parse("sha256:ff").is_none());
    }

    #[test]
    fn keep_patterns() {
        let cases = [
            ("postgres:*", "docker.io/library/postgres:16", true),
            ("postgres:*", "docker.io/library/postgresql:16", false),
            ("postgres", "docker.io/library/postgres:16", true),
            ("postgres", "docker.io/library/postgres@sha256:aa", true),
            ("postgres:16", "docker.io/library/postgres:15", false),
            (
                "registry.example.test/team/*",
                "registry.example.test/team/app:v1",
                true,
            ),
            (
                "registry.example.test/team/*",
                "registry.example.test/other/app:v1",
                false,
            ),
            ("*/pause:*", "registry.k8s.io/pause:3.9", true),
            ("*", "anything/at:all", true),
            ("team/app:v?", "docker.io/team/app:v1", true),
            ("team/app:v?", "docker.io/team/app:v10", false),
        ];
        for (pattern, reference, want) in cases {
            assert_eq!(
                Pattern::new(pattern).matches(reference),
                want,
                "{pattern} vs {reference}"
            );
        }
    }

    #[test]
    fn glob_edge_cases() {
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("**", ""));
        assert!(!glob("?", ""));
    }
}
