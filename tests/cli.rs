//! End-to-end tests of the `kiln` binary.

use std::process::Command;

fn kiln() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = kiln().args(args).output().expect("run kiln");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_and_version() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("Usage: kiln"), "{out}");
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("kiln {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn types_lists_the_table_and_honours_force_scalar() {
    let (code, out, _) = run(&["types"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("q4_K") && out.contains("144") && out.contains("q8_K"),
        "{out}"
    );
    let (code, out, _) = run(&["--force-scalar", "types"]);
    assert_eq!(code, 0);
    assert!(out.contains("simd: scalar"), "{out}");
    let out = kiln()
        .arg("types")
        .env("KILN_FORCE_SCALAR", "1")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("simd: scalar"));
}

#[test]
fn unknown_command_is_a_usage_error() {
    let (code, _, err) = run(&["frobnicate"]);
    assert_eq!(code, 2);
    assert!(err.contains("unrecognized subcommand"), "{err}");
}
