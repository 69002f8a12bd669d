//! The Python packages in `python/` (the verifying client and the `LangGraph` checkpointer),
//! tested by their own pytest suites against this build of the binary: `python/run-tests`
//! installs them into `target/python-venv` (from `PyPI` the first time) and runs them.
#![allow(missing_docs)]

use std::path::Path;
use std::process::Command;

#[test]
fn python_packages_pass_their_tests_against_this_binary() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let status = Command::new(repo.join("python/run-tests"))
        .env("CONVERGE_LEDGER_BIN", env!("CARGO_BIN_EXE_converge-ledger"))
        .status()
        .expect("run python/run-tests (needs bash and python3)");
    assert!(status.success(), "python/run-tests failed: {status}");
}
