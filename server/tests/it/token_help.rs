//! `tidings token --help` is the token subcommand's own help: its arguments and the secret,
//! not the server flags every subcommand inherits.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_tidings");

#[test]
fn token_help_lists_its_own_arguments_only() {
    let out = Command::new(BIN)
        .args(["token", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for want in [
        "--sub <SUB>",
        "--scope <SCOPE>",
        "--ttl <TTL>",
        "--jwt-secret",
        "JWT_SECRET",
        "--scope publish",
    ] {
        assert!(help.contains(want), "{want} missing from:\n{help}");
    }
    for server_flag in [
        "--redis-url",
        "--max-connections",
        "--bind",
        "--history-size",
        "--log-format",
    ] {
        assert!(!help.contains(server_flag), "{server_flag} in:\n{help}");
    }
    // The server's own help still lists them.
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(
        help.contains("--redis-url") && help.contains("token"),
        "{help}"
    );
}
