//! Engine hooks: the built-in `postgres` profile's scripts (mounted in every member at
//! `/etc/berth/scripts`) and the commands the controller runs through pods/exec to promote, demote and ask
//! a member for its replication position.

use super::desired::SCRIPTS_DIR;
use crate::api::replicated_database::EngineSpec;

/// The postgres profile's scripts, by file name: the same files the postgres profile test runs.
pub const POSTGRES_SCRIPTS: &[(&str, &str)] = &[
    ("common.sh", include_str!("postgres/common.sh")),
    ("entrypoint.sh", include_str!("postgres/entrypoint.sh")),
    ("promote.sh", include_str!("postgres/promote.sh")),
    ("demote.sh", include_str!("postgres/demote.sh")),
    ("position.sh", include_str!("postgres/position.sh")),
    ("ready.sh", include_str!("postgres/ready.sh")),
];

/// A hook the controller runs in a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Make this member the primary.
    Promote,
    /// Stop writes on the old primary; prints the final position.
    Demote,
    /// Print the replication position.
    Position,
}

/// The argv of a hook, or `None` when the engine has no such command (the step is then only a relabel).
pub fn hook_command(engine: &EngineSpec, hook: Hook) -> Option<Vec<String>> {
    if engine.postgres.is_some() {
        let script = match hook {
            Hook::Promote => "promote.sh",
            Hook::Demote => "demote.sh",
            Hook::Position => "position.sh",
        };
        return Some(vec!["sh".into(), format!("{SCRIPTS_DIR}/{script}")]);
    }
    let g = engine.generic.as_ref()?;
    let argv = match hook {
        Hook::Promote => &g.promote_command,
        Hook::Demote => &g.demote_command,
        Hook::Position => &g.position_command,
    };
    (!argv.is_empty()).then(|| argv.clone())
}

/// The position a hook printed: its last non-empty line, if it is an integer.
pub fn parse_position(output: &str) -> Option<i64> {
    output
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::replicated_database::{GenericEngine, PostgresProfile};

    #[test]
    fn hook_commands_per_engine() {
        let pg = EngineSpec {
            postgres: Some(PostgresProfile::default()),
            generic: None,
        };
        assert_eq!(
            hook_command(&pg, Hook::Promote).unwrap(),
            ["sh", "/etc/berth/scripts/promote.sh"]
        );
        let generic = EngineSpec {
            postgres: None,
            generic: Some(GenericEngine {
                promote_command: vec!["promote".into()],
                ..Default::default()
            }),
        };
        assert_eq!(hook_command(&generic, Hook::Promote).unwrap(), ["promote"]);
        assert_eq!(hook_command(&generic, Hook::Demote), None);
    }

    #[test]
    fn position_is_the_last_integer_line() {
        let cases = [
            ("123\n", Some(123)),
            ("log line\n  42 \n\n", Some(42)),
            ("", None),
            ("done", None),
        ];
        for (out, want) in cases {
            assert_eq!(parse_position(out), want, "{out:?}");
        }
    }

    #[test]
    fn every_script_sources_common_and_the_test_runs_these_files() {
        for (name, body) in POSTGRES_SCRIPTS.iter().filter(|(n, _)| *n != "common.sh") {
            assert!(body.contains(". \"$(dirname \"$0\")/common.sh\""), "{name}");
        }
    }
}
