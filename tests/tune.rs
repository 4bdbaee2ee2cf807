//! `sluice tune check` reports on a machine where it may change nothing, and never fails;
//! the opt-in apply script changes nothing unless told to.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{cli, run_with_deadline};

#[test]
fn tune_check_reports_every_setting() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = cli(&["tune", "check", "--data-dir", dir.path().to_str().unwrap()], "");
    assert!(ok, "{err}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("SETTING\tVALUE\tRECOMMENDED\tSTATUS\tWHY"));
    let rows: Vec<Vec<&str>> =
        out.lines().skip(1).filter(|l| l.contains('\t')).map(|l| l.split('\t').collect()).collect();
    for setting in [
        "vm.swappiness",
        "net.core.somaxconn",
        "transparent huge pages",
        "RLIMIT_MEMLOCK (bytes)",
        "I/O scheduler",
        "data directory's file system",
        "free page reporting to a VM's host",
    ] {
        let row = rows.iter().find(|r| r[0].starts_with(setting)).unwrap_or_else(|| panic!("no {setting} in\n{out}"));
        assert_eq!(row.len(), 5, "{row:?}");
        assert!(["ok", "CHANGE", "unknown"].contains(&row[3]), "{row:?}");
    }
    // What this very machine says about swappiness must match what it reports.
    let swappiness = std::fs::read_to_string("/proc/sys/vm/swappiness").unwrap();
    let row = rows.iter().find(|r| r[0] == "vm.swappiness").unwrap();
    assert_eq!(row[1], swappiness.trim());
    assert!(out.lines().last().unwrap().contains("settings differ from the recommendations"));
}

#[test]
fn the_apply_script_only_plans_without_yes() {
    let mut command = Command::new("bash");
    command.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tuning/apply.sh"));
    let before = std::fs::read_to_string("/proc/sys/vm/swappiness").unwrap();
    let (ok, out, err) = run_with_deadline(command, b"", Duration::from_secs(30));
    assert!(ok, "{err}");
    assert!(out.contains("would run: sysctl -w vm.swappiness=1"), "{out}");
    assert!(out.contains("Nothing changed"), "{out}");
    assert_eq!(std::fs::read_to_string("/proc/sys/vm/swappiness").unwrap(), before);
}
