//! Records the commit this binary is built from, for `devstack --version`
//! (`DEVSTACK_COMMIT`). A build outside a git checkout (a source tarball)
//! says `unknown`; CI may set `DEVSTACK_COMMIT` itself.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=DEVSTACK_COMMIT");
    let commit = std::env::var("DEVSTACK_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=7", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    // Rebuild when HEAD moves: HEAD itself (a branch switch) and the ref it
    // points at (a commit), wherever this checkout keeps them (a worktree's
    // HEAD is in its own git dir, its refs in the common one).
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
    }
    if let (Some(common), Some(reference)) = (
        git(&["rev-parse", "--git-common-dir"]),
        git(&["symbolic-ref", "-q", "HEAD"]),
    ) {
        let common = std::path::Path::new(&common);
        let common = if common.is_absolute() {
            common.to_path_buf()
        } else {
            std::env::current_dir().unwrap_or_default().join(common)
        };
        let path = common.join(&reference);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
        // A missing file would rerun this script on every build.
        let packed = common.join("packed-refs");
        if packed.exists() {
            println!("cargo:rerun-if-changed={}", packed.display());
        }
    }
    println!("cargo:rustc-env=DEVSTACK_COMMIT={commit}");
}
