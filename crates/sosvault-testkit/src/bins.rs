//! The workspace's binaries a test runs. Cargo builds a test only its own
//! package's binaries (`CARGO_BIN_EXE_<name>`); [`build_packages`] builds
//! another package's, once per test process, into the same profile
//! directory, where [`sibling`] finds them.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Mutex;

/// The package lists built so far by this process.
static BUILT: Mutex<Vec<Vec<String>>> = Mutex::new(Vec::new());

/// Why the binaries could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Cargo could not be run.
    #[error("cannot run cargo: {0}")]
    Cargo(std::io::Error),
    /// The build failed (Cargo's own output says why).
    #[error("cargo build {args:?} failed: {status}")]
    Failed {
        /// The arguments given to `cargo build`.
        args: Vec<String>,
        /// How it exited.
        status: ExitStatus,
    },
}

/// Runs `cargo build --quiet -p P ... --bins` on the workspace for
/// `packages` (a no-op when they are up to date), at most once per test
/// process for the same list, into the profile directory of `beside`: one
/// of the test's own binaries (`env!("CARGO_BIN_EXE_<name>")`), whose
/// release or debug profile the build follows.
pub fn build_packages(packages: &[&str], beside: &Path) -> Result<(), BuildError> {
    let key: Vec<String> = packages.iter().map(|p| (*p).to_owned()).collect();
    // Held through the build, so two threads never build the same list twice.
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if built.contains(&key) {
        return Ok(());
    }
    let mut args = vec!["build".to_owned(), "--quiet".to_owned()];
    for p in packages {
        args.extend(["-p".to_owned(), (*p).to_owned()]);
    }
    args.push("--bins".to_owned());
    if profile_of(beside) == Some("release") {
        args.push("--release".to_owned());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let status = Command::new(cargo)
        .args(&args)
        .arg("--manifest-path")
        .arg(manifest)
        .status()
        .map_err(BuildError::Cargo)?;
    if !status.success() {
        return Err(BuildError::Failed { args, status });
    }
    built.push(key);
    Ok(())
}

/// The binary `name` in the same directory as `beside`.
pub fn sibling(beside: &Path, name: &str) -> PathBuf {
    beside.with_file_name(name)
}

/// The profile directory's name (`debug`, `release`) of binary `bin`.
fn profile_of(bin: &Path) -> Option<&str> {
    bin.parent()?.file_name()?.to_str()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{profile_of, sibling};

    #[test]
    fn a_binary_s_profile_and_siblings_come_from_its_directory() {
        let bin = Path::new("/w/target/release/sosvault");
        assert_eq!(profile_of(bin), Some("release"));
        assert_eq!(profile_of(Path::new("/w/target/debug/x")), Some("debug"));
        assert_eq!(
            sibling(bin, "sosvault-trustee"),
            Path::new("/w/target/release/sosvault-trustee")
        );
    }
}
