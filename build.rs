//! Stamps the build with the commit it was built from (`cc_heartbeat.build.info`'s
//! `vcs.revision`): `CC_HEARTBEAT_VCS_REVISION` when set (the container build passes it, as
//! the image has no `.git`), else `git rev-parse HEAD`, else `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=CC_HEARTBEAT_VCS_REVISION");
    let revision = std::env::var("CC_HEARTBEAT_VCS_REVISION")
        .ok()
        .filter(|r| !r.trim().is_empty())
        .or_else(|| {
            let head = git(&["rev-parse", "HEAD"])?;
            // Rebuilt when HEAD moves: a commit, a checkout.
            if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
                let reference = git(&["symbolic-ref", "-q", "HEAD"]);
                // A path that does not exist would rerun the script on every build.
                for file in ["HEAD", "packed-refs"]
                    .into_iter()
                    .chain(reference.as_deref())
                {
                    let path = format!("{dir}/{file}");
                    if std::path::Path::new(&path).exists() {
                        println!("cargo:rerun-if-changed={path}");
                    }
                }
            }
            Some(head)
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=CC_HEARTBEAT_VCS_REVISION={revision}");
}
